"""Each raw PostgreSQL statement against its ORM twin (billing_portal.sql_twins): on the same data, the
`.sql` and the `.orm` version must return the same and leave the same rows behind. Each runs in its own
savepoint, rolled back afterwards, so both start from identical tables. A twin without a case here fails
test_every_twin_has_a_parity_case."""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import models, transaction

from billing_portal.sql_twins import TWINS
from credits.models import CreditLedgerEntry, CreditPack
from resolutions.models import (
    Conversation,
    ConversationEvent,
    ConversationEventArchive,
    ConversationTally,
    DailyUsage,
    EventType,
    FundingProgress,
    MeterWindow,
    Resolution,
)
from tests.factories import AccountFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

NOW = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
TODAY = NOW.date()
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
TABLES = [ConversationEvent, Conversation, Resolution, DailyUsage, FundingProgress, CreditPack, CreditLedgerEntry,
          MeterWindow, ConversationTally, ConversationEventArchive]  # fmt: skip
CONFIRMED, ASSUMED = Resolution.Kind.CONFIRMED.value, Resolution.Kind.ASSUMED.value
UNFUNDED, CREDIT, OVERAGE = (Resolution.Funding.UNFUNDED.value, Resolution.Funding.CREDIT.value,
                             Resolution.Funding.OVERAGE.value)  # fmt: skip


def _twins_all_imported() -> list:
    """Every app's sql module imported, so TWINS holds every twin there is."""
    for app in apps.get_app_configs():
        if importlib.util.find_spec(f"{app.name}.sql") is not None:
            importlib.import_module(f"{app.name}.sql")
    return TWINS


def twin_name(fn) -> str:
    return f"{fn.__module__}.{fn.__name__}"


class _RolledBack(Exception):
    pass


def tables_state() -> dict[str, list]:
    """Every row of the tables the twins read and write, without auto-increment ids (the two runs get
    different ones from the sequences, which a rollback does not rewind)."""
    state = {}
    for model in TABLES:
        columns = [
            f.attname
            for f in model._meta.concrete_fields
            if not (f.primary_key and isinstance(f, models.AutoField | models.BigAutoField))
        ]
        state[model.__name__] = sorted(model.objects.values_list(*columns), key=repr)
    return state


def run_rolled_back(fn, args):
    """(what fn returned, the tables after it), then undo it."""
    try:
        with transaction.atomic():
            result = fn(*args)
            state = tables_state()
            raise _RolledBack
    except _RolledBack:
        pass
    return result, state


