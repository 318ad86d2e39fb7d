"""Meter reporting (DESIGN §3.5): the portal's overage, per account and reporting window, sent to Stripe's
meter as one event per window, exactly once.

Windows. An account's overage is counted per window (`MeterWindow`): aligned UTC slots of
METER_WINDOW_SECONDS (an hour by default), cut at the account's Stripe billing-period boundaries, so a
window never straddles two invoices. Funding adds its new overage to the windows and a void takes it
away, in their own transactions (`meter_windows_move`); nothing here scans the resolutions.

Timestamps. A window's events carry `meter_event_timestamp(window)`: the window's start, or for a period's
first window (which starts at the period's start, mid-minute) the next whole minute, even when that is the
window's end (a first window shorter than a minute: the period began in its slot's last minute). Every event
of a period then lies in [ceil_minute(period start), period end), so Stripe's meter event summaries, whose
bounds must be whole minutes, count exactly one period's events over `meter_summary_bounds(period)`; two
windows may then share a minute, so a question about one minute counts the account's rows of that minute.
"""

from __future__ import annotations

import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum
from djstripe.models import Customer

from accounts.models import Account, BillingMeter, PlanMigration, PricePlanVersion
from accounts.selectors import plan_schedule_get
from accounts.services.plan_migrations import meter_report_hold_from
from accounts.services.stripe_catalog import METER_CUSTOMER_KEY, METER_VALUE_KEY
from billing_portal import stripe_client
from billing_portal.periods import EARLIEST
from billing_portal.session_locks import session_lock
from billing_portal.stripe_client import StripeRejected, StripeUnavailable

from .. import sql
from ..models import MeterReport, MeterWindow, Resolution
from ..rating import PriceTerms, price_quantity
from ..selectors import METER_OPEN_STATES

logger = logging.getLogger(__name__)

MINUTE = dt.timedelta(minutes=1)


def _ceil_minute(instant: dt.datetime) -> dt.datetime:
    floored = instant.replace(second=0, microsecond=0)
    return floored if floored == instant else floored + MINUTE


