"""Writes of the resolutions app: ingest conversation events, decide resolutions, keep rollups current,
finalise elapsed windows, void disputed resolutions."""

from __future__ import annotations

import datetime as dt
import logging
import operator
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, Sum

from accounts.models import Account, PricePlanVersion, User
from accounts.services import audit_log_write
from billing_portal import clock
from billing_portal.db import execute_bound, rows_fetch
from billing_portal.money import round_minor
from billing_portal.periods import billing_period
from credits.alerts import credit_alerts_check
from credits.models import CreditAlert
from credits.services import Demand, credit_give_back, credits_draw

from .ingestion import IncomingEvent
from .models import (
    Conversation,
    ConversationEvent,
    DailyUsage,
    FundingProgress,
    PendingEvaluation,
    Resolution,
)
from .rating import PriceTerms, price_quantity
from .rules import RESOLVED, EventFact, conversation_evaluate

logger = logging.getLogger(__name__)
SUPERSEDED = "Superseded: a late event, earlier in time, changed this conversation's outcome."


class EventConflict(Exception):
    """An event id was sent before with another payload (or twice in one batch with different payloads)."""

    def __init__(self, errors: list[dict]):
        super().__init__(f"{len(errors)} event id(s) already used with another payload")
        self.errors = errors


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int


def conversation_events_ingest(
    *, account: Account, events: list[IncomingEvent], evaluation: str | None = None
) -> IngestResult:
    """Store a validated batch and queue its conversations for evaluation, in one transaction.

    A repeated id with the same payload is a duplicate and changes nothing; with another payload the
    whole batch is refused (EventConflict) and nothing is stored. The store takes no account-wide lock:
    the unique (account, event id) index decides between concurrent batches (rows are written in id
    order, so two batches wait for each other at most, never deadlock). The conversations are evaluated
    under the account's lock: in this transaction when `evaluation` (default: settings.EVENT_EVALUATION)
    is "inline", else by `conversations_evaluate_task` once the batch has committed (and by every billing
    tick).
    """
    evaluation = evaluation or settings.EVENT_EVALUATION
    if evaluation not in ("inline", "deferred"):
        raise ValueError(f'evaluation must be "inline" or "deferred", not {evaluation!r}')
    now = clock.now()
    first_by_id: dict[str, IncomingEvent] = {}
    conflicts: list[dict] = []
    in_batch_duplicates = 0
    for event in events:
        seen = first_by_id.get(event.event_id)
        if seen is None:
            first_by_id[event.event_id] = event
        elif seen.payload == event.payload:
            in_batch_duplicates += 1
        else:
            conflicts.append(_conflict(event.index, f"Same id as event {seen.index} with a different payload."))
    if conflicts:
        raise EventConflict(conflicts)

    inline = evaluation == "inline"
    with transaction.atomic():
        stored = _events_store(account, sorted(first_by_id.values(), key=lambda e: e.event_id), now)
        duplicates = in_batch_duplicates
        if len(stored) < len(first_by_id):  # the rest were there before: same payload, or a conflict
            previous = ConversationEvent.objects.filter(
                account=account, event_id__in=[i for i in first_by_id if i not in stored]
            ).values_list("event_id", "conversation_id", "type", "occurred_at")
            for event_id, conversation_id, event_type, occurred_at in previous:
                event = first_by_id[event_id]
                if event.payload == (conversation_id, event_type, occurred_at):
                    duplicates += 1
                else:
                    conflicts.append(_conflict(event.index, "This id was already used with a different payload."))
            if conflicts:
                raise EventConflict(sorted(conflicts, key=lambda c: c["index"]))  # rolls the batch back
        if stored:
            conversation_ids = sorted({first_by_id[i].conversation_id for i in stored})
            PendingEvaluation.objects.create(account=account, conversation_ids=conversation_ids, created_at=now)
            if inline:
                conversations_evaluate_pending(account_ids=[account.pk], now=now)
            else:
                transaction.on_commit(lambda: _evaluation_request(account.pk))
    return IngestResult(accepted=len(stored), duplicates=duplicates)


def _evaluation_request(account_id: int) -> None:
    """Ask a worker to evaluate the account's queued conversations. If the broker cannot be reached the
    batch is still stored and queued: the next billing tick evaluates it (so a 202 is still the truth)."""
    from .tasks import conversations_evaluate_task

    try:
        conversations_evaluate_task.delay(account_id)
    except Exception as exc:  # noqa: BLE001 - kombu raises its own and OS errors; none may fail the request
        logger.warning(
            "Evaluation of account %s left to the next billing tick: broker unreachable (%s)", account_id, exc
        )


def _conflict(index: int, message: str) -> dict:
    return {"index": index, "field": "id", "message": message}


