"""Reads: usage from the daily rollups (never the ledger), resolutions with cursor pagination."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from django.conf import settings
from django.db.models import Count, F, QuerySet, Sum
from django.http import Http404
from djstripe.models import Subscription

from accounts.models import Account, BillingPeriod, PricePlanVersion, User
from accounts.selectors import account_list_visible
from accounts.services.billing_periods import billing_period_calendar
from billing_portal.clock import INSTANT_MAX, INSTANT_MIN
from billing_portal.periods import PeriodCalendar, RecordedPeriod
from credits.budget import PeriodSpend

from .models import DailyUsage, MeterReport, MeterWindow, PendingEvaluation, Resolution
from .rating import PriceTerms, price_quantity

METER_OPEN_STATES = (MeterReport.State.PENDING, MeterReport.State.SENT, MeterReport.State.REJECTED)
USAGE_KEYS = ("resolutions", "credited", "overage", "amount_minor")
MAX_USAGE_DAYS = 366
# The dates a read may ask for: those of the instants the portal takes (clock.parse_instant), so that the
# day after the last one, and its midnight in any timezone, are still dates Python can hold.
DATE_MIN = INSTANT_MIN.date()
DATE_MAX = INSTANT_MAX.date() - dt.timedelta(days=1)


def usage_get(*, account: Account, date_from: dt.date, date_to: dt.date) -> dict:
    """Every day of the range (days without resolutions count zero), and the totals."""
    rows = {
        row["date"]: row
        for row in DailyUsage.objects.filter(account=account, date__gte=date_from, date__lte=date_to).values(
            "date", *USAGE_KEYS
        )
    }
    days = []
    for offset in range((date_to - date_from).days + 1):  # never computes a day past date_to
        day = date_from + dt.timedelta(days=offset)
        row = rows.get(day)
        days.append({"date": day.isoformat(), **{k: (row[k] if row else 0) for k in USAGE_KEYS}})
    totals = {k: sum(d[k] for d in days) for k in USAGE_KEYS}
    return {"currency": account.currency, "days": days, "totals": totals}


def evaluation_backlog(*, account: Account) -> dict:
    """Events stored but not evaluated yet (EVENT_EVALUATION="deferred"): batches queued, conversations
    they touch, and since when. Usually empty: a worker evaluates each batch within seconds."""
    queued = PendingEvaluation.objects.filter(account=account)
    rows = list(queued.values_list("conversation_ids", "created_at"))
    return {
        "batches": len(rows),
        "conversations": len({cid for ids, _ in rows for cid in ids}),
        "oldest": min((at for _, at in rows), default=None),
    }


def resolution_list(*, account: Account, date_from: dt.date | None, date_to: dt.date | None) -> QuerySet[Resolution]:
    """The account's resolutions (voided ones included, marked), by resolved_at; dates in its timezone."""
    resolutions = Resolution.objects.filter(account=account)
    tz = zoneinfo.ZoneInfo(account.timezone)
    if date_from:
        resolutions = resolutions.filter(resolved_at__gte=dt.datetime.combine(date_from, dt.time(), tz))
    if date_to:
        resolutions = resolutions.filter(
            resolved_at__lt=dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), tz)
        )
    return resolutions


def resolution_get_visible(*, user: User, pk: int) -> Resolution:
    """For staff: the resolution if its account is visible to them, else 404."""
    resolution = (
        Resolution.objects.filter(pk=pk, account__in=account_list_visible(user=user)).select_related("account").first()
    )
    if resolution is None:
        raise Http404("No such resolution.")
    return resolution


def billing_period_overage_get(*, account, now) -> dict | None:
    """The account's current Stripe billing period (as Stripe shows it) and its overage so far: what the
    period's invoice will charge for resolutions, counted over exactly the resolutions funding priced in
    it (the first period includes what came before it). None when Stripe has no subscription for it."""
    calendar = billing_period_calendar(account_id=account.pk)
    shown = calendar.current(now)
    if shown is None:
        return None
    starts, ends = calendar.containing(now)
    totals = Resolution.objects.filter(
        account=account, funding=Resolution.Funding.OVERAGE, voided_at__isnull=True,
        resolved_at__gte=starts, resolved_at__lt=ends,
    ).aggregate(overage=Count("id"), amount_minor=Sum("amount_minor"))  # fmt: skip
    return {
        "start": shown[0], "end": shown[1], "overage": totals["overage"],
        "amount_minor": totals["amount_minor"] or 0, "currency": account.currency,
    }  # fmt: skip


