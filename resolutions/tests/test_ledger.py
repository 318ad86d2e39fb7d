"""The sweep, voids, rollups and read APIs, and the database's own guarantees."""

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.db.models import Count

from accounts.models import AuditLogEntry
from billing_portal import clock
from resolutions.models import Conversation, DailyUsage, Resolution
from resolutions.services import resolution_void
from resolutions.tests.conftest import NOW, event

pytestmark = pytest.mark.django_db


def billing_tick(at: dt.datetime) -> dict:
    out = StringIO()
    call_command("billing_tick", "--now", at.isoformat(), "--json", stdout=out)
    return json.loads(out.getvalue())


def rollups_match_the_ledger(account):
    """The invariant: each day's counter equals the non-voided resolutions of that day."""
    import zoneinfo

    tz = zoneinfo.ZoneInfo(account.timezone)
    expected: dict = {}
    for resolved_at in Resolution.objects.filter(account=account, voided_at=None).values_list("resolved_at", flat=True):
        day = resolved_at.astimezone(tz).date()
        expected[day] = expected.get(day, 0) + 1
    actual = {d.date: d.resolutions for d in DailyUsage.objects.filter(account=account) if d.resolutions}
    assert actual == expected


def test_billing_tick_finalises_elapsed_windows_once(post_events, account):
    post_events(event("a1", "c1", "ai_answer", 60), event("a2", "c2", "ai_answer", 30))
    assert not Resolution.objects.exists()
    assert billing_tick(NOW + dt.timedelta(hours=23, minutes=10))["assumed_resolutions"] == 1
    assert billing_tick(NOW + dt.timedelta(hours=23, minutes=10))["assumed_resolutions"] == 0
    assert billing_tick(NOW + dt.timedelta(hours=24))["assumed_resolutions"] == 1
    assert sorted(Resolution.objects.values_list("conversation_id", "kind")) == [("c1", "assumed"), ("c2", "assumed")]
    c1 = Resolution.objects.get(conversation_id="c1")
    assert c1.resolved_at == NOW - dt.timedelta(minutes=60) + dt.timedelta(hours=24)
    assert Conversation.objects.filter(status="resolved").count() == 2
    rollups_match_the_ledger(account)


def test_billing_tick_rejects_a_bad_now():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no timezone"):
        call_command("billing_tick", "--now", "2026-11-02T10:00:00")


def test_only_one_billable_resolution_per_conversation_is_enforced_by_the_database(post_events, account):
    post_events(event("a", "c1", "ai_answer", 60), event("b", "c1", "customer_confirmed", 10))
    existing = Resolution.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        Resolution.objects.create(
            account=account, conversation_id="c1", kind="assumed", resolved_at=NOW, plan_version=existing.plan_version
        )


def test_staff_void_is_audited_removes_it_from_usage_and_is_final(post_events, account, manager, now):
    account.account_manager = manager
    account.save()
    post_events(event("a", "c1", "ai_answer", 60), event("b", "c1", "customer_confirmed", 10))
    resolution = Resolution.objects.get()
    voided = resolution_void(resolution=resolution, actor=manager, reason="Customer disputes: bot was wrong")
    assert voided.voided_at == NOW and voided.voided_by == manager
    entry = AuditLogEntry.objects.get(action="resolution.void")
    assert entry.reason == "Customer disputes: bot was wrong" and entry.actor == manager
    rollups_match_the_ledger(account)
    # later events for the voided conversation never create another billable resolution
    post_events(event("c", "c1", "ai_answer", 5), event("d", "c1", "customer_confirmed", 1))
    assert Resolution.objects.filter(voided_at=None).count() == 0
    with pytest.raises(Exception, match="already voided"):
        resolution_void(resolution=resolution, actor=manager, reason="again")


def test_void_needs_a_reason(post_events, manager):
    post_events(event("a", "c1", "ai_answer", 60), event("b", "c1", "customer_confirmed", 10))
    with pytest.raises(Exception, match="Say why"):
        resolution_void(resolution=Resolution.objects.get(), actor=manager, reason="  ")
    assert Resolution.objects.get().voided_at is None


def test_void_api_is_staff_only_and_404_outside_their_accounts(post_events, account, manager, admin_user, api_client,
                                                               billing_admin):  # fmt: skip
    post_events(event("a", "c1", "ai_answer", 60), event("b", "c1", "customer_confirmed", 10))
    resolution = Resolution.objects.get()
    url = f"/api/v1/staff/resolutions/{resolution.pk}/void"
    api_client.credentials()
    api_client.force_authenticate(billing_admin)
    assert api_client.post(url, {"reason": "x"}, format="json").status_code == 403
    api_client.force_authenticate(manager)  # not assigned to this account
    assert api_client.post(url, {"reason": "x"}, format="json").status_code == 404
    api_client.force_authenticate(admin_user)
    assert api_client.post(url, {}, format="json").status_code == 400
    response = api_client.post(url, {"reason": "duplicate conversation"}, format="json")
    assert response.status_code == 200 and response.json()["voided"] is True