def _events_store(account: Account, events: list[IncomingEvent], now: dt.datetime) -> set[str]:
    """Insert the events whose id the account has not used yet; returns the ids inserted. On PostgreSQL one
    INSERT ... ON CONFLICT DO NOTHING RETURNING over arrays; elsewhere a lookup and bulk_create (SQLite
    has one writer at a time, so the lookup cannot race)."""
    if connection.vendor == "postgresql":
        inserted = rows_fetch(
            f"""INSERT INTO {ConversationEvent._meta.db_table}
                    (account_id, event_id, conversation_id, type, occurred_at, received_at)
                SELECT %s, v.event_id, v.conversation_id, v.type, v.occurred_at, %s
                FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::timestamptz[])
                    AS v(event_id, conversation_id, type, occurred_at)
                ORDER BY v.event_id
                ON CONFLICT (account_id, event_id) DO NOTHING
                RETURNING event_id""",
            [
                account.pk, now, [e.event_id for e in events], [e.conversation_id for e in events],
                [e.type for e in events], [e.occurred_at for e in events],
            ],
        )  # fmt: skip
        return {row[0] for row in inserted}
    existing = set(
        ConversationEvent.objects.filter(account=account, event_id__in=[e.event_id for e in events]).values_list(
            "event_id", flat=True
        )
    )
    new = [e for e in events if e.event_id not in existing]
    ConversationEvent.objects.bulk_create(
        [
            ConversationEvent(
                account=account,
                event_id=e.event_id,
                conversation_id=e.conversation_id,
                type=e.type,
                occurred_at=e.occurred_at,
                received_at=now,
            )  # fmt: skip
            for e in new
        ],
        batch_size=500,
    )
    return {e.event_id for e in new}


EVALUATE_CONVERSATIONS = 5000  # conversations evaluated per transaction when draining the queue


def conversations_evaluate_pending(*, account_ids: list[int] | None = None, now: dt.datetime | None = None) -> int:
    """Evaluate the queued conversations (PendingEvaluation), per account under its lock, up to about
    EVALUATE_CONVERSATIONS per transaction; the queue rows read are deleted in the same transaction, so a
    crash leaves them for the next run and a second run finds nothing. Returns resolutions created."""
    now = now or clock.now()
    queued = PendingEvaluation.objects.all()
    if account_ids is not None:
        queued = queued.filter(account_id__in=account_ids)
    created = 0
    for account_id in queued.values_list("account_id", flat=True).order_by("account_id").distinct():
        while True:
            with transaction.atomic():
                account = (
                    Account.objects.select_for_update(no_key=True, of=("self",))
                    .select_related("plan_version")
                    .get(pk=account_id)
                )
                row_ids, conversation_ids = [], set()
                rows = PendingEvaluation.objects.filter(account_id=account_id).order_by("pk")
                for pk, ids in rows.values_list("pk", "conversation_ids").iterator(chunk_size=100):
                    row_ids.append(pk)
                    conversation_ids.update(ids)
                    if len(conversation_ids) >= EVALUATE_CONVERSATIONS:
                        break
                if not row_ids:
                    break
                created += conversations_evaluate(account=account, conversation_ids=sorted(conversation_ids), now=now)
                PendingEvaluation.objects.filter(pk__in=row_ids).delete()
            if len(conversation_ids) < EVALUATE_CONVERSATIONS:
                break
    return created


def conversations_evaluate(*, account: Account, conversation_ids: Iterable[str], now: dt.datetime) -> int:
    """Re-decide the given conversations of one account from all their events, and write what changed:
    conversation states, new resolutions, superseded resolutions (voided), and the daily rollups.
    Must run inside the transaction that holds the account's lock. Returns resolutions created."""
    conversation_ids = list(conversation_ids)
    window = account.plan_version.inactivity_window
    facts: dict[str, list[EventFact]] = defaultdict(list)
    last_event: dict[str, dt.datetime] = {}
    # Plain rows, not model instances: this runs for every ingested batch.
    for conversation_id, event_type, occurred_at, event_id in _rows_of_conversations(
        ConversationEvent, account, conversation_ids, ("conversation_id", "type", "occurred_at", "event_id")
    ):
        facts[conversation_id].append(EventFact(occurred_at, event_type, event_id))
        if conversation_id not in last_event or occurred_at > last_event[conversation_id]:
            last_event[conversation_id] = occurred_at
    # Few accounts have disputed conversations: ask the small partial index first, the ids only if any.
    disputed = set()
    if Conversation.objects.filter(account=account, voided_by_staff=True).exists():
        disputed = {
            conversation_id
            for conversation_id, voided_by_staff in _rows_of_conversations(
                Conversation, account, conversation_ids, ("conversation_id", "voided_by_staff")
            )
            if voided_by_staff
        }
    active = {
        conversation_id: (pk, kind, resolved_at)
        for conversation_id, pk, kind, resolved_at in _rows_of_conversations(
            Resolution, account, conversation_ids, ("conversation_id", "id", "kind", "resolved_at"), billable=True
        )
    }
    states, to_create, void_ids = [], [], []
    for conversation_id in conversation_ids:
        if conversation_id in disputed:
            continue  # disputed and voided: never billed again, whatever arrives
        outcome = conversation_evaluate(facts[conversation_id], window=window, now=now)
        current = active.get(conversation_id)
        if current is not None and (outcome.status != RESOLVED or (outcome.kind, outcome.resolved_at) != current[1:]):
            void_ids.append(current[0])
            current = None
        if outcome.status == RESOLVED and current is None:
            to_create.append(_NewResolution(conversation_id, outcome.kind, outcome.resolved_at))
        states.append((conversation_id, outcome.status, outcome.window_ends_at, last_event[conversation_id]))
    to_void = list(Resolution.objects.filter(pk__in=void_ids)) if void_ids else []
    if to_void:
        Resolution.objects.filter(pk__in=void_ids).update(voided_at=now, void_reason=SUPERSEDED)
        _unfund_voided(account, to_void, now)
    if to_create:
        _resolutions_insert(account, to_create, now)
    _conversations_upsert(account, states, now)
    _rollups_adjust(account, added=to_create, removed=to_void)
    return len(to_create)


