"""Meter reporting under faults (DESIGN §3.5), over real HTTP against the Stripe emulator: 429 storms with
Retry-After, 500s after Stripe recorded, calls hanging past the client timeout, and reporters killed with
SIGKILL between Stripe's answer and the commit. Whatever happens, once the system settles Stripe's meter
holds exactly the portal's overage per account, no report row is left open, and a further cycle sends
nothing. PostgreSQL only: the reporters are threads and processes sharing the database and its session
locks (SQLite cannot show this; the `postgres` marker skips it there with that reason)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.models import Min, Sum

from accounts.models import PricePlan
from accounts.services.provisioning import account_provision
from billing_portal import clock
from billing_portal.session_locks import session_lock
from resolutions.models import MeterReport, MeterWindow, Resolution
from resolutions.selectors import METER_OPEN_STATES
from resolutions.services import resolution_void, resolutions_fund
from resolutions.services.metering import meter_accounts_due, meter_reports_run

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

START = dt.datetime(2026, 11, 2, 9, 30, 15, tzinfo=dt.UTC)  # every subscription starts here, mid-minute
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
EVENTS_PATH = "/v1/billing/meter_events"
State = MeterReport.State


def ts(instant: dt.datetime) -> int:
    return int(instant.timestamp())


# --- The world: accounts provisioned in the emulator, resolutions posted through the API -----------------
class World:
    def __init__(self, emulator, api_client):
        self.emulator, self.api_client = emulator, api_client
        self.accounts: list = []  # ProvisionedAccount
        self.counter = 0

    def provision(self, n: int) -> None:
        self.emulator.set_time(ts(START))
        plan = PricePlan.objects.get(slug="fin-standard")
        with clock.frozen(START):
            call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
            for k in range(n):
                self.accounts.append(account_provision(name=f"Fault Co {k:02d}", plan=plan, seats=1, actor="test"))

    def post(self, provisioned, instants: list[dt.datetime]) -> None:
        """Confirmed resolutions at these instants, through the ingestion API, ≤ 1,000 events a batch."""
        self.api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {provisioned.raw_api_key}")
        events = []
        for instant in instants:
            self.counter += 1
            n = self.counter
            for kind, at in (("ai_answer", instant - MINUTE), ("customer_confirmed", instant)):
                events.append({"id": f"{kind}-{n}", "conversation_id": f"c{n}", "type": kind,
                               "occurred_at": at.isoformat()})  # fmt: skip
        with clock.frozen(max(instants)):
            for i in range(0, len(events), 1000):
                response = self.api_client.post(
                    "/api/v1/conversation-events", {"events": events[i : i + 1000]}, format="json"
                )
                assert response.status_code == 202, response.content

    def report(self, now: dt.datetime):
        self.emulator.set_time(ts(now))
        with clock.frozen(now):
            run = meter_reports_run(now=now)
        assert run.errors == [], run.errors
        return run

    def settle(self, now: dt.datetime, *, rounds: int = 60) -> dt.datetime:
        """Report until nothing is due, moving the clock past the next attempt each round. Returns the time
        it settled at."""
        for _ in range(rounds):
            if not meter_accounts_due(now=now):
                return now
            self.report(now)
            waiting = MeterReport.objects.filter(state__in=METER_OPEN_STATES, next_attempt_at__gt=now)
            next_at = waiting.aggregate(at=Min("next_attempt_at"))["at"]
            now = max(now + MINUTE, next_at or now)
        raise AssertionError(f"still not settled after {rounds} rounds: {list(MeterReport.objects.values())[:5]}")

    def stripe_total(self, customer_id: str) -> int:
        with self.emulator.store.lock:
            events = list(self.emulator.store.meter_events.values())
        return sum(e["value"] for e in events if e["customer"] == customer_id and not e["canceled"])

    def meter_posts(self) -> list[dict]:
        return [r for r in self.emulator.requests.list() if r["path"] == EVENTS_PATH and r["method"] == "POST"]

    def wait_for_the_emulator(self, seconds: float = 15) -> None:
        """Until every request the emulator took has been answered (a hung one records when it wakes)."""
        deadline = time.monotonic() + seconds
        while any(r["status"] is None for r in self.emulator.requests.list()):
            assert time.monotonic() < deadline, "the emulator is still answering hung requests"
            time.sleep(0.05)

    def assert_stripe_holds_the_portals_overage(self) -> None:
        """Per account: Stripe's meter total = the windows' overage = the non-voided overage resolutions; every
        row confirmed; one Stripe event per row, with its identifier."""
        for provisioned in self.accounts:
            account_id = provisioned.account.pk
            windows = MeterWindow.objects.filter(account_id=account_id).aggregate(n=Sum("overage"))["n"] or 0
            resolutions = Resolution.objects.filter(
                account_id=account_id, funding=Resolution.Funding.OVERAGE, voided_at__isnull=True
            ).count()
            stripe = self.stripe_total(provisioned.stripe_customer_id)
            assert stripe == windows == resolutions, (provisioned.account.name, stripe, windows, resolutions)
        assert not MeterReport.objects.exclude(state=State.CONFIRMED).exists(), list(
            MeterReport.objects.exclude(state=State.CONFIRMED).values("identifier", "state", "last_error")
        )
        with self.emulator.store.lock:
            identifiers = set(self.emulator.store.meter_events)
        assert set(MeterReport.objects.values_list("identifier", flat=True)) == identifiers


@pytest.fixture
def world(stripe_emulator, api_client, settings):
    settings.STRIPE_MAX_RETRIES = 2
    settings.STRIPE_TIMEOUT_SECONDS = 0.5  # a hang of a second is a timeout
    return World(stripe_emulator, api_client)


# --- A reporter in a process of its own, killed with SIGKILL ----------------------------------------------
CHILD = r"""
import datetime as dt, sys, time
import django
django.setup()
from resolutions.services import metering
mode, account_id, now = sys.argv[1], int(sys.argv[2]), dt.datetime.fromisoformat(sys.argv[3])
if mode == "after-send":  # Stripe answered; block before the row's answer is committed
    real_send = metering._send
    def send_then_block(*args, **kwargs):
        real_send(*args, **kwargs)
        print("sent", flush=True)
        time.sleep(600)
    metering._send = send_then_block
