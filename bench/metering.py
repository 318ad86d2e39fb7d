"""Meter reporting benchmark (DESIGN §3.5): a million overage resolutions aggregated into reporting windows and
reported to the Stripe emulator over HTTP, then the lag from an event's arrival to its overage being in Stripe
at a steady 1,000 events/s.

Run from the project root:  .venv/bin/python bench/metering.py [--resolutions 1000000] [--accounts 1000]
                            .venv/bin/python bench/metering.py --quick          # a smoke check, not recorded

One run: the Stripe emulator in this process on a free port (as conftest.py's `_stripe_emulator_server`), a
scratch PostgreSQL database (dropped and recreated), `manage.py migrate` in a subprocess, then Django in-process
against both, with the portal's clock and the emulator's frozen as the tests freeze them.

Part 1, volume (frozen clocks, hour windows): `stripe_setup`, then ACCOUNTS accounts made by `account_provision`
(Stripe customer, subscription, dj-stripe mirror; no credit packs, and fin-standard has no included allowance,
so every resolution is overage), their resolutions COPYed as unfunded fixture rows resolved over HOURS hours
from the subscriptions' start. Timed: `resolutions_fund(now=...)` (funding and the window counts, resolutions/s),
beside a loop of single-row autocommit UPDATEs (bench/funding.py's baseline); then `meter_reports_run(now=...)`
(wall time, and the calls the emulator received), beside plain HTTP POSTs of the same meter event from one
thread (requests, keep-alive), half before and half after the reporting. Verified: per customer the emulator's
meter event total equals the account's overage in the portal, one event per window, every report row
confirmed, `meter_reconcile` finds no difference, and a second `meter_reports_run` makes no call.

Part 2, lag (real time, short windows): METER_WINDOW_SECONDS is set to --lag-window (60 s) in this process;
LAG_ACCOUNTS more accounts are provisioned; gunicorn serves the ingestion endpoint (EVENT_EVALUATION=inline)
and conversations (ai_answer + customer_confirmed) are POSTed at --lag-rate events/s for --lag-seconds, while
`billing_cycle_run(now=clock.now())` ticks every --tick seconds in a thread. Lag: from the moment the batch
carrying a resolution's customer_confirmed was sent to the moment the emulator received the meter event that
carries it (accepted). p50 and p95 against the target of one window + 120 s.

The report is printed and appended to bench/RESULTS.md (not with --quick or --no-results). Exit status 0 when
the run measured (a missed target is marked **MISSED**), 2 when the measurement is invalid (a setup step failed
or a verification failed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import psycopg
import requests
import urllib3
from funding import (
    AccountPlan,
    BenchError,
    Check,
    code_changes,
    code_digest,
    code_state,
    django_setup,
    machine_facts,
    migrate,
    resolutions_copy,
    results_append,
    skewed_counts,
    status,
)
from funding import baseline as update_baseline
from ingest import API_PATH, Server
from scratch_db import db_drop, db_recreate, db_url_for, django_db_url, portal_env, scratch_db_arguments, step

ROOT = Path(__file__).resolve().parent.parent
ACTOR = "bench:metering"
METER_EVENTS_PATH = "/v1/billing/meter_events"
LAG_SLACK_S = 120  # the lag target: one window + 2 minutes
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- the emulator, counting what it receives ---------------------------------------------------------------


def emulator_start():
    """The emulator in this process on a free port, its request log replaced by one that also counts every
    request by path and status and keeps every meter event request (the stock log keeps the last 10,000)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from stripe_emulator import EmulatorServer
    from stripe_emulator.control import RequestLog

    class CountingLog(RequestLog):
        def __init__(self) -> None:
            super().__init__(maxlen=2000)
            self.all: list[dict] = []  # every entry; its status is filled in after the request is handled

        def add(self, entry: dict) -> dict:
            with self._lock:
                self.all.append(entry)
            return super().add(entry)

        def mark(self) -> int:
            with self._lock:
                return len(self.all)

        def since(self, mark: int) -> list[dict]:
            with self._lock:
                return self.all[mark:]

    server = EmulatorServer(port=0)
    server.requests = CountingLog()
    return server.start()


def calls_summary(entries: list[dict]) -> dict:
    meter = [e for e in entries if e["method"] == "POST" and e["path"] == METER_EVENTS_PATH]
    by_status = Counter(e["status"] for e in meter)
    identifiers = {e["params"].get("identifier") for e in meter}
    other = Counter(f"{e['method']} {e['path'].split('/')[2] if e['path'].count('/') > 1 else e['path']}"
                    for e in entries if e not in meter)  # fmt: skip
    return {
        "total": len(entries), "meter_posts": len(meter), "meter_identifiers": len(identifiers),
        "meter_by_status": dict(by_status), "other": dict(other),
    }  # fmt: skip


# --- part 1: fixture ---------------------------------------------------------------------------------------


def stripe_catalog(emulator, at: dt.datetime) -> None:
    from django.core.management import call_command

    from billing_portal import clock

    emulator.set_time(int(at.timestamp()))
    with clock.frozen(at):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())