def _rows_of_conversations(model, account: Account, conversation_ids: list[str], columns: tuple, billable=False):
    """Rows (tuples of `columns`) of `model` for the given conversations of the account; with billable, only
    resolutions not voided. On PostgreSQL one `= ANY(array)` lookup in binary rows (psycopg's C loaders);
    elsewhere the ORM."""
    if not conversation_ids:
        return []
    if connection.vendor != "postgresql":
        rows = model.objects.filter(account=account, conversation_id__in=conversation_ids)
        return rows.filter(voided_at=None).values_list(*columns) if billable else rows.values_list(*columns)
    sql = (
        f"SELECT {', '.join(columns)} FROM {model._meta.db_table} WHERE account_id = %s AND conversation_id = ANY(%s)"
        + (" AND voided_at IS NULL" if billable else "")
    )
    return rows_fetch(sql, [account.pk, conversation_ids])


def _conversations_upsert(account: Account, states: list[tuple], now: dt.datetime) -> None:
    """Write each conversation's evaluated state: on PostgreSQL one INSERT ... ON CONFLICT over arrays."""
    if not states:
        return
    if connection.vendor != "postgresql":
        Conversation.objects.bulk_create(
            [
                Conversation(
                    account=account,
                    conversation_id=cid,
                    status=status,
                    window_ends_at=window_ends_at,
                    last_event_at=last_event_at,
                    updated_at=now,
                )  # fmt: skip
                for cid, status, window_ends_at, last_event_at in states
            ],
            batch_size=500,
            update_conflicts=True,
            unique_fields=["account", "conversation_id"],
            update_fields=["status", "window_ends_at", "last_event_at", "updated_at"],
        )
        return
    ids, statuses, windows, lasts = (list(column) for column in zip(*states, strict=True))
    execute_bound(
        f"""INSERT INTO {Conversation._meta.db_table}
                (account_id, conversation_id, status, window_ends_at, last_event_at, voided_by_staff, updated_at)
            SELECT %s, v.cid, v.status, v.window_ends_at, v.last_event_at, false, %s
            FROM unnest(%s::varchar[], %s::varchar[], %s::timestamptz[], %s::timestamptz[])
                AS v(cid, status, window_ends_at, last_event_at)
            ON CONFLICT (account_id, conversation_id) DO UPDATE SET status = EXCLUDED.status,
                window_ends_at = EXCLUDED.window_ends_at, last_event_at = EXCLUDED.last_event_at,
                updated_at = EXCLUDED.updated_at""",
        [account.pk, now, ids, statuses, windows, lasts],
    )


class _NewResolution(NamedTuple):
    """A resolution to write: unfunded, so no money yet (what _rollups_adjust reads of it, too)."""

    conversation_id: str
    kind: str
    resolved_at: dt.datetime
    funding: str = Resolution.Funding.UNFUNDED.value
    amount_minor: int = 0


