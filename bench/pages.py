"""Page benchmark (issue 11): the customer dashboard of one account with 10,000,000 resolutions, the staff book
of 5,000 accounts and the CSV export of 1,000,000 resolutions, served by gunicorn on PostgreSQL, each beside a
baseline measured in the same run.

Run from the project root:  .venv/bin/python bench/pages.py --keep           # build the full fixture, keep it
                            .venv/bin/python bench/pages.py --reuse          # measure again on the kept fixture
                            .venv/bin/python bench/pages.py --small          # a smoke run (100k resolutions)

Fixture (a scratch PostgreSQL database, `--db`, dropped and recreated unless --reuse): the Stripe emulator in
this process on a free port (its state kept in var/bench-pages-<db>-stripe.json, so that --reuse finds the
same subscription), `manage.py migrate`, `stripe_setup`, then one account by `account_provision` with both
clocks frozen about four months before now (Stripe customer, subscription with 10 seats and the metered item,
dj-stripe mirror); the emulator's clock is stepped over each period end and `billing_periods_sync` records the
renewals, so the current period started about two weeks ago. Three packs by `credit_pack_grant` (one expired,
one active all along, one expiring soon), RESOLUTIONS resolutions COPYed unfunded (40 % confirmed, 0.2 %
voided) evenly from the account's first day to a few minutes ago, then BOOK-1 more accounts by
`account_create` (one recorded billing period each, the current one; 60 % with a pack) with BOOK_RESOLUTIONS
resolutions over the last 30 days, skewed over them; `resolutions_fund` funds everything (draw-downs, overage
prices per period, meter windows), windows that closed more than 2 hours ago get a confirmed report row (fixture
rows: the meter reporting is bench/metering.py's), the daily rollups are rebuilt with
`resolutions.sql.rollups_rebuild` under each account's lock, then VACUUM ANALYZE. Users: the big account's
billing admin, and a staff admin. With --reuse the fixture is kept: `manage.py migrate`, the rollups rebuilt,
the big account's subscription read again from the emulator and its period recorded, ANALYZE.

Measured (gunicorn, `--workers` sync workers, DJANGO_DEBUG=false, sessions from a POST to /login/ with
requests): each URL `--warmup` times untimed, then `--requests` times (at most `--max-seconds` per URL, at
least 20 samples): p50, p95, max. Dashboard `/portal/` of the big account beside one `SELECT COUNT(*)` of its
resolutions (median of 5, same run); every `hx-get` URL the dashboard names (fetched with `HX-Request: true`)
separately. Book `/staff/` as the admin: the first page, a sorted page and a search (their URLs read from the
rendered page's links and search form), beside `/login/` through the same gunicorn and `SELECT COUNT(*) FROM
accounts_account`. CSV export `/portal/resolutions/export.csv` of the most recent days holding about
`--export-rows` resolutions: rows/s of the streamed download and the peak RSS of the worker that served it
(its /proc VmHWM reset before the download, read after), beside a `COPY (SELECT ...) TO STDOUT` of the same
rows. A page that answers 404 is reported "not available (404)".

Verification checks print "ok:" / "FAIL:"; the report is appended to bench/RESULTS.md (not with --small or
--no-results). Exit status 0 when every check passed (a missed target is **MISSED** in the table), 2 when a check
failed or the run could not measure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import os
import random
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import requests
from funding import BenchError, Check, code_digest, code_state, django_setup, migrate, results_append, skewed_counts
from ingest import Server, machine_facts
from metering import percentile, stripe_catalog
from scratch_db import db_drop, db_recreate, db_url_for, django_db_url, portal_env, scratch_db_arguments, step

ROOT = Path(__file__).resolve().parent.parent
ACTOR = "bench:pages"
FIXTURE_TABLE = "bench_pages_fixture"
DAY = dt.timedelta(days=1)
DASHBOARD_P95_MS = 150
BOOK_P95_MS = 300
MIN_SAMPLES = 20


def status(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


# --- the emulator, with its state on disk (for --reuse) ---------------------------------------------------


def emulator_state_path(db: str) -> Path:
    return ROOT / "var" / f"bench-pages-{db}-stripe.json"


def emulator_start(state_file: Path, fresh: bool):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from stripe_emulator import EmulatorServer

    if fresh and state_file.exists():
        state_file.unlink()
    state_file.parent.mkdir(parents=True, exist_ok=True)
    return EmulatorServer(port=0, state_file=str(state_file)).start()


# --- fixture --------------------------------------------------------------------------------------------------


def months_before(instant: dt.datetime, months: int) -> dt.datetime:
    month = instant.month - months
    year = instant.year + (month - 1) // 12
    month = (month - 1) % 12 + 1
    return instant.replace(year=year, month=month, day=min(instant.day, 28))


def periods_step(emulator, account, until: dt.datetime) -> int:
    """Move the emulator's clock over each period end of the account's subscription up to `until` and let
    `billing_periods_sync` record each renewal (at the portal's clock of that moment). Returns the renewals."""
    from accounts.models import BillingPeriod
    from accounts.services.billing_periods import billing_periods_sync
    from billing_portal import clock

    renewed = 0
    for _ in range(24):
        end = BillingPeriod.objects.filter(account=account).order_by("-start").values_list("end", flat=True).first()
        if end is None or end > until:
            break
        at = end + dt.timedelta(minutes=1)
        emulator.set_time(int(at.timestamp()))
        with clock.frozen(at):
            result = billing_periods_sync(now=at)
        if result.failures:
            raise BenchError(f"billing_periods_sync failed: {result.failures}")
        renewed += result.renewed
        if not result.renewed:
            break
    return renewed


def invoices_mirror(customer_id: str) -> tuple[int, str]:
    """dj-stripe's copies of the customer's invoices in the emulator (production gets them by webhook)."""
    from django.conf import settings
    from djstripe.models import Invoice

    from billing_portal import stripe_client

    listed = stripe_client.call(
        "list invoices", lambda c, o: c.v1.invoices.list(params={"customer": customer_id, "limit": 100}),
        idempotency_key=None,
    )  # fmt: skip
    done, errors = 0, []
    for invoice in listed.data:
        try:
            stripe_client.mirror(
                lambda inv=invoice: Invoice.sync_from_stripe_data(inv, api_key=settings.STRIPE_SECRET_KEY)
            )
            done += 1
        except Exception as exc:  # noqa: BLE001 - reported, the pages still load without invoices
            errors.append(f"{invoice.id}: {exc.__class__.__name__}: {str(exc)[:200]}")
    return done, "; ".join(errors[:2])


def resolutions_copy(conninfo: str, rows: list[tuple[int, int, int, dt.datetime, dt.datetime]], created: dt.datetime,
                     rng: random.Random, voided_share: float) -> int:  # fmt: skip
    """COPY unfunded resolutions: `rows` are (account id, plan version id, n, from, to); each account's n are
    spread evenly (with jitter) over [from, to), in resolved_at order, 40 % confirmed. Text COPY in blocks."""
    columns = "account_id, conversation_id, kind, resolved_at, plan_version_id, funding, amount_minor, created_at, "
    columns += "voided_at, void_reason"
    created_text = created.isoformat()
    total = 0
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY resolutions_resolution ({columns}) FROM STDIN") as copy:
            for account_id, version_id, n, start, end in rows:
                t0, span = start.timestamp(), (end - start).total_seconds()
                step_s = span / max(1, n)
                buf = []
                rand = rng.random
                for i in range(n):
                    ts = t0 + (i + rand()) * step_s
                    at = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()
                    kind = "confirmed" if rand() < 0.4 else "assumed"
                    if rand() < voided_share:
                        void = f"{at}\tbenchmark: disputed conversation"
                    else:
                        void = "\\N\t"
                    buf.append(f"{account_id}\tc{account_id}-{i:08x}\t{kind}\t{at}\t{version_id}\tunfunded\t0\t"
                               f"{created_text}\t{void}\n")  # fmt: skip
                    if len(buf) >= 20_000:
                        copy.write("".join(buf))
                        buf.clear()
                if buf:
                    copy.write("".join(buf))
                total += n
        conn.commit()
    return total


def meter_reports_fixture(conninfo: str, before: dt.datetime) -> int:
    """Windows that closed before `before` are in Stripe: one confirmed report row each (the meter reporting
    itself is bench/metering.py's subject), so the dashboard's reporting status is a live account's."""
    with psycopg.connect(conninfo) as conn:
        n = conn.execute(
            """INSERT INTO resolutions_meterreport (account_id, window_id, sequence, quantity, timestamp, identifier,
                   state, attempts, rejections, last_error, adjustment_minor, created_at, sent_at, confirmed_at)
               SELECT account_id, id, 0, overage, start, 'bench-pages-' || id, 'confirmed', 1, 0, '', 0,
                      "end", "end" + interval '5 minutes', "end" + interval '6 minutes'
               FROM resolutions_meterwindow WHERE "end" <= %s AND overage > 0""",
            [before],
        ).rowcount
        conn.execute('UPDATE resolutions_meterwindow SET reported = overage WHERE "end" <= %s', [before])
    return n


def rollups_rebuild_all(account_ids: list[int]) -> int:
    """The daily rollups of every account, recomputed by the project's own statement under the account's lock."""
    from django.db import transaction

    from accounts.locks import account_lock
    from resolutions import sql

    days = 0
    for pk in account_ids:
        with transaction.atomic():
            account = account_lock(pk)
            days += sql.rollups_rebuild(account.pk, account.timezone)
    return days


def users_create(account, password: str) -> dict[str, str]:
    from django.contrib.auth.models import Group

    from accounts.models import ADMIN_GROUP, User

    customer = User(username="bench-billing", account=account, customer_role=User.CustomerRole.BILLING_ADMIN)
    customer.set_password(password)
    customer.save()
    admin = User(username="bench-admin", is_staff=True)
    admin.set_password(password)
    admin.save()
    admin.groups.add(Group.objects.get(name=ADMIN_GROUP))
    return {"customer": customer.username, "admin": admin.username}


def fixture_build(args, emulator, conninfo: str, rng: random.Random) -> dict:
    from django.utils.text import slugify

    from accounts.models import BillingPeriod, PricePlan
    from accounts.services import account_create
    from accounts.services.provisioning import account_provision
    from billing_portal import clock
    from credits.services import credit_pack_grant
    from resolutions.services import resolutions_fund

    built = time.perf_counter()
    timings: dict[str, float] = {}  # stored as a list of pairs (jsonb does not keep key order)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    t0 = months_before(now - 15 * DAY, 4).replace(minute=0, second=0)
    history_from, history_to = t0 + DAY, now - dt.timedelta(minutes=5)

    t = step(f"stripe_setup; the big account by account_provision at {t0:%Y-%m-%d %H:%M} UTC (both clocks frozen)")
    stripe_catalog(emulator, t0)
    plan = PricePlan.objects.get(slug="fin-standard")
    with clock.frozen(t0):
        provisioned = account_provision(name="Pages bench: big account", plan=plan, seats=10, actor=ACTOR)
    account = provisioned.account
    renewed = periods_step(emulator, account, now)
    emulator.set_time(None)
    period = BillingPeriod.objects.filter(account=account).order_by("-start").first()
    print(f"    {renewed} renewals recorded; current period {period.start:%Y-%m-%d %H:%M} to {period.end:%Y-%m-%d}")
    n = args.resolutions
    # (source, quantity, starts, expires), sized so that the history is credit, overage between packs, credit:
    # one used up and expired, one used up through most of the history, one used up recently and expiring soon,
    # and one bought three days ago, still holding most of its credits (the burn-down has something to show).
    packs = [
        ("promotional", round(0.15 * n), history_from, history_from + 60 * DAY),
        ("adjustment", round(0.65 * n), history_from + 30 * DAY, now + 300 * DAY),
        ("promotional", round(0.04 * n), now - 10 * DAY, now + 20 * DAY),
        ("adjustment", round(0.10 * n), now - 3 * DAY, now + 365 * DAY),
    ]
    with clock.frozen(t0 + dt.timedelta(minutes=2)):
        for j, (source, quantity, starts, expires) in enumerate(packs):
            credit_pack_grant(
                account=account, quantity=quantity, source=source, actor=ACTOR, starts_at=starts, expires_at=expires,
                reason=f"benchmark pack {j + 1}", idempotency_key=f"bench:pages:grant:{account.pk}:{j}",
            )  # fmt: skip
    timings["big account, Stripe, packs"] = time.perf_counter() - t

    t = step(f"{args.book - 1:,} more accounts (account_create), their current period, packs for 60 %")
    book_ids, book_accounts = [], []
    with clock.frozen(t0):
        for i in range(1, args.book):
            name = f"Book account {i:05d} {rng.choice(['Acme', 'Globex', 'Initech', 'Umbrella', 'Hooli'])}"
            other = account_create(name=name, plan=plan, actor=ACTOR, slug=slugify(f"book-{i:05d}"))
            book_ids.append(other.pk)
            book_accounts.append(other)
            if i % 1000 == 0:
                print(f"    {i:,} accounts", flush=True)
    BillingPeriod.objects.bulk_create([
        BillingPeriod(account_id=pk, start=period.start, end=period.end, stripe_subscription_id=f"sub_bench_{pk}",
                      billing_cycle_anchor=t0, recorded_at=period.start)
        for pk in book_ids
    ])  # fmt: skip
    with clock.frozen(now - 31 * DAY):
        for other in book_accounts:
            if rng.random() < 0.6:
                credit_pack_grant(
                    account=other, quantity=rng.choice([500, 1000, 5000, 20000]), source="promotional",
                    actor=ACTOR, starts_at=now - 31 * DAY, expires_at=now + rng.randint(5, 300) * DAY,
                    reason="benchmark pack", idempotency_key=f"bench:pages:grant:{other.pk}",
                )  # fmt: skip
    timings["book accounts"] = time.perf_counter() - t

    t = step(f"COPY {n:,} + {args.book_resolutions:,} unfunded resolutions")
    version = account.plan_version_id
    plan_rows = [(account.pk, version, n, history_from, history_to)]
    counts = skewed_counts(args.book_resolutions, len(book_ids), rng, 1.0) if book_ids else []
    plan_rows += [(pk, version, c, now - 30 * DAY, history_to) for pk, c in zip(book_ids, counts, strict=True)]
    copied = resolutions_copy(conninfo, plan_rows, now, rng, 0.002)
    timings["COPY"] = time.perf_counter() - t
    print(f"    {copied:,} rows in {timings['COPY']:.0f} s")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("ANALYZE resolutions_resolution")

    t = step("resolutions_fund(now=...) over everything (draw-downs, overage prices, meter windows)")
    funded = resolutions_fund(now=now)
    timings["resolutions_fund"] = time.perf_counter() - t
    print(f"    {funded.credited:,} credit + {funded.overage:,} overage in {timings['resolutions_fund']:.0f} s")
    reports = meter_reports_fixture(conninfo, now - dt.timedelta(hours=2))

    t = step("invoices mirrored by dj-stripe; rollups_rebuild for every account; VACUUM ANALYZE")
    invoices, invoice_errors = invoices_mirror(provisioned.stripe_customer_id)
    days = rollups_rebuild_all([account.pk, *book_ids])
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    timings["rollups, VACUUM ANALYZE"] = time.perf_counter() - t

    password = secrets.token_urlsafe(16)
    users = users_create(account, password)
    facts = {
        "account_id": account.pk, "book_ids": [account.pk, *book_ids], "resolutions": n,
        "book_resolutions": args.book_resolutions, "t0": t0.isoformat(), "history_from": history_from.isoformat(),
        "history_to": history_to.isoformat(), "built_at": now.isoformat(), "password": password, "users": users,
        "customer_id": provisioned.stripe_customer_id, "subscription_id": provisioned.stripe_subscription_id,
        "funded": [funded.credited, funded.overage], "meter_reports": reports, "rollup_days": days,
        "invoices": invoices, "invoice_errors": invoice_errors, "renewals": renewed,
        "packs": [[s, q, a.isoformat(), b.isoformat()] for s, q, a, b in packs],
        "timings": list(timings.items()), "build_seconds": time.perf_counter() - built, "seed": args.seed,
    }  # fmt: skip
    with psycopg.connect(conninfo) as conn:
        conn.execute(f"CREATE TABLE {FIXTURE_TABLE} (facts jsonb NOT NULL)")
        conn.execute(f"INSERT INTO {FIXTURE_TABLE} VALUES (%s)", [json.dumps(facts)])
    return facts


def fixture_load(conninfo: str) -> dict:
    try:
        with psycopg.connect(conninfo) as conn:
            return conn.execute(f"SELECT facts FROM {FIXTURE_TABLE}").fetchone()[0]
    except psycopg.Error as exc:
        raise BenchError(
            f"no fixture to reuse in this database ({exc.__class__.__name__}): run with --keep first"
        ) from None


def fixture_refresh(facts: dict, emulator, conninfo: str) -> dict[str, float]:
    """--reuse: the migrated code's view of the kept data: the rollups rebuilt, the big account's current period
    read again from Stripe (the emulator's clock is real time, so a period may have ended), ANALYZE."""
    from django.conf import settings
    from djstripe.models import Subscription

    from accounts.models import Account
    from accounts.services.billing_periods import billing_period_record
    from billing_portal import stripe_client

    timings = {}
    t = time.perf_counter()
    emulator.set_time(None)
    subscription = stripe_client.call(
        "retrieve subscription",
        lambda c, o: c.v1.subscriptions.retrieve(facts["subscription_id"]),
        idempotency_key=None,
    )  # fmt: skip
    stripe_client.mirror(lambda: Subscription.sync_from_stripe_data(subscription, api_key=settings.STRIPE_SECRET_KEY))
    billing_period_record(subscription=subscription, account=Account.objects.get(pk=facts["account_id"]))
    timings["period re-read"] = time.perf_counter() - t
    t = time.perf_counter()
    rollups_rebuild_all(facts["book_ids"])
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("ANALYZE")
    timings["rollups_rebuild, ANALYZE"] = time.perf_counter() - t
    return timings


def fixture_checks(facts: dict, conninfo: str) -> list[Check]:
    pk = facts["account_id"]
    with psycopg.connect(conninfo) as conn:
        n, voided, unfunded = conn.execute(
            "SELECT count(*), count(voided_at), count(*) FILTER (WHERE funding = 'unfunded' AND voided_at IS NULL) "
            "FROM resolutions_resolution WHERE account_id = %s",
            [pk],
        ).fetchone()
        rolled = conn.execute(
            "SELECT coalesce(sum(resolutions), 0), coalesce(sum(credited), 0), coalesce(sum(overage), 0) "
            "FROM resolutions_dailyusage WHERE account_id = %s",
            [pk],
        ).fetchone()
        actual = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE funding = 'credit'), count(*) FILTER (WHERE funding = 'overage') "
            "FROM resolutions_resolution WHERE account_id = %s AND voided_at IS NULL",
            [pk],
        ).fetchone()
        accounts = conn.execute("SELECT count(*) FROM accounts_account").fetchone()[0]
        period = conn.execute(
            'SELECT start, "end" FROM accounts_billingperiod WHERE account_id = %s ORDER BY start DESC LIMIT 1', [pk]
        ).fetchone()
    now = dt.datetime.now(dt.UTC)
    return [
        Check(
            "the big account holds the fixture's resolutions",
            n == facts["resolutions"],
            f"{n:,} resolutions ({voided:,} voided), fixture {facts['resolutions']:,}",
        ),  # fmt: skip
        Check("every non-voided resolution is funded", unfunded == 0, f"{unfunded:,} unfunded"),
        Check(
            "the daily rollups equal the resolutions (rollups_rebuild)",
            tuple(rolled) == tuple(actual),
            f"rollups {tuple(rolled)}, resolutions (all, credit, overage) {tuple(actual)}",
        ),  # fmt: skip
        Check(
            "the book holds the fixture's accounts",
            accounts == len(facts["book_ids"]),
            f"{accounts:,} accounts, fixture {len(facts['book_ids']):,}",
        ),  # fmt: skip
        Check(
            "the big account's recorded billing period holds now",
            period is not None and period[0] <= now < period[1],
            f"{period[0]:%Y-%m-%d %H:%M} to {period[1]:%Y-%m-%d %H:%M} UTC" if period else "no period",
        ),  # fmt: skip
    ]


