"""Reconciliation (DESIGN §3.5, §4 `reconcile`): per account and billing period, the total the portal has in
Stripe's meter (the quantities of its confirmed meter report rows) against Stripe's meter event summary for the
same period, over `meter_summary_bounds` (whole minutes that hold exactly that period's events).

What is compared. Every (account, period) with confirmed report rows or an open difference, whose period ended
less than LOOKBACK (40 days) ago or has not ended: one or two periods per reporting account and run, and past
Stripe's 35 days for backdated events a period's meter can no longer be corrected anyway. Adjustment rows are not
in Stripe's meter by definition and count for neither side; rejected rows never reached it. A period with a row
on its way (pending, sent, or confirmed less than METER_RECONCILE_SETTLE_SECONDS ago: Stripe aggregates
asynchronously) is not compared this run and counts as `in_flight`; so is one whose rows moved while Stripe was
being asked.

What is kept. A disagreement is stored with both figures (`MeterReconciliationDifference`, one open row per
account and period) and e-mailed once to the admins, after its transaction commits (`emailed_at` is claimed
before sending, so two runs never both send it; a failed send is retried by the next run). Other figures later
update the open row without another e-mail; equal figures resolve it; a difference that comes back after that is
a new row and a new e-mail. An admin may resolve an open row with a note (`meter_difference_resolve`): its figures
are accepted, so a run that finds exactly those figures again counts the period as `accepted` (not a difference,
no new row, no e-mail); other figures open a new row. Stripe is asked outside any transaction, one period at a
time, and each account's answers are stored (under its lock) before the next account is asked; a Stripe failure
for one period is recorded in the result and the run goes on with the others.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import Coalesce
from django.urls import reverse
from djstripe.models import Customer

from accounts.locks import accounts_lock
from accounts.models import ADMIN_GROUP, Account, BillingMeter, User
from accounts.services.audit import Actor, audit_log_write
from billing_portal import clock, stripe_client
from billing_portal.stripe_client import StripeFailure

from ..models import MeterReconciliationDifference, MeterReconciliationRun, MeterReport
from .metering import meter_summary_bounds

logger = logging.getLogger(__name__)
LOOKBACK = dt.timedelta(days=40)
IN_FLIGHT_STATES = (MeterReport.State.PENDING, MeterReport.State.SENT)


class _NotAskable(Exception):
    """Stripe cannot be asked about the period: no meter, or no Stripe customer for the account."""


@dataclass(frozen=True)
class PortalFigure:
    """The portal's side of one period: its confirmed total, and what else its report rows hold (to notice rows
    that moved while Stripe was being asked)."""

    period_end: dt.datetime | None = None
    total: int = 0
    confirmed: int = 0
    in_flight: int = 0
    rows: int = 0


@dataclass(frozen=True)
class PeriodDifference:
    account_id: int
    period_start: dt.datetime
    period_end: dt.datetime
    portal: int
    stripe: int

    def as_dict(self) -> dict:
        return {
            "account_id": self.account_id,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "portal": self.portal,
            "stripe": self.stripe,
        }


@dataclass
class ReconciliationResult:
    now: dt.datetime
    checked: int = 0  # periods compared with Stripe
    differences: list[PeriodDifference] = field(default_factory=list)  # found this run
    # Periods that still disagree with the figures an admin accepted (resolved with a note): not reopened.
    accepted_differences: list[PeriodDifference] = field(default_factory=list)
    in_flight: int = 0  # periods skipped: a meter event on its way
    failures: list[dict] = field(default_factory=list)  # periods Stripe could not be asked about
    new: int = 0  # differences not open before this run (e-mailed)
    resolved: int = 0  # open differences whose figures now agree
    accepted: int = 0  # periods whose figures are those an admin accepted when resolving their difference

    @property
    def nothing_checked(self) -> bool:
        """Every period there was to compare failed: nothing could be checked."""
        return bool(self.failures) and self.checked == 0

    def as_dict(self) -> dict:
        """`reconcile --json` (DESIGN §4: checked, differences) plus in_flight, new, resolved, accepted, failures."""
        return {
            "checked": self.checked,
            "differences": [d.as_dict() for d in self.differences],
            "in_flight": self.in_flight,
            "new": self.new,
            "resolved": self.resolved,
            "accepted": self.accepted,
            "accepted_differences": [d.as_dict() for d in self.accepted_differences],
            "failures": self.failures,
        }


def meter_reconcile_due(*, now: dt.datetime) -> bool:
    """True when no reconciliation started in the last METER_RECONCILE_INTERVAL_SECONDS before `now` (a run
    recorded after `now`, e.g. before a demo replayed earlier days, does not count)."""
    since = now - dt.timedelta(seconds=settings.METER_RECONCILE_INTERVAL_SECONDS)
    return not MeterReconciliationRun.objects.filter(started_at__gt=since, started_at__lte=now).exists()


def meter_reconcile(*, now: dt.datetime) -> ReconciliationResult:
    """Compare every period due for it (see the module docstring) with Stripe, store and e-mail new differences,
    update or resolve open ones, and record the run. Never calls Stripe inside a transaction; a Stripe failure
    is in `failures`, not raised."""
    result = ReconciliationResult(now=now)
    _owed_emails_send(now=now)
    settled_before = now - dt.timedelta(seconds=settings.METER_RECONCILE_SETTLE_SECONDS)
    figures = _portal_figures(cutoff=now - LOOKBACK, settled_before=settled_before)
    open_periods = MeterReconciliationDifference.objects.filter(resolved_at__isnull=True, period_end__gt=now - LOOKBACK)
    candidates = {key: figure for key, figure in figures.items() if figure.confirmed}
    for account_id, period_start, period_end in open_periods.values_list("account_id", "period_start", "period_end"):
        key = (account_id, period_start)
        candidates.setdefault(key, figures.get(key) or PortalFigure(period_end=period_end))

    meter = BillingMeter.objects.filter(event_name=settings.STRIPE_METER_EVENT_NAME).first()
    customers = _stripe_customers(sorted({account_id for account_id, _ in candidates}))
    by_account: dict[int, list[tuple[dt.datetime, PortalFigure]]] = {}
    for (account_id, period_start), figure in sorted(candidates.items(), key=lambda item: item[0]):
        by_account.setdefault(account_id, []).append((period_start, figure))
    for account_id, periods in by_account.items():  # each account's answers stored before the next is asked
        asked = []
        for period_start, figure in periods:
            if figure.in_flight:
                result.in_flight += 1
                continue
            try:
                if meter is None:
                    raise _NotAskable(f"no meter for {settings.STRIPE_METER_EVENT_NAME!r} (run stripe_setup)")
                if account_id not in customers:
                    raise _NotAskable("the account has no Stripe customer")
                stripe_total = _stripe_total(meter.stripe_id, customers[account_id], period_start, figure.period_end)
            except (StripeFailure, _NotAskable, ValueError) as exc:
                logger.warning("Reconciliation of account %s, period from %s: %s", account_id, period_start, exc)
                result.failures.append({
                    "account_id": account_id, "period_start": period_start.isoformat(),
                    "period_end": figure.period_end.isoformat(), "error": str(exc),
                })  # fmt: skip
                continue
            asked.append((period_start, figure, stripe_total))
        if asked:
            _record(account_id=account_id, periods=asked, now=now, settled_before=settled_before, result=result)
    MeterReconciliationRun.objects.create(
        started_at=now, checked=result.checked, differences=len(result.differences), in_flight=result.in_flight,
        failures=result.failures,
    )  # fmt: skip
    return result


def _portal_figures(
    *, cutoff: dt.datetime, settled_before: dt.datetime, account_id: int | None = None
) -> dict[tuple[int, dt.datetime], PortalFigure]:
    """(account id, period start) -> PortalFigure, for periods ending after `cutoff`, from one aggregate query
    over their report rows (all of one account's when `account_id` is given)."""
    reports = MeterReport.objects.filter(window__period_end__gt=cutoff)
    if account_id is not None:
        reports = reports.filter(window__account_id=account_id)
    confirmed = Q(state=MeterReport.State.CONFIRMED)
    on_the_way = Q(state__in=IN_FLIGHT_STATES) | (confirmed & Q(confirmed_at__gt=settled_before))
    rows = (
        reports.values("window__account_id", "window__period_start")
        .annotate(
            period_end=Max("window__period_end"),
            total=Coalesce(Sum("quantity", filter=confirmed), 0),
            confirmed=Count("id", filter=confirmed),
            in_flight=Count("id", filter=on_the_way),
            rows=Count("id"),
        )
        .order_by()
    )
    return {
        (r["window__account_id"], r["window__period_start"]): PortalFigure(
            r["period_end"], r["total"], r["confirmed"], r["in_flight"], r["rows"]
        )
        for r in rows
    }


def _stripe_customers(account_ids: list[int]) -> dict[int, str]:
    """account id -> its Stripe customer id (the newest, if dj-stripe has several)."""
    customers = Customer.objects.filter(subscriber_id__in=account_ids).order_by("subscriber_id", "created")
    return dict(customers.values_list("subscriber_id", "id"))


def _stripe_total(meter_id: str, customer_id: str, period_start: dt.datetime, period_end: dt.datetime) -> int:
    """Stripe's aggregated meter value for the customer over the period: one summary for the whole range (no
    value_grouping_window). Stripe sends it as a number; anything but a whole number raises ValueError."""
    start_time, end_time = meter_summary_bounds(period_start, period_end)
    if end_time <= start_time:  # a period shorter than a minute holds no event
        return 0
    summaries = stripe_client.call(
        "list meter event summaries",
        lambda c, o: c.v1.billing.meters.event_summaries.list(
            meter_id, params={"customer": customer_id, "start_time": start_time, "end_time": end_time}, options=o
        ),
        idempotency_key=None,
    )
    total = sum((Decimal(str(summary.aggregated_value)) for summary in summaries.data), Decimal(0))
    if total != total.to_integral_value():
        raise ValueError(f"Stripe's aggregated value {total} is not a whole number of resolutions")
    return int(total)


def _record(
    *, account_id: int, periods: list[tuple[dt.datetime, PortalFigure, int]], now: dt.datetime,
    settled_before: dt.datetime, result: ReconciliationResult,
) -> None:  # fmt: skip
    """Store what Stripe said about the account's periods, in one transaction holding the account's lock (so
    two runs decide one after the other), each against its report rows read again: a period whose rows moved
    since Stripe was asked is in flight, not a difference."""
    with transaction.atomic():
        accounts_lock([account_id])
        fresh = _portal_figures(cutoff=now - LOOKBACK, settled_before=settled_before, account_id=account_id)
        rows = list(
            MeterReconciliationDifference.objects.filter(
                account_id=account_id, period_start__in=[p for p, _, _ in periods]
            )
        )
        open_rows = {row.period_start: row for row in rows if row.resolved_at is None}
        last_resolved: dict[dt.datetime, MeterReconciliationDifference] = {}
        for row in sorted((r for r in rows if r.resolved_at is not None), key=lambda r: r.pk):
            last_resolved[row.period_start] = row  # a period's newest row decides (a new row opens after the last)
        for period_start, figure, stripe_total in periods:
            now_figure = fresh.get((account_id, period_start)) or PortalFigure(period_end=figure.period_end)
            if now_figure != figure:
                result.in_flight += 1
                continue
            result.checked += 1
            row = open_rows.get(period_start)
            if figure.total == stripe_total:
                if row is not None:
                    row.resolved_at = row.last_checked_at = now
                    row.save(update_fields=["resolved_at", "last_checked_at"])
                    result.resolved += 1
                continue
            accepted = last_resolved.get(period_start)
            if row is None and accepted is not None and _accepts(accepted, figure.total, stripe_total):
                accepted.last_checked_at = now  # still the figures the admin accepted: not reopened, not e-mailed
                accepted.save(update_fields=["last_checked_at"])
                result.accepted += 1
                result.accepted_differences.append(  # they still disagree: listed apart, not hidden
                    PeriodDifference(account_id, period_start, figure.period_end, figure.total, stripe_total)
                )
                continue
            result.differences.append(
                PeriodDifference(account_id, period_start, figure.period_end, figure.total, stripe_total)
            )
            if row is None:
                row = MeterReconciliationDifference.objects.create(
                    account_id=account_id, period_start=period_start, period_end=figure.period_end,
                    portal=figure.total, stripe=stripe_total, first_found_at=now, last_checked_at=now,
                )  # fmt: skip
                result.new += 1
                transaction.on_commit(lambda pk=row.pk: meter_difference_email(difference_id=pk, now=now), robust=True)
            else:  # still there, perhaps with other figures: kept current, not told again
                row.portal, row.stripe, row.period_end = figure.total, stripe_total, figure.period_end
                row.last_checked_at = now
                row.save(update_fields=["portal", "stripe", "period_end", "last_checked_at"])


def _accepts(row: MeterReconciliationDifference, portal: int, stripe: int) -> bool:
    """Did an admin accept exactly these figures when resolving `row`? (A row a run resolved accepted nothing.)"""
    return bool(row.resolution_key) and (row.portal, row.stripe) == (portal, stripe)


# --- an admin resolves a difference ----------------------------------------------------------------------------
def meter_difference_resolve(
    *, difference: MeterReconciliationDifference, actor: Actor, note: str, key: str,
    figures: tuple[int, int] | None = None,
) -> MeterReconciliationDifference:  # fmt: skip
    """Resolve an open difference by hand, accepting its figures (e.g. a credit note was issued for it). `key` is
    the form's idempotency key: a second call with it returns the first resolution. `figures` (portal, Stripe) are
    those the admin saw: if a run changed them since, nothing is resolved (the admin would accept figures they
    never read). Takes the account's lock, as `_record` does, so a run and a resolution of one account decide one
    after the other. Refused input changes nothing. Audited."""
    note = (note or "").strip()
    if not note:
        raise ValidationError({"note": "Write a note saying why these figures are accepted (it is kept)."})
    if not key:
        raise ValidationError("This form has no idempotency key: reload the page and submit it again.")
    with transaction.atomic():
        accounts_lock([difference.account_id])
        row = MeterReconciliationDifference.objects.select_for_update().select_related("account").get(pk=difference.pk)
        if row.resolution_key == key:
            return row  # the same form submitted again: already done
        if MeterReconciliationDifference.objects.filter(resolution_key=key).exists():
            raise ValidationError("This form was already used to resolve another difference: reload the page.")
        if row.resolved_at is not None:
            who = f" by {row.resolved_by.get_username()}" if row.resolved_by else " (the figures agreed)"
            raise ValidationError(f"This difference was already resolved on {row.resolved_at:%Y-%m-%d %H:%M} UTC{who}.")
        if figures is not None and tuple(figures) != (row.portal, row.stripe):
            raise ValidationError(
                f"The figures changed since this page was opened: now portal {row.portal:,}, Stripe {row.stripe:,}. "
                "Read them again before resolving."
            )
        before = {"resolved_at": None, "portal": row.portal, "stripe": row.stripe}
        row.resolved_at = clock.now()
        row.resolved_by = actor if isinstance(actor, User) else None
        row.resolution_note = note[:2000]
        row.resolution_key = key
        row.save(update_fields=["resolved_at", "resolved_by", "resolution_note", "resolution_key"])
        audit_log_write(
            actor=actor, action="meter_difference.resolve", obj=row, account=row.account, before=before,
            after={"resolved_at": row.resolved_at, "portal": row.portal, "stripe": row.stripe,
                   "difference": row.difference, "period_start": row.period_start, "period_end": row.period_end},
            reason=note,
        )  # fmt: skip
    return row


# --- e-mail to the admins --------------------------------------------------------------------------------------
def meter_difference_email(*, difference_id: int, now: dt.datetime) -> bool:
    """Tell the admins about an open difference, once: `emailed_at` is claimed first (a second caller finds it
    set and sends nothing) and given back if the mail cannot be sent, for the next run to try again. True when
    sent."""
    claimed = MeterReconciliationDifference.objects.filter(
        pk=difference_id, resolved_at__isnull=True, emailed_at__isnull=True
    ).update(emailed_at=now)
    if not claimed:
        return False
    difference = MeterReconciliationDifference.objects.select_related("account").get(pk=difference_id)
    recipients = _admin_recipients()
    try:
        if not recipients:
            raise ValueError(f"no admin has an e-mail address (users in {ADMIN_GROUP!r}, superusers, settings.ADMINS)")
        send_mail(
            subject=_subject(difference),
            message=_message(difference),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=recipients,
        )
    except Exception as exc:  # noqa: BLE001 - the difference is in the admin either way; the next run retries
        logger.error("Meter reconciliation e-mail for difference %s failed: %s", difference_id, exc)
        MeterReconciliationDifference.objects.filter(pk=difference_id).update(emailed_at=None)
        return False
    return True


def _owed_emails_send(*, now: dt.datetime) -> None:
    """Open differences whose e-mail an earlier run could not send."""
    owed = MeterReconciliationDifference.objects.filter(resolved_at__isnull=True, emailed_at__isnull=True)
    for pk in owed.order_by("pk").values_list("pk", flat=True):
        meter_difference_email(difference_id=pk, now=now)


def _admin_recipients() -> list[str]:
    """Active users in the Admins group and superusers with an e-mail address, then settings.ADMINS."""
    users = (
        User.objects.filter(Q(groups__name=ADMIN_GROUP) | Q(is_superuser=True), is_active=True)
        .exclude(email="")
        .order_by("pk")
        .values_list("email", flat=True)
    )
    configured = [entry[1] if isinstance(entry, list | tuple) else entry for entry in settings.ADMINS]
    seen: set[str] = set()
    recipients = []
    for address in [*users, *configured]:
        if address and address.lower() not in seen:
            seen.add(address.lower())
            recipients.append(address)
    return recipients


def _subject(difference: MeterReconciliationDifference) -> str:
    return (
        f"Meter reconciliation: {difference.account.name}, period from {difference.period_start:%Y-%m-%d}: "
        f"portal {difference.portal:,}, Stripe {difference.stripe:,}"
    )


def _message(difference: MeterReconciliationDifference) -> str:
    account: Account = difference.account
    link = settings.PORTAL_BASE_URL.rstrip("/") + reverse(
        "admin:resolutions_meterreconciliationdifference_change", args=[difference.pk]
    )
    resolve = settings.PORTAL_BASE_URL.rstrip("/") + reverse("staff-ops-difference-resolve", args=[difference.pk])
    return (
        f"The overage resolutions reported to Stripe's meter and Stripe's meter event summary disagree for "
        f"{account.name} (account {account.pk}), billing period {difference.period_start:%Y-%m-%d %H:%M} to "
        f"{difference.period_end:%Y-%m-%d %H:%M} UTC.\n\n"
        f"  Portal (confirmed meter events): {difference.portal:,}\n"
        f"  Stripe (meter event summary):    {difference.stripe:,}\n"
        f"  Difference (Stripe - portal):    {difference.difference:+,}\n\n"
        f"Reconciliation checks again every hour and marks the difference resolved once the figures agree.\n"
        f"{link}\n\n"
        f"If these figures are right as they are (e.g. a credit note covers them), resolve it with a note:\n"
        f"{resolve}\n"
    )