# --- The data every case runs against: two accounts with events, conversations, resolutions, packs ---
@pytest.fixture
def world(db):
    a = AccountFactory(slug="parity-a")
    b = AccountFactory(slug="parity-b")
    version = a.plan_version_id

    def pack(account, remaining, **extra):
        return CreditPack.objects.create(
            account=account, source=CreditPack.Source.PROMOTIONAL, granted=10, remaining=remaining,
            starts_at=NOW - 30 * DAY, expires_at=NOW + 300 * DAY, created_at=NOW - 30 * DAY, **extra,
        )  # fmt: skip

    packs = SimpleNamespace(a1=pack(a, 10), a2=pack(a, 3), b1=pack(b, 5))
    for p in (packs.a1, packs.a2, packs.b1):
        CreditLedgerEntry.objects.create(
            pack=p, account_id=p.account_id, kind=CreditLedgerEntry.Kind.GRANT, quantity=p.remaining,
            idempotency_key=f"grant:pack:{p.uid}", created_at=p.created_at,
        )  # fmt: skip

    def resolution(account, conversation_id, at, funding=UNFUNDED, kind=CONFIRMED, **extra):
        return Resolution.objects.create(
            account=account, conversation_id=conversation_id, kind=kind, resolved_at=at, plan_version_id=version,
            funding=funding, created_at=at, **extra,
        )  # fmt: skip

    r = SimpleNamespace(
        a1=resolution(a, "c1", NOW - 5 * HOUR),
        a2=resolution(a, "c2", NOW - 4 * HOUR, CREDIT, ASSUMED, credit_pack=packs.a1),
        a3=resolution(a, "c3", NOW - 3 * HOUR, OVERAGE, amount_minor=150),
        a4=resolution(a, "c4", NOW - 2 * HOUR, voided_at=NOW - HOUR, void_reason="superseded"),
        a5=resolution(a, "c5", NOW - HOUR),
        a6=resolution(a, "c6", NOW - 2 * HOUR, OVERAGE, voided_at=NOW - HOUR, void_reason="disputed"),
        a8=resolution(a, "c8", NOW - 40 * DAY, OVERAGE, amount_minor=90),  # a period earlier
        b1=resolution(b, "c1", NOW - 3 * HOUR, OVERAGE, amount_minor=100),
        b9=resolution(b, "c9", NOW - 2 * HOUR),
    )
    ai, confirmed = EventType.AI_ANSWER.value, EventType.CUSTOMER_CONFIRMED.value
    for account, event_id, conversation_id, type_, at in [
        (a, "e1", "c1", ai, NOW - 6 * HOUR), (a, "e2", "c1", confirmed, NOW - 5 * HOUR),
        (a, "e3", "c2", ai, NOW - 5 * HOUR), (b, "e1", "c1", ai, NOW - 4 * HOUR),
    ]:  # fmt: skip
        ConversationEvent.objects.create(
            account=account, event_id=event_id, conversation_id=conversation_id, type=type_, occurred_at=at,
            received_at=at,
        )  # fmt: skip
    ConversationEventArchive.objects.create(
        account=a, event_id="old-1", conversation_id="c7", type=ai, occurred_at=NOW - 50 * DAY,
        received_at=NOW - 50 * DAY, archived_at=NOW - 5 * DAY,
    )  # fmt: skip
    status = Conversation.Status
    for account, conversation_id, state, window, disputed, escalated_at in [
        (a, "c1", status.RESOLVED, None, False, None), (a, "c2", status.AWAITING, NOW + HOUR, False, None),
        (a, "c3", status.ESCALATED, None, True, NOW - 20 * HOUR),
        (b, "c1", status.AWAITING, NOW + 2 * HOUR, False, None),
        (a, "c9", status.ESCALATED, None, False, NOW - 3 * HOUR),
    ]:  # fmt: skip
        Conversation.objects.create(
            account=account, conversation_id=conversation_id, status=state, window_ends_at=window,
            last_event_at=NOW - 4 * HOUR, voided_by_staff=disputed, updated_at=NOW - 4 * HOUR,
            escalated_at=escalated_at,
        )  # fmt: skip
    ConversationTally.objects.create(account=a, waiting=1)
    DailyUsage.objects.create(account=a, date=TODAY, resolutions=4, credited=1, overage=1, amount_minor=150,
                              confirmed=2, escalated=1)  # fmt: skip
    DailyUsage.objects.create(account=a, date=TODAY - DAY, resolutions=7, credited=3, overage=2, amount_minor=180,
                              confirmed=5, escalated=2)  # fmt: skip
    MeterWindow.objects.create(account=a, start=NOW, end=NOW + HOUR, period_start=NOW - 10 * DAY,
                               period_end=NOW + 20 * DAY, overage=3, reported=3)  # fmt: skip
    DailyUsage.objects.create(account=b, date=TODAY, resolutions=2, overage=1, amount_minor=100)
    FundingProgress.objects.create(account=a, funded_through_id=r.a3.pk)
    return SimpleNamespace(a=a, b=b, version=version, packs=packs, r=r)


def incoming(event_id, conversation_id, type_, at):
    return SimpleNamespace(event_id=event_id, conversation_id=conversation_id, type=type_, occurred_at=at)


def unordered(rows):
    return sorted(rows, key=repr)


# --- One case per twin: the calls to compare (args), whether they write, how to compare the results ---
# Each case returns a list of (args, normalize); normalize puts results whose order is not part of the
# contract in a canonical order.
def case_events_store(w):
    return [
        ((w.a.pk, [incoming("e1", "c1", "ai_answer", NOW - 6 * HOUR), incoming("e4", "c4", "ai_answer", NOW),
                   incoming("e5", "c5", "handoff", NOW)], NOW), None),
        ((w.b.pk, [incoming("e1", "c1", "ai_answer", NOW - 4 * HOUR), incoming("e2", "c1", "customer_reply", NOW)],
          NOW), None),
    ]  # fmt: skip


def case_conversation_rows(w):
    event_columns = ("conversation_id", "type", "occurred_at", "event_id")
    resolution_columns = ("conversation_id", "id", "kind", "resolved_at")
    return [
        ((ConversationEvent, w.a.pk, ["c1", "c2", "missing"], event_columns), unordered),
        ((Conversation, w.a.pk, ["c1", "c3"], ("conversation_id", "voided_by_staff")), unordered),
        ((Resolution, w.a.pk, ["c1", "c2", "c3", "c4", "c5"], resolution_columns, True), unordered),
        ((Resolution, w.a.pk, ["c4"], resolution_columns, False), unordered),
        ((Resolution, w.b.pk, [], resolution_columns, True), unordered),
    ]


