from __future__ import annotations

from celery import shared_task

from billing_portal import clock

from .billing_cycle import billing_cycle_run
from .services import conversations_evaluate_pending
from .services.reconciliation import meter_reconcile


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


@shared_task(acks_late=True)
def meter_reconcile_task() -> dict:
    """The hourly reconciliation (beat `meter-reconcile`): `meter_reconcile`, as `manage.py reconcile` runs it.
    The billing cycle's `reconcile` step then waits an hour; two overlapping runs decide one after the other
    per account, and an e-mail is sent once."""
    return meter_reconcile(now=clock.now()).as_dict()
