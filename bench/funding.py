"""Funding benchmark: `resolutions_fund` over many accounts with mixed credit packs, on PostgreSQL, beside a
plain single-row UPDATE loop measured in the same run.

Run from the project root:  .venv/bin/python bench/funding.py [--resolutions 1000000] [--accounts 1000]

One run: a scratch PostgreSQL database (dropped and recreated), `manage.py migrate` in a subprocess, then
Django in-process against it. Accounts are made by `account_create` and their packs by `credit_pack_grant`
(promotional and adjustment packs of mixed sizes: some expire inside the resolution window, some start half
way through it, some cover all of it), with the portal clock frozen in the past as if they had been made
then. The resolutions are fixture rows written with COPY (unfunded, skewed over the accounts, resolved over
the last DAYS), with the daily rollups the ingestion path would have left, then VACUUM ANALYZE.

Timed: one `resolutions_fund(now=...)` over everything (resolutions/s), with a count of its SQL statements
and of the time spent waiting on them. Then the result is verified (every resolution funded once, ledger and
pack balances, rollups, overage prices per billing period, soonest-expiry draw-down, a second run is a no-op).
Baseline: a loop of single-row autocommit UPDATEs from one psycopg connection on a copy of N rows.
If the target is missed, one extra account is funded under cProfile. The report is printed and appended to
bench/RESULTS.md; the scratch database is dropped unless --keep-db. Exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import datetime as dt
import hashlib
import io
import os
import platform
import pstats
import random
import re
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from scratch_db import db_drop, db_recreate, db_url_for, django_db_url, portal_env, scratch_db_arguments, step

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
TARGET_PER_S = 20_000
ACTOR = "bench:funding"
TIMEZONES = ("UTC", "UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo", "America/Los_Angeles")
RESOLUTION_COLUMNS = (
    "account_id", "conversation_id", "kind", "resolved_at", "plan_version_id", "funding", "amount_minor",
    "created_at", "void_reason",
)  # fmt: skip
BASELINE_TABLE = "bench_update_baseline"


class BenchError(Exception):
    """The run cannot give a valid measurement."""


# --- scratch database and Django --------------------------------------------------------------------


def migrate(env: dict[str, str]) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "migrate", "--noinput"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BenchError(f"manage.py migrate failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")


def django_setup(env: dict[str, str]) -> None:
    os.environ.pop("BILLING_CLOCK_NOW", None)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def machine_facts(admin_url: str) -> dict[str, str]:
    with psycopg.connect(admin_url) as conn:
        pg = {k: conn.execute(f"SHOW {k}").fetchone()[0] for k in ("server_version", "fsync", "synchronous_commit")}
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": nproc,
        "cpu": cpu,
        "postgres": pg["server_version"],
        "pg_settings": f"fsync {pg['fsync']}, synchronous_commit {pg['synchronous_commit']}",
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
    }


def code_state() -> tuple[str, dict[str, str]]:
    """(HEAD plus the files the working tree changes, a digest per .py file of the portal's apps): the portal
    may be edited while a run goes on, so the report says which code was measured and what changed."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    porcelain = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout.splitlines()
    changed = sorted(ln[3:] for ln in porcelain if not ln[3:].startswith("bench/"))
    digests = {}
    for app in ("accounts", "credits", "resolutions", "billing_portal"):
        for path in sorted((ROOT / app).rglob("*.py")):
            digests[str(path.relative_to(ROOT))] = hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest()
    state = f"HEAD {head or '?'}" + (f" with uncommitted changes to {', '.join(changed)}" if changed else " (clean)")
    return state, digests


def code_digest(digests: dict[str, str]) -> str:
    return hashlib.sha1("".join(f"{k}{v}" for k, v in sorted(digests.items())).encode()).hexdigest()[:12]


def code_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


# --- fixtures -----------------------------------------------------------------------------------------


@dataclass
class PackPlan:
    template: str  # early (expires inside the window), late (starts half way), whole (covers the window)
    source: str
    quantity: int
    starts_at: dt.datetime
    expires_at: dt.datetime


@dataclass
class AccountPlan:
    n: int  # resolutions
    timezone: str
    anchor: dt.datetime  # created_at: the billing anchor
    packs: list[PackPlan] = field(default_factory=list)
    pk: int = 0
    plan_version_id: int = 0


def skewed_counts(total: int, accounts: int, rng: random.Random, exponent: float) -> list[int]:
    """Zipf-like sizes (rank r gets weight 1/r**exponent), at least 1 each, summing exactly to total,
    assigned to accounts in random order: a few big accounts, many small ones."""
    weights = [1 / (rank**exponent) for rank in range(1, accounts + 1)]
    spare = total - accounts
    scale = spare / sum(weights)
    counts = [1 + int(w * scale) for w in weights]
    order = sorted(range(accounts), key=lambda i: -(weights[i] * scale - int(weights[i] * scale)))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    rng.shuffle(counts)
    return counts


def packs_plan(n: int, window: tuple[dt.datetime, dt.datetime], rng: random.Random) -> list[PackPlan]:
    """1 to 3 packs of mixed relative sizes, scaled so that the account's credited share is about a random
    target between 25 % and 75 % (mean one half): otherwise the few big accounts decide the overall mix."""
    w0, w1 = window
    span = w1 - w0
    templates = rng.choice(
        [["whole"], ["early"], ["late"], ["early", "late"], ["early", "whole"], ["late", "whole"],
         ["early", "late", "whole"]]
    )  # fmt: skip
    packs = []
    for template in templates:
        if template == "early":
            starts = w0 - dt.timedelta(days=rng.uniform(1, 60))
            expires = w0 + span * rng.uniform(0.2, 0.7)
            source = "promotional"
        elif template == "late":
            starts = w0 + span * rng.uniform(0.3, 0.7)
            expires = starts + dt.timedelta(days=365)
            source = "adjustment"
        else:
            starts = w0 - dt.timedelta(days=rng.uniform(1, 200))
            expires = w1 + dt.timedelta(days=rng.uniform(10, 300))
            source = rng.choice(["promotional", "adjustment"])
        covered = (min(expires, w1) - max(starts, w0)) / span
        share = rng.uniform(0.05, 0.45) if rng.random() < 0.5 else rng.uniform(0.6, 1.3)
        packs.append(PackPlan(template, source, max(1, round(n * covered * share)), starts, expires))
    target = n * rng.uniform(0.25, 0.75)
    for _ in range(3):
        estimate = credited_estimate(n, packs, window)
        if estimate == 0 or abs(estimate - target) < max(1, n // 100):
            break
        for pack in packs:
            pack.quantity = max(1, round(pack.quantity * target / estimate))
    return packs


def credited_estimate(n: int, packs: list[PackPlan], window: tuple[dt.datetime, dt.datetime]) -> int:
    """Credits drawn if n resolutions were evenly spread over the window (soonest expiry first, as
    credits_draw does); used only to size the packs."""
    w0, w1 = window
    step = (w1 - w0) / n
    order = sorted(packs, key=lambda p: (p.expires_at, p.source != "promotional"))
    left = [p.quantity for p in order]
    credited = 0
    for k in range(n):
        at = w0 + step * (k + 0.5)
        for i, pack in enumerate(order):
            if left[i] and pack.starts_at <= at < pack.expires_at:
                left[i] -= 1
                credited += 1
                break
    return credited


def accounts_create(plans: list[AccountPlan], name_prefix: str, w0: dt.datetime) -> None:
    """Through the portal's services, with the clock frozen when each thing would have been made: the
    account at its billing anchor, a pack when it starts (at the latest when the window opens)."""
    from accounts.models import PricePlan
    from accounts.services import account_create
    from billing_portal import clock
    from credits.services import credit_pack_grant

    plan = PricePlan.objects.get(slug="fin-standard")
    for i, ap in enumerate(plans):
        with clock.frozen(ap.anchor):
            account = account_create(name=f"{name_prefix} {i:04d}", plan=plan, actor=ACTOR, timezone=ap.timezone)
        ap.pk, ap.plan_version_id = account.pk, account.plan_version_id
        for j, pack in enumerate(ap.packs):
            granted_at = max(ap.anchor + dt.timedelta(minutes=1), min(pack.starts_at, w0))
            with clock.frozen(granted_at):
                credit_pack_grant(
                    account=account, quantity=pack.quantity, source=pack.source, actor=ACTOR,
                    starts_at=pack.starts_at, expires_at=pack.expires_at, reason=f"benchmark pack ({pack.template})",
                    idempotency_key=f"bench:grant:{account.pk}:{j}",
                )  # fmt: skip


def resolutions_copy(conninfo: str, plans: list[AccountPlan], window, now: dt.datetime, rng: random.Random) -> int:
    """COPY the unfunded resolutions, in resolved_at order across accounts (as they would have been written),
    then the daily rollups the ingestion path keeps (resolutions per account and local day)."""
    w0, w1 = window
    start, span = w0.timestamp(), (w1 - w0).total_seconds()
    rows = [(start + rng.random() * span, a, i) for a, ap in enumerate(plans) for i in range(ap.n)]
    rows.sort()
    table = "resolutions_resolution"
    with psycopg.connect(conninfo) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(RESOLUTION_COLUMNS)}) FROM STDIN") as copy:
            for ts, a, i in rows:
                ap = plans[a]
                kind = "confirmed" if rng.random() < 0.4 else "assumed"
                at = dt.datetime.fromtimestamp(ts, dt.UTC)
                copy.write_row((ap.pk, f"conv_{i:08x}", kind, at, ap.plan_version_id, "unfunded", 0, now, ""))
        ids = [ap.pk for ap in plans]
        conn.execute(
            """INSERT INTO resolutions_dailyusage
                   (account_id, date, resolutions, credited, overage, amount_minor, confirmed, escalated)
               SELECT r.account_id, (r.resolved_at AT TIME ZONE a.timezone)::date, count(*), 0, 0, 0,
                      count(*) FILTER (WHERE r.kind = 'confirmed'), 0
               FROM resolutions_resolution r JOIN accounts_account a ON a.id = r.account_id
               WHERE r.account_id = ANY(%s) GROUP BY 1, 2""",
            [ids],
        )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return len(rows)


