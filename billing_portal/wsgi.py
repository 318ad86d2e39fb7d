import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_portal.settings")
application = get_wsgi_application()

# Everything loaded so far (Django, the apps, their modules) lives as long as the process: keep it out of the
# cyclic garbage collector's scans, which otherwise walk it on every full collection (gunicorn loads this
# module in each worker, or once before forking with --preload).
gc.freeze()
