"""Price simulation benchmark (issue 12): re-price 1,000 accounts' last 6 closed billing periods, 10,000,000
resolutions, under a draft with graduated tiers, on PostgreSQL, beside a plain scan of the same resolutions
measured in the same run.

Run from the project root:  .venv/bin/python bench/simulation.py [--resolutions 10000000] [--accounts 1000]
                            .venv/bin/python bench/simulation.py --resolutions 200000 --no-results   # a smoke run

Fixture (a scratch PostgreSQL database `--db`, dropped and recreated): `manage.py migrate` in a subprocess, then
Django in-process. Accounts by `account_create` (timezones mixed), one credit pack each by `credit_pack_grant`,
seven recorded monthly billing periods each (six closed, the current one), at anchors spread over a month. A
published version v2 by the plan services, and one account in ten moved to it (a done `PlanMigration`) at the
start of its fourth period, its resolutions from then on stamped v2. The resolutions are fixture rows written by
one `INSERT ... SELECT generate_series` (skewed over the accounts, uniform from five days before each account's
first period to now; 40 % confirmed; about half credit-funded, the rest overage; 0.2 % voided), then the daily
rollups by the portal's own `resolutions.sql.rollups_rebuild` per account, then VACUUM ANALYZE.

Timed: `price_simulation_start` and `price_simulation_run` (the Celery task's body) of a graduated draft over the
last 6 periods, every account. Baseline, same run: one `GROUP BY` scan of every resolution in those periods (what
the simulation avoids by reading the rollups). Verified: every account's billable, credited and overage counts
equal the scan's, and its actual and simulated money equal `rating.price_quantity` of the scan's per-period
overage under each period's version (actual) and the draft (simulated). Target: <= 30 s. The report is printed
and appended to bench/RESULTS.md (not with --no-results); the scratch database is dropped unless --keep-db. Exit
status 1 when a check failed, 0 otherwise (a missed target is **MISSED** in the table).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from funding import BenchError, django_setup, machine_facts, migrate, results_append, skewed_counts
from scratch_db import db_drop, db_recreate, db_url_for, django_db_url, portal_env, scratch_db_arguments, step

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 30.0
ACTOR = "bench:simulation"
TIMEZONES = ("UTC", "UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo", "America/Los_Angeles")
DRAFT_TIERS = [
    {"up_to": 1000, "unit_amount_decimal": "99"},
    {"up_to": 10000, "unit_amount_decimal": "85", "flat_amount": 500},
    {"up_to": "inf", "unit_amount_decimal": "70.5"},
]
SPEC = {"currency": "usd", "inactivity_window": "24:00:00", "seat_unit_amount": 3900,
        "seat_conversion_unit_amount_decimal": "90", "effective_from": "2020-01-01T00:00:00Z"}  # fmt: skip


def month_add(instant: dt.datetime, months: int) -> dt.datetime:
    month = instant.month - 1 + months
    return instant.replace(year=instant.year + month // 12, month=month % 12 + 1, day=min(instant.day, 28))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, default=10_000_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--periods", type=int, default=6, help="closed periods simulated per account (1 to 24)")
    parser.add_argument("--skew", type=float, default=0.8, help="Zipf exponent of the account sizes")
    parser.add_argument("--seed", type=int, default=12)
    scratch_db_arguments(parser, db="bench_simulation")
    return parser.parse_args(argv)


def fixture(args, conninfo: str, now: dt.datetime, rng: random.Random) -> dict:
    """Accounts, packs, periods, v2 and the moves through the portal's services; resolutions and rollups as
    fixture rows (see the module docstring). Returns what the checks need."""
    from accounts.models import BillingPeriod, PlanMigration, PricePlan
    from accounts.pricing import plan_version_spec_parse
    from accounts.services import account_create, price_plan_version_create, price_plan_version_publish
    from billing_portal import clock
    from credits.services import credit_pack_grant

    plan = PricePlan.objects.get(slug="fin-standard")
    t = step(f"{args.accounts:,} accounts (account_create), a pack each (credit_pack_grant), 7 periods each")
    v1 = plan.current_version(now)
    with clock.frozen(now - dt.timedelta(days=400)):
        v2 = price_plan_version_create(
            plan=plan, spec=plan_version_spec_parse({**SPEC, "unit_amount_decimal": "89"}), actor=ACTOR
        )
        v2 = price_plan_version_publish(version=v2, actor=ACTOR)
    accounts = []
    sizes = skewed_counts(args.resolutions, args.accounts, rng, args.skew)
    for i, n in enumerate(sizes):
        first = month_add(now, -(args.periods)) - dt.timedelta(days=rng.uniform(1, 27), seconds=rng.uniform(0, 86400))
        first = first.replace(microsecond=0, day=min(first.day, 28))
        starts = [month_add(first, k) for k in range(args.periods + 2)]
        with clock.frozen(first - dt.timedelta(days=6)):
            account = account_create(
                name=f"Simulation bench {i:04d}", plan=plan, actor=ACTOR, timezone=rng.choice(TIMEZONES)
            )
            account.plan_version = v1
            account.save(update_fields=["plan_version"])
            pack = credit_pack_grant(
                account=account, quantity=max(1, n // 2), source="adjustment", actor=ACTOR, reason="benchmark pack",
                starts_at=first - dt.timedelta(days=6), expires_at=now + dt.timedelta(days=300),
                idempotency_key=f"bench:simulation:{i}",
            )  # fmt: skip
        BillingPeriod.objects.bulk_create(
            [
                BillingPeriod(account=account, start=starts[k], end=starts[k + 1], stripe_subscription_id=f"sub_{i}")
                for k in range(args.periods + 1)
            ]
        )
        moved_at = starts[3] if i % 10 == 3 and args.periods >= 4 else None
        if moved_at is not None:
            PlanMigration.objects.create(
                account=account, from_version=v1, to_version=v2, effective_at=moved_at,
                status=PlanMigration.Status.DONE, batch_key=f"bench:{i}",
            )  # fmt: skip
            account.plan_version = v2
            account.save(update_fields=["plan_version"])
        accounts.append(
            {"id": account.pk, "tz": account.timezone, "n": n, "pack": pack.pk, "starts": starts, "moved_at": moved_at}
        )
    print(f"    largest {max(sizes):,}, median {sorted(sizes)[len(sizes) // 2]:,}; {time.perf_counter() - t:.0f} s")

    t = step(f"INSERT ... SELECT generate_series: {args.resolutions:,} resolutions; rollups; VACUUM ANALYZE")
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "CREATE TEMP TABLE bench_plan (account_id bigint, n int, pack_id bigint, t0 timestamptz, "
            "moved_at timestamptz)"
        )
        with conn.cursor() as cur, cur.copy("COPY bench_plan FROM STDIN") as copy:
            for a in accounts:
                copy.write_row((a["id"], a["n"], a["pack"], a["starts"][0] - dt.timedelta(days=5), a["moved_at"]))
        conn.execute(
            """INSERT INTO resolutions_resolution (account_id, conversation_id, kind, resolved_at, plan_version_id,
                   funding, credit_pack_id, amount_minor, created_at, voided_at, void_reason)
               SELECT p.account_id, 'c' || g, CASE WHEN random() < 0.4 THEN 'confirmed' ELSE 'assumed' END, x.at,
                      CASE WHEN p.moved_at IS NOT NULL AND x.at >= p.moved_at THEN %(v2)s ELSE %(v1)s END,
                      CASE WHEN x.credit THEN 'credit' ELSE 'overage' END,
                      CASE WHEN x.credit THEN p.pack_id END,
                      CASE WHEN x.credit THEN 0 ELSE 99 END, %(now)s,
                      CASE WHEN random() < 0.002 THEN x.at END, ''
               FROM bench_plan p
               CROSS JOIN LATERAL generate_series(1, p.n) AS g
               CROSS JOIN LATERAL (SELECT p.t0 + random() * (%(now)s::timestamptz - p.t0) AS at,
                                          random() < 0.5 AS credit OFFSET 0) AS x""",
            {"v1": v1.pk, "v2": v2.pk, "now": now},
        )
    from django.db import connection

    from resolutions import sql

    for a in accounts:
        sql.rollups_rebuild(a["id"], a["tz"])
    connection.close()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        stored = conn.execute("SELECT count(*) FROM resolutions_resolution").fetchone()[0]
    print(f"    {stored:,} resolutions stored; {time.perf_counter() - t:.0f} s")
    if stored != args.resolutions:
        raise BenchError(f"{stored:,} resolutions stored, not {args.resolutions:,}")
    return {"accounts": accounts, "v1": v1, "v2": v2}


def baseline_scan(conninfo: str, accounts: list[dict], periods: int) -> tuple[float, dict]:
    """One GROUP BY over every resolution of the simulated periods (the first recorded period reaching back to
    the beginning, as the portal's calendar has it): (seconds, {(account, period index): (billable, credited)})."""
    bounds = []
    for a in accounts:
        starts = a["starts"]
        closed = list(range(len(starts) - 1))[:-1][-periods:]  # the last `periods` closed ones
        for k in closed:
            lower = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) if k == 0 else starts[k]
            bounds.append((a["id"], k, lower, starts[k + 1]))
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "CREATE TEMP TABLE bench_bounds (account_id bigint, k int, lower_at timestamptz, upper_at timestamptz)"
        )
        with conn.cursor() as cur, cur.copy("COPY bench_bounds FROM STDIN") as copy:
            for row in bounds:
                copy.write_row(row)
        conn.execute("ANALYZE bench_bounds")
        started = time.perf_counter()
        rows = conn.execute(
            """SELECT b.account_id, b.k, count(*), count(*) FILTER (WHERE r.funding = 'credit')
               FROM bench_bounds b JOIN resolutions_resolution r
                 ON r.account_id = b.account_id AND r.resolved_at >= b.lower_at AND r.resolved_at < b.upper_at
               WHERE r.voided_at IS NULL GROUP BY 1, 2"""
        ).fetchall()
        seconds = time.perf_counter() - started
    return seconds, {(account_id, k): (n, credited) for account_id, k, n, credited in rows}