def _resolutions_insert(account: Account, new: list[_NewResolution], now: dt.datetime) -> None:
    """Write new (unfunded) resolutions of the account's current plan version: on PostgreSQL one INSERT
    over arrays, elsewhere bulk_create. The partial unique index still refuses a second billable
    resolution of a conversation."""
    if connection.vendor != "postgresql":
        Resolution.objects.bulk_create(
            [
                Resolution(
                    account=account,
                    conversation_id=r.conversation_id,
                    kind=r.kind,
                    resolved_at=r.resolved_at,
                    plan_version_id=account.plan_version_id,
                    funding=r.funding,
                    created_at=now,
                )  # fmt: skip
                for r in new
            ],
            batch_size=500,
        )
        return
    execute_bound(
        f"""INSERT INTO {Resolution._meta.db_table} (account_id, conversation_id, kind, resolved_at,
                plan_version_id, funding, amount_minor, reversal, created_at, void_reason)
            SELECT %s, v.conversation_id, v.kind, v.resolved_at, %s, %s, 0, '', %s, ''
            FROM unnest(%s::varchar[], %s::varchar[], %s::timestamptz[]) AS v(conversation_id, kind, resolved_at)""",
        [
            account.pk, account.plan_version_id, Resolution.Funding.UNFUNDED.value, now,
            [r.conversation_id for r in new], [r.kind for r in new], [r.resolved_at for r in new],
        ],
    )  # fmt: skip