def case_conversations_upsert(w):
    status = Conversation.Status
    states = [("c1", status.RESOLVED.value, None, NOW - 5 * HOUR, None),
              ("c3", status.AWAITING.value, NOW + 2 * HOUR, NOW, None),
              ("c7", status.OPEN.value, None, NOW, None), ("c2", status.ESCALATED.value, None, NOW, NOW - HOUR),
              ("c9", status.ESCALATED.value, None, NOW, NOW - 3 * HOUR)]  # fmt: skip
    return [((w.a.pk, states, NOW), None), ((w.a.pk, [], NOW), None)]


def case_conversation_tally_add(w):
    return [((w.a.pk, 3), None), ((w.a.pk, -1), None), ((w.b.pk, 2), None)]


def case_period_usage_sums(w):
    """Whole days plus edges that add and take away, in several timezones (an edge counts only its own date),
    one plan or many at once (the price simulation's batches)."""
    plans = [
        (w.a.pk, "UTC", TODAY - DAY, TODAY, [(-1, NOW - 30 * HOUR, NOW - 4 * HOUR, TODAY - DAY),
                                           (-1, NOW - 2 * HOUR, NOW + 22 * HOUR, TODAY)]),
        (w.a.pk, "Asia/Tokyo", TODAY, TODAY, [(1, NOW - 26 * HOUR, NOW, TODAY), (-1, NOW - 3 * HOUR, NOW, TODAY)]),
        (w.b.pk, "UTC", TODAY - 5 * DAY, TODAY + DAY, []),
        (w.a.pk, "America/Los_Angeles", TODAY - 40 * DAY, TODAY,
         [(1, NOW - 41 * DAY, NOW - 39 * DAY, TODAY - 40 * DAY)]),
    ]  # fmt: skip
    return [(([plan],), None) for plan in plans] + [((plans,), None), (([],), None)]


def case_period_first_versions(w):
    keys = [
        (w.a.pk, NOW - 50 * DAY, NOW + DAY),
        (w.b.pk, NOW - 50 * DAY, NOW + DAY),
        (w.a.pk, NOW + DAY, NOW + 9 * DAY),
    ]
    return [((keys,), None), (([],), None)]


def case_resolutions_insert(w):
    new = [SimpleNamespace(conversation_id="c10", kind=CONFIRMED, resolved_at=NOW - HOUR),
           SimpleNamespace(conversation_id="c11", kind=ASSUMED, resolved_at=NOW)]  # fmt: skip
    return [((w.a.pk, w.version, new, NOW), None)]


def case_rollups_add(w):
    delta = {(w.a.pk, TODAY): [1, 1, 0, 0, 1, 0], (w.a.pk, TODAY - DAY): [2, 0, 2, 300, 0, -1],
             (w.b.pk, TODAY): [1, 0, 1, 100, 1, 2], (w.b.pk, TODAY - DAY): [0, 0, 0, 0, 0, 1]}  # fmt: skip
    return [((delta,), None)]


def case_resolutions_past_marks(w):
    return [
        (({w.a.pk: 0, w.b.pk: 0}, 100), None),
        (({w.a.pk: w.r.a2.pk, w.b.pk: 0}, 3), None),
        (({w.b.pk: w.r.b1.pk}, 10), None),
    ]


def case_overage_counts(w):
    keys = [(w.a.pk, NOW - 10 * DAY, NOW + 20 * DAY), (w.a.pk, NOW - 45 * DAY, NOW - 10 * DAY),
            (w.b.pk, NOW - 10 * DAY, NOW + 20 * DAY), (w.b.pk, NOW + DAY, NOW + 30 * DAY)]  # fmt: skip
    return [((keys,), None), (([],), None)]


def case_funding_marks_write(w):
    return [(({w.a.pk: w.r.a5.pk, w.b.pk: w.r.b1.pk},), None), (({},), None)]


def case_funding_write(w):
    batch = [SimpleNamespace(pk=w.r.a1.pk, credit_pack_id=w.packs.a2.pk, amount_minor=0),
             SimpleNamespace(pk=w.r.a5.pk, credit_pack_id=None, amount_minor=250),
             SimpleNamespace(pk=w.r.b9.pk, credit_pack_id=None, amount_minor=0)]  # fmt: skip
    return [((batch,), None)]


def case_unfunded_counts(w):
    return [((None,), None), (([w.a.pk],), None), (([w.b.pk, w.a.pk],), None), (([],), None)]


def case_ledger_insert(w):
    drawdown = CreditLedgerEntry.Kind.DRAWDOWN.value
    entries = [(w.packs.a1.pk, w.a.pk, drawdown, -1, f"drawdown:resolution:{w.r.a1.pk}", NOW),
               (w.packs.a2.pk, w.a.pk, drawdown, -1, f"drawdown:resolution:{w.r.a5.pk}", NOW)]  # fmt: skip
    return [((entries,), None)]


