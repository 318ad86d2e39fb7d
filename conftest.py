"""Shared fixtures. CI runs on PostgreSQL (CI=true): there, a test marked `postgres` must not skip."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from billing_portal import clock

# The machine is shared (CI runs beside other work): a slow draw or example is load, not a failing property.
hypothesis_settings.register_profile("shared-machine", suppress_health_check=[HealthCheck.too_slow], deadline=None)
hypothesis_settings.load_profile("shared-machine")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PASSWORD = "correct horse battery staple"


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    if not settings.configured:  # e.g. the emulator's own tests, run without Django
        return
    from django.db import connection

    if connection.vendor == "postgresql":
        return
    if IN_CI:
        raise pytest.UsageError("CI must run the tests on PostgreSQL: set DATABASE_URL=postgres://…")
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL=postgres://…); SQLite cannot show this")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def _migration_data_ensure():
    """Put back what `migrate` creates: the default plan and the staff groups. Transactional tests empty
    every table when they end, and --reuse-db keeps the database such a test left."""
    from accounts.defaults import default_plan_ensure
    from accounts.models import CreditPackOffer, PricePlan, PricePlanVersion
    from accounts.services import staff_groups_ensure

    default_plan_ensure(PricePlan, PricePlanVersion, CreditPackOffer)
    staff_groups_ensure()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        _migration_data_ensure()


@pytest.fixture(autouse=True)
def _migration_data_for_transactional_tests(request):
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        return
    if marker.kwargs.get("transaction") or (marker.args and marker.args[0]):
        request.getfixturevalue("transactional_db")
        _migration_data_ensure()
        return
    # A test in a transaction may still run after a transactional test emptied the tables (pytest-django
    # does not always order them last, e.g. parametrized tests sharing ids): put the data back inside it.
    request.getfixturevalue("db")
    from accounts.models import PricePlan

    if not PricePlan.objects.exists():
        _migration_data_ensure()


@pytest.fixture(autouse=True)
def _throttle_state_cleared():
    """No test sees sign-in failures or API rate counts another test left (no test depends on the order)."""
    throttle_state_clear()
    yield
    throttle_state_clear()


def throttle_state_clear():
    from django.conf import settings

    if not settings.configured:
        return
    from django.core.cache import cache

    if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        # Only this worker's keys: clear() would flush the Redis database under the other xdist workers.
        client = cache._cache.get_client(write=True)
        keys = list(client.scan_iter(match=f"{settings.CACHES['default']['KEY_PREFIX']}:*", count=1000))
        if keys:
            client.delete(*keys)
    else:
        cache.clear()


@pytest.fixture
def frozen_now():
    """The clock frozen at a fixed instant; yields that instant."""
    with clock.frozen(dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)) as instant:
        yield instant


@pytest.fixture
def default_plan(db):
    from accounts.models import PricePlan

    return PricePlan.objects.get(slug="fin-standard")


@pytest.fixture
def account(db):
    from tests.factories import AccountFactory

    return AccountFactory(name="Acme Support", slug="acme")


@pytest.fixture
def other_account(db):
    from tests.factories import AccountFactory

    return AccountFactory(name="Globex Helpdesk", slug="globex")


@pytest.fixture
def billing_admin(account):
    from tests.factories import BillingAdminFactory

    return BillingAdminFactory(account=account, username="acme-billing")


@pytest.fixture
def viewer(account):
    from tests.factories import CustomerUserFactory

    return CustomerUserFactory(account=account, username="acme-viewer")


@pytest.fixture
def manager(db):
    from tests.factories import StaffUserFactory

    return StaffUserFactory(username="manager")


@pytest.fixture
def admin_user(db):
    from tests.factories import AdminUserFactory

    return AdminUserFactory(username="finance-admin")


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


# --- Browser tests: Playwright driving Debian's chromium (never a downloaded browser) -----------------
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = os.path.join(os.path.dirname(__file__), "artifacts", "screenshots")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail(f"CI needs chromium at {CHROMIUM} for the page tests (apt-get install chromium).")
        pytest.skip(f"no chromium at {CHROMIUM}: install it (apt-get install chromium) to run the page tests")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"],
    }  # fmt: skip


@pytest.fixture
def console_errors(page):
    """Every console error and uncaught exception the page shows while the test runs."""
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


@pytest.fixture
def screenshot(page):
    """Save a full-page PNG under artifacts/screenshots/ (for people to look at) and return its path."""

    def take(name: str) -> str:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        path = os.path.join(SCREENSHOTS, f"{name}.png")
        page.screenshot(path=path, full_page=True)
        return path

    return take


# --- Stripe: the local emulator over real HTTP (never patched stripe-python) ------------------------
@pytest.fixture(scope="session")
def _stripe_emulator_server():
    from stripe_emulator import EmulatorServer

    server = EmulatorServer(port=0).start()
    yield server
    server.stop()


@pytest.fixture
def stripe_emulator(_stripe_emulator_server, settings):
    """A clean emulator for this test, with the portal's Stripe settings pointed at it."""
    server = _stripe_emulator_server
    server.reset()
    settings.STRIPE_API_BASE = server.url
    settings.STRIPE_BACKOFF_BASE_SECONDS = 0.01
    settings.STRIPE_TIMEOUT_SECONDS = 5
    yield server
    server.reset()


@pytest.fixture
def celery_worker_on_redis():
    """A real Celery worker (solo pool, in a thread) on the Redis broker; CI must have one, elsewhere the test
    skips with the reason."""
    from celery.contrib.testing.worker import start_worker
    from django.conf import settings

    from billing_portal.celery import app

    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        if IN_CI:
            pytest.fail("CI must run Celery against Redis: set CELERY_BROKER_URL=redis://…")
        pytest.skip("needs a Redis broker (set CELERY_BROKER_URL=redis://127.0.0.1:6379/15)")
    app.control.purge()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as worker:
        yield worker
