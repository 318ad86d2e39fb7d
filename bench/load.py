"""Load test with restarts (issue 13): events at a steady rate through gunicorn for minutes, with the Celery
worker and beat running, while Redis, the worker and the database connections are restarted; then every
event, conversation, credit and meter total is checked.

Run from the project root:  .venv/bin/python bench/load.py [--rate 2000 --duration 300]
                            .venv/bin/python bench/load.py --rate 200 --duration 30 --no-results   # a quick check

Everything runs on loopback and is started (and stopped, also on Ctrl-C or failure) by this script: the Stripe
emulator, a private redis-server (never the machine's 6379), a fresh PostgreSQL database (dropped afterwards),
gunicorn, one Celery worker and beat. See bench/README.md for what is generated, measured and checked.
Exit status: 0 when every check passed, 1 when a check failed, 2 when the run could not measure.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import os
import platform
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import urllib3
from scratch_db import db_drop, db_recreate, db_url_for, django_db_url, portal_env, step

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
API_PATH = "/api/v1/conversation-events"
STRIPE_KEY = "sk_test_emulator0local0demo0key00000000"
WINDOW = dt.timedelta(hours=24)  # fin-standard v1's inactivity window (accounts/defaults.py), checked at set-up
RETRY_GIVE_UP_SECONDS = 180


class LoadError(Exception):
    """The run could not measure (a set-up step failed, a process died)."""


# --- processes ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Children:
    """Every process this run starts, each in its own process group; stop() ends them all (SIGTERM, then
    SIGKILL after a grace), also the ones a fault restarted."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.closed = False

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        with self.lock:  # a fault thread restarting a process while the run stops must not leave one behind
            if self.closed:
                raise LoadError(f"not starting {name}: the run is stopping")
            return self._start(name, cmd, env)

    def _start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the child
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, name: str, grace: float = 20) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        with self.lock:
            self.closed = True
        for name in reversed(list(self.procs)):
            self.stop(name)


