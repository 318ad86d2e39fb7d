from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.conf import settings

from billing_portal import clock
from billing_portal.stripe_client import StripeUnavailable

from .billing_cycle import billing_cycle_run
from .services import conversations_evaluate_pending
from .services.archive import archive_cutoff_latest, conversation_events_archive
from .services.metering import meter_report_account
from .services.reconciliation import meter_reconcile
from .services.simulation import LEASE, SimulationBusy, price_simulation_run


@shared_task(acks_late=True)
def conversations_evaluate_task(account_id: int) -> int:
    """Evaluate the account's queued conversations (sent by ingestion once a batch commits). Idempotent:
    a task that finds the queue already drained by another does nothing."""
    if isinstance(account_id, bool) or not isinstance(account_id, int):
        raise TypeError(f"account_id must be an integer, not {account_id!r}")
    return conversations_evaluate_pending(account_ids=[account_id])


@shared_task(acks_late=True)
def billing_cycle_task() -> dict:
    """The minutely billing cycle (beat `billing-cycle`): `billing_cycle_run`, the same function as
    `billing_tick`. A cycle that finds another one running does nothing."""
    return billing_cycle_run(now=clock.now()).as_dict()


@shared_task(bind=True, acks_late=True, max_retries=8, retry_backoff=60, retry_backoff_max=1800, retry_jitter=True)
def meter_report_task(self, account_id: int) -> dict:
    """Report one account's overage to Stripe's meter (queued by the billing cycle when METER_REPORTING is
    "tasks"). Safe to run twice or at once with the cycle: the rows carry their identifiers, and a second
    caller finds the account busy. When Stripe cannot be reached the task retries itself, no sooner than
    Stripe's Retry-After; a task that gives up leaves the rows for the next cycle."""
    if isinstance(account_id, bool) or not isinstance(account_id, int):
        raise TypeError(f"account_id must be an integer, not {account_id!r}")
    report = meter_report_account(account_id=account_id, now=clock.now())
    if report.unavailable:
        countdown = max(report.retry_after or 0, 60 * 2**self.request.retries)
        raise self.retry(countdown=min(countdown, 1800), exc=StripeUnavailable("report usage", report.unavailable,
                                                                               retryable=True))  # fmt: skip
    return {"account_id": account_id, "planned": report.planned, "confirmed": report.confirmed,
            "rejected": report.rejected, "adjustments": report.adjustments, "busy": report.busy}  # fmt: skip


@shared_task(acks_late=True)
def meter_reconcile_task() -> dict:
    """The hourly reconciliation (beat `meter-reconcile`): `meter_reconcile`, as `manage.py reconcile` runs it.
    The billing cycle's `reconcile` step then waits an hour; two overlapping runs decide one after the other
    per account, and an e-mail is sent once."""
    return meter_reconcile(now=clock.now()).as_dict()


@shared_task(acks_late=True)
def events_archive_task() -> dict | None:
    """The daily archive of old raw events (beat `events-archive`), when EVENTS_ARCHIVE_AFTER_DAYS is set: the
    events of conversations finished more than that many days ago move to the archive table
    (docs/data-lifecycle.md). Off (None) by default. Safe to run twice or to stop: each batch is one transaction
    and a second run finds nothing left to move."""
    days = settings.EVENTS_ARCHIVE_AFTER_DAYS
    if not days:
        return None
    now = clock.now()
    before = min(now - dt.timedelta(days=days), archive_cutoff_latest(now=now))
    return vars(conversation_events_archive(before=before, now=now))


@shared_task(bind=True, acks_late=True, max_retries=12)
def price_simulation_task(self, simulation_id: int) -> dict:
    """Compute a price simulation (queued by `price_simulation_start` once committed). Safe to deliver twice
    or at once: the run claims the row under its lock, a second delivery finds it busy and looks again once
    the first could have gone quiet (a redelivery after a crash then takes over and finishes the work), and
    a finished simulation is left as it is."""
    if isinstance(simulation_id, bool) or not isinstance(simulation_id, int):
        raise TypeError(f"simulation_id must be an integer, not {simulation_id!r}")
    try:
        simulation = price_simulation_run(simulation_id=simulation_id)
    except SimulationBusy as busy:
        raise self.retry(countdown=LEASE.total_seconds() + 5, exc=busy) from None
    return {"simulation_id": simulation_id, "status": simulation.status, "accounts_done": simulation.accounts_done}
