"""Settings, all from the environment (django-environ). See README.md for the table of variables.

Defaults are the zero-setup demo: SQLite, a folder-backed Celery broker, the local Stripe emulator.
Production sets DATABASE_URL (PostgreSQL), CELERY_BROKER_URL (Redis), STRIPE_* and SECRET_KEY.
"""

import re
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from billing_portal.log_context import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)

# Only a development process may fall back to a known key; anything else must be given a real one.
_DEV_SECRET_KEY = "django-insecure-development-only-key-never-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random value (for example "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`), "
            "or set DJANGO_DEBUG=true for local development."
        )
    SECRET_KEY = _DEV_SECRET_KEY
elif not DEBUG and (SECRET_KEY.startswith("django-insecure") or len(SECRET_KEY) < 32):
    raise ImproperlyConfigured("SECRET_KEY is too weak for a non-debug process: use at least 32 random characters.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "django_htmx",
    "csp",
    "djstripe",
    "accounts",
    "credits",
    "resolutions",
]

MIDDLEWARE = [
    "billing_portal.log_context.RequestIdMiddleware",  # first: every record of a request carries its id
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",  # Content-Security-Policy on every response (CONTENT_SECURITY_POLICY)
    "billing_portal.middleware.CacheControlPolicy",  # /api/: no-store; logged-in pages: private, no-store
    "billing_portal.middleware.ApiRequestGuard",  # /api/: 413 before a body is read, 400 for NULs
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "billing_portal.middleware.ViewerTimezone",  # pages: times in the viewer's zone
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "billing_portal.urls"
WSGI_APPLICATION = "billing_portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
# A persistent connection that PostgreSQL dropped (a restart, pg_terminate_backend, a failover) is noticed and
# replaced before the next request uses it, instead of failing that request.
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo's web process and Celery worker share the file: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- Transport security (README "Running it in production") ------------------------------------------
# Outside DEBUG the portal assumes TLS: Secure cookies, HSTS, http redirected to https. Running without TLS
# takes an explicit SECURE_HTTPS=false (loopback load tests, a plain-http test server).
SECURE_HTTPS = env.bool("SECURE_HTTPS", default=not DEBUG)
if SECURE_HTTPS:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 60 * 60)
    # Both bind every subdomain (and, preloaded, every browser) to https for good: the operator's choice.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# A TLS-terminating proxy's X-Forwarded-Proto is believed only when told: a client could send it itself.
if env.bool("SECURE_PROXY_SSL_HEADER_TRUSTED", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# /healthz and /readyz are exempt from the https redirect (SECURE_REDIRECT_EXEMPT, with the health checks).
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # no script reads it: pages send the token in hx-headers (templates/base.html)
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# The pages need nothing inline and nothing from elsewhere (htmx, charts, Swagger UI, the admin: all static
# files of this origin); DEBUG too, so that the browser tests see any violation as a console error.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# HSTS includeSubDomains and preload are opt-in (SECURE_HSTS_INCLUDE_SUBDOMAINS, SECURE_HSTS_PRELOAD), not
# defaults that `check --deploy` should warn about.
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]

# Health checks (billing_portal/health.py): each readiness check's timeout; plain http probes are not redirected.
READYZ_TIMEOUT_SECONDS = env.float("READYZ_TIMEOUT_SECONDS", default=2.0)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# --- Cache, throttling ------------------------------------------------------------------------------
# Sign-in lockouts and API rate-limit counters live in the cache, so every web process must share it:
# production sets CACHE_URL=redis://host:6379/1 (Django's own RedisCache; redis-py comes with celery[redis]).
CACHES = {"default": env.cache_url_config(env.str("CACHE_URL", default="") or "locmemcache://")}
if CACHES["default"]["BACKEND"].endswith("RedisCache"):
    CACHES["default"]["BACKEND"] = "django.core.cache.backends.redis.RedisCache"  # not django-redis
    # A Redis that hangs must not hang every request: the throttles give up after a second and let it through.
    for _option in ("socket_connect_timeout", "socket_timeout"):
        CACHES["default"].setdefault("OPTIONS", {}).setdefault(_option, 1.0)
# The client address is REMOTE_ADDR, or with N proxies of ours in front the N-th X-Forwarded-For entry from the
# right (billing_portal/client_address.py). 0: nothing forwarded is believed.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# Sign-in (portal and admin): this many failures in the window lock the username, and apart the address, out;
# each further lockout within the memory period lasts twice as long, up to the maximum.
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_ADDRESS_FAILURE_LIMIT = env.int("LOGIN_ADDRESS_FAILURE_LIMIT", default=20)
LOGIN_FAILURE_WINDOW_SECONDS = env.int("LOGIN_FAILURE_WINDOW_SECONDS", default=60)
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=60)
LOGIN_LOCKOUT_MAX_SECONDS = env.int("LOGIN_LOCKOUT_MAX_SECONDS", default=3600)
LOGIN_LOCKOUT_MEMORY_SECONDS = 24 * 3600
if min(LOGIN_FAILURE_LIMIT, LOGIN_ADDRESS_FAILURE_LIMIT, LOGIN_FAILURE_WINDOW_SECONDS, LOGIN_LOCKOUT_SECONDS) < 1 or (
    LOGIN_LOCKOUT_MAX_SECONDS < LOGIN_LOCKOUT_SECONDS
):
    raise ImproperlyConfigured("LOGIN_* must be positive, and LOGIN_LOCKOUT_MAX_SECONDS >= LOGIN_LOCKOUT_SECONDS.")

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@localhost")

# --- REST API ---------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["billing_portal.parsers.JsonParser"],  # depth limit; no NUL, no lone surrogate
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "billing_portal.api_errors.api_exception_handler",
    # Per API key (per user for session callers); ingestion has its own limit (accounts/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttling.ApiCallerRateThrottle"],
}
# Requests per API key (or per session user): "N/s", "N/min", "N/hour" or "N/day". Ingestion's limit stands in
# for the general one on POST /api/v1/conversation-events. 200/s is 200,000 events/s in batches of 1,000: five
# times the fastest measured ingestion of one portal (about 40,000 events/s, bench/RESULTS.md), so the limit
# stops a runaway client, never real traffic; single-event posts should be batched instead.
API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="1200/min")
API_INGESTION_RATE_LIMIT = env.str("API_INGESTION_RATE_LIMIT", default="200/s")
for _name in ("API_RATE_LIMIT", "API_INGESTION_RATE_LIMIT"):
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|m|min|h|hour|d|day)", vars()[_name]):
        raise ImproperlyConfigured(f'{_name} must be a number of requests per period, e.g. "1200/min", not '
                                   f"{vars()[_name]!r}.")  # fmt: skip
# The largest body any request may have; /api/ answers 413 above it (billing_portal.middleware). It fits the
# worst maximal ingestion batch: 1,000 events whose two 255-character ids are characters outside the BMP, sent
# JSON-escaped as surrogate pairs (12 bytes a character: 6,120 bytes of ids an event), every other character
# escaped too (6 bytes each), compactly encoded: 6.64 MB. 8 MiB leaves room for indentation.
DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
CSRF_FAILURE_VIEW = "billing_portal.api_errors.csrf_failure"  # JSON for /api/, Django's page elsewhere

SPECTACULAR_SETTINGS = {
    "TITLE": "Resolution Billing Portal API",
    "DESCRIPTION": "Outcome-priced billing: conversation events in, resolutions, credits and usage out.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # "none": no badge image fetched from validator.swagger.io (nothing loads from another host).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": "none"},
    # Every operation's error answers (400/401/403/404/409/413/415/429) in the one error shape.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "billing_portal.api_schema.error_responses",
    ],
}

# --- Conversation events ----------------------------------------------------------------------------
# "deferred": a batch is stored and acknowledged (202), and a Celery task evaluates its conversations right
# after it commits (billing_tick and the periodic billing cycle evaluate whatever is still queued): batches of
# one account are stored in parallel. "inline": the request evaluates them before answering (batches of one
# account then take turns on the account's lock); the test suite uses it, so that a 202 means "evaluated".
EVENT_EVALUATION = env.str("EVENT_EVALUATION", default="deferred")
if EVENT_EVALUATION not in ("deferred", "inline"):
    raise ImproperlyConfigured(f'EVENT_EVALUATION must be "deferred" or "inline", not {EVENT_EVALUATION!r}.')

# --- Meter reporting (DESIGN §3.5) ------------------------------------------------------------------
# Overage is reported per account and window: aligned UTC slots of this many seconds, cut at billing
# period boundaries (3600: hours). A window is reported once it has closed.
METER_WINDOW_SECONDS = env.int("METER_WINDOW_SECONDS", default=3600)
if METER_WINDOW_SECONDS < 60 or METER_WINDOW_SECONDS % 60 or 86400 % METER_WINDOW_SECONDS:
    raise ImproperlyConfigured("METER_WINDOW_SECONDS must divide a day into whole minutes (60 ... 86400).")
# Stripe keeps a period's invoice a draft this long after the period ends (its finalization grace
# period, an hour unless changed in the Dashboard); usage for the period is still billed until then.
STRIPE_INVOICE_GRACE_SECONDS = env.int("STRIPE_INVOICE_GRACE_SECONDS", default=3600)
# "inline": the billing cycle sends the report rows itself; "tasks": it queues one Celery task per account.
METER_REPORTING = env.str("METER_REPORTING", default="inline")
if METER_REPORTING not in ("inline", "tasks"):
    raise ImproperlyConfigured(f'METER_REPORTING must be "inline" or "tasks", not {METER_REPORTING!r}.')
METER_REPORT_THREADS = env.int("METER_REPORT_THREADS", default=8)  # accounts sent to at once, inline
# Reconciliation with Stripe's meter event summaries (resolutions/services/reconciliation.py): the billing cycle
# runs it when the last run is older than the interval (the hourly task and `reconcile` always run it). An event
# confirmed less than the settle time ago counts as still on its way: Stripe aggregates meter events
# asynchronously, so its summaries may not show it yet.
METER_RECONCILE_INTERVAL_SECONDS = env.int("METER_RECONCILE_INTERVAL_SECONDS", default=3600)
METER_RECONCILE_SETTLE_SECONDS = env.int("METER_RECONCILE_SETTLE_SECONDS", default=600)

# --- Celery -----------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Zero-setup broker for the demo: a real worker and beat, messages in a local folder.
    _queue_dir = VAR_DIR / "celery" / "queue"
    _processed_dir = VAR_DIR / "celery" / "processed"
    for _d in (_queue_dir, _processed_dir):
        _d.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_processed_dir),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # the worker logs through LOGGING's handler, in LOG_FORMAT
# One queue per workload, so each can get workers of its own (`celery -A billing_portal worker -Q stripe`);
# a worker started without -Q consumes all of them (dev.py demo, the tests). docs/operations.md.
# The default queue keeps Celery's name, "celery": messages queued before the queues were split still run.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = [Queue(name, routing_key=name) for name in ("celery", "events", "stripe", "cycle", "simulations")]
CELERY_TASK_ROUTES = {
    # Evaluation of ingested batches: the latency customers see on their dashboard.
    "resolutions.tasks.conversations_evaluate_task": {"queue": "events"},
    # Calls to Stripe: slow and rate-limited, retried with backoff; kept off the other queues.
    "resolutions.tasks.meter_report_task": {"queue": "stripe"},
    "resolutions.tasks.meter_reconcile_task": {"queue": "stripe"},
    "accounts.tasks.price_plan_version_stripe_sync_task": {"queue": "stripe"},
    "accounts.tasks.stripe_catalog_retry_task": {"queue": "stripe"},
    # The minutely billing cycle (it takes its own lock; more workers here never run two at once).
    "resolutions.tasks.billing_cycle_task": {"queue": "cycle"},
    "accounts.tasks.provisioning_cleanup_task": {"queue": "cycle"},
    # Price simulations: long, staff-started; never in the way of billing.
    "resolutions.tasks.price_simulation_task": {"queue": "simulations"},
    # The daily archive of old raw events: long, bounded batches; never in the way of billing.
    "resolutions.tasks.events_archive_task": {"queue": "simulations"},
}
# Every periodic task is here and nowhere else (tests/test_celery_config.py checks the app's schedule is this).
CELERY_BEAT_SCHEDULE: dict = {
    # The one billing cycle (resolutions/billing_cycle.py), provisioning cleanup included. A run that
    # waited in the queue past the next one's start is dropped: the next run does the same work.
    "billing-cycle": {"task": "resolutions.tasks.billing_cycle_task", "schedule": 60.0, "options": {"expires": 55}},
    "stripe-catalog-retry": {"task": "accounts.tasks.stripe_catalog_retry_task", "schedule": 600.0},
    # Reported meter totals against Stripe's meter event summaries; differences go to the admins.
    "meter-reconcile": {"task": "resolutions.tasks.meter_reconcile_task", "schedule": 3600.0},
    # Raw events of conversations finished long ago move to the archive (off unless EVENTS_ARCHIVE_AFTER_DAYS).
    "events-archive": {"task": "resolutions.tasks.events_archive_task", "schedule": 86400.0},
}
# Days after which a finished conversation's raw events are archived by the daily `events-archive` task; 0 (the
# default) leaves them. At least 42: events may arrive up to 35 days late (docs/data-lifecycle.md).
EVENTS_ARCHIVE_AFTER_DAYS = env.int("EVENTS_ARCHIVE_AFTER_DAYS", default=0)
if EVENTS_ARCHIVE_AFTER_DAYS and EVENTS_ARCHIVE_AFTER_DAYS < 42:
    raise ImproperlyConfigured("EVENTS_ARCHIVE_AFTER_DAYS must be 0 (off) or at least 42 (the late window and a week).")

# --- Stripe -----------------------------------------------------------------------------------------
# One pinned API version for every call (stripe-python 15.x speaks it; dj-stripe 2.11 accepts it).
STRIPE_API_VERSION = "2026-08-26.dahlia"
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="sk_test_emulator0local0demo0key00000000")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="http://127.0.0.1:12111")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_LIVE_MODE = STRIPE_SECRET_KEY.startswith("sk_live_")
STRIPE_METER_EVENT_NAME = env.str("STRIPE_METER_EVENT_NAME", default="fin_resolution")
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=20.0)
STRIPE_MAX_RETRIES = env.int("STRIPE_MAX_RETRIES", default=4)
STRIPE_BACKOFF_BASE_SECONDS = env.float("STRIPE_BACKOFF_BASE_SECONDS", default=0.5)
STRIPE_BACKOFF_CAP_SECONDS = 8.0
# The longest Retry-After a Stripe call sleeps through; a longer ask ends the call with
# StripeUnavailable(retry_after=…) so the caller (a task) schedules its next attempt instead.
STRIPE_RETRY_AFTER_CAP_SECONDS = env.float("STRIPE_RETRY_AFTER_CAP_SECONDS", default=8.0)
# Where Stripe sends webhooks for this portal (stripe_setup registers <this>/stripe/webhook/<uuid>/).
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="http://127.0.0.1:8000")
if STRIPE_LIVE_MODE:
    STRIPE_LIVE_SECRET_KEY = STRIPE_SECRET_KEY
else:
    STRIPE_TEST_SECRET_KEY = STRIPE_SECRET_KEY
if STRIPE_API_BASE.rstrip("/") != "https://api.stripe.com":
    STRIPE_API_HOST = STRIPE_API_BASE  # dj-stripe's own calls go to the same place as ours
    SILENCED_SYSTEM_CHECKS.append("djstripe.W002")  # "STRIPE_API_HOST set in production": the emulator is
DJSTRIPE_SUBSCRIBER_MODEL = "accounts.Account"
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"

# --- Billing ----------------------------------------------------------------------------------------
# Freeze "now" for the whole process (demo replays, tests); unset means the real time. See clock.py.
BILLING_CLOCK_NOW = env.str("BILLING_CLOCK_NOW", default="")

# Error reports (500 emails) hide the Authorization header and anything shaped like an API key.
DEFAULT_EXCEPTION_REPORTER_FILTER = "billing_portal.error_reports.CredentialHidingReporterFilter"

# One console handler; JSON records (time, level, logger, message, request_id or task_id/task_name) outside
# DEBUG, text lines in DEBUG (billing_portal/log_context.py). Celery's worker logs through the same handler.
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f'LOG_FORMAT must be "json" or "text", not {LOG_FORMAT!r}.')
LOGGING = logging_config(
    log_format=LOG_FORMAT,
    level=env.str("LOG_LEVEL", default="INFO"),
    stripe_level=env.str("STRIPE_LOG_LEVEL", default="WARNING"),
)