metering.meter_report_account(account_id=account_id, now=now)
print("finished", flush=True)
"""


def _reporter_process(emulator, account_id: int, now: dt.datetime, mode: str) -> subprocess.Popen:
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "billing_portal.settings_test", "DATABASE_URL": url,
           "STRIPE_API_BASE": emulator.url, "STRIPE_TIMEOUT_SECONDS": "30", "STRIPE_MAX_RETRIES": "0"}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(account_id), now.isoformat()],
        cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def _lock_held_elsewhere(account_id: int) -> bool:
    with session_lock("meter-report", account_id) as acquired:
        return not acquired


def _kill_and_wait_for_the_lock(child: subprocess.Popen, account_id: int) -> None:
    assert _lock_held_elsewhere(account_id)  # the child reports the account: nobody else may
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _lock_held_elsewhere(account_id):  # PostgreSQL ends the dead client's session, and its lock
        assert time.monotonic() < deadline, "the killed reporter's session lock outlived it"
        time.sleep(0.05)


def _read_line(child: subprocess.Popen, expected: str, seconds: float = 60) -> None:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(child.stdout.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    assert result and result[0].strip() == expected, (result, child.poll())


def test_ten_thousand_resolutions_reach_stripe_exactly_once_through_429s_500s_hangs_and_killed_reporters(
    world, manager, settings
):
    settings.METER_REPORT_THREADS = 4
    world.provision(50)
    # 10,000 resolutions, 151 to 249 per account, spread over five hourly windows of the period.
    for k, provisioned in enumerate(world.accounts):
        n = 151 + 2 * k
        world.post(provisioned, [START + MINUTE + i * (4 * HOUR) / n for i in range(n)])
    funded_at = START + 4 * HOUR + 2 * MINUTE
    assert resolutions_fund(now=funded_at).overage == 10_000
    now = START + 5 * HOUR  # every window has closed

    # A reporter killed after Stripe recorded its first event, before its answer was committed.
    killed = [world.accounts[0].account.pk, world.accounts[1].account.pk]
    world.emulator.set_time(ts(now))
    child = _reporter_process(world.emulator, killed[0], now, "after-send")
    _read_line(child, "sent")
    assert MeterReport.objects.filter(account_id=killed[0], state=State.SENT).count() == 1
    _kill_and_wait_for_the_lock(child, killed[0])
    # A reporter killed while its call hangs in Stripe (which records it when it wakes).
    world.emulator.add_fault(path_prefix=EVENTS_PATH, method="POST", mode="hang", count=1, hang_seconds=1.5)
    child = _reporter_process(world.emulator, killed[1], now, "in-request")
    deadline = time.monotonic() + 60
    while not any(r["fault"] == "hang" for r in world.meter_posts()):
        assert time.monotonic() < deadline and child.poll() is None, "the child never reached Stripe"
        time.sleep(0.05)
    _kill_and_wait_for_the_lock(child, killed[1])
    world.wait_for_the_emulator()
    assert world.stripe_total(world.accounts[1].stripe_customer_id) > 0  # Stripe has it; the portal says SENT
    assert MeterReport.objects.filter(account_id__in=killed, state=State.SENT).count() == 2

    # Stripe misbehaves, in this order, for the calls of the following rounds (4 accounts at a time).
    faults = [
        dict(mode="429", count=15, retry_after=0.05),  # a short storm: slept through in-process
        dict(mode="500_after_record", count=20),  # recorded, answer lost: resent with the same key
        dict(mode="hang", count=6, hang_seconds=1.0),  # past the 0.5 s client timeout
        dict(mode="429", count=40, retry_after=120),  # longer than we wait in-process: the rows wait
        dict(mode="500", count=10),
    ]
    for fault in faults:
        world.emulator.add_fault(path_prefix=EVENTS_PATH, method="POST", **fault)
    first = world.report(now)
    assert first.unavailable > 0 and any("wait 120s" in u for u in first.unreachable), first.unreachable
    for row in MeterReport.objects.filter(last_error__contains="wait 120s"):
        assert row.next_attempt_at >= now + dt.timedelta(seconds=120)  # never sooner than Stripe asked
    # Disputes while the storm goes on: a correction of -1 for ten accounts' reported windows.
    with clock.frozen(now):
        for provisioned in world.accounts[10:20]:
            resolution = Resolution.objects.filter(account_id=provisioned.account.pk).order_by("id").first()
            resolution_void(resolution=resolution, actor=manager, reason="disputed")
    settled = world.settle(now + MINUTE)
    world.wait_for_the_emulator()
    assert world.emulator.faults.list() == []  # every fault was met
    seen = {r["fault"] for r in world.meter_posts()}
    assert seen >= {"429", "500_after_record", "hang", "500"}, seen

    world.assert_stripe_holds_the_portals_overage()
    assert sum(world.stripe_total(p.stripe_customer_id) for p in world.accounts) == 10_000 - 10
    assert MeterReport.objects.filter(quantity=-1).count() == 10
    # A further cycle sends nothing.
    posts = len(world.meter_posts())
    again = world.report(settled + HOUR)
    assert (again.accounts, again.confirmed) == (0, 0) and len(world.meter_posts()) == posts


# --- Retry paths ---------------------------------------------------------------------------------------
@pytest.fixture
def small_world(world):
    world.provision(1)
    world.post(world.accounts[0], [START + 40 * MINUTE, START + 45 * MINUTE])
    resolutions_fund(now=START + 45 * MINUTE)
    return world


def test_a_redelivered_task_sends_nothing_twice(small_world, monkeypatch):
    from resolutions.services import metering
    from resolutions.tasks import meter_report_task

    world, account_id = small_world, small_world.accounts[0].account.pk
    now = START + 2 * HOUR
    world.emulator.set_time(ts(now))
    real_send = metering._send

    def send_then_die(*args, **kwargs):
        real_send(*args, **kwargs)
        raise SystemExit("worker killed before the task was acknowledged")

    monkeypatch.setattr(metering, "_send", send_then_die)
    with clock.frozen(now), pytest.raises(SystemExit):
        meter_report_task.apply(args=[account_id], throw=True)
    monkeypatch.setattr(metering, "_send", real_send)
    assert MeterReport.objects.get().state == State.SENT and len(world.meter_posts()) == 1
    with clock.frozen(now + MINUTE):  # the broker delivers it again (acks_late), then once more
        first = meter_report_task.apply(args=[account_id]).get()
        second = meter_report_task.apply(args=[account_id]).get()
    assert first["confirmed"] == 1 and second == {**second, "confirmed": 0, "planned": 0}
    assert len(world.meter_posts()) == 2  # the resend of the unanswered row; nothing for the third run
    world.assert_stripe_holds_the_portals_overage()
    assert world.stripe_total(world.accounts[0].stripe_customer_id) == 2


def test_two_deliveries_at_once_one_finds_the_account_busy(small_world, monkeypatch):
    from resolutions.services import metering
    from resolutions.tasks import meter_report_task

    world, account_id = small_world, small_world.accounts[0].account.pk
    now = START + 2 * HOUR
    world.emulator.set_time(ts(now))
    inside, release = threading.Event(), threading.Event()
    real_send = metering._send

    def slow_send(*args, **kwargs):
        inside.set()
        release.wait(10)
        return real_send(*args, **kwargs)

    monkeypatch.setattr(metering, "_send", slow_send)
    results = []
    with clock.frozen(now):
        first = threading.Thread(target=lambda: results.append(meter_report_task.apply(args=[account_id]).get()))
        first.start()
        assert inside.wait(10)
        second = meter_report_task.apply(args=[account_id]).get()
        release.set()
        first.join(10)
    assert second["busy"] and results[0]["confirmed"] == 1
    assert len(world.meter_posts()) == 1
    world.assert_stripe_holds_the_portals_overage()


def test_a_lost_answer_is_confirmed_by_stripes_already_exists_answer(small_world, settings):
    world = small_world
    settings.STRIPE_MAX_RETRIES = 0  # the lost answer ends the attempt
    world.emulator.add_fault(path_prefix=EVENTS_PATH, method="POST", mode="500_after_record", count=1)
    now = START + 2 * HOUR
    run = world.report(now)
    assert run.unavailable == 1 and run.confirmed == 0
    row = MeterReport.objects.get()
    assert row.state == State.SENT and world.stripe_total(world.accounts[0].stripe_customer_id) == 2
    # Stripe keeps a saved answer for an idempotency key no longer than it remembers the identifier (and
    # may prune it): then the resend is answered only by the identifier.
    with world.emulator.store.lock:
        world.emulator.store.idempotency.clear()
    assert world.report(row.next_attempt_at).confirmed == 1
    resend = world.meter_posts()[-1]
    assert resend["status"] == 400 and resend["params"]["identifier"] == row.identifier
    row.refresh_from_db()
    assert row.state == State.CONFIRMED and row.last_error == ""
    world.assert_stripe_holds_the_portals_overage()
    assert world.stripe_total(world.accounts[0].stripe_customer_id) == 2


def _replay_500_for_the_lost_answer(emulator) -> None:
    """Make the emulator's saved answer to the recorded meter event the 500 Stripe would replay for its key."""
    from stripe_emulator import errors

    with emulator.store.lock:
        for saved in emulator.store.idempotency.values():
            if saved["path"] == EVENTS_PATH:
                saved["status"], saved["body"] = 500, errors.api_error().body(saved["request_id"])


