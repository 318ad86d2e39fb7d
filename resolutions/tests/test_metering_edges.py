"""Meter reporting at the edges a review found: a send that never reached Stripe before the invoice, a lost
answer followed by a day of 500s, and adjustment money on graduated tiers."""

import datetime as dt

import pytest

from billing_portal import clock
from resolutions.models import MeterReport, MeterWindow
from resolutions.services.metering import meter_report_account
from resolutions.tests.test_metering import (
    HOUR,
    MINUTE,
    START,
    State,
    world,  # noqa: F401 - the fixture
)

pytestmark = pytest.mark.django_db


def test_a_sent_row_stripe_never_recorded_becomes_an_adjustment_past_the_invoice_deadline(world):  # noqa: F811
    """A window whose first send hit a 500 (nothing recorded) stays SENT; after the period's invoice is final it
    is looked up in Stripe's meter, found missing and becomes an adjustment: the overage is never lost."""
    from accounts.models import BillingPeriod

    period_end = BillingPeriod.objects.get(account=world.account).end
    world.resolve(period_end - 2 * HOUR)
    world.emulator.add_fault(path_prefix="/v1/billing/meter_events", method="POST", mode="500", count=100)
    run = world.report(period_end - 30 * MINUTE)
    assert run.unavailable == 1
    row = MeterReport.objects.get()
    assert row.state == State.SENT
    world.emulator.faults.clear()
    late = period_end + 3 * HOUR  # invoice final (grace 1h)
    world.report(late)
    row.refresh_from_db()
    row.refresh_from_db()
    assert row.state == State.ADJUSTMENT and row.adjustment_minor == 99, "overage lost: confirmed after the invoice"
    assert "invoice item" in row.last_error


def test_a_lost_answer_then_a_day_of_500s_is_billed_once(world):  # noqa: F811
    """First attempt recorded (answer lost), later attempts 500 for over 24 hours: the 23-hour check counts from the
    first send, finds the event in Stripe's meter and confirms it rather than sending it again."""
    world.resolve(START + 40 * MINUTE)
    world.emulator.add_fault(path_prefix="/v1/billing/meter_events", method="POST", mode="500_after_record", count=1)
    world.emulator.add_fault(path_prefix="/v1/billing/meter_events", method="POST", mode="500", count=100000)
    t0 = START + 2 * HOUR
    world.report(t0)
    assert world.stripe_total() == 1
    row = MeterReport.objects.get()
    while row.state != State.CONFIRMED and row.next_attempt_at < t0 + 26 * HOUR:
        world.report(row.next_attempt_at)
        row.refresh_from_db()
    # Confirmed from the meter 23 hours after the first send, while every send still answers 500.
    assert row.state == State.CONFIRMED and row.confirmed_at - t0 >= dt.timedelta(hours=23)
    world.emulator.faults.clear()
    world.report(row.confirmed_at + HOUR)
    assert MeterReport.objects.get().state == State.CONFIRMED
    assert world.stripe_total() == 1, f"billed {world.stripe_total()} for 1 resolution"


def test_adjustments_on_graduated_tiers_add_up_to_the_price_of_what_stripe_misses(admin_user):
    """A pending row past its deadline and a late window both become adjustments: together they charge the price of
    everything less the price of what Stripe bills, whatever order they are made in."""
    from accounts.pricing import plan_version_spec_parse
    from accounts.services import price_plan_create, price_plan_version_create, price_plan_version_publish
    from tests.factories import AccountFactory

    plan = price_plan_create(slug="probe-tiered", name="Probe", actor=admin_user)
    version = price_plan_version_create(
        plan=plan,
        actor=admin_user,
        spec=plan_version_spec_parse(
            {
                "currency": "usd",
                "tiers_mode": "graduated",
                "inactivity_window": "24:00:00",
                "seat_unit_amount": 2500,
                "seat_conversion_unit_amount_decimal": "90",
                "effective_from": "2026-01-01T00:00:00Z",
                "tiers": [{"up_to": 105, "unit_amount_decimal": "100"}, {"up_to": "inf", "unit_amount_decimal": "200"}],
            }
        ),
    )
    price_plan_version_publish(version=version, actor=admin_user)
    account = AccountFactory(plan_version=version)
    ps, pe = START, START + dt.timedelta(days=30)

    def mk(h, o, r):
        return MeterWindow.objects.create(
            account=account,
            start=ps + h * HOUR,
            end=ps + (h + 1) * HOUR,
            period_start=ps,
            period_end=pe,
            overage=o,
            reported=r,
        )

    w1, w2 = mk(1, 100, 100), mk(2, 10, 10)
    mk(3, 5, 0)  # a late window, not reported yet
    common = dict(account=account, sequence=0, created_at=ps)
    MeterReport.objects.create(
        window=w1, quantity=100, timestamp=w1.start, identifier="a", state=State.CONFIRMED, **common
    )
    MeterReport.objects.create(
        window=w2, quantity=10, timestamp=w2.start, identifier="b", state=State.PENDING, **common
    )
    now = pe + 3 * HOUR
    with clock.frozen(now):
        meter_report_account(account_id=account.pk, now=now)
    adj = list(
        MeterReport.objects.filter(state=State.ADJUSTMENT).values_list("identifier", "quantity", "adjustment_minor")
    )
    # only 100 are in Stripe; 115 are owed: p(115) - p(100) = (105*100 + 10*200) - 100*100 = 2500
    assert sorted(q for _, q, _ in adj) == [5, 10]
    assert sum(a[2] for a in adj) == 2500


def test_a_refused_meter_read_leaves_the_row_sent_and_it_is_confirmed_later(world, monkeypatch):  # noqa: F811
    """A lost answer past the deadline: Stripe refuses the read of its meter once. The row stays sent (a refused
    read says nothing about the event) and is confirmed from the meter on the next cycle: billed once, no
    adjustment."""
    from accounts.models import BillingPeriod
    from billing_portal import stripe_client
    from billing_portal.stripe_client import StripeRejected

    period_end = BillingPeriod.objects.get(account=world.account).end
    world.resolve(period_end - 2 * HOUR)
    world.emulator.add_fault(path_prefix="/v1/billing/meter_events", method="POST", mode="500_after_record", count=1)
    world.emulator.add_fault(path_prefix="/v1/billing/meter_events", method="POST", mode="500", count=100)
    world.report(period_end - 30 * MINUTE)
    assert world.stripe_total() == 1 and MeterReport.objects.get().state == State.SENT
    world.emulator.faults.clear()
    real = stripe_client.call

    def refusing(op, request, *, idempotency_key):
        if op == "read usage":
            raise StripeRejected(op, "No such billing meter", retryable=False, status=404)
        return real(op, request, idempotency_key=idempotency_key)

    monkeypatch.setattr(stripe_client, "call", refusing)
    run = world.report(period_end + 3 * HOUR)
    row = MeterReport.objects.get()
    assert run.rejected == 1 and row.state == State.SENT and row.rejections == 0
    assert "refused" in row.last_error
    monkeypatch.setattr(stripe_client, "call", real)
    world.report(period_end + 5 * HOUR)
    row.refresh_from_db()
    assert row.state == State.CONFIRMED and row.adjustment_minor is None
    assert world.stripe_total() == 1
