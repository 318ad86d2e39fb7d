"""stripe_setup and the Stripe Prices of plan versions, over HTTP against the emulator."""

import json
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import BillingMeter, PricePlan, PricePlanVersion
from accounts.pricing import plan_version_spec_parse
from accounts.services import price_plan_version_create, price_plan_version_publish
from accounts.services.stripe_catalog import price_plan_version_stripe_sync
from billing_portal import stripe_client
from billing_portal.stripe_client import StripeUnavailable

pytestmark = pytest.mark.django_db


def stripe_list(resource, **params):
    return stripe_client.call(
        "list", lambda c, o: getattr(c.v1, resource).list(params={"limit": 100, **params}), idempotency_key=None
    ).data


def run_setup(*args):
    from io import StringIO

    out = StringIO()
    call_command("stripe_setup", "--webhook", "none", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def test_stripe_setup_creates_meter_products_and_prices_once(stripe_emulator):
    first = run_setup()
    second = run_setup()
    assert first == second
    meters = stripe_client.call("meters", lambda c, o: c.v1.billing.meters.list(), idempotency_key=None).data
    assert [(m.event_name, m.default_aggregation.formula) for m in meters] == [("fin_resolution", "sum")]
    assert meters[0].customer_mapping.event_payload_key == "stripe_customer_id"
    assert sorted(p.id for p in stripe_list("products")) == ["fin_credit_packs", "fin_resolutions", "fin_seats"]
    prices = {p.lookup_key: p for p in stripe_list("prices")}
    assert set(prices) == {
        "fin-standard-v1-resolution",
        "fin-standard-v1-seat",
        "fin-standard-v1-pack-annual-10000-resolutions",
    }
    resolution = prices["fin-standard-v1-resolution"]
    assert resolution.unit_amount_decimal == Decimal("99") and resolution.currency == "usd"
    assert resolution.recurring.usage_type == "metered" and resolution.recurring.meter == meters[0].id
    assert prices["fin-standard-v1-seat"].unit_amount == 3900
    assert prices["fin-standard-v1-seat"].recurring.usage_type == "licensed"
    assert prices["fin-standard-v1-pack-annual-10000-resolutions"].unit_amount_decimal == Decimal("90")
    version = PricePlan.objects.get(slug="fin-standard").current_version()
    assert version.stripe_price_id == resolution.id and version.stripe_sync_status == "synced"
    assert BillingMeter.objects.get().stripe_id == meters[0].id


def test_stripe_setup_finds_what_exists_when_the_local_database_is_new(stripe_emulator):
    run_setup()
    BillingMeter.objects.all().delete()
    PricePlanVersion.objects.update(stripe_price_id="", stripe_seat_price_id="", stripe_sync_status="")
    run_setup()
    assert len(stripe_list("prices")) == 3
    assert len(stripe_client.call("m", lambda c, o: c.v1.billing.meters.list(), idempotency_key=None).data) == 1


def test_stripe_setup_replaces_a_meter_that_stripe_no_longer_has(stripe_emulator):
    run_setup()
    stale = BillingMeter.objects.get().stripe_id
    stripe_emulator.reset()  # e.g. a new Stripe account behind the same database
    summary = run_setup()
    assert summary["meter"] != stale and BillingMeter.objects.get().stripe_id == summary["meter"]
    price = stripe_list("prices", lookup_keys=["fin-standard-v1-resolution"])[0]
    assert price.recurring.meter == summary["meter"]


def test_stripe_setup_reports_an_outage_in_one_line_and_can_be_rerun(stripe_emulator, settings):
    settings.STRIPE_MAX_RETRIES = 1
    stripe_emulator.add_fault(path_prefix="/v1/prices", method="POST", mode="500", count=2)
    with pytest.raises(CommandError, match="run stripe_setup again"):
        run_setup()
    version = PricePlan.objects.get(slug="fin-standard").current_version()
    assert version.stripe_sync_status == "failed" and "create price" in version.stripe_sync_error
    run_setup()
    version.refresh_from_db()
    assert version.stripe_sync_status == "synced"
    assert len(stripe_list("prices")) == 3


TIERED = {
    "currency": "usd",
    "tiers_mode": "graduated",
    "tiers": [
        {"up_to": 1000, "unit_amount_decimal": "99"},
        {"up_to": 10000, "unit_amount_decimal": "89.5", "flat_amount": 500},
        {"up_to": "inf", "unit_amount_decimal": "79"},
    ],
    "inactivity_window": "24:00:00",
    "seat_unit_amount": 3900,
    "seat_conversion_unit_amount_decimal": "90",
    "effective_from": "2027-01-01T00:00:00Z",
}


def test_publishing_a_version_creates_its_tiered_price(stripe_emulator, admin_user, default_plan,
                                                       django_capture_on_commit_callbacks, settings):  # fmt: skip
    settings.CELERY_TASK_ALWAYS_EAGER = True
    run_setup()
    draft = price_plan_version_create(plan=default_plan, spec=plan_version_spec_parse(TIERED), actor=admin_user)
    assert not [p for p in stripe_list("prices") if p.lookup_key == "fin-standard-v2-resolution"]
    with django_capture_on_commit_callbacks(execute=True):
        price_plan_version_publish(version=draft, actor=admin_user)
    draft.refresh_from_db()
    assert draft.stripe_sync_status == "synced"
    price = stripe_client.call(
        "get", lambda c, o: c.v1.prices.retrieve(draft.stripe_price_id, params={"expand": ["tiers"]}),
        idempotency_key=None,
    )  # fmt: skip
    assert price.lookup_key == "fin-standard-v2-resolution" and price.tiers_mode == "graduated"
    assert [(t.up_to, t.unit_amount_decimal, t.flat_amount) for t in price.tiers] == [
        (1000, Decimal("99"), None), (10000, Decimal("89.5"), 500), (None, Decimal("79"), None),
    ]  # fmt: skip


def test_a_draft_has_no_stripe_price(stripe_emulator, admin_user, default_plan):
    draft = price_plan_version_create(plan=default_plan, spec=plan_version_spec_parse(TIERED), actor=admin_user)
    with pytest.raises(ValueError, match="Only published versions"):
        price_plan_version_stripe_sync(version=draft)


def test_price_sync_failure_is_recorded_then_finished_by_a_retry(stripe_emulator, settings):
    settings.STRIPE_MAX_RETRIES = 0
    version = PricePlan.objects.get(slug="fin-standard").current_version()
    stripe_emulator.add_fault(path_prefix="/v1/billing/meters", method="POST", mode="429", count=1)
    with pytest.raises(StripeUnavailable):
        price_plan_version_stripe_sync(version=version)
    version.refresh_from_db()
    assert version.stripe_sync_status == "failed" and version.stripe_price_id == ""
    assert price_plan_version_stripe_sync(version=version).stripe_sync_status == "synced"


def test_a_version_linked_to_another_price_fails_visibly_and_is_retryable(stripe_emulator, admin_user):
    """The check that the version's Price is Stripe's Price for its lookup key fails the sync (failed, with the
    reason), so an admin sees it and the retry queues a sync again; it never stays pending with no error."""
    from accounts.services.stripe_catalog import price_plan_version_stripe_sync_retry
    from billing_portal.stripe_client import StripeRejected

    version = price_plan_version_stripe_sync(version=PricePlan.objects.get(slug="fin-standard").current_version())
    real = version.stripe_price_id
    other = stripe_client.call(
        "create price",
        lambda c, o: c.v1.prices.create(params={"currency": "usd", "unit_amount": 1, "product_data": {"name": "x"}}),
        idempotency_key=None,
    ).id
    PricePlanVersion.objects.filter(pk=version.pk).update(stripe_price_id=other, stripe_sync_status="pending")
    with pytest.raises(StripeRejected):
        price_plan_version_stripe_sync(version=version)
    version.refresh_from_db()
    assert version.stripe_sync_status == "failed" and "one version has one Price" in version.stripe_sync_error
    assert price_plan_version_stripe_sync_retry(version=version, actor=admin_user).stripe_sync_status == "pending"
    PricePlanVersion.objects.filter(pk=version.pk).update(stripe_price_id=real)
    assert price_plan_version_stripe_sync(version=version).stripe_sync_status == "synced"


def test_a_price_stripe_would_refuse_is_refused_by_the_parser():
    from django.core.exceptions import ValidationError

    base = {"currency": "usd", "inactivity_window": "24:00:00", "seat_unit_amount": 3900,
            "seat_conversion_unit_amount_decimal": "90", "effective_from": "2026-01-01T00:00:00Z"}  # fmt: skip
    assert plan_version_spec_parse({**base, "unit_amount_decimal": "99999999"}).unit_amount_decimal == 99999999
    for too_large in ("100000000", "999999999999.5"):
        with pytest.raises(ValidationError) as refused:
            plan_version_spec_parse({**base, "unit_amount_decimal": too_large})
        assert "at most 99,999,999 minor units" in str(refused.value.message_dict["unit_amount_decimal"])
