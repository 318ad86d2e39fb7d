"""Seat spend into resolution credits (DESIGN §3.4): preview, then a recoverable confirm.

value = k seats x seat price x remaining term (by whole days of the current billing period), and
credits = floor(value / the plan's conversion rate). Confirm lowers the Stripe subscription's seat
quantity (no proration: the value moved into credits) and grants a `seat_conversion` pack expiring at
the end of the term.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from djstripe.models import Customer

from accounts.locks import account_lock
from accounts.models import Account, User
from accounts.services import Actor, audit_log_write
from billing_portal import clock, stripe_client
from billing_portal.money import round_minor
from billing_portal.stripe_client import StripeFailure, StripeRejected

from .models import CreditPack, SeatConversion
from .services import credit_pack_grant

logger = logging.getLogger(__name__)
RESUME_AFTER = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class ConversionPreview:
    seats: int
    seats_before: int
    seats_after: int
    seat_unit_amount: int
    remaining_days: int
    term_days: int
    term_start: dt.datetime
    term_end: dt.datetime
    value_minor: int
    credits: int
    conversion_unit_amount_decimal: Decimal
    stripe_subscription_item_id: str
    currency: str

    @property
    def expires_at(self) -> dt.datetime:
        return self.term_end


def _seat_item(account: Account):
    """The seat item of the account's subscription, read from Stripe (the source of truth)."""
    customer = Customer.objects.filter(subscriber=account).first()
    version = account.plan_version
    if customer is None or not version.stripe_seat_price_id:
        raise ValidationError({"account": "This account has no seat subscription in Stripe."})
    subscriptions = stripe_client.call(
        "list subscriptions",
        lambda c, o: c.v1.subscriptions.list(params={"customer": customer.id, "status": "active", "limit": 10}),
        idempotency_key=None,
    ).data
    for subscription in subscriptions:
        for item in subscription["items"].data:
            if item.price.id == version.stripe_seat_price_id:
                return item
    raise ValidationError({"account": "This account has no seat subscription in Stripe."})


def seat_conversion_preview(*, account: Account, seats: int) -> ConversionPreview:
    """What converting `seats` seats would do. Changes nothing."""
    if isinstance(seats, bool) or not isinstance(seats, int) or seats <= 0:
        raise ValidationError({"seats": "Convert at least one seat."})
    if account.status == Account.Status.CLOSED:
        raise ValidationError({"account": "This account is closed: its seats cannot be converted into credits."})
    item = _seat_item(account)
    if seats > item.quantity:
        raise ValidationError({"seats": f"The account has {item.quantity} seat(s); it cannot convert {seats}."})
    version = account.plan_version
    now = clock.now()
    term_start = dt.datetime.fromtimestamp(item.current_period_start, dt.UTC)
    term_end = dt.datetime.fromtimestamp(item.current_period_end, dt.UTC)
    remaining_days = (term_end - now).days
    term_days = max((term_end - term_start).days, 1)
    if remaining_days <= 0:
        raise ValidationError({"seats": "The current term has ended (or ends today): nothing is left to convert."})
    value = Decimal(seats * version.seat_unit_amount) * remaining_days / term_days
    credits = math.floor(value / version.seat_conversion_unit_amount_decimal)
    if credits < 1:
        raise ValidationError({"seats": "The seats' remaining value buys less than one credit."})
    return ConversionPreview(
        seats=seats, seats_before=item.quantity, seats_after=item.quantity - seats,
        seat_unit_amount=version.seat_unit_amount, remaining_days=remaining_days, term_days=term_days,
        term_start=term_start, term_end=term_end, value_minor=round_minor(value), credits=credits,
        conversion_unit_amount_decimal=version.seat_conversion_unit_amount_decimal,
        stripe_subscription_item_id=item.id, currency=account.currency,
    )  # fmt: skip


