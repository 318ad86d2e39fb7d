"""Reconciliation: the portal's reported meter totals (confirmed report rows) against Stripe's meter event summaries,
per account and billing period, over the emulator. The portal side is written as report rows directly; the Stripe
side is meter events posted through stripe-python, as the reporter sends them."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connections

from accounts.models import AuditLogEntry, BillingPeriod, PricePlan
from accounts.services.provisioning import account_provision
from billing_portal import clock, stripe_client
from resolutions.billing_cycle import billing_cycle_run
from resolutions.models import MeterReconciliationDifference, MeterReconciliationRun, MeterReport, MeterWindow
from resolutions.services.metering import meter_event_timestamp, window_bounds
from resolutions.services.reconciliation import meter_difference_resolve, meter_reconcile
from resolutions.tasks import meter_reconcile_task
from tests.factories import AdminUserFactory

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 11, 2, 12, 0, 30, tzinfo=dt.UTC)  # mid-minute: the period's bounds are not whole minutes
T1 = T0 + dt.timedelta(days=1)
CONFIRMED, PENDING, SENT = MeterReport.State.CONFIRMED, MeterReport.State.PENDING, MeterReport.State.SENT
SUMMARIES = "/v1/billing/meters/"  # …/{meter}/event_summaries: the only meter path reconciliation asks


@pytest.fixture
def world(stripe_emulator, settings):
    """Two accounts provisioned in the emulator at T0 (one period each, from T0), an admin with an e-mail
    address and one in settings.ADMINS; the emulator's clock at T1."""
    settings.STRIPE_MAX_RETRIES = 0
    settings.ADMINS = [("Billing ops", "ops@example.com")]
    stripe_emulator.set_time(int(T0.timestamp()))
    plan = PricePlan.objects.get(slug="fin-standard")
    with clock.frozen(T0):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
        alpha = account_provision(name="Alpha Support", plan=plan, seats=1, actor="test")
        beta = account_provision(name="Beta Helpdesk", plan=plan, seats=1, actor="test")
    stripe_emulator.set_time(int(T1.timestamp()))
    AdminUserFactory(username="reconciliation-admin", email="finance@example.com")
    return SimpleNamespace(alpha=alpha, beta=beta)


@pytest.fixture
def reconcile(django_capture_on_commit_callbacks):
    """meter_reconcile at an instant, with the e-mails it queues for after its commits sent."""

    def run(at: dt.datetime):
        with clock.frozen(at), django_capture_on_commit_callbacks(execute=True):
            return meter_reconcile(now=at)

    return run


def period_of(account) -> tuple[dt.datetime, dt.datetime]:
    first = BillingPeriod.objects.filter(account=account).order_by("start").first()
    return first.start, first.end


def report(account, period, hours: float, quantity: int, *, state=CONFIRMED, confirmed_at=None) -> MeterReport:
    """A report row for the window `hours` into `period` (the window's first row, or its next correction)."""
    start, end, period_start = window_bounds(period[0] + dt.timedelta(hours=hours), period)
    window, _ = MeterWindow.objects.get_or_create(
        account=account, start=start, defaults={"end": end, "period_start": period_start, "period_end": period[1]}
    )
    sequence = MeterReport.objects.filter(window=window).count()
    if state == CONFIRMED and confirmed_at is None:
        confirmed_at = end + dt.timedelta(minutes=5)
    return MeterReport.objects.create(
        account=account, window=window, sequence=sequence, quantity=quantity, state=state,
        timestamp=meter_event_timestamp(start, end, period_end=period[1]),
        identifier=f"recon-{account.pk}-{start:%Y%m%d%H%M%S}-{sequence}",
        confirmed_at=confirmed_at, adjustment_minor=quantity * 99 if state == MeterReport.State.ADJUSTMENT else None,
    )  # fmt: skip


def stripe_event(provisioned, value: int, timestamp: dt.datetime, identifier: str) -> None:
    params = {
        "event_name": django_settings.STRIPE_METER_EVENT_NAME,
        "payload": {"stripe_customer_id": provisioned.stripe_customer_id, "value": str(value)},
        "timestamp": int(timestamp.timestamp()),
        "identifier": identifier,
    }
    stripe_client.call(
        "test meter event",
        lambda c, o: c.v1.billing.meter_events.create(params=params, options=o),
        idempotency_key=f"test:{identifier}",
    )