def packs_text(facts: dict) -> str:
    built = dt.datetime.fromisoformat(facts["built_at"])
    out = []
    for source, quantity, starts, expires in facts["packs"]:
        a = (dt.datetime.fromisoformat(starts) - built).days
        b = (dt.datetime.fromisoformat(expires) - built).days
        out.append(f"{source} {quantity:,} from day {a} to day {b}")
    return "; ".join(out) + " (days from the build)"


# --- gunicorn and its workers ---------------------------------------------------------------------------------


class PageServer(Server):
    def wait_ready(self, timeout: float = 90) -> None:  # noqa: D102 - the login page answers when a worker is up
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                response = requests.get(f"{self.url}/login/", timeout=10)
            except requests.RequestException:
                time.sleep(0.2)
                continue
            if response.status_code != 200:
                raise BenchError(f"/login/ answered {response.status_code}; gunicorn's log:\n{self.log_tail()}")
            return
        raise BenchError(f"gunicorn did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as fh:
                        ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == self.proc.pid:
                    out.append(int(entry))
        return sorted(out)


def proc_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def hwm_reset(pid: int) -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux: 5 > /proc/<pid>/clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# --- the client -----------------------------------------------------------------------------------------------


def login(base: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/login/", timeout=30)
    token = session.cookies.get("csrftoken") or re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    response = session.post(
        f"{base}/login/", data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/login/"}, allow_redirects=False, timeout=30,
    )  # fmt: skip
    if response.status_code != 302 or "sessionid" not in session.cookies:
        raise BenchError(f"login of {username} failed: {response.status_code} {response.text[:300]}")
    return session


@dataclass
class Timed:
    label: str
    path: str
    times: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    size: int = 0
    body: str = ""
    available: bool = True
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.available and set(self.statuses) == {200}

    def pct(self, q: float) -> float:
        return 1000 * percentile(self.times, q)


def timed_get(session: requests.Session, base: str, label: str, path: str, args, headers: dict | None = None) -> Timed:
    """GET `path` --warmup times, then up to --requests times within --max-seconds (at least MIN_SAMPLES)."""
    out = Timed(label, path)
    first = session.get(base + path, headers=headers, timeout=300, allow_redirects=False)
    if first.status_code == 404:
        out.available, out.note = False, "not available (404)"
        return out
    out.body = first.text
    for _ in range(max(0, args.warmup - 1)):
        session.get(base + path, headers=headers, timeout=300, allow_redirects=False)
    started = time.perf_counter()
    for k in range(args.requests):
        t = time.perf_counter()
        response = session.get(base + path, headers=headers, timeout=300, allow_redirects=False)
        _ = response.content
        out.times.append(time.perf_counter() - t)
        out.statuses[response.status_code] = out.statuses.get(response.status_code, 0) + 1
        out.size = len(response.content)
        if k + 1 >= MIN_SAMPLES and time.perf_counter() - started > args.max_seconds:
            out.note = f"stopped after {k + 1} requests (--max-seconds {args.max_seconds:g})"
            break
    return out


def page_text(page: str) -> str:
    """The page without its per-request parts (CSRF tokens, nonces), to tell whether two answers are the same."""
    return re.sub(r'(csrfmiddlewaretoken" value=|csrf[-_]token" content=|nonce=)"[^"]*"', "", page)


def hx_get_urls(page: str) -> list[str]:
    """The URLs the page loads with htmx (`hx-get`), in page order, without duplicates."""
    seen = []
    for raw in re.findall(r'hx-get\s*=\s*["\']([^"\']+)["\']', page):
        url = html.unescape(raw)
        if url.startswith("/") and url not in seen:
            seen.append(url)
    return seen


def book_variants(page: str, term: str) -> tuple[str | None, str]:
    """The book's sorted page (the first link whose query sets a sort order) and its search URL (the GET form's
    search input, else `q`)."""
    sort = None
    for raw in re.findall(r'href\s*=\s*["\']([^"\']*\?[^"\']*)["\']', page):
        href = html.unescape(raw)
        query = urllib.parse.parse_qs(href.split("?", 1)[1])
        if any(k in query for k in ("sort", "order", "ordering", "o")):
            sort = "/staff/?" + href.split("?", 1)[1]
            break
    name = "q"
    for tag in re.findall(r"<input[^>]*>", page):
        if re.search(r'type\s*=\s*["\']search["\']', tag) or re.search(r'role\s*=\s*["\']search', tag):
            found = re.search(r'name\s*=\s*["\']([^"\']+)["\']', tag)
            if found:
                name = found[1]
                break
    return sort, f"/staff/?{urllib.parse.urlencode({name: term})}"


# --- baselines ------------------------------------------------------------------------------------------------


def sql_timed(conninfo: str, query: str, params, repeats: int = 5) -> tuple[float, object]:
    """Median wall time of `query` (after one untimed run), from one connection; and its answer."""
    with psycopg.connect(conninfo) as conn:
        answer = conn.execute(query, params).fetchone()[0]
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            conn.execute(query, params).fetchone()
            times.append(time.perf_counter() - t)
    return percentile(times, 0.5), answer


EXPORT_SELECT = (
    "SELECT resolved_at, conversation_id, kind, funding, amount_minor, credit_pack_id, voided_at, void_reason "
    "FROM resolutions_resolution WHERE account_id = %s AND resolved_at >= %s AND resolved_at < %s "
    "ORDER BY resolved_at, id"
)


def copy_baseline(conninfo: str, account_id: int, start: dt.datetime, end: dt.datetime) -> tuple[int, float, int]:
    """Rows, seconds and bytes of `COPY (SELECT the same rows) TO STDOUT (FORMAT csv, HEADER)` read by psycopg."""
    with psycopg.connect(conninfo) as conn, psycopg.ClientCursor(conn) as cur:
        query = cur.mogrify(EXPORT_SELECT, [account_id, start, end])
        t = time.perf_counter()
        size = lines = 0
        with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER)") as copy:
            for block in copy:
                size += len(block)
                lines += bytes(block).count(b"\n")
        return lines - 1, time.perf_counter() - t, size


def export_range(conninfo: str, account_id: int, rows: int, history_to: dt.datetime) -> tuple[dt.date, dt.date, int]:
    """The most recent local days (UTC: the fixture's accounts are) holding at least `rows` resolutions."""
    with psycopg.connect(conninfo) as conn:
        days = conn.execute(
            "SELECT date, resolutions FROM resolutions_dailyusage WHERE account_id = %s ORDER BY date DESC",
            [account_id],
        ).fetchall()
    total, first = 0, history_to.date()
    for day, n in days:
        total, first = total + n, day
        if total >= rows:
            break
    return first, history_to.date(), total


def export_timed(session, server: PageServer, path: str, expected: int) -> dict:
    """Stream the export, counting lines; sample every worker's RSS meanwhile; the serving worker is the one
    whose CPU time grew the most. Stops reading at 1.5x the expected rows (a filter the view ignored)."""
    workers = server.workers()
    reset = {pid: hwm_reset(pid) for pid in workers}
    before = {pid: (proc_cpu(pid), proc_kb(pid, "VmRSS"), proc_kb(pid, "VmHWM")) for pid in workers}
    peak = dict.fromkeys(workers, 0)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for pid in workers:
                peak[pid] = max(peak[pid], proc_kb(pid, "VmRSS"))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    first_byte = None
    lines = size = 0
    truncated = False
    with session.get(server.url + path, stream=True, timeout=600) as response:
        status_code = response.status_code
        content_type = response.headers.get("Content-Type", "")
        streamed = "Content-Length" not in response.headers
        if status_code == 200:
            for chunk in response.iter_content(chunk_size=256 * 1024):
                if first_byte is None:
                    first_byte = time.perf_counter() - t
                size += len(chunk)
                lines += chunk.count(b"\n")
                if lines > 1.5 * expected + 10:
                    truncated = True
                    break
    seconds = time.perf_counter() - t
    stop.set()
    sampler.join()
    grew = {pid: proc_cpu(pid) - before[pid][0] for pid in workers}
    served = max(grew, key=grew.get) if grew else None
    return {
        "status": status_code, "content_type": content_type, "streamed": streamed, "rows": max(0, lines - 1),
        "seconds": seconds, "first_byte": first_byte or seconds, "bytes": size, "truncated": truncated,
        "worker": served, "cpu": grew.get(served, 0.0), "hwm_reset": reset.get(served, False),
        "rss_before_kb": before.get(served, (0, 0, 0))[1], "hwm_after_kb": proc_kb(served, "VmHWM") if served else 0,
        "rss_peak_sampled_kb": peak.get(served, 0),
    }  # fmt: skip


# --- main -----------------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, default=10_000_000, help="resolutions of the big account")
    parser.add_argument("--book", type=int, default=5_000, help="accounts in all (the big one included)")
    parser.add_argument("--book-resolutions", type=int, default=500_000, help="resolutions of the other accounts")
    parser.add_argument("--export-rows", type=int, default=1_000_000, help="about this many rows exported")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per URL")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests per URL first")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="stop timing a URL after this long")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--keep", dest="keep_db", action="store_true", help="keep the fixture database (and state)")
    parser.add_argument("--reuse", action="store_true", help="measure on a kept fixture (implies --keep)")
    parser.add_argument("--small", action="store_true",
                        help="a smoke run: 100k resolutions, 200 accounts, 20k exported; not recorded")  # fmt: skip
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--label", default="", help="said in the results' heading, e.g. which code was measured")
    scratch_db_arguments(parser, db="bench_pages")
    args = parser.parse_args(argv)
    if args.small:
        args.resolutions, args.book, args.book_resolutions, args.export_rows = 100_000, 200, 20_000, 20_000
        args.requests, args.warmup, args.no_results = 40, 5, True
        if args.db == "bench_pages":
            args.db = "bench_pages_small"
    if args.reuse:
        args.keep_db = True
    if args.book < 1 or args.resolutions < 1000:
        parser.error("--book must be at least 1 and --resolutions at least 1000")
    return args


