from __future__ import annotations

from celery import shared_task

from credits.conversions import seat_conversions_resume_stalled
from credits.purchases import credit_packs_reconcile_pending
from credits.services import credit_packs_expire

from .services import conversations_evaluate_pending, resolution_windows_finalise, resolutions_fund


@shared_task(acks_late=True)
def conversations_evaluate_task(account_id: int) -> int:
    """Evaluate the account's queued conversations (sent by ingestion once a batch commits). Idempotent:
    a task that finds the queue already drained by another does nothing."""
    if isinstance(account_id, bool) or not isinstance(account_id, int):
        raise TypeError(f"account_id must be an integer, not {account_id!r}")
    return conversations_evaluate_pending(account_ids=[account_id])


@shared_task(acks_late=True)
def billing_cycle_task() -> dict:
    """Periodic, in order: queued conversations are evaluated, elapsed windows become assumed resolutions,
    then credits are drawn down, then expired packs are written off (the same work as `billing_tick`)."""
    evaluated = conversations_evaluate_pending()
    finalised = resolution_windows_finalise()
    credit_packs_reconcile_pending()
    funding = resolutions_fund()
    expired = credit_packs_expire()
    conversions = seat_conversions_resume_stalled()
    return {
        "evaluated_resolutions": evaluated, "assumed": finalised, "credited": funding.credited,
        "overage": funding.overage, "expired": len(expired), "conversions_finished": conversions,
    }  # fmt: skip
