"""Archiving raw events (resolutions/services/archive.py, docs/data-lifecycle.md): what moves, what never does,
and the rules that keep ingestion and evaluation exact for archived conversations."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing_portal import clock
from credits.models import CreditLedgerEntry
from credits.services import credit_pack_grant
from resolutions.ingestion import IncomingEvent
from resolutions.models import Conversation, ConversationEvent, ConversationEventArchive, DailyUsage, Resolution
from resolutions.services.archive import ArchiveTooRecent, conversation_events_archive
from resolutions.services.funding import resolutions_fund
from resolutions.services.ingestion import EventConflict, conversation_events_ingest
from resolutions.tests.conftest import NOW, event, iso

pytestmark = pytest.mark.django_db

LATER = NOW + dt.timedelta(days=60)  # the day the archive runs
CUTOFF = LATER - dt.timedelta(days=42)  # the latest cut-off allowed then (35 days + a week)
Status = Conversation.Status


def _later_event(event_id, conversation_id, type_, minutes_ago):
    return {**event(event_id, conversation_id, type_, 0), "occurred_at": iso(LATER - dt.timedelta(minutes=minutes_ago))}


@pytest.fixture
def history(account, billing_admin, post_events):
    """At NOW: c1 confirmed, c2 escalated, c3 assumed after its window (the sweep), c4 open (the customer replied
    last, no outcome); one credit, so one resolution is credited and the other overage. At LATER: c5 confirmed
    (recent)."""
    credit_pack_grant(account=account, quantity=1, source="promotional", actor=billing_admin, reason="Trial",
                      starts_at=NOW - dt.timedelta(days=1))  # fmt: skip
    response = post_events(
        event("e1", "c1", "ai_answer", 3000), event("e2", "c1", "customer_confirmed", 2990),
        event("e3", "c2", "ai_answer", 3000), event("e4", "c2", "handoff", 2990),
        event("e5", "c3", "ai_answer", 3000),
        event("e6", "c4", "ai_answer", 3000), event("e7", "c4", "customer_reply", 2990),
    )  # fmt: skip
    assert response.status_code == 202, response.content
    with clock.frozen(LATER):
        call_command("billing_tick", "--now", iso(LATER), stdout=StringIO(), stderr=StringIO())
        assert post_events(_later_event("e8", "c5", "ai_answer", 30),
                           _later_event("e9", "c5", "customer_confirmed", 20)).status_code == 202  # fmt: skip
        resolutions_fund(now=LATER)
    states = dict(Conversation.objects.values_list("conversation_id", "status"))
    assert states == {"c1": Status.RESOLVED, "c2": Status.ESCALATED, "c3": Status.RESOLVED, "c4": Status.OPEN,
                      "c5": Status.RESOLVED}  # fmt: skip
    return account


def _money_rows():
    return (
        list(
            Resolution.objects.order_by("pk").values_list(
                "pk", "conversation_id", "funding", "credit_pack_id", "amount_minor", "voided_at"
            )
        ),  # fmt: skip
        list(CreditLedgerEntry.objects.order_by("pk").values_list("pk", "pack_id", "kind", "quantity")),
        list(DailyUsage.objects.order_by("pk").values()),
    )


def _live_conversations():
    return sorted(set(ConversationEvent.objects.values_list("conversation_id", flat=True)))


def test_archive_moves_only_finished_old_conversations_and_never_money_rows(history):
    money = _money_rows()
    assert {r[2] for r in money[0]} == {"credit", "overage"} and money[1]  # funded, both ways
    before = {
        e.event_id: (e.conversation_id, e.type, e.occurred_at, e.received_at) for e in ConversationEvent.objects.all()
    }

    result = conversation_events_archive(before=CUTOFF, now=LATER)

    assert (result.conversations, result.events, result.dry_run) == (3, 5, False)
    assert _live_conversations() == ["c4", "c5"]  # open, and too recent
    archived = {
        a.event_id: (a.conversation_id, a.type, a.occurred_at, a.received_at)
        for a in ConversationEventArchive.objects.all()
    }
    assert archived == {k: v for k, v in before.items() if v[0] in ("c1", "c2", "c3")}  # as they were, each once
    assert set(ConversationEventArchive.objects.values_list("archived_at", flat=True)) == {LATER}
    marked = dict(Conversation.objects.values_list("conversation_id", "events_archived_at"))
    assert marked == {"c1": LATER, "c2": LATER, "c3": LATER, "c4": None, "c5": None}
    assert _money_rows() == money  # resolutions, ledger, rollups untouched


def test_a_second_run_moves_nothing_and_a_dry_run_changes_nothing(history):
    dry = conversation_events_archive(before=CUTOFF, now=LATER, dry_run=True)
    assert (dry.conversations, dry.events, dry.dry_run) == (3, 5, True)
    assert ConversationEvent.objects.count() == 9 and not ConversationEventArchive.objects.exists()
    assert not Conversation.objects.exclude(events_archived_at=None).exists()

    first = conversation_events_archive(before=CUTOFF, now=LATER, batch_size=1)  # a transaction a conversation
    second = conversation_events_archive(before=CUTOFF, now=LATER)
    assert (first.conversations, first.events) == (3, 5) and (second.conversations, second.events) == (0, 0)
    assert ConversationEventArchive.objects.count() == 5 and ConversationEvent.objects.count() == 4


def test_a_cutoff_inside_the_late_window_is_refused_and_moves_nothing(history):
    with pytest.raises(ArchiveTooRecent, match="too recent"):
        conversation_events_archive(before=CUTOFF + dt.timedelta(seconds=1), now=LATER)
    err = StringIO()
    with pytest.raises(CommandError, match="too recent"):
        call_command("events_archive", "--before", (LATER - dt.timedelta(days=41)).date().isoformat(), "--now",
                     iso(LATER), stdout=StringIO(), stderr=err)  # fmt: skip
    assert ConversationEvent.objects.count() == 9 and not ConversationEventArchive.objects.exists()


def test_late_events_of_an_archived_conversation_change_nothing(history, post_events):
    conversation_events_archive(before=CUTOFF, now=LATER)
    billable = list(Resolution.objects.filter(voided_at=None).order_by("pk").values_list("pk", "conversation_id"))
    with clock.frozen(LATER):
        # A handoff after c1's confirmation; an answer and a confirmation after c2's escalation; a reply after c3's.
        response = post_events(
            _later_event("late-1", "c1", "handoff", 10), _later_event("late-2", "c2", "ai_answer", 10),
            _later_event("late-3", "c2", "customer_confirmed", 5), _later_event("late-4", "c3", "customer_reply", 10),
        )  # fmt: skip
    assert response.status_code == 202 and response.json() == {"accepted": 4, "duplicates": 0}
    # Decided from all their events, archived ones included: had evaluation read only the live ones, c1 would be
    # escalated (its resolution voided), c2 resolved and c3 open.
    states = dict(Conversation.objects.values_list("conversation_id", "status"))
    assert (states["c1"], states["c2"], states["c3"]) == (Status.RESOLVED, Status.ESCALATED, Status.RESOLVED)
    assert (
        list(Resolution.objects.filter(voided_at=None).order_by("pk").values_list("pk", "conversation_id")) == billable
    )


def test_an_archived_id_is_still_the_accounts_a_new_payload_is_409(history, post_events):
    conversation_events_archive(before=CUTOFF, now=LATER)
    with clock.frozen(LATER):
        # Same id as archived e4 (c2's handoff), a recent instant: a different payload, as before archiving.
        response = post_events(_later_event("e4", "c2", "handoff", 10), _later_event("fresh", "c9", "ai_answer", 5))
        assert response.status_code == 409, response.content
        assert response.json()["errors"] == [
            {"index": 0, "field": "id", "message": "This id was already used with a different payload."}
        ]
        assert not ConversationEvent.objects.filter(event_id__in=["e4", "fresh"]).exists()  # the batch refused whole
        # The same payload again is refused as too old (35 days), as it was before archiving.
        same = post_events(event("e4", "c2", "handoff", 2990))
        assert same.status_code == 400 and same.json()["errors"][0]["field"] == "occurred_at"


def test_an_archived_id_with_its_own_payload_is_a_duplicate_at_the_service(history):
    """Below the API's 35-day check (a caller of the service): an archived event sent again is a duplicate."""
    conversation_events_archive(before=CUTOFF, now=LATER)
    archived = ConversationEventArchive.objects.get(event_id="e1")
    again = IncomingEvent(index=0, event_id="e1", conversation_id="c1", type=archived.type,
                          occurred_at=archived.occurred_at)  # fmt: skip
    with clock.frozen(LATER):
        result = conversation_events_ingest(account=history, events=[again])
        assert (result.accepted, result.duplicates) == (0, 1)
        assert not ConversationEvent.objects.filter(event_id="e1").exists()
        other = IncomingEvent(index=0, event_id="e1", conversation_id="c1", type="handoff",
                              occurred_at=archived.occurred_at)  # fmt: skip
        with pytest.raises(EventConflict):
            conversation_events_ingest(account=history, events=[other])