# --- the timed run -------------------------------------------------------------------------------------

_TABLE = re.compile(r'(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.I)


def query_kind(statement: str) -> str:
    s = statement.lstrip()
    verb = s.split(None, 1)[0].upper() if s else "?"
    match = _TABLE.search(s)
    table = match.group(1).split("_", 1)[-1] if match else ""
    if verb == "SELECT":
        if "FOR UPDATE" in s.upper():
            verb = "SELECT FOR UPDATE"
        elif re.match(r"SELECT\s+COUNT\(", s, re.I):
            verb = "SELECT COUNT"
        elif "DISTINCT" in s[:40].upper():
            verb = "SELECT DISTINCT"
    return f"{verb} {table}".strip()


class QueryStats:
    """execute_wrapper: statements by kind, and the time spent waiting on them (round trip included); also
    when each account's funding starts (its first account-row lock), to split fixed from per-row costs."""

    def __init__(self) -> None:
        self.kinds: dict[str, list] = defaultdict(lambda: [0, 0.0])
        self.account_starts: list[tuple[float, int]] = []
        self.spans: dict[int, float] = {}  # filled by fund_timed

    def __call__(self, execute, statement, params, many, context):
        kind = query_kind(statement)
        t = time.perf_counter()
        if kind == "SELECT FOR UPDATE account" and params and isinstance(params[0], int):
            if not self.account_starts or self.account_starts[-1][1] != params[0]:
                self.account_starts.append((t, params[0]))
        try:
            return execute(statement, params, many, context)
        finally:
            row = self.kinds[kind]
            row[0] += 1
            row[1] += time.perf_counter() - t

    @property
    def seconds(self) -> float:
        return sum(t for _, t in self.kinds.values())

    @property
    def count(self) -> int:
        return sum(n for n, _ in self.kinds.values())

    def per_account(self, end: float) -> dict[int, float]:
        """Seconds from each account's first lock to the next account's (the last one: to `end`)."""
        marks = [*self.account_starts, (end, 0)]
        return {pk: marks[i + 1][0] - t for i, (t, pk) in enumerate(marks[:-1])}


def cost_split(spans: dict[int, float], sizes: dict[int, int]) -> tuple[float, float] | None:
    """Least squares of seconds = fixed + per_row * resolutions over the accounts: (fixed s, per-row s)."""
    points = [(sizes[pk], s) for pk, s in spans.items() if pk in sizes]
    if len(points) < 3:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    if not var:
        return None
    slope = sum((x - mx) * (y - my) for x, y in points) / var
    return my - slope * mx, slope


def fund_timed(now: dt.datetime):
    from django.db import connection

    from resolutions.services import resolutions_fund

    connection.ensure_connection()
    stats = QueryStats()
    with connection.execute_wrapper(stats):
        t = time.perf_counter()
        result = resolutions_fund(now=now)
        end = time.perf_counter()
    stats.spans = stats.per_account(end)
    return result, end - t, stats


# --- verification ---------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0  # time the check's queries took (printed, not reported)


def _one(cur, query: str, params=None):
    cur.execute(query, params)
    return cur.fetchone()[0]


def verify(conninfo: str, plans: list[AccountPlan], expected_rows: int, result, now: dt.datetime) -> list[Check]:
    """Database-side invariants after funding the accounts of `plans` (everything, when they are all)."""
    ids = [ap.pk for ap in plans]
    checks: list[Check] = []
    mark = [time.perf_counter()]

    def check(name: str, ok: bool, detail: str) -> None:
        now_ = time.perf_counter()
        checks.append(Check(name, bool(ok), detail, now_ - mark[0]))
        mark[0] = now_

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("ANALYZE")  # the ledger and rollups grew since the fixture's statistics: plan the joins anew
    mark[0] = time.perf_counter()
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT funding, count(*), count(credit_pack_id), sum(amount_minor) FROM resolutions_resolution "
            "WHERE account_id = ANY(%s) AND voided_at IS NULL GROUP BY funding",
            [ids],
        )
        by = {f: (n, with_pack, amount) for f, n, with_pack, amount in cur.fetchall()}
        unfunded = by.get("unfunded", (0, 0, 0))[0]
        credited, credited_with_pack, credited_amount = by.get("credit", (0, 0, 0))
        overage, overage_with_pack, _ = by.get("overage", (0, 0, 0))
        check("no resolution left unfunded", unfunded == 0, f"{unfunded:,} unfunded")
        check(
            "every resolution funded exactly once",
            credited + overage == expected_rows and (result.credited, result.overage) == (credited, overage),
            f"{credited:,} credit + {overage:,} overage = {credited + overage:,} of {expected_rows:,}; "
            f"resolutions_fund returned {result.credited:,} + {result.overage:,}",
        )
        check(
            "credit rows name a pack and cost 0, overage rows name none",
            credited_with_pack == credited and overage_with_pack == 0 and not credited_amount,
            f"credit with pack {credited_with_pack:,}, overage with pack {overage_with_pack:,}",
        )
        drawdowns, keys = cur.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM credits_creditledgerentry "
            "WHERE kind = 'drawdown' AND account_id = ANY(%s)",
            [ids],
        ).fetchone()
        check(
            "one draw-down entry per credited resolution, distinct keys",
            drawdowns == credited == keys,
            f"{drawdowns:,} draw-downs, {keys:,} distinct keys, {credited:,} credited",
        )
        matched = _one(
            cur,
            """SELECT count(*) FROM resolutions_resolution r JOIN credits_creditledgerentry l
               ON l.idempotency_key = 'drawdown:resolution:' || r.id
              AND l.pack_id = r.credit_pack_id AND l.account_id = r.account_id AND l.quantity = -1
               WHERE r.funding = 'credit' AND r.account_id = ANY(%s)""",
            [ids],
        )
        check("each credited resolution's entry names its pack", matched == credited, f"{matched:,} matched")
        outside = _one(
            cur,
            """SELECT count(*) FROM resolutions_resolution r JOIN credits_creditpack p ON p.id = r.credit_pack_id
               WHERE r.account_id = ANY(%s) AND (p.account_id <> r.account_id
                  OR NOT (p.starts_at <= r.resolved_at AND r.resolved_at < p.expires_at))""",
            [ids],
        )
        check("credit drawn only from the account's pack covering the instant", outside == 0, f"{outside:,} outside")
        packs, bad_packs, left, granted = cur.execute(
            """SELECT count(*), count(*) FILTER (WHERE p.remaining <> coalesce(s.total, 0) OR p.remaining < 0),
                      sum(p.remaining), sum(p.granted)
               FROM credits_creditpack p LEFT JOIN (
                   SELECT pack_id, sum(quantity) AS total FROM credits_creditledgerentry GROUP BY pack_id
               ) s ON s.pack_id = p.id WHERE p.account_id = ANY(%s)""",
            [ids],
        ).fetchone()
        check(
            "every pack: remaining == sum(ledger) >= 0",
            bad_packs == 0 and granted - left == credited,
            f"{packs:,} packs, {bad_packs} wrong; granted {granted:,}, used {granted - left:,}, left {left:,}",
        )
        skipped = _one(
            cur,
            """SELECT count(*) FROM resolutions_resolution r WHERE r.funding = 'overage' AND r.account_id = ANY(%s)
               AND EXISTS (SELECT 1 FROM credits_creditpack p WHERE p.account_id = r.account_id
                   AND p.status = 'active' AND p.remaining > 0
                   AND p.starts_at <= r.resolved_at AND r.resolved_at < p.expires_at)""",
            [ids],
        )
        check(
            "no overage while a covering pack still has credit",
            skipped == 0,
            f"{skipped:,} overage resolutions with credit left for them",
        )
        cur.execute(
            """WITH funded AS (
                   SELECT r.account_id, (r.resolved_at AT TIME ZONE a.timezone)::date AS date, count(*) AS n,
                          count(*) FILTER (WHERE r.funding = 'credit') AS credited,
                          count(*) FILTER (WHERE r.funding = 'overage') AS overage, sum(r.amount_minor) AS amount
                   FROM resolutions_resolution r JOIN accounts_account a ON a.id = r.account_id
                   WHERE r.voided_at IS NULL AND r.account_id = ANY(%s) GROUP BY 1, 2)
               SELECT count(*), count(*) FILTER (WHERE f.account_id IS NULL OR d.account_id IS NULL
                          OR d.resolutions <> f.n OR d.credited <> f.credited OR d.overage <> f.overage
                          OR d.amount_minor <> f.amount OR d.credited + d.overage <> d.resolutions),
                      coalesce(sum(d.credited), 0), coalesce(sum(d.overage), 0)
               FROM funded f FULL JOIN (SELECT * FROM resolutions_dailyusage WHERE account_id = ANY(%s)) d
                 ON d.account_id = f.account_id AND d.date = f.date""",
            [ids, ids],
        )
        days, bad_days, r_credited, r_overage = cur.fetchone()
        check(
            "daily rollups: credited + overage == funded counts (and amounts)",
            bad_days == 0 and (r_credited, r_overage) == (credited, overage),
            f"{days:,} account-days, {bad_days} wrong; rollup sums {r_credited:,} credit + {r_overage:,} overage",
        )
        check(*overage_prices_check(cur, plans, now))
    return checks