def stripe_cancel(identifier: str) -> None:
    params = {
        "event_name": django_settings.STRIPE_METER_EVENT_NAME,
        "type": "cancel",
        "cancel": {"identifier": identifier},
    }
    stripe_client.call(
        "test meter event cancel",
        lambda c, o: c.v1.billing.meter_event_adjustments.create(params=params, options=o),
        idempotency_key=f"test:cancel:{identifier}",
    )


def sent(provisioned, row: MeterReport) -> MeterReport:
    """The row's meter event in Stripe, as the reporter sends it."""
    stripe_event(provisioned, row.quantity, row.timestamp, row.identifier)
    return row


def summary_requests(stripe_emulator) -> list[dict]:
    return [r for r in stripe_emulator.requests.list() if r["path"].endswith("/event_summaries")]


# --- agreement, and exactly one period's events -----------------------------------------------------------------
@pytest.mark.django_db
def test_agreeing_totals_leave_no_difference_and_adjustments_and_rejections_count_for_neither(
    world, reconcile, mailoutbox, stripe_emulator
):
    a = world.alpha
    period = period_of(a.account)
    sent(a, report(a.account, period, 0, 3))  # the period's first window: its event is at the next whole minute
    sent(a, report(a.account, period, 5, 2))
    sent(a, report(a.account, period, 5, -1))  # a void's correction
    report(a.account, period, 6, 5, state=MeterReport.State.REJECTED)  # Stripe refused it: not in the meter
    report(a.account, period, 7, 4, state=MeterReport.State.ADJUSTMENT)  # too late: a credit note, not an event

    result = reconcile(T1)

    assert (result.checked, result.differences, result.in_flight, result.failures) == (1, [], 0, [])
    assert not MeterReconciliationDifference.objects.exists() and mailoutbox == []
    (asked,) = summary_requests(stripe_emulator)  # one summary for the whole period, at whole-minute bounds
    assert asked["params"] == {
        "customer": a.stripe_customer_id,
        "start_time": str(int(T0.timestamp()) + 30),  # 12:01:00, the period's first whole minute
        "end_time": str(int(period[1].timestamp()) + 30),
    }
    assert MeterReconciliationRun.objects.get().checked == 1


@pytest.mark.django_db
def test_each_period_counts_exactly_its_own_events_across_a_mid_minute_boundary(world, reconcile, stripe_emulator):
    a = world.alpha
    first = period_of(a.account)
    second = (first[1], first[1] + dt.timedelta(days=31))
    last_window = report(a.account, first, (first[1] - first[0]).total_seconds() / 3600 - 0.001, 2)
    assert last_window.timestamp == first[1] - dt.timedelta(seconds=30)  # 12:00:00, in the first period
    opening = report(a.account, second, 0, 5)
    assert opening.timestamp == first[1] + dt.timedelta(seconds=30)  # 12:01:00, where the second one's bound starts
    at = first[1] + dt.timedelta(days=1)
    stripe_emulator.set_time(int(at.timestamp()))
    with clock.frozen(at):
        sent(a, last_window)
        sent(a, opening)
        sent(a, report(a.account, first, 3, 1))

    result = reconcile(at)

    assert (result.checked, result.differences, result.failures) == (2, [], [])