def test_usage_is_read_from_rollups_per_local_day(post_events, key_client, account):
    account.timezone = "America/New_York"  # NOW is 07:00 there; 8 hours ago was the previous day
    account.save()
    post_events(
        event("a", "c1", "ai_answer", 60), event("b", "c1", "customer_confirmed", 50),
        event("c", "c2", "ai_answer", 600), event("d", "c2", "customer_confirmed", 480),
    )  # fmt: skip
    response = key_client.get("/api/v1/usage?from=2026-11-01&to=2026-11-03")
    assert response.status_code == 200
    body = response.json()
    assert body["currency"] == "usd"
    assert [(d["date"], d["resolutions"]) for d in body["days"]] == [
        ("2026-11-01", 1), ("2026-11-02", 1), ("2026-11-03", 0),
    ]  # fmt: skip
    assert body["totals"] == {"resolutions": 2, "credited": 0, "overage": 0, "amount_minor": 0}


@pytest.mark.parametrize(
    ("query", "field"),
    [("", "from"), ("?from=2026-11-05&to=2026-11-01", "to"), ("?from=2026-13-01&to=2026-11-01", "from"),
     ("?from=2025-01-01&to=2026-11-01", "to")],
)  # fmt: skip
def test_usage_validates_its_dates(key_client, query, field):
    response = key_client.get(f"/api/v1/usage{query}")
    assert response.status_code == 400 and field in {e["field"] for e in response.json()["errors"]}


def test_resolutions_are_cursor_paginated_with_full_next_urls(post_events, key_client):
    events = []
    for i in range(7):
        events += [event(f"a{i}", f"c{i}", "ai_answer", 100 - i), event(f"b{i}", f"c{i}", "customer_confirmed", 90 - i)]
    post_events(*events)
    seen, url = [], "/api/v1/resolutions?limit=3"
    while url:
        page = key_client.get(url).json()
        seen += [r["conversation_id"] for r in page["results"]]
        url = page["next"]
        assert url is None or url.startswith("http://testserver/api/v1/resolutions?")
    assert seen == [f"c{i}" for i in range(7)]
    first = key_client.get("/api/v1/resolutions?limit=1").json()["results"][0]
    assert first == {
        "id": Resolution.objects.get(conversation_id="c0").pk,
        "conversation_id": "c0", "kind": "confirmed", "resolved_at": "2026-11-02T10:30:00Z",
        "funding": "unfunded", "pack_id": None, "amount_minor": 0, "voided": False,
    }  # fmt: skip


def test_resolutions_filter_by_local_dates(post_events, key_client):
    post_events(event("a", "c1", "ai_answer", 60 * 30), event("b", "c1", "customer_confirmed", 60 * 29))
    post_events(event("c", "c2", "ai_answer", 60), event("d", "c2", "customer_confirmed", 50))
    today = key_client.get("/api/v1/resolutions?from=2026-11-02&to=2026-11-02").json()["results"]
    assert [r["conversation_id"] for r in today] == ["c2"]


def test_read_apis_show_only_the_callers_account(post_events, other_account, api_client, db):
    from tests.factories import CustomerUserFactory

    post_events(event("a", "c1", "ai_answer", 60), event("b", "c1", "customer_confirmed", 10))
    outsider = CustomerUserFactory(account=other_account)
    api_client.credentials()
    api_client.force_authenticate(outsider)
    assert api_client.get("/api/v1/resolutions").json() == {"results": [], "next": None}
    assert api_client.get("/api/v1/usage?from=2026-11-02&to=2026-11-02").json()["totals"]["resolutions"] == 0


def test_session_customers_read_but_cannot_post_events(viewer, api_client, now):
    api_client.force_authenticate(viewer)
    assert api_client.get("/api/v1/resolutions").status_code == 200
    response = api_client.post("/api/v1/conversation-events", event("e", "c", "ai_answer", 1), format="json")
    assert response.status_code in (401, 403)


def test_no_conversation_ever_has_two_billable_resolutions(post_events):
    post_events(event("a", "c1", "ai_answer", 200), event("b", "c1", "customer_confirmed", 190))
    post_events(event("h", "c1", "handoff", 195))  # supersedes
    post_events(event("x", "c1", "customer_reply", 199))  # changes again: open... then nothing billable
    with clock.frozen(NOW + dt.timedelta(days=2)):
        billing_tick(NOW + dt.timedelta(days=2))
    per_conversation = Resolution.objects.filter(voided_at=None).values("conversation_id").annotate(n=Count("id"))
    assert all(row["n"] == 1 for row in per_conversation)