def overage_prices_check(cur, plans: list[AccountPlan], now: dt.datetime) -> tuple[str, bool, str]:
    """Per account and billing period, the overage shares add up to the price of the period's count."""
    from accounts.models import Account
    from billing_portal.periods import billing_period
    from resolutions.rating import PriceTerms, price_quantity

    accounts = Account.objects.select_related("plan_version").in_bulk([ap.pk for ap in plans])
    starts: dict[int, list[dt.datetime]] = {}
    for pk, account in accounts.items():
        at, bounds = now - dt.timedelta(days=400), []
        while at <= now:
            start, end = billing_period(anchor=account.created_at, instant=at)
            bounds.append(start)
            at = end
        starts[pk] = sorted(set(bounds))
    sums: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    cur.execute(
        "SELECT account_id, resolved_at, amount_minor FROM resolutions_resolution "
        "WHERE funding = 'overage' AND voided_at IS NULL AND account_id = ANY(%s)",
        [list(accounts)],
    )
    for account_id, resolved_at, amount in cur:
        row = sums[(account_id, bisect.bisect_right(starts[account_id], resolved_at))]
        row[0] += 1
        row[1] += amount
    wrong = 0
    for (account_id, _), (count, amount) in sums.items():
        terms = PriceTerms.from_version(accounts[account_id].plan_version)
        wrong += price_quantity(quantity=count, terms=terms) != amount
    return ("overage shares add up to each period's price", wrong == 0, f"{len(sums):,} periods, {wrong} wrong")