def case_pack_balances_write(w):
    return [(([(w.packs.a1.pk, 9, 0), (w.packs.a2.pk, 0, 1)],), None)]


def case_period_overage_rows(w):
    return [((w.a.pk, NOW - 35 * DAY, NOW + DAY), None), ((w.a.pk, NOW - 50 * DAY, NOW + DAY), None)]


def case_resolution_amounts_write(w):
    return [(([(w.r.a3.pk, 75), (w.r.a8.pk, -12), (w.r.b1.pk, 0)],), None)]


def case_rollups_rebuild(w):
    return [((w.a.pk, zone), None) for zone in ("UTC", "Asia/Tokyo", "America/Los_Angeles")]


def case_meter_windows_add(w):
    period = (NOW - 10 * DAY, NOW + 20 * DAY)  # the world has a window of account a at NOW
    delta = {
        (w.a.pk, NOW): [NOW + HOUR, *period, -1],  # an existing window: its count moves, its bounds stay
        (w.a.pk, NOW + HOUR): [NOW + 2 * HOUR, *period, 4],
        (w.b.pk, NOW - 10 * DAY): [NOW - 10 * DAY + HOUR, *period, 2],
    }
    return [((delta,), None)]


def case_archived_events_by_id(w):
    return [((w.a.pk, ["old-1", "e1", "missing"]), unordered), ((w.b.pk, ["old-1"]), None), ((w.a.pk, []), None)]


def case_events_archive_move(w):
    return [((w.a.pk, ["c1", "missing"], NOW), None), ((w.b.pk, ["c1"], NOW), None), ((w.a.pk, [], NOW), None)]


CASES = {
    "resolutions.sql.events_archive_move": case_events_archive_move,
    "resolutions.sql.archived_events_by_id": case_archived_events_by_id,
    "resolutions.sql.meter_windows_add": case_meter_windows_add,
    "resolutions.sql.events_store": case_events_store,
    "resolutions.sql.conversation_rows": case_conversation_rows,
    "resolutions.sql.conversations_upsert": case_conversations_upsert,
    "resolutions.sql.resolutions_insert": case_resolutions_insert,
    "resolutions.sql.rollups_add": case_rollups_add,
    "resolutions.sql.resolutions_past_marks": case_resolutions_past_marks,
    "resolutions.sql.overage_counts": case_overage_counts,
    "resolutions.sql.funding_marks_write": case_funding_marks_write,
    "resolutions.sql.funding_write": case_funding_write,
    "resolutions.sql.unfunded_counts": case_unfunded_counts,
    "credits.sql.ledger_insert": case_ledger_insert,
    "credits.sql.pack_balances_write": case_pack_balances_write,
    "resolutions.sql.period_overage_rows": case_period_overage_rows,
    "resolutions.sql.resolution_amounts_write": case_resolution_amounts_write,
    "resolutions.sql.rollups_rebuild": case_rollups_rebuild,
    "resolutions.sql.conversation_tally_add": case_conversation_tally_add,
    "resolutions.sql.period_usage_sums": case_period_usage_sums,
    "resolutions.sql.period_first_versions": case_period_first_versions,
}
# Twins that only read: their parity is in what they return; the others must also change the tables.
READS_ONLY = {"conversation_rows", "resolutions_past_marks", "overage_counts", "unfunded_counts", "period_overage_rows",
              "period_usage_sums", "period_first_versions", "archived_events_by_id"}  # fmt: skip


def test_every_twin_has_a_parity_case():
    assert sorted(twin_name(fn) for fn in _twins_all_imported()) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sql_and_orm_twins_agree(world, name):
    (fn,) = [t for t in _twins_all_imported() if twin_name(t) == name]
    before = tables_state()
    calls = CASES[name](world)
    changed = False
    for args, normalize in calls:
        sql_result, sql_state = run_rolled_back(fn.sql, args)
        orm_result, orm_state = run_rolled_back(fn.orm, args)
        if normalize is not None:
            sql_result, orm_result = normalize(sql_result), normalize(orm_result)
        assert sql_result == orm_result, f"{name}{args!r}: what the twins return differs"
        for table in sql_state:
            assert sql_state[table] == orm_state[table], f"{name}{args!r}: the twins leave {table} different"
        changed |= sql_state != before
    assert tables_state() == before  # each run was rolled back
    # A case that changes nothing would compare two no-ops: writers must write, readers must read something.
    if fn.__name__ in READS_ONLY:
        assert any(run_rolled_back(fn.sql, args)[0] for args, _ in calls), f"{name}: every case reads nothing"
    else:
        assert changed, f"{name}: no case changes any table"
