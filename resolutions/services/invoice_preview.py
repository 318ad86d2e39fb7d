"""The invoice preview (DESIGN §3.5, §4): an account's next invoice as the portal computes it, beside
Stripe's `create_preview` of the same subscription. A read: it changes nothing, here or in Stripe.

The next invoice of a subscription bills its seats in advance, for the next period, and its metered
overage in arrears, for the current one. The portal's side:

- seats: the seat item's quantity (Stripe's subscription is the source of truth for seats: seat
  conversions lower it there) × the seat price of the plan version that item bills;
- overage: the non-voided overage resolutions of the current billing period (Stripe's period, as
  `billing_period_calendar` has it; the first period includes what came before it), priced by tier with
  the period's plan version exactly as Stripe prices a metered Price (`rating.price_lines`);
- credits used: the period's credit-funded resolutions (prepaid: never on the invoice).

Stripe's total counts only the overage already reported to its meter (reports go out once a reporting
window has closed, and Stripe's own summaries lag behind ingestion in production), so the two are
compared after reporting; the answer says how much of the period's overage the meter has yet to get.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db.models import Sum
from django.http import Http404

from accounts.models import Account, BillingPeriod
from accounts.services.billing_periods import billing_period_calendar
from billing_portal import stripe_client
from billing_portal.periods import PeriodCalendar

from ..dashboard import period_plan_version, period_usage_sum, seat_item_of
from ..models import MeterReport
from ..rating import GRADUATED, PER_UNIT, PriceTerms, price_lines
from ..selectors import meter_reporting_status


def _iso(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _decimal_text(value: Decimal | None) -> str | None:
    """A unit price as Stripe writes `unit_amount_decimal`: no exponent, no trailing zeros."""
    if value is None:
        return None
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def invoice_preview_get(*, account: Account, now: dt.datetime) -> dict:
    """The account's next invoice, the portal's computation beside Stripe's (see the module docstring).
    `portal`, `stripe` and `agrees` are DESIGN §4's; the rest explains them. Raises Http404 when the
    account has no Stripe subscription, StripeFailure when Stripe cannot answer. No transaction is open
    during the Stripe calls (the reads before them are plain queries)."""
    calendar = billing_period_calendar(account_id=account.pk)
    shown = calendar.current(now)
    subscription_id = _subscription_id(account, now)
    if shown is None or not subscription_id:
        raise Http404("This account has no Stripe subscription, so it has no upcoming invoice.")
    period_start, period_end = shown
    overage = _overage(account, calendar, now, period_start)

    subscription = stripe_client.to_dict(
        stripe_client.call(
            "retrieve subscription", lambda c, o: c.v1.subscriptions.retrieve(subscription_id), idempotency_key=None
        )
    )
    seats = _seats(account, subscription, calendar, period_end)
    preview = stripe_client.to_dict(
        stripe_client.call(
            "preview invoice",
            lambda c, o: c.v1.invoices.create_preview(params={"subscription": subscription_id}),
            # A POST that creates nothing: no key of ours. Stripe replays its first answer to a key for 24 hours,
            # and a preview must show the subscription as it is now (stripe-python gives each request a new key).
            idempotency_key=None,
        )
    )

    portal_total = seats["amount_minor"] + overage["amount_minor"]
    stripe_total = int(preview["total"])
    return {
        "account_id": account.pk,
        "currency": account.currency,
        "period_start": _iso(period_start),
        "period_end": _iso(period_end),
        "portal": {
            "seats_minor": seats["amount_minor"],
            "overage_resolutions": overage["resolutions"],
            "overage_minor": overage["amount_minor"],
            "total_minor": portal_total,
        },
        "stripe": {"total_minor": stripe_total},
        "agrees": portal_total == stripe_total,
        "difference_minor": stripe_total - portal_total,
        "note": _note(overage),
        "breakdown": {
            "seats": seats,
            "overage_tiers": overage["tiers"],
            "credited_resolutions": overage["credited"],
            "unfunded_resolutions": overage["unfunded"],
            "meter": overage["meter"],
            "stripe_subscription_id": subscription_id,
            "stripe_lines": [_stripe_line(line) for line in (preview.get("lines") or {}).get("data") or []],
        },
    }


def _subscription_id(account: Account, now: dt.datetime) -> str:
    """The Stripe subscription of the account's current period: that of the latest period recorded by
    `now` (or the first one, for an instant before it)."""
    periods = BillingPeriod.objects.filter(account_id=account.pk).exclude(stripe_subscription_id="")
    row = periods.filter(start__lte=now).order_by("-start").first() or periods.order_by("start").first()
    return row.stripe_subscription_id if row is not None else ""


def _overage(account: Account, calendar: PeriodCalendar, now: dt.datetime, period_start: dt.datetime) -> dict:
    """The current period's overage by tier, its credited and not yet funded resolutions, and how much of
    its overage Stripe's meter holds by the portal's report rows."""
    starts, ends = calendar.containing(now)  # the first period reaches back to what came before it
    # Exact counts from the daily rollups and the period's two ragged edges, not a scan of the period.
    counts = period_usage_sum(account=account, starts=starts, ends=ends)
    counts["unfunded"] = counts["resolutions"] - counts["credited"] - counts["overage"]
    terms = PriceTerms.from_version(period_plan_version(account=account, starts=starts, ends=ends))
    tiers = _tier_lines(counts["overage"], terms)
    confirmed = (
        MeterReport.objects.filter(
            account_id=account.pk, window__period_start=period_start, state=MeterReport.State.CONFIRMED
        ).aggregate(n=Sum("quantity"))["n"]
        or 0
    )
    status = meter_reporting_status(account=account, now=now)
    return {
        "resolutions": counts["overage"],
        "amount_minor": sum(line["amount_minor"] for line in tiers),
        "tiers": tiers,
        "credited": counts["credited"],
        "unfunded": counts["unfunded"],
        "meter": {
            "reported_resolutions": confirmed,
            "awaiting_report": counts["overage"] - confirmed,
            "reported_through": _iso(status["through"]),
            "window_minutes": status["window_minutes"],
        },
    }


def _tier_lines(quantity: int, terms: PriceTerms) -> list[dict]:
    """`rating.price_lines` with the bounds of the tier each line prices (units first_unit..last_unit of
    the period; last_unit None is infinity): one line per tier reached (graduated), else one line."""
    lines = price_lines(quantity=quantity, terms=terms)
    if terms.tiers_mode == PER_UNIT:
        bounds = [(None, 1, None)]
    else:
        all_bounds = []
        lower = 0
        for position, tier in enumerate(terms.tiers, start=1):
            all_bounds.append((position, lower + 1, tier.up_to))
            lower = tier.up_to or lower
        if terms.tiers_mode == GRADUATED:
            bounds = all_bounds[: len(lines)]
        else:  # volume: the tier that holds the whole quantity prices every unit
            held = next(i for i, t in enumerate(terms.tiers) if t.up_to is None or quantity <= t.up_to)
            bounds = [all_bounds[held]]
    return [
        {
            "tier": tier, "first_unit": first, "last_unit": last, "quantity": line.quantity,
            "unit_amount_decimal": _decimal_text(line.unit_amount_decimal), "flat_amount": line.flat_amount,
            "amount_minor": line.amount,
        }
        for (tier, first, last), line in zip(bounds, lines, strict=True)
    ]  # fmt: skip


def _seats(account: Account, subscription: dict, calendar: PeriodCalendar, period_end: dt.datetime) -> dict:
    """The seat item (the subscription's licensed item) for the next period, at the portal's seat price of
    the plan version whose seat Price it bills. Nothing when the subscription does not renew."""
    seat = seat_item_of(subscription=subscription, account=account)
    quantity, version, renews = seat.quantity, seat.version, seat.renews
    next_start, next_end = calendar.containing(period_end)
    return {
        "quantity": quantity if renews else 0,
        "unit_amount": version.seat_unit_amount,
        "amount_minor": quantity * version.seat_unit_amount if renews else 0,
        "period_start": _iso(next_start),
        "period_end": _iso(next_end),
    }


def _stripe_line(line: dict) -> dict:
    period = line.get("period") or {}
    return {
        "description": line.get("description"),
        "quantity": line.get("quantity"),
        "amount_minor": line.get("amount"),
        "period_start": _iso(dt.datetime.fromtimestamp(period["start"], dt.UTC)) if period.get("start") else None,
        "period_end": _iso(dt.datetime.fromtimestamp(period["end"], dt.UTC)) if period.get("end") else None,
    }


def _note(overage: dict) -> str:
    meter = overage["meter"]
    awaiting = meter["awaiting_report"]
    if awaiting > 0:
        state = f"{awaiting:,} overage resolution(s) of this period are not in Stripe's meter yet."
    elif awaiting < 0:
        state = f"a correction taking back {-awaiting:,} voided overage resolution(s) is not in Stripe's meter yet."
    else:
        state = "by the portal's report rows, every overage resolution of this period is in Stripe's meter."
    unfunded = overage["unfunded"]
    if unfunded:
        state += f" {unfunded:,} resolution(s) not drawn down yet (credit or overage) are in neither total."
    return (
        "Stripe's total counts only the overage already reported to its meter; the portal's counts every overage "
        f"resolution funded so far. Reports go out once each {meter['window_minutes']}-minute reporting window "
        "has closed, and Stripe's own figures lag behind ingestion in production, so compare after reporting: "
        f"{state}"
    )
