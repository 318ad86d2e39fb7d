"""Plan migrations (DESIGN §3.2, issue 12): scheduled at a Stripe billing-period start, the version in force
and the subscription's metered (and seat) Price switch together, with no proration and nothing billed twice;
resolutions are rated by the version in force in their period. Over HTTP against the Stripe emulator, with
its clock and the portal's moved together across a renewal."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from accounts.models import Account, AuditLogEntry, BillingPeriod, PlanMigration, PricePlan, PricePlanVersion
from accounts.pricing import plan_version_spec_parse
from accounts.selectors import plan_schedule_get
from accounts.services import price_plan_version_create, price_plan_version_publish
from accounts.services.billing_periods import billing_periods_sync
from accounts.services.plan_migrations import (
    plan_migration_cancel,
    plan_migration_retry,
    plan_migrations_apply,
    plan_migrations_schedule,
)
from accounts.services.provisioning import account_provision
from accounts.services.stripe_catalog import price_plan_version_stripe_sync
from billing_portal import clock, stripe_client
from resolutions.billing_cycle import billing_cycle_run
from resolutions.models import MeterReport, Resolution
from resolutions.services import resolutions_fund
from resolutions.services.metering import meter_reports_run
from tests.emulator_world import EmulatorWorld, ts

pytestmark = pytest.mark.django_db

START = dt.datetime(2026, 11, 2, 9, 30, 15, tzinfo=dt.UTC)
PERIOD_END = dt.datetime(2026, 12, 2, 9, 30, 15, tzinfo=dt.UTC)
PERIOD2_END = dt.datetime(2027, 1, 2, 9, 30, 15, tzinfo=dt.UTC)
MINUTE, HOUR, DAY = dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(days=1)


def _version(admin_user, *, unit="50", seat=2500, currency="usd") -> PricePlanVersion:
    plan = PricePlan.objects.get(slug="fin-standard")
    version = price_plan_version_create(
        plan=plan, actor=admin_user,
        spec=plan_version_spec_parse({
            "currency": currency, "unit_amount_decimal": unit, "inactivity_window": "24:00:00",
            "seat_unit_amount": seat, "seat_conversion_unit_amount_decimal": "90",
            "effective_from": "2026-01-01T00:00:00Z",
        }),
    )  # fmt: skip
    return price_plan_version_publish(version=version, actor=admin_user)


class World(EmulatorWorld):
    def cycle(self, now: dt.datetime):
        with self.at(now):
            result = billing_cycle_run(now=now)
        assert not result.failed, result.as_dict()
        return result

    def invoices(self) -> list[dict]:
        listed = stripe_client.call(
            "list invoices", lambda c, o: c.v1.invoices.list(params={"customer": self.customer, "limit": 20}),
            idempotency_key=None,
        )  # fmt: skip
        return sorted((stripe_client.to_dict(i) for i in listed.data), key=lambda i: i["created"])


@pytest.fixture
def world(stripe_emulator, settings, api_client):
    settings.STRIPE_MAX_RETRIES = 0
    stripe_emulator.set_time(ts(START))
    with clock.frozen(START):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
        provisioned = account_provision(
            name="Mover Co", plan=PricePlan.objects.get(slug="fin-standard"), seats=3, actor="test"
        )
    return World(provisioned, stripe_emulator, api_client)


def _move_scheduled(world, admin_user) -> PricePlanVersion:
    """A published $0.50 version with its Stripe Prices, and the world's account scheduled to move to it at the
    next period start (a day after START)."""
    new = _version(admin_user)
    with world.at(START + DAY):
        price_plan_version_stripe_sync(version=new)
        plan_migrations_schedule(to_version=new, accounts=[world.account], actor=admin_user, batch_key="m",
                                 now=START + DAY)  # fmt: skip
    return new


def _lines(invoice: dict) -> list[tuple[str, int, int, int]]:
    """(price id, quantity, amount, period start) of each line."""
    return sorted(
        (line["pricing"]["price_details"]["price"], line["quantity"], line["amount"], line["period"]["start"])
        for line in invoice["lines"]["data"]
    )


def test_the_invoice_after_the_move_charges_the_new_price_to_the_cent_and_the_one_before_the_old(world, admin_user):
    old = world.account.plan_version
    new = _version(admin_user, unit="50", seat=2500)
    with world.at(START + DAY):
        price_plan_version_stripe_sync(version=new)
        new.refresh_from_db()
        result = plan_migrations_schedule(
            to_version=new, accounts=[world.account], actor=admin_user, batch_key="move-1", reason="cheaper plan",
            now=START + DAY,
        )  # fmt: skip
    (migration,) = result.scheduled
    assert migration.effective_at == PERIOD_END and migration.from_version == old and not result.skipped

    # Period 1: three overage resolutions at the old $0.99, reported.
    world.resolve(START + 2 * DAY, START + 2 * DAY + HOUR, START + 3 * DAY)
    world.cycle(START + 3 * DAY + 2 * HOUR)

    # The renewal: two resolutions early in period 2 arrive before the cycle has switched Stripe's Price.
    world.resolve(PERIOD_END + 5 * MINUTE, PERIOD_END + 6 * MINUTE, posted_at=PERIOD_END + 2 * HOUR)
    assert set(Resolution.objects.filter(resolved_at__gte=PERIOD_END).values_list("plan_version", flat=True)) == {
        new.pk
    }
    with world.at(PERIOD_END + 2 * HOUR):
        call_command("billing_tick", "--now", (PERIOD_END + 2 * HOUR).isoformat(), stdout=StringIO())
    migration.refresh_from_db()
    world.account.refresh_from_db()
    assert migration.status == PlanMigration.Status.DONE and world.account.plan_version == new
    # Two more in period 2, then past its end: Stripe bills it.
    world.resolve(PERIOD_END + 3 * DAY, PERIOD_END + 4 * DAY)
    world.cycle(PERIOD_END + 4 * DAY + 2 * HOUR)
    world.cycle(PERIOD2_END + 2 * HOUR)
    world.cycle(PERIOD2_END + 3 * HOUR)

    invoices = [i for i in world.invoices() if i["billing_reason"] == "subscription_cycle"]
    assert len(invoices) == 2, [i["billing_reason"] for i in world.invoices()]
    first, second = invoices
    assert _lines(first) == sorted([
        (old.stripe_price_id, 3, 3 * 99, ts(START)),  # period 1's usage at the old price
        (old.stripe_seat_price_id, 3, 3 * 3900, ts(PERIOD_END)),  # period 2's seats, billed in advance
    ])  # fmt: skip
    assert _lines(second) == sorted([
        (new.stripe_price_id, 4, 4 * 50, ts(PERIOD_END)),  # period 2's usage at the new price, to the cent
        (new.stripe_seat_price_id, 3, 3 * 2500, ts(PERIOD2_END)),
    ])  # fmt: skip
    assert first["total"] == 297 + 11700 and second["total"] == 200 + 7500
    # No proration anywhere, and every overage resolution was reported once.
    all_lines = [line for invoice in world.invoices() for line in invoice["lines"]["data"]]
    prorated = [
        line for line in all_lines
        for details in (line["parent"].get("subscription_item_details"), line["parent"].get("invoice_item_details"))
        if details and details.get("proration")
    ]  # fmt: skip
    assert all_lines and not prorated
    assert sum(MeterReport.objects.filter(account=world.account).values_list("quantity", flat=True)) == 7
    assert list(
        AuditLogEntry.objects.filter(object_type="accounts.planmigration", object_id=str(migration.pk))
        .order_by("id").values_list("action", flat=True)
    ) == ["plan_migration.schedule", "plan_migration.apply"]  # fmt: skip


def test_new_period_usage_waits_for_the_switch_and_a_lost_answer_is_not_sent_twice(world, admin_user):
    _move_scheduled(world, admin_user)
    world.resolve(PERIOD_END + 5 * MINUTE, posted_at=PERIOD_END + 2 * HOUR)
    now = PERIOD_END + 2 * HOUR
    with world.at(now):
        billing_periods_sync(now=now)
        resolutions_fund(now=now)
        meter_reports_run(now=now, account_ids=[world.account.pk])  # before the switch: held
    row = MeterReport.objects.get(account=world.account)
    assert row.state == MeterReport.State.PENDING and row.attempts == 0
    # Stripe records the switch but the answer is lost: the row stays `switching`, the next cycle finishes it
    # without a second update.
    world.emulator.add_fault(path_prefix=f"/v1/subscriptions/{BillingPeriod.objects.last().stripe_subscription_id}",
                             method="POST", mode="500_after_record")  # fmt: skip
    with world.at(now):
        result = plan_migrations_apply(now=now)
    assert result.unavailable and PlanMigration.objects.get().status == PlanMigration.Status.SWITCHING
    updates_before = [
        r for r in world.emulator.requests.list() if r["method"] == "POST" and "/v1/subscriptions/" in r["path"]
    ]
    with world.at(now + MINUTE):
        assert plan_migrations_apply(now=now + MINUTE).switched == 1
    updates_after = [
        r for r in world.emulator.requests.list() if r["method"] == "POST" and "/v1/subscriptions/" in r["path"]
    ]
    assert len(updates_after) == len(updates_before)  # the subscription already had the new Prices
    with world.at(now + 2 * MINUTE):
        meter_reports_run(now=now + 2 * MINUTE, account_ids=[world.account.pk])
    row.refresh_from_db()
    assert row.state == MeterReport.State.CONFIRMED


def test_a_refused_switch_fails_visibly_and_an_admins_retry_finishes_it(world, admin_user):
    new = _move_scheduled(world, admin_user)
    real = PricePlanVersion.objects.get(pk=new.pk).stripe_price_id
    PricePlanVersion.objects.filter(pk=new.pk).update(stripe_price_id="price_missing")
    world.cycle(PERIOD_END + HOUR)
    migration = PlanMigration.objects.get()
    assert migration.status == PlanMigration.Status.FAILED and "Stripe refused" in migration.last_error
    assert Account.objects.get(pk=world.account.pk).plan_version != new
    PricePlanVersion.objects.filter(pk=new.pk).update(stripe_price_id=real)
    with world.at(PERIOD_END + 2 * HOUR):
        plan_migration_retry(migration=migration, actor=admin_user)
    world.cycle(PERIOD_END + 2 * HOUR)
    migration.refresh_from_db()
    assert migration.status == PlanMigration.Status.DONE and migration.rejections == 1
    with pytest.raises(ValidationError):
        plan_migration_retry(migration=migration, actor=admin_user)


def _with_period(account, start, end):
    BillingPeriod.objects.create(account=account, start=start, end=end, stripe_subscription_id="sub_x",
                                 billing_cycle_anchor=start)  # fmt: skip


def test_scheduling_picks_the_next_period_start_and_says_why_accounts_are_skipped(account, other_account, admin_user):
    new = _version(admin_user)
    eur = _version(admin_user, currency="eur")
    now = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
    _with_period(account, dt.datetime(2026, 11, 5, tzinfo=dt.UTC), dt.datetime(2026, 12, 5, tzinfo=dt.UTC))
    result = plan_migrations_schedule(to_version=new, accounts=[account, other_account], actor=admin_user,
                                      batch_key="k1", now=now)  # fmt: skip
    assert [m.effective_at for m in result.scheduled] == [dt.datetime(2026, 12, 5, tzinfo=dt.UTC)]
    assert [(a, "no subscription" in why) for a, why in result.skipped] == [(other_account, True)]
    # A later start the admin picks: the first period start on or after it (projected past the records).
    later = plan_migrations_schedule(to_version=eur, accounts=[account], actor=admin_user, batch_key="k2", now=now)
    assert "EUR" in later.skipped[0][1] and not later.scheduled
    again = plan_migrations_schedule(to_version=new, accounts=[account], actor=admin_user, batch_key="k3", now=now)
    assert "already scheduled" in again.skipped[0][1]
    # The same key again: the same moves, nothing new.
    replay = plan_migrations_schedule(to_version=new, accounts=[account], actor=admin_user, batch_key="k1", now=now)
    assert replay.replayed and [m.pk for m in replay.scheduled] == [m.pk for m in result.scheduled]
    assert PlanMigration.objects.count() == 1
    plan_migration_cancel(migration=result.scheduled[0], actor=admin_user, now=now)
    picked = plan_migrations_schedule(
        to_version=new, accounts=[account], actor=admin_user, batch_key="k4", now=now,
        not_before=dt.datetime(2027, 2, 1, tzinfo=dt.UTC),
    )  # fmt: skip
    assert [m.effective_at for m in picked.scheduled] == [dt.datetime(2027, 2, 5, tzinfo=dt.UTC)]


def test_every_account_on_a_version_moves_and_bad_input_schedules_nothing(account, other_account, admin_user):
    new = _version(admin_user)
    now = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
    for a in (account, other_account):
        _with_period(a, dt.datetime(2026, 11, 5, tzinfo=dt.UTC), dt.datetime(2026, 12, 5, tzinfo=dt.UTC))
    draft = price_plan_version_create(plan=new.plan, actor=admin_user, spec=plan_version_spec_parse({
        "currency": "usd", "unit_amount_decimal": "10", "inactivity_window": "24:00:00", "seat_unit_amount": 1,
        "seat_conversion_unit_amount_decimal": "90", "effective_from": "2026-01-01T00:00:00Z"}))  # fmt: skip
    bad = [
        dict(to_version=draft, from_version=account.plan_version),
        dict(to_version=new),
        dict(to_version=new, accounts=[]),
        dict(to_version=new, accounts=[account], not_before=dt.datetime(2026, 12, 1)),
        dict(to_version=new, accounts=[account], not_before=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
        dict(to_version=new, accounts=[account], batch_key=""),
    ]
    for kwargs in bad:
        with pytest.raises(ValidationError):
            plan_migrations_schedule(actor=admin_user, now=now, **{"batch_key": "b", **kwargs})
    assert not PlanMigration.objects.exists()
    result = plan_migrations_schedule(to_version=new, from_version=account.plan_version, actor=admin_user,
                                      batch_key="all", now=now)  # fmt: skip
    assert {m.account for m in result.scheduled} == {account, other_account}


def test_resolutions_are_rated_by_the_version_in_force_in_their_period(account, admin_user, post_events):
    """Stamped by resolved_at, not by when they arrive: a late resolution of the old period keeps the old
    version even after the move; one of the new period gets the new version before Stripe is switched."""
    from resolutions.tests.conftest import NOW

    old = account.plan_version
    new = _version(admin_user)
    start = NOW - dt.timedelta(days=10)
    _with_period(account, start, NOW + dt.timedelta(days=20))
    move_at = NOW - dt.timedelta(hours=3)
    PlanMigration.objects.create(account=account, from_version=old, to_version=new, effective_at=move_at,
                                 batch_key="x", status=PlanMigration.Status.SCHEDULED)  # fmt: skip
    assert post_events(
        {"id": "a1", "conversation_id": "before", "type": "ai_answer", "occurred_at": (move_at - HOUR).isoformat()},
        {"id": "b1", "conversation_id": "before", "type": "customer_confirmed",
         "occurred_at": (move_at - MINUTE).isoformat()},
        {"id": "a2", "conversation_id": "after", "type": "ai_answer", "occurred_at": (move_at + HOUR).isoformat()},
        {"id": "b2", "conversation_id": "after", "type": "customer_confirmed",
         "occurred_at": (move_at + 2 * HOUR).isoformat()},
    ).status_code == 202  # fmt: skip
    stamped = dict(Resolution.objects.values_list("conversation_id", "plan_version_id"))
    assert stamped == {"before": old.pk, "after": new.pk}
    schedule = plan_schedule_get(account_id=account.pk)
    assert schedule.version_at(move_at - MINUTE) == old.pk and schedule.version_at(move_at) == new.pk
    with pytest.raises(ValidationError):  # it has started: too late to cancel
        plan_migration_cancel(migration=PlanMigration.objects.get(), actor=admin_user, now=NOW)


def test_usage_held_for_a_move_is_stamped_after_the_switch_inside_the_period(world, admin_user):
    """Stripe bills a metered item's new Price for the usage recorded after the change: a window held until the
    switch is sent stamped at the next minute after it, not at the period's start."""
    _move_scheduled(world, admin_user)
    world.resolve(PERIOD_END + 5 * MINUTE, posted_at=PERIOD_END + 2 * HOUR)
    now = PERIOD_END + 2 * HOUR
    with world.at(now):
        billing_periods_sync(now=now)
        resolutions_fund(now=now)
        meter_reports_run(now=now, account_ids=[world.account.pk])  # held
    row = MeterReport.objects.get(account=world.account)
    assert row.timestamp < now and row.state == MeterReport.State.PENDING
    switched_at = now + 30 * dt.timedelta(seconds=1)
    with world.at(switched_at):
        assert plan_migrations_apply(now=switched_at).switched == 1
    with world.at(switched_at + MINUTE):
        meter_reports_run(now=switched_at + MINUTE, account_ids=[world.account.pk])
    row.refresh_from_db()
    assert row.state == MeterReport.State.CONFIRMED
    assert row.timestamp == (switched_at + MINUTE).replace(second=0) and row.timestamp < PERIOD2_END
    sent = [r for r in world.emulator.requests.list() if r["path"].endswith("/billing/meter_events")]
    assert len(sent) == 1


