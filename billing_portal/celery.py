"""The Celery app: broker from settings (Redis in production and CI, a local folder for the demo)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_portal.settings")

from . import log_context  # noqa: E402,F401 - connects the task id/name and request id signals

app = Celery("billing_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
