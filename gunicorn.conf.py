"""gunicorn's settings for the portal (Procfile `web`, deploy/systemd/portal-web.service). Environment:
PORT (8000), WEB_CONCURRENCY (worker processes, default 2 x cores + 1), GUNICORN_TIMEOUT (30 s),
FORWARDED_ALLOW_IPS (read by gunicorn itself: the proxy addresses trusted for X-Forwarded-*).
See docs/operations.md for how many workers a database can take."""

import multiprocessing
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() * 2 + 1)
worker_class = "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30  # SIGTERM: requests in flight finish, up to this long
keepalive = 5  # behind a load balancer that keeps connections open
max_requests = 2000  # recycle a worker now and then (memory), staggered so they do not all restart at once
max_requests_jitter = 200
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat file off slow disks
# One line a request on stdout, with the request id the portal echoed (billing_portal/log_context.py), so it
# can be joined with the portal's own records; the URL without the query string.
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms request_id=%({x-request-id}o)s'
errorlog = "-"
# gunicorn 24+ opens a control socket at one fixed path per user ($HOME/.gunicorn/gunicorn.ctl): two masters on a
# host (a deploy's old and new, or two services) would take it from each other. Nothing here uses it.
control_socket_disable = True
