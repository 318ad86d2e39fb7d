"""EXPLAIN of the hot queries on the big tables (issue 13, docs/data-lifecycle.md): with a few hundred thousand
rows loaded and ANALYZEd, each hot statement, run through the code that issues it (its parameters realistic),
must reach its rows through the intended index, never by a sequential scan of a big table, and expect a bounded
number of rows. Dropping one of those indexes makes its case fail (checked by hand once: see the lifecycle doc).

The statements are captured with an execute wrapper that prefixes each one with EXPLAIN (FORMAT JSON): nothing
runs, the planner only plans (with the statement's real parameters: billing_portal.db asks for a custom plan)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.db import connection
from django.db.models import Sum

from accounts.models import Account
from credits.models import CreditLedgerEntry, CreditPack
from resolutions import sql
from resolutions.ingestion import IncomingEvent
from resolutions.models import (
    Conversation,
    ConversationEvent,
    ConversationEventArchive,
    ConversationEventArchiveMark,
    DailyUsage,
    MeterReport,
    MeterWindow,
    Resolution,
)
from resolutions.selectors import resolution_list_filtered, resolution_page_get
from resolutions.services.archive import archived_event_payloads
from resolutions.services.metering import _period_terms, meter_accounts_due
from tests.factories import AccountFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

ACCOUNTS = 10
QUIET_ACCOUNTS = 150
CONVERSATIONS = 200_000  # three events each; 80 % resolved
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)  # conversation c starts at T0 + c * 9 minutes
NOW = T0 + dt.timedelta(minutes=9 * CONVERSATIONS)
DAYS = 9 * CONVERSATIONS // 1440  # about 3.4 years
BIG_TABLES = {
    model._meta.db_table
    for model in (
        ConversationEvent,
        Conversation,
        Resolution,
        DailyUsage,
        MeterWindow,
        MeterReport,
        CreditLedgerEntry,
        ConversationEventArchive,
    )
}


def _world_load() -> list[int]:
    """Accounts and, spread over them, a conversation history of 21 months written by SQL (the shapes the
    services write: events, conversation states, resolutions and their credit ledger, daily rollups, hourly
    meter windows with their report rows); then ANALYZE. Returns the account ids."""
    accounts = [a.pk for a in AccountFactory.create_batch(ACCOUNTS)]
    version_id = Account.objects.get(pk=accounts[0]).plan_version_id
    # The rest of a book of thousands: accounts whose only rows here are their daily rollups.
    quiet = Account.objects.bulk_create(
        Account(name=f"Quiet {i}", slug=f"quiet-{i}", plan_version_id=version_id) for i in range(QUIET_ACCOUNTS)
    )
    packs = CreditPack.objects.bulk_create(
        CreditPack(
            account_id=a,
            source="purchase",
            granted=10_000,
            remaining=1_000,
            starts_at=T0 + dt.timedelta(days=30 * i),
            expires_at=T0 + dt.timedelta(days=30 * i + 365),
        )  # fmt: skip
        for a in accounts
        for i in range(12)
    )
    params = {
        "quiet": [a.pk for a in quiet],
        "accounts": accounts,
        "t0": T0,
        "n": CONVERSATIONS,
        "version": version_id,
        "packs": [p.pk for p in packs],
    }
    statements = [
        # Conversation c belongs to accounts[c % ACCOUNTS]; its events are ai_answer, customer_reply, ai_answer.
        f"""INSERT INTO {ConversationEvent._meta.db_table}
                (account_id, event_id, conversation_id, type, occurred_at, received_at)
            SELECT (%(accounts)s::bigint[])[c %% {ACCOUNTS} + 1], 'evt-' || c || '-' || j, 'conv-' || c,
                   (ARRAY['ai_answer', 'customer_reply', 'ai_answer'])[j + 1],
                   %(t0)s + (c * 9 + j * 2) * interval '1 minute', %(t0)s + (c * 9 + j * 2 + 1) * interval '1 minute'
            FROM generate_series(1, %(n)s) c, generate_series(0, 2) j""",
        f"""INSERT INTO {Conversation._meta.db_table} (account_id, conversation_id, status, window_ends_at,
                last_event_at, voided_by_staff, escalated_at, updated_at)
            SELECT (%(accounts)s::bigint[])[c %% {ACCOUNTS} + 1], 'conv-' || c,
                   CASE WHEN c > %(n)s - 200 THEN 'awaiting' WHEN (c / {ACCOUNTS}) %% 10 < 8 THEN 'resolved'
                        ELSE 'escalated' END,
                   CASE WHEN c > %(n)s - 200 THEN %(t0)s + (c * 9 + 4) * interval '1 minute' + interval '1 day' END,
                   %(t0)s + (c * 9 + 4) * interval '1 minute', false,
                   CASE WHEN (c / {ACCOUNTS}) %% 10 >= 8 AND c <= %(n)s - 200
                        THEN %(t0)s + (c * 9 + 4) * interval '1 minute' END,
                   %(t0)s + (c * 9 + 5) * interval '1 minute'
            FROM generate_series(1, %(n)s) c""",
        f"""INSERT INTO {Resolution._meta.db_table} (account_id, conversation_id, kind, resolved_at, plan_version_id,
                funding, credit_pack_id, amount_minor, created_at, voided_at, void_reason)
            SELECT (%(accounts)s::bigint[])[c %% {ACCOUNTS} + 1], 'conv-' || c,
                   CASE WHEN (c / {ACCOUNTS}) %% 3 = 0 THEN 'confirmed' ELSE 'assumed' END,
                   %(t0)s + (c * 9 + 4) * interval '1 minute' + interval '1 day', %(version)s,
                   CASE WHEN (c / {ACCOUNTS}) %% 2 = 0 THEN 'credit' ELSE 'overage' END,
                   CASE WHEN (c / {ACCOUNTS}) %% 2 = 0 THEN (%(packs)s::bigint[])[(c %% {ACCOUNTS}) * 12 + 1] END,
                   CASE WHEN (c / {ACCOUNTS}) %% 2 = 0 THEN 0 ELSE 99 END,
                   %(t0)s + (c * 9 + 4) * interval '1 minute' + interval '1 day',
                   CASE WHEN c %% 97 = 0 THEN %(t0)s + c * 9 * interval '1 minute' + interval '3 days' END, ''
            FROM generate_series(1, %(n)s) c WHERE (c / {ACCOUNTS}) %% 10 < 8 AND c <= %(n)s - 200""",
        f"""INSERT INTO {CreditLedgerEntry._meta.db_table} (pack_id, account_id, kind, quantity, idempotency_key,
                created_at)
            SELECT credit_pack_id, account_id, 'drawdown', -1, 'drawdown:resolution:' || id, created_at
            FROM {Resolution._meta.db_table} WHERE credit_pack_id IS NOT NULL""",
        f"""INSERT INTO {DailyUsage._meta.db_table} (account_id, date, resolutions, credited, overage, amount_minor,
                confirmed, escalated)
            SELECT a, d::date, 100, 50, 50, 4950, 30, 10
            FROM unnest(%(accounts)s::bigint[] || %(quiet)s::bigint[]) a,
                 generate_series(%(t0)s::date, %(t0)s::date + {DAYS}, '1 day') d""",
        # Hourly windows of every account (about 15,000 each), all reported but the last day's.
        f"""INSERT INTO {MeterWindow._meta.db_table} (account_id, start, "end", period_start, period_end, overage,
                reported)
            SELECT a, %(t0)s + h * interval '1 hour', %(t0)s + (h + 1) * interval '1 hour',
                   date_trunc('month', %(t0)s + h * interval '1 hour'),
                   date_trunc('month', %(t0)s + h * interval '1 hour') + interval '1 month',
                   3, CASE WHEN h > 15000 - 24 THEN 2 ELSE 3 END
            FROM unnest(%(accounts)s::bigint[]) a, generate_series(0, 15000) h""",
        # Three years in, the events of the oldest conversations are in the archive (events_archive).
        f"""INSERT INTO {ConversationEventArchive._meta.db_table}
                (account_id, event_id, conversation_id, type, occurred_at, received_at, archived_at)
            SELECT account_id, event_id, conversation_id, type, occurred_at, received_at, %(t0)s + interval '2 years'
            FROM {ConversationEvent._meta.db_table} WHERE occurred_at < %(t0)s + interval '1 year'""",
        f"""UPDATE {Conversation._meta.db_table} SET events_archived_at = %(t0)s + interval '2 years'
            WHERE last_event_at < %(t0)s + interval '1 year' AND status IN ('resolved', 'escalated')""",
        f"""INSERT INTO {ConversationEventArchiveMark._meta.db_table} (account_id, archived_before)
            SELECT a, %(t0)s + interval '1 year' FROM unnest(%(accounts)s::bigint[]) a""",
        f"""INSERT INTO {MeterReport._meta.db_table} (account_id, window_id, sequence, quantity, timestamp, identifier,
                state, attempts, rejections, last_error, created_at)
            SELECT account_id, id, 0, reported, start, 'w-' || id, 'confirmed', 1, 0, '', "end"
            FROM {MeterWindow._meta.db_table}""",
    ]
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, params)
        for table in sorted(BIG_TABLES):
            cursor.execute(f"ANALYZE {table}")
    return accounts


def _plans_of(run: Callable[[], object], replay: bool = True) -> list[dict]:
    """The plans of the statements `run` issues, none of them executed (each becomes EXPLAIN (FORMAT JSON)).
    `run` sees EXPLAIN's row instead of its own, so it may fail after the first statement: its plans so far
    are what it planned."""
    plans: list[dict] = []

    def explain(execute, statement, params, many, context):
        result = execute("EXPLAIN (FORMAT JSON) " + statement, params, many, context)
        if isinstance(result, list):  # billing_portal.db: the rows come back
            rows = result
        else:  # Django's cursor: read them, then plan again so that the caller still finds EXPLAIN's row
            rows = context["cursor"].fetchall()
            if replay:
                result = execute("EXPLAIN (FORMAT JSON) " + statement, params, many, context)
        value = rows[0][0]
        plans.append((json.loads(value) if isinstance(value, str) else value)[0]["Plan"])
        return result

    with connection.execute_wrapper(explain):
        try:
            run()
        except Exception:  # noqa: BLE001 - the caller was handed EXPLAIN's rows; what it planned is captured
            pass
    assert plans, "the code under test issued no statement"
    return plans


def _nodes(plan: dict, limited: bool = False):
    """(node, whether a Limit above it stops the scan early): a node's Plan Rows are what it would return if
    read to the end."""
    yield plan, limited
    for child in plan.get("Plans", []):
        yield from _nodes(child, limited or plan["Node Type"] == "Limit")


class World(list):
    """The account ids, and what the cases need read before their statements are captured."""

    def __init__(self, accounts: list[int]):
        super().__init__(accounts)
        self.account = Account.objects.get(pk=accounts[A])
        self.pack_id = CreditPack.objects.filter(account_id=accounts[A]).order_by("pk").values_list("pk", flat=True)[0]
        # Funding reads on from its marks: a tick behind, about 50 resolutions an account.
        self.marks = {
            a: Resolution.objects.filter(account_id=a).order_by("-id").values_list("id", flat=True)[50]
            for a in accounts
        }


def _plan_text(plan: dict, depth: int = 0) -> str:
    """A plan as indented lines (node, relation, index, expected rows), for a failure's message."""
    line = "  " * depth + " ".join(
        str(part) for part in (plan["Node Type"], plan.get("Relation Name", ""), plan.get("Index Name", ""),
                               f"rows={plan['Plan Rows']}") if part
    )  # fmt: skip
    return "\n".join([line, *(_plan_text(child, depth + 1) for child in plan.get("Plans", []))])


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[list[int]], object]
    indexes: set[str]  # each must appear in the plans (a frozenset among them: one of its names)
    max_rows: int  # the most rows any scan of a big table may expect
    replay: bool = True  # an ORM caller gets EXPLAIN's row (False: no rows, for code that cannot take it)


