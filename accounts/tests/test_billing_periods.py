"""Billing periods are Stripe's: recorded at provisioning, on subscription webhooks and by the cycle's sync;
funding prices overage per Stripe period (not per month from Account.created_at)."""

from __future__ import annotations

import datetime as dt
import json
import time
from io import StringIO

import pytest
import stripe
from django.core.management import call_command

from accounts.models import AuditLogEntry, BillingPeriod
from accounts.pricing import plan_version_spec_parse
from accounts.services import price_plan_version_create, price_plan_version_publish
from accounts.services.billing_periods import billing_periods_sync
from accounts.services.provisioning import account_provision
from billing_portal import clock, stripe_client
from billing_portal.periods import EARLIEST, LATEST, PeriodCalendar, RecordedPeriod
from resolutions.models import Resolution
from resolutions.services import resolutions_fund
from resolutions.tests.conftest import NOW, event, key_client, now, post_events  # noqa: F401 - fixtures
from tests.test_stripe_webhooks import stripe_events

UTC = dt.UTC
pytestmark = pytest.mark.django_db


def at(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# --- which period holds an instant ---------------------------------------------------------------------
def test_the_calendar_follows_the_records_and_projects_with_stripes_anchor_arithmetic():
    anchor = at(2026, 1, 31, 9)
    calendar = PeriodCalendar([
        RecordedPeriod(at(2026, 1, 31, 9), at(2026, 2, 28, 9), anchor),
        RecordedPeriod(at(2026, 2, 28, 9), at(2026, 3, 31, 9), anchor),
    ])  # fmt: skip
    assert calendar.containing(at(2026, 3, 5)) == (at(2026, 2, 28, 9), at(2026, 3, 31, 9))
    # Before the first start: the first period, whose start reaches back (so it counts what came before).
    assert calendar.containing(at(2026, 1, 2)) == (EARLIEST, at(2026, 2, 28, 9))
    assert calendar.containing(at(2026, 2, 1)) == (EARLIEST, at(2026, 2, 28, 9))
    assert calendar.current(at(2026, 1, 2)) == (at(2026, 1, 31, 9), at(2026, 2, 28, 9))
    # Past the last record (renewal not seen yet): Stripe's arithmetic from the anchor, clamped to month end.
    assert calendar.containing(at(2026, 4, 10)) == (at(2026, 3, 31, 9), at(2026, 4, 30, 9))
    assert calendar.containing(at(2026, 5, 1)) == (at(2026, 4, 30, 9), at(2026, 5, 31, 9))
    assert PeriodCalendar([]).containing(at(2026, 5, 1)) == (EARLIEST, LATEST)


def test_a_gap_between_records_is_projected_without_overlapping_them():
    anchor = at(2026, 1, 10)
    calendar = PeriodCalendar([
        RecordedPeriod(at(2026, 1, 10), at(2026, 2, 10), anchor),
        RecordedPeriod(at(2026, 3, 20), at(2026, 4, 20), at(2026, 3, 20)),  # a changed anchor
    ])  # fmt: skip
    assert calendar.containing(at(2026, 2, 15)) == (at(2026, 2, 10), at(2026, 3, 10))
    assert calendar.containing(at(2026, 3, 15)) == (at(2026, 3, 10), at(2026, 3, 20))


def deliver(client, endpoint, event):
    payload = json.dumps(event, default=str)  # Stripe sends decimals as strings
    signed_at = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{signed_at}.{payload}", endpoint.secret)
    return client.post(
        f"/stripe/webhook/{endpoint.djstripe_uuid}/", data=payload, content_type="application/json",
        HTTP_STRIPE_SIGNATURE=f"t={signed_at},v1={signature}",
    )  # fmt: skip


# --- recorded from Stripe --------------------------------------------------------------------------------
def provision(stripe_emulator, instant=NOW, name="Periodic Ltd"):
    stripe_emulator.set_time(int(instant.timestamp()))
    with clock.frozen(instant):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
        return account_provision(name=name, plan=default_plan(), seats=2, actor="test")


def default_plan():
    from accounts.models import PricePlan

    return PricePlan.objects.get(slug="fin-standard")


def emulator_item_period(subscription_id):
    subscription = stripe_client.call(
        "s", lambda c, o: c.v1.subscriptions.retrieve(subscription_id), idempotency_key=None
    ).to_dict()
    metered = next(i for i in subscription["items"]["data"] if i["price"]["recurring"]["usage_type"] == "metered")
    return (
        dt.datetime.fromtimestamp(metered["current_period_start"], UTC),
        dt.datetime.fromtimestamp(metered["current_period_end"], UTC),
    )


def test_provisioning_records_the_subscriptions_first_period(stripe_emulator):
    provisioned = provision(stripe_emulator)
    period = BillingPeriod.objects.get(account=provisioned.account)
    assert (period.start, period.end) == emulator_item_period(provisioned.stripe_subscription_id)
    assert (period.start, period.end) == (NOW, at(2026, 12, 2, 12))
    assert period.stripe_subscription_id == provisioned.stripe_subscription_id
    assert AuditLogEntry.objects.filter(action="billing_period.record", account=provisioned.account).count() == 1


def test_the_cycles_sync_records_a_renewal_once_and_leaves_current_periods_alone(stripe_emulator):
    provisioned = provision(stripe_emulator)
    assert billing_periods_sync(now=NOW + dt.timedelta(days=3)).checked == 0  # current period: nothing to ask
    later = at(2026, 12, 3, 12)
    stripe_emulator.set_time(int(later.timestamp()))  # Stripe renews at the period end
    result = billing_periods_sync(now=later)
    assert (result.checked, result.renewed) == (1, 1)
    periods = list(BillingPeriod.objects.filter(account=provisioned.account).values_list("start", "end"))
    assert periods == [(NOW, at(2026, 12, 2, 12)), emulator_item_period(provisioned.stripe_subscription_id)]
    assert periods[1] == (at(2026, 12, 2, 12), at(2027, 1, 2, 12))
    assert billing_periods_sync(now=later).checked == 0


def test_a_subscription_webhook_records_the_renewed_period(stripe_emulator, client):
    from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure

    provisioned = provision(stripe_emulator)
    endpoint = stripe_webhook_endpoint_ensure(base_url="http://testserver")
    stripe_emulator.set_time(int(at(2026, 12, 2, 13).timestamp()))
    renewal = next(e for e in stripe_events("customer.subscription.updated") if "current_period_end" in str(e))
    assert deliver(client, endpoint, renewal).status_code == 200
    assert deliver(client, endpoint, renewal).status_code == 200  # a repeat changes nothing
    periods = list(BillingPeriod.objects.filter(account=provisioned.account).values_list("start", "end"))
    assert periods[-1] == (at(2026, 12, 2, 12), at(2027, 1, 2, 12)) and len(periods) == 2


# --- funding prices overage per Stripe period -----------------------------------------------------------
@pytest.fixture
def two_free_then_a_dollar(account, admin_user):
    version = price_plan_version_create(
        plan=account.plan_version.plan, actor=admin_user,
        spec=plan_version_spec_parse({
            "currency": "usd", "tiers_mode": "graduated", "inactivity_window": "24:00:00", "seat_unit_amount": 3900,
            "seat_conversion_unit_amount_decimal": "90", "effective_from": "2026-01-01T00:00:00Z",
            "tiers": [{"up_to": 2, "unit_amount_decimal": "0"}, {"up_to": "inf", "unit_amount_decimal": "100"}]}),
    )  # fmt: skip
    price_plan_version_publish(version=version, actor=admin_user)
    account.plan_version = version
    account.created_at = NOW - dt.timedelta(days=10)  # a created_at month would hold every resolution below
    account.save()
    return version


def resolve_at(post, name, days_ago, n=2):
    for i in range(n):
        minutes = days_ago * 24 * 60 + 30
        post(event(f"{name}{i}a", f"{name}{i}", "ai_answer", minutes + i),
             event(f"{name}{i}b", f"{name}{i}", "customer_confirmed", minutes - 10 + i))  # fmt: skip


def total_overage_money():
    return sum(Resolution.objects.values_list("amount_minor", flat=True))


def test_overage_tiers_restart_at_the_stripe_period_boundary(post_events, account, two_free_then_a_dollar, now):  # noqa: F811
    BillingPeriod.objects.create(
        account=account, start=at(2026, 10, 1, 12), end=at(2026, 11, 1, 12), stripe_subscription_id="sub_x",
        billing_cycle_anchor=at(2026, 9, 1, 12),
    )  # fmt: skip
    resolve_at(post_events, "oct", days_ago=2)  # 31 October: the period that ended on 1 November
    resolve_at(post_events, "nov", days_ago=0)  # 2 November: the renewal Stripe makes from the anchor
    resolutions_fund(now=NOW)
    assert Resolution.objects.filter(funding="overage").count() == 4
    assert total_overage_money() == 0  # two free in each Stripe period


def test_resolutions_before_the_first_period_belong_to_it(post_events, account, two_free_then_a_dollar, now):  # noqa: F811
    account.created_at = dt.datetime(2026, 11, 1, 12, tzinfo=UTC)  # a created_at month would split them
    account.save()
    BillingPeriod.objects.create(
        account=account, start=at(2026, 11, 1, 12), end=at(2026, 12, 1, 12), stripe_subscription_id="sub_x",
        billing_cycle_anchor=at(2026, 11, 1, 12),
    )  # fmt: skip
    resolve_at(post_events, "early", days_ago=3)  # before the subscription started
    resolutions_fund(now=NOW)
    resolve_at(post_events, "late", days_ago=0)
    resolutions_fund(now=NOW)
    assert total_overage_money() == 200  # one period: two free, then two at $1


def test_the_dashboard_shows_the_stripe_period_and_its_overage(client, billing_admin, post_events, account, now):  # noqa: F811
    BillingPeriod.objects.create(
        account=account, start=at(2026, 10, 20, 9), end=at(2026, 11, 20, 9), stripe_subscription_id="sub_x",
        billing_cycle_anchor=at(2026, 10, 20, 9),
    )  # fmt: skip
    resolve_at(post_events, "a", days_ago=0, n=3)
    resolutions_fund(now=NOW)
    client.force_login(billing_admin)
    page = client.get("/portal/").content.decode()
    assert "20 Oct 2026, 09:00 to 20 Nov 2026, 09:00" in page  # UTC account
    assert '<dd id="period-overage-minor">$2.97</dd>' in page  # three overage resolutions at $0.99