# --- differences: stored, e-mailed once, kept current, resolved, and back again ---------------------------------
@pytest.mark.django_db
def test_a_difference_is_stored_emailed_once_kept_current_resolved_and_new_when_it_comes_back(
    world, reconcile, mailoutbox
):
    a = world.alpha
    period = period_of(a.account)
    sent(a, report(a.account, period, 1, 5))
    stripe_event(a, 2, period[0] + dt.timedelta(hours=2), "stray-1")  # Stripe counts 7, the portal reported 5

    first = reconcile(T1)

    expected = {
        "account_id": a.account.pk, "period_start": period[0].isoformat(), "period_end": period[1].isoformat(),
        "portal": 5, "stripe": 7,
    }  # fmt: skip
    assert [d.as_dict() for d in first.differences] == [expected] and (first.new, first.checked) == (1, 1)
    row = MeterReconciliationDifference.objects.get()
    assert (row.portal, row.stripe, row.difference, row.first_found_at, row.resolved_at) == (5, 7, 2, T1, None)
    assert row.emailed_at == T1
    (mail,) = mailoutbox
    assert sorted(mail.to) == ["finance@example.com", "ops@example.com"]
    assert "Alpha Support" in mail.subject and "portal 5, Stripe 7" in mail.subject
    assert "Difference (Stripe - portal):    +2" in mail.body and f"/{row.pk}/change/" in mail.body
    assert f"/staff/ops/reconciliation/{row.pk}/resolve\n" in mail.body

    again = reconcile(T1 + dt.timedelta(hours=1))  # still there: no second e-mail
    assert [d.as_dict() for d in again.differences] == [expected] and again.new == 0
    assert len(mailoutbox) == 1
    row.refresh_from_db()
    assert row.last_checked_at == T1 + dt.timedelta(hours=1) and row.first_found_at == T1

    stripe_event(a, 1, period[0] + dt.timedelta(hours=3), "stray-2")  # other figures: the same row, updated
    changed = reconcile(T1 + dt.timedelta(hours=2))
    assert [(d.portal, d.stripe) for d in changed.differences] == [(5, 8)] and changed.new == 0
    assert MeterReconciliationDifference.objects.get().pk == row.pk and len(mailoutbox) == 1
    row.refresh_from_db()
    assert (row.portal, row.stripe) == (5, 8)

    stripe_cancel("stray-1")  # the stray events are cancelled in Stripe: 5 = 5
    stripe_cancel("stray-2")
    gone = reconcile(T1 + dt.timedelta(hours=3))
    assert (gone.differences, gone.resolved, gone.checked) == ([], 1, 1)
    row.refresh_from_db()
    assert row.resolved_at == T1 + dt.timedelta(hours=3) and len(mailoutbox) == 1

    assert reconcile(T1 + dt.timedelta(hours=4)).resolved == 0  # resolved once
    stripe_event(a, 4, period[0] + dt.timedelta(hours=5), "stray-3")  # it comes back: a new row, a new e-mail
    back = reconcile(T1 + dt.timedelta(hours=5))
    assert [(d.portal, d.stripe) for d in back.differences] == [(5, 9)] and back.new == 1
    rows = list(MeterReconciliationDifference.objects.order_by("pk").values_list("portal", "stripe", "resolved_at"))
    assert rows == [(5, 8, T1 + dt.timedelta(hours=3)), (5, 9, None)]
    assert len(mailoutbox) == 2 and "portal 5, Stripe 9" in mailoutbox[1].subject


@pytest.mark.django_db
def test_a_portal_total_of_zero_against_stripe_events_is_a_difference(world, reconcile):
    a = world.alpha
    period = period_of(a.account)
    sent(a, report(a.account, period, 1, 2))
    sent(a, report(a.account, period, 1, -2))  # voided again: the portal's total is 0
    stripe_event(a, 3, period[0] + dt.timedelta(hours=2), "stray")

    result = reconcile(T1)

    assert [(d.account_id, d.portal, d.stripe) for d in result.differences] == [(a.account.pk, 0, 3)]
    assert MeterReconciliationDifference.objects.get().portal == 0


@pytest.mark.django_db
def test_an_unsent_email_is_sent_by_the_next_run_once_someone_can_receive_it(world, reconcile, mailoutbox, settings):
    from accounts.models import User

    User.objects.filter(email="finance@example.com").update(email="")
    settings.ADMINS = []
    a = world.alpha
    period = period_of(a.account)
    sent(a, report(a.account, period, 1, 5))
    stripe_event(a, 1, period[0] + dt.timedelta(hours=2), "stray")

    assert reconcile(T1).new == 1 and mailoutbox == []
    assert MeterReconciliationDifference.objects.get().emailed_at is None  # nobody to tell: owed, not dropped

    settings.ADMINS = [("Billing ops", "ops@example.com")]
    assert reconcile(T1 + dt.timedelta(hours=1)).new == 0
    assert [m.to for m in mailoutbox] == [["ops@example.com"]]
    reconcile(T1 + dt.timedelta(hours=2))
    assert len(mailoutbox) == 1


# --- in flight ---------------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_period_with_an_event_on_its_way_is_not_compared(world, reconcile, stripe_emulator):
    a, b = world.alpha, world.beta
    a_period, b_period = period_of(a.account), period_of(b.account)
    sent(a, report(a.account, a_period, 1, 5))
    report(a.account, a_period, 2, 3, state=SENT)  # handed to Stripe, answer not recorded
    sent(b, report(b.account, b_period, 1, 4))
    just = T1 - dt.timedelta(minutes=2)  # confirmed moments ago: Stripe's summary may not show it yet
    sent(b, report(b.account, b_period, 2, 1, confirmed_at=just))

    result = reconcile(T1)

    assert (result.checked, result.in_flight, result.differences) == (0, 2, [])
    assert summary_requests(stripe_emulator) == []
    later = reconcile(T1 + dt.timedelta(hours=1))  # Beta's event has settled; Alpha's is still on its way
    assert (later.checked, later.in_flight, later.differences) == (1, 1, [])