def accounts_provision(n: int, prefix: str, at: dt.datetime | None, threads: int = 4) -> list:
    """n accounts through account_provision (Stripe customer and subscription over HTTP), the portal's clock
    frozen at `at` (the emulator's must be frozen there too) or running. The first alone (it creates the plan
    version's Stripe prices), the rest from `threads` threads: this is set-up, not measured."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from accounts.models import PricePlan
    from accounts.services.provisioning import account_provision
    from billing_portal import clock

    plan = PricePlan.objects.get(slug="fin-standard")
    done = [0]

    def one(i: int):
        provisioned = account_provision(name=f"{prefix} {i:04d}", plan=plan, seats=1, actor=ACTOR)
        done[0] += 1
        if done[0] % 200 == 0:
            print(f"    {done[0]:,} provisioned", flush=True)
        return provisioned

    def chunk(indexes: range) -> list:
        try:
            return [one(i) for i in indexes]
        finally:
            connection.close()  # this thread's own

    with clock.frozen(at) if at else contextlib.nullcontext():
        out = [one(0)]
        size = -(-(n - 1) // threads)
        parts = [range(start, min(n, start + size)) for start in range(1, n, size)] if n > 1 else []
        with ThreadPoolExecutor(max_workers=max(1, len(parts))) as pool:
            for provisioned in pool.map(chunk, parts):
                out += provisioned
    return out


def plan_allowance_check() -> Check:
    """Every resolution of an account without packs is overage only if the plan includes nothing: no free tier
    (a tier with a zero unit amount and no flat amount) in the default plan's version."""
    from accounts.models import PricePlan

    version = PricePlan.objects.get(slug="fin-standard").versions.order_by("-number").first()
    tiers = list(version.tiers.all()) if version.tiers_mode else []
    free = [t for t in tiers if not t.unit_amount_decimal and not t.flat_amount]
    ok = version.unit_amount_decimal > 0 and not free if not tiers else not free
    return Check(
        "the plan includes no free allowance",
        ok,
        f"fin-standard v{version.number}: {version.unit_amount_decimal} minor units per resolution, "
        f"tiers {version.tiers_mode or 'none'}",
    )


# --- part 1: HTTP baseline ---------------------------------------------------------------------------------


class HttpBaseline:
    """Plain meter event POSTs to the emulator from one thread (requests.Session, keep-alive): the same
    endpoint, parameters, headers and idempotency keys as the portal's, for a customer of its own."""

    def __init__(self, url: str) -> None:
        from django.conf import settings

        self.url = url
        self.session = requests.Session()
        self.session.headers.update({
            "Authorization": f"Bearer {settings.STRIPE_SECRET_KEY}", "Stripe-Version": settings.STRIPE_API_VERSION,
        })  # fmt: skip
        response = self.session.post(f"{url}/v1/customers", data={"name": "metering bench baseline"})
        if response.status_code != 200:
            raise BenchError(f"baseline customer: {response.status_code} {response.text[:300]}")
        self.customer = response.json()["id"]
        self.sent = 0

    def run(self, calls: int, timestamp: int) -> float:
        from django.conf import settings

        from accounts.services.stripe_catalog import METER_CUSTOMER_KEY, METER_VALUE_KEY

        t = time.perf_counter()
        for _ in range(calls):
            identifier = f"bench-baseline-{self.sent}"
            data = {
                "event_name": settings.STRIPE_METER_EVENT_NAME, "identifier": identifier, "timestamp": str(timestamp),
                f"payload[{METER_CUSTOMER_KEY}]": self.customer, f"payload[{METER_VALUE_KEY}]": "125",
            }  # fmt: skip
            headers = {"Idempotency-Key": f"meter-report:{identifier}:0"}
            response = self.session.post(f"{self.url}{METER_EVENTS_PATH}", data=data, headers=headers)
            if response.status_code != 200:
                raise BenchError(f"baseline meter event: {response.status_code} {response.text[:300]}")
            self.sent += 1
        return time.perf_counter() - t


# --- part 1: instrumentation of the reporting run ------------------------------------------------------------


class ReportStats:
    """While reporting: time inside stripe_client.call (summed over threads), SQL statements and their time
    (every connection, the session-lock connections included), and database connections opened."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stripe_calls = 0
        self.stripe_s = 0.0
        self.sql = 0
        self.sql_s = 0.0
        self.connections = 0

    def __enter__(self):
        from django.db.backends.signals import connection_created

        from billing_portal import stripe_client

        self._real_call = stripe_client.call

        def timed_call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return self._real_call(*args, **kwargs)
            finally:
                with self.lock:
                    self.stripe_calls += 1
                    self.stripe_s += time.perf_counter() - t

        stripe_client.call = timed_call
        connection_created.connect(self._connected, weak=False)
        return self

    def _connected(self, sender, connection, **kwargs) -> None:
        with self.lock:
            self.connections += 1
        if self._execute not in connection.execute_wrappers:  # a wrapper object reconnects: wrap it once
            connection.execute_wrappers.append(self._execute)

    def _execute(self, execute, sql, params, many, context):
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            with self.lock:
                self.sql += 1
                self.sql_s += time.perf_counter() - t

    def __exit__(self, *exc) -> None:
        from django.db.backends.signals import connection_created

        from billing_portal import stripe_client

        stripe_client.call = self._real_call
        connection_created.disconnect(self._connected)


def report_all(emulator, now: dt.datetime, max_rounds: int = 4):
    """meter_reports_run at `now` until nothing is due; a round that leaves work (Stripe unavailable, a
    refusal) is followed by one 2 minutes later (the rows' backoff), at most max_rounds. Returns the runs."""
    from billing_portal import clock
    from resolutions.services.metering import meter_accounts_due, meter_reports_run

    runs = []
    for _ in range(max_rounds):
        emulator.set_time(int(now.timestamp()))
        with clock.frozen(now):
            runs.append(meter_reports_run(now=now))
            if not meter_accounts_due(now=now + 2 * MINUTE):
                break
        now += 2 * MINUTE
    return runs


# --- part 1: verification ------------------------------------------------------------------------------------


def stripe_totals(emulator, customers: set[str]) -> tuple[dict[str, int], dict[str, list[dict]]]:
    with emulator.store.lock:
        events = [dict(e) for e in emulator.store.meter_events.values() if e["customer"] in customers]
    totals: dict[str, int] = defaultdict(int)
    by_customer: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        if not e["canceled"]:
            totals[e["customer"]] += e["value"]
        by_customer[e["customer"]].append(e)
    return totals, by_customer


def portal_overage(conninfo: str, account_ids: list[int]) -> dict[int, int]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT account_id, count(*) FROM resolutions_resolution WHERE account_id = ANY(%s) "
            "AND funding = 'overage' AND voided_at IS NULL GROUP BY account_id",
            [account_ids],
        ).fetchall()
    return dict(rows)