def test_a_failed_move_can_be_cancelled_and_its_held_usage_is_reported(world, admin_user):
    new = _move_scheduled(world, admin_user)
    PricePlanVersion.objects.filter(pk=new.pk).update(stripe_price_id="price_missing")
    world.resolve(PERIOD_END + 5 * MINUTE, posted_at=PERIOD_END + HOUR)
    world.cycle(PERIOD_END + HOUR)
    migration = PlanMigration.objects.get()
    assert migration.status == PlanMigration.Status.FAILED
    assert MeterReport.objects.get(account=world.account).state == MeterReport.State.PENDING  # held
    with world.at(PERIOD_END + 2 * HOUR):
        plan_migration_cancel(migration=migration, actor=admin_user, reason="Stripe refused; staying on v1")
    migration.refresh_from_db()
    assert migration.status == PlanMigration.Status.CANCELLED
    assert AuditLogEntry.objects.filter(action="plan_migration.cancel", object_id=str(migration.pk)).exists()
    world.cycle(PERIOD_END + 2 * HOUR)
    assert MeterReport.objects.get(account=world.account).state == MeterReport.State.CONFIRMED  # released
    with world.at(PERIOD_END + 3 * HOUR):  # and a new move can be scheduled
        again = plan_migrations_schedule(to_version=new, accounts=[world.account], actor=admin_user,
                                         batch_key="m2", now=PERIOD_END + 3 * HOUR)  # fmt: skip
    assert len(again.scheduled) == 1
