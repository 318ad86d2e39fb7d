"""Price simulation (DESIGN §3.2): re-price each account's last N closed Stripe billing periods under a plan
version (usually a draft), before it is published.

What is simulated, per account and period: the billable resolutions (not voided), the credits that funded them
as they were actually used (resolutions funded by a credit pack), and those funded as overage (resolutions not
drawn down yet are in neither money figure). The actual spend is that overage rated by the version in force in
the period (the version the period's resolutions were stamped with; without resolutions, the account's plan
schedule); the simulated spend is the same overage count rated by the simulation's frozen terms. Both go
through `rating.price_quantity`, exactly as Stripe prices a metered Price. What is not simulated: the
inactivity window (resolutions stay as they were decided), the credits (a cheaper price would not have changed
what was bought or drawn), and seats (the seat count of a past period is not recorded, so seat spend is left
out of both figures).

Counts come from the daily rollups and each period's two ragged edges (`period_counts.period_usage_sums`),
a batch of accounts at a time in one statement; nothing here writes a resolution, a rollup or the ledger.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Q, Sum

from accounts.models import Account, BillingPeriod, PlanMigration, PricePlanVersion, User
from accounts.selectors import PlanSchedule
from accounts.services.audit import audit_log_write
from billing_portal import clock
from billing_portal.periods import PeriodCalendar, RecordedPeriod

from ..models import PriceSimulation, PriceSimulationRow
from ..period_counts import PeriodKey, period_first_versions, period_usage_sums
from ..rating import PriceTerms, Tier, price_quantity

logger = logging.getLogger(__name__)

MIN_PERIODS, MAX_PERIODS, DEFAULT_PERIODS = 1, 24, 3
BATCH_ACCOUNTS = 250  # accounts a batch: one counting statement, one row insert, one progress save
LEASE = dt.timedelta(minutes=5)  # a run that saved no progress for this long is taken to have died


class SimulationBusy(Exception):
    """Another run holds the simulation and saved progress recently: try again later."""


class _Superseded(Exception):
    """This run's claim was taken over (it had gone quiet for longer than LEASE): stop without writing."""


# --- the frozen terms ----------------------------------------------------------------------------------
def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def simulation_terms_snapshot(version: PricePlanVersion) -> dict:
    """The version's prices as plain JSON (Decimals as strings). Raises ValidationError when they are not
    valid Stripe terms yet (a draft being edited)."""
    try:
        terms = PriceTerms.from_version(version)
    except ValueError as exc:
        raise ValidationError(
            {"version": f"{version.plan.name} v{version.number} cannot be priced yet: {exc}"}
        ) from None
    return {
        "label": f"{version.plan.name} v{version.number}",
        "currency": version.currency,
        "unit_amount_decimal": _text(terms.unit_amount_decimal),
        "tiers_mode": terms.tiers_mode,
        "tiers": [
            {"up_to": t.up_to, "unit_amount_decimal": _text(t.unit_amount_decimal), "flat_amount": t.flat_amount}
            for t in terms.tiers
        ],
        "seat_unit_amount": version.seat_unit_amount,
    }


def simulation_terms(snapshot: dict) -> PriceTerms:
    """The PriceTerms of a snapshot (`simulation_terms_snapshot`)."""

    def decimal(value):
        return None if value is None else Decimal(value)

    tiers = tuple(
        Tier(up_to=t["up_to"], unit_amount_decimal=decimal(t["unit_amount_decimal"]), flat_amount=t["flat_amount"])
        for t in snapshot["tiers"]
    )
    return PriceTerms(
        unit_amount_decimal=decimal(snapshot["unit_amount_decimal"]), tiers_mode=snapshot["tiers_mode"], tiers=tiers
    )