def seat_conversion_confirm(
    *, account: Account, seats: int, actor: Actor, idempotency_key: str | None = None
) -> SeatConversion:
    """Record the conversion, then run its steps. Only one conversion per account runs at a time. With an
    idempotency key, a repeat returns (or resumes) the account's conversion of that key, before any new
    preview (the seats it removed are gone from Stripe by then); the same key for another seat count is refused."""
    if idempotency_key is not None and not (isinstance(idempotency_key, str) and 0 < len(idempotency_key) <= 255):
        raise ValidationError({"idempotency_key": "An idempotency key is 1 to 255 characters."})
    if idempotency_key is not None:
        existing = _conversion_of_key(account=account, seats=seats, idempotency_key=idempotency_key)
        if existing is not None:
            return seat_conversion_resume(conversion=existing, actor=actor)
    preview = seat_conversion_preview(account=account, seats=seats)
    try:
        with transaction.atomic():
            locked = account_lock(account.pk)
            if locked.status == Account.Status.CLOSED:
                raise ValidationError(
                    {"account": "This account is closed: its seats cannot be converted into credits."}
                )
            conversion = None
            if idempotency_key is not None:  # a concurrent first request with this key may have won the lock
                conversion = _conversion_of_key(account=account, seats=seats, idempotency_key=idempotency_key)
            if conversion is None:
                conversion = SeatConversion.objects.create(
                    account=account, seats=seats, seats_before=preview.seats_before,
                    stripe_subscription_item_id=preview.stripe_subscription_item_id,
                    seat_unit_amount=preview.seat_unit_amount,
                    conversion_unit_amount_decimal=preview.conversion_unit_amount_decimal,
                    term_start=preview.term_start, term_end=preview.term_end, value_minor=preview.value_minor,
                    credits=preview.credits, created_by=actor if isinstance(actor, User) else None,
                    idempotency_key=idempotency_key or "",
                )  # fmt: skip
    except IntegrityError:
        raise ValidationError("Another seat conversion of this account is in progress; try again shortly.") from None
    return seat_conversion_resume(conversion=conversion, actor=actor)


def _conversion_of_key(*, account: Account, seats: int, idempotency_key: str) -> SeatConversion | None:
    conversion = SeatConversion.objects.filter(account=account, idempotency_key=idempotency_key).first()
    if conversion is not None and conversion.seats != seats:
        raise ValidationError(
            {"idempotency_key": f"This key was already used for converting {conversion.seats} seat(s); "
                                "use a new key for a new conversion."}
        )  # fmt: skip
    return conversion


