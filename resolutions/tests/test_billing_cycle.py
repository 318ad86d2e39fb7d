"""One billing cycle: the task, billing_tick and the demo call billing_cycle_run; a failing step is reported
and the independent steps still run; two cycles never overlap."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from accounts.models import BillingPeriod
from accounts.services.provisioning import account_provision
from billing_portal import clock
from credits.models import CreditPack
from credits.services import credit_pack_grant
from resolutions import billing_cycle
from resolutions.billing_cycle import LOCK_HELD, STEPS, billing_cycle_lock, billing_cycle_run
from resolutions.models import Resolution
from resolutions.tasks import billing_cycle_task
from resolutions.tests.conftest import NOW, event
from tests.factories import AccountFactory

STEP_NAMES = [
    "evaluate",
    "finalise",
    "periods",
    "plan_moves",
    "purchases",
    "funding",
    "expiry",
    "report",
    "provisioning",
    "conversions",
    "simulations",
    "idempotency",
    "reconcile",
]
RENEWED_AT = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)  # a day after the first period ended


@pytest.fixture
def provisioned(stripe_emulator, api_client, settings):
    """An account provisioned in the emulator at NOW, with one resolution waiting to be funded."""
    from accounts.models import PricePlan

    settings.STRIPE_MAX_RETRIES = 1
    stripe_emulator.set_time(int(NOW.timestamp()))
    with clock.frozen(NOW):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
        result = account_provision(
            name="Cycle Co", plan=PricePlan.objects.get(slug="fin-standard"), seats=1, actor="test"
        )
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {result.raw_api_key}")
        body = {"events": [event("e1", "c1", "ai_answer", 30), event("e2", "c1", "customer_confirmed", 20)]}
        assert api_client.post("/api/v1/conversation-events", body, format="json").status_code == 202
    stripe_emulator.set_time(int(RENEWED_AT.timestamp()))  # the emulator renews the subscription
    return result.account


@pytest.mark.django_db
def test_a_stripe_outage_in_one_step_is_reported_and_the_later_steps_still_run(provisioned, stripe_emulator):
    stripe_emulator.add_fault(path_prefix="/v1/subscriptions", method="GET", mode="500", count=100)
    result = billing_cycle_run(now=RENEWED_AT)
    assert result.ran and [s.name for s in result.steps] == STEP_NAMES
    periods = result.step("periods")
    assert periods.status == "failed" and "retrieve subscription failed" in periods.error
    assert [s.status for s in result.steps if s.name != "periods"] == ["ok"] * (len(STEP_NAMES) - 1)
    assert result.step("funding").counts == {"credited": 0, "overage": 1}
    assert Resolution.objects.get().funding == "overage"
    assert BillingPeriod.objects.filter(account=provisioned).count() == 1  # the renewal waits for Stripe
    stripe_emulator.faults.clear()
    again = billing_cycle_run(now=RENEWED_AT)  # the next cycle retries the failed step
    assert again.step("periods").status == "ok" and again.step("periods").counts["periods_renewed"] == 1
    assert BillingPeriod.objects.filter(account=provisioned).count() == 2


@pytest.mark.django_db
def test_billing_tick_prints_one_line_per_step_and_exits_0_when_a_step_fails(provisioned, stripe_emulator):
    stripe_emulator.add_fault(path_prefix="/v1/subscriptions", method="GET", mode="500", count=100)
    out = StringIO()
    call_command("billing_tick", "--now", RENEWED_AT.isoformat(), stdout=out)  # no CommandError: exit 0
    lines = out.getvalue().splitlines()
    assert lines[0] == f"Billing cycle at {RENEWED_AT.isoformat()}:"
    assert [line.split()[0] for line in lines[1 : 1 + len(STEP_NAMES)]] == STEP_NAMES
    assert lines[3].split()[1] == "FAILED" and "Stripe retrieve subscription failed" in lines[3]
    assert "0 funded from credits, 1 as overage" in lines[6]
    assert lines[-1] == "1 step(s) failed; the next cycle retries them."
    stripe_emulator.faults.clear()
    out = StringIO()
    call_command("billing_tick", "--now", RENEWED_AT.isoformat(), "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert [s["status"] for s in summary["steps"]] == ["ok"] * len(STEP_NAMES)
    assert (summary["periods_renewed"], summary["credited"], summary["overage"]) == (1, 0, 0)


@pytest.mark.django_db
def test_billing_tick_refuses_with_one_line_when_another_cycle_holds_the_lock():
    with billing_cycle_lock() as acquired:
        assert acquired
        with pytest.raises(CommandError) as info:
            call_command("billing_tick", "--now", NOW.isoformat(), stdout=StringIO())
    assert str(info.value) == f"Billing cycle not run at {NOW.isoformat()}: {LOCK_HELD}."
    assert "\n" not in str(info.value)
    with billing_cycle_lock() as acquired:  # released: the next cycle runs
        assert acquired


@pytest.mark.django_db
def test_when_funding_fails_expiry_waits_and_the_other_steps_run(monkeypatch):
    account = AccountFactory()
    with clock.frozen(NOW - dt.timedelta(days=1)):
        pack = credit_pack_grant(
            account=account, quantity=5, source="adjustment", actor="test", reason="x",
            starts_at=NOW - dt.timedelta(days=10), expires_at=NOW - dt.timedelta(hours=1),
        )  # fmt: skip

    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(billing_cycle, "resolutions_fund", broken)
    result = billing_cycle_run(now=NOW)
    statuses = {s.name: s.status for s in result.steps}
    assert statuses == {**dict.fromkeys(STEP_NAMES, "ok"), "funding": "failed", "expiry": "skipped"}
    assert result.step("funding").error == "RuntimeError: database went away"
    assert result.step("expiry").error == "skipped: funding failed this cycle"
    pack.refresh_from_db()
    assert pack.status == CreditPack.Status.ACTIVE  # not written off before what it covered was funded
    monkeypatch.undo()
    assert billing_cycle_run(now=NOW).step("expiry").counts["packs_expired"] == 1


@pytest.mark.django_db
def test_the_task_runs_the_same_cycle(post_events, now):
    post_events(event("a", "c1", "ai_answer", 60 * 23))  # its inactivity window (24 h) ends in an hour
    with clock.frozen(NOW + dt.timedelta(hours=2)):
        result = billing_cycle_task.apply().get()
    assert [s["name"] for s in result["steps"]] == [name for name, _, _ in STEPS] == STEP_NAMES
    assert (result["assumed_resolutions"], result["overage"]) == (1, 1)
    with billing_cycle_lock():
        assert billing_cycle_task.apply().get() == {"now": NOW.isoformat(), "skipped": LOCK_HELD, "steps": []}
    assert result["now"] == (NOW + dt.timedelta(hours=2)).isoformat()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_cycles_on_postgresql_only_one_runs(stripe_emulator, settings):
    settings.STRIPE_MAX_RETRIES = 0
    account = AccountFactory()
    BillingPeriod.objects.create(  # an ended period: the cycle asks Stripe, which is slow today
        account=account, start=NOW - dt.timedelta(days=31), end=NOW - dt.timedelta(days=1),
        stripe_subscription_id="sub_slow",
    )  # fmt: skip
    stripe_emulator.add_fault(path_prefix="/v1/subscriptions", method="GET", mode="hang", hang_seconds=3)
    results = {}

    def cycle(name):
        try:
            results[name] = billing_cycle_run(now=NOW)
        finally:
            connections.close_all()

    first = threading.Thread(target=cycle, args=("first",))
    first.start()
    deadline = time.monotonic() + 20
    while stripe_emulator.faults.list() and time.monotonic() < deadline:  # the first cycle is in Stripe
        time.sleep(0.05)
    assert not stripe_emulator.faults.list(), "the first cycle never reached Stripe"
    second = threading.Thread(target=cycle, args=("second",))
    second.start()
    second.join(20)
    first.join(20)
    assert results["second"].skipped == LOCK_HELD and results["second"].steps == []
    assert results["first"].ran and [s.name for s in results["first"].steps] == STEP_NAMES
    assert results["first"].step("periods").counts["periods_rejected"] == 1  # no such subscription
    assert billing_cycle_run(now=NOW).ran  # the lock was released


# --- the demo: its periods agree with the emulator's ------------------------------------------------------
@pytest.mark.django_db
def test_the_demos_periods_agree_with_the_emulators_subscription(stripe_emulator):
    from accounts.models import Account
    from billing_portal import stripe_client

    call_command("seed_demo", "--days", "35", "--now", NOW.isoformat(), "--json", stdout=StringIO())
    account = Account.objects.get(slug="newco-labs")
    periods = list(BillingPeriod.objects.filter(account=account).order_by("start").values_list("start", "end"))
    subscription_id = BillingPeriod.objects.filter(account=account).first().stripe_subscription_id
    subscription = stripe_client.call(
        "s", lambda c, o: c.v1.subscriptions.retrieve(subscription_id), idempotency_key=None
    ).to_dict()
    (item,) = [i for i in subscription["items"]["data"] if i["price"]["recurring"]["usage_type"] == "metered"]
    emulator_period = tuple(
        dt.datetime.fromtimestamp(item[k], dt.UTC) for k in ("current_period_start", "current_period_end")
    )
    joined = NOW - dt.timedelta(days=35 + 16)  # JOINED_BEFORE_TRAFFIC_DAYS before the traffic
    assert periods[0][0] == joined  # provisioned under the shifted clock, in both clocks
    assert len(periods) == 2 and periods[-1] == emulator_period  # the renewal, recorded by the cycle's sync
    assert stripe_emulator.store.frozen_time == int(NOW.timestamp())  # --now: the emulator stays at it
    assert Resolution.objects.filter(account=account, funding="overage").exists()
    # "Stripe" invoiced each past period's overage exactly as the portal computed it.
    from resolutions.demo import invoices_against_portal
    from resolutions.models import MeterReport

    checks = [c for a in Account.objects.all() for c in invoices_against_portal(account=a)]
    assert len(checks) == 3 and all(c.agrees for c in checks), checks
    assert sum(c.stripe_minor for c in checks) > 0
    assert not MeterReport.objects.exclude(state="confirmed").exists()  # nothing left over, nothing too late


@pytest.mark.django_db
def test_seeding_in_real_time_gives_the_emulator_its_real_clock_back(stripe_emulator):
    call_command("seed_demo", "--days", "0", "--json", stdout=StringIO())
    assert stripe_emulator.store.frozen_time is None
    assert BillingPeriod.objects.count() == 3
