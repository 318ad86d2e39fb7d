"""What the portal sells, in Stripe: the resolutions meter, three products, and one immutable Price per
published plan version (plus its seat Price and one Price per credit-pack offer).

Everything here is find-or-create: objects are found by a stable handle (product id, meter event name,
price lookup_key) before anything is created, and every create carries an idempotency key derived from
that handle. Running it twice, or after a crash half-way, creates nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from billing_portal import stripe_client
from billing_portal.stripe_client import StripeFailure, StripeRejected

from ..models import BillingMeter, CreditPackOffer, PricePlanVersion, StripeSyncStatus
from .audit import Actor, audit_log_write
from .plans import _queue_stripe_sync

logger = logging.getLogger(__name__)
METER_CUSTOMER_KEY = "stripe_customer_id"  # the meter finds the customer under this payload key
METER_VALUE_KEY = "value"  # and sums this one (Stripe's defaults)

PRODUCTS = {
    "resolutions": ("fin_resolutions", "Resolved conversations", "Each conversation the AI agent resolves."),
    "seats": ("fin_seats", "Helpdesk seats", "Per-seat helpdesk subscription, per month."),
    "credit_packs": ("fin_credit_packs", "Annual resolution credits", "Prepaid resolutions, valid for a year."),
}


def _decimal_param(value: Decimal) -> str:
    """Stripe's *_decimal parameters: plain notation, at most 12 decimal places, no exponent."""
    text = format(value.normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".")


def stripe_product_ensure(*, key: str) -> str:
    product_id, name, description = PRODUCTS[key]
    try:
        stripe_client.call("retrieve product", lambda c, o: c.v1.products.retrieve(product_id), idempotency_key=None)
    except StripeRejected as exc:
        if exc.http_status != 404:
            raise
        stripe_client.call(
            "create product",
            lambda c, o: c.v1.products.create(
                params={"id": product_id, "name": name, "description": description, "metadata": {"portal": key}},
                options=o,
            ),
            idempotency_key=f"product:{product_id}",
        )
    return product_id


def billing_meter_ensure() -> BillingMeter:
    """The meter for the configured event name: local row, else found in Stripe, else created."""
    event_name = settings.STRIPE_METER_EVENT_NAME
    meter = BillingMeter.objects.filter(event_name=event_name).first()
    if meter is not None:
        try:  # still there? (a new Stripe account or a reset emulator has none)
            stripe_client.call(
                "retrieve meter", lambda c, o: c.v1.billing.meters.retrieve(meter.stripe_id), idempotency_key=None
            )
            return meter
        except StripeRejected as exc:
            if exc.http_status != 404:
                raise
            meter.delete()
    found = None
    meters = stripe_client.call(
        "list meters", lambda c, o: c.v1.billing.meters.list(params={"limit": 100}), idempotency_key=None
    )
    for candidate in meters.auto_paging_iter():
        if candidate.event_name == event_name:
            found = candidate
            break
    if found is None:
        found = stripe_client.call(
            "create meter",
            lambda c, o: c.v1.billing.meters.create(
                params={
                    "display_name": "Resolved conversations",
                    "event_name": event_name,
                    "default_aggregation": {"formula": "sum"},
                    "customer_mapping": {"type": "by_id", "event_payload_key": METER_CUSTOMER_KEY},
                    "value_settings": {"event_payload_key": "value"},
                },
                options=o,
            ),
            idempotency_key=f"meter:{event_name}",
        )
    meter, _ = BillingMeter.objects.update_or_create(
        event_name=event_name,
        defaults={"stripe_id": found.id, "display_name": found.display_name, "status": found.status},
    )
    return meter


def _tier_param(tier) -> dict:
    """A Stripe tier object written back as the tier parameters that would create it."""
    row: dict = {"up_to": tier.up_to if tier.up_to is not None else "inf"}
    if tier.unit_amount_decimal is not None:
        row["unit_amount_decimal"] = _decimal_param(Decimal(str(tier.unit_amount_decimal)))
    if tier.flat_amount is not None:
        row["flat_amount"] = tier.flat_amount
    return row


