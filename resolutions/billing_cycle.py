"""The billing cycle: every periodic billing step, in order, in one function. The minutely Celery task
(`billing_cycle_task`), `manage.py billing_tick` and the demo's simulated days all call
`billing_cycle_run`; nothing else writes the order down.

Steps, in order (each is isolated: one that fails is logged with its reason, reported, and retried by
the next cycle, and the steps that do not depend on it still run):

1. evaluate    — conversations whose events are still queued (e.g. the broker was down);
2. finalise    — elapsed inactivity windows become assumed resolutions;
3. periods     — billing periods from Stripe: subscriptions whose latest known period has ended (renewals);
3b. plan moves — scheduled plan migrations whose period has begun: the Stripe subscription's Prices switched
   to the new version (accounts/services/plan_migrations.py); their new-period meter reports wait for it;
4. purchases   — credit purchases waiting on Stripe (a paid invoice activates its pack);
5. funding     — credits drawn down, the rest priced as overage in its (Stripe) billing period;
6. expiry      — packs past their expiry written off (breakage);
7. report      — overage of closed reporting windows sent to Stripe's meter (services/metering);
8. provisioning — unfinished account provisionings undone;
9. conversions — stalled seat conversions finished;
10. idempotency — stored answers to Idempotency-Keys older than 24 hours forgotten;
11. reconcile  — reported meter totals against Stripe's meter event summaries, when the last reconciliation
   is older than METER_RECONCILE_INTERVAL_SECONDS (an hour): differences stored and e-mailed to the admins.

Dependencies: funding does not depend on the Stripe steps (3, 4): with a period not synced yet it uses
the period Stripe's anchor arithmetic makes, and a pack activated late funds from the next cycle on.
Expiry depends on funding: if funding fails, expiry is skipped for that cycle, so a pack never expires
before the resolutions it covered were funded from it.

Two cycles never overlap (billing_portal.session_locks: a PostgreSQL advisory lock on a connection of its
own, or a process and file lock on SQLite). A cycle that finds the lock taken does nothing and says so.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from django.conf import settings

from accounts.idempotency import idempotency_keys_expire
from accounts.services.billing_periods import billing_periods_sync
from accounts.services.plan_migrations import plan_migrations_apply
from accounts.services.provisioning import provisioning_cleanup
from billing_portal.session_locks import session_lock
from billing_portal.stripe_client import StripeFailure
from credits.conversions import seat_conversions_resume_stalled
from credits.purchases import credit_purchases_resume
from credits.services import credit_packs_expire

from .services import conversations_evaluate_pending, resolution_windows_finalise, resolutions_fund
from .services.metering import meter_reports_run
from .services.reconciliation import meter_reconcile, meter_reconcile_due
from .services.simulation import price_simulations_resume_stalled

logger = logging.getLogger(__name__)

LOCK_HELD = "skipped: another cycle is running"
PURCHASES_PER_CYCLE = 100  # bounded Stripe work per cycle; the least recently checked go first


@dataclass
class StepResult:
    name: str
    status: str  # "ok", "failed" or "skipped"
    summary: str = ""  # what it did, for people (billing_tick prints it)
    counts: dict = field(default_factory=dict)
    error: str = ""  # why it failed or was skipped
    seconds: float = 0.0


@dataclass
class CycleResult:
    now: dt.datetime
    skipped: str = ""  # set when the cycle did not run at all (LOCK_HELD)
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return not self.skipped

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.status == "failed"]

    def step(self, name: str) -> StepResult:
        return next(s for s in self.steps if s.name == name)

    def as_dict(self) -> dict:
        """Every step's counts at the top level (e.g. `credited`, `packs_expired`), and the steps."""
        counts = {k: v for s in self.steps for k, v in s.counts.items()}
        return {
            "now": self.now.isoformat(),
            "skipped": self.skipped,
            **counts,
            "steps": [asdict(s) for s in self.steps],
        }