def _report_until_settled(world, start: dt.datetime, *, rounds: int):
    """Report at each attempt's time (at least a minute apart) until the only row is no longer open, at most
    `rounds` times: (the row, the last report's time)."""
    now = start
    for _ in range(rounds):
        row = MeterReport.objects.get()
        if row.state not in METER_OPEN_STATES:
            break
        now = max(now + MINUTE, row.next_attempt_at or now)
        world.report(now)
    return row, now


def test_a_lost_answer_replayed_as_a_500_for_its_key_is_confirmed_from_the_meter_not_sent_again(small_world, settings):
    """Stripe (API v1) saves the first answer for an idempotency key once the endpoint began, "including 500
    errors", and replays it to every retry with that key for 24 hours. (The emulator replays the recorded
    200 instead; here its saved answer is made the 500 Stripe would replay.) Retries with the same key can
    then never succeed: after 23 hours the reporter must ask the meter instead of sending again, since
    once Stripe forgets the key and the identifier a resend would count twice."""
    world = small_world
    world.emulator.add_fault(path_prefix=EVENTS_PATH, method="POST", mode="500_after_record", count=1)
    sent_at = START + 2 * HOUR
    settings.STRIPE_MAX_RETRIES = 0
    assert world.report(sent_at).unavailable == 1
    settings.STRIPE_MAX_RETRIES = 2
    _replay_500_for_the_lost_answer(world.emulator)
    row, now = _report_until_settled(world, sent_at, rounds=120)
    assert now - sent_at < dt.timedelta(hours=24) + HOUR, now
    # Every answer after the lost one was the replayed 500: a 200 would be Stripe recording the event again
    # (which the emulator, keeping one event per identifier, would not show in its totals).
    assert [p["status"] for p in world.meter_posts()[1:] if p["status"] != 500] == []
    (event,) = world.emulator.store.meter_events.values()
    assert event["created"] == ts(sent_at)
    world.assert_stripe_holds_the_portals_overage()
    assert world.stripe_total(world.accounts[0].stripe_customer_id) == 2