def _events(account_id: int, first: int, n: int) -> list[IncomingEvent]:
    """n incoming events of new conversations numbered from `first` (ids the account has not used)."""
    at = NOW - dt.timedelta(hours=1)
    return [
        IncomingEvent(
            index=i,
            event_id=f"new-{first + i}",
            conversation_id=f"new-conv-{first + i}",
            type="ai_answer",
            occurred_at=at,
        )  # fmt: skip
        for i in range(n)
    ]


def _conversations_of(accounts: list[int], account_index: int, n: int) -> list[str]:
    """n of the account's recent conversation ids (conversation c is accounts[c % ACCOUNTS]'s)."""
    top = CONVERSATIONS - 300
    top -= (top - account_index) % ACCOUNTS
    return [f"conv-{c}" for c in range(top, top - ACCOUNTS * n, -ACCOUNTS)]


A = 3  # the account the per-account cases ask about
MONTH = (dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 4, 1, tzinfo=dt.UTC))

CASES = [
    Case(
        "ingestion: insert the batch's new events (ON CONFLICT on the unique id)",
        lambda acc: sql.events_store(acc[A], _events(acc[A], 0, 1000), NOW),
        {"conversation_event_id_unique"}, 1000,
    ),
    Case(
        "ingestion: the repeated ids' stored payloads (duplicate or 409)",
        lambda acc: list(ConversationEvent.objects.filter(
            account_id=acc[A], event_id__in=[f"evt-{c[5:]}-0" for c in _conversations_of(acc, A, 1000)]
        ).values_list("event_id", "conversation_id", "type", "occurred_at")),
        {"conversation_event_id_unique"}, 1000,
    ),
    Case(
        "evaluation: the events of the batch's conversations",
        lambda acc: sql.conversation_rows(ConversationEvent, acc[A], _conversations_of(acc, A, 1000),
                                          ("conversation_id", "type", "occurred_at", "event_id")),
        {"conversation_event_conv_idx"}, 5000,
    ),
    Case(
        "evaluation: the billable resolutions of the batch's conversations",
        lambda acc: sql.conversation_rows(Resolution, acc[A], _conversations_of(acc, A, 1000),
                                          ("conversation_id", "id", "kind", "resolved_at"), billable=True),
        {"one_billable_resolution_per_conversation"}, 1000,
    ),
    Case(
        "evaluation: conversation states written (and read before)",
        lambda acc: sql.conversations_upsert(
            acc[A], [(c, "resolved", None, NOW, None) for c in _conversations_of(acc, A, 1000)], NOW
        ),
        {"conversation_unique"}, 1000,
    ),
    Case(
        "ingestion: the batch's new ids in the archive (a reused archived id is still a duplicate or 409)",
        lambda acc: archived_event_payloads(account_id=acc[A],
                                            event_ids=[e.event_id for e in _events(acc[A], 0, 1000)]),
        # By id; or, when ANALYZE's sample makes the account's archive look small next to 1,000 probes, a bitmap
        # of the account's part of the conversation index (both bounded: no scan of the whole archive).
        {"resolutions_conversationeventarchivemark_pkey",
         frozenset({"event_archive_id_unique", "event_archive_conv_idx"})}, 1000,
    ),
    Case(
        "evaluation: which of the batch's conversations are disputed or archived",
        lambda acc: sql.conversation_rows(Conversation, acc[A], _conversations_of(acc, A, 1000),
                                          ("conversation_id", "voided_by_staff", "events_archived_at")),
        {"conversation_unique"}, 1000,
    ),
    Case(
        "evaluation: the archived events of archived conversations",
        lambda acc: sql.conversation_rows(ConversationEventArchive, acc[A], _conversations_of(acc, A, 1000)[-100:],
                                          ("conversation_id", "type", "occurred_at", "event_id")),
        {"event_archive_conv_idx"}, 1000,
    ),
    Case(
        "archive: the next conversations with live events (keyset walk)",
        lambda acc: list(ConversationEvent.objects.filter(account_id=acc[A], conversation_id__gt="conv-5")
                         .order_by("conversation_id").values_list("conversation_id", flat=True).distinct()[:2000]),
        {"conversation_event_conv_idx"}, 10_000,
    ),
    Case(
        "archive: which of them are finished before the cut-off",
        lambda acc: list(Conversation.objects.filter(
            account_id=acc[A], conversation_id__in=_conversations_of(acc, A, 2000),
            status__in=["resolved", "escalated"],
            last_event_at__lt=NOW - dt.timedelta(days=42), voided_by_staff=False,
        ).values_list("conversation_id", flat=True)),
        {"conversation_unique"}, 2000,
    ),
    Case(
        "sweep: conversations whose inactivity window has elapsed",
        lambda acc: list(Conversation.objects.filter(
            status=Conversation.Status.AWAITING, window_ends_at__lte=NOW + dt.timedelta(days=1)
        ).values_list("account_id", flat=True).distinct()),
        {"conversation_due_idx"}, 1000,
    ),
    Case(
        "funding: the resolutions past each account's mark",
        lambda acc: sql.resolutions_past_marks(
            acc.marks,
            2000,
        ),
        # Marks a tick behind: the primary key's tail serves as well as the account's (account, id) index.
        {frozenset({"resolution_account_id_idx", "resolutions_resolution_pkey"})}, 20_000,
    ),
    Case(
        "funding: how many resolutions each account has past its mark",
        lambda acc: sql.unfunded_counts(acc),
        {frozenset({"resolution_account_id_idx", "resolutions_resolution_pkey"})}, 20_000,
    ),
    Case(
        "credits: a pack's ledger sum (the invariant checks, pack pages)",
        lambda acc: CreditLedgerEntry.objects.filter(
            pack_id=acc.pack_id
        ).aggregate(n=Sum("quantity")),
        {"credit_ledger_pack_kind_idx"}, 20_000,  # the pack's own entries: one per credit drawn
    ),
    Case(
        "credits: a drawdown's idempotency key already used?",
        lambda acc: CreditLedgerEntry.objects.filter(idempotency_key="drawdown:resolution:12345").exists(),
        {"credit_ledger_idempotency_key_unique"}, 1,
    ),
    Case(
        "voids: a billing period's overage resolutions (re-pricing)",
        lambda acc: sql.period_overage_rows(acc[A], *MONTH),
        {"resolution_account_time_idx"}, 5000,
    ),
    Case(
        "metering: overage counts of billing periods",
        lambda acc: sql.overage_counts([(a, *MONTH) for a in acc]),
        {"resolution_account_time_idx"}, 5000,
    ),
    Case(
        "metering: a period's plan version (its first resolution)",
        lambda acc: _period_terms(acc[A], *MONTH),
        {"resolution_account_time_idx"}, 5000,
    ),
    Case(
        "metering: the period's first versions (simulation, book)",
        lambda acc: sql.period_first_versions([(a, *MONTH) for a in acc]),
        {"resolution_account_time_idx"}, 5000,
    ),
    Case(
        "metering: accounts with a closed window whose count moved",
        lambda acc: meter_accounts_due(now=NOW),
        # PostgreSQL picks the index by the expression's statistics but still prints the rows of its guess for
        # `overage <> reported` (99.5 %): no bound on the estimate here; a dropped index is a Seq Scan again.
        {"meter_window_moved_idx", "meter_report_open_idx"}, 10**9, replay=False,
    ),
    Case(
        "usage API and dashboard: daily rollups of a date range",
        lambda acc: list(DailyUsage.objects.filter(
            account_id=acc[A], date__gte=dt.date(2026, 3, 1), date__lte=dt.date(2026, 3, 31)
        ).values_list("date", "resolutions")),
        {"daily_usage_unique"}, 100,
    ),
    Case(
        "dashboard, book: a period's counts (rollups and the ragged edges)",
        lambda acc: sql.period_usage_sums([
            (a, "UTC", dt.date(2026, 3, 2), dt.date(2026, 3, 30), [
                (-1, MONTH[0], MONTH[0] + dt.timedelta(days=1), MONTH[0].date()),
            ]) for a in acc
        ]),
        {"daily_usage_unique", "resolution_account_time_idx", "conversation_escalated_idx"}, 5000,
    ),
    Case(
        "resolutions list (API and page): the newest page of a month",
        lambda acc: resolution_page_get(
            resolutions=resolution_list_filtered(account=acc.account, date_from=dt.date(2026, 3, 1),
                                                 date_to=dt.date(2026, 3, 31)),
            size=50,
        ),
        {"resolution_account_time_idx"}, 5000,
    ),
]  # fmt: skip