def second_run_check(now: dt.datetime) -> Check:
    from resolutions.services import resolutions_fund

    again = resolutions_fund(now=now)
    return Check("a second run changes nothing", (again.credited, again.overage) == (0, 0), f"{again}")


# --- baseline and profile ---------------------------------------------------------------------------------


def baseline(conninfo: str, rows: int) -> tuple[float, int]:
    """Single-row autocommit UPDATEs, one at a time, from one connection, on a copy of `rows` funded rows
    (same values as funding gave them). Returns (seconds, rows)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {BASELINE_TABLE}")
        conn.execute(f"CREATE TABLE {BASELINE_TABLE} AS SELECT * FROM resolutions_resolution ORDER BY id LIMIT %s",
                     [rows])  # fmt: skip
        conn.execute(f"ALTER TABLE {BASELINE_TABLE} ADD PRIMARY KEY (id)")
        conn.execute(f"VACUUM ANALYZE {BASELINE_TABLE}")
        values = conn.execute(f"SELECT funding, amount_minor, id FROM {BASELINE_TABLE} ORDER BY id").fetchall()
        statement = f"UPDATE {BASELINE_TABLE} SET funding = %s, amount_minor = %s WHERE id = %s"
        t = time.perf_counter()
        for row in values:
            conn.execute(statement, row)
        elapsed = time.perf_counter() - t
        conn.execute(f"DROP TABLE {BASELINE_TABLE}")
    return elapsed, len(values)


def profile_account(conninfo: str, n: int, window, now: dt.datetime, rng: random.Random, top: int) -> dict:
    """A fresh account (3 packs: expiring mid-window, starting mid-window, covering all of it) with n
    resolutions, funded alone under cProfile; then the same funding written set-based to a copy of its rows."""
    from django.db import connection

    from resolutions.services import FUND_BATCH, resolutions_fund

    w0, w1 = window
    span = w1 - w0
    ap = AccountPlan(n=n, timezone="Europe/Berlin", anchor=w0 - dt.timedelta(days=47, hours=5))
    ap.packs = [
        PackPlan("early", "promotional", n // 5, w0 - dt.timedelta(days=30), w0 + span * 0.4),
        PackPlan("late", "adjustment", n // 5, w0 + span * 0.5, w0 + span * 0.5 + dt.timedelta(days=365)),
        PackPlan("whole", "adjustment", n // 10, w0 - dt.timedelta(days=90), w1 + dt.timedelta(days=200)),
    ]
    accounts_create([ap], "Funding profile", w0)
    resolutions_copy(conninfo, [ap], window, now, rng)
    write_copy_prepare(conninfo, ap.pk)
    stats = QueryStats()
    profiler = cProfile.Profile()
    with connection.execute_wrapper(stats):
        t = time.perf_counter()
        profiler.enable()
        result = resolutions_fund(now=now, account_ids=[ap.pk])
        profiler.disable()
        elapsed = time.perf_counter() - t
    write_s = setbased_write(conninfo, ap.pk, FUND_BATCH)
    return {
        "plan": ap, "seconds": elapsed, "result": result, "stats": stats, "rows": profile_rows(profiler, top),
        "write_s": write_s, "batch": FUND_BATCH,
    }  # fmt: skip


WRITE_COPY = "bench_write_copy"
SETBASED_UPDATE = f"""UPDATE {WRITE_COPY} r
    SET funding = v.funding, credit_pack_id = v.pack, amount_minor = v.amount
    FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::bigint[]) AS v(id, funding, pack, amount)
    WHERE r.id = v.id"""


def write_copy_prepare(conninfo: str, account_id: int) -> None:
    """A copy of one account's still unfunded resolutions, shaped like resolutions_resolution (columns,
    indexes including the partial ones, constraints, and the pack foreign key)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {WRITE_COPY}")
        conn.execute(f"CREATE TABLE {WRITE_COPY} (LIKE resolutions_resolution INCLUDING ALL)")
        conn.execute(
            f"ALTER TABLE {WRITE_COPY} ADD FOREIGN KEY (credit_pack_id) REFERENCES credits_creditpack (id) "
            "DEFERRABLE INITIALLY DEFERRED"
        )
        conn.execute(
            f"INSERT INTO {WRITE_COPY} SELECT * FROM resolutions_resolution WHERE account_id = %s ORDER BY id",
            [account_id],
        )
        conn.execute(f"VACUUM ANALYZE {WRITE_COPY}")