def wait_until(check, what: str, timeout: float, proc: subprocess.Popen | None = None, log: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LoadError(f"{what} exited with {proc.returncode}:\n{log}")
        try:
            if check():
                return
        except (OSError, urllib3.exceptions.HTTPError):
            pass
        time.sleep(0.2)
    raise LoadError(f"{what} not ready after {timeout:.0f} s")


def redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def manage(args: list[str], env: dict[str, str], timeout: float = 900) -> str:
    proc = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise LoadError(
            f"manage.py {shlex.join(args)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    return proc.stdout


def last_json(out: str) -> dict:
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise LoadError(f"no JSON in the output:\n{out[-2000:]}")


# --- workload -----------------------------------------------------------------------------------------------

# What a conversation does, its share, and what the portal must make of it once every window has elapsed.
KINDS = {
    "confirmed": (0.30, ("resolved", "confirmed")),  # answered (maybe a reply and a second answer), confirmed
    "confirmed_late": (0.10, ("resolved", "confirmed")),  # the confirmation arrives first, its ai_answer seconds later
    "assumed_in_run": (0.15, ("resolved", "assumed")),  # an answer whose 24 h window ends during the run
    "assumed_elapsed": (0.05, ("resolved", "assumed")),  # a late answer whose window had already ended
    "escalated": (0.15, ("escalated", None)),
    "awaiting": (0.15, ("awaiting", None)),  # answered now: its window ends tomorrow
    "open": (0.10, ("open", None)),  # answered, then the customer replied: no window running
}


@dataclass
class AccountLoad:
    account_id: int
    api_key: str
    customer: str
    packs: list[int] = field(default_factory=list)
    events: list[tuple[float, dict]] = field(default_factory=list)  # (planned send offset, event), in send order
    expected: Counter = field(default_factory=Counter)  # (status, kind) -> conversations
    event_ids: set[str] = field(default_factory=set)
    duplicates_sent: int = 0
    last_window_end: float = 0.0  # offset of the latest assumed_in_run window end


def _iso(instant: dt.datetime) -> str:
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def workload_make(acc: AccountLoad, n_events: int, *, duration: float, t0: dt.datetime, rng: random.Random,
                  duplicate_share: float) -> None:  # fmt: skip
    """Conversations of the mix KINDS, starts uniform over the run, until `n_events` events; plus duplicates
    (the same id and payload again, 1 to 20 s later). occurred_at is the planned send instant, except for the
    answers of the assumed kinds (a day earlier) and the late ai_answer (earlier than its send)."""
    names, weights = list(KINDS), [share for share, _ in KINDS.values()]
    planned: list[tuple[float, dict]] = []
    serial = 0
    last_start = max(1.0, duration - 25)
    while len(planned) < n_events:
        kind = rng.choices(names, weights)[0]
        serial += 1
        cid = f"a{acc.account_id}-c{serial}-{rng.getrandbits(32):08x}"
        s = rng.uniform(0, last_start)
        steps: list[tuple[float, str, float]] = []  # (send offset, type, occurred offset)
        if kind == "confirmed":
            steps.append((s, "ai_answer", s))
            if rng.random() < 0.4:
                steps += [(s + 1, "customer_reply", s + 1), (s + 2, "ai_answer", s + 2)]
            steps.append((s + 4, "customer_confirmed", s + 4))
            if rng.random() < 0.2:  # after the resolution: changes nothing
                steps.append((s + 9, "customer_reply", s + 9))
        elif kind == "confirmed_late":
            lag = rng.uniform(3, 15)
            steps += [(s + 2, "customer_confirmed", s + 2), (s + 2 + lag, "ai_answer", s)]
        elif kind == "assumed_in_run":
            end = rng.uniform(s + 5, duration)  # its window ends during the run
            acc.last_window_end = max(acc.last_window_end, end)
            steps.append((s, "ai_answer", end - WINDOW.total_seconds()))
        elif kind == "assumed_elapsed":
            steps.append((s, "ai_answer", s - WINDOW.total_seconds() - rng.uniform(60, 3600)))
        elif kind == "escalated":
            steps.append((s, "ai_answer", s))
            if rng.random() < 0.5:
                steps.append((s + 1, "customer_reply", s + 1))
            steps.append((s + 3, "handoff", s + 3))
        elif kind == "awaiting":
            steps.append((s, "ai_answer", s))
        elif kind == "open":
            steps += [(s, "ai_answer", s), (s + 2, "customer_reply", s + 2)]
        acc.expected[KINDS[kind][1]] += 1
        for i, (send, event_type, occurred) in enumerate(steps):
            event = {
                "id": f"{cid}-e{i}",
                "conversation_id": cid,
                "type": event_type,
                "occurred_at": _iso(t0 + dt.timedelta(seconds=occurred)),
            }
            acc.event_ids.add(event["id"])
            planned.append((send, event))
            if rng.random() < duplicate_share:
                planned.append((min(send + rng.uniform(1, 20), duration - 0.5), dict(event)))
                acc.duplicates_sent += 1
    planned.sort(key=lambda p: p[0])
    acc.events = planned


@dataclass
class Batch:
    index: int
    at: float  # planned send offset
    account: AccountLoad
    body: bytes
    n: int
    accepted: int = 0
    duplicates: int = 0
    attempts: int = 0
    latencies: list[float] = field(default_factory=list)  # of the successful attempt
    failures: list[str] = field(default_factory=list)
    done_at: float | None = None
    sent_at: float | None = None


def batches_make(accounts: list[AccountLoad], rate: int, batch_size: int) -> list[Batch]:
    """Every account's events cut into batches of `batch_size` in send order; the batches of all accounts
    on one schedule, batch j at j * batch_size / rate (so the accounts take turns)."""
    per_account = []
    for acc in accounts:
        chunks = [acc.events[i : i + batch_size] for i in range(0, len(acc.events), batch_size)]
        per_account.append([(acc, chunk) for chunk in chunks])
    merged = [(chunk[-1][0], acc, chunk) for chunks in per_account for acc, chunk in chunks]
    merged.sort(key=lambda m: m[0])  # by the planned offset of each batch's last event: no event goes early
    interval = batch_size / rate
    batches = []
    for j, (_, acc, chunk) in enumerate(merged):
        body = json.dumps({"events": [e for _, e in chunk]}, separators=(",", ":")).encode()
        batches.append(Batch(index=j, at=j * interval, account=acc, body=body, n=len(chunk)))
    return batches


# --- client -------------------------------------------------------------------------------------------------


class Client:
    """Posts the batches on their schedule from `threads` threads; a failed attempt (connection error, 5xx,
    429) is retried with the same body after a growing pause, for up to RETRY_GIVE_UP_SECONDS."""

    def __init__(self, port: int, batches: list[Batch], threads: int, started: float):
        self.pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=threads, timeout=urllib3.Timeout(30, 60))
        self.batches, self.started = batches, started
        self.next = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True, name=f"client-{i}") for i in range(threads)]
        self.lag_max = 0.0

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            while t.is_alive():
                t.join(0.5)

    def _take(self) -> Batch | None:
        with self.lock:
            if self.next >= len(self.batches) or self.stopping.is_set():
                return None
            batch = self.batches[self.next]
            self.next += 1
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            delay = self.started + batch.at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                self.lag_max = max(self.lag_max, -delay)
            self._post(batch)

    def _post(self, batch: Batch) -> None:
        headers = {"Authorization": f"Bearer {batch.account.api_key}", "Content-Type": "application/json"}
        pause = 0.2
        batch.sent_at = time.perf_counter() - self.started
        give_up = time.perf_counter() + RETRY_GIVE_UP_SECONDS
        while not self.stopping.is_set():
            batch.attempts += 1
            t = time.perf_counter()
            try:
                response = self.pool.urlopen("POST", API_PATH, body=batch.body, headers=headers, retries=False)
                status, data = response.status, response.data
            except urllib3.exceptions.HTTPError as exc:
                status, data = None, repr(exc).encode()
            elapsed = time.perf_counter() - t
            if status == 202:
                answer = json.loads(data)
                batch.accepted, batch.duplicates = answer["accepted"], answer["duplicates"]
                batch.latencies.append(elapsed)
                batch.done_at = time.perf_counter() - self.started
                return
            batch.failures.append(f"{time.perf_counter() - self.started:.1f}s {status}: {data[:200]!r}")
            if status is not None and status < 500 and status != 429:
                return  # client input refused: a defect of this generator or of the portal, reported by the checks
            if time.perf_counter() > give_up:
                return
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def trivial_baseline(port: int, api_key: str, n: int) -> list[float]:
    """Latency of the cheapest authenticated API request (an empty batch, refused 400 after the key check),
    one at a time, before the load: what the stack itself costs on this machine now."""
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    out = []
    for i in range(n + 10):
        t = time.perf_counter()
        response = pool.urlopen("POST", API_PATH, body=b'{"events": []}', headers=headers, retries=False)
        if response.status != 400:
            raise LoadError(f"the baseline request answered {response.status}: {response.data[:300]!r}")
        if i >= 10:
            out.append(time.perf_counter() - t)
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- faults -------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    at: float  # planned offset
    done_at: float | None = None
    seconds: float = 0.0
    note: str = ""