def _rollups_adjust(account: Account, *, added: list[Resolution], removed: list[Resolution]) -> None:
    """Move the day counters by resolutions written or voided (same transaction as the resolutions)."""
    delta: dict[dt.date, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # resolutions, credited, overage, amount
    local_date = _LocalDates()
    for resolution, sign in [(r, 1) for r in added] + [(r, -1) for r in removed]:
        row = delta[local_date(account, resolution.resolved_at)]
        row[0] += sign
        row[1] += sign * (resolution.funding == Resolution.Funding.CREDIT)
        row[2] += sign * (resolution.funding == Resolution.Funding.OVERAGE)
        row[3] += sign * resolution.amount_minor
    _rollups_apply(account, delta)


def _rollups_apply(account: Account, delta: dict[dt.date, list[int]]) -> None:
    _rollups_apply_many({(account.pk, day): row for day, row in delta.items()})


def _rollups_apply_many(delta: dict[tuple[int, dt.date], list[int]]) -> None:
    """Add (resolutions, credited, overage, amount) to the (account, day) counters, whose accounts the
    caller's transaction has locked. On PostgreSQL one INSERT ... ON CONFLICT over arrays."""
    delta = {key: row for key, row in delta.items() if any(row)}
    if not delta:
        return
    keys = sorted(delta)
    if connection.vendor == "postgresql":
        table = DailyUsage._meta.db_table
        execute_bound(
            f"""INSERT INTO {table} (account_id, date, resolutions, credited, overage, amount_minor)
                SELECT v.account_id, v.day, v.resolutions, v.credited, v.overage, v.amount
                FROM unnest(%s::bigint[], %s::date[], %s::int[], %s::int[], %s::int[], %s::bigint[])
                    AS v(account_id, day, resolutions, credited, overage, amount)
                ON CONFLICT (account_id, date) DO UPDATE SET
                    resolutions = {table}.resolutions + EXCLUDED.resolutions,
                    credited = {table}.credited + EXCLUDED.credited,
                    overage = {table}.overage + EXCLUDED.overage,
                    amount_minor = {table}.amount_minor + EXCLUDED.amount_minor""",
            [[k[0] for k in keys], [k[1] for k in keys], *([delta[k][i] for k in keys] for i in range(4))],
        )
        return
    for account_id, day in keys:
        resolutions, credited, overage, amount = delta[(account_id, day)]
        DailyUsage.objects.get_or_create(account_id=account_id, date=day)  # the account lock makes this race-free
        DailyUsage.objects.filter(account_id=account_id, date=day).update(
            resolutions=F("resolutions") + resolutions, credited=F("credited") + credited,
            overage=F("overage") + overage, amount_minor=F("amount_minor") + amount,
        )  # fmt: skip


FINALISE_BATCH = 2000


def resolution_windows_finalise(*, now: dt.datetime | None = None) -> int:
    """The sweep: conversations whose inactivity window has elapsed become assumed resolutions.
    Batched per account, under the account's lock; running it twice changes nothing the second time."""
    now = now or clock.now()
    created = 0
    due_accounts = (
        Conversation.objects.filter(status=Conversation.Status.AWAITING, window_ends_at__lte=now)
        .values_list("account_id", flat=True)
        .distinct()
    )
    for account_id in list(due_accounts):
        while True:
            with transaction.atomic():
                account = (
                    Account.objects.select_for_update(no_key=True, of=("self",))
                    .select_related("plan_version")
                    .get(pk=account_id)
                )
                due = list(
                    Conversation.objects.filter(
                        account=account, status=Conversation.Status.AWAITING, window_ends_at__lte=now
                    ).values_list("conversation_id", flat=True)[:FINALISE_BATCH]
                )
                if not due:
                    break
                created += conversations_evaluate(account=account, conversation_ids=due, now=now)
            if len(due) < FINALISE_BATCH:
                break
    return created


def resolution_void(*, resolution: Resolution, actor: User, reason: str) -> Resolution:
    """Void a disputed resolution (staff). The conversation is never billed again. Its credit or overage
    is handed back by the funding side (credit packs, meter corrections)."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the resolution is voided (the customer will see it)."})
    with transaction.atomic():
        account = Account.objects.select_for_update(no_key=True).get(pk=resolution.account_id)
        resolution = Resolution.objects.select_for_update().get(pk=resolution.pk)
        if resolution.voided_at is not None:
            raise ValidationError("This resolution is already voided.")
        now = clock.now()
        resolution.voided_at, resolution.voided_by, resolution.void_reason = now, actor, reason
        resolution.save(update_fields=["voided_at", "voided_by", "void_reason"])
        Conversation.objects.filter(account=account, conversation_id=resolution.conversation_id).update(
            voided_by_staff=True, updated_at=now
        )
        _rollups_adjust(account, added=[], removed=[resolution])
        _unfund_voided(account, [resolution], now)
        audit_log_write(
            actor=actor, action="resolution.void", obj=resolution, account=account,
            before={"voided": False, "funding": resolution.funding}, after={"voided": True}, reason=reason,
        )  # fmt: skip
    return resolution


FUND_BATCH = 5000  # resolutions per statement
FUND_CHUNK = 50_000  # resolutions read, put in order and funded per transaction (under their accounts' locks)


@dataclass(frozen=True)
class FundingResult:
    credited: int
    overage: int


def resolutions_fund(*, now: dt.datetime | None = None, account_ids: list[int] | None = None) -> FundingResult:
    """Draw down credits for unfunded resolutions; what no pack covers is overage, priced at its marginal
    share of its billing period's charge (so the shares of a period add up to exactly what Stripe will
    invoice for it). Running it twice changes nothing the second time.

    Each account's resolutions are read on from its FundingProgress mark, in id order (the order they were
    written), up to FUND_CHUNK per transaction; a chunk is funded in the order its resolutions were
    resolved (resolved_at, then id), FUND_BATCH per statement. Small accounts go several to a transaction
    (at most FUND_BATCH resolutions in all), their rows locked in id order. No index involves the funding
    columns, so PostgreSQL writes the funding as heap-only (HOT) updates where the page has room."""
    now = now or clock.now()
    sizes = _unfunded_counts(account_ids)
    credited = overage = 0
    for group in _account_groups(sizes, FUND_BATCH):
        read_through: dict[int, int] = {}  # per account, the last id read by this call (marks may lag behind)
        while True:
            with transaction.atomic():
                c, o, more = _FundingRun(group, now, read_through).chunk_fund()
            credited, overage = credited + c, overage + o
            if not more:
                break
    # Alerts: accounts just funded, and accounts with a raised alert (a new pack may have cleared it).
    raised = CreditAlert.objects.filter(active=True).values_list("account_id", flat=True)
    if account_ids is not None:
        raised = raised.filter(account_id__in=account_ids)
    to_check = sorted(set(sizes) | set(raised))
    credit_alerts_check(account_ids=to_check, burn_by_account=_burn_per_day(to_check, now), now=now)
    return FundingResult(credited, overage)


def _unfunded_counts(account_ids: list[int] | None) -> dict[int, int]:
    """Account id -> resolutions past its FundingProgress mark (what funding has not read yet: nearly all
    of them unfunded; the exact count does not matter, it only sizes the groups), in account id order."""
    if connection.vendor == "postgresql":  # per account, a count over the (account, id) index from its mark
        only = "WHERE a.id = ANY(%s)" if account_ids is not None else ""
        rows = rows_fetch(
            f"""SELECT a.id, c.n FROM {Account._meta.db_table} a
                LEFT JOIN {FundingProgress._meta.db_table} p ON p.account_id = a.id
                CROSS JOIN LATERAL (
                    SELECT count(*) AS n FROM {Resolution._meta.db_table} r
                    WHERE r.account_id = a.id AND r.id > coalesce(p.funded_through_id, 0)) c
                {only} ORDER BY a.id""",
            [list(account_ids)] if account_ids is not None else [],
        )
        return {account_id: n for account_id, n in rows if n}
    marks = dict(FundingProgress.objects.values_list("account_id", "funded_through_id"))
    pending = Resolution.objects.all() if account_ids is None else Resolution.objects.filter(account_id__in=account_ids)
    sizes: dict[int, int] = defaultdict(int)
    for account_id, pk in pending.values_list("account_id", "id"):
        if pk > marks.get(account_id, 0):
            sizes[account_id] += 1
    return dict(sorted(sizes.items()))


def _account_groups(sizes: dict[int, int], limit: int) -> list[list[int]]:
    """Accounts (in id order) packed into groups of at most `limit` resolutions; a bigger account alone."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for account_id, n in sizes.items():
        if current and total + n > limit:
            groups.append(current)
            current, total = [], 0
        current.append(account_id)
        total += n
    if current:
        groups.append(current)
    return groups