def test_a_lost_answer_still_unanswered_at_its_deadline_is_confirmed_from_the_meter(world, settings):
    """The period's last window: its event's answer is lost and every retry gets the replayed 500 until the
    event's deadline (the period's invoice is final) passes. Stripe holds the event, so the row is
    confirmed from the meter's summary: neither sent again after the invoice nor made an adjustment."""
    world.provision(1)
    period_end = START + dt.timedelta(days=30)  # 2 Dec 2026 09:30:15: a monthly period from 2 Nov
    world.post(world.accounts[0], [period_end - 20 * MINUTE])
    resolutions_fund(now=period_end - 19 * MINUTE)
    window = MeterWindow.objects.get()
    assert window.period_end == period_end and window.end == period_end
    settings.STRIPE_MAX_RETRIES = 0
    world.emulator.add_fault(path_prefix=EVENTS_PATH, method="POST", mode="500_after_record", count=1)
    sent_at = period_end + MINUTE
    assert world.report(sent_at).unavailable == 1
    _replay_500_for_the_lost_answer(world.emulator)
    row, now = _report_until_settled(world, sent_at, rounds=20)
    assert row.state == State.CONFIRMED, (now, row.state, row.last_error)
    assert now <= period_end + 2 * HOUR  # soon after the deadline (the invoice's grace, less 10 minutes)
    assert [p["status"] for p in world.meter_posts()[1:] if p["status"] != 500] == []
    world.assert_stripe_holds_the_portals_overage()