def test_the_command_shows_progress_and_prints_json(history, other_account):
    out = StringIO()
    call_command("events_archive", "--before", CUTOFF.date().isoformat(), "--now", iso(LATER), "--dry-run", stdout=out)
    text = out.getvalue()
    assert "Archiving events [" in text and "account 2/2" in text  # every account walked, one without events
    assert "Would move 5 event(s) of 3 finished conversation(s)" in text
    out = StringIO()
    call_command("events_archive", "--before", iso(CUTOFF), "--now", iso(LATER), "--json", stdout=out)
    assert json.loads(out.getvalue()) == {"accounts": 2, "conversations": 3, "events": 5, "dry_run": False}
    assert ConversationEventArchive.objects.count() == 5


def test_a_run_that_moved_events_leaves_fresh_statistics(history):
    """A stale row count made the planner scan an account's whole archive for ingestion's id probe: a run that
    moved events analyzes both tables; one that moved nothing (or a dry run) does not."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def analyzed(**kwargs):
        with CaptureQueriesContext(connection) as queries:
            conversation_events_archive(before=CUTOFF, now=LATER, **kwargs)
        return sorted(q["sql"] for q in queries if q["sql"].startswith("ANALYZE"))

    assert analyzed(dry_run=True) == []
    assert analyzed() == [f'ANALYZE "{ConversationEvent._meta.db_table}"',
                          f'ANALYZE "{ConversationEventArchive._meta.db_table}"']  # fmt: skip
    assert analyzed() == []  # nothing left to move


def test_the_daily_task_is_off_by_default_and_archives_past_its_days_when_set(history, settings):
    from resolutions.tasks import events_archive_task

    with clock.frozen(LATER):
        assert events_archive_task.apply().get() is None  # off: nothing moves
        assert ConversationEventArchive.objects.count() == 0
        settings.EVENTS_ARCHIVE_AFTER_DAYS = 42
        result = events_archive_task.apply().get()
    assert (result["conversations"], result["events"]) == (3, 5)  # as the command with --before LATER - 42 days
    assert _live_conversations() == ["c4", "c5"]
    with clock.frozen(LATER):
        assert events_archive_task.apply().get()["events"] == 0  # a second run (a redelivery) moves nothing