def percent_change(*, actual: int, simulated: int) -> Decimal | None:
    """(simulated - actual) / actual as a percentage to one decimal, half up; None when actual is 0."""
    if not actual:
        return None
    return (Decimal(simulated - actual) * 100 / Decimal(actual)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


# --- starting --------------------------------------------------------------------------------------------
def price_simulation_start(
    *,
    version: PricePlanVersion,
    periods: int,
    actor: User,
    idempotency_key: str,
    filter_version: PricePlanVersion | None = None,
) -> tuple[PriceSimulation, bool]:
    """Start simulating `version` over each account's last `periods` closed billing periods (only the
    accounts on `filter_version`, if given), as `actor`; queue the task once committed. The same
    (actor, idempotency_key) again returns the first simulation and starts nothing: (simulation, created).
    Bad input raises ValidationError and writes nothing. Audited."""
    if isinstance(periods, bool) or not isinstance(periods, int) or not MIN_PERIODS <= periods <= MAX_PERIODS:
        raise ValidationError({"periods": f"Simulate from {MIN_PERIODS} to {MAX_PERIODS} billing periods."})
    if not idempotency_key or len(idempotency_key) > 255:
        raise ValidationError({"idempotency_key": "An idempotency key of 1 to 255 characters is needed."})
    existing = PriceSimulation.objects.filter(created_by=actor, idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing, False
    terms = simulation_terms_snapshot(version)
    try:
        with transaction.atomic():
            simulation = PriceSimulation.objects.create(
                version=version, terms=terms, periods=periods, filter_version=filter_version,
                currency=version.currency, created_by=actor, idempotency_key=idempotency_key,
            )  # fmt: skip
            audit_log_write(
                actor=actor, action="price_simulation.start", obj=simulation,
                after={"version_id": version.pk, "periods": periods, "terms": terms,
                       "filter_version_id": filter_version.pk if filter_version else None},
            )  # fmt: skip
            transaction.on_commit(lambda: _queue(simulation.pk))
    except IntegrityError:  # the same key committed by a concurrent request: that one is the simulation
        existing = PriceSimulation.objects.filter(created_by=actor, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return existing, False
    return simulation, True


def _queue(simulation_id: int) -> None:
    from ..tasks import price_simulation_task

    try:
        price_simulation_task.delay(simulation_id)
    except Exception as exc:  # noqa: BLE001 - kombu raises its own and OS errors; the row stays queued
        logger.warning("Simulation %s stays queued: broker unreachable (%s)", simulation_id, exc)


def price_simulations_resume_stalled(*, now: dt.datetime) -> int:
    """The billing cycle's sweep: a simulation whose task was never delivered (the broker was down when it
    was started) or whose run went quiet for longer than LEASE (a crashed worker) is put back in the queue.
    Its heartbeat is set to now, so it is queued again at most once per LEASE while no worker takes it; a run
    that comes back after its lease finds itself superseded and stops without writing. Returns how many."""
    stale = now - LEASE
    with transaction.atomic():
        stalled = list(
            PriceSimulation.objects.select_for_update(skip_locked=True)
            .filter(status__in=(PriceSimulation.Status.QUEUED, PriceSimulation.Status.RUNNING))
            .filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at=None, created_at__lt=stale))
            .values_list("pk", flat=True)
        )
        if stalled:
            PriceSimulation.objects.filter(pk__in=stalled).update(
                status=PriceSimulation.Status.QUEUED, run_token="", heartbeat_at=now
            )
            for simulation_id in stalled:
                transaction.on_commit(lambda pk=simulation_id: _queue(pk))
    return len(stalled)


# --- running ---------------------------------------------------------------------------------------------
def _scope(simulation: PriceSimulation):
    accounts = Account.objects.all()
    if simulation.filter_version_id is not None:
        accounts = accounts.filter(plan_version_id=simulation.filter_version_id)
    return accounts


def price_simulation_run(*, simulation_id: int, batch_size: int = BATCH_ACCOUNTS) -> PriceSimulation:
    """Compute the simulation, a batch of accounts (in id order) at a time, each batch committed with its
    progress. Claims the row under its lock first: a finished simulation is returned as it is, one another
    run holds (progress saved within LEASE) raises SimulationBusy, one whose run went quiet (a crashed
    worker) is taken over and continued after its last committed batch; rows are unique per (simulation,
    account) and inserted skipping existing ones, so no run doubles them. An error marks it failed."""
    token = uuid.uuid4().hex
    simulation = _claim(simulation_id, token)
    if simulation.run_token != token:
        return simulation
    try:
        while _batch_run(simulation_id, token, batch_size):
            pass
        return _finish(simulation_id, token)
    except _Superseded:
        return PriceSimulation.objects.get(pk=simulation_id)
    except (OperationalError, InterfaceError):
        # The database went away or a deadlock was broken: not the simulation's fault. The row stays running
        # with its last progress, and the billing cycle queues it again once its lease has run out.
        raise
    except Exception as exc:
        logger.exception("Simulation %s failed", simulation_id)
        return _fail(simulation_id, token, exc)


def _claim(simulation_id: int, token: str) -> PriceSimulation:
    now = clock.now()
    with transaction.atomic():
        simulation = PriceSimulation.objects.select_for_update().get(pk=simulation_id)
        if simulation.status in (PriceSimulation.Status.DONE, PriceSimulation.Status.FAILED):
            return simulation
        held = simulation.status == PriceSimulation.Status.RUNNING and simulation.run_token
        if held and simulation.heartbeat_at and simulation.heartbeat_at > now - LEASE:
            raise SimulationBusy(f"Simulation {simulation_id} is running (progress saved {simulation.heartbeat_at}).")
        if simulation.started_at is None:
            scope = _scope(simulation)
            simulation.accounts_total = scope.filter(currency=simulation.currency).count()
            simulation.accounts_other_currency = scope.exclude(currency=simulation.currency).count()
            simulation.started_at = now
        simulation.status, simulation.run_token, simulation.heartbeat_at = PriceSimulation.Status.RUNNING, token, now
        simulation.save()
    return simulation


def _locked(simulation_id: int, token: str) -> PriceSimulation:
    simulation = PriceSimulation.objects.select_for_update().get(pk=simulation_id)
    if simulation.run_token != token:
        raise _Superseded
    return simulation


def _batch_run(simulation_id: int, token: str, batch_size: int) -> bool:
    """One batch: its accounts' rows and the progress, in one transaction. False when none was left."""
    with transaction.atomic():
        simulation = _locked(simulation_id, token)
        accounts = list(
            _scope(simulation)
            .filter(currency=simulation.currency, pk__gt=simulation.resume_after_id)
            .order_by("pk")
            .values_list("pk", "timezone", "plan_version_id")[:batch_size]
        )
        if not accounts:
            return False
        figures = accounts_price_simulate(
            accounts=accounts, periods=simulation.periods, as_of=simulation.created_at,
            terms=simulation_terms(simulation.terms),
        )  # fmt: skip
        PriceSimulationRow.objects.bulk_create(
            [PriceSimulationRow(simulation_id=simulation_id, currency=simulation.currency, **f) for f in figures],
            ignore_conflicts=True,
        )
        simulation.resume_after_id = accounts[-1][0]
        simulation.accounts_done = min(simulation.accounts_done + len(accounts), simulation.accounts_total)
        simulation.heartbeat_at = clock.now()
        simulation.save(update_fields=["resume_after_id", "accounts_done", "heartbeat_at"])
    return True


def _finish(simulation_id: int, token: str) -> PriceSimulation:
    with transaction.atomic():
        simulation = _locked(simulation_id, token)
        totals = simulation.rows.aggregate(actual=Sum("actual_minor"), simulated=Sum("simulated_minor"))
        simulation.actual_minor, simulation.simulated_minor = totals["actual"] or 0, totals["simulated"] or 0
        simulation.status, simulation.run_token = PriceSimulation.Status.DONE, ""
        simulation.accounts_done = simulation.accounts_total
        simulation.finished_at = simulation.heartbeat_at = clock.now()
        simulation.save()
        audit_log_write(
            actor="system:price_simulation", action="price_simulation.finish", obj=simulation,
            after={"accounts": simulation.accounts_done, "actual_minor": simulation.actual_minor,
                   "simulated_minor": simulation.simulated_minor},
        )  # fmt: skip
    return simulation


def _fail(simulation_id: int, token: str, exc: Exception) -> PriceSimulation:
    with transaction.atomic():
        simulation = PriceSimulation.objects.select_for_update().get(pk=simulation_id)
        if simulation.run_token == token:
            simulation.status, simulation.run_token = PriceSimulation.Status.FAILED, ""
            simulation.error = f"{type(exc).__name__}: {exc}"[:2000]
            simulation.finished_at = clock.now()
            simulation.save()
            audit_log_write(
                actor="system:price_simulation", action="price_simulation.fail", obj=simulation,
                after={"error": simulation.error},
            )  # fmt: skip
    return simulation


# --- the figures -----------------------------------------------------------------------------------------
def accounts_price_simulate(
    *, accounts: list[tuple[int, str, int]], periods: int, as_of: dt.datetime, terms: PriceTerms
) -> list[dict]:
    """The figures of each account (id, timezone, current plan version id) over its last `periods` billing
    periods that closed by `as_of`: one dict of PriceSimulationRow fields per account with at least one
    such period. Reads only: three queries for the batch's periods, plan moves and versions, and one
    statement for every period's counts."""
    ids = [account_id for account_id, _, _ in accounts]
    recorded: dict[int, list[RecordedPeriod]] = defaultdict(list)
    rows = BillingPeriod.objects.filter(account_id__in=ids).order_by("account_id", "start")
    for account_id, *period in rows.values_list(
        "account_id", "start", "end", "billing_cycle_anchor", "interval", "interval_count"
    ):
        recorded[account_id].append(RecordedPeriod(*period))
    moves: dict[int, list[tuple]] = defaultdict(list)
    migrations = PlanMigration.objects.filter(account_id__in=ids).exclude(status=PlanMigration.Status.CANCELLED)
    for account_id, *move in migrations.order_by("account_id", "effective_at", "id").values_list(
        "account_id", "effective_at", "from_version_id", "to_version_id"
    ):
        moves[account_id].append(tuple(move))

    keys: list[PeriodKey] = []
    owners: list[tuple[int, dt.datetime]] = []  # (account, the period's real start) of each key
    for account_id, timezone, _ in accounts:
        calendar = PeriodCalendar(recorded[account_id])
        closed = [p for p in recorded[account_id] if p.end <= as_of][-periods:]
        for period in closed:
            # The first period reaches back to what came before it (it was billed so): the calendar's rule.
            starts, ends = calendar.containing(period.start)
            keys.append(PeriodKey(account_id=account_id, timezone=timezone, starts=starts, ends=ends))
            owners.append((account_id, period.start))
    counts = period_usage_sums(keys=keys)
    stamped = period_first_versions(keys=keys)

    versions = {account_id: version_id for account_id, _, version_id in accounts}
    in_force = []
    for (account_id, start), version_id in zip(owners, stamped, strict=True):
        in_force.append(version_id or PlanSchedule(versions[account_id], tuple(moves[account_id])).version_at(start))
    rated = {
        v.pk: PriceTerms.from_version(v)
        for v in PricePlanVersion.objects.filter(pk__in=set(in_force)).prefetch_related("tiers")
    }

    totals: dict[int, dict] = {}
    for (account_id, _), count, version_id in zip(owners, counts, in_force, strict=True):
        row = totals.setdefault(
            account_id, {"periods": 0, "billable": 0, "credited": 0, "overage": 0, "actual": 0, "simulated": 0}
        )
        overage = count["overage"]  # funded as overage: what the meter billed (not yet drawn down: neither)
        row["periods"] += 1
        row["billable"] += count["resolutions"]
        row["credited"] += count["credited"]
        row["overage"] += overage
        row["actual"] += price_quantity(quantity=overage, terms=rated[version_id])
        row["simulated"] += price_quantity(quantity=overage, terms=terms)
    figures = []
    for account_id, row in totals.items():
        difference = row["simulated"] - row["actual"]
        figures.append({
            "account_id": account_id, "plan_version_id": versions[account_id], "periods": row["periods"],
            "billable": row["billable"], "credited": row["credited"], "overage": row["overage"],
            "actual_minor": row["actual"], "simulated_minor": row["simulated"], "difference_minor": difference,
            "movement_minor": abs(difference),
            "percent": percent_change(actual=row["actual"], simulated=row["simulated"]),
        })  # fmt: skip
    return figures


# --- reading ---------------------------------------------------------------------------------------------
def price_simulation_rows(*, simulation: PriceSimulation, plan_version_id: int | None = None):
    """The simulation's rows, largest movers (by absolute difference) first."""
    rows = simulation.rows.select_related("account", "plan_version__plan")
    if plan_version_id is not None:
        rows = rows.filter(plan_version_id=plan_version_id)
    return rows.order_by("-movement_minor", "account_id")