class Faults(threading.Thread):
    def __init__(self, plan: list[tuple[str, float]], run: Run, started: float):
        super().__init__(name="faults", daemon=True)
        self.faults = [Fault(name, at) for name, at in plan]
        self.run_, self.started = run, started
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for fault in self.faults:
                if self.stopping.is_set():
                    return
                delay = self.started + fault.at - time.perf_counter()
                if delay > 0 and self.stopping.wait(delay):
                    return
                t = time.perf_counter()
                fault.done_at = t - self.started
                fault.note = getattr(self.run_, f"fault_{fault.name}")()
                fault.seconds = time.perf_counter() - t
                print(f"[{time.strftime('%H:%M:%S')}]   fault at {fault.done_at:.1f} s: {fault.name} ({fault.note})",
                      flush=True)  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc


# --- the run ------------------------------------------------------------------------------------------------


class Run:
    def __init__(self, args, work_dir: Path):
        self.args = args
        self.children = Children(work_dir)
        self.work_dir = work_dir
        self.conninfo = db_url_for(args.pg, args.db)
        self.redis_port = args.redis_port
        self.stripe_port = free_port()
        self.web_port = free_port()
        self.env = portal_env(django_db_url(args.pg, args.db))
        self.env.update(
            CELERY_BROKER_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            STRIPE_API_BASE=f"http://127.0.0.1:{self.stripe_port}",
            STRIPE_SECRET_KEY=STRIPE_KEY,
            PORTAL_BASE_URL=f"http://127.0.0.1:{self.web_port}",
            SECURE_HTTPS="false",  # plain http on loopback: the explicit opt-out of TLS outside DEBUG
            EVENT_EVALUATION="deferred",
            METER_WINDOW_SECONDS=str(args.meter_window),
            LOG_LEVEL="WARNING",
        )
        self.meter_id = ""

    # processes
    def redis_start(self) -> None:
        if redis_ping_quiet(self.redis_port):
            raise LoadError(f"something already answers on port {self.redis_port}: pick another --redis-port")
        cmd = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
               "no", "--dir", str(self.work_dir)]  # fmt: skip
        proc = self.children.start("redis", cmd, self.env)
        wait_until(lambda: redis_ping(self.redis_port), "redis-server", 20, proc, self.children.log_tail("redis"))

    def worker_start(self) -> None:
        cmd = [str(VENV_BIN / "celery"), "-A", "billing_portal", "worker", "--pool", "solo", "--without-gossip",
               "--without-mingle", "--loglevel", "warning", "-n", f"load-{os.getpid()}@%h"]  # fmt: skip
        self.children.start("worker", cmd, self.env)

    def beat_start(self) -> None:
        cmd = [str(VENV_BIN / "celery"), "-A", "billing_portal", "beat", "--loglevel", "warning",
               "--schedule", str(self.work_dir / "beat-schedule")]  # fmt: skip
        self.children.start("beat", cmd, self.env)

    def fault_redis(self) -> str:
        self.children.stop("redis")
        time.sleep(self.args.redis_down)
        self.redis_start()
        return f"redis-server stopped, {self.args.redis_down:g} s down, started again empty (--save '')"

    def fault_worker(self) -> str:
        self.children.kill9("worker")
        time.sleep(2)
        self.worker_start()
        return "celery worker killed with SIGKILL, started again 2 s later"

    def fault_postgres(self) -> str:
        with psycopg.connect(self.args.pg, autocommit=True) as conn:
            n = conn.execute(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()) t",
                [self.args.db],
            ).fetchone()[0]
        return f"pg_terminate_backend of {n} connection(s) to {self.args.db}"

    def setup(self, rng: random.Random) -> list[AccountLoad]:
        t = step(f"database {self.args.db}: recreate, migrate")
        db_recreate(self.args.pg, self.args.db)
        manage(["migrate", "--no-input", "-v", "0"], self.env, timeout=1800)
        print(f"           migrated in {time.perf_counter() - t:.0f} s", flush=True)
        step(
            f"Stripe emulator on :{self.stripe_port}, redis-server on :{self.redis_port}, gunicorn on :{self.web_port}"
        )
        emulator = self.children.start(
            "stripe-emulator", [str(VENV_BIN / "python"), "-m", "stripe_emulator", "--port", str(self.stripe_port)],
            self.env,
        )  # fmt: skip
        wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{self.stripe_port}/_emulator/health", timeout=1),
            "the Stripe emulator", 30, emulator, self.children.log_tail("stripe-emulator"),
        )  # fmt: skip
        self.redis_start()
        gunicorn = self.children.start(
            "gunicorn",
            [str(VENV_BIN / "gunicorn"), "billing_portal.wsgi:application", "--bind", f"127.0.0.1:{self.web_port}",
             "--workers", str(self.args.workers), "--worker-class", "sync", "--timeout", "120",
             "--log-level", "warning"],
            self.env,
        )  # fmt: skip
        step("stripe_setup, accounts (create_account --json), credit packs (grant_credits --json)")
        manage(["stripe_setup", "--json"], self.env)
        self.meter_id = stripe_get("/v1/billing/meters", self.stripe_port)["data"][0]["id"]
        window = manage(["shell", "-c", WINDOW_CODE], self.env).strip().splitlines()[-1]
        if float(window) != WINDOW.total_seconds():
            raise LoadError(f"fin-standard's inactivity window is {window} s, this generator assumes {WINDOW}")
        accounts = []
        for i in range(self.args.accounts):
            out = last_json(manage(["create_account", "--name", f"Load {i}", "--plan", "fin-standard", "--json"],
                                   self.env))  # fmt: skip
            accounts.append(AccountLoad(out["account_id"], out["api_key"], out["stripe_customer_id"]))
        # Packs sized so that they run out during the run (draw-down, then overage): a share of the account's
        # expected resolutions (about 55% of its conversations resolve, about 2 events per conversation).
        expected_resolutions = self.args.rate * self.args.duration / self.args.accounts * 0.55 / 1.9
        for acc, shares in zip(accounts, ([0.25], [0.1, 0.15]), strict=False):
            for j, share in enumerate(shares):
                out = last_json(manage(
                    ["grant_credits", "--account", str(acc.account_id), "--quantity",
                     str(max(1, int(expected_resolutions * share))), "--idempotency-key", f"load-{acc.account_id}-{j}",
                     "--json"], self.env))  # fmt: skip
                acc.packs.append(out["pack_id"])
        wait_until(
            lambda: gunicorn_answers(self.web_port), "gunicorn", 90, gunicorn, self.children.log_tail("gunicorn")
        )
        step("celery worker (solo pool) and beat")
        self.worker_start()
        self.beat_start()
        return accounts


