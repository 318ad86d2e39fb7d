import datetime as dt

import pytest

from accounts.services import api_key_create

NOW = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)


def iso(instant: dt.datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def event(event_id, conversation_id, type_, minutes_ago, **extra):
    return {
        "id": event_id, "conversation_id": conversation_id, "type": type_,
        "occurred_at": iso(NOW - dt.timedelta(minutes=minutes_ago)), **extra,
    }  # fmt: skip


@pytest.fixture
def now():
    from billing_portal import clock

    with clock.frozen(NOW):
        yield NOW


@pytest.fixture
def key_client(account, billing_admin, api_client, now):
    _, raw_key = api_key_create(account=account, name="bot", actor=billing_admin)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return api_client


@pytest.fixture
def post_events(key_client):
    def post(*events, body=None):
        payload = body if body is not None else ({"events": list(events)} if len(events) != 1 else events[0])
        return key_client.post("/api/v1/conversation-events", payload, format="json")

    return post
