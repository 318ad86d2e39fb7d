from __future__ import annotations

from celery import shared_task

from credits.conversions import seat_conversions_resume_stalled
from credits.purchases import credit_packs_reconcile_pending
from credits.services import credit_packs_expire

from .services import resolution_windows_finalise, resolutions_fund


@shared_task(acks_late=True)
def billing_cycle_task() -> dict:
    """Periodic, in order: elapsed windows become assumed resolutions, then credits are drawn down,
    then expired packs are written off (the same work as `billing_tick`)."""
    finalised = resolution_windows_finalise()
    credit_packs_reconcile_pending()
    funding = resolutions_fund()
    expired = credit_packs_expire()
    conversions = seat_conversions_resume_stalled()
    return {
        "assumed": finalised, "credited": funding.credited, "overage": funding.overage, "expired": len(expired),
        "conversions_finished": conversions,
    }  # fmt: skip