BURN_WINDOW_DAYS = 14


def _burn_per_day(account_ids: list[int], now: dt.datetime) -> dict[int, float]:
    """Credited resolutions a day per account, averaged over the last two weeks of rollups (one query)."""
    since = (now - dt.timedelta(days=BURN_WINDOW_DAYS)).date()
    rows = (
        DailyUsage.objects.filter(account_id__in=account_ids, date__gte=since)
        .values("account_id")
        .annotate(n=Sum("credited"))
        .order_by()
        .values_list("account_id", "n")
    )
    return {account_id: (n or 0) / BURN_WINDOW_DAYS for account_id, n in rows}


@dataclass(slots=True)
class _FundingRow:
    pk: int
    account_id: int
    resolved_at: dt.datetime
    plan_version_id: int
    funding: str = Resolution.Funding.UNFUNDED.value
    credit_pack_id: int | None = None
    amount_minor: int = 0


_PAST_MARKS = f"""
    SELECT r.id, r.account_id, r.resolved_at, r.plan_version_id, r.funding = 'unfunded' AND r.voided_at IS NULL
    FROM unnest(%s::bigint[], %s::bigint[]) AS m(account_id, after_id)
    CROSS JOIN LATERAL (
        SELECT id, account_id, resolved_at, plan_version_id, funding, voided_at FROM {Resolution._meta.db_table} r
        WHERE r.account_id = m.account_id AND r.id > m.after_id
        ORDER BY r.id LIMIT %s) r
    ORDER BY r.account_id, r.id LIMIT %s"""