def totals_check(emulator, conninfo: str, provisioned: list, label: str) -> tuple[Check, dict]:
    """The emulator's meter event total per customer equals the account's overage in the portal, exactly."""
    customers = {p.stripe_customer_id: p.account.pk for p in provisioned}
    totals, by_customer = stripe_totals(emulator, set(customers))
    overage = portal_overage(conninfo, list(customers.values()))
    wrong = [(c, a, totals.get(c, 0), overage.get(a, 0)) for c, a in customers.items()
             if totals.get(c, 0) != overage.get(a, 0)]  # fmt: skip
    detail = (
        f"{len(customers):,} customers; Stripe {sum(totals.values()):,}, portal {sum(overage.values()):,}; "
        f"{len(wrong)} differ" + (f" (first: {wrong[0]})" if wrong else "")
    )
    return Check(f"{label}: Stripe's meter total per customer == the account's overage", not wrong, detail), by_customer


def windows_check(provisioned: list, by_customer: dict, hours: int, t0: dt.datetime) -> list[Check]:
    from django.db.models import F

    from resolutions.models import MeterReport, MeterWindow

    ids = [p.account.pk for p in provisioned]
    windows = MeterWindow.objects.filter(account_id__in=ids)
    n_windows = windows.count()
    unreported = windows.exclude(overage=F("reported")).count()
    states = Counter(MeterReport.objects.filter(account_id__in=ids).values_list("state", flat=True))
    expected_ts = {int((t0 + k * HOUR).timestamp()) for k in range(hours)}
    bad_events = 0
    events = 0
    for p in provisioned:
        got = by_customer.get(p.stripe_customer_id, [])
        events += len(got)
        stamps = [e["timestamp"] for e in got]
        bad_events += len(stamps) != len(set(stamps)) or not set(stamps) <= expected_ts
    return [
        Check(
            "one window per account and hour, each reported in full",
            n_windows == len(ids) * hours and unreported == 0,
            f"{n_windows:,} windows (expected {len(ids) * hours:,}), {unreported} with overage != reported",
        ),
        Check(
            "every report row confirmed, one meter event per window, timestamped at its window's start",
            set(states) == {MeterReport.State.CONFIRMED} and states[MeterReport.State.CONFIRMED] == n_windows
            and events == n_windows and bad_events == 0,
            f"rows {dict(states)}; {events:,} meter events in the emulator; {bad_events} accounts with a "
            "timestamp twice or outside the windows",
        ),
    ]  # fmt: skip


# --- part 2: lag ---------------------------------------------------------------------------------------------


@dataclass
class Posted:
    account_id: int
    sent_at: float  # time.time() just before the request went out


class Ticker(threading.Thread):
    """billing_cycle_run(now=clock.now()) every `tick` seconds (from the start of one to the next; a cycle that
    runs longer is followed at once), as the minutely Celery task would, but more often."""

    def __init__(self, tick: float) -> None:
        super().__init__(name="billing-cycle", daemon=True)
        self.tick = tick
        self.stop = threading.Event()
        self.cycles: list[tuple[float, float, list[str]]] = []  # (started, seconds, failed steps)
        self.error: str = ""

    def run(self) -> None:
        from django.db import connection

        from billing_portal import clock
        from resolutions.billing_cycle import billing_cycle_run

        try:
            while not self.stop.is_set():
                started = time.time()
                result = billing_cycle_run(now=clock.now())
                failed = [f"{s.name}: {s.error}" for s in result.failed] + ([result.skipped] if result.skipped else [])
                self.cycles.append((started, time.time() - started, failed))
                self.stop.wait(max(0.0, started + self.tick - time.time()))
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            self.error = f"{exc.__class__.__name__}: {exc}"
        finally:
            connection.close()


