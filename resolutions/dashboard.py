"""Selectors of the customer's dashboard (DESIGN §2, §6): the current Stripe billing period's figures, its
forecast, the daily chart and the credit burn-down. Reads only: nothing here writes.

Speed: a period's counts come from the daily rollups and its two ragged edges, exactly, never from a
scan of its resolutions (resolutions/period_counts.py: the one place for that rule). The period's overage
money is its overage count priced by the period's plan version exactly as Stripe prices the metered Price
(`rating.price_lines`): what the invoice will charge.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from dataclasses import dataclass

from djstripe.models import Subscription

from accounts.models import Account, BillingPeriod, PricePlanVersion
from accounts.selectors import plan_schedule_get
from accounts.services.billing_periods import billing_period_calendar
from credits.alerts import CreditStanding, credit_alert_conditions
from credits.models import CreditAlert, CreditPack

from .models import ConversationTally, DailyUsage
from .period_counts import PeriodKey, period_first_versions, period_usage_sums
from .rating import PriceTerms, price_lines, price_quantity

RATE_DAYS = 14  # the recent daily rate: the last 14 complete local days
FORECAST_Z = 1.2816  # the forecast range: an 80 % interval of the sum of the remaining days
CHART_DAYS = 90


def period_usage_sum(*, account: Account, starts: dt.datetime, ends: dt.datetime) -> dict:
    """Exact counts of [starts, ends) for the account (period_counts.USAGE_KEYS): resolutions (not voided),
    of them credited, overage, confirmed, their overage money as the rollups hold it (the sum of the
    resolutions' shares), and conversations escalated in it."""
    key = PeriodKey(account_id=account.pk, timezone=account.timezone, starts=starts, ends=ends)
    return period_usage_sums(keys=[key])[0]


def period_plan_version(*, account: Account, starts: dt.datetime, ends: dt.datetime) -> PricePlanVersion:
    """The plan version the period's resolutions are rated with (a version holds for whole periods): that
    of its first resolution (one index probe), else the one in force at its start (plan migrations)."""
    key = PeriodKey(account_id=account.pk, timezone=account.timezone, starts=starts, ends=ends)
    version_id = period_first_versions(keys=[key])[0] or plan_schedule_get(
        account_id=account.pk, account_version_id=account.plan_version_id
    ).version_at(starts)
    return PricePlanVersion.objects.prefetch_related("tiers").get(pk=version_id)


def billing_period_usage_get(*, account: Account, now: dt.datetime) -> dict | None:
    """The current Stripe billing period as the dashboard shows it: its bounds (Stripe's), exact counts so
    far, the overage priced by tier, conversations still waiting for an outcome, and the period's share of
    time elapsed. None when Stripe has no subscription for the account."""
    calendar = billing_period_calendar(account_id=account.pk)
    shown = calendar.current(now)
    if shown is None:
        return None
    starts, ends = calendar.containing(now)  # the first period reaches back to what came before it
    counts = period_usage_sum(account=account, starts=starts, ends=ends)
    version = period_plan_version(account=account, starts=starts, ends=ends)
    terms = PriceTerms.from_version(version)
    lines = price_lines(quantity=counts["overage"], terms=terms)
    waiting = ConversationTally.objects.filter(account_id=account.pk).values_list("waiting", flat=True).first() or 0
    resolved, escalated = counts["resolutions"], counts["escalated"]
    ended = resolved + escalated
    length = (shown[1] - shown[0]).total_seconds()
    return {
        "start": shown[0],
        "end": shown[1],
        "currency": account.currency,
        **counts,
        "assumed": resolved - counts["confirmed"],
        "unfunded": resolved - counts["credited"] - counts["overage"],
        "overage_minor": sum(line.amount for line in lines),
        "overage_lines": lines,
        "tiered": bool(terms.tiers_mode),
        "terms": terms,
        "version": version,
        "waiting": waiting,
        "resolved_percent": round(100 * resolved / ended) if ended else None,
        "escalated_percent": round(100 * escalated / ended) if ended else None,
        "elapsed_percent": max(0, min(100, round(100 * (now - shown[0]).total_seconds() / length))) if length else 0,
        "days_left": max((shown[1] - now).total_seconds() / 86400, 0.0),
    }


# The subscription states Stripe bills seats in (one constant for the dashboard, the book, the budget alert,
# the account page and the invoice preview).
BILLED_SUBSCRIPTION_STATES = ("active", "trialing", "past_due")


@dataclass(frozen=True, slots=True)
class SeatItem:
    """A subscription's seat item as Stripe holds it: its quantity, the plan version whose seat Price it bills
    (the account's own version when the Price is not one of ours), and whether the subscription renews."""

    quantity: int
    version: PricePlanVersion
    renews: bool


def seat_item_of(*, subscription: dict, account: Account) -> SeatItem:
    """The seat item (the first licensed item) of a Stripe subscription object: one rule for the dashboard's
    seats and the invoice preview's."""
    items = (subscription.get("items") or {}).get("data") or []
    licensed = [i for i in items if ((i.get("price") or {}).get("recurring") or {}).get("usage_type") == "licensed"]
    item = licensed[0] if licensed else {}
    price_id = (item.get("price") or {}).get("id")
    version = (
        PricePlanVersion.objects.filter(stripe_seat_price_id=price_id).first() if price_id else None
    ) or account.plan_version
    renews = subscription.get("status") in BILLED_SUBSCRIPTION_STATES and not subscription.get("cancel_at_period_end")
    return SeatItem(quantity=int(item.get("quantity") or 0), version=version, renews=renews)


def seats_get(*, account: Account, now: dt.datetime) -> dict | None:
    """The seat item of the account's current subscription as dj-stripe last mirrored it from Stripe (no
    Stripe call): quantity, price per seat (of the plan version its Price bills) and whether it renews.
    None without a subscription in the mirror."""
    periods = BillingPeriod.objects.filter(account_id=account.pk).exclude(stripe_subscription_id="")
    row = periods.filter(start__lte=now).order_by("-start").first() or periods.order_by("start").first()
    mirrored = Subscription.objects.filter(id=row.stripe_subscription_id).first() if row else None
    if mirrored is None:
        return None
    seat = seat_item_of(subscription=mirrored.stripe_data or {}, account=account)
    quantity, version, renews = seat.quantity, seat.version, seat.renews
    return {
        "quantity": quantity,
        "unit_amount": version.seat_unit_amount,
        "amount_minor": quantity * version.seat_unit_amount,
        "renews": renews,
        "next_amount_minor": quantity * version.seat_unit_amount if renews else 0,
    }


DAY_KEYS = ("resolutions", "credited", "overage", "amount_minor", "confirmed", "escalated")


def daily_usage_list(*, account: Account, date_from: dt.date, date_to: dt.date) -> dict:
    """Every local day of the range from the rollups (a day without a row counts zero), with the
    dashboard's extra counters, and the totals: one query of at most the range's rows."""
    rows = {
        row["date"]: row
        for row in DailyUsage.objects.filter(account_id=account.pk, date__gte=date_from, date__lte=date_to).values(
            "date", *DAY_KEYS
        )
    }
    days = []
    for offset in range((date_to - date_from).days + 1):
        day = date_from + dt.timedelta(days=offset)
        row = rows.get(day)
        days.append({"date_obj": day, **{k: (row[k] if row else 0) for k in DAY_KEYS}})
    return {"currency": account.currency, "days": days, "totals": {k: sum(d[k] for d in days) for k in DAY_KEYS}}


@dataclass(frozen=True)
class DailyRate:
    """Resolutions a day over the last RATE_DAYS complete local days: mean and standard deviation."""

    mean: float
    stdev: float
    days: int
    since: dt.date | None


def daily_rate_get(*, account: Account, today: dt.date) -> DailyRate:
    """The recent daily rate from the rollups: the complete local days before today (at most RATE_DAYS),
    from the account's first day with data (a new account's rate is over the days it has)."""
    since = today - dt.timedelta(days=RATE_DAYS)
    rows = dict(
        DailyUsage.objects.filter(account_id=account.pk, date__gte=since, date__lt=today).values_list(
            "date", "resolutions"
        )
    )
    first = (
        DailyUsage.objects.filter(account_id=account.pk, resolutions__gt=0)
        .order_by("date")
        .values_list("date", flat=True)[:1]
        .first()
    )
    if first is None or first >= today:
        return DailyRate(0.0, 0.0, 0, None)
    start = max(since, first)
    values = [rows.get(start + dt.timedelta(days=i), 0) for i in range((today - start).days)]
    stdev = statistics.pstdev(values) if len(values) > 1 else 0.0
    return DailyRate(statistics.fmean(values), stdev, len(values), start)


@dataclass(frozen=True)
class PackState:
    pk: int
    source: str
    remaining: int
    starts_at: dt.datetime
    expires_at: dt.datetime


def credit_burn_project(*, packs: list[PackState], rate: float, now: dt.datetime, until: dt.datetime) -> dict:
    """Credits drawn at `rate` resolutions a day from `now` to `until`, soonest-expiring pack first (as
    drawdown does), each pack usable from its start until it expires. Returns the remaining total as
    points [(instant, remaining)] (a pack's leftover drops at its expiry: two points at that instant), the
    credits drawn, when the usable credits run out (None if they do not by `until`, or expire first), and
    how many expire unused. A projection: time in floats, credits whole."""
    left = {p.pk: float(p.remaining) for p in packs}
    cuts = {now, until}
    cuts |= {p.expires_at for p in packs if now < p.expires_at < until}
    cuts |= {p.starts_at for p in packs if now < p.starts_at < until}
    events = sorted(cuts)

    def total(at):
        return sum(left[p.pk] for p in packs if p.expires_at > at)

    points, drawn, expired, runs_out = [(now, total(now))], 0.0, 0.0, None
    for start, end in zip(events, events[1:], strict=False):
        demand = rate * (end - start).total_seconds() / 86400
        usable = sorted(
            (p for p in packs if p.starts_at <= start < p.expires_at and left[p.pk] > 0),
            key=lambda p: (p.expires_at, p.pk),
        )
        available = sum(left[p.pk] for p in usable)
        for pack in usable:
            take = min(left[pack.pk], demand)
            left[pack.pk] -= take
            demand -= take
            drawn += take
        if rate > 0 and available and demand > 0 and runs_out is None:
            runs_out = start + dt.timedelta(days=available / rate)
            points.append((runs_out, total(end)))
        leftover = sum(left[p.pk] for p in packs if p.expires_at == end)
        if leftover:
            points.append((end, total(end) + leftover))
            expired += leftover
            for pack in packs:
                if pack.expires_at == end:
                    left[pack.pk] = 0.0
        points.append((end, total(end)))
    return {
        "points": [(at, round(remaining)) for at, remaining in points],
        "drawn": math.floor(drawn + 1e-6),  # float steps of a whole demand may sum to 639.9999999
        "runs_out": runs_out,
        "expired": math.floor(expired + 1e-9),
    }


def credit_packs_get(*, account: Account, now: dt.datetime) -> list[CreditPack]:
    """The account's packs worth showing: active or awaiting payment, and those that ended in the last 90 days."""
    recent = now - dt.timedelta(days=90)
    return list(
        CreditPack.objects.filter(account=account)
        .exclude(status=CreditPack.Status.CANCELLED)
        .filter(expires_at__gt=recent)
        .order_by("expires_at", "pk")
    )


def forecast_get(*, period: dict, rate: DailyRate, packs: list[PackState], now: dt.datetime) -> dict | None:
    """Where the period will end at the recent daily rate, as a range (an 80 % interval of the sum of the
    remaining days, whose daily counts vary as much as the recent days did): resolutions, overage (what the
    credits usable until the period's end do not cover) and its money, priced by tier."""
    if not rate.days:
        return None
    days = period["days_left"]
    spread = FORECAST_Z * rate.stdev * math.sqrt(days)
    low, high = max(rate.mean * days - spread, 0.0), rate.mean * days + spread
    # Whole resolutions first, then the credits those would draw: rounding the demand up but the draw down
    # showed one phantom overage resolution when credits cover everything.
    low, high = math.floor(low), math.ceil(high)
    drawn_low = credit_burn_project(packs=packs, rate=low / days if days else 0, now=now, until=period["end"])["drawn"]
    drawn_high = credit_burn_project(packs=packs, rate=high / days if days else 0, now=now, until=period["end"])[
        "drawn"
    ]
    overage_low = period["overage"] + max(low - drawn_low, 0)
    overage_high = period["overage"] + max(high - drawn_high, 0)
    terms = period["terms"]
    return {
        "rate": rate,
        "resolutions_low": period["resolutions"] + low,
        "resolutions_high": period["resolutions"] + high,
        "overage_low": overage_low,
        "overage_high": overage_high,
        "overage_minor_low": price_quantity(quantity=overage_low, terms=terms),
        "overage_minor_high": price_quantity(quantity=overage_high, terms=terms),
    }


def credit_alerts_current(
    *,
    account: Account,
    now: dt.datetime,
    burn_per_day: float,
    runs_out: dt.datetime | None = None,
    rate: float = 0.0,
) -> list[CreditAlert]:
    """The account's active alerts, as banners. The two credit kinds are shown only while their condition
    holds on the current figures (an alert is cleared by the next funding run; until then a stale one, e.g.
    a "running low" left after the packs expired, or about packs never granted, is not shown), with the
    current figures in the message; the burn-rate one gives the dashboard's run-out date (`runs_out`, at
    `rate` a day, each pack drawn until it expires) so the page tells one date. Any other kind is shown as
    stored."""
    alerts = list(CreditAlert.objects.filter(account=account, active=True).order_by("raised_at", "pk"))
    if not alerts:
        return []
    packs = CreditPack.objects.filter(account=account, status=CreditPack.Status.ACTIVE, expires_at__gt=now)
    granted = sum(p.granted for p in packs)
    standing = CreditStanding(
        granted=granted,
        remaining=sum(p.remaining for p in packs),
        last_expiry=max((p.expires_at for p in packs), default=None),
        burn_per_day=burn_per_day,
    )
    conditions = credit_alert_conditions(
        standing=standing, threshold_percent=account.low_credit_threshold_percent, now=now
    )
    shown = []
    for alert in alerts:
        if alert.kind in conditions:
            if not conditions[alert.kind]:
                continue
            alert.message = conditions[alert.kind]
            held = [p.expires_at for p in packs if p.remaining > 0]
            if alert.kind == CreditAlert.Kind.BURN_RATE and runs_out is not None and held:
                alert.message = (
                    f"At {rate:,.0f} resolutions a day, your credits run out around {runs_out:%d %b %Y}, "
                    f"before they expire on {max(held):%d %b %Y}."
                )
        shown.append(alert)
    return shown