def seat_conversion_resume(*, conversion: SeatConversion, actor: Actor = "system:seat_conversion") -> SeatConversion:
    """Run the steps not done yet. Step 1 sets the Stripe quantity to an absolute number with a key
    derived from the conversion, so repeating it is harmless; step 2 grants with a key derived from it."""
    conversion = SeatConversion.objects.get(pk=conversion.pk)
    if conversion.status == SeatConversion.Status.STARTED and clock.now() >= conversion.term_end:
        conversion = _seat_step_after_term(conversion)  # seats_reduced (an answer lost), else failed and raises
    if conversion.status == SeatConversion.Status.STARTED:
        try:
            stripe_client.call(
                "reduce seats",
                lambda c, o: c.v1.subscription_items.update(
                    conversion.stripe_subscription_item_id,
                    params={"quantity": conversion.seats_before - conversion.seats, "proration_behavior": "none"},
                    options=o,
                ),
                idempotency_key=f"conversion:{conversion.uid}:seats",
            )
        except StripeRejected as exc:  # refused: nothing changed anywhere, say so
            SeatConversion.objects.filter(pk=conversion.pk).update(status=SeatConversion.Status.FAILED, error=str(exc))
            raise ValidationError(f"Stripe refused the seat change: {exc}") from exc
        # StripeUnavailable propagates: the conversion stays `started` and is resumed later.
        SeatConversion.objects.filter(pk=conversion.pk).update(status=SeatConversion.Status.SEATS_REDUCED)
        conversion.status = SeatConversion.Status.SEATS_REDUCED
    if conversion.status == SeatConversion.Status.SEATS_REDUCED:
        with transaction.atomic():
            account_lock(conversion.account_id)  # accounts before anything else, as everywhere
            conversion = SeatConversion.objects.select_for_update().get(pk=conversion.pk)
            if conversion.status != SeatConversion.Status.SEATS_REDUCED:
                return conversion
            pack = credit_pack_grant(
                account=conversion.account, quantity=conversion.credits, source=CreditPack.Source.SEAT_CONVERSION,
                actor=actor, starts_at=conversion.created_at, expires_at=conversion.term_end,
                unit_amount_decimal=conversion.conversion_unit_amount_decimal,
                reason=f"{conversion.seats} seat(s) converted", idempotency_key=f"grant:conversion:{conversion.uid}",
                term_over_ok=True,  # resumed after the term ended: the seats are gone, the credits are owed
            )  # fmt: skip
            if conversion.term_end <= clock.now():
                logger.error(
                    "Seat conversion %s finished after its term ended (%s): its %s credit(s) expire unused; "
                    "review whether the customer is owed a refund", conversion.uid, conversion.term_end,
                    conversion.credits,
                )  # fmt: skip
            conversion.pack, conversion.status = pack, SeatConversion.Status.DONE
            conversion.save(update_fields=["pack", "status"])
            audit_log_write(
                actor=actor, action="seat_conversion.confirm", obj=conversion, account=conversion.account,
                before={"seats": conversion.seats_before},
                after={"seats": conversion.seats_before - conversion.seats, "credits": conversion.credits,
                       "value_minor": conversion.value_minor, "pack_id": pack.pk,
                       "expires_at": conversion.term_end},
            )  # fmt: skip
    return conversion


def _seat_step_after_term(conversion: SeatConversion) -> SeatConversion:
    """A conversion still `started` when its term has ended: making the seat change now would remove seats of
    the next term (already billed, no proration) for credits that expire unused. Stripe's quantity decides: the
    seats untouched, nothing changed and the conversion fails; lowered by exactly its seats, Stripe made the
    change and only its answer was lost, so the credits are owed (granted next). Anything else is for review."""
    item = stripe_client.call(
        "read seats",
        lambda c, o: c.v1.subscription_items.retrieve(conversion.stripe_subscription_item_id),
        idempotency_key=None,
    )
    started = SeatConversion.objects.filter(pk=conversion.pk, status=SeatConversion.Status.STARTED)
    if item.quantity == conversion.seats_before:
        error = "The term ended before Stripe took the seat change: nothing changed, no credits granted."
        started.update(status=SeatConversion.Status.FAILED, error=error)
        raise ValidationError(error)  # like a refused seat change: nothing changed anywhere, say so
    if item.quantity == conversion.seats_before - conversion.seats:
        started.update(status=SeatConversion.Status.SEATS_REDUCED)
    else:
        raise ValidationError(
            f"Seat conversion {conversion.uid}: its term ended with the seat change unconfirmed and Stripe's seat "
            f"quantity is {item.quantity} (before: {conversion.seats_before}); review it by hand."
        )
    return SeatConversion.objects.get(pk=conversion.pk)


def seat_conversions_resume_stalled(*, now: dt.datetime | None = None) -> int:
    """Finish conversions a crash or an outage left half-way (beat, billing_tick)."""
    now = now or clock.now()
    finished = 0
    stalled = SeatConversion.objects.filter(
        status__in=[SeatConversion.Status.STARTED, SeatConversion.Status.SEATS_REDUCED],
        created_at__lte=now - RESUME_AFTER,
    )
    for conversion in stalled:
        try:
            finished += seat_conversion_resume(conversion=conversion).status == SeatConversion.Status.DONE
        except (StripeFailure, ValidationError) as exc:
            logger.warning("Seat conversion %s not finished yet: %s", conversion.uid, exc)
    return finished
