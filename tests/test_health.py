"""/healthz and /readyz against the real database, the configured broker and the Stripe emulator, each
taken down for real (a closed port, the emulator's fault injection) rather than mocked where it can be."""

from __future__ import annotations

import socket

import pytest
from django.db import OperationalError
from django.test import Client

from billing_portal import health
from billing_portal.celery import app as celery_app


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stripe_requests(emulator, path="/v1/billing/meters"):
    return [r for r in emulator.requests.list() if r["path"] == path]


@pytest.fixture
def ready_world(db, stripe_emulator, settings):
    settings.READYZ_TIMEOUT_SECONDS = 1.0
    # Warm up: the first /readyz of a process imports the URLconf, the broker's transport and stripe-python's
    # services, which on a loaded machine takes longer than the checks' timings the tests look at.
    assert Client().get("/readyz").status_code == 200
    stripe_emulator.requests.clear()
    return stripe_emulator


def test_healthz_answers_without_the_database(client, monkeypatch):
    def refuse(*args, **kwargs):
        raise OperationalError("the database is down")

    # No `db` fixture either: pytest-django would fail any query this test made.
    monkeypatch.setattr("django.db.backends.base.base.BaseDatabaseWrapper.ensure_connection", refuse)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_all_up_times_each_check_and_reads_stripe_once(client, ready_world):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "stripe"}
    for result in body["checks"].values():
        assert result["status"] == "ok"
        assert isinstance(result["ms"], float) and 0 <= result["ms"] < 1000
        assert "reason" not in result
    (read,) = stripe_requests(ready_world)
    assert read["method"] == "GET" and read["params"] == {"limit": "1"} and read["status"] == 200


def test_readyz_needs_no_login_and_only_answers_get(client, ready_world):
    assert client.get("/readyz").status_code == 200  # anonymous, no session, no CSRF token
    assert client.post("/readyz").status_code == 405
    assert client.post("/healthz").status_code == 405


def test_checks_are_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/login/").status_code == 301  # everything else still is


@pytest.mark.postgres
def test_database_down_is_503_naming_it(client, ready_world, monkeypatch):
    from django.db import connection

    unreachable = connection.copy()
    unreachable.settings_dict = {**connection.settings_dict, "PORT": closed_port(), "PASSWORD": "db-hunter2"}
    monkeypatch.setattr(health, "connection", unreachable)
    try:
        response = client.get("/readyz")
    finally:
        unreachable.close()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["status"] == "down"
    assert body["checks"]["database"]["reason"].startswith("OperationalError: ")
    assert "db-hunter2" not in response.content.decode()
    assert body["checks"]["broker"]["status"] == "ok" and body["checks"]["stripe"]["status"] == "ok"


def test_a_database_error_is_reported_without_its_password(client, ready_world, monkeypatch):
    def refuse():
        raise OperationalError('could not connect to "postgres://portal:s3cret-pw@db:5432/portal"\nDETAIL: more')

    monkeypatch.setitem(health.CHECKS, "database", refuse)
    response = client.get("/readyz")
    assert response.status_code == 503
    reason = response.json()["checks"]["database"]["reason"]
    assert reason == 'OperationalError: could not connect to "postgres://***@db:5432/portal"'


def test_broker_down_is_503_after_one_quick_attempt(client, ready_world, monkeypatch):
    port = closed_port()
    monkeypatch.setitem(celery_app.conf, "broker_write_url", f"redis://:broker-hunter2@127.0.0.1:{port}/0")
    response = client.get("/readyz?check=broker")
    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker["status"] == "down"
    assert "Connection refused" in broker["reason"] and str(port) in broker["reason"]
    assert "broker-hunter2" not in response.content.decode()
    assert broker["ms"] < 1000  # one attempt: kombu's Connection.connect() would sleep 2 s before a second


def test_a_broker_that_never_answers_times_out_within_the_readiness_timeout(client, ready_world, settings, monkeypatch):
    settings.READYZ_TIMEOUT_SECONDS = 0.5
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setitem(celery_app.conf, "broker_write_url", f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        response = client.get("/readyz?check=broker")
    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker["status"] == "down" and "imeout" in broker["reason"], broker
    assert 400 < broker["ms"] < 1500


def test_stripe_down_on_a_closed_port_is_503_without_retries(client, ready_world, settings):
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{closed_port()}"
    settings.STRIPE_MAX_RETRIES, settings.STRIPE_BACKOFF_BASE_SECONDS = 4, 1.0
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["stripe"]["ms"] < 1000  # stripe_client.call would back off (0.5-1 s, then more) and retry
    assert checks["stripe"]["status"] == "down"
    assert checks["stripe"]["reason"].startswith("StripeUnavailable: ")
    assert checks["database"]["status"] == "ok" and checks["broker"]["status"] == "ok"


@pytest.mark.parametrize("mode", ["500", "429"])
def test_stripe_errors_are_503_after_one_request(client, ready_world, mode):
    ready_world.add_fault(path_prefix="/v1/billing/meters", mode=mode, count=5, retry_after=0)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["stripe"]["reason"].startswith("StripeUnavailable: ")
    assert [r["fault"] for r in stripe_requests(ready_world)] == [mode]  # no retry


def test_a_hanging_stripe_times_out_within_the_readiness_timeout(client, ready_world, settings):
    settings.READYZ_TIMEOUT_SECONDS = 0.5
    ready_world.add_fault(path_prefix="/v1/billing/meters", mode="hang", hang_seconds=3)
    response = client.get("/readyz?check=stripe")
    assert response.status_code == 503
    stripe_check = response.json()["checks"]["stripe"]
    assert stripe_check["status"] == "down" and 400 <= stripe_check["ms"] < 1500


def test_a_refused_key_is_not_ready_and_the_key_is_not_shown(client, ready_world, settings):
    settings.STRIPE_SECRET_KEY = "sk_live_0123456789abcdefghijklmnop"  # the emulator takes test keys only
    response = client.get("/readyz?check=stripe")
    assert response.status_code == 503
    reason = response.json()["checks"]["stripe"]["reason"]
    assert reason.startswith("StripeRejected: ") and "Invalid API Key" in reason
    assert "0123456789abcdefghijklmnop" not in response.content.decode()


def test_only_the_named_checks_run(client, ready_world):
    response = client.get("/readyz?check=database&check=broker")
    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database", "broker"}
    assert stripe_requests(ready_world) == []


def test_an_unknown_check_is_a_400_in_the_error_shape(client, ready_world):
    response = client.get("/readyz?check=database&check=redis")
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {
                "index": None,
                "field": "check",
                "message": "Unknown check 'redis': the checks are database, broker, stripe.",
            }
        ]
    }
    assert ready_world.requests.list() == []