WINDOW_CODE = """
from accounts.models import PricePlan
print(PricePlan.objects.get(slug="fin-standard").versions.get(number=1).inactivity_window.total_seconds())
"""


def redis_ping_quiet(port: int) -> bool:
    try:
        return redis_ping(port)
    except OSError:
        return False


def gunicorn_answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/schema/", timeout=5).close()
    except urllib.error.HTTPError:
        pass  # it answers
    return True


def stripe_get(path: str, port: int, params: dict | None = None) -> dict:
    url = f"http://127.0.0.1:{port}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {STRIPE_KEY}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


# --- afterwards ---------------------------------------------------------------------------------------------


def queue_length(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT count(*) FROM resolutions_pendingevaluation").fetchone()[0]


def drain(run: Run, last_due: dt.datetime, timeout: float) -> tuple[float, list[dict]]:
    """Wait for the worker to empty the evaluation queue, then until every reporting window that can hold a
    resolution has closed; then stop beat (no cycle may overlap the final ones) and run `billing_tick` until
    nothing is due: no queue row, no awaiting window elapsed, every closed window reported and confirmed."""
    t = time.perf_counter()
    while queue_length(run.conninfo):
        if time.perf_counter() - t > timeout:
            raise LoadError(f"the evaluation queue was not empty {timeout:.0f} s after the last answer")
        time.sleep(0.2)
    caught_up = time.perf_counter() - t
    wait = (last_due - dt.datetime.now(dt.UTC)).total_seconds()
    if wait > 0:
        step(f"waiting {wait:.0f} s for the last windows (inactivity and meter reporting) to close")
        time.sleep(wait)
    run.children.stop("beat")
    ticks = []
    for _ in range(6):
        try:
            ticks.append(last_json(manage(["billing_tick", "--json"], run.env)))
        except LoadError as exc:
            if "another cycle" not in str(exc):
                raise
            time.sleep(5)  # the worker still runs a cycle that beat queued
            continue
        with psycopg.connect(run.conninfo) as conn:
            due = conn.execute(
                'SELECT (SELECT count(*) FROM resolutions_meterwindow WHERE "end" <= now() AND overage <> reported)'
                " + (SELECT count(*) FROM resolutions_meterreport WHERE state <> 'confirmed')"
                " + (SELECT count(*) FROM resolutions_pendingevaluation)"
                " + (SELECT count(*) FROM resolutions_conversation WHERE status = 'awaiting'"
                " AND window_ends_at <= now())"
            ).fetchone()[0]
        if not due:
            break
        time.sleep(5)
    return caught_up, ticks


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def checks_run(run: Run, accounts: list[AccountLoad], batches: list[Batch]) -> list[Check]:  # noqa: C901
    checks: list[Check] = []
    ids = [a.account_id for a in accounts]
    with psycopg.connect(run.conninfo) as conn:
        q = lambda sql, *p: conn.execute(sql, p).fetchall()  # noqa: E731
        stored = dict(q("SELECT account_id, count(*) FROM resolutions_conversationevent WHERE account_id = ANY(%s) "
                        "GROUP BY account_id", ids))  # fmt: skip
        statuses = defaultdict(Counter)
        for account_id, status, n in q("SELECT account_id, status, count(*) FROM resolutions_conversation "
                                       "WHERE account_id = ANY(%s) GROUP BY 1, 2", ids):  # fmt: skip
            statuses[account_id][status] = n
        kinds = defaultdict(Counter)
        for account_id, kind, n in q("SELECT account_id, kind, count(*) FROM resolutions_resolution WHERE account_id "
                                     "= ANY(%s) AND voided_at IS NULL GROUP BY 1, 2", ids):  # fmt: skip
            kinds[account_id][kind] = n
        funding = defaultdict(Counter)
        for account_id, f, n in q("SELECT account_id, funding, count(*) FROM resolutions_resolution WHERE account_id "
                                  "= ANY(%s) AND voided_at IS NULL GROUP BY 1, 2", ids):  # fmt: skip
            funding[account_id][f] = n
        credit_unmatched = q(
            "SELECT count(*) FROM resolutions_resolution r WHERE r.funding = 'credit' AND r.voided_at IS NULL AND "
            "(SELECT count(*) FROM credits_creditledgerentry e WHERE "
            "e.idempotency_key = 'drawdown:resolution:' || r.id AND e.kind = 'drawdown' AND e.quantity = -1 "
            "AND e.pack_id = r.credit_pack_id) <> 1"
        )[0][0]
        drawdown_stray = q(
            "SELECT count(*) FROM credits_creditledgerentry e WHERE e.kind = 'drawdown' AND NOT EXISTS (SELECT 1 FROM "
            "resolutions_resolution r WHERE e.idempotency_key = 'drawdown:resolution:' || r.id "
            "AND r.funding = 'credit')"
        )[0][0]
        packs = q("SELECT p.id, p.account_id, p.granted, p.remaining, COALESCE(sum(e.quantity), 0), "
                  "count(*) FILTER (WHERE e.kind = 'drawdown') FROM credits_creditpack p LEFT JOIN "
                  "credits_creditledgerentry e ON e.pack_id = p.id GROUP BY p.id ORDER BY p.id")  # fmt: skip
        windows = q("SELECT account_id, period_start, period_end, sum(overage), sum(reported) "
                    "FROM resolutions_meterwindow GROUP BY 1, 2, 3 ORDER BY 1, 2")  # fmt: skip
        confirmed_reports = dict(
            ((a, ps), n) for a, ps, n in q(
                "SELECT r.account_id, w.period_start, sum(r.quantity) FROM resolutions_meterreport r JOIN "
                "resolutions_meterwindow w ON w.id = r.window_id WHERE r.state = 'confirmed' GROUP BY 1, 2")
        )  # fmt: skip
        open_reports = q("SELECT state, count(*) FROM resolutions_meterreport WHERE state <> 'confirmed' GROUP BY 1")
        overage_times = defaultdict(list)
        for account_id, resolved_at in q("SELECT account_id, resolved_at FROM resolutions_resolution WHERE funding = "
                                         "'overage' AND voided_at IS NULL"):  # fmt: skip
            overage_times[account_id].append(resolved_at)
        unfunded = q("SELECT count(*) FROM resolutions_resolution WHERE funding = 'unfunded' AND voided_at IS NULL")[0][
            0
        ]

    # 1. events: acknowledged = stored, no double
    wrong = []
    for acc in accounts:
        mine = [b for b in batches if b.account is acc]
        accepted = sum(b.accepted for b in mine)
        answered = sum(b.n for b in mine if b.done_at is not None)
        acknowledged = sum(b.accepted + b.duplicates for b in mine)
        if not (accepted == stored.get(acc.account_id, 0) == len(acc.event_ids) and acknowledged == answered):
            wrong.append((acc.account_id, accepted, stored.get(acc.account_id, 0), len(acc.event_ids),
                          acknowledged, answered))  # fmt: skip
    unanswered = [b for b in batches if b.done_at is None]
    total_accepted = sum(b.accepted for b in batches)
    total_dups = sum(b.duplicates for b in batches)
    checks.append(Check(
        "events: every batch answered 202; accepted = rows stored = distinct ids sent; accepted + duplicates = events "
        "in the answered batches", not wrong and not unanswered,
        f"{total_accepted:,} accepted + {total_dups:,} duplicates (of them "
        f"{sum(a.duplicates_sent for a in accounts):,} sent as duplicates, the rest retries of batches already "
        f"stored); {sum(stored.values()):,} rows; "
        f"{len(unanswered)} batch(es) never answered 202" + (f"; differ: {wrong[:3]}" if wrong else "")
        + (f"; first unanswered: {unanswered[0].failures[-1:]}" if unanswered else ""),
    ))  # fmt: skip

    # 2. conversations: resolutions + escalated + open = conversations, and each as its events say
    wrong = []
    for acc in accounts:
        st, kd = statuses[acc.account_id], kinds[acc.account_id]
        conversations = sum(acc.expected.values())
        got = Counter({("resolved", "confirmed"): kd["confirmed"], ("resolved", "assumed"): kd["assumed"],
                       ("escalated", None): st["escalated"], ("awaiting", None): st["awaiting"],
                       ("open", None): st["open"]})  # fmt: skip
        if sum(st.values()) != conversations or st["resolved"] != sum(kd.values()) or got != acc.expected:
            wrong.append((acc.account_id, dict(acc.expected), dict(got), dict(st)))
    total = Counter()
    for acc in accounts:
        total.update(acc.expected)
    checks.append(Check(
        "conversations: resolutions + escalated + open (and awaiting) = conversations, per account, each outcome as "
        "generated (confirmed / assumed / escalated / awaiting / open)", not wrong,
        f"{sum(total.values()):,} conversations: " + ", ".join(f"{s}{'/' + k if k else ''} {n:,}" for (s, k), n in
                                                               sorted(total.items(), key=str))
        + (f"; differ: {wrong[:2]}" if wrong else ""),
    ))  # fmt: skip

    # 3. credits
    bad_packs = [p for p in packs if not (p[3] == p[4] and p[3] >= 0)]
    credited = sum(f["credit"] for f in funding.values())
    checks.append(Check(
        "credits: each pack's ledger sums to its remaining >= 0", bool(packs) and not bad_packs,
        "; ".join(f"pack {p[0]} (account {p[1]}): granted {p[2]:,}, drew {p[5]:,}, remaining {p[3]:,}, ledger {p[4]:,}"
                  for p in packs),
    ))  # fmt: skip
    checks.append(Check(
        "funding: every billable resolution funded exactly once (credit with one draw-down of its pack, or overage)",
        unfunded == 0 and credit_unmatched == 0 and drawdown_stray == 0,
        f"{credited:,} credited, {sum(f['overage'] for f in funding.values()):,} overage, {unfunded} unfunded, "
        f"{credit_unmatched} credited without exactly one draw-down, {drawdown_stray} draw-downs without a credited "
        "resolution",
    ))  # fmt: skip
    used_up = [p for p in packs if p[3] == 0]
    checks.append(Check("funding: packs ran out during the run (draw-down and overage both happened)",
                        bool(used_up) and any(f["overage"] for f in funding.values()),
                        f"{len(used_up)} of {len(packs)} packs used up"))  # fmt: skip

    # 4. meter: Stripe's summaries = the portal's confirmed reports = non-voided overage, per account and period
    by_customer = {a.account_id: a.customer for a in accounts}
    wrong, rows = [], []
    periods = defaultdict(list)
    for account_id, ps, pe, overage, reported in windows:
        periods[account_id].append((ps, pe, overage, reported))
    for account_id in ids:
        bounds = periods.get(account_id, [])
        starts = [b[0] for b in bounds]
        counted = Counter()
        for instant in overage_times.get(account_id, []):
            i = max(0, bisect.bisect_right(starts, instant) - 1)  # before the first period: its first window
            counted[starts[i] if starts else None] += 1
        for ps, pe, overage, reported in bounds:
            lo, hi = _ceil_minute(ps), _ceil_minute(pe)
            summary = stripe_get(f"/v1/billing/meters/{run.meter_id}/event_summaries", run.stripe_port,
                                 {"customer": by_customer[account_id], "start_time": lo, "end_time": hi})  # fmt: skip
            stripe_total = sum(s["aggregated_value"] for s in summary["data"])
            portal = confirmed_reports.get((account_id, ps), 0)
            row = (account_id, ps.isoformat(), stripe_total, portal, overage, reported, counted[ps])
            rows.append(row)
            if not (stripe_total == portal == overage == reported == counted[ps]):
                wrong.append(row)
        if sum(counted.values()) != sum(b[2] for b in bounds) or (overage_times.get(account_id) and not bounds):
            wrong.append((account_id, "overage outside every window", sum(counted.values())))
    checks.append(Check(
        "meter: Stripe's meter event summary = the portal's confirmed reports = its windows' overage = non-voided "
        "overage resolutions, per account and billing period; no report row left unconfirmed",
        not wrong and not open_reports and bool(rows),
        f"{len(rows)} account-periods, Stripe total {sum(r[2] for r in rows):,}, overage resolutions "
        f"{sum(r[6] for r in rows):,}; rows not confirmed: {dict(open_reports) or 'none'}"
        + (f"; differ (account, period, stripe, confirmed, windows' overage, reported, resolutions): {wrong[:3]}"
           if wrong else ""),
    ))  # fmt: skip
    # The portal's own reconciliation (`manage.py reconcile`, as the hourly cycle step runs it), with no settle time:
    # the emulator's summaries are immediately consistent (Stripe's are not, hence the default 10 minutes).
    rec = last_json(manage(["reconcile", "--json"], {**run.env, "METER_RECONCILE_SETTLE_SECONDS": "0"}))
    checks.append(Check(
        "meter: the portal's reconciliation (manage.py reconcile) checks every account-period and finds no difference",
        rec["checked"] == len(rows) and not rec["differences"] and not rec["failures"] and not rec["in_flight"],
        f"checked {rec['checked']} of {len(rows)} account-periods, in flight {rec['in_flight']}, differences "
        f"{rec['differences'][:3] or 'none'}, failures {rec['failures'][:2] or 'none'}",
    ))  # fmt: skip
    if wrong:
        meter_diagnose(run, [w[0] for w in wrong if isinstance(w[2], int)])
    return checks


def meter_diagnose(run: Run, account_ids: list[int]) -> None:
    """Print, for the accounts whose meter totals differ, every report row beside what the emulator logged for
    its identifier (status, timestamp, value) and whether that timestamp lies inside the summary bounds."""
    log = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{run.stripe_port}/_emulator/requests").read())
    posts = defaultdict(list)
    for r in log["requests"]:
        if r.get("path") == "/v1/billing/meter_events":
            posts[(r.get("params") or {}).get("identifier")].append(r)
    with psycopg.connect(run.conninfo) as conn:
        rows = conn.execute(
            "SELECT r.account_id, r.identifier, r.quantity, r.timestamp, r.state, r.attempts, w.start, w.end, "
            "w.period_start, w.period_end FROM resolutions_meterreport r JOIN resolutions_meterwindow w ON "
            "w.id = r.window_id WHERE r.account_id = ANY(%s) ORDER BY r.account_id, w.start, r.sequence",
            [account_ids],
        ).fetchall()
    print(f"meter diagnosis: {len(rows)} report rows of accounts {account_ids}; the emulator logged "
          f"{sum(map(len, posts.values()))} meter event POSTs", flush=True)  # fmt: skip
    for account_id, ident, qty, ts, state, attempts, ws, we, ps, pe in rows:
        seen = [(p.get("status"), (p.get("params") or {}).get("timestamp"), (p.get("params") or {}).get("payload"))
                for p in posts.get(ident, [])]  # fmt: skip
        inside = _ceil_minute(ps) <= ts.timestamp() < _ceil_minute(pe)
        print(f"  account {account_id} window {ws:%H:%M:%S}-{we:%H:%M:%S} (period from {ps:%H:%M:%S}) {ident} "
              f"qty {qty} ts {ts:%H:%M:%S} {'in' if inside else 'OUTSIDE'} summary bounds, {state} after "
              f"{attempts} attempt(s); emulator: {seen}", flush=True)  # fmt: skip


def _ceil_minute(instant: dt.datetime) -> int:
    ts = instant.timestamp()
    return int(-(-ts // 60) * 60)


# --- report -------------------------------------------------------------------------------------------------


def machine_facts(admin_url: str) -> str:
    with psycopg.connect(admin_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    load = os.getloadavg()
    return (f"nproc {os.cpu_count()}, load average {load[0]:.2f} / {load[1]:.2f} at the start (shared cores); "
            f"PostgreSQL {version}, Python {platform.python_version()}, redis-server private")  # fmt: skip


def main(argv=None) -> int:  # noqa: C901 - one run, in order
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="events per second (target)")
    parser.add_argument("--duration", type=float, default=300, help="seconds of load")
    parser.add_argument("--batch-size", type=int, default=200, help="events per request (1 to 1,000)")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn sync workers")
    parser.add_argument("--accounts", type=int, default=4)
    parser.add_argument("--duplicates", type=float, default=0.03, help="share of events sent twice")
    parser.add_argument("--meter-window", type=int, default=60, help="METER_WINDOW_SECONDS of every process")
    parser.add_argument("--redis-port", type=int, default=6391, help="port of the private redis-server")
    parser.add_argument("--redis-down", type=float, default=3.0, help="seconds Redis stays down")
    parser.add_argument("--no-faults", action="store_true", help="no restarts (a baseline run)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--db", default="portal_load", help="scratch database, dropped and recreated")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    parser.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= 1000 or args.rate < 1 or args.duration < 20:
        parser.error("--batch-size must be 1 to 1000, --rate at least 1, --duration at least 20 s")

    def _sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _sigterm)
    # Ctrl-C stops everything even when the run was started in the background (where SIGINT starts ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    command = ".venv/bin/python bench/load.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    date = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
    machine = machine_facts(args.pg)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout  # fmt: skip
    code = f"{head.strip() or 'unknown'}" + (" with uncommitted changes" if dirty.strip() else "")
    rng = random.Random(args.seed)
    work = tempfile.TemporaryDirectory(prefix="bench-load-")
    run = Run(args, Path(work.name))
    client = faults = None
    try:
        accounts = run.setup(rng)
        baseline = trivial_baseline(run.web_port, accounts[0].api_key, 200)
        step(f"baseline: empty batch (400 after the key check) p50 {percentile(baseline, 0.5) * 1000:.1f} ms")
        # The schedule starts once the workload is built and encoded (about 20,000 events a second here).
        t0 = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3 + args.rate * args.duration / 20_000)
        n_per_account = int(args.rate * args.duration / args.accounts)
        for acc in accounts:
            workload_make(acc, n_per_account, duration=args.duration, t0=t0, rng=rng, duplicate_share=args.duplicates)
        batches = batches_make(accounts, args.rate, args.batch_size)
        n_events = sum(b.n for b in batches)
        # The planned schedule's own rate: the batches are cut per account, so it is a little off the target.
        step(f"load: {n_events:,} events in {len(batches):,} batches of <= {args.batch_size} over {args.duration:g} s "
             f"from {args.threads} threads, {args.accounts} accounts")  # fmt: skip
        plan = [] if args.no_faults else [("redis", 0.4 * args.duration), ("worker", 0.5 * args.duration),
                                          ("postgres", 0.6 * args.duration)]  # fmt: skip
        started = time.perf_counter() + max(0.0, (t0 - dt.datetime.now(dt.UTC)).total_seconds())
        client = Client(run.web_port, batches, args.threads, started)
        faults = Faults(plan, run, started)
        client.start()
        faults.start()
        client.join()
        faults.join()
        if faults.error:
            raise LoadError(f"a fault could not be applied: {faults.error!r}")
        done = [b for b in batches if b.done_at is not None]
        first_sent = min((b.sent_at for b in batches if b.sent_at is not None), default=0.0)
        last_done = max((b.done_at for b in done), default=0.0)
        achieved = sum(b.n for b in done) / max(1e-9, last_done - first_sent)
        step(f"posted: {len(done):,} of {len(batches):,} batches answered 202, {achieved:,.0f} events/s; draining")
        last_due = t0 + dt.timedelta(seconds=max(a.last_window_end for a in accounts) + args.meter_window + 5)
        caught_up, ticks = drain(run, last_due, timeout=600)
        checks = checks_run(run, accounts, batches)
    except KeyboardInterrupt:
        print("interrupted: stopping everything", flush=True)
        return 130
    except LoadError as exc:
        print(f"INVALID RUN: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        if client is not None:
            client.stopping.set()
        if faults is not None:
            faults.stopping.set()
            if faults.is_alive():
                faults.join(30)  # a restart under way finishes (or gives up) before everything is stopped
        logs = {name: run.children.log_tail(name, 1500) for name in ("gunicorn", "worker", "beat")}
        run.children.stop_all()
        if not args.keep_db:
            try:
                db_drop(args.pg, args.db)
            except psycopg.Error as exc:
                print(f"could not drop {args.db}: {exc}", file=sys.stderr)
        work.cleanup()

    # figures
    ok_latencies = [x for b in done for x in b.latencies]
    spans = [b.done_at - b.sent_at for b in done]
    retried = [b for b in batches if b.attempts > 1]
    base50, base95 = percentile(baseline, 0.5), percentile(baseline, 0.95)
    p = {q: percentile(ok_latencies, q) for q in (0.5, 0.95, 0.99)}
    lines = [
        f"## Load with restarts: {args.rate:,} events/s for {args.duration:g} s ({date})",
        "",
        f"- command: `{command}`",
        f"- machine: {machine}",
        f"- code: {code}",
        f"- workload: {n_events:,} events ({sum(a.duplicates_sent for a in accounts):,} of them duplicates) in "
        f"{len(batches):,} batches of <= {args.batch_size}, {args.accounts} accounts on fin-standard (24 h window), "
        f"{args.threads} client threads on a fixed schedule; gunicorn {args.workers} sync workers; one Celery worker "
        f"(solo) and beat on a private redis-server; EVENT_EVALUATION=deferred, METER_WINDOW_SECONDS "
        f"{args.meter_window}; real time (the assumed resolutions' answers are dated a day back so that their "
        "windows end during the run)",
        "- faults: "
        + (
            "none (--no-faults)"
            if not faults.faults
            else "; ".join(f"{f.name} at {f.done_at:.1f} s: {f.note}" for f in faults.faults)
        ),  # fmt: skip
        "",
        "| figure | value | baseline (same run) | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| achieved rate, first send to last 202 | {achieved:,.0f} events/s | target {args.rate:,} events/s | "
        f"{achieved / args.rate:.2f} |",
        f"| batch latency p50 (successful attempts) | {p[0.5] * 1000:,.0f} ms | "
        f"trivial request p50 {base50 * 1000:.1f} ms | {p[0.5] / base50:.1f}x |",
        f"| batch latency p95 | {p[0.95] * 1000:,.0f} ms | trivial request p95 {base95 * 1000:.1f} ms | "
        f"{p[0.95] / base95:.1f}x |",
        f"| batch latency p99 | {p[0.99] * 1000:,.0f} ms | | {p[0.99] / base50:.1f}x p50 |",
        f"| batch time incl. retries, p99 / max | {percentile(spans, 0.99) * 1000:,.0f} / "
        f"{max(spans, default=0) * 1000:,.0f} ms | | |",
        f"| batches retried (failed attempts) | {len(retried)} ({sum(b.attempts - 1 for b in batches)}) | "
        f"of {len(batches):,} | |",
        f"| client behind schedule, max | {client.lag_max:.2f} s | | |",
        f"| evaluation queue empty after the last 202 | {caught_up:.1f} s | | |",
    ]
    # Latency by phase: before the first fault, from it to 30 s after the last, and after that.
    if faults.faults:
        first_fault, last_fault = faults.faults[0].done_at, faults.faults[-1].done_at + 30
        phases = {
            "before the faults": [b for b in done if b.sent_at < first_fault],
            "during the faults (first fault to 30 s after the last)": [
                b for b in done if first_fault <= b.sent_at < last_fault
            ],
            "after the faults": [b for b in done if b.sent_at >= last_fault],
        }
        for name, phase in phases.items():
            values = [b.done_at - b.sent_at for b in phase]
            lines.append(
                f"| batch time incl. retries p50 / p95, {name} | {percentile(values, 0.5) * 1000:,.0f} / "
                f"{percentile(values, 0.95) * 1000:,.0f} ms | {len(phase):,} batches | "
                f"{percentile(values, 0.95) / base95:.1f}x |"
            )
    lines.append("")
    if retried:
        failures = Counter(f.split(" ", 2)[1].rstrip(":") for b in retried for f in b.failures)
        lines.append(f"Failed attempts by answer: {dict(failures)}; first: {retried[0].failures[0]}")
        lines.append("")
    failed_steps = [s["name"] + ": " + s["error"][:200] for t in ticks for s in t["steps"] if s["status"] == "failed"]
    keys = ("evaluated_resolutions", "assumed_resolutions", "credited", "overage", "meter_events_confirmed")
    left = {k: sum(t.get(k, 0) for t in ticks) for k in keys}
    lines.append(
        f"Final billing_tick runs: {len(ticks)} (left for them by the run's own beat and worker: {left}); "
        f"failed steps: {failed_steps or 'none'}"
    )
    lines.append("")
    for c in checks:
        lines.append(f"- {'ok' if c.ok else 'FAIL'}: {c.name}: {c.detail}")
    failed = [c for c in checks if not c.ok]
    lines.append("")
    lines.append(f"{len(checks) - len(failed)} of {len(checks)} checks passed." + (" **FAILED**" if failed else ""))
    print("\n".join(lines), flush=True)
    if failed:
        for name, tail in logs.items():
            print(f"--- last lines of the {name} log:\n{tail}", flush=True)
    if not args.no_results:
        with open(args.results, "a") as f:
            f.write("\n" + "\n".join(lines) + "\n")
        print(f"appended to {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