def setbased_write(conninfo: str, account_id: int, batch: int) -> float:
    """Give the copy the funding that resolutions_fund gave the real rows, with one UPDATE ... FROM
    unnest(arrays) per batch of `batch` rows in funding order, each batch its own transaction: what the write
    of a funding batch costs PostgreSQL, without Python around it. Drops the copy."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT id, funding, credit_pack_id, amount_minor FROM resolutions_resolution "
            "WHERE account_id = %s ORDER BY resolved_at, id",
            [account_id],
        ).fetchall()
        conn.commit()
        t = time.perf_counter()
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            conn.execute(SETBASED_UPDATE, [list(col) for col in zip(*chunk, strict=True)])
            conn.commit()
        elapsed = time.perf_counter() - t
        conn.execute(f"DROP TABLE {WRITE_COPY}")
        conn.commit()
    return elapsed


def _where(key: tuple) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    parts = Path(filename).parts
    if "site-packages" in parts:
        short = "/".join(parts[parts.index("site-packages") + 1 :])
    else:
        try:
            short = str(Path(filename).relative_to(ROOT))
        except ValueError:
            short = Path(filename).name
    return f"{short}:{line} {name}"


# The functions the findings are about: (label, file suffix, function name).
WATCHED = (
    ("Django bulk_update", "django/db/models/query.py", "bulk_update"),
    ("Django bulk_create", "django/db/models/query.py", "bulk_create"),
    ("model instances built (Model.__init__)", "django/db/models/base.py", "__init__"),
    ("credits_draw", "credits/services.py", "credits_draw"),
    ("rollups_add (daily rollups)", "resolutions/sql.py", "rollups_add"),
    ("price_quantity (overage shares)", "resolutions/rating.py", "price_quantity"),
    ("billing_period", "billing_portal/periods.py", "billing_period"),
    ("credit_alerts_check", "credits/alerts.py", "credit_alerts_check"),
    ("commits", "psycopg/connection.py", "commit"),
    ("waiting on PostgreSQL (psycopg wait)", "psycopg/connection.py", "wait"),
)


_PLUMBING = ("django/db/backends", "django/db/transaction", "django/utils/", "psycopg/", "contextlib", "bench/")


def _outer_caller(stats: pstats.Stats, key: tuple) -> tuple:
    """Up the heaviest callers while they are library plumbing (transaction exits, the execute wrappers), to
    the code that asked for the work. It stops at a model manager's proxy, whose callers pstats mixes."""
    for _ in range(12):
        if not any(part in key[0] for part in _PLUMBING):
            return key
        callers = stats.stats.get(key, (0, 0, 0, 0, {}))[4]
        if not callers:
            return key
        key = max(callers, key=lambda c: callers[c][3])
    return key


def profile_rows(profiler: cProfile.Profile, top: int) -> dict:
    """Top functions by own time and by cumulative time, and the watched ones: (where, calls, tottime, cumtime);
    for each watched one also its heaviest caller."""
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries = [(_where(key), nc, tt, ct) for key, (_, nc, tt, ct, _) in stats.stats.items()]
    total = max(ct for _, _, _, ct in entries)
    by_own = sorted(entries, key=lambda e: -e[2])[:top]
    noise = ("<", "{", "cProfile", "contextlib", "bench/", "django/db/backends/utils.py")
    interesting = [e for e in entries if not e[0].startswith(noise)]
    by_cum = sorted(interesting, key=lambda e: -e[3])[: top + 4]
    watched = []
    for label, suffix, name in WATCHED:
        found = [(k, v) for k, v in stats.stats.items() if k[0].endswith(suffix) and k[2] == name]
        if not found:
            continue
        calls = sum(v[1] for _, v in found)
        cumulative = max(v[3] for _, v in found)  # recursive entries would double-count: take the outermost
        callers: dict[tuple, float] = defaultdict(float)
        for _, v in found:
            for caller, caller_stats in v[4].items():
                callers[caller] += caller_stats[3]
        top_caller = _where(_outer_caller(stats, max(callers, key=callers.get))) if callers else ""
        watched.append((label, calls, cumulative, top_caller))
    return {"own": by_own, "cumulative": by_cum, "watched": watched, "total": total}