def lag_post(server: Server, keys: dict[int, str], rate: int, seconds: float, batch_every: float):
    """Post conversations (ai_answer 2 s before, customer_confirmed at the moment of sending) at `rate` events/s,
    one batch every `batch_every` seconds, to the accounts in turn, on a fixed schedule (open loop: a late batch
    is sent at once and its lag counted from when it really left). Returns ({(account, conversation): Posted},
    batch latencies, refused batches)."""
    per_batch = max(2, round(rate * batch_every) // 2 * 2)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=1)
    accounts = sorted(keys)
    posted: dict[tuple[int, str], Posted] = {}
    latencies: list[float] = []
    refused: list[str] = []
    start = time.time() + 0.5
    n_batches = int(seconds / batch_every)
    for k in range(n_batches):
        due = start + k * batch_every
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        account_id = accounts[k % len(accounts)]
        sent_at = time.time()
        confirmed = dt.datetime.fromtimestamp(sent_at, dt.UTC)
        answered = confirmed - dt.timedelta(seconds=2)
        events = []
        conversations = []
        for j in range(per_batch // 2):
            conv = f"lag-{k}-{j}"
            conversations.append(conv)
            events.append({"id": f"a-{k}-{j}", "conversation_id": conv, "type": "ai_answer",
                           "occurred_at": answered.isoformat(timespec="milliseconds")})  # fmt: skip
            events.append({"id": f"c-{k}-{j}", "conversation_id": conv, "type": "customer_confirmed",
                           "occurred_at": confirmed.isoformat(timespec="milliseconds")})  # fmt: skip
        headers = {"Authorization": f"Bearer {keys[account_id]}", "Content-Type": "application/json"}
        body = json.dumps({"events": events}).encode()
        sent_at = time.time()
        response = pool.urlopen("POST", API_PATH, body=body, headers=headers, retries=False)
        latencies.append(time.time() - sent_at)
        if response.status != 202 or json.loads(response.data).get("accepted") != len(events):
            refused.append(f"batch {k}: {response.status} {response.data[:200]!r}")
            continue
        for conv in conversations:
            posted[(account_id, conv)] = Posted(account_id, sent_at)
    elapsed = time.time() - start
    return posted, latencies, refused, n_batches * per_batch, elapsed


def lag_measure(emulator, posted: dict[tuple[int, str], Posted], account_ids: list[int], mark: int):
    """Each posted resolution's lag: which report row carries it (a window's resolutions, in id order, which
    is the order funding reads them, fill its rows in sequence order) and when the emulator received that
    row's meter event (the first attempt it accepted)."""
    from resolutions.models import MeterReport, MeterWindow, Resolution

    received: dict[str, float] = {}
    for e in emulator.requests.since(mark):
        if e["path"] == METER_EVENTS_PATH and e["status"] == 200:
            received.setdefault(e["params"].get("identifier"), e["time"])
    lags: list[float] = []
    missing = 0
    for account_id in account_ids:
        windows = list(MeterWindow.objects.filter(account_id=account_id).order_by("start"))
        reports = defaultdict(list)
        for r in MeterReport.objects.filter(account_id=account_id).order_by("sequence"):
            reports[r.window_id].append(r)
        resolutions = Resolution.objects.filter(account_id=account_id).order_by("id")
        by_window: dict[int, list[str]] = defaultdict(list)
        for conv, resolved_at in resolutions.values_list("conversation_id", "resolved_at"):
            window = next((w for w in windows if w.start <= resolved_at < w.end), None)
            if window is None:
                missing += 1
                continue
            by_window[window.pk].append(conv)
        for window_id, convs in by_window.items():
            slots = []
            for r in reports[window_id]:
                at = received.get(r.identifier) if r.state == MeterReport.State.CONFIRMED else None
                slots += [at] * max(r.quantity, 0)
            for i, conv in enumerate(convs):
                at = slots[i] if i < len(slots) else None
                item = posted.get((account_id, conv))
                if at is None or item is None:
                    missing += 1
                    continue
                lags.append(at - item.sent_at)
    return lags, missing


def lag_carried(account_ids: list[int]) -> int:
    from django.db.models import Sum

    from resolutions.models import MeterReport

    rows = MeterReport.objects.filter(account_id__in=account_ids, state=MeterReport.State.CONFIRMED)
    return rows.aggregate(n=Sum("quantity"))["n"] or 0


# --- main ------------------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, default=1_000_000, help="overage resolutions to report")
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--hours", type=int, default=8, help="resolved within this many hours (hour windows)")
    parser.add_argument("--skew", type=float, default=0.0, help="Zipf exponent of resolutions per account (0: even)")
    parser.add_argument("--baseline-calls", type=int, default=2_000, help="plain HTTP POSTs (half before, half after)")
    parser.add_argument("--baseline-rows", type=int, default=10_000, help="rows of the single-row UPDATE loop")
    parser.add_argument("--lag-seconds", type=float, default=150.0, help="posting time of part 2 (0: skip part 2)")
    parser.add_argument("--lag-rate", type=int, default=1_000, help="events/s posted in part 2")
    parser.add_argument("--lag-accounts", type=int, default=10)
    parser.add_argument("--lag-window", type=int, default=60, help="METER_WINDOW_SECONDS of part 2")
    parser.add_argument("--tick", type=float, default=5.0, help="seconds between billing cycles in part 2")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers in part 2")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke check: 20,000 resolutions, 40 accounts, 75 s of lag; not recorded")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    scratch_db_arguments(parser, db="bench_metering")
    args = parser.parse_args(argv)
    if args.quick:
        args.resolutions, args.accounts, args.baseline_calls, args.baseline_rows = 20_000, 40, 400, 2_000
        args.lag_seconds, args.lag_accounts = 75.0, 4
        args.no_results = True
    if args.accounts < 1 or args.resolutions < args.accounts * args.hours:
        parser.error("--accounts must be at least 1 and --resolutions at least --accounts x --hours")
    if not 1 <= args.hours <= 24:
        parser.error("--hours must be 1 to 24")
    if args.lag_window < 60 or args.lag_window % 60 or 86400 % args.lag_window:
        parser.error("--lag-window must divide a day into whole minutes (60 ... 86400)")
    if args.lag_seconds and not 30 <= args.lag_seconds + args.lag_window + 3 * args.tick <= 300:
        parser.error("part 2 is bounded to 5 minutes: --lag-seconds + --lag-window + 3 x --tick must be <= 300")
    return args


def main(argv=None) -> int:  # noqa: C901 - one run, in order
    args = parse_args(argv)
    command = shlex.join(sys.orig_argv)
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    load_start = os.getloadavg()
    facts = machine_facts(args.pg)
    code, code_start = code_state()
    conninfo = db_url_for(args.pg, args.db)
    rng = random.Random(args.seed)
    emulator = emulator_start()
    env = portal_env(django_db_url(args.pg, args.db))
    env.update(STRIPE_API_BASE=emulator.url, STRIPE_BACKOFF_BASE_SECONDS="0.05", EVENT_EVALUATION="inline")
    work_dir = tempfile.TemporaryDirectory(prefix="bench-metering-")
    checks: list[Check] = []
    try:
        t = step(f"emulator at {emulator.url}; scratch database {args.db}: drop, create, migrate (about a minute)")
        db_recreate(args.pg, args.db)
        migrate(env)
        django_setup(env)
        from django.conf import settings

        from billing_portal import clock

        print(f"    {time.perf_counter() - t:.0f} s")

        # Part 1's instants: all in the past, so that part 2's real-time billing cycles come after them.
        real_now = dt.datetime.now(dt.UTC)
        t0 = real_now.replace(minute=0, second=0, microsecond=0) - (args.hours + 2) * HOUR
        t_fund = t0 + args.hours * HOUR + MINUTE
        t_report = t0 + args.hours * HOUR + 5 * MINUTE
        t_reconcile = t_report + dt.timedelta(seconds=settings.METER_RECONCILE_SETTLE_SECONDS) + 5 * MINUTE

        t = step(f"stripe_setup and {args.accounts:,} accounts (account_provision), clocks frozen at {t0:%H:%M} UTC")
        stripe_catalog(emulator, t0)
        checks.append(plan_allowance_check())
        provisioned = accounts_provision(args.accounts, "Metering bench", t0)
        provision_s = time.perf_counter() - t
        print(f"    {provision_s:.0f} s ({args.accounts / provision_s:.1f} accounts/s)")

        t = step(f"COPY {args.resolutions:,} unfunded resolutions over {args.hours} h from {t0:%H:%M}; VACUUM ANALYZE")
        plans = []
        for p, n in zip(provisioned, skewed_counts(args.resolutions, args.accounts, rng, args.skew), strict=True):
            plans.append(AccountPlan(n=n, timezone="UTC", anchor=t0, pk=p.account.pk,
                                     plan_version_id=p.account.plan_version_id))  # fmt: skip
        copied = resolutions_copy(conninfo, plans, (t0, t0 + args.hours * HOUR), t_fund, rng)
        print(f"    {copied:,} rows in {time.perf_counter() - t:.0f} s")

        import resolutions.services  # noqa: F401 - loaded now: the code_state() below is the code timed
        import resolutions.services.metering  # noqa: F401

        code, code_timed = code_state()
        from resolutions.models import MeterWindow
        from resolutions.services import resolutions_fund

        t = step("timed: resolutions_fund(now=...): funding and the window counts")
        with clock.frozen(t_fund):
            t = time.perf_counter()
            funded = resolutions_fund(now=t_fund)
            fund_s = time.perf_counter() - t
        fund_rps = copied / fund_s
        n_windows = MeterWindow.objects.count()
        print(f"    {funded.credited:,} credit + {funded.overage:,} overage in {fund_s:.1f} s: {fund_rps:,.0f}/s; "
              f"{n_windows:,} windows")  # fmt: skip
        checks.append(Check(
            "every resolution is overage (no packs)", (funded.credited, funded.overage) == (0, copied),
            f"{funded.credited:,} credit + {funded.overage:,} overage of {copied:,}",
        ))  # fmt: skip

        t = step(f"baseline: {args.baseline_rows:,} single-row autocommit UPDATEs from one connection")
        base_s, base_rows = update_baseline(conninfo, args.baseline_rows)
        update_rps = base_rows / base_s
        print(f"    {update_rps:,.0f} rows/s ({base_s:.1f} s)")

        half = max(1, args.baseline_calls // 2)
        t = step(f"baseline: {half:,} plain HTTP meter event POSTs from one thread (before the reporting)")
        emulator.set_time(int(t_report.timestamp()))
        http = HttpBaseline(emulator.url)
        http_before_s = http.run(half, int(t0.timestamp()))
        print(f"    {half / http_before_s:,.0f} calls/s ({http_before_s:.1f} s)")

        t = step(f"timed: meter_reports_run(now=...), {settings.METER_REPORT_THREADS} threads, over HTTP")
        mark = emulator.requests.mark()
        with ReportStats() as rstats:
            t = time.perf_counter()
            runs = report_all(emulator, t_report)
            report_s = time.perf_counter() - t
        calls = calls_summary(emulator.requests.since(mark))
        confirmed = sum(r.confirmed for r in runs)
        errors = [e for r in runs for e in r.errors]
        print(f"    {confirmed:,} confirmed in {report_s:.1f} s over {len(runs)} run(s); emulator: {calls}")
        if errors:
            print(f"    errors: {errors[:3]}")
        retries = calls["meter_posts"] - calls["meter_identifiers"]

        t = step(f"baseline: {half:,} plain HTTP meter event POSTs from one thread (after the reporting)")
        http_after_s = http.run(half, int(t0.timestamp()))
        http_cps = 2 * half / (http_before_s + http_after_s)
        print(f"    {half / http_after_s:,.0f} calls/s ({http_after_s:.1f} s); both halves {http_cps:,.0f} calls/s")

        t = step("verifying part 1")
        check, by_customer = totals_check(emulator, conninfo, provisioned, "part 1")
        checks.append(check)
        checks += windows_check(provisioned, by_customer, args.hours, t0)
        checks.append(Check(
            "the reporting run: no account failed, nothing left due",
            not errors and runs[-1].rejected == 0 and runs[-1].unavailable == 0,
            f"{len(runs)} run(s); errors {len(errors)}; rejected {sum(r.rejected for r in runs)}, "
            f"unavailable {sum(r.unavailable for r in runs)}, adjustments {sum(r.adjustments for r in runs)}",
        ))  # fmt: skip
        mark2 = emulator.requests.mark()
        again = report_all(emulator, t_report + 10 * MINUTE, max_rounds=1)[0]
        again_calls = len(emulator.requests.since(mark2))
        checks.append(Check(
            "a second meter_reports_run sends nothing", again_calls == 0 and again.confirmed == again.accounts == 0,
            f"{again_calls} requests to the emulator, {again.accounts} accounts due, {again.confirmed} confirmed",
        ))  # fmt: skip
        from resolutions.services.reconciliation import meter_reconcile

        emulator.set_time(int(t_reconcile.timestamp()))
        with clock.frozen(t_reconcile):
            recon = meter_reconcile(now=t_reconcile)
        checks.append(Check(
            "meter_reconcile: the portal's totals equal Stripe's meter event summaries",
            recon.checked == args.accounts and not recon.differences and not recon.failures and not recon.in_flight,
            f"{recon.checked:,} periods checked, {len(recon.differences)} differences, {recon.in_flight} in flight, "
            f"{len(recon.failures)} failures",
        ))  # fmt: skip
        for c in checks:
            print(f"    {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")

        lag = None
        if args.lag_seconds:
            lag = lag_part(args, emulator, env, work_dir, checks, conninfo)

        # --- report -------------------------------------------------------------------------------------------
        calls_target = args.accounts * args.hours
        calls_met = calls["meter_posts"] - retries <= calls_target
        report_cps = calls["meter_posts"] / report_s
        floor_s = calls["meter_posts"] / http_cps
        table = [
            "| figure | value | baseline (same run) | ratio | target | |",
            "| --- | ---: | ---: | ---: | --- | --- |",
            f"| funding and window counts, `resolutions_fund` | {fund_rps:,.0f} resolutions/s ({fund_s:.1f} s) "
            f"| single-row UPDATE loop {update_rps:,.0f} rows/s | {fund_rps / update_rps:.2f}x | | |",
            f"| Stripe calls to report everything | {calls['meter_posts']:,} meter events ({retries} retries) "
            f"| {calls_target:,} windows | | <= {calls_target:,} + retries | {status(calls_met)} |",
            f"| wall time to report everything | {report_s:.1f} s ({report_cps:,.0f} calls/s) "
            f"| plain POSTs, one thread: {http_cps:,.0f} calls/s, {floor_s:.1f} s for as many calls "
            f"| {report_s / floor_s:.2f}x the time | | |",
        ]  # fmt: skip
        if lag:
            target = args.lag_window + LAG_SLACK_S
            table.append(
                f"| lag, event posted to its overage in Stripe (window {args.lag_window} s, tick {args.tick:g} s) "
                f"| p50 {lag['p50']:.1f} s, p95 {lag['p95']:.1f} s, max {lag['max']:.1f} s "
                f"| the window alone: p50 {lag['floor_p50']:.1f} s, p95 {lag['floor_p95']:.1f} s "
                f"| p95 {lag['p95'] / lag['floor_p95']:.2f}x | p95 <= {target} s | {status(lag['p95'] <= target)} |"
            )
        all_ok = all(c.ok for c in checks)
        print("\n" + "\n".join(table) + "\n")
        before_timed, after_run = code_changes(code_start, code_timed), code_changes(code_timed, code_state()[1])
        code_line = f"Code measured: {code}; digest of the portal's .py files {code_digest(code_timed)}."
        if before_timed:
            code_line += f" Edited between the migration and the timed run: {', '.join(before_timed)}."
        if after_run:
            code_line += " Edited on disk after the timed code was loaded (the run used the loaded code): "
            code_line += ", ".join(after_run) + "."
        print(code_line)
        sizes = sorted((p.n for p in plans), reverse=True)
        per_call_ms = 1000 * rstats.stripe_s / max(1, rstats.stripe_calls)
        lines = [
            f"## Metering: {copied:,} overage resolutions, {args.accounts:,} accounts, {args.hours} h ({date})",
            "",
            f"Command: `{command}` (from the project root; whole run {(time.perf_counter() - started) / 60:.1f} min)",
            "",
            f"Machine: nproc {facts['nproc']} ({facts['cpu']}), load average {load_start[0]:.2f} at start and "
            f"{os.getloadavg()[0]:.2f} at the end (the cores are shared with other work); PostgreSQL "
            f"{facts['postgres']} ({facts['pg_settings']}), Python {facts['python']}, psycopg {facts['psycopg']}. "
            "The Stripe emulator runs in the benchmark's process (as in the tests): its request handling shares "
            "the interpreter with the portal's reporting threads.",
            "",
            code_line,
            "",
            f"Part 1 fixture: {args.accounts:,} accounts by `account_provision` ({provision_s:.0f} s), each with a "
            f"Stripe customer and subscription from {t0:%Y-%m-%d %H:%M} UTC and no credit pack; fin-standard has no "
            f"free allowance. {copied:,} unfunded resolutions COPYed (per account: largest {sizes[0]:,}, smallest "
            f"{sizes[-1]:,}), resolved over {args.hours} hours, so {n_windows:,} hour windows. METER_REPORT_THREADS "
            f"{settings.METER_REPORT_THREADS}.",
            "",
            *table,
            "",
            f"Reporting: {len(runs)} `meter_reports_run` call(s); the emulator received {calls['total']:,} requests "
            f"({calls['meter_posts']:,} meter event POSTs for {calls['meter_identifiers']:,} identifiers, by status "
            f"{calls['meter_by_status']}; other {calls['other'] or 'none'}). Inside the run, summed over its threads: "
            f"{rstats.stripe_calls:,} `stripe_client.call`s, {rstats.stripe_s:.1f} s ({per_call_ms:.1f} ms each), "
            f"{rstats.sql:,} SQL statements, {rstats.sql_s:.1f} s, and {rstats.connections:,} database connections "
            "opened. Baselines: the UPDATE loop is bench/funding.py's (one autocommit `UPDATE ... WHERE id = %s` per "
            f"row on a {base_rows:,}-row copy); the HTTP one is {2 * half:,} POSTs of the same meter event (same "
            "parameters, headers and idempotency keys, a customer of its own) from one thread through a keep-alive "
            f"`requests.Session`, half before the reporting ({half / http_before_s:,.0f}/s) and half after "
            f"({half / http_after_s:,.0f}/s): the cost of the calls alone, with no database and no lock.",
        ]  # fmt: skip
        if lag:
            lines += ["", *lag["lines"]]
        lines += [
            "",
            "Verification: " + ("all checks passed." if all_ok else "**FAILED** (the measurement is invalid)."),
            "",
            *[f"- {'ok' if c.ok else '**FAIL**'}: {c.name} ({c.detail})" for c in checks],
        ]
        if not args.no_results:
            results_append(args.results, lines)
            print(f"appended to {args.results}")
        else:
            print("\n".join(lines))
        for c in checks:
            if not c.ok:
                print(f"FAIL {c.name}: {c.detail}", file=sys.stderr)
        return 0 if all_ok else 2
    except BenchError as exc:
        print(f"invalid measurement: {exc}", file=sys.stderr)
        return 2
    finally:
        emulator.stop()
        if args.keep_db:
            print(f"kept database {args.db}")
        else:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # Django may not be set up yet
                pass
            db_drop(args.pg, args.db)
        work_dir.cleanup()


def lag_part(args, emulator, env: dict[str, str], work_dir, checks: list[Check], conninfo: str) -> dict:
    """Part 2 (see the module docstring). Appends its checks; returns the figures and report lines."""
    from django.conf import settings

    from billing_portal import clock
    from resolutions.billing_cycle import billing_cycle_run

    window = args.lag_window
    settings.METER_WINDOW_SECONDS = window  # this process's funding and reporting; gunicorn only ingests
    emulator.set_time(None)  # real time from here on, for both clocks
    t = step(f"part 2: {args.lag_accounts} accounts (account_provision, real time); gunicorn; a first billing cycle")
    provisioned = accounts_provision(args.lag_accounts, "Lag bench", None)
    keys = {p.account.pk: p.raw_api_key for p in provisioned}
    server = Server(workers=args.workers, env=env, log_path=Path(work_dir.name) / "gunicorn.log")
    try:
        pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=1)
        first = next(iter(keys.values()))
        server.wait_ready(pool, {"Authorization": f"Bearer {first}", "Content-Type": "application/json"})
        # A first cycle before posting: it runs the hourly reconciliation (over part 1's accounts), which is then
        # not due again during the measurement.
        warm = time.perf_counter()
        first_cycle = billing_cycle_run(now=clock.now())
        warm_s = time.perf_counter() - warm
        slow = ", ".join(f"{s.name} {s.seconds:.1f} s" for s in first_cycle.steps if s.seconds >= 0.5) or "quick"
        print(f"    {time.perf_counter() - t:.0f} s (first cycle {warm_s:.1f} s: {slow})")

        mark = emulator.requests.mark()
        ticker = Ticker(args.tick)
        t = step(f"part 2 timed: {args.lag_rate:,} events/s for {args.lag_seconds:g} s, window {window} s, "
                 f"billing cycle every {args.tick:g} s")  # fmt: skip
        ticker.start()
        try:
            posted, latencies, refused, planned_events, post_s = lag_post(
                server, keys, args.lag_rate, args.lag_seconds, 0.1
            )
            posted_at_end = time.time()
            print(f"    {2 * len(posted):,} events posted in {post_s:.1f} s ({2 * len(posted) / post_s:,.0f}/s); "
                  f"{len(refused)} batches refused; waiting for the last window to reach Stripe")  # fmt: skip
            ids = sorted(keys)
            deadline = posted_at_end + window + 3 * args.tick + 30
            while lag_carried(ids) < len(posted) and time.time() < deadline and not ticker.error:
                time.sleep(1)
            drained_s = time.time() - posted_at_end
        finally:
            ticker.stop.set()
            ticker.join(timeout=120)
    finally:
        server.stop()
    if ticker.error:
        raise BenchError(f"billing cycle thread failed: {ticker.error}")
    carried = lag_carried(sorted(keys))
    lags, missing = lag_measure(emulator, posted, sorted(keys), mark)
    # What the window alone costs: from the event to its window's end (the earliest it may be reported).
    floor = [window - (p.sent_at % window) for p in posted.values()]
    cycles = [s for _, s, _ in ticker.cycles]
    failed_cycles = [f for _, _, f in ticker.cycles if f]
    calls = calls_summary(emulator.requests.since(mark))
    check, _ = totals_check(emulator, conninfo, provisioned, "part 2")
    checks.append(check)
    checks.append(Check(
        "part 2: every posted resolution reached Stripe and its lag was measured",
        not refused and carried == len(posted) and not missing and len(lags) == len(posted),
        f"{len(posted):,} resolutions posted ({len(refused)} batches refused), {carried:,} carried by confirmed "
        f"meter events {drained_s:.0f} s after the last post, {len(lags):,} lags measured, {missing} not found",
    ))  # fmt: skip
    checks.append(Check(
        "part 2: no billing cycle step failed", not failed_cycles,
        f"{len(cycles)} cycles" + (f"; first failure {failed_cycles[0]}" if failed_cycles else ""),
    ))  # fmt: skip
    if not lags:
        raise BenchError("part 2 measured no lag")
    out = {
        "p50": percentile(lags, 0.5), "p95": percentile(lags, 0.95), "max": max(lags),
        "floor_p50": percentile(floor, 0.5), "floor_p95": percentile(floor, 0.95),
    }  # fmt: skip
    target = window + LAG_SLACK_S
    out["lines"] = [
        f"Part 2, lag: METER_WINDOW_SECONDS {window} (set in the benchmark's process: funding and reporting), "
        f"real time. {args.lag_accounts} more accounts by `account_provision`; gunicorn ({args.workers} sync "
        "workers, EVENT_EVALUATION=inline) took POST /api/v1/conversation-events: every 0.1 s one batch of "
        f"{round(args.lag_rate * 0.1) // 2 * 2} events (ai_answer 2 s earlier + customer_confirmed now, one "
        f"resolution per pair) to the accounts in turn, {args.lag_seconds:g} s planned, {2 * len(posted):,} events "
        f"sent in {post_s:.1f} s ({2 * len(posted) / post_s:,.0f} events/s, {len(posted) / post_s:,.0f} "
        f"resolutions/s), batch latency p50 {1000 * percentile(latencies, 0.5):.0f} ms, p95 "
        f"{1000 * percentile(latencies, 0.95):.0f} ms. `billing_cycle_run(now=clock.now())` every {args.tick:g} s "
        f"in a thread (the production beat runs it every minute): {len(cycles)} cycles, p50 "
        f"{percentile(cycles, 0.5):.2f} s, max {max(cycles):.2f} s; a first cycle before posting ({warm_s:.1f} s) "
        "ran the hourly reconciliation. The emulator received "
        f"{calls['meter_posts']:,} meter event POSTs ({calls['meter_identifiers']:,} identifiers) and "
        f"{calls['total'] - calls['meter_posts']:,} other requests meanwhile.",
        "",
        f"Lag of each of the {len(lags):,} resolutions: from the moment its batch was sent to the moment the "
        "emulator received the meter event carrying it (the first accepted attempt; a window's resolutions fill "
        "its report rows in id order, the order funding reads them): p50 "
        f"{out['p50']:.1f} s, p95 {out['p95']:.1f} s, max {out['max']:.1f} s; target p95 <= window + 120 s = "
        f"{target} s: {status(out['p95'] <= target)}. Baseline: what the window alone imposes (from the event to "
        f"its window's end): p50 {out['floor_p50']:.1f} s, p95 {out['floor_p95']:.1f} s; the rest is the wait for "
        "the next cycle after the window closed and the cycle's own time.",
    ]  # fmt: skip
    print(f"    lag p50 {out['p50']:.1f} s, p95 {out['p95']:.1f} s, max {out['max']:.1f} s (target p95 <= {target} s); "
          f"{len(cycles)} cycles, max {max(cycles):.2f} s")  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main())
