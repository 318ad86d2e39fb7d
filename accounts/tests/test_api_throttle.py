"""API rate limits (accounts/throttling.py): per API key, per session user, a separate and higher limit for
ingestion; 429 in the one error shape with Retry-After in whole seconds; counts shared and never lost."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from rest_framework.test import APIClient

from accounts.authentication import ApiKeyPrincipal
from accounts.services import api_key_create
from accounts.throttling import ApiCallerRateThrottle, ConversationEventsRateThrottle
from resolutions.models import ConversationEvent
from resolutions.tests.conftest import NOW, event

pytestmark = pytest.mark.django_db
EVENTS = "/api/v1/conversation-events"
CREDITS = "/api/v1/credits"
ROOT = Path(__file__).resolve().parents[2]


class WindowClock:
    def __init__(self):
        self.now = 1_800_000_000.0 + 15  # 15 s into a minute (and into no particular second)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def window_clock(monkeypatch):
    clock = WindowClock()
    monkeypatch.setattr(ApiCallerRateThrottle, "timer", lambda self: clock.now)
    return clock


@pytest.fixture
def now():
    from billing_portal import clock

    with clock.frozen(NOW):
        yield NOW


def key_client_for(account, actor) -> tuple[APIClient, str]:
    _, raw_key = api_key_create(account=account, name="bot", actor=actor)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client, raw_key


def assert_throttled(response) -> int:
    """A 429 in the one error shape with Retry-After in whole seconds; returns them."""
    assert response.status_code == 429, response.content[:300]
    body = json.loads(response.content)
    assert set(body) == {"errors"} and len(body["errors"]) == 1
    (error,) = body["errors"]
    assert set(error) == {"index", "field", "message"} and error["field"] is None
    retry_after = response["Retry-After"]
    assert retry_after.isdigit(), retry_after
    assert f"{retry_after} second" in error["message"]
    return int(retry_after)


def test_a_key_over_its_limit_gets_429_with_retry_after_until_the_window_ends(
    account, billing_admin, settings, window_clock, now
):
    settings.API_RATE_LIMIT = "3/min"
    client, _ = key_client_for(account, billing_admin)
    assert [client.get(CREDITS).status_code for _ in range(3)] == [200, 200, 200]
    assert assert_throttled(client.get(CREDITS)) == 45  # 15 s into the minute
    window_clock.advance(44.5)
    assert assert_throttled(client.get(CREDITS)) == 1  # half a second, rounded up
    window_clock.advance(0.5)
    assert client.get(CREDITS).status_code == 200


def test_the_limit_is_per_key(account, other_account, billing_admin, settings, window_clock, now):
    settings.API_RATE_LIMIT = "2/min"
    first, _ = key_client_for(account, billing_admin)
    second, _ = key_client_for(account, billing_admin)  # another key of the same account
    other, _ = key_client_for(other_account, "test")
    for _ in range(2):
        assert first.get(CREDITS).status_code == 200
    assert_throttled(first.get(CREDITS))
    assert [second.get(CREDITS).status_code for _ in range(2)] == [200, 200]
    assert [other.get(CREDITS).status_code for _ in range(2)] == [200, 200]
    assert_throttled(second.get(CREDITS))


def test_session_callers_are_limited_per_user(account, billing_admin, viewer, settings, window_clock):
    settings.API_RATE_LIMIT = "2/min"
    admin_client, viewer_client = APIClient(), APIClient()
    admin_client.force_login(billing_admin)
    viewer_client.force_login(viewer)
    assert [admin_client.get(CREDITS).status_code for _ in range(2)] == [200, 200]
    assert_throttled(admin_client.get(CREDITS))
    assert viewer_client.get(CREDITS).status_code == 200  # another person, own count
    key_client, _ = key_client_for(account, billing_admin)  # the account's integration: its key's count
    assert key_client.get(CREDITS).status_code == 200


def test_ingestion_has_its_own_higher_limit_and_a_throttled_batch_stores_nothing(
    account, billing_admin, settings, window_clock, now
):
    settings.API_RATE_LIMIT = "2/min"
    settings.API_INGESTION_RATE_LIMIT = "4/min"
    client, _ = key_client_for(account, billing_admin)
    for i in range(4):  # past the general limit: ingestion does not count against it
        batch = {"events": [event(f"e{i}", f"c{i}", "ai_answer", 5)]}
        assert client.post(EVENTS, batch, format="json").status_code == 202
    refused = client.post(EVENTS, {"events": [event("e-late", "c-late", "ai_answer", 5)]}, format="json")
    assert_throttled(refused)
    assert not ConversationEvent.objects.filter(event_id="e-late").exists()
    assert ConversationEvent.objects.filter(account=account).count() == 4
    # The general count is untouched by the four batches.
    assert [client.get(CREDITS).status_code for _ in range(2)] == [200, 200]
    assert_throttled(client.get(CREDITS))


def test_the_default_ingestion_limit_does_not_cap_the_measured_throughput(settings):
    """bench/RESULTS.md: about 40,000 events/s at best, in batches of 1,000 (40 requests/s for one key). The
    default must leave room over that, and above the general limit."""
    ingestion = ConversationEventsRateThrottle()
    general = ApiCallerRateThrottle()
    requests_per_second = ingestion.num_requests / ingestion.duration
    assert requests_per_second * 1000 >= 4 * 40_000
    assert requests_per_second >= 10 * general.num_requests / general.duration


def test_the_counts_of_concurrent_requests_are_not_lost(account, billing_admin, settings, window_clock):
    """One atomic increment a request: 8 threads making 25 calls each against a limit of 100 let exactly 100
    through (DRF's read-extend-write history list loses counts when requests overlap)."""
    settings.API_RATE_LIMIT = "100/min"
    api_key, _ = api_key_create(account=account, name="bot", actor=billing_admin)
    request = SimpleNamespace(user=ApiKeyPrincipal(api_key))
    allowed = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def caller():
        start.wait()
        mine = sum(ApiCallerRateThrottle().allow_request(request, None) for _ in range(25))
        with lock:
            allowed.append(mine)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 100


def test_with_the_cache_down_requests_pass_and_the_log_says_why(account, billing_admin, settings, caplog, now):
    settings.API_RATE_LIMIT = "1/min"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    client, _ = key_client_for(account, billing_admin)
    with caplog.at_level(logging.ERROR, logger="accounts.throttling"):
        assert [client.get(CREDITS).status_code for _ in range(2)] == [200, 200]
    assert any("cache is unavailable" in r.getMessage() for r in caplog.records)


def test_the_schema_documents_429_for_ingestion(admin_user):
    client = APIClient()
    client.force_login(admin_user)
    schema = client.get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    responses = json.loads(schema.content)["paths"]["/api/v1/conversation-events"]["post"]["responses"]
    assert "429" in responses


def settings_in_a_fresh_process(**env) -> subprocess.CompletedProcess:
    """The settings module as a process started with this environment would load it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "CACHE_URL", "DJANGO_"))}
    environment.update({"DJANGO_SETTINGS_MODULE": "billing_portal.settings", "DJANGO_DEBUG": "true", **env})
    code = "import django; django.setup(); from django.conf import settings; print(settings.CACHES['default'])"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


def test_a_rate_that_is_not_requests_per_period_refuses_to_start():
    result = settings_in_a_fresh_process(API_INGESTION_RATE_LIMIT="fast")
    assert result.returncode != 0
    assert "API_INGESTION_RATE_LIMIT must be a number of requests per period" in result.stderr


def test_a_redis_cache_url_is_djangos_own_redis_cache_with_short_timeouts():
    result = settings_in_a_fresh_process(CACHE_URL="redis://127.0.0.1:6379/13")
    assert result.returncode == 0, result.stderr
    assert "'BACKEND': 'django.core.cache.backends.redis.RedisCache'" in result.stdout
    assert "'LOCATION': 'redis://127.0.0.1:6379/13'" in result.stdout
    assert "'socket_timeout': 1.0" in result.stdout and "'socket_connect_timeout': 1.0" in result.stdout
    assert "LocMemCache" in settings_in_a_fresh_process(CACHE_URL="").stdout  # empty: the default
