"""Settings for the test suite: the real settings, with a test-only key and a fast password hasher.

DATABASE_URL and CELERY_BROKER_URL still come from the environment: CI points them at PostgreSQL and Redis.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
# A 202 means "evaluated" in tests; the deferred mode (the default elsewhere) has tests of its own.
os.environ.setdefault("EVENT_EVALUATION", "inline")

from .settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
WHITENOISE_USE_FINDERS = True
# A Stripe call inside a database transaction raises (elsewhere it is logged as an error): see stripe_client.
STRIPE_FORBID_CALLS_IN_TRANSACTION = True

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, so that --reuse-db can keep it between runs (dj-stripe's migrations take a minute to replay).
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_portal.sqlite3")}  # noqa: F405
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405 - whitenoise warns when it is missing
# Tests run inside one transaction that threads of their own could not see; tests that need threads set more.
METER_REPORT_THREADS = 1
# xdist workers share one Redis (CI: CACHE_URL db 13): each keeps its throttle counters under its own prefix, and
# conftest's autouse fixture empties that prefix between tests.
CACHES["default"]["KEY_PREFIX"] = f"test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"  # noqa: F405