def _evaluate(now):
    n = conversations_evaluate_pending(now=now)
    return f"{n} resolution(s) from queued events", {"evaluated_resolutions": n}


def _finalise(now):
    n = resolution_windows_finalise(now=now)
    return f"{n} assumed resolution(s)", {"assumed_resolutions": n}


def _periods(now):
    r = billing_periods_sync(now=now)
    text = f"{r.checked} subscription(s) asked about, {r.renewed} renewal(s) recorded"
    if r.failures:
        text += f"; {len(r.failures)} rejected by Stripe ({r.failures[0]})"
    return text, {"periods_checked": r.checked, "periods_renewed": r.renewed, "periods_rejected": len(r.failures)}


def _plan_moves(now):
    r = plan_migrations_apply(now=now)
    text = f"{r.switched} plan migration(s) switched in Stripe, {r.waiting} waiting"
    if r.failed:
        text += f"; {r.failed} refused by Stripe (an admin must retry)"
    if r.unavailable:
        raise StripeFailure("switch plan prices", f"{text}; Stripe not reachable ({r.unavailable[0]})", retryable=True)
    return text, {"plan_migrations_switched": r.switched, "plan_migrations_waiting": r.waiting,
                  "plan_migrations_failed": r.failed}  # fmt: skip


def _purchases(now):
    r = credit_purchases_resume(now=now, limit=PURCHASES_PER_CYCLE)
    text = f"{r.continued} continued, {r.activated} pack(s) activated, {r.cancelled} cancelled"
    if r.failed:
        text += f"; {r.failed} not reachable in Stripe this time (tried again next cycle)"
    counts = {"purchases_continued": r.continued, "packs_activated": r.activated, "packs_cancelled": r.cancelled,
              "purchases_failed": r.failed}  # fmt: skip
    return text, counts


def _funding(now):
    r = resolutions_fund(now=now)
    return f"{r.credited} funded from credits, {r.overage} as overage", {"credited": r.credited, "overage": r.overage}


def _report(now):
    r = meter_reports_run(now=now, dispatch=settings.METER_REPORTING == "tasks")
    if r.queued:
        text = f"{r.queued} account(s) handed to reporting tasks"
    else:
        text = f"{r.confirmed} meter event(s) in Stripe for {r.accounts} account(s)"
        if r.adjustments:
            text += f"; {r.adjustments} difference(s) too late for the meter, flagged for a credit note or invoice item"
        if r.rejected:
            text += f"; {r.rejected} rejected by Stripe (kept, retried)"
        if r.unavailable:
            text += f"; Stripe not reachable for {r.unavailable} account(s) (retried): {r.unreachable[0]}"
    counts = {"meter_events_confirmed": r.confirmed, "meter_reports_rejected": r.rejected,
              "meter_adjustments": r.adjustments, "meter_accounts_unavailable": r.unavailable,
              "meter_accounts_queued": r.queued}  # fmt: skip
    if r.errors:  # a defect for some account: the step is failed (the other accounts were reported)
        raise RuntimeError(f"{len(r.errors)} account(s) failed ({'; '.join(r.errors[:3])}); {text}")
    return text, counts


def _expiry(now):
    breakage = credit_packs_expire(now=now)
    unused = sum(b.resolutions for b in breakage)
    return (
        f"{len(breakage)} pack(s) expired ({unused} unused resolution(s) written off)",
        {"packs_expired": len(breakage), "breakage_resolutions": unused},
    )


def _provisioning(now):
    n = provisioning_cleanup(now=now)
    return f"{n} unfinished provisioning(s) undone", {"provisionings_undone": n}


def _conversions(now):
    n = seat_conversions_resume_stalled(now=now)
    return f"{n} stalled seat conversion(s) finished", {"seat_conversions_finished": n}


def _simulations(now):
    n = price_simulations_resume_stalled(now=now)
    return f"{n} stalled price simulation(s) queued again", {"price_simulations_requeued": n}