def findings(profiled: dict, fund_stats: QueryStats, fund_s: float, sizes: dict[int, int], funded: int) -> list[str]:
    """The top costs with numbers, each with what to do about it, most expensive first. Timed-run figures
    where the timed run measures them (SQL waits, the split between per-account and per-row costs); the
    profiled account for what only a profile shows (Python)."""
    rows, n = profiled["rows"], profiled["plan"].n
    total = rows["total"]
    watched = {label: (calls, ct, caller) for label, calls, ct, caller in rows["watched"]}
    out: list[tuple[float, str]] = []  # (share of its run, text)

    calls, ct, caller = watched.get("Django bulk_update", (0, 0.0, ""))
    if ct / total >= 0.1:
        out.append((ct / total, (
            f"`bulk_update`: {ct:.1f} s of the profiled {total:.1f} s ({ct / total:.0%}), {calls} calls, mostly from "
            f"`{caller}`. For every 1,000 rows Django builds and resolves a `CASE WHEN id = ... THEN ...` with one "
            "arm per row and field, and PostgreSQL matches each row against the arms. Suggestion: one set-based "
            "statement per batch, `UPDATE resolutions_resolution r SET funding = v.funding, credit_pack_id = "
            "v.pack, amount_minor = v.amount FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::bigint[]) "
            "AS v(id, funding, pack, amount) WHERE r.id = v.id`."
        )))  # fmt: skip
    calls, ct, caller = watched.get("model instances built (Model.__init__)", (0, 0.0, ""))
    if calls >= n // 4 and ct / total >= 0.05:
        out.append((ct / total, (
            f"Model instances: {calls:,} built ({ct:.2f} s, {ct / total:.0%} of the profiled run), mostly by "
            f"`{caller}`. Suggestion: build plain tuples there (for instance the ledger rows that are COPYed), "
            "not model instances."
        )))  # fmt: skip
    split = cost_split(fund_stats.spans, sizes)
    if split:
        fixed, per_row = split
        accounts = len(fund_stats.spans)
        statements = fund_stats.count / max(1, accounts)
        share = fixed * accounts / fund_s
        alerts = "credit_alerts_check" in watched
        out.append((share, (
            f"Per-account cost: fitting each account's time to `fixed + per_row * resolutions` over the "
            f"{accounts:,} accounts of the timed run gives {fixed * 1000:.1f} ms per account (x {accounts:,} = "
            f"{fixed * accounts:.1f} s, {share:.0%} of the run; {statements:.0f} statements per account on average"
            + (", and two transactions: the batch and `credit_alerts_check`" if alerts else "")
            + f") and {per_row * 1e6:.0f} us per resolution (a ceiling of {1 / per_row:,.0f} resolutions/s even "
            "with no fixed cost). Suggestion: fund the many small accounts several to a transaction (their locks "
            "taken in id order)"
            + (", and give the alert check the pack totals and burn rate the batch already has instead of "
               "re-querying them per account." if alerts else ".")
        )))  # fmt: skip
    count, seconds = fund_stats.kinds.get("UPDATE dailyusage", (0, 0.0))
    batches = fund_stats.kinds.get("SELECT FOR UPDATE account", (1, 0.0))[0]
    if count > 2 * batches:
        out.append((seconds / fund_s, (
            f"Rollups: {count:,} single-row `UPDATE resolutions_dailyusage` in the timed run ({count / batches:.0f} "
            f"per batch), waiting {seconds:.1f} s ({seconds / fund_s:.0%}). Suggestion: one `UPDATE ... FROM "
            "unnest(dates, credited, overage, amounts)` per batch (after the INSERT of missing days)."
        )))  # fmt: skip
    count, seconds = fund_stats.kinds.get("SELECT COUNT resolution", (0, 0.0))
    if seconds / fund_s >= 0.02:
        out.append((seconds / fund_s, (
            f"Overage so far: {count:,} `SELECT COUNT(*)` of a period's overage resolutions (one per billing "
            f"period and plan version in each batch) waited {seconds:.1f} s ({seconds / fund_s:.0%}); each scans "
            "the account's period, so big accounts pay it again in every batch. Suggestion: count once per "
            "account and period and carry the running count across the account's batches (or sum the period's "
            "`overage` from the daily rollups)."
        )))  # fmt: skip
    count, seconds = fund_stats.kinds.get("UPDATE resolution", (0, 1e-9))
    write_rps = n / profiled["write_s"]
    out.append((seconds / fund_s, (
        f"The resolutions' own write: {count:,} `UPDATE resolutions_resolution` statements waited {seconds:.1f} s "
        f"({seconds / fund_s:.0%} of the timed run, {funded / seconds:,.0f} rows/s): with nothing else, funding "
        f"could not beat that here. No index names the funding columns and the table has fillfactor 60, so most "
        f"of these are HOT updates (pg_stat_user_tables.n_tup_hot_upd tells). For comparison, one `UPDATE ... FROM "
        f"unnest(arrays)` per {profiled['batch']:,} rows and transaction, from plain psycopg, gave a copy of the "
        f"profiled account's {n:,} unfunded rows (same indexes, constraints and pack foreign key, but a small "
        f"table that stays in cache) their funding at {write_rps:,.0f} rows/s."
    )))  # fmt: skip
    out.sort(key=lambda item: -item[0])
    return [f"{i}. {text}" for i, (_, text) in enumerate(out, start=1)]


def watched_lines(rows: dict) -> list[str]:
    total = rows["total"]
    out = ["| function | calls | cumulative s | share | mostly called from |", "| --- | ---: | ---: | ---: | --- |"]
    out += [f"| {label} | {calls:,} | {ct:.2f} | {ct / total:.0%} | `{caller}` |" for label, calls, ct, caller in
            rows["watched"]]  # fmt: skip
    return out


