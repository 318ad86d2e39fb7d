"""Reads for the staff account page: usage of this period and recent days, packs, the seat subscription,
meter reporting, and the resolutions of one conversation (to void one). Each is one or two queries; none
calls Stripe (the invoice preview does, and the page loads it separately)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from django.db.models import IntegerField, QuerySet
from django.db.models.fields.json import KT, KeyTextTransform
from django.db.models.functions import Cast
from djstripe.models import SubscriptionItem

from accounts.models import Account
from credits.models import CreditAlert, CreditPack, SeatConversion
from credits.selectors import credit_balance, credit_pack_list

from .dashboard import BILLED_SUBSCRIPTION_STATES
from .models import MeterReport, Resolution
from .selectors import billing_period_overage_get, meter_reporting_status, usage_get

RECENT_DAYS = 14
HELD_ROWS_SHOWN = 20


@dataclass(frozen=True)
class SeatSubscription:
    """The account's seat item as Stripe has it: dj-stripe's mirror, unless the mirror still shows the quantity
    the latest seat conversion started from (its `customer.subscription.updated` webhook has not arrived):
    then the quantity the conversion set in Stripe."""

    quantity: int
    unit_amount: int
    subscription_id: str
    status: str
    mirrored_at: dt.datetime
    converted_since_mirror: SeatConversion | None = None

    @property
    def amount_minor(self) -> int:
        return self.quantity * self.unit_amount


def seat_subscription_get(*, account: Account) -> SeatSubscription | None:
    """The billed seat item of the account's Stripe subscription (None without one)."""
    version = account.plan_version
    if not version.stripe_seat_price_id:
        return None
    items = (
        SubscriptionItem.objects.filter(
            subscription__customer__subscriber_id=account.pk, price__id=version.stripe_seat_price_id
        )
        .annotate(
            quantity_n=Cast(KT("stripe_data__quantity"), IntegerField()),
            state=KeyTextTransform("status", "subscription__stripe_data"),
        )
        .select_related("subscription")
        .order_by("-djstripe_updated")
    )
    item = next((i for i in items if i.state in BILLED_SUBSCRIPTION_STATES), None)
    if item is None:
        return None
    quantity = item.quantity_n or 0
    conversion = (
        SeatConversion.objects.filter(
            account=account, status=SeatConversion.Status.DONE, stripe_subscription_item_id=item.id
        )
        .order_by("-created_at", "-pk")
        .first()
    )
    # The mirror still shows the quantity the latest conversion started from: Stripe has the lowered one.
    if conversion is not None and conversion.seats_before == quantity:
        quantity = conversion.seats_before - conversion.seats
    else:
        conversion = None
    return SeatSubscription(
        quantity=quantity, unit_amount=version.seat_unit_amount, subscription_id=item.subscription_id,
        status=item.state, mirrored_at=item.djstripe_updated, converted_since_mirror=conversion,
    )  # fmt: skip


def staff_account_figures_get(*, account: Account, now: dt.datetime) -> dict:
    """Everything the account page shows besides history and the invoice preview, as of `now`."""
    today = now.astimezone(zoneinfo.ZoneInfo(account.timezone)).date()
    recent = usage_get(account=account, date_from=today - dt.timedelta(days=RECENT_DAYS - 1), date_to=today)
    for day in recent["days"]:
        day["date_obj"] = dt.date.fromisoformat(day["date"])
    recent["days"].reverse()  # newest first
    seats = seat_subscription_get(account=account)
    period = billing_period_overage_get(account=account, now=now)
    open_rows = MeterReport.objects.filter(account_id=account.pk).exclude(state=MeterReport.State.CONFIRMED)
    held = open_rows.filter(state__in=[MeterReport.State.REJECTED, MeterReport.State.ADJUSTMENT]) | open_rows.exclude(
        last_error=""
    )
    return {
        "now": now,
        "period": period,
        "spend_minor": (period["amount_minor"] if period else 0) + (seats.amount_minor if seats else 0),
        "recent": recent,
        "recent_days": RECENT_DAYS,
        "seats": seats,
        "packs": list(credit_pack_list(account=account)),
        "credits_remaining": credit_balance(account=account),
        "alerts": list(CreditAlert.objects.filter(account=account, active=True)),
        "metering": meter_reporting_status(account=account, now=now),
        "held_reports": list(held.select_related("window").order_by("-created_at", "-pk")[:HELD_ROWS_SHOWN]),
    }


def conversation_resolutions_list(*, account: Account, conversation_id: str) -> QuerySet[Resolution]:
    """The resolutions of one conversation of this account (never another's), newest first: at most one is
    not voided."""
    return Resolution.objects.filter(account=account, conversation_id=conversation_id.strip()).order_by(
        "-resolved_at", "-pk"
    )


def pack_awaiting_payment_list(*, account: Account) -> QuerySet[CreditPack]:
    return CreditPack.objects.filter(account=account, status=CreditPack.Status.PENDING).order_by("-created_at")