def main(argv=None) -> int:  # noqa: C901 - one run, in order
    args = parse_args(argv)
    command = shlex.join(sys.orig_argv)
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    facts_lines = machine_facts(args.pg)
    conninfo = db_url_for(args.pg, args.db)
    rng = random.Random(args.seed)
    state_file = emulator_state_path(args.db)
    if args.reuse and not state_file.exists():
        print(f"invalid measurement: --reuse needs the emulator state {state_file} (run with --keep first)",
              file=sys.stderr)  # fmt: skip
        return 2
    emulator = emulator_start(state_file, fresh=not args.reuse)
    env = portal_env(django_db_url(args.pg, args.db))
    env.update(STRIPE_API_BASE=emulator.url, STRIPE_BACKOFF_BASE_SECONDS="0.05", EVENT_EVALUATION="inline")
    work_dir = tempfile.TemporaryDirectory(prefix="bench-pages-")
    checks: list[Check] = []
    server = None
    try:
        if args.reuse:
            t = step(f"emulator at {emulator.url} (state {state_file.name}); reusing {args.db}: migrate")
        else:
            t = step(f"emulator at {emulator.url}; scratch database {args.db}: drop, create, migrate")
            db_recreate(args.pg, args.db)
        migrate(env)
        django_setup(env)
        print(f"    {time.perf_counter() - t:.0f} s")
        if args.reuse:
            facts = fixture_load(conninfo)
            t = step("fixture kept: period re-read from Stripe, rollups_rebuild for every account, ANALYZE")
            refresh = fixture_refresh(facts, emulator, conninfo)
            print(f"    {time.perf_counter() - t:.0f} s")
        else:
            facts = fixture_build(args, emulator, conninfo, rng)
            refresh = None
            print(f"    fixture built in {facts['build_seconds'] / 60:.1f} min")
        checks += fixture_checks(facts, conninfo)
        for c in checks:
            print(f"    {'ok:' if c.ok else 'FAIL:'} {c.name}: {c.detail}")
        code, digests = code_state()

        t = step("manage.py collectstatic (DEBUG off: WhiteNoise serves the manifest's files)")
        collect = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "manage.py", "collectstatic", "--noinput"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        if collect.returncode != 0:
            raise BenchError(f"collectstatic failed:\n{(collect.stdout + collect.stderr)[-2000:]}")
        t = step(f"gunicorn, {args.workers} sync workers; logging in")
        server = PageServer(workers=args.workers, env=env, log_path=Path(work_dir.name) / "gunicorn.log")
        server.wait_ready()
        customer = login(server.url, facts["users"]["customer"], facts["password"])
        admin = login(server.url, facts["users"]["admin"], facts["password"])
        anonymous = requests.Session()
        pk = facts["account_id"]

        t = step("baseline: SELECT COUNT(*) of the big account's resolutions (median of 5)")
        count_s, count_n = sql_timed(
            conninfo, "SELECT COUNT(*) FROM resolutions_resolution WHERE account_id = %s", [pk]
        )
        print(f"    {1000 * count_s:.1f} ms ({count_n:,} rows)")

        t = step(f"dashboard /portal/: {args.warmup} warm-ups, {args.requests} timed")
        dashboard = timed_get(customer, server.url, "dashboard `/portal/`", "/portal/", args)
        print(f"    p50 {dashboard.pct(0.5):.0f} ms, p95 {dashboard.pct(0.95):.0f} ms, {dashboard.statuses}")
        partials = []
        for url in hx_get_urls(dashboard.body):
            t = step(f"dashboard partial {url} (HX-Request: true)")
            part = timed_get(customer, server.url, f"partial `{url}`", url, args,
                             headers={"HX-Request": "true", "HX-Current-URL": f"{server.url}/portal/"})  # fmt: skip
            partials.append(part)
            print(f"    {part.note or f'p50 {part.pct(0.5):.0f} ms, p95 {part.pct(0.95):.0f} ms, {part.statuses}'}")
        checks.append(Check(
            "the dashboard answered 200 for the big account, naming it",
            dashboard.ok and "Pages bench" in dashboard.body,
            f"statuses {dashboard.statuses}; {dashboard.size:,} bytes; {len(partials)} hx-get URLs",
        ))  # fmt: skip
        checks += [Check(f"partial {p.path} answered 200", p.ok or not p.available, p.note or f"statuses {p.statuses}")
                   for p in partials]  # fmt: skip

        t = step("book /staff/ as the admin: first page, a sorted page, a search; /login/ baseline")
        login_page = timed_get(anonymous, server.url, "`/login/` (anonymous)", "/login/", args)
        accounts_s, accounts_n = sql_timed(conninfo, "SELECT COUNT(*) FROM accounts_account", None)
        book = [timed_get(admin, server.url, "book `/staff/`, first page", "/staff/", args)]
        sort_url, search_url = book_variants(book[0].body, "Book account 0042")
        if sort_url:
            book.append(timed_get(admin, server.url, f"book, sorted `{sort_url}`", sort_url, args))
        else:
            book.append(
                Timed("book, sorted", "(none)", available=False, note="not available (no sort link on the page)")
            )
        book.append(timed_get(admin, server.url, f"book, search `{search_url}`", search_url, args))
        for b in book[1:]:
            if b.available and page_text(b.body) == page_text(
                book[0].body
            ):  # the view ignored the query: say so beside the figure
                b.note = "; ".join(filter(None, [b.note, "same response as the first page: the query was ignored"]))
        for b in book:
            print(f"    {b.label}: {b.note or f'p50 {b.pct(0.5):.0f} ms, p95 {b.pct(0.95):.0f} ms, {b.statuses}'}")
        print(f"    /login/ p50 {login_page.pct(0.5):.1f} ms, p95 {login_page.pct(0.95):.1f} ms; "
              f"COUNT(*) accounts {1000 * accounts_s:.2f} ms")  # fmt: skip
        checks.append(Check("the book's first page answered 200", book[0].ok, f"statuses {book[0].statuses}"))
        checks += [Check(f"{b.label} answered 200", b.ok, f"statuses {b.statuses}") for b in book[1:] if b.available]

        date_from, date_to, expected_days = export_range(conninfo, pk, args.export_rows, dt.datetime.fromisoformat(
            facts["history_to"]))  # fmt: skip
        tz_start = dt.datetime.combine(date_from, dt.time(), dt.UTC)
        tz_end = dt.datetime.combine(date_to + DAY, dt.time(), dt.UTC)
        query = urllib.parse.urlencode({"from": date_from, "to": date_to, "date_from": date_from, "date_to": date_to})
        export_path = f"/portal/resolutions/export.csv?{query}"
        t = step(f"baseline: COPY (SELECT ...) TO STDOUT of the resolutions {date_from} to {date_to}")
        copy_rows, copy_s, copy_bytes = copy_baseline(conninfo, pk, tz_start, tz_end)
        print(f"    {copy_rows:,} rows in {copy_s:.2f} s: {copy_rows / copy_s:,.0f} rows/s ({copy_bytes / 1e6:.0f} MB)")
        t = step(f"CSV export {export_path}")
        export = export_timed(customer, server, export_path, copy_rows)
        if export["status"] == 404:
            print("    not available (404)")
            export = None
        else:
            print(f"    {export}")
            with psycopg.connect(conninfo) as conn:
                billable_rows = conn.execute(
                    "SELECT count(*) FROM resolutions_resolution WHERE account_id = %s AND resolved_at >= %s "
                    "AND resolved_at < %s AND voided_at IS NULL",
                    [pk, tz_start, tz_end],
                ).fetchone()[0]
            checks.append(Check(
                "the export answered 200 as a CSV stream with every row of the range",
                export["status"] == 200 and not export["truncated"] and export["rows"] in (copy_rows, billable_rows),
                f"status {export['status']}, {export['content_type']}, {export['rows']:,} rows (the range holds "
                f"{copy_rows:,}, {billable_rows:,} not voided)"
                + (", truncated: the view ignored the date filter" if export["truncated"] else "")
                + ("" if export["streamed"] else ", with a Content-Length (not streamed)"),
            ))  # fmt: skip
        log = server.log_tail()
        errors = [ln for ln in log.splitlines() if "Traceback" in ln or "ERROR" in ln]
        checks.append(Check("gunicorn logged no error", not errors, errors[0][:200] if errors else "clean log"))
        server.stop()
        server = None

        # --- report ---------------------------------------------------------------------------------------------
        count_ms = 1000 * count_s

        def row(t: Timed, baseline: str, base_ms: float | None, target: float | None) -> str:
            if not t.available:
                return f"| {t.label} | {t.note} | {baseline} | | {f'p95 <= {target:g} ms' if target else ''} | |"
            ratio = f"{t.pct(0.95) / base_ms:.1f}x" if base_ms else ""
            verdict = status(t.pct(0.95) <= target) if target else ""
            note = f" ({t.note})" if t.note else ""
            return (f"| {t.label} | p50 {t.pct(0.5):.1f} ms, p95 {t.pct(0.95):.1f} ms, "
                    f"max {1000 * max(t.times):.0f} ms; "
                    f"{len(t.times)} requests, {t.size / 1024:.0f} KiB{note} | {baseline} | {ratio} | "
                    f"{f'p95 <= {target:g} ms' if target else ''} | {verdict} |")  # fmt: skip

        table = [
            "| page | measured | baseline (same run) | p95 / baseline | target | |",
            "| --- | --- | --- | ---: | --- | --- |",
            row(
                dashboard,
                f"`SELECT COUNT(*)` of its {count_n:,} resolutions: {count_ms:.1f} ms",
                count_ms,
                DASHBOARD_P95_MS,
            ),  # fmt: skip
            *[row(p, "the same COUNT(*)", count_ms, None) for p in partials],
            *[row(b, f"`/login/` p95 {login_page.pct(0.95):.1f} ms", login_page.pct(0.95), BOOK_P95_MS) for b in book],
        ]
        if export:
            rps = export["rows"] / export["seconds"]
            copy_rps = copy_rows / copy_s
            table.append(
                f"| CSV export `{export_path}` | {export['rows']:,} rows in {export['seconds']:.1f} s: **{rps:,.0f} "
                f"rows/s** (first byte {1000 * export['first_byte']:.0f} ms, {export['bytes'] / 1e6:.0f} MB); worker "
                f"peak RSS {export['hwm_after_kb'] / 1024:.0f} MiB (VmHWM{' reset' if export['hwm_reset'] else ''}; "
                f"RSS before {export['rss_before_kb'] / 1024:.0f} MiB, sampled max "
                f"{export['rss_peak_sampled_kb'] / 1024:.0f} MiB), worker CPU {export['cpu']:.1f} s | "
                f"`COPY (SELECT ...) TO STDOUT` CSV: {copy_rps:,.0f} rows/s ({copy_s:.1f} s) | "
                f"{rps / copy_rps:.2f}x the rows/s | memory bounded | |"
            )
        else:
            table.append(f"| CSV export `{export_path}` | not available (404) | `COPY ... TO STDOUT`: "
                         f"{copy_rows / copy_s:,.0f} rows/s ({copy_rows:,} rows) | | | |")  # fmt: skip
        all_ok = all(c.ok for c in checks)
        print("\n" + "\n".join(table) + "\n")
        timings = facts["timings"].items() if isinstance(facts["timings"], dict) else facts["timings"]
        build = (
            f"built {facts['built_at'][:16]} UTC in {facts['build_seconds'] / 60:.1f} min ("
            + ", ".join(f"{k} {v:.0f} s" for k, v in timings)
            + ")"
        )
        if refresh:
            build += "; reused (--reuse): " + ", ".join(f"{k} {v:.0f} s" for k, v in refresh.items())
        lines = [
            f"## Pages: dashboard of {facts['resolutions']:,} resolutions, book of {len(facts['book_ids']):,} "
            f"accounts, CSV export ({date})" + (f", {args.label}" if args.label else ""),
            "",
            f"Command: `{command}` (from the project root; whole run {(time.perf_counter() - started) / 60:.1f} min)",
            "",
            *[f"- {ln}" for ln in facts_lines],
            f"- code measured: {code}; digest of the portal's .py files {code_digest(digests)}",
            "",
            f"Fixture ({build}): one account by `account_provision` at {facts['t0'][:16]} UTC, "
            f"{facts['renewals']} renewals recorded by `billing_periods_sync`, {facts['invoices']} invoices mirrored "
            f"by dj-stripe{(' (' + facts['invoice_errors'] + ')') if facts['invoice_errors'] else ''}; "
            f"{facts['resolutions']:,} resolutions from {facts['history_from'][:10]} to {facts['history_to'][:16]} "
            f"(40 % confirmed, 0.2 % voided), funded by `resolutions_fund`: {facts['funded'][0]:,} credit, "
            f"{facts['funded'][1]:,} overage (all accounts); big account's packs {packs_text(facts)}; "
            f"{facts['meter_reports']:,} confirmed meter "
            f"report rows (fixture); {len(facts['book_ids']) - 1:,} more accounts by `account_create` with "
            f"{facts['book_resolutions']:,} resolutions over 30 days; rollups by `rollups_rebuild`. gunicorn "
            f"{args.workers} sync workers, DJANGO_DEBUG=false; each URL {args.warmup} warm-ups then up to "
            f"{args.requests} timed requests, one at a time, from one `requests.Session` logged in through /login/. "
            f"Export range {date_from} to {date_to} (the account's zone, UTC).",
            "",
            *table,
            "",
            "Verification: " + ("all checks passed." if all_ok else "**FAILED** (see below)."),
            "",
            *[f"- {'ok' if c.ok else '**FAIL**'}: {c.name} ({c.detail})" for c in checks],
        ]
        if args.no_results:
            print("\n".join(lines))
        else:
            results_append(args.results, lines)
            print(f"appended to {args.results}")
        for c in checks:
            print(f"{'ok:' if c.ok else 'FAIL:'} {c.name}: {c.detail}")
        return 0 if all_ok else 2
    except BenchError as exc:
        print(f"invalid measurement: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
        emulator.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up yet
            pass
        if args.keep_db:
            print(f"kept database {args.db} and {state_file}")
        else:
            db_drop(args.pg, args.db)
            state_file.unlink(missing_ok=True)
        work_dir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