# --- report -----------------------------------------------------------------------------------------------


def status(ok: bool) -> str:
    return "MET" if ok else "**MISSED**"


def query_lines(stats: QueryStats, elapsed: float) -> list[str]:
    lines = ["| statement | count | seconds | share of wall time |", "| --- | ---: | ---: | ---: |"]
    for kind, (n, t) in sorted(stats.kinds.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| `{kind}` | {n:,} | {t:.2f} | {t / elapsed:.1%} |")
    rest = elapsed - stats.seconds
    lines.append(f"| *all SQL* | {stats.count:,} | {stats.seconds:.2f} | {stats.seconds / elapsed:.1%} |")
    lines.append(f"| *Python, commits and the rest* | | {rest:.2f} | {rest / elapsed:.1%} |")
    return lines


def profile_lines(rows: dict[str, list[tuple]]) -> list[str]:
    total = rows["total"]
    out = ["By own time:", "", "| function | calls | own s | cumulative s |", "| --- | ---: | ---: | ---: |"]
    out += [f"| `{w}` | {n:,} | {tt:.2f} | {ct:.2f} |" for w, n, tt, ct in rows["own"]]
    out += [
        "",
        "By cumulative time:",
        "",
        "| function | calls | cumulative s | share |",
        "| --- | ---: | ---: | ---: |",
    ]
    out += [f"| `{w}` | {n:,} | {ct:.2f} | {ct / total:.0%} |" for w, n, _, ct in rows["cumulative"]]
    return out


def results_append(path: Path, lines: list[str]) -> None:
    new = not path.exists() or not path.read_text().strip()
    text = "# Benchmark results\n\nAppended by the scripts of `bench/`, one section per run.\n" if new else ""
    with open(path, "a") as out:
        out.write(text + "\n" + "\n".join(lines) + "\n")


# --- main -------------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, default=1_000_000, help="unfunded resolutions to fund")
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--days", type=float, default=30.0, help="resolutions are resolved within the last DAYS")
    parser.add_argument("--skew", type=float, default=1.0, help="Zipf exponent of resolutions per account")
    parser.add_argument("--baseline-rows", type=int, default=20_000, help="rows of the single-row UPDATE loop")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="cProfile one extra account's funding: if the target is missed (auto), always, never",
    )
    parser.add_argument("--profile-resolutions", type=int, default=50_000, help="resolutions of that account")
    parser.add_argument("--seed", type=int, default=1)
    scratch_db_arguments(parser, db="bench_funding")
    args = parser.parse_args(argv)  # fmt: skip
    if args.accounts < 1 or args.resolutions < args.accounts:
        parser.error("--accounts must be at least 1 and --resolutions at least --accounts")
    if not 1 <= args.days <= 300:
        parser.error("--days must be 1 to 300")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command = shlex.join(sys.orig_argv)
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    load_start = os.getloadavg()
    facts = machine_facts(args.pg)
    code, code_start = code_state()
    conninfo = db_url_for(args.pg, args.db)
    env = portal_env(django_db_url(args.pg, args.db))
    rng = random.Random(args.seed)
    try:
        t = step(f"scratch database {args.db}: drop, create, migrate (about a minute)")
        db_recreate(args.pg, args.db)
        migrate(env)
        django_setup(env)
        print(f"    {time.perf_counter() - t:.0f} s")

        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        window = (now - dt.timedelta(days=args.days), now - dt.timedelta(minutes=1))
        t = step(f"{args.accounts:,} accounts (account_create) and their packs (credit_pack_grant)")
        plans = []
        for n in skewed_counts(args.resolutions, args.accounts, rng, args.skew):
            anchor = window[0] - dt.timedelta(days=rng.uniform(2, 400), seconds=rng.uniform(0, 86400))
            plans.append(AccountPlan(n=n, timezone=rng.choice(TIMEZONES), anchor=anchor))
            plans[-1].packs = packs_plan(n, window, rng)
        accounts_create(plans, "Funding bench", window[0])
        sizes = sorted((ap.n for ap in plans), reverse=True)
        n_packs = sum(len(ap.packs) for ap in plans)
        by_template = defaultdict(int)
        for ap in plans:
            for p in ap.packs:
                by_template[f"{p.template}/{p.source}"] += 1
        capacity = sum(p.quantity for ap in plans for p in ap.packs)
        fixture = {
            "sizes": f"largest {', '.join(f'{s:,}' for s in sizes[:3])}; median {sizes[len(sizes) // 2]:,}; "
            f"smallest {sizes[-1]:,}; top 10 accounts hold {sum(sizes[:10]) / args.resolutions:.0%}",
            "packs": f"{n_packs:,} packs (" + ", ".join(f"{k} {v}" for k, v in sorted(by_template.items()))
            + f"), {capacity:,} credits granted",
        }  # fmt: skip
        print(f"    {fixture['sizes']}\n    {fixture['packs']}\n    {time.perf_counter() - t:.0f} s")

        t = step(f"COPY {args.resolutions:,} unfunded resolutions over the last {args.days:g} days; VACUUM ANALYZE")
        copied = resolutions_copy(conninfo, plans, window, now, rng)
        print(f"    {copied:,} rows in {time.perf_counter() - t:.0f} s")

        import resolutions.services  # noqa: F401 - loaded now: the code_state() below is the code timed

        code, code_timed = code_state()
        fund_now = dt.datetime.now(dt.UTC)
        t = step("timed: resolutions_fund(now=...) over everything")
        result, fund_s, stats = fund_timed(fund_now)
        fund_rps = copied / fund_s
        print(f"    {result.credited:,} credit + {result.overage:,} overage in {fund_s:.1f} s: {fund_rps:,.0f}/s")
        for line in query_lines(stats, fund_s):
            print("    " + line)

        t = step("verifying")
        checks = verify(conninfo, plans, copied, result, fund_now)
        print(f"    database checks {time.perf_counter() - t:.0f} s")
        checks.append(second_run_check(fund_now))
        for c in checks:
            print(f"    {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail} [{c.seconds:.1f} s]")
        print(f"    {time.perf_counter() - t:.0f} s")

        t = step(f"baseline: {args.baseline_rows:,} single-row autocommit UPDATEs from one connection")
        base_s, base_rows = baseline(conninfo, args.baseline_rows)
        base_rps = base_rows / base_s
        print(f"    {base_rps:,.0f} rows/s ({base_s:.1f} s)")

        met = fund_rps >= TARGET_PER_S
        profiled = None
        if args.profile == "always" or (args.profile == "auto" and not met):
            n = min(args.profile_resolutions, args.resolutions)
            t = step(f"profile: one fresh account, {n:,} resolutions, 3 packs, resolutions_fund under cProfile")
            profiled = profile_account(conninfo, n, window, fund_now, rng, 14)
            ap, prof_s, prof_result = profiled["plan"], profiled["seconds"], profiled["result"]
            prof_checks = verify(conninfo, [ap], n, prof_result, fund_now)
            checks += [Check(f"profiled account: {c.name}", c.ok, c.detail) for c in prof_checks if not c.ok]
            print(f"    {prof_result} in {prof_s:.1f} s under cProfile ({n / prof_s:,.0f}/s); "
                  f"checks {'ok' if all(c.ok for c in prof_checks) else 'FAILED'}")  # fmt: skip
            sizes = {ap.pk: ap.n for ap in plans}
            top_costs = findings(profiled, stats, fund_s, sizes, copied)
            for line in [*profile_lines(profiled["rows"]), "", *watched_lines(profiled["rows"]), "", *top_costs]:
                print("    " + line)

        table = [
            "| resolutions | accounts | seconds | resolutions/s | baseline UPDATE rows/s | funding / baseline "
            f"| target >= {TARGET_PER_S:,}/s |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            f"| {copied:,} | {args.accounts:,} | {fund_s:.1f} | {fund_rps:,.0f} | {base_rps:,.0f} "
            f"| {fund_rps / base_rps:.2f}x | {status(met)} |",
        ]
        all_ok = all(c.ok for c in checks)
        print("\n" + "\n".join(table) + "\n")
        before_timed, after_run = code_changes(code_start, code_timed), code_changes(code_timed, code_state()[1])
        code_line = f"Code measured: {code}; digest of the portal's .py files {code_digest(code_timed)}."
        if before_timed:
            code_line += f" Edited between the migration and the timed run: {', '.join(before_timed)}."
        if after_run:
            code_line += (
                " Edited on disk after the timed code was loaded (the run used the loaded code): "
                + ", ".join(after_run)
                + "."
            )
        print(code_line)
        total_s = time.perf_counter() - started
        lines = [
            f"## Funding: {copied:,} resolutions, {args.accounts:,} accounts ({date})",
            "",
            f"Command: `{command}` (from the project root; whole run {total_s / 60:.1f} min)",
            "",
            f"Machine: nproc {facts['nproc']} ({facts['cpu']}), load average {load_start[0]:.2f} at start and "
            f"{os.getloadavg()[0]:.2f} at the end (the cores are shared with other work); PostgreSQL "
            f"{facts['postgres']} ({facts['pg_settings']}), Python {facts['python']}, psycopg {facts['psycopg']}.",
            "",
            code_line,
            "",
            f"Fixture: {fixture['sizes']}; timezones {', '.join(sorted(set(TIMEZONES)))}; billing anchors 2 to 400 "
            f"days before the window. {fixture['packs']} through `credit_pack_grant` (early: expires inside the "
            "window; late: starts half way; whole: covers it). Resolutions COPYed as fixture rows, resolved "
            f"over the last {args.days:g} days, plus their daily rollups; VACUUM ANALYZE.",
            "",
            *table,
            "",
            f"Funded {result.credited:,} by credit ({result.credited / copied:.1%}) and {result.overage:,} as "
            f"overage. Baseline: `UPDATE ... SET funding = %s, amount_minor = %s WHERE id = %s`, one autocommit "
            f"statement per row from one psycopg connection, on a {base_rows:,}-row copy of resolutions_resolution "
            f"with only a primary key ({base_s:.1f} s).",
            "",
            "SQL issued by the timed run (time waiting on each statement, round trip included):",
            "",
            *query_lines(stats, fund_s),
            "",
            "Verification: " + ("all checks passed." if all_ok else "**FAILED**."),
            "",
            *[f"- {'ok' if c.ok else '**FAIL**'}: {c.name} ({c.detail})" for c in checks],
        ]
        if profiled:
            ap, prof_s, prof_result = profiled["plan"], profiled["seconds"], profiled["result"]
            lines += [
                "",
                f"Profile (cProfile): one fresh account, {ap.n:,} resolutions, 3 packs, "
                f"`resolutions_fund(account_ids=[...])` alone: {prof_s:.1f} s under the profiler "
                f"({ap.n / prof_s:,.0f}/s; {prof_result.credited:,} credit, {prof_result.overage:,} overage). "
                "SQL of that run:",
                "",
                *query_lines(profiled["stats"], prof_s),
                "",
                *profile_lines(profiled["rows"]),
                "",
                "Watched functions in that profile (cProfile inflates Python against waits on PostgreSQL):",
                "",
                *watched_lines(profiled["rows"]),
                "",
                "Top costs, most expensive first, and what to do about them:",
                "",
                *top_costs,
            ]
        if not args.no_results:
            results_append(args.results, lines)
            print(f"appended to {args.results}")
        return 0 if all_ok else 1
    finally:
        if args.keep_db:
            print(f"kept database {args.db}")
        else:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # Django may not be set up yet
                pass
            db_drop(args.pg, args.db)


if __name__ == "__main__":
    sys.exit(main())