def _price_matches(price, params: dict) -> bool:
    """Is this existing Stripe Price the one `params` describe? (lookup keys come from plan slugs, which a
    new database or a renamed plan could reuse for other terms.)"""
    if price.currency != params["currency"] or price.product != params["product"]:
        return False
    recurring = params.get("recurring")
    if bool(price.recurring) != bool(recurring):
        return False
    if recurring and (
        price.recurring.interval != recurring["interval"]
        or price.recurring.usage_type != recurring["usage_type"]
        or (price.recurring.get("meter") or None) != recurring.get("meter")
    ):
        return False
    if "tiers" in params:
        found = [_tier_param(t) for t in (price.get("tiers") or [])]
        return price.tiers_mode == params["tiers_mode"] and found == params["tiers"]
    if "unit_amount" in params:
        return price.unit_amount == params["unit_amount"]
    return _decimal_param(Decimal(str(price.unit_amount_decimal))) == params["unit_amount_decimal"]


def _price_ensure(lookup_key: str, params: dict) -> str:
    existing = stripe_client.call(
        "find price",
        lambda c, o: c.v1.prices.list(params={"lookup_keys": [lookup_key], "limit": 1, "expand": ["data.tiers"]}),
        idempotency_key=None,
    )
    if existing.data:
        price = existing.data[0]
        if not _price_matches(price, params):
            raise StripeRejected(
                "verify price",
                f"Stripe already has Price {price.id} with lookup_key '{lookup_key}' but other terms. Stripe Prices "
                "are immutable: archive it in Stripe (or use a new plan slug), then run stripe_setup again.",
                retryable=False,
            )
        return price.id
    price = stripe_client.call(
        "create price",
        lambda c, o: c.v1.prices.create(params={**params, "lookup_key": lookup_key}, options=o),
        idempotency_key=f"price:{lookup_key}:{_params_digest(params)}",
    )
    return price.id


def _price_exists(price_id: str) -> bool:
    try:
        stripe_client.call("retrieve price", lambda c, o: c.v1.prices.retrieve(price_id), idempotency_key=None)
    except StripeRejected as exc:
        if exc.http_status == 404:
            return False  # a new Stripe account (or a reset emulator): relinking is right
        raise
    return True


def _params_digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _resolution_price_params(version: PricePlanVersion, meter: BillingMeter, product_id: str) -> dict:
    params = {
        "currency": version.currency,
        "product": product_id,
        "nickname": f"{version.plan.slug} v{version.number} per resolution",
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.stripe_id},
        "metadata": {"plan": version.plan.slug, "plan_version": str(version.number)},
    }
    if not version.tiers_mode:
        return {**params, "unit_amount_decimal": _decimal_param(version.unit_amount_decimal)}
    tiers = []
    for tier in version.tiers.all():
        row: dict = {"up_to": tier.up_to if tier.up_to is not None else "inf"}
        if tier.unit_amount_decimal is not None:
            row["unit_amount_decimal"] = _decimal_param(tier.unit_amount_decimal)
        if tier.flat_amount is not None:
            row["flat_amount"] = tier.flat_amount
        tiers.append(row)
    return {**params, "billing_scheme": "tiered", "tiers_mode": version.tiers_mode, "tiers": tiers}