def test_an_outage_of_a_day_keeps_backing_off_at_the_longest_delay_and_never_fails_the_run(small_world, settings):
    """Every attempt of the row fails for a day (more than 31 attempts): its backoff stays at the longest
    delay instead of overflowing, and the run records Stripe's failure rather than an error."""
    world = small_world
    settings.STRIPE_MAX_RETRIES = 0
    world.emulator.add_fault(path_prefix=EVENTS_PATH, method="POST", mode="500", count=1000)
    now = START + 2 * HOUR
    for _ in range(50):
        run = world.report(now)  # asserts run.errors == []
        assert run.unavailable == 1
        row = MeterReport.objects.get()
        assert now + MINUTE <= row.next_attempt_at <= now + 30 * MINUTE
        now = row.next_attempt_at
    assert row.attempts == 50 and row.state == State.SENT
    world.emulator.faults.clear()
    assert world.report(now).confirmed == 1
    world.assert_stripe_holds_the_portals_overage()


# --- A real Celery worker on Redis, through the billing cycle ------------------------------------------
def test_a_worker_reports_through_the_billing_cycle_and_a_429_makes_the_task_retry_itself(
    world, settings, celery_worker_on_redis, monkeypatch
):
    """METER_REPORTING = "tasks": the billing cycle queues one meter_report_task per account; a worker on
    Redis runs them. A 429 whose Retry-After is longer than we wait in-process makes the task retry itself,
    no sooner than Stripe asked. The worker shares this process's clock, so the retry's countdown is
    lived through by moving the clock on (and delivered after a fraction of a second)."""
    from billing_portal.celery import app
    from resolutions.billing_cycle import billing_cycle_run
    from resolutions.tasks import meter_report_task

    settings.METER_REPORTING = "tasks"
    world.provision(3)
    for k, provisioned in enumerate(world.accounts):
        world.post(provisioned, [START + (10 + 20 * i) * MINUTE for i in range(5 + k)])
    task = app.tasks[meter_report_task.name]
    countdowns: list[float] = []
    clocks = contextlib.ExitStack()

    def retry_sooner(*args, countdown=None, **kwargs):
        countdowns.append(countdown)
        later = clock.now() + dt.timedelta(seconds=countdown)
        clocks.enter_context(clock.frozen(later))
        world.emulator.set_time(ts(later))
        return type(task).retry(task, *args, countdown=0.2, **kwargs)

    monkeypatch.setattr(task, "retry", retry_sooner, raising=False)
    now = START + 5 * HOUR
    world.emulator.set_time(ts(now))
    world.emulator.add_fault(path_prefix=EVENTS_PATH, method="POST", mode="429", count=1, retry_after=30)
    with clocks, clock.frozen(now):
        cycle = billing_cycle_run(now=now)
        assert cycle.failed == [], cycle.failed
        assert cycle.step("report").counts["meter_accounts_queued"] == 3
        deadline = time.monotonic() + 30
        while MeterReport.objects.exclude(state=State.CONFIRMED).exists() or meter_accounts_due(now=clock.now()):
            assert time.monotonic() < deadline, list(MeterReport.objects.values("identifier", "state", "last_error"))
            time.sleep(0.1)
        assert len(countdowns) == 1 and countdowns[0] >= 30  # the task retried itself, as Stripe asked
        world.wait_for_the_emulator()
        world.assert_stripe_holds_the_portals_overage()
        assert [world.stripe_total(p.stripe_customer_id) for p in world.accounts] == [5, 6, 7]
        posts = len(world.meter_posts())
        later = clock.now() + HOUR
        with clock.frozen(later):
            world.emulator.set_time(ts(later))
            assert billing_cycle_run(now=later).step("report").counts["meter_accounts_queued"] == 0
        time.sleep(0.5)
        assert len(world.meter_posts()) == posts