def meter_reporting_status(*, account: Account, now: dt.datetime) -> dict:
    """How far the account's overage is in Stripe, for its dashboard: `through`, the instant up to which
    every overage resolution is in Stripe's meter (the start of the earliest window not fully confirmed,
    else the end of the last closed window: a window is reported once it has closed); `waiting`, report
    rows not confirmed yet; `refused`, those Stripe refused (kept and retried; staff see why)."""
    size = settings.METER_WINDOW_SECONDS
    closed = dt.datetime.fromtimestamp(int(now.timestamp()) // size * size, dt.UTC)
    waiting_windows = MeterWindow.objects.filter(account_id=account.pk, end__lte=now).exclude(overage=F("reported"))
    open_rows = MeterReport.objects.filter(account_id=account.pk, state__in=METER_OPEN_STATES)
    starts = [
        waiting_windows.order_by("start").values_list("start", flat=True).first(),
        open_rows.order_by("window__start").values_list("window__start", flat=True).first(),
    ]
    return {
        "through": min([s for s in starts if s is not None] + [closed]),
        "waiting": open_rows.count(),
        "refused": open_rows.filter(state=MeterReport.State.REJECTED).count(),
        "window_minutes": size // 60,
    }


SEAT_BILLING_STATUSES = ("active", "trialing", "past_due")


def billing_period_spend_list(*, account_ids: list[int], now: dt.datetime) -> dict[int, PeriodSpend]:
    """Per account (with a Stripe subscription), its current billing period's spend: the seats the period
    bills (the dj-stripe mirror's seat quantity x the seat price of the version that seat Price belongs to)
    plus its overage money so far (the period's overage count from the reporting windows, priced as Stripe
    prices it, which is exactly the sum of the resolutions' marginal shares). A fixed number of queries for
    any number of accounts, none over resolutions: the budget alert asks it for thousands each cycle."""
    if not account_ids:
        return {}
    accounts = Account.objects.filter(pk__in=account_ids).select_related("plan_version")
    accounts = {a.pk: a for a in accounts.prefetch_related("plan_version__tiers")}
    recorded: dict[int, list[RecordedPeriod]] = {}
    periods = BillingPeriod.objects.filter(account_id__in=list(accounts)).values_list(
        "account_id", "start", "end", "billing_cycle_anchor", "interval", "interval_count"
    )
    for account_id, *row in periods:
        recorded.setdefault(account_id, []).append(RecordedPeriod(*row))
    current = {
        pk: PeriodCalendar(rows).current(now) for pk, rows in recorded.items() if PeriodCalendar(rows).current(now)
    }
    overage = {
        (row["account_id"], row["period_start"], row["period_end"]): row["n"] or 0
        for row in MeterWindow.objects.filter(account_id__in=list(current), period_end__gt=now)
        .values("account_id", "period_start", "period_end")
        .annotate(n=Sum("overage"))
        .order_by()
    }
    seats = _seat_quantities(list(current))
    seat_prices = dict(
        PricePlanVersion.objects.filter(stripe_seat_price_id__in={p for q in seats.values() for p in q})
        .exclude(stripe_seat_price_id="")
        .values_list("stripe_seat_price_id", "seat_unit_amount")
    )
    spend = {}
    for pk, (start, end) in current.items():
        account = accounts[pk]
        count = overage.get((pk, start, end), 0)
        amount = price_quantity(quantity=count, terms=PriceTerms.from_version(account.plan_version)) if count else 0
        seats_minor = sum(
            quantity * seat_prices.get(price_id, account.plan_version.seat_unit_amount)
            for price_id, quantity in seats.get(pk, {}).items()
        )
        spend[pk] = PeriodSpend(start, end, seats_minor, amount, account.currency)
    return spend


def _seat_quantities(account_ids: list[int]) -> dict[int, dict[str, int]]:
    """account id -> {seat Price id: quantity} of its billing subscriptions' licensed items (dj-stripe's
    mirror, kept by provisioning, the subscription webhooks and the cycle's period sync)."""
    quantities: dict[int, dict[str, int]] = {}
    mirrored = Subscription.objects.filter(customer__subscriber_id__in=account_ids).values_list(
        "customer__subscriber_id", "stripe_data"
    )
    for account_id, data in mirrored:
        if (data or {}).get("status") not in SEAT_BILLING_STATUSES:
            continue
        for item in ((data.get("items") or {}).get("data")) or []:
            price = item.get("price") or {}
            if ((price.get("recurring") or {}).get("usage_type")) != "licensed":
                continue
            by_price = quantities.setdefault(account_id, {})
            by_price[price.get("id") or ""] = by_price.get(price.get("id") or "", 0) + int(item.get("quantity") or 0)
    return quantities