def _idempotency(now):
    n = idempotency_keys_expire(now=now)
    return f"{n} stored answer(s) to Idempotency-Keys older than 24 h forgotten", {"idempotency_keys_expired": n}


def _reconcile(now):
    if not meter_reconcile_due(now=now):
        return "not due (the last reconciliation is less than an hour old)", {"reconciled": False}
    r = meter_reconcile(now=now)
    if r.nothing_checked:
        raise StripeFailure(
            "reconcile", f"none of {len(r.failures)} period(s) could be checked ({r.failures[0]['error']})",
            retryable=True,
        )  # fmt: skip
    text = f"{r.checked} period(s) checked: {len(r.differences)} difference(s), {r.new} new; {r.resolved} resolved"
    if r.in_flight:
        text += f", {r.in_flight} with a meter event on its way (next time)"
    if r.failures:
        text += f"; {len(r.failures)} not reachable in Stripe ({r.failures[0]['error']})"
    counts = {"reconciled": True, "reconcile_checked": r.checked, "reconcile_differences": len(r.differences),
              "reconcile_in_flight": r.in_flight, "reconcile_failed": len(r.failures)}  # fmt: skip
    return text, counts


# (name, step, the steps it depends on): a step whose dependency failed is skipped this cycle.
STEPS: list[tuple[str, Callable[[dt.datetime], tuple[str, dict]], tuple[str, ...]]] = [
    ("evaluate", _evaluate, ()),
    ("finalise", _finalise, ()),
    ("periods", _periods, ()),
    ("plan_moves", _plan_moves, ()),  # after periods: a move switches once Stripe's renewal is recorded
    ("purchases", _purchases, ()),
    ("funding", _funding, ()),
    ("expiry", _expiry, ("funding",)),  # a pack never expires before what it covered was funded
    ("report", _report, ()),  # windows are consistent whether or not funding ran: late overage is a correction
    ("provisioning", _provisioning, ()),
    ("conversions", _conversions, ()),
    ("simulations", _simulations, ()),
    ("idempotency", _idempotency, ()),
    ("reconcile", _reconcile, ()),
]


def billing_cycle_run(*, now: dt.datetime) -> CycleResult:
    """Run every step once, in order, as of `now` (see the module docstring for the order, what depends on
    what, and the lock). Returns what each step did; `skipped` is set, and nothing is done, when another
    cycle is running. Never raises for a failing step: the failure is logged and in the result."""
    result = CycleResult(now=now)
    with billing_cycle_lock() as acquired:
        if not acquired:
            logger.info("Billing cycle at %s %s", now.isoformat(), LOCK_HELD)
            result.skipped = LOCK_HELD
            return result
        failed: set[str] = set()
        for name, step, depends_on in STEPS:
            blocked = [d for d in depends_on if d in failed]
            if blocked:
                reason = f"skipped: {', '.join(blocked)} failed this cycle"
                logger.warning("Billing cycle step %s %s", name, reason)
                result.steps.append(StepResult(name, "skipped", error=reason))
                failed.add(name)
                continue
            started = time.monotonic()
            try:
                summary, counts = step(now)
            except StripeFailure as exc:  # Stripe down or refusing: retried by the next cycle
                logger.warning("Billing cycle step %s failed (retried next cycle): %s", name, exc)
                result.steps.append(StepResult(name, "failed", error=str(exc), seconds=time.monotonic() - started))
                failed.add(name)
            except Exception as exc:  # noqa: BLE001 - one step's bug must not stop the others
                logger.exception("Billing cycle step %s failed (retried next cycle)", name)
                error = f"{exc.__class__.__name__}: {exc}"
                result.steps.append(StepResult(name, "failed", error=error, seconds=time.monotonic() - started))
                failed.add(name)
            else:
                result.steps.append(StepResult(name, "ok", summary, counts, seconds=time.monotonic() - started))
    return result


def billing_cycle_lock():
    """Hold the billing cycle's lock for the block; yields False (and holds nothing) when it is taken."""
    return session_lock("billing-cycle")
