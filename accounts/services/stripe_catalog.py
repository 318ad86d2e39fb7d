"""What the portal sells, in Stripe: the resolutions meter, three products, and one immutable Price per
published plan version (plus its seat Price and one Price per credit-pack offer).

Everything here is find-or-create: objects are found by a stable handle (product id, meter event name,
price lookup_key) before anything is created, and every create carries an idempotency key derived from
that handle. Running it twice, or after a crash half-way, creates nothing twice.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from billing_portal import stripe_client
from billing_portal.stripe_client import StripeFailure, StripeRejected

from ..models import BillingMeter, CreditPackOffer, PricePlanVersion, StripeSyncStatus

logger = logging.getLogger(__name__)

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
                    "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
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


def _price_ensure(lookup_key: str, params: dict) -> str:
    existing = stripe_client.call(
        "find price",
        lambda c, o: c.v1.prices.list(params={"lookup_keys": [lookup_key], "limit": 1}),
        idempotency_key=None,
    )
    if existing.data:
        return existing.data[0].id
    price = stripe_client.call(
        "create price",
        lambda c, o: c.v1.prices.create(params={**params, "lookup_key": lookup_key}, options=o),
        idempotency_key=f"price:{lookup_key}",
    )
    return price.id


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
    except StripeFailure as exc:
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