class _FundingRun:
    """One transaction's funding of an account group: takes the accounts' locks (in id order), reads the
    next chunk of their unfunded resolutions from their marks, funds it, and moves the marks. Each
    billing period's overage count is read once and then carried as it grows (the locks keep others from
    changing it meanwhile).

    The marks rely on one rule: an account's resolutions are only written under the account's lock (see
    conversations_evaluate), so their ids grow in the order they are committed, and funding (which holds
    the same lock) never skips over one that is still to commit."""

    def __init__(self, group: list[int], now: dt.datetime, read_through: dict[int, int]):
        self.group, self.now, self.read_through = group, now, read_through
        locked = Account.objects.select_for_update(no_key=True).filter(pk__in=group).order_by("pk")
        self.accounts = {a.pk: a for a in locked.only("created_at", "timezone")}
        self.marks = {pk: 0 for pk in group} | dict(
            FundingProgress.objects.filter(account_id__in=group).values_list("account_id", "funded_through_id")
        )
        # Reads go on from where this call's previous chunk stopped, even when a mark stays behind a
        # resolution that is not due yet: so a chunk never reads the same rows again.
        self.read_from = {pk: max(self.marks[pk], read_through.get(pk, 0)) for pk in group}
        self.overage_counts: dict[tuple[int, dt.datetime, dt.datetime], int] = {}
        self.terms: dict[int, PriceTerms] = {}
        self.local_date = _LocalDates()

    def _past_marks(self) -> list[tuple]:
        """Up to FUND_CHUNK resolutions past the marks, in (account, id) order: (id, account id, resolved_at,
        plan version id, whether it is unfunded and not voided). Funded and voided ones are read too, so
        that the marks move past them."""
        if connection.vendor == "postgresql":  # index range scans from the marks; binary rows (C loaders)
            group = sorted(self.group)
            return rows_fetch(_PAST_MARKS, [group, [self.read_from[pk] for pk in group], FUND_CHUNK, FUND_CHUNK])
        rows: list[tuple] = []
        for account_id in sorted(self.group):
            past = Resolution.objects.filter(account_id=account_id, id__gt=self.read_from[account_id]).order_by("id")
            values = past.values_list("id", "account_id", "resolved_at", "plan_version_id", "funding", "voided_at")
            rows += [
                (*row[:4], row[4] == Resolution.Funding.UNFUNDED and row[5] is None)
                for row in values[: FUND_CHUNK - len(rows)]
            ]
            if len(rows) == FUND_CHUNK:
                break
        return rows

    def chunk_fund(self) -> tuple[int, int, bool]:
        """Fund the next chunk; returns (credited, overage, whether more may be waiting)."""
        rows = self._past_marks()
        now = self.now
        due: list[_FundingRow] = []
        marks: dict[int, int] = {}  # (account, id) order: a mark moves to the last id read, but stops
        # before the first unfunded resolution that is not due yet (here, or in an earlier chunk of this call).
        held = {pk for pk in self.group if self.marks[pk] < self.read_from[pk]}
        for pk, account_id, resolved_at, plan_version_id, unfunded in rows:
            if unfunded and resolved_at <= now:
                due.append(_FundingRow(pk, account_id, resolved_at, plan_version_id))
            if account_id in held:
                continue
            if unfunded and resolved_at > now:
                marks[account_id] = pk - 1
                held.add(account_id)
            else:
                marks[account_id] = pk
        due.sort(key=operator.attrgetter("account_id", "resolved_at", "pk"))
        credited = 0
        for start in range(0, len(due), FUND_BATCH):
            credited += self._batch_fund(due[start : start + FUND_BATCH])
        _funding_marks_write(marks)
        for pk, account_id, *_ in rows:
            self.read_through[account_id] = pk  # rows come in (account, id) order: the last one wins
        return credited, len(due) - credited, len(rows) == FUND_CHUNK

    def _batch_fund(self, batch: list[_FundingRow]) -> int:
        """Fund a batch in the order given; returns how many were credited (the rest is overage)."""
        packs = credits_draw(
            demands=[Demand(r.account_id, f"resolution:{r.pk}", r.resolved_at) for r in batch], now=self.now
        )
        delta: dict[tuple[int, dt.date], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        overage_by_period: dict[tuple, list[_FundingRow]] = defaultdict(list)
        credited = 0
        accounts, local_date = self.accounts, self.local_date
        credit, overage = Resolution.Funding.CREDIT.value, Resolution.Funding.OVERAGE.value
        period: tuple[int, dt.datetime, dt.datetime] | None = None
        for resolution, pack_id in zip(batch, packs, strict=True):
            account_id = resolution.account_id
            account = accounts[account_id]
            if pack_id is not None:
                resolution.funding, resolution.credit_pack_id = credit, pack_id
                delta[(account_id, local_date(account, resolution.resolved_at))][1] += 1
                credited += 1
                continue
            resolution.funding = overage
            # Rows come in resolved_at order per account: most share the previous row's period.
            if period is None or period[0] != account_id or not period[1] <= resolution.resolved_at < period[2]:
                period = (account_id, *billing_period(anchor=account.created_at, instant=resolution.resolved_at))
            overage_by_period[period].append(resolution)
        if overage_by_period:
            self._overage_price(overage_by_period, delta)
        _funding_write(batch)
        _rollups_apply_many(delta)
        return credited

    def _overage_price(self, overage_by_period: dict[tuple, list[_FundingRow]], delta: dict) -> None:
        """Give each overage resolution its marginal share of its period's charge, after the overage the
        period already has (counted once per transaction, then carried)."""
        unknown = [key for key in overage_by_period if key not in self.overage_counts]
        self.overage_counts.update(_overage_counts(unknown))
        versions = {r.plan_version_id for rows in overage_by_period.values() for r in rows} - set(self.terms)
        if versions:
            for pk, version in PricePlanVersion.objects.prefetch_related("tiers").in_bulk(versions).items():
                self.terms[pk] = PriceTerms.from_version(version)
        for key, resolutions in overage_by_period.items():
            account_id = key[0]
            account = self.accounts[account_id]
            before = self.overage_counts[key]
            # A plan version holds for whole periods, so one period's resolutions share one version.
            terms = self.terms[resolutions[0].plan_version_id]
            _overage_price(resolutions, terms, before)
            self.overage_counts[key] = before + len(resolutions)
            for resolution in resolutions:
                row = delta[(account_id, self.local_date(account, resolution.resolved_at))]
                row[2] += 1
                row[3] += resolution.amount_minor


class _LocalDates:
    """An instant's date in its account's timezone. Instants come mostly in order, so the last day's bounds
    are kept per account and most instants need no time zone arithmetic at all."""

    def __init__(self) -> None:
        self._zones: dict[str, zoneinfo.ZoneInfo] = {}
        self._day: dict[int, tuple[dt.datetime, dt.datetime, dt.date]] = {}

    def __call__(self, account: Account, instant: dt.datetime) -> dt.date:
        known = self._day.get(account.id)
        if known is not None and known[0] <= instant < known[1]:
            return known[2]
        zone = self._zones.get(account.timezone)
        if zone is None:
            zone = self._zones[account.timezone] = zoneinfo.ZoneInfo(account.timezone)
        day = instant.astimezone(zone).date()
        starts = dt.datetime.combine(day, dt.time(), tzinfo=zone)
        ends = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone)
        starts, ends = starts.astimezone(dt.UTC), ends.astimezone(dt.UTC)  # quick to compare with UTC instants
        tick = dt.timedelta(microseconds=1)
        if (
            starts.astimezone(zone).date() == day
            and (ends - tick).astimezone(zone).date() == day < ends.astimezone(zone).date()
        ):
            self._day[account.id] = (starts, ends, day)  # not where a DST change skips or repeats midnight
        return day


