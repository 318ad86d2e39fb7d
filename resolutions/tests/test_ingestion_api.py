"""POST /api/v1/conversation-events: contract, validation, duplicates, conflicts, auth."""

import datetime as dt

import pytest

from resolutions.models import Conversation, ConversationEvent, Resolution
from resolutions.tests.conftest import NOW, event, iso

pytestmark = pytest.mark.django_db


def test_one_event_or_a_batch_is_accepted_with_counts(post_events):
    single = post_events(event("e1", "c1", "ai_answer", 30))
    assert single.status_code == 202 and single.json() == {"accepted": 1, "duplicates": 0}
    batch = post_events(event("e2", "c1", "customer_confirmed", 20), event("e3", "c2", "ai_answer", 10))
    assert batch.status_code == 202 and batch.json() == {"accepted": 2, "duplicates": 0}
    assert ConversationEvent.objects.count() == 3
    (resolution,) = Resolution.objects.all()
    assert (resolution.conversation_id, resolution.kind) == ("c1", "confirmed")
    assert resolution.resolved_at == NOW - dt.timedelta(minutes=20) and resolution.funding == "unfunded"
    assert Conversation.objects.get(conversation_id="c2").status == "awaiting"


def test_same_id_same_payload_is_a_duplicate_and_changes_nothing(post_events):
    e = event("e1", "c1", "ai_answer", 30)
    post_events(e)
    again = post_events(e, event("e2", "c1", "customer_confirmed", 5), e)
    assert again.status_code == 202 and again.json() == {"accepted": 1, "duplicates": 2}
    assert ConversationEvent.objects.count() == 2 and Resolution.objects.count() == 1


def test_same_id_with_another_payload_is_409_and_stores_nothing(post_events):
    post_events(event("e1", "c1", "ai_answer", 30))
    response = post_events(event("e2", "c9", "ai_answer", 5), event("e1", "c1", "handoff", 30))
    assert response.status_code == 409
    assert response.json() == {
        "errors": [{"index": 1, "field": "id", "message": "This id was already used with a different payload."}]
    }
    assert ConversationEvent.objects.count() == 1 and not Conversation.objects.filter(conversation_id="c9").exists()


def test_conflict_inside_one_batch_is_409(post_events):
    response = post_events(event("e1", "c1", "ai_answer", 30), event("e1", "c1", "ai_answer", 29))
    assert response.status_code == 409 and response.json()["errors"][0]["index"] == 1
    assert not ConversationEvent.objects.exists()


def test_an_equivalent_instant_in_another_offset_is_the_same_payload(post_events):
    post_events(event("e1", "c1", "ai_answer", 0))
    same_instant = {**event("e1", "c1", "ai_answer", 0), "occurred_at": "2026-11-02T13:00:00+01:00"}
    assert post_events(same_instant).json() == {"accepted": 0, "duplicates": 1}


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"id": ""}, "id", "non-empty string"),
        ({"id": 7}, "id", "non-empty string"),
        ({"id": "x" * 256}, "id", "At most 255"),
        ({"conversation_id": None}, "conversation_id", "non-empty string"),
        ({"conversation_id": "c" * 256}, "conversation_id", "At most 255"),
        ({"type": "resolved"}, "type", "Must be one of"),
        ({"occurred_at": "2026-11-02T11:00:00"}, "occurred_at", "with a timezone"),
        ({"occurred_at": "yesterday"}, "occurred_at", "ISO 8601"),
        ({"occurred_at": "2026-11-02"}, "occurred_at", "ISO 8601"),
        ({"occurred_at": iso(NOW - dt.timedelta(days=35, seconds=1))}, "occurred_at", "35 days"),
        ({"occurred_at": iso(NOW + dt.timedelta(minutes=5, seconds=1))}, "occurred_at", "5 minutes"),
        ({"colour": "blue"}, "colour", "Unknown field"),
    ],
)
def test_one_invalid_event_rejects_the_batch_with_index_and_field(post_events, bad, field, words):
    good = event("ok", "c1", "ai_answer", 10)
    broken = {**event("e2", "c2", "ai_answer", 10), **bad}
    response = post_events(good, broken)
    assert response.status_code == 400
    (error,) = [e for e in response.json()["errors"] if e["field"] == field]
    assert error["index"] == 1 and words in error["message"]
    assert not ConversationEvent.objects.exists()


def test_limits_of_the_window_are_accepted(post_events):
    edge = [
        {**event("old", "c1", "ai_answer", 0), "occurred_at": iso(NOW - dt.timedelta(days=35))},
        {**event("ahead", "c2", "ai_answer", 0), "occurred_at": iso(NOW + dt.timedelta(minutes=5))},
    ]
    assert post_events(*edge).status_code == 202


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"events": []}, "empty"),
        ({"events": "x"}, "must be a list"),
        ({"events": [], "extra": 1}, "Unknown field"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_bodies_are_whole_body_errors(post_events, body, message):
    response = post_events(body=body)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["index"] is None and message in error["message"]


def test_more_than_1000_events_is_400(post_events):
    events = [event(f"e{i}", f"c{i}", "ai_answer", 1) for i in range(1001)]
    response = post_events(*events)
    assert response.status_code == 400 and "at most 1,000" in response.json()["errors"][0]["message"]
    assert not ConversationEvent.objects.exists()
    assert post_events(*events[:1000]).json() == {"accepted": 1000, "duplicates": 0}


def test_malformed_json_is_a_clear_400(key_client):
    response = key_client.generic("POST", "/api/v1/conversation-events", "{not json", content_type="application/json")
    assert response.status_code == 400 and "JSON parse error" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize("header", [None, "Bearer rbp_deadbeef_nope"])
def test_missing_or_unknown_key_is_401(api_client, header, now, db):
    if header:
        api_client.credentials(HTTP_AUTHORIZATION=header)
    response = api_client.post("/api/v1/conversation-events", event("e1", "c1", "ai_answer", 1), format="json")
    assert response.status_code == 401
    assert not ConversationEvent.objects.exists()


def test_revoked_key_is_401(key_client, account, billing_admin):
    from accounts.models import ApiKey
    from accounts.services import api_key_revoke

    api_key_revoke(api_key=ApiKey.objects.get(account=account), actor=billing_admin)
    response = key_client.post("/api/v1/conversation-events", event("e1", "c1", "ai_answer", 1), format="json")
    assert response.status_code == 401


def test_a_late_earlier_event_supersedes_the_resolution(post_events):
    post_events(event("a", "c1", "ai_answer", 60), event("b", "c1", "customer_confirmed", 10))
    first = Resolution.objects.get()
    post_events(event("h", "c1", "handoff", 30))  # arrived late, happened before the confirmation
    first.refresh_from_db()
    assert first.voided_at is not None and "late event" in first.void_reason
    assert not Resolution.objects.filter(voided_at=None).exists()
    assert Conversation.objects.get(conversation_id="c1").status == "escalated"


def test_events_of_two_accounts_do_not_mix(post_events, other_account, billing_admin, api_client):
    from accounts.services import api_key_create

    post_events(event("e1", "shared-conv", "ai_answer", 60), event("e2", "shared-conv", "customer_confirmed", 50))
    _, other_key = api_key_create(account=other_account, name="other", actor="test")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    response = api_client.post(
        "/api/v1/conversation-events", event("e1", "shared-conv", "handoff", 55), format="json"
    )  # the same ids in another account are that account's own
    assert response.status_code == 202 and response.json() == {"accepted": 1, "duplicates": 0}
    assert Resolution.objects.filter(voided_at=None).count() == 1