def window_bounds(
    instant: dt.datetime, period: tuple[dt.datetime, dt.datetime], first_period_start: dt.datetime | None = None
) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
    """(window start, window end, the period's real start) of the reporting window holding `instant` in its
    billing period [start, end). A first period reaching back to EARLIEST (what came before the
    subscription) really starts at `first_period_start`: an instant before it lands in the period's first
    window, so that its event is timestamped inside the period Stripe invoices."""
    period_start, period_end = period
    if period_start == EARLIEST and first_period_start is not None:
        period_start = first_period_start
    instant = max(instant, period_start)
    size = settings.METER_WINDOW_SECONDS
    aligned = dt.datetime.fromtimestamp(int(instant.timestamp()) // size * size, dt.UTC)
    return max(aligned, period_start), min(aligned + dt.timedelta(seconds=size), period_end), period_start


def meter_event_timestamp(
    window_start: dt.datetime, window_end: dt.datetime, *, period_end: dt.datetime
) -> dt.datetime:
    """The timestamp of a window's events: its start, moved to the next whole minute (only a period's first
    window starts mid-minute). That minute may be the window's end, when the window is shorter than a minute:
    the event is still inside its period and inside `meter_summary_bounds`, where the window's start is not
    (it would be billed but never counted by reconciliation). Only a period shorter than a minute keeps its
    start (no whole minute of it exists; reconciliation counts nothing for it)."""
    moved = _ceil_minute(window_start)
    return moved if moved < window_end or (moved == window_end and moved < period_end) else window_start


def meter_summary_bounds(period_start: dt.datetime, period_end: dt.datetime) -> tuple[int, int]:
    """[start_time, end_time) for Stripe's meter event summaries of one billing period: whole minutes (as
    Stripe requires) that hold every event of this period and none of its neighbours' (see the module
    docstring)."""
    return int(_ceil_minute(period_start).timestamp()), int(_ceil_minute(period_end).timestamp())


# --- Counting: funding and voids move the windows ------------------------------------------------------
class WindowCounter:
    """Overage added to (or taken from) windows in one transaction, written with one statement on
    `flush`. Instants come mostly in order, so the last window per account is kept and most need no
    arithmetic."""

    def __init__(self) -> None:
        self.delta: dict[tuple[int, dt.datetime], list] = {}
        self._last: dict[int, tuple[dt.datetime, dt.datetime, list]] = {}

    def add(self, account, instant: dt.datetime, n: int = 1) -> None:
        last = self._last.get(account.pk)
        if last is not None and last[0] <= instant < last[1]:
            last[2][3] += n
            return
        from .funding import period_calendar  # funding imports this module

        calendar = period_calendar(account)
        period = calendar.containing(instant)
        start, end, period_start = window_bounds(instant, period, calendar.first_start)
        row = self.delta.setdefault((account.pk, start), [end, period_start, period[1], 0])
        row[3] += n
        if start <= instant:  # an instant before the first period is not the window's own
            self._last[account.pk] = (start, end, row)

    def flush(self) -> None:
        delta = {key: row for key, row in self.delta.items() if row[3]}
        if delta:
            sql.meter_windows_add(delta)
        self.delta.clear()
        self._last.clear()


# --- Planning: a report row for each closed window whose count moved ------------------------------------
PAST_LIMIT = dt.timedelta(days=35)  # Stripe refuses meter events older than this
SAFETY_MARGIN = dt.timedelta(minutes=10)  # an event is never first sent this close to either limit
STALE_SEND = dt.timedelta(hours=23)  # Stripe remembers identifiers (and idempotency keys) for 24 hours
REJECTED_RETRY = dt.timedelta(hours=1)
UNAVAILABLE_BACKOFF = (dt.timedelta(minutes=1), dt.timedelta(minutes=30))  # first, longest


def meter_send_deadline(*, timestamp: dt.datetime, period_end: dt.datetime) -> dt.datetime:
    """The last moment an event with this timestamp is first sent: it must still reach its period's
    invoice (Stripe finalizes it STRIPE_INVOICE_GRACE_SECONDS after the period ends, counting what it has
    by then) and be less than 35 days old; less a safety margin. Past it, a difference needs a credit note
    or an invoice item instead."""
    grace = dt.timedelta(seconds=settings.STRIPE_INVOICE_GRACE_SECONDS)
    return min(period_end + grace, timestamp + PAST_LIMIT) - SAFETY_MARGIN


def meter_identifier(account_uid, window_start: dt.datetime, sequence: int) -> str:
    """The meter event identifier of a report row: its account (uid, unique across databases), window and
    sequence. At most 100 characters, as Stripe requires."""
    return f"{account_uid.hex}-{int(window_start.timestamp())}-{sequence}"


def _period_terms(account_id: int, period_start: dt.datetime, period_end: dt.datetime) -> PriceTerms:
    """The price terms of a period: the plan version its resolutions were rated with (a version holds for
    whole periods), else the one in force at its start (plan migrations)."""
    version_id = (
        Resolution.objects.filter(account_id=account_id, resolved_at__lt=period_end)
        .filter(resolved_at__gte=period_start)
        .order_by("resolved_at", "id")  # the time index's order: first() by id walks the primary key from the start
        .values_list("plan_version_id", flat=True)
        .first()
    ) or plan_schedule_get(account_id=account_id).version_at(period_start)
    return PriceTerms.from_version(PricePlanVersion.objects.prefetch_related("tiers").get(pk=version_id))


def _plan(account: Account, now: dt.datetime) -> tuple[int, int]:
    """Report rows for the account's closed windows whose count moved (one transaction, the windows
    locked): an event for the difference, or, past its deadline, an adjustment with its money. Returns
    (events planned, adjustments planned)."""
    with transaction.atomic():
        windows = list(
            MeterWindow.objects.select_for_update()
            .filter(account_id=account.pk, end__lte=now)
            .exclude(overage=F("reported"))
            .order_by("start")
        )
        if not windows:
            return 0, 0
        sequences = dict(
            MeterReport.objects.filter(window__in=windows).values("window_id").annotate(n=Count("id"))
            .values_list("window_id", "n")
        )  # fmt: skip
        carried = _Carried(account.pk, now)
        rows = []
        for window in windows:
            delta = window.overage - window.reported
            sequence = sequences.get(window.pk, 0)
            timestamp = meter_event_timestamp(window.start, window.end, period_end=window.period_end)
            row = MeterReport(
                account_id=account.pk, window=window, sequence=sequence, quantity=delta, timestamp=timestamp,
                identifier=meter_identifier(account.uid, window.start, sequence), created_at=now,
            )  # fmt: skip
            if now >= meter_send_deadline(timestamp=timestamp, period_end=window.period_end):
                _adjustment(row, window, before=carried.before(window))
            carried.planned(window, delta)
            rows.append(row)
            window.reported = window.overage
        MeterReport.objects.bulk_create(rows)
        MeterWindow.objects.bulk_update(windows, ["reported"])
    adjustments = sum(r.state == MeterReport.State.ADJUSTMENT for r in rows)
    return len(rows) - adjustments, adjustments


class _Carried:
    """Per billing period of one account: the resolutions its report rows bill, in Stripe or as
    adjustments (read once per period), plus what this planning has added so far. A row still to be sent
    counts while it can reach the invoice; one past its deadline does not, as it becomes an adjustment of
    its own later (and counts from then on), so the adjustments of a period add up to the price of
    everything less the price of what Stripe bills, whatever the tiers."""

    def __init__(self, account_id: int, now: dt.datetime, exclude: int | None = None):
        self.account_id, self.now, self.exclude = account_id, now, exclude
        self.stored: dict[dt.datetime, int] = {}
        self.added: dict[dt.datetime, int] = {}

    def before(self, window: MeterWindow) -> int:
        key = window.period_start
        if key not in self.stored:
            rows = MeterReport.objects.filter(account_id=self.account_id, window__period_start=key)
            if self.exclude is not None:
                rows = rows.exclude(pk=self.exclude)
            State = MeterReport.State
            self.stored[key] = sum(
                quantity
                for state, quantity, timestamp, period_end in rows.values_list(
                    "state", "quantity", "timestamp", "window__period_end"
                )
                if state in (State.CONFIRMED, State.SENT, State.ADJUSTMENT)
                or self.now < meter_send_deadline(timestamp=timestamp, period_end=period_end)
            )
        return self.stored[key] + self.added.get(key, 0)

    def planned(self, window: MeterWindow, quantity: int) -> None:
        self.added[window.period_start] = self.added.get(window.period_start, 0) + quantity


def _adjustment(row: MeterReport, window: MeterWindow, *, before: int) -> None:
    """Make `row` an adjustment: the money between the period's price for what its rows carried before this
    difference (events and earlier adjustments) and after it."""
    after = before + row.quantity
    terms = _period_terms(window.account_id, window.period_start, window.period_end)
    row.state = MeterReport.State.ADJUSTMENT
    row.adjustment_minor = price_quantity(quantity=max(after, 0), terms=terms) - price_quantity(
        quantity=max(before, 0), terms=terms
    )
    row.last_error = (
        f"Too late for the meter (the period's invoice is final or the event would be over 35 days old): "
        f"{'a credit note' if row.adjustment_minor < 0 else 'an invoice item'} of {abs(row.adjustment_minor)} minor "
        f"units for {row.quantity:+d} resolution(s) is needed."
    )


# --- Sending: the account's open rows, one call at a time ------------------------------------------------
@dataclass
class AccountReport:
    account_id: int
    planned: int = 0
    adjustments: int = 0
    confirmed: int = 0
    rejected: int = 0
    unavailable: str = ""  # Stripe could not be reached: why (the rows wait for their next attempt)
    retry_after: float | None = None  # what Stripe asked for, seconds
    busy: bool = False  # another process is reporting this account


def _unavailable_delay(attempts: int, retry_after: float | None) -> dt.timedelta:
    first, longest = UNAVAILABLE_BACKOFF
    doublings = min(max(attempts - 1, 0), 20)  # past the longest delay long before; 2**31 minutes overflows
    delay = min(first * 2**doublings, longest)
    return max(delay, dt.timedelta(seconds=retry_after or 0))


def _already_delivered(error: StripeRejected) -> bool:
    """Stripe's answer to an identifier it has seen: "An event already exists with identifier …"."""
    return "already exists with identifier" in str(error)


def _too_old(error: StripeRejected) -> bool:
    return "timestamp" in str(error) and "in past" in str(error)


def _row_update(row: MeterReport, **fields) -> None:
    for name, value in fields.items():
        setattr(row, name, value)
    MeterReport.objects.filter(pk=row.pk).update(**fields)


def _send(row: MeterReport, customer_id: str, now: dt.datetime) -> None:
    """Send one row's meter event; raises StripeFailure as stripe_client does. Same identifier and
    idempotency key on every attempt, so a resend is the same event to Stripe."""
    params = {
        "event_name": settings.STRIPE_METER_EVENT_NAME,
        "identifier": row.identifier,
        "timestamp": int(row.timestamp.timestamp()),
        "payload": {METER_CUSTOMER_KEY: customer_id, METER_VALUE_KEY: str(row.quantity)},
    }
    stripe_client.call(
        "report usage",
        lambda c, o: c.v1.billing.meter_events.create(params=params, options=o),
        # A refusal is stored against its key and replayed for 24 hours, so a row sent again after one (never
        # recorded: Stripe refused it) needs a key of its own; a retry after a lost answer keeps the same.
        idempotency_key=f"meter-report:{row.identifier}:{row.rejections}",
    )


def _recorded_by_stripe(row: MeterReport, customer_id: str) -> bool | None:
    """For a row sent more than 23 hours ago with no answer recorded (Stripe has forgotten the identifier
    by now, so a resend could count twice): whether Stripe's meter holds it, from the summary of its minute
    against the account's confirmed rows of that minute (a window's events share one timestamp, and a short
    first window shares the next one's). None if the meter is unknown."""
    meter = BillingMeter.objects.filter(event_name=settings.STRIPE_METER_EVENT_NAME).first()
    if meter is None:
        return None
    start = int(row.timestamp.timestamp()) // 60 * 60
    summaries = stripe_client.call(
        "read usage",
        lambda c, o: c.v1.billing.meters.event_summaries.list(
            meter.stripe_id, params={"customer": customer_id, "start_time": start, "end_time": start + 60}
        ),
        idempotency_key=None,
    )
    in_stripe = sum(s.aggregated_value for s in summaries.data)
    confirmed = (
        MeterReport.objects.filter(
            account_id=row.account_id,
            state=MeterReport.State.CONFIRMED,
            timestamp__gte=dt.datetime.fromtimestamp(start, dt.UTC),
            timestamp__lt=dt.datetime.fromtimestamp(start + 60, dt.UTC),
        ).aggregate(n=Sum("quantity"))["n"]
        or 0
    )
    return in_stripe == confirmed + row.quantity


def meter_report_account(*, account_id: int, now: dt.datetime) -> AccountReport:
    """Report one account: plan rows for its closed windows, then send its open rows in order, one call
    at a time (Stripe allows one concurrent meter call per customer), while nobody else reports the
    account (a session lock: another caller finds it busy and leaves it). Never raises for Stripe's
    answers: they are recorded on the rows (see the module docstring)."""
    result = AccountReport(account_id)
    with session_lock("meter-report", account_id) as acquired:
        if not acquired:
            result.busy = True
            return result
        account = Account.objects.get(pk=account_id)
        result.planned, result.adjustments = _plan(account, now)
        _restamp_after_switch(account_id, now)
        rows = MeterReport.objects.filter(account_id=account_id, state__in=OPEN_STATES)
        hold_from = meter_report_hold_from(account_id=account_id)
        if hold_from is not None:  # a plan migration's start has not switched Stripe's Price yet: its usage waits
            rows = rows.exclude(timestamp__gte=hold_from)
        rows = list(
            rows.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .select_related("window")
            .order_by("id")
        )
        if not rows:
            return result
        customer_id = Customer.objects.filter(subscriber_id=account_id).values_list("id", flat=True).first()
        for row in rows:
            if not _send_one(row, customer_id, now, result):
                break
    return result


OPEN_STATES = METER_OPEN_STATES
RESTAMP_LOOKBACK = dt.timedelta(days=40)  # longer than a billing period: a move's held rows are sent by then


def _restamp_after_switch(account_id: int, now: dt.datetime) -> int:
    """Usage held for a plan move (stamped between the new period's start and the switch of Stripe's Prices)
    is sent stamped just after the switch, still inside the period: Stripe bills a metered item's new Price
    for the usage it records after the change, so an event stamped before it would be billed at the old
    Price or not at all. Only rows never recorded by Stripe (pending, or refused) move; a row sent without an
    answer keeps its timestamp, so asking Stripe's meter about it still finds it. Returns how many moved."""
    moves = PlanMigration.objects.filter(
        account_id=account_id, status=PlanMigration.Status.DONE, applied_at__gt=F("effective_at"),
        applied_at__gte=now - RESTAMP_LOOKBACK,
    ).values_list("effective_at", "applied_at")  # fmt: skip
    moved = 0
    for effective_at, applied_at in moves:
        after = _ceil_minute(applied_at)
        moved += MeterReport.objects.filter(
            account_id=account_id, state__in=(MeterReport.State.PENDING, MeterReport.State.REJECTED),
            sent_at__isnull=True, timestamp__gte=effective_at, timestamp__lt=after, window__period_end__gt=after,
        ).update(timestamp=after)  # fmt: skip
    return moved


def _send_one(row: MeterReport, customer_id: str | None, now: dt.datetime, result: AccountReport) -> bool:
    """Send one row and record the outcome; False when the account's other rows should wait."""
    State = MeterReport.State
    deadline = meter_send_deadline(timestamp=row.timestamp, period_end=row.window.period_end)
    if now >= deadline and row.state in (State.PENDING, State.REJECTED):  # never recorded: too late for the invoice
        _to_adjustment(row, now, result)
        return True
    if customer_id is None:
        _row_update(row, state=State.REJECTED, last_error="The account has no Stripe customer.",
                    next_attempt_at=now + REJECTED_RETRY)  # fmt: skip
        result.rejected += 1
        return False
    # A row sent before with no answer: past its deadline (it must not be sent again, too late for the
    # invoice) or 23 hours after its first send (Stripe forgets identifiers after 24 hours, so a resend
    # could count twice), ask Stripe's meter whether it holds the event. The row stays `sent` until Stripe
    # has answered that question: a refused or failed read says nothing about the event.
    if row.state == State.SENT and (now >= deadline or now - row.sent_at >= STALE_SEND):
        try:
            recorded = _recorded_by_stripe(row, customer_id)
        except StripeRejected as error:
            _held(row, now, result, f"Reading Stripe's meter was refused: {error}")
            return False
        except StripeUnavailable as error:
            _unavailable(row, now, result, error, what="Reading Stripe's meter: ")
            return False
        if recorded is None:  # no meter to ask: wait for stripe_setup
            _held(row, now, result, "The meter is unknown: run stripe_setup.")
            return False
        if recorded:
            _row_update(row, state=State.CONFIRMED, confirmed_at=now, next_attempt_at=None, last_error="")
            result.confirmed += 1
            return True
        if now >= deadline:
            _to_adjustment(row, now, result)
            return True
    try:
        # sent_at is the first send since the row was last refused: the 23 hours count from it.
        _row_update(row, state=State.SENT, attempts=row.attempts + 1, sent_at=row.sent_at or now)
        _send(row, customer_id, now)
    except StripeRejected as error:
        if _already_delivered(error):
            _row_update(row, state=State.CONFIRMED, confirmed_at=now, next_attempt_at=None, last_error="")
            result.confirmed += 1
            return True
        # Refused, so not recorded: safe to send again later, or to turn into an adjustment.
        _row_update(row, state=State.REJECTED, last_error=str(error)[:2000], next_attempt_at=now + REJECTED_RETRY,
                    rejections=row.rejections + 1, sent_at=None)  # fmt: skip
        result.rejected += 1
        if _too_old(error):
            _row_update(row, next_attempt_at=now)  # becomes an adjustment on its next turn
            return True
        return False
    except StripeUnavailable as error:
        _unavailable(row, now, result, error)
        return False
    _row_update(row, state=State.CONFIRMED, confirmed_at=now, next_attempt_at=None, last_error="")
    result.confirmed += 1
    return True


def _held(row: MeterReport, now: dt.datetime, result: AccountReport, message: str) -> None:
    """The row keeps its state and waits an hour with the reason (a refusal: trying sooner will not help)."""
    _row_update(row, last_error=message[:2000], next_attempt_at=now + REJECTED_RETRY)
    result.rejected += 1


def _unavailable(row: MeterReport, now: dt.datetime, result: AccountReport, error: StripeUnavailable, what="") -> None:
    """Stripe could not be reached: the row keeps its state and waits, backing off (and at least as long as
    Stripe's Retry-After), and the account's later rows wait behind it."""
    _row_update(row, last_error=f"{what}{error}"[:2000],
                next_attempt_at=now + _unavailable_delay(row.attempts, error.retry_after))  # fmt: skip
    result.unavailable, result.retry_after = str(error), error.retry_after


def _to_adjustment(row: MeterReport, now: dt.datetime, result: AccountReport) -> None:
    """A row Stripe does not hold and that can no longer reach its invoice becomes an adjustment."""
    with transaction.atomic():
        window = MeterWindow.objects.select_for_update().get(pk=row.window_id)
        _adjustment(row, window, before=_Carried(row.account_id, now, exclude=row.pk).before(window))
        _row_update(row, state=row.state, adjustment_minor=row.adjustment_minor, last_error=row.last_error,
                    next_attempt_at=None)  # fmt: skip
    result.adjustments += 1


# --- Every account ------------------------------------------------------------------------------------
@dataclass
class ReportRun:
    accounts: int = 0
    planned: int = 0
    adjustments: int = 0
    confirmed: int = 0
    rejected: int = 0
    unavailable: int = 0  # accounts Stripe could not be reached for
    busy: int = 0
    queued: int = 0  # accounts handed to Celery tasks (METER_REPORTING = "tasks")
    unreachable: list[str] = field(default_factory=list)  # why Stripe could not be reached, per account
    errors: list[str] = field(default_factory=list)  # accounts whose reporting failed (a defect)

    def add(self, report: AccountReport) -> None:
        self.planned += report.planned
        self.adjustments += report.adjustments
        self.confirmed += report.confirmed
        self.rejected += report.rejected
        self.unavailable += bool(report.unavailable)
        self.busy += report.busy
        if report.unavailable:
            self.unreachable.append(f"account {report.account_id}: {report.unavailable}")


def meter_accounts_due(*, now: dt.datetime, account_ids: list[int] | None = None) -> list[int]:
    """Accounts with a closed window whose count moved, or an open report row due for an attempt."""
    windows = MeterWindow.objects.filter(end__lte=now).exclude(overage=F("reported"))
    rows = MeterReport.objects.filter(state__in=OPEN_STATES).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    if account_ids is not None:
        windows, rows = windows.filter(account_id__in=account_ids), rows.filter(account_id__in=account_ids)
    due = set(windows.values_list("account_id", flat=True).distinct()) | set(
        rows.values_list("account_id", flat=True).distinct()
    )
    return sorted(due)


def meter_reports_run(*, now: dt.datetime, account_ids: list[int] | None = None, dispatch: bool = False) -> ReportRun:
    """Report every account that has something due: in this process, METER_REPORT_THREADS accounts at a
    time (each account's calls in order, one at a time), or, with `dispatch`, as one Celery task per
    account (`meter_report_task`). One account's failure never stops the others."""
    run = ReportRun()
    due = meter_accounts_due(now=now, account_ids=account_ids)
    run.accounts = len(due)
    if dispatch:
        from ..tasks import meter_report_task

        for account_id in due:
            meter_report_task.delay(account_id)
        run.queued = len(due)
        return run
    threads = max(1, min(settings.METER_REPORT_THREADS, len(due)))
    if threads == 1 or connection.vendor != "postgresql":
        for account_id in due:
            _run_one(account_id, now, run)
        return run
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="meter-report") as pool:
        for report in pool.map(lambda pk: _threaded(pk, now), due):
            if isinstance(report, str):
                run.errors.append(report)
            else:
                run.add(report)
    return run


def _run_one(account_id: int, now: dt.datetime, run: ReportRun) -> None:
    try:
        run.add(meter_report_account(account_id=account_id, now=now))
    except Exception as exc:  # noqa: BLE001 - one account's failure must not stop the others
        logger.exception("Meter reporting of account %s failed", account_id)
        run.errors.append(f"account {account_id}: {exc.__class__.__name__}: {exc}")


def _threaded(account_id: int, now: dt.datetime) -> AccountReport | str:
    try:
        return meter_report_account(account_id=account_id, now=now)
    except Exception as exc:  # noqa: BLE001
        logger.exception("Meter reporting of account %s failed", account_id)
        return f"account {account_id}: {exc.__class__.__name__}: {exc}"
    finally:
        connection.close()  # this thread's own connection