def expected_figures(accounts, scan, periods, v1, v2, draft_terms) -> dict[int, tuple]:
    from resolutions.rating import PriceTerms, price_quantity

    terms = {v1.pk: PriceTerms.from_version(v1), v2.pk: PriceTerms.from_version(v2)}
    expected = {}
    for a in accounts:
        starts = a["starts"]
        closed = list(range(len(starts) - 1))[:-1][-periods:]
        billable = credited = actual = simulated = 0
        for k in closed:
            n, c = scan.get((a["id"], k), (0, 0))
            version = v2.pk if a["moved_at"] is not None and starts[k] >= a["moved_at"] else v1.pk
            billable, credited = billable + n, credited + c
            actual += price_quantity(quantity=n - c, terms=terms[version])
            simulated += price_quantity(quantity=n - c, terms=draft_terms)
        expected[a["id"]] = (len(closed), billable, credited, billable - credited, actual, simulated)
    return expected


def main(argv=None) -> int:
    args = parse_args(argv)
    command = shlex.join(sys.orig_argv)
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    load_start = os.getloadavg()
    facts = machine_facts(args.pg)
    conninfo = db_url_for(args.pg, args.db)
    env = portal_env(django_db_url(args.pg, args.db))
    env["CELERY_BROKER_URL"] = "memory://"  # the queued task is not consumed: the bench runs its body itself
    rng = random.Random(args.seed)
    failures: list[str] = []
    try:
        t = step(f"scratch database {args.db}: drop, create, migrate")
        db_recreate(args.pg, args.db)
        migrate(env)
        django_setup(env)
        print(f"    {time.perf_counter() - t:.0f} s")
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        world = fixture(args, conninfo, now, rng)

        from accounts.models import PricePlan, User
        from accounts.pricing import plan_version_spec_parse
        from accounts.services import price_plan_version_create
        from billing_portal import clock
        from resolutions.models import PriceSimulationRow
        from resolutions.rating import PriceTerms
        from resolutions.services.simulation import price_simulation_run, price_simulation_start

        admin = User.objects.create(username="bench-admin")
        draft = price_plan_version_create(
            plan=PricePlan.objects.get(slug="fin-standard"),
            spec=plan_version_spec_parse({**SPEC, "tiers_mode": "graduated", "tiers": DRAFT_TIERS}), actor=ACTOR,
        )  # fmt: skip
        from django.db import connection

        connection.close()
        t = step(f"timed: simulate the graduated draft over {args.periods} periods, {args.accounts:,} accounts")
        started = time.perf_counter()
        with clock.frozen(now):
            simulation, _ = price_simulation_start(
                version=draft, periods=args.periods, actor=admin, idempotency_key="bench"
            )
            done = price_simulation_run(simulation_id=simulation.pk)
        simulate_s = time.perf_counter() - started
        print(f"    {simulate_s:.2f} s, status {done.status} {done.error}")
        if done.status != "done":
            failures.append(f"the simulation ended {done.status}: {done.error}")

        t = step("baseline: one GROUP BY scan of the same resolutions")
        scan_s, scan = baseline_scan(conninfo, world["accounts"], args.periods)
        print(f"    {scan_s:.2f} s")
        t = step("verify every account against the scan and rating.price_quantity")
        expected = expected_figures(
            world["accounts"], scan, args.periods, world["v1"], world["v2"], PriceTerms.from_version(draft)
        )
        got = {
            r[0]: tuple(r[1:])
            for r in PriceSimulationRow.objects.filter(simulation=done).values_list(
                "account_id", "periods", "billable", "credited", "overage", "actual_minor", "simulated_minor"
            )
        }
        wrong = [a for a in expected if expected[a] != got.get(a)]
        if wrong:
            failures.append(
                f"{len(wrong)} account(s) differ from the scan, e.g. {wrong[0]}: "
                f"{got.get(wrong[0])} != {expected[wrong[0]]}"
            )
        if (done.actual_minor, done.simulated_minor) != (
            sum(e[4] for e in expected.values()),
            sum(e[5] for e in expected.values()),
        ):
            failures.append("the simulation's totals are not the sum of the expected figures")
        covered = sum(e[1] for e in expected.values())
        print(("ok: " if not failures else "FAIL: ") + (", ".join(failures) or f"{len(expected):,} accounts agree"))
    except BenchError as exc:
        print(f"FAIL: {exc}")
        return 1
    finally:
        if not args.keep_db:
            from django.db import connections

            connections.close_all()
            db_drop(args.pg, args.db)

    moved = sum(1 for a in world["accounts"] if a["moved_at"] is not None)
    met = simulate_s <= TARGET_S
    lines = [
        f"\n## Price simulation: {args.resolutions:,} resolutions, {args.accounts:,} accounts, "
        f"{args.periods} periods ({date})",
        "",
        f"- command: `{command}`",
        f"- machine: nproc {facts['nproc']} ({facts['cpu']}), load average at start {load_start[0]:.2f}, at end "
        f"{os.getloadavg()[0]:.2f}; PostgreSQL {facts['postgres']} ({facts['pg_settings']}), Python {facts['python']}",
        f"- fixture: {args.accounts:,} accounts (account_create), 7 recorded monthly periods each, {moved} "
        f"moved to v2 at their fourth period; {args.resolutions:,} resolutions (about half credit-funded, 0.2 % "
        f"voided) from five days before each account's first period to now, {covered:,} of them billable in the "
        "simulated periods; daily rollups by rollups_rebuild; VACUUM ANALYZE",
        f"- simulated: a graduated draft ({' / '.join(t['unit_amount_decimal'] for t in DRAFT_TIERS)} minor units "
        f"up to 1,000 / 10,000 / inf) over each account's last {args.periods} closed periods; totals actual "
        f"{done.actual_minor:,}, simulated {done.simulated_minor:,} minor units",
        "",
        "| figure | value | target | |",
        "| --- | ---: | --- | --- |",
        f"| simulation (start + run) | {simulate_s:.2f} s | <= {TARGET_S:.0f} s | {'met' if met else '**MISSED**'} |",
        f"| baseline: one GROUP BY scan of those resolutions | {scan_s:.2f} s | | |",
        f"| simulation / scan | {simulate_s / scan_s:.2f} | | |",
        f"| billable resolutions re-priced per second | {covered / simulate_s:,.0f} | | |",
        "",
        (
            "Checks: "
            + (
                "every account's counts and money agree with the scan and rating.price_quantity."
                if not failures
                else "FAILED: " + "; ".join(failures)
            )
        ),  # fmt: skip
    ]
    print("\n".join(lines))
    if not args.no_results:
        results_append(args.results, lines)
        print(f"appended to {args.results}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
