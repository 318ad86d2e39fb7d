"""Ingestion benchmark of POST /api/v1/conversation-events, end to end over HTTP, against a COPY baseline.

Run from the project root:  .venv/bin/python bench/ingest.py [--events 200000] [--workers 2] [--concurrency 4]
                                                            [--evaluation deferred|inline]

One run: a scratch PostgreSQL database (dropped and recreated), `manage.py migrate`, one account and API key
made by the portal's own services, gunicorn (sync workers) serving billing_portal.wsgi:application, events
generated in memory, then three measurements on the same rows: the real endpoint (events/s, batch
latency), a bare COPY of the same rows into a table shaped like resolutions_conversationevent, and the pure
rule function resolutions.rules.conversation_evaluate. With --evaluation deferred (the portal's default) a
Celery worker (solo pool, Redis if it answers, else the filesystem broker) evaluates the queued conversations
while the batches are posted, and the run waits until the queue is empty: the report gives the time it took to
catch up after the last 202 and the rate of events stored and evaluated, first POST to empty queue. A profile
of the server follows (py-spy if it is installed, else cProfile in-process), then the report, appended to
bench/RESULTS.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import urllib3
from scratch_db import db_drop, db_recreate, db_url_for, django_db_url, portal_env, step

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
API_PATH = "/api/v1/conversation-events"
EVENT_TABLE = "resolutions_conversationevent"
COPY_TABLE = "bench_copy"
COLUMNS = ("account_id", "event_id", "conversation_id", "type", "occurred_at", "received_at")
MAX_BATCH = 1000  # resolutions.ingestion.MAX_BATCH
TARGET_EVENTS_PER_S = 10_000
TARGET_COPY_RATIO = 0.25
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETUP_MARK = "BENCH_SETUP "
SETUP_CODE = f"""
import json
from accounts.models import PricePlan
from accounts.services import account_create, api_key_create
plan = PricePlan.objects.get(slug="fin-standard")
account = account_create(name="Ingestion bench", plan=plan, actor="bench:ingest")
_, raw_key = api_key_create(account=account, name="ingestion bench", actor="bench:ingest")
window = account.plan_version.inactivity_window.total_seconds()
print({SETUP_MARK!r} + json.dumps({{"account_id": account.pk, "api_key": raw_key, "window_seconds": window}}))
"""


class BenchError(Exception):
    """The run cannot give a valid measurement (setup failed, a response was wrong, rows are missing)."""


# --- workload ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    conversation_id: str
    type: str
    occurred_at: dt.datetime


def _ms(instant: dt.datetime) -> dt.datetime:
    """Millisecond precision, so that the JSON text and the COPY rows carry the very same instant."""
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


def _iso(instant: dt.datetime) -> str:
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def conversations_generate(n_events: int, *, days: float, now: dt.datetime, rng: random.Random) -> list[list[Event]]:
    """Conversations of 2 to 6 events: an AI answer, 0 to 2 rounds of (customer reply, AI answer), then a
    confirmation, a handoff or nothing (the inactivity window decides). The last one may be cut short to
    give exactly n_events. Starts are spread over the last `days`; steps are 5 s to 30 min apart, so
    every event is at least half an hour old (never "in the future" for the server)."""
    conversations: list[list[Event]] = []
    total = 0
    while total < n_events:
        conversation_id = f"conv_{rng.getrandbits(64):016x}"
        rounds = rng.choices((0, 1, 2), weights=(50, 35, 15))[0]
        types = ["ai_answer"] + ["customer_reply", "ai_answer"] * rounds
        endings, weights = ("customer_confirmed", "handoff", None), ((45, 15, 40) if rounds else (75, 25, 0))
        ending = rng.choices(endings, weights=weights)[0]
        if ending:
            types.append(ending)
        types = types[: n_events - total]
        at = now - dt.timedelta(seconds=rng.uniform(3 * 3600, days * 86400))
        events = []
        for event_type in types:
            events.append(Event(f"evt_{rng.getrandbits(96):024x}", conversation_id, event_type, _ms(at)))
            at += dt.timedelta(seconds=rng.uniform(5, 1800))
        conversations.append(events)
        total += len(events)
    ids = {e.event_id for c in conversations for e in c}
    if len(ids) != total or len({c[0].conversation_id for c in conversations}) != len(conversations):
        raise BenchError("random ids collided: change --seed")
    return conversations


def batches_make(events: list[Event], size: int) -> list[list[Event]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def body_encode(batch: list[Event]) -> bytes:
    events = [
        {"id": e.event_id, "conversation_id": e.conversation_id, "type": e.type, "occurred_at": _iso(e.occurred_at)}
        for e in batch
    ]
    return json.dumps({"events": events}, separators=(",", ":")).encode()


@dataclass
class Workload:
    conversations: list[list[Event]]
    batches: list[list[Event]]  # timed
    profile_batches: list[list[Event]]  # the same stream, after the timed part: half sampled, half timed in-process
    bodies: list[bytes] = field(default_factory=list)

    @property
    def n_events(self) -> int:
        return sum(len(b) for b in self.batches)

    def rule_work(self) -> tuple[float, float]:
        """(conversations touched per batch, events re-evaluated per event ingested) when the batches arrive
        in order: every batch re-reads and re-evaluates all stored events of each conversation it touches."""
        seen: Counter[str] = Counter()
        touched = evaluated = 0
        for batch in self.batches:
            in_batch = Counter(e.conversation_id for e in batch)
            touched += len(in_batch)
            for conversation_id, n in in_batch.items():
                seen[conversation_id] += n
                evaluated += seen[conversation_id]
        return touched / len(self.batches), evaluated / self.n_events


def workload_make(args, now: dt.datetime) -> Workload:
    rng = random.Random(args.seed)
    n_total = args.events + 2 * args.profile_batches * args.batch_size
    conversations = conversations_generate(n_total, days=args.days, now=now, rng=rng)
    events = [e for c in conversations for e in c]
    if args.order == "time":  # as a live platform posts them: conversations interleave and span batches
        events.sort(key=lambda e: e.occurred_at)
    timed, rest = events[: args.events], events[args.events :]
    workload = Workload(conversations, batches_make(timed, args.batch_size), batches_make(rest, args.batch_size))
    workload.bodies = [body_encode(b) for b in workload.batches]
    return workload


# --- database and portal processes ------------------------------------------------------------------


def manage(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise BenchError(f"manage.py {args[0]} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


def account_setup(env: dict[str, str]) -> dict:
    out = manage(["shell", "-c", SETUP_CODE], env)
    for line in out.splitlines():
        if line.startswith(SETUP_MARK):
            return json.loads(line[len(SETUP_MARK) :])
    raise BenchError(f"account setup printed no result:\n{out[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn with sync workers; stopped by its master's pid (SIGTERM, then SIGKILL)."""

    def __init__(self, *, workers: int, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.log_path = log_path
        cmd = [
            str(VENV_BIN / "gunicorn"), "billing_portal.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(workers), "--worker-class", "sync", "--timeout", "300", "--log-level", "warning",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait_ready(self, pool: urllib3.HTTPConnectionPool, headers: dict, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                response = pool.urlopen("POST", API_PATH, body=b'{"events": []}', headers=headers, retries=False)
            except urllib3.exceptions.HTTPError:
                time.sleep(0.2)
                continue
            if response.status != 400:  # an empty batch is refused after authentication: the app answers
                raise BenchError(f"warm-up answered {response.status}: {response.data[:500]!r}")
            return
        raise BenchError(f"gunicorn did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Worker:
    """A Celery worker (solo pool: one process, one task at a time) consuming the portal's queue, as production
    runs beside gunicorn when EVENT_EVALUATION is "deferred" (the default)."""

    def __init__(self, *, env: dict[str, str], log_path: Path):
        celery = [str(VENV_BIN / "celery"), "-A", "billing_portal"]
        subprocess.run([*celery, "purge", "-f"], cwd=ROOT, env=env, capture_output=True, timeout=120)
        self.log_path = log_path
        cmd = [*celery, "worker", "--pool", "solo", "--without-gossip", "--without-mingle", "--loglevel", "warning"]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def queue_length(conninfo: str) -> int:
    """Ingested batches whose conversations are not evaluated yet."""
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT count(*) FROM resolutions_pendingevaluation").fetchone()[0]


def queue_wait_empty(conninfo: str, timeout: float) -> float:
    """Seconds until the evaluation queue is empty (polled every 50 ms)."""
    started = time.perf_counter()
    while queue_length(conninfo):
        if time.perf_counter() - started > timeout:
            raise BenchError(f"the evaluation queue was not empty after {timeout:.0f} s")
        time.sleep(0.05)
    return time.perf_counter() - started


def broker_url() -> str:
    """Redis (db 13) when it answers on 127.0.0.1:6379, else the portal's filesystem broker (a folder in var/)."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return "redis://127.0.0.1:6379/13"
    except OSError:
        pass
    return "filesystem://"


class Analyzer(threading.Thread):
    """Stands in for autovacuum's ANALYZE on a server that runs with autovacuum off: without it the planner never
    learns that the tables grew, and plans the id lookups of a batch as scans of the whole account."""

    TABLES = ("resolutions_conversationevent", "resolutions_conversation", "resolutions_resolution")

    def __init__(self, conninfo: str, every: float):
        super().__init__(name="analyzer", daemon=True)
        self.conninfo, self.every = conninfo, every
        self.stopping = threading.Event()
        self.runs, self.seconds = 0, 0.0

    def run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.stopping.wait(self.every):
                started = time.perf_counter()
                conn.execute(f"ANALYZE {', '.join(self.TABLES)}")
                self.seconds += time.perf_counter() - started
                self.runs += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join()


# --- CPU accounting (/proc) ---------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def _postgres_backends(db: str, processes: dict[int, tuple[int, float]]) -> set[int]:
    """Backends connected to database `db`: children of the postmaster whose title names it."""
    pids = set()
    for pid in processes:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("postgres:") and f" {db} " in cmdline:
            pids.add(pid)
    return pids


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine, in clock ticks."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


class CpuMonitor(threading.Thread):
    """Average cores busy during the timed run: gunicorn workers, PostgreSQL backends of the scratch database, this
    process (the client threads, and this monitor), the rest of the machine. Samples /proc every `every` s, so that
    a process ending during the run (a backend closed when Django's CONN_MAX_AGE runs out) is still counted."""

    def __init__(self, db: str, server_pid: int, worker_pid: int | None = None, every: float = 0.5):
        super().__init__(name="cpu-monitor", daemon=True)
        self.db, self.server_pid, self.worker_pid, self.every = db, server_pid, worker_pid, every
        self.stopping = threading.Event()
        self.base: dict[int, float] = {}
        self.seen: dict[str, dict[int, float]] = {"server": {}, "postgres": {}, "worker": {}}
        self._sample(first=True)
        self.machine0, self.client0, self.wall0 = _machine_jiffies(), self._client(), time.perf_counter()

    @staticmethod
    def _client() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def _sample(self, first: bool = False) -> None:
        processes = _processes()
        groups = {
            "server": {pid for pid, (ppid, _) in processes.items() if ppid == self.server_pid},
            "postgres": _postgres_backends(self.db, processes) | set(self.seen["postgres"]),
            "worker": {pid for pid, (ppid, _) in processes.items() if self.worker_pid in (pid, ppid)},
        }
        for group, pids in groups.items():
            for pid in pids & set(processes):
                self.seen[group][pid] = processes[pid][1]
                if first:
                    self.base[pid] = processes[pid][1]

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            self._sample()

    def stop(self) -> dict[str, float]:
        self.stopping.set()
        self.join()
        self._sample()
        wall = time.perf_counter() - self.wall0
        machine = _machine_jiffies()
        busy = (machine[0] - self.machine0[0]) / max(1, machine[1] - self.machine0[1]) * (os.cpu_count() or 1)
        usage = {
            group: sum(cpu - self.base.get(pid, 0.0) for pid, cpu in seen.items()) / wall
            for group, seen in self.seen.items()
        }
        usage["client"] = (self._client() - self.client0) / wall
        usage["machine"] = busy
        usage["other"] = max(0.0, busy - usage["server"] - usage["postgres"] - usage["worker"] - usage["client"])
        return usage


# --- measurements ------------------------------------------------------------------------------------


@dataclass
class PostRun:
    elapsed: float
    latencies: list[float]
    errors: list[str]


def batches_post(pool: urllib3.HTTPConnectionPool, headers: dict, bodies: list[bytes], counts: list[int],
                 concurrency: int) -> PostRun:  # fmt: skip
    """POST every body from `concurrency` threads; each answer must be 202 {"accepted": n, "duplicates": 0}."""

    def post(i: int) -> tuple[float, str | None]:
        started = time.perf_counter()
        try:
            response = pool.urlopen("POST", API_PATH, body=bodies[i], headers=headers, retries=False)
        except urllib3.exceptions.HTTPError as exc:
            return time.perf_counter() - started, f"batch {i}: {exc!r}"
        latency = time.perf_counter() - started
        if response.status != 202:
            return latency, f"batch {i}: HTTP {response.status} {response.data[:300]!r}"
        expected = {"accepted": counts[i], "duplicates": 0}
        answer = json.loads(response.data)
        return latency, None if answer == expected else f"batch {i}: answered {answer}, expected {expected}"

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="client") as executor:
        results = list(executor.map(post, range(len(bodies))))
    elapsed = time.perf_counter() - started
    return PostRun(elapsed, [r[0] for r in results], [r[1] for r in results if r[1]])


def copy_baseline(conninfo: str, account_id: int, batches: list[list[Event]]) -> float:
    """COPY the same rows (same columns) into a scratch table shaped like the events table (LIKE ... INCLUDING
    ALL, plus its foreign keys), a transaction per batch, from one connection. Returns seconds."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
        conn.execute(f"CREATE TABLE {COPY_TABLE} (LIKE {EVENT_TABLE} INCLUDING ALL)")
        foreign_keys = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'",
            (EVENT_TABLE,),
        ).fetchall()
        for (definition,) in foreign_keys:
            conn.execute(f"ALTER TABLE {COPY_TABLE} ADD {definition}")
        received_at = dt.datetime.now(dt.UTC)
        statement = f"COPY {COPY_TABLE} ({', '.join(COLUMNS)}) FROM STDIN"
        started = time.perf_counter()
        for batch in batches:
            with conn.transaction(), conn.cursor() as cursor, cursor.copy(statement) as copy:
                for e in batch:
                    copy.write_row((account_id, e.event_id, e.conversation_id, e.type, e.occurred_at, received_at))
        elapsed = time.perf_counter() - started
        copied = conn.execute(f"SELECT count(*) FROM {COPY_TABLE}").fetchone()[0]
        conn.execute(f"DROP TABLE {COPY_TABLE}")
    expected = sum(len(b) for b in batches)
    if copied != expected:
        raise BenchError(f"COPY baseline stored {copied} rows, expected {expected}")
    return elapsed


def evaluation_bench(workload: Workload, window: dt.timedelta, now: dt.datetime, repeat: int = 3):
    """resolutions.rules.conversation_evaluate alone, once per conversation with all its (timed) events, single
    process; best of `repeat`. Returns (seconds, events, outcome counts)."""
    sys.path.insert(0, str(ROOT))
    rules = importlib.import_module("resolutions.rules")
    facts: dict[str, list] = defaultdict(list)
    for batch in workload.batches:
        for e in batch:
            facts[e.conversation_id].append(rules.EventFact(e.occurred_at, e.type, e.event_id))
    groups = list(facts.values())
    best = float("inf")
    outcomes: Counter[str] = Counter()
    for _ in range(repeat):
        started = time.perf_counter()
        results = [rules.conversation_evaluate(g, window=window, now=now) for g in groups]
        best = min(best, time.perf_counter() - started)
    for outcome in results:
        outcomes[f"{outcome.status}{f' {outcome.kind}' if outcome.kind else ''}"] += 1
    return best, sum(len(g) for g in groups), outcomes


def ingested_check(conninfo: str, account_id: int, workload: Workload) -> dict[str, int]:
    expected_events = workload.n_events
    expected_conversations = len({e.conversation_id for b in workload.batches for e in b})
    with psycopg.connect(conninfo) as conn:
        events = conn.execute(f"SELECT count(*) FROM {EVENT_TABLE} WHERE account_id = %s", (account_id,)).fetchone()[0]
        statuses = dict(
            conn.execute(
                "SELECT status, count(*) FROM resolutions_conversation WHERE account_id = %s GROUP BY status",
                (account_id,),
            ).fetchall()
        )
        resolutions = conn.execute(
            "SELECT count(*) FROM resolutions_resolution WHERE account_id = %s AND voided_at IS NULL", (account_id,)
        ).fetchone()[0]
    if events != expected_events or sum(statuses.values()) != expected_conversations:
        raise BenchError(
            f"stored {events} events and {sum(statuses.values())} conversations, "
            f"expected {expected_events} and {expected_conversations}"
        )
    return {**statuses, "resolutions": resolutions}


# --- profile -----------------------------------------------------------------------------------------

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def _short(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return path


def _is_portal(path: str) -> bool:
    return path.startswith(str(ROOT)) and "/.venv/" not in path and "/bench/" not in path


def _source_line(path: str, line: int) -> str:
    try:
        text = Path(path).read_text().splitlines()[line - 1].strip()
    except (OSError, IndexError):
        return ""
    return text if len(text) <= 90 else text[:87] + "..."


def pyspy_summarize(raw: str, *, batch_ms: float, top: int = 14) -> list[str]:
    """Shares of the in-request wall time (py-spy --idle: waits on PostgreSQL included) by portal source line
    (inclusive) and by leaf function (self), converted to ms per batch with the mean sequential latency."""
    total = 0
    by_line: Counter[tuple[str, int]] = Counter()
    by_leaf: Counter[str] = Counter()
    in_view = 0
    for row in raw.splitlines():
        stack, _, count = row.rpartition(" ")
        frames = [m for m in map(FRAME.match, stack.split(";")) if m]
        if not count.isdigit() or not any(m["func"].endswith("handle_request") for m in frames):
            continue  # a worker waiting for a connection, not serving one
        n = int(count)
        total += n
        for key in {(m["file"], int(m["line"])) for m in frames if _is_portal(m["file"])}:
            by_line[key] += n
        if any(m["func"] == "ConversationEventsApi.post" for m in frames):
            in_view += n
        leaf = frames[-1]
        caller = next((m for m in reversed(frames) if _is_portal(m["file"])), None)
        from_line = f"{_short(caller['file'])}:{caller['line']}" if caller else "(outside portal code)"
        by_leaf[f"{leaf['func']} ({_short(leaf['file'])}) | {from_line}"] += n
    if not total:
        return ["py-spy recorded no sample inside a request."]
    lines = [
        f"{total:,} samples inside requests; the view (ConversationEventsApi.post) is {in_view / total:.0%} of them, "
        f"the rest is WSGI, middleware, DRF dispatch and rendering.",
        "",
        "| portal source line (inclusive: callees and DB waits included) | share | ms/batch |",
        "| --- | ---: | ---: |",
    ]
    for (path, line), n in by_line.most_common(top):
        where = f"{_short(path)}:{line} `{_source_line(path, line)}`"
        lines.append(f"| {where} | {n / total:.1%} | {n / total * batch_ms:,.0f} |")
    lines += [
        "",
        "| leaf function (self time; Connection.wait = waiting for PostgreSQL) | from portal line | share | ms/batch |",
        "| --- | --- | ---: | ---: |",
    ]
    for name, n in by_leaf.most_common(12):
        lines.append(f"| {name} | {n / total:.1%} | {n / total * batch_ms:,.0f} |")
    return lines


def profile_pyspy(pyspy: str, server: Server, pool, headers, batches: list[list[Event]], out_dir: Path) -> list[str]:
    raw_path = out_dir / "pyspy.txt"
    cmd = [pyspy, "record", "--pid", str(server.proc.pid), "--subprocesses", "--idle", "--nonblocking",
           "--full-filenames", "--rate", "250", "--format", "raw", "--output", str(raw_path)]  # fmt: skip
    spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.5)  # let it attach to the master and its workers
    bodies = [body_encode(b) for b in batches]
    run = batches_post(pool, headers, bodies, [len(b) for b in batches], concurrency=1)
    time.sleep(0.3)
    spy.send_signal(signal.SIGINT)
    try:
        output = spy.communicate(timeout=60)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        spy.kill()
        output = spy.communicate()[0].decode(errors="replace")
    if run.errors:
        raise BenchError("profile batches failed: " + "; ".join(run.errors[:3]))
    if not raw_path.exists():
        raise BenchError(f"py-spy wrote nothing:\n{output[-1500:]}")
    batch_ms = sum(run.latencies) / len(run.latencies) * 1000
    head = (
        f"Profile: py-spy record --idle --nonblocking at 250 Hz on the gunicorn workers while {len(bodies)} more "
        f"batches of the same stream were posted one at a time: {batch_ms:,.0f} ms per batch of "
        f"{len(batches[0]):,} on average (no lock contention at concurrency 1)."
    )
    return [head, "", *pyspy_summarize(raw_path.read_text(), batch_ms=batch_ms)]


def profile_in_process(mode: str, env: dict[str, str], api_key: str, batches: list[list[Event]], out_dir: Path):
    """bench/profile_batch.py in a subprocess with the portal's environment: "phases" or "cprofile"."""
    bodies_path = out_dir / f"profile_{mode}.jsonl"
    bodies_path.write_bytes(b"\n".join(body_encode(b) for b in batches))
    script = ROOT / "bench" / "profile_batch.py"
    proc = subprocess.run(
        [str(VENV_BIN / "python"), str(script), "--mode", mode, "--bodies", str(bodies_path)],
        cwd=ROOT, env={**env, "BENCH_API_KEY": api_key}, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BenchError(f"profile_batch.py --mode {mode} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout.rstrip().splitlines()


# --- report ------------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def machine_facts(admin_url: str) -> list[str]:
    settings = ("server_version", "fsync", "synchronous_commit", "autovacuum")
    with psycopg.connect(admin_url) as conn:
        pg = {k: conn.execute(f"SHOW {k}").fetchone()[0] for k in settings}
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    gunicorn = subprocess.run([str(VENV_BIN / "gunicorn"), "--version"], capture_output=True, text=True).stdout
    git = subprocess.run(["git", "log", "-1", "--format=%h %cI"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "resolutions", "accounts", "billing_portal"],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout.splitlines()  # fmt: skip
    return [
        f"portal code: git {git.strip() or '?'}; uncommitted files in its apps: {len(dirty)}",
        f"machine: nproc {len(os.sched_getaffinity(0))} ({cpu}), load average at start {os.getloadavg()[0]:.2f} "
        "(the cores are shared with other work)",
        f"software: PostgreSQL {pg['server_version']} (fsync {pg['fsync']}, synchronous_commit "
        f"{pg['synchronous_commit']}, autovacuum {pg['autovacuum']}), Python {platform.python_version()}, "
        f"{gunicorn.strip()}, psycopg {psycopg.__version__}",
    ]


def autovacuum_on(admin_url: str) -> bool:
    with psycopg.connect(admin_url) as conn:
        return conn.execute("SHOW autovacuum").fetchone()[0] == "on"


def status(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def report_table(*, ingest_eps, copy_eps, eval_eps, p50, p95, first, last) -> list[str]:
    ratio = ingest_eps / copy_eps
    return [
        "| figure | value | target | |",
        "| --- | ---: | --- | --- |",
        f"| ingestion, HTTP end to end | {ingest_eps:,.0f} events/s | >= {TARGET_EVENTS_PER_S:,} events/s "
        f"| {status(ingest_eps >= TARGET_EVENTS_PER_S)} |",
        f"| COPY baseline, same rows | {copy_eps:,.0f} events/s | | |",
        f"| ingestion / COPY | {ratio:.1%} | >= {TARGET_COPY_RATIO:.0%} | {status(ratio >= TARGET_COPY_RATIO)} |",
        f"| evaluation, conversation_evaluate alone | {eval_eps:,.0f} events/s | | |",
        f"| batch latency p50 / p95 | {p50 * 1000:,.0f} / {p95 * 1000:,.0f} ms | | |",
        f"| mean latency, first / last tenth of the batches | {first * 1000:,.0f} / {last * 1000:,.0f} ms | | |",
    ]


def results_append(path: Path, lines: list[str]) -> None:
    new = not path.exists() or not path.read_text().strip()
    with open(path, "a") as out:
        if new:
            out.write("# Benchmark results\n\nAppended by the scripts of bench/, one section per run.\n")
        out.write("\n" + "\n".join(lines) + "\n")


# --- main --------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events to ingest in the timed run")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads posting batches")
    parser.add_argument("--evaluation", choices=("deferred", "inline"), default="deferred",
                        help="EVENT_EVALUATION of the server: deferred (the default; a Celery worker evaluates "
                        "the queued conversations while batches are posted) or inline (each request evaluates "
                        "its own)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=MAX_BATCH, help="events per request (at most 1,000)")
    parser.add_argument("--order", choices=("time", "conversation"), default="time",
                        help="time: events sorted by occurred_at, as a live sender posts them (default); "
                        "conversation: each conversation's events together")  # fmt: skip
    parser.add_argument("--days", type=float, default=3.0, help="conversations start within the last DAYS")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--analyze-every",
        type=float,
        default=10.0,
        help="when the server runs with autovacuum off, ANALYZE the portal's tables every SECONDS while posting, "
        "as autovacuum would (0: never, to measure the server as configured)",
    )
    parser.add_argument("--db", default="bench_portal", help="scratch database, dropped and recreated")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="admin connection (creates and drops the scratch database)")  # fmt: skip
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database afterwards")
    parser.add_argument(
        "--profile",
        choices=("auto", "py-spy", "cprofile", "none"),
        default="auto",
        help="profile the server after the timed run: py-spy if installed (auto), else cProfile",
    )
    parser.add_argument("--profile-batches", type=int, default=20, help="extra batches posted for the profile")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= MAX_BATCH:
        parser.error(f"--batch-size must be 1 to {MAX_BATCH}")
    if not 0.5 <= args.days <= 30:
        parser.error("--days must be 0.5 to 30 (the endpoint refuses events older than 35 days)")
    if args.events < args.batch_size or args.workers < 1 or args.concurrency < 1:
        parser.error("--events must be at least one batch; --workers and --concurrency at least 1")
    if args.profile == "none":
        args.profile_batches = 0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command = shlex.join(sys.orig_argv)
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    pyspy = shutil.which("py-spy", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if args.profile == "py-spy" and not pyspy:
        raise SystemExit("py-spy is not installed (.venv/bin/pip install py-spy), or use --profile cprofile")
    conninfo = db_url_for(args.pg, args.db)
    env = portal_env(django_db_url(args.pg, args.db))
    facts = machine_facts(args.pg)
    server = analyzer = worker = None
    work_dir = tempfile.TemporaryDirectory(prefix="bench-ingest-")
    env["EVENT_EVALUATION"] = args.evaluation
    if args.evaluation == "deferred":
        env["CELERY_BROKER_URL"] = broker_url()
    try:
        t = step(f"scratch database {args.db}: drop, create, migrate (about a minute)")
        db_recreate(args.pg, args.db)
        manage(["migrate", "--noinput"], env)
        setup = account_setup(env)
        print(f"    migrated and set up in {time.perf_counter() - t:.0f} s; account {setup['account_id']}")

        now = dt.datetime.now(dt.UTC)
        t = step(f"generating {args.events:,} events (+{args.profile_batches} profile batches), order={args.order}")
        workload = workload_make(args, now)
        touched, rework = workload.rule_work()
        sizes = Counter(len(c) for c in workload.conversations)
        print(
            f"    {len(workload.conversations):,} conversations (events: "
            + ", ".join(f"{k}: {sizes[k]:,}" for k in sorted(sizes))
            + f"), {len(workload.batches)} timed batches, {touched:,.0f} conversations touched per batch, "
            f"{rework:.2f} events re-evaluated per event ingested; {time.perf_counter() - t:.1f} s"
        )

        step("COPY baseline")
        copy_s = copy_baseline(conninfo, setup["account_id"], workload.batches)
        copy_eps = workload.n_events / copy_s
        print(f"    {copy_eps:,.0f} events/s ({copy_s:.2f} s)")

        step("evaluation: conversation_evaluate alone")
        window = dt.timedelta(seconds=setup["window_seconds"])
        eval_s, eval_events, outcomes = evaluation_bench(workload, window, now)
        eval_eps = eval_events / eval_s
        print(f"    {eval_eps:,.0f} events/s ({eval_s:.3f} s); outcomes {dict(outcomes)}")

        step(f"gunicorn --workers {args.workers} (sync)")
        server = Server(workers=args.workers, env=env, log_path=Path(work_dir.name) / "gunicorn.log")
        pool = urllib3.HTTPConnectionPool(
            "127.0.0.1",
            server.port,
            maxsize=args.concurrency,
            block=True,
            timeout=urllib3.Timeout(connect=10, read=600),
        )
        headers = {"Authorization": f"Bearer {setup['api_key']}", "Content-Type": "application/json"}
        server.wait_ready(pool, headers)
        with ThreadPoolExecutor(args.concurrency) as executor:  # warm-up: each worker loads the app, connects
            list(executor.map(lambda _: server.wait_ready(pool, headers), range(4 * args.workers)))

        if args.analyze_every > 0 and not autovacuum_on(args.pg):
            analyzer = Analyzer(conninfo, args.analyze_every)
            analyzer.start()
        if args.evaluation == "deferred":
            step(f"Celery worker (solo pool), broker {env['CELERY_BROKER_URL']}")
            worker = Worker(env=env, log_path=Path(work_dir.name) / "worker.log")
            queue_wait_empty(conninfo, timeout=120)  # the warm-up stored nothing; the worker is up when it drains
        step(f"posting {len(workload.batches)} batches from {args.concurrency} client threads")
        monitor = CpuMonitor(args.db, server.proc.pid, worker.proc.pid if worker else None)
        monitor.start()
        run = batches_post(pool, headers, workload.bodies, [len(b) for b in workload.batches], args.concurrency)
        queued_at_end = queue_length(conninfo) if worker else 0
        cpu = monitor.stop()
        if run.errors:
            raise BenchError(f"{len(run.errors)} batch(es) failed, first: " + "; ".join(run.errors[:3]))
        ingest_eps = workload.n_events / run.elapsed
        drain_s = 0.0
        if worker is not None:
            drain_s = queue_wait_empty(conninfo, timeout=900)
            print(f"    evaluation caught up {drain_s:.1f} s after the last 202 ({queued_at_end} batches were queued)")
            worker.stop()
            worker = None
        stored = ingested_check(conninfo, setup["account_id"], workload)
        p50, p95 = _percentile(run.latencies, 0.50), _percentile(run.latencies, 0.95)
        print(f"    {ingest_eps:,.0f} events/s ({run.elapsed:.1f} s); stored {stored}")

        profile_lines: list[str] = []
        if args.profile != "none":
            sampled, timed = (
                workload.profile_batches[: args.profile_batches],
                workload.profile_batches[args.profile_batches :],
            )
            use_pyspy = pyspy is not None and args.profile in ("auto", "py-spy")
            step(f"profile: {'py-spy' if use_pyspy else 'cProfile in-process'} on {len(sampled)} more batches")
            if use_pyspy:
                profile_lines = profile_pyspy(pyspy, server, pool, headers, sampled, Path(work_dir.name))
            else:
                profile_lines = profile_in_process("cprofile", env, setup["api_key"], sampled, Path(work_dir.name))
        server.stop()
        server = None
        if args.profile != "none":
            step(f"profile: in-process phase timings on {len(timed)} more batches")
            phase_lines = profile_in_process("phases", env, setup["api_key"], timed, Path(work_dir.name))
            profile_lines += ["", *phase_lines]
        if analyzer is not None:
            analyzer.stop()
            statistics = (
                f"autovacuum is off on this server, so the bench ran ANALYZE on {', '.join(Analyzer.TABLES)} every "
                f"{args.analyze_every:g} s while posting ({analyzer.runs} times, {analyzer.seconds:.1f} s in all)"
            )
        elif autovacuum_on(args.pg):
            statistics = "autovacuum is on: the server keeps the planner's statistics"
        else:
            statistics = "autovacuum is off and --analyze-every 0: the planner's statistics stay those of empty tables"

        tenth = max(1, len(run.latencies) // 10)
        first, last = (sum(part) / len(part) for part in (run.latencies[:tenth], run.latencies[-tenth:]))
        table = report_table(
            ingest_eps=ingest_eps, copy_eps=copy_eps, eval_eps=eval_eps, p50=p50, p95=p95, first=first, last=last
        )
        if args.evaluation == "deferred":
            table += [
                f"| evaluation (Celery worker) caught up, after the last 202 | {drain_s:.1f} s "
                f"({queued_at_end} batches queued then) | | |",
                f"| stored and evaluated, first POST to empty queue | "
                f"{workload.n_events / (run.elapsed + drain_s):,.0f} events/s | | |",
            ]
        missed = [ln for ln in table if "MISSED" in ln]
        verdict = "MISSED: " + ", ".join(ln.split("|")[1].strip() for ln in missed) if missed else "all targets met"
        cpu_line = (
            f"CPU during the timed run, average cores busy (of {os.cpu_count()}): gunicorn workers "
            f"{cpu['server']:.2f}, PostgreSQL backends {cpu['postgres']:.2f}, "
            + (f"Celery worker {cpu['worker']:.2f}, " if args.evaluation == "deferred" else "")
            + f"bench process (client threads) {cpu['client']:.2f}, "
            f"other processes {cpu['other']:.2f} (machine {cpu['machine']:.2f}). CPU time per batch: gunicorn "
            f"{cpu['server'] * run.elapsed / len(workload.batches) * 1000:,.0f} ms, PostgreSQL "
            f"{cpu['postgres'] * run.elapsed / len(workload.batches) * 1000:,.0f} ms."
        )
        evaluated_by = " (a Celery worker, solo pool, evaluated while the batches were posted)" * (
            args.evaluation == "deferred"
        )
        workload_line = (
            f"Workload: {workload.n_events:,} events in {len(workload.batches)} batches of {args.batch_size:,}, "
            f"{len({e.conversation_id for b in workload.batches for e in b}):,} conversations, order={args.order}, "
            f"{touched:,.0f} conversations touched per batch, {rework:.2f} events re-evaluated per event ingested; "
            f"one account; gunicorn sync workers {args.workers}, client threads {args.concurrency}; "
            f"EVENT_EVALUATION={args.evaluation}{evaluated_by}; "
            f"stored afterwards {stored}; planner statistics: {statistics}."
        )
        report = [
            f"## Ingestion, {now:%Y-%m-%d %H:%M} UTC: --evaluation {args.evaluation} --workers {args.workers} "
            f"--concurrency {args.concurrency}",
            "",
            f"- date -u: `{date}`",
            f"- command: `{command}`",
            *[f"- {fact}" for fact in facts],
            f"- {workload_line}",
            "",
            *table,
            "",
            f"{verdict}.",
            "",
            cpu_line,
        ]
        if profile_lines:
            report += ["", *profile_lines]
        print("\n" + "\n".join(report))
        if not args.no_results:
            results_append(args.results, report)
            print(f"\nappended to {_short(str(args.results))}")
        return 0
    except BenchError as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
        if worker is not None:
            worker.stop()
        if analyzer is not None:
            analyzer.stop()
        work_dir.cleanup()
        if not args.keep_db:
            db_drop(args.pg, args.db)


if __name__ == "__main__":
    sys.exit(main())
