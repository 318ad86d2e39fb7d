"""Writes of the resolutions app, one module per concern: ingestion (store a batch, queue its
conversations), evaluation (decide resolutions, finalise elapsed windows), rollups (daily counters),
voids (staff disputes and superseded resolutions), funding (credits drawn down, overage priced), and
invoice_preview (a read: the next invoice as the portal computes it beside Stripe's preview).
Their hot statements live in `resolutions/sql.py`, each beside its ORM twin."""

from .evaluation import (
    SUPERSEDED,
    conversations_evaluate,
    conversations_evaluate_pending,
    resolution_windows_finalise,
)
from .funding import FUND_BATCH, FUND_CHUNK, FundingResult, resolutions_fund
from .ingestion import EventConflict, IngestResult, conversation_events_ingest
from .voids import resolution_void, resolutions_unfund_voided

__all__ = [
    "FUND_BATCH", "FUND_CHUNK", "SUPERSEDED", "EventConflict", "FundingResult", "IngestResult",
    "conversation_events_ingest", "conversations_evaluate", "conversations_evaluate_pending",
    "resolution_void", "resolution_windows_finalise", "resolutions_fund", "resolutions_unfund_voided",
]  # fmt: skip