@pytest.mark.django_db
def test_an_open_difference_is_not_resolved_while_its_period_has_an_event_on_its_way(world, reconcile):
    a = world.alpha
    period = period_of(a.account)
    sent(a, report(a.account, period, 1, 5))
    stripe_event(a, 2, period[0] + dt.timedelta(hours=2), "stray")
    assert reconcile(T1).new == 1
    row = report(a.account, period, 3, 2, state=PENDING)

    result = reconcile(T1 + dt.timedelta(hours=1))

    assert (result.in_flight, result.checked, result.resolved) == (1, 0, 0)
    assert MeterReconciliationDifference.objects.get().resolved_at is None
    row.state, row.confirmed_at = CONFIRMED, T1 + dt.timedelta(hours=1)
    row.save()
    sent(a, row)  # delivered: the portal's 7 against Stripe's 9 — still a difference, not resolved
    assert [(d.portal, d.stripe) for d in reconcile(T1 + dt.timedelta(hours=2)).differences] == [(7, 9)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rows_that_move_while_stripe_is_asked_make_the_period_in_flight_not_a_difference(
    world, stripe_emulator, mailoutbox
):
    a = world.alpha
    period = period_of(a.account)
    sent(a, report(a.account, period, 1, 5))
    stripe_emulator.add_fault(path_prefix=SUMMARIES, method="GET", mode="hang", hang_seconds=1.5)
    results = {}

    def run():
        try:
            results["run"] = meter_reconcile(now=T1)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 20
    while stripe_emulator.faults.list() and time.monotonic() < deadline:  # the run is waiting on Stripe
        time.sleep(0.02)
    assert not stripe_emulator.faults.list(), "the run never asked Stripe"
    sent(a, report(a.account, period, 2, 2))  # the reporter delivers another event meanwhile
    thread.join(20)

    result = results["run"]
    assert (result.checked, result.in_flight, result.differences) == (0, 1, [])  # Stripe's 7 is not compared to 5
    assert not MeterReconciliationDifference.objects.exists() and mailoutbox == []
    assert meter_reconcile(now=T1 + dt.timedelta(hours=1)).checked == 1  # the next run compares 7 with 7


# --- Stripe failures ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_stripe_failing_for_one_account_is_reported_and_the_others_are_still_checked(world, reconcile, stripe_emulator):
    a, b = world.alpha, world.beta
    sent(a, report(a.account, period_of(a.account), 1, 5))
    sent(b, report(b.account, period_of(b.account), 1, 4))
    stripe_event(b, 1, period_of(b.account)[0] + dt.timedelta(hours=2), "stray")
    stripe_emulator.add_fault(path_prefix=SUMMARIES, method="GET", mode="500", count=1)  # Alpha's is asked first

    result = reconcile(T1)

    assert result.checked == 1 and [(d.account_id, d.portal, d.stripe) for d in result.differences] == [
        (b.account.pk, 4, 5)
    ]
    (failure,) = result.failures
    assert failure["account_id"] == a.account.pk and failure["period_start"] == period_of(a.account)[0].isoformat()
    assert "list meter event summaries failed" in failure["error"]
    assert MeterReconciliationRun.objects.get().failures == [failure]
    assert reconcile(T1 + dt.timedelta(hours=1)).failures == []  # asked again by the next run


@pytest.mark.django_db
def test_reconcile_exits_non_zero_with_one_line_only_when_nothing_could_be_checked(world, stripe_emulator):
    a = world.alpha
    sent(a, report(a.account, period_of(a.account), 1, 5))
    stripe_emulator.add_fault(path_prefix=SUMMARIES, method="GET", mode="500", count=100)
    out = StringIO()
    with pytest.raises(CommandError) as info:
        call_command("reconcile", "--now", T1.isoformat(), "--json", stdout=out)
    assert str(info.value).startswith("Nothing could be checked: 1 period(s) failed (Stripe list meter event summ")
    assert "\n" not in str(info.value)
    printed = json.loads(out.getvalue())
    assert (printed["checked"], printed["differences"], len(printed["failures"])) == (0, [], 1)


# --- the command, the task, the billing cycle, the admin ---------------------------------------------------------
@pytest.mark.django_db
def test_reconcile_json_prints_the_contract_and_what_was_skipped(world, stripe_emulator, mailoutbox):
    a, b = world.alpha, world.beta
    sent(a, report(a.account, period_of(a.account), 1, 5))
    stripe_event(a, 2, period_of(a.account)[0] + dt.timedelta(hours=2), "stray")
    report(b.account, period_of(b.account), 1, 4, state=PENDING)
    sent(b, report(b.account, period_of(b.account), 2, 1))
    out = StringIO()

    call_command("reconcile", "--now", T1.isoformat(), "--json", stdout=out)

    printed = json.loads(out.getvalue())
    assert printed == {
        "checked": 1,
        "differences": [{
            "account_id": a.account.pk, "period_start": period_of(a.account)[0].isoformat(),
            "period_end": period_of(a.account)[1].isoformat(), "portal": 5, "stripe": 7,
        }],
        "in_flight": 1, "new": 1, "resolved": 0, "accepted": 0, "accepted_differences": [], "failures": [],
    }  # fmt: skip
    out = StringIO()
    call_command("reconcile", "--now", (T1 + dt.timedelta(hours=1)).isoformat(), stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"Reconciliation at {(T1 + dt.timedelta(hours=1)).isoformat()}: 1 period(s) checked")
    assert lines[1] == f"  account {a.account.pk}, period {period_of(a.account)[0]:%Y-%m-%d %H:%M} to " + (
        f"{period_of(a.account)[1]:%Y-%m-%d %H:%M}: portal 5, Stripe 7"
    )


def test_reconcile_with_a_bad_now_prints_one_line_and_exits_non_zero():
    env = {**os.environ, "DJANGO_DEBUG": "true", "DJANGO_SETTINGS_MODULE": "billing_portal.settings"}
    done = subprocess.run(
        [sys.executable, "manage.py", "reconcile", "--now", "2026-11-02T10:00:00", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--now" in lines[0] and "no timezone" in lines[0], done.stderr


@pytest.mark.django_db
def test_the_billing_cycle_reconciles_when_the_last_run_is_an_hour_old(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    a = world.alpha
    sent(a, report(a.account, period_of(a.account), 1, 5))
    stripe_event(a, 2, period_of(a.account)[0] + dt.timedelta(hours=2), "stray")

    def step(at):
        with clock.frozen(at), django_capture_on_commit_callbacks(execute=True):
            return billing_cycle_run(now=at).step("reconcile")

    first = step(T1)
    assert first.status == "ok" and first.counts == {
        "reconciled": True, "reconcile_checked": 1, "reconcile_differences": 1, "reconcile_in_flight": 0,
        "reconcile_failed": 0,
    }  # fmt: skip
    assert "1 period(s) checked: 1 difference(s), 1 new" in first.summary and len(mailoutbox) == 1
    assert step(T1 + dt.timedelta(minutes=59)).counts == {"reconciled": False}  # not due yet
    assert step(T1 + dt.timedelta(minutes=61)).counts["reconciled"] is True
    assert MeterReconciliationRun.objects.count() == 2 and len(mailoutbox) == 1


@pytest.mark.django_db
def test_the_billing_cycle_step_fails_when_nothing_could_be_checked(world, stripe_emulator):
    a = world.alpha
    sent(a, report(a.account, period_of(a.account), 1, 5))
    stripe_emulator.add_fault(path_prefix=SUMMARIES, method="GET", mode="500", count=100)
    result = billing_cycle_run(now=T1)
    step = result.step("reconcile")
    assert step.status == "failed" and "none of 1 period(s) could be checked" in step.error
    assert [s.name for s in result.failed] == ["reconcile"]


@pytest.mark.django_db
def test_the_hourly_task_reconciles(world, mailoutbox):
    a = world.alpha
    sent(a, report(a.account, period_of(a.account), 1, 5))
    with clock.frozen(T1):
        printed = meter_reconcile_task.apply().get()
    assert (printed["checked"], printed["differences"], printed["in_flight"]) == (1, [], 0)
    assert django_settings.CELERY_BEAT_SCHEDULE["meter-reconcile"] == {
        "task": "resolutions.tasks.meter_reconcile_task", "schedule": 3600.0,
    }  # fmt: skip


@pytest.mark.django_db
def test_admins_see_differences_open_and_resolved(world, reconcile, client, admin_user):
    a = world.alpha
    period = period_of(a.account)
    sent(a, report(a.account, period, 1, 5))
    stripe_event(a, 2, period[0] + dt.timedelta(hours=2), "stray")
    reconcile(T1)
    client.force_login(admin_user)
    url = "/admin/resolutions/meterreconciliationdifference/"

    page = client.get(url, {"state": "open"}).content.decode()
    assert "Alpha Support" in page and "+2" in page
    assert "Alpha Support" not in client.get(url, {"state": "resolved"}).content.decode()
    row = MeterReconciliationDifference.objects.get()
    assert client.get(f"{url}{row.pk}/change/").status_code == 200
    assert client.post(f"{url}{row.pk}/delete/").status_code == 403  # read-only
    assert client.get("/admin/resolutions/meterreconciliationrun/").status_code == 200


# --- an admin resolves a difference with a note -------------------------------------------------------------------
@pytest.mark.django_db
def test_a_difference_an_admin_resolved_stays_resolved_for_the_same_figures_and_reopens_as_new_for_others(
    world, reconcile, mailoutbox
):
    a = world.alpha
    period = period_of(a.account)
    admin = AdminUserFactory(username="ops-admin")
    sent(a, report(a.account, period, 1, 5))
    stripe_event(a, 2, period[0] + dt.timedelta(hours=2), "stray-1")  # portal 5, Stripe 7
    reconcile(T1)
    row = MeterReconciliationDifference.objects.get()
    assert len(mailoutbox) == 1

    with clock.frozen(T1 + dt.timedelta(minutes=30)):
        resolved = meter_difference_resolve(
            difference=row, actor=admin, note="Credit note CN-7 covers the 2.", key="form-1", figures=(5, 7)
        )
    assert (resolved.resolved_at, resolved.resolved_by, resolved.resolution_note) == (
        T1 + dt.timedelta(minutes=30), admin, "Credit note CN-7 covers the 2.",
    )  # fmt: skip
    (entry,) = AuditLogEntry.objects.filter(action="meter_difference.resolve")
    assert (entry.actor, entry.account, entry.reason) == (admin, a.account, "Credit note CN-7 covers the 2.")
    assert (entry.before["portal"], entry.before["stripe"], entry.after["difference"]) == (5, 7, 2)

    same = reconcile(T1 + dt.timedelta(hours=1))  # Stripe still says 7, the portal 5: the accepted figures
    assert (same.checked, same.differences, same.new, same.accepted) == (1, [], 0, 1)
    assert [(d.portal, d.stripe) for d in same.accepted_differences] == [(5, 7)]  # listed apart, not hidden
    row.refresh_from_db()
    assert row.resolved_at == T1 + dt.timedelta(minutes=30) and row.resolved_by == admin  # not reopened
    assert row.last_checked_at == T1 + dt.timedelta(hours=1)
    assert MeterReconciliationDifference.objects.count() == 1 and len(mailoutbox) == 1  # no new row, no e-mail

    stripe_event(a, 1, period[0] + dt.timedelta(hours=3), "stray-2")  # Stripe now says 8: not what was accepted
    other = reconcile(T1 + dt.timedelta(hours=2))
    assert [(d.portal, d.stripe) for d in other.differences] == [(5, 8)] and (other.new, other.accepted) == (1, 0)
    rows = list(MeterReconciliationDifference.objects.order_by("pk"))
    assert [(r.portal, r.stripe, r.resolved_at is None) for r in rows] == [(5, 7, False), (5, 8, True)]
    assert rows[0].resolution_note == "Credit note CN-7 covers the 2."  # the resolved row is kept as it was
    assert len(mailoutbox) == 2 and "portal 5, Stripe 8" in mailoutbox[1].subject

    stripe_cancel("stray-2")  # back to 7 while the new row is open: the open row is kept current, not accepted
    back = reconcile(T1 + dt.timedelta(hours=3))
    assert [(d.portal, d.stripe) for d in back.differences] == [(5, 7)] and back.accepted == 0
    assert MeterReconciliationDifference.objects.filter(resolved_at__isnull=True).get().pk == rows[1].pk


@pytest.mark.django_db
def test_a_difference_a_run_resolved_is_not_an_accepted_one(world, reconcile):
    """Only an admin's resolution accepts figures: once a run found the figures equal, the same difference coming
    back is a new row."""
    a = world.alpha
    period = period_of(a.account)
    sent(a, report(a.account, period, 1, 5))
    stripe_event(a, 2, period[0] + dt.timedelta(hours=2), "stray-1")
    reconcile(T1)
    stripe_cancel("stray-1")
    assert reconcile(T1 + dt.timedelta(hours=1)).resolved == 1
    stripe_event(a, 2, period[0] + dt.timedelta(hours=3), "stray-2")  # 5 against 7 again
    again = reconcile(T1 + dt.timedelta(hours=2))
    assert (again.new, again.accepted) == (1, 0) and MeterReconciliationDifference.objects.count() == 2


@pytest.mark.django_db
def test_resolving_twice_with_the_same_key_is_one_resolution(account):
    admin = AdminUserFactory(username="ops-admin")
    row = _open_difference(account)
    first = meter_difference_resolve(difference=row, actor=admin, note="checked with finance", key="k-1")
    with clock.frozen(T1 + dt.timedelta(hours=5)):
        second = meter_difference_resolve(difference=row, actor=admin, note="another note", key="k-1")
    assert second.pk == first.pk and second.resolved_at == first.resolved_at
    assert second.resolution_note == "checked with finance"
    assert AuditLogEntry.objects.filter(action="meter_difference.resolve").count() == 1
    other = _open_difference(account, days=40)
    with pytest.raises(ValidationError, match="already used to resolve another difference"):
        meter_difference_resolve(difference=other, actor=admin, note="reused form", key="k-1")
    with pytest.raises(ValidationError, match="already resolved"):
        meter_difference_resolve(difference=row, actor=admin, note="a second admin", key="k-2")
    other.refresh_from_db()
    assert other.resolved_at is None and AuditLogEntry.objects.filter(action="meter_difference.resolve").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"note": ""}, "Write a note"),
        ({"note": "  \t\n"}, "Write a note"),
        ({"key": ""}, "no idempotency key"),
        ({"figures": (5, 8)}, "The figures changed since this page was opened: now portal 5, Stripe 7"),
    ],
)
def test_a_refused_resolution_changes_nothing(account, kwargs, message):
    admin = AdminUserFactory(username="ops-admin")
    row = _open_difference(account)
    with pytest.raises(ValidationError, match=message):
        meter_difference_resolve(**{"difference": row, "actor": admin, "note": "ok", "key": "k", **kwargs})
    row.refresh_from_db()
    assert (row.resolved_at, row.resolved_by, row.resolution_note, row.resolution_key) == (None, None, "", None)
    assert not AuditLogEntry.objects.filter(action="meter_difference.resolve").exists()