def price_plan_version_stripe_sync(*, version: PricePlanVersion) -> PricePlanVersion:
    """Create (or find) the Stripe Prices of a published version and record their ids. A failure is
    recorded on the version as `failed` and raised; calling again finishes the job."""
    version = PricePlanVersion.objects.select_related("plan").get(pk=version.pk)
    if version.status == PricePlanVersion.Status.DRAFT:
        raise ValueError("Only published versions have Stripe Prices (a draft can still change).")
    try:
        meter = billing_meter_ensure()
        resolution_price = _price_ensure(
            version.lookup_key, _resolution_price_params(version, meter, stripe_product_ensure(key="resolutions"))
        )
        seat_product = stripe_product_ensure(key="seats")
        seat_price = _price_ensure(
            version.seat_lookup_key,
            {
                "currency": version.currency, "product": seat_product, "unit_amount": version.seat_unit_amount,
                "nickname": f"{version.plan.slug} v{version.number} per seat",
                "recurring": {"interval": "month", "usage_type": "licensed"},
            },
        )  # fmt: skip
        pack_product = stripe_product_ensure(key="credit_packs")
        offer_prices = {
            offer.pk: _price_ensure(
                offer.lookup_key,
                {
                    "currency": version.currency,
                    "product": pack_product,
                    "nickname": offer.name,
                    "unit_amount_decimal": _decimal_param(offer.unit_amount_decimal),
                },
            )  # fmt: skip
            for offer in version.offers.all()
        }
        if (
            version.stripe_price_id
            and version.stripe_price_id != resolution_price
            and _price_exists(version.stripe_price_id)
        ):
            raise StripeRejected(
                "verify price",
                f"{version} is linked to Price {version.stripe_price_id}, but Stripe's Price for "
                f"'{version.lookup_key}' is {resolution_price}: one version has one Price. Check the plan's slug "
                "and the Stripe account.",
                retryable=False,
            )
    except StripeFailure as exc:
        # Failed, visibly and retryably: an admin sees the error and retries.
        PricePlanVersion.objects.filter(pk=version.pk).update(
            stripe_sync_status=StripeSyncStatus.FAILED, stripe_sync_error=str(exc)[:2000]
        )
        raise
    with transaction.atomic():
        # Bookkeeping only: the version's terms are untouched, so a published version stays immutable.
        PricePlanVersion.objects.filter(pk=version.pk).update(
            stripe_price_id=resolution_price, stripe_seat_price_id=seat_price,
            stripe_sync_status=StripeSyncStatus.SYNCED, stripe_sync_error="",
        )  # fmt: skip
        for offer_pk, price_id in offer_prices.items():
            CreditPackOffer.objects.filter(pk=offer_pk).update(stripe_price_id=price_id)
    version.refresh_from_db()
    return version


def stripe_catalog_setup() -> dict:
    """The meter, the products, and the Prices of every published version. Idempotent."""
    meter = billing_meter_ensure()
    products = [stripe_product_ensure(key=key) for key in PRODUCTS]
    versions = []
    for version in PricePlanVersion.objects.exclude(status=PricePlanVersion.Status.DRAFT).select_related("plan"):
        synced = price_plan_version_stripe_sync(version=version)
        versions.append(
            {"version": str(synced), "price": synced.stripe_price_id, "seat_price": synced.stripe_seat_price_id}
        )
    return {"meter": meter.stripe_id, "products": products, "versions": versions}


def price_plan_version_stripe_sync_retry(*, version: PricePlanVersion, actor: Actor) -> PricePlanVersion:
    """An admin's "retry" of a version whose Stripe sync failed: back to pending, audited, and the sync task
    queued once that commits (the sync is find-or-create, so a retry never makes a second Price). A version
    already pending is left as it is (a double click queues one sync); a draft, or a sync that has not
    failed, is refused with a ValidationError."""
    with transaction.atomic():
        locked = PricePlanVersion.objects.select_for_update().select_related("plan").get(pk=version.pk)
        if locked.status == PricePlanVersion.Status.DRAFT:
            raise ValidationError(f"{locked.plan.slug} v{locked.number} is a draft: it has no Stripe Prices to sync.")
        if locked.stripe_sync_status == StripeSyncStatus.PENDING:
            return locked
        if locked.stripe_sync_status != StripeSyncStatus.FAILED:
            state = (locked.get_stripe_sync_status_display() or "not started").lower()
            raise ValidationError(
                f"The Stripe sync of {locked.plan.slug} v{locked.number} has not failed ({state}): nothing to retry."
            )
        before = {"stripe_sync_status": locked.stripe_sync_status, "stripe_sync_error": locked.stripe_sync_error}
        locked.stripe_sync_status = StripeSyncStatus.PENDING
        locked.save(update_fields=["stripe_sync_status"])
        audit_log_write(
            actor=actor, action="price_plan_version.stripe_sync_retry", obj=locked, before=before,
            after={"stripe_sync_status": locked.stripe_sync_status},
        )  # fmt: skip
        transaction.on_commit(lambda: _queue_stripe_sync(locked.pk))
    return locked