def test_hot_queries_use_their_indexes():
    accounts = World(_world_load())
    assert Resolution.objects.count() > 75_000 and ConversationEvent.objects.count() == 3 * CONVERSATIONS
    failures = []
    for case in CASES:
        plans = _plans_of(lambda case=case: case.run(accounts), replay=case.replay)
        walked = [pair for plan in plans for pair in _nodes(plan)]
        nodes = [node for node, _ in walked]
        used = {node["Index Name"] for node in nodes if "Index Name" in node}
        used |= {name for node in nodes for name in node.get("Conflict Arbiter Indexes", [])}
        problems = []
        missing = [sorted(want) if isinstance(want, frozenset) else want for want in case.indexes
                   if not (want & used if isinstance(want, frozenset) else want in used)]  # fmt: skip
        if missing:
            problems.append(f"does not use {sorted(missing, key=str)} (uses {sorted(used)})")
        for node, limited in walked:
            table = node.get("Relation Name")
            if table not in BIG_TABLES or "Scan" not in node["Node Type"]:
                continue
            if node["Node Type"] == "Seq Scan":
                problems.append(f"scans {table} sequentially")
            elif node["Plan Rows"] > case.max_rows and not limited:
                problems.append(f"expects {node['Plan Rows']} rows of {table} (at most {case.max_rows})")
        if problems:
            plan_lines = "\n".join(_plan_text(plan) for plan in plans)
            failures.append(f"{case.name}: {'; '.join(problems)}\n{plan_lines}")
    assert not failures, "\n".join(failures)