def _open_difference(account, *, days: int = 10) -> MeterReconciliationDifference:
    return MeterReconciliationDifference.objects.create(
        account=account, period_start=T0 - dt.timedelta(days=days), period_end=T0 + dt.timedelta(days=20),
        portal=5, stripe=7, first_found_at=T0, last_checked_at=T0,
    )  # fmt: skip


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("keys", [("form-a", "form-b"), ("form-a", "form-a")], ids=["two-admins", "double-submit"])
def test_two_resolutions_at_once_make_one(account, keys):
    """Two admins (two forms) at the same instant: one resolves, the other is told it is already resolved. The
    same form submitted twice at once: one resolution, both answered with it."""
    admins = [AdminUserFactory(username=f"ops-admin-{n}") for n in range(2)]
    row = _open_difference(account)
    barrier, outcomes = threading.Barrier(2), []

    def resolve(n: int) -> None:
        try:
            barrier.wait(5)
            done = meter_difference_resolve(difference=row, actor=admins[n], note=f"note {n}", key=keys[n])
            outcomes.append(("resolved", done.resolution_key))
        except ValidationError as exc:
            outcomes.append(("refused", " ".join(exc.messages)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=resolve, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    row.refresh_from_db()
    assert row.resolved_at is not None and row.resolution_key in keys
    assert AuditLogEntry.objects.filter(action="meter_difference.resolve").count() == 1
    if keys[0] == keys[1]:
        assert outcomes == [("resolved", "form-a"), ("resolved", "form-a")]
    else:
        assert sorted(kind for kind, _ in outcomes) == ["refused", "resolved"]
        assert "already resolved" in next(text for kind, text in outcomes if kind == "refused")