def _overage_price(resolutions: list[_FundingRow], terms: PriceTerms, before: int) -> None:
    """Give each resolution, in order, its marginal share of the period's charge after `before` earlier
    overage resolutions of the same period."""
    charged = price_quantity(quantity=before, terms=terms) if before else 0
    unit = terms.unit_amount_decimal if not terms.tiers_mode else None  # per-unit: a plain product
    for position, resolution in enumerate(resolutions, start=before + 1):
        total = round_minor(unit * position) if unit is not None else price_quantity(quantity=position, terms=terms)
        resolution.amount_minor, charged = total - charged, total


def _overage_counts(keys: list[tuple]) -> dict[tuple, int]:
    """Per (account, period start, period end): overage resolutions already in that account's period (of
    any plan version, as Stripe's meter counts them). One statement on PostgreSQL."""
    if not keys:
        return {}
    if connection.vendor != "postgresql":
        return {
            key: Resolution.objects.filter(
                account_id=key[0], funding=Resolution.Funding.OVERAGE, voided_at=None,
                resolved_at__gte=key[1], resolved_at__lt=key[2],
            ).count()
            for key in keys
        }  # fmt: skip
    counts = rows_fetch(
        f"""SELECT v.i, (SELECT count(*) FROM {Resolution._meta.db_table} r
                         WHERE r.account_id = v.account_id AND r.funding = 'overage' AND r.voided_at IS NULL
                           AND r.resolved_at >= v.starts AND r.resolved_at < v.ends)
            FROM unnest(%s::int[], %s::bigint[], %s::timestamptz[], %s::timestamptz[])
                AS v(i, account_id, starts, ends)""",
        [list(range(len(keys))), [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]],
    )
    return {keys[i]: n for i, n in counts}


def _funding_marks_write(marks: dict[int, int]) -> None:
    """Move the accounts' FundingProgress marks (the caller holds their locks)."""
    if not marks:
        return
    if connection.vendor != "postgresql":
        for account_id, mark in marks.items():
            FundingProgress.objects.update_or_create(account_id=account_id, defaults={"funded_through_id": mark})
        return
    accounts = sorted(marks)
    execute_bound(
        f"""INSERT INTO {FundingProgress._meta.db_table} (account_id, funded_through_id)
            SELECT * FROM unnest(%s::bigint[], %s::bigint[])
            ON CONFLICT (account_id) DO UPDATE SET funded_through_id = EXCLUDED.funded_through_id""",
        [accounts, [marks[a] for a in accounts]],
    )


def _funding_write(batch: list[_FundingRow]) -> None:
    """Write the funding of a batch: on PostgreSQL one UPDATE ... FROM unnest(arrays), which costs a
    fraction of Django's bulk_update (a CASE per row); elsewhere bulk_update."""
    if connection.vendor != "postgresql":
        Resolution.objects.bulk_update(
            [
                Resolution(pk=r.pk, funding=r.funding, credit_pack_id=r.credit_pack_id, amount_minor=r.amount_minor)
                for r in batch
            ],
            ["funding", "credit_pack", "amount_minor"],
            batch_size=1000,
        )
        return
    # A pack means credit, none means overage. The three integer columns go as comma-separated text:
    # joining str() of ints costs a fraction of psycopg's (pure Python) array dumpers.
    execute_bound(
        f"""UPDATE {Resolution._meta.db_table} AS r
            SET funding = CASE WHEN v.pack IS NULL THEN 'overage' ELSE 'credit' END,
                credit_pack_id = v.pack, amount_minor = v.amount
            FROM unnest(string_to_array(%s, ',')::bigint[], string_to_array(%s, ',', '')::bigint[],
                        string_to_array(%s, ',')::bigint[]) AS v(id, pack, amount)
            WHERE r.id = v.id""",
        [
            ",".join([str(r.pk) for r in batch]),
            ",".join(["" if r.credit_pack_id is None else str(r.credit_pack_id) for r in batch]),
            ",".join([str(r.amount_minor) for r in batch]),
        ],
    )


def _unfund_voided(account: Account, resolutions: list[Resolution], now: dt.datetime) -> None:
    """A voided resolution's credit goes back to its pack if that pack is still usable; otherwise (and for
    overage) it is marked for reversal toward Stripe, in the same billing period."""
    for resolution in resolutions:
        if resolution.funding == Resolution.Funding.CREDIT and credit_give_back(
            account=account, pack_id=resolution.credit_pack_id, key=f"resolution:{resolution.pk}", now=now
        ):
            continue
        if resolution.funding in (Resolution.Funding.CREDIT, Resolution.Funding.OVERAGE):
            Resolution.objects.filter(pk=resolution.pk).update(reversal=Resolution.Reversal.PENDING)
