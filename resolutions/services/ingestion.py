"""Ingestion: store a validated batch of conversation events and queue its conversations for evaluation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from accounts.models import Account
from billing_portal import clock

from .. import sql
from ..ingestion import IncomingEvent
from ..models import ConversationEvent, PendingEvaluation
from .archive import archived_event_payloads
from .evaluation import conversations_evaluate_pending

logger = logging.getLogger(__name__)


class EventConflict(Exception):
    """An event id was sent before with another payload (or twice in one batch with different payloads)."""

    def __init__(self, errors: list[dict]):
        super().__init__(f"{len(errors)} event id(s) already used with another payload")
        self.errors = errors


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int


def conversation_events_ingest(
    *, account: Account, events: list[IncomingEvent], evaluation: str | None = None
) -> IngestResult:
    """Store a validated batch and queue its conversations for evaluation, in one transaction.

    A repeated id with the same payload is a duplicate and changes nothing; with another payload the
    whole batch is refused (EventConflict) and nothing is stored. The store takes no account-wide lock:
    the unique (account, event id) index decides between concurrent batches (rows are written in id
    order, so two batches wait for each other at most, never deadlock). The conversations are evaluated
    under the account's lock: in this transaction when `evaluation` (default: settings.EVENT_EVALUATION)
    is "inline", else by `conversations_evaluate_task` once the batch has committed (and by every billing
    tick).
    """
    evaluation = evaluation or settings.EVENT_EVALUATION
    if evaluation not in ("inline", "deferred"):
        raise ValueError(f'evaluation must be "inline" or "deferred", not {evaluation!r}')
    now = clock.now()
    first_by_id: dict[str, IncomingEvent] = {}
    conflicts: list[dict] = []
    in_batch_duplicates = 0
    for event in events:
        seen = first_by_id.get(event.event_id)
        if seen is None:
            first_by_id[event.event_id] = event
        elif seen.payload == event.payload:
            in_batch_duplicates += 1
        else:
            conflicts.append(_conflict(event.index, f"Same id as event {seen.index} with a different payload."))
    if conflicts:
        raise EventConflict(conflicts)

    inline = evaluation == "inline"
    with transaction.atomic():
        stored = sql.events_store(account.pk, sorted(first_by_id.values(), key=lambda e: e.event_id), now)
        duplicates = in_batch_duplicates
        if len(stored) < len(first_by_id):  # the rest were there before: same payload, or a conflict
            previous = ConversationEvent.objects.filter(
                account=account, event_id__in=[i for i in first_by_id if i not in stored]
            ).values_list("event_id", "conversation_id", "type", "occurred_at")
            for event_id, conversation_id, event_type, occurred_at in previous:
                event = first_by_id[event_id]
                if event.payload == (conversation_id, event_type, occurred_at):
                    duplicates += 1
                else:
                    conflicts.append(_conflict(event.index, "This id was already used with a different payload."))
            if conflicts:
                raise EventConflict(sorted(conflicts, key=lambda c: c["index"]))  # rolls the batch back
        # An id whose event was archived (services/archive.py) is still the account's: a duplicate or a 409.
        archived = archived_event_payloads(account_id=account.pk, event_ids=sorted(stored))
        if archived:
            for event_id, payload in archived.items():
                event = first_by_id[event_id]
                if event.payload == payload:
                    duplicates += 1
                else:
                    conflicts.append(_conflict(event.index, "This id was already used with a different payload."))
            if conflicts:
                raise EventConflict(sorted(conflicts, key=lambda c: c["index"]))  # rolls the batch back
            ConversationEvent.objects.filter(account=account, event_id__in=list(archived)).delete()
            stored -= set(archived)
        if stored:
            conversation_ids = sorted({first_by_id[i].conversation_id for i in stored})
            PendingEvaluation.objects.create(account=account, conversation_ids=conversation_ids, created_at=now)
            if inline:
                conversations_evaluate_pending(account_ids=[account.pk], now=now)
            else:
                transaction.on_commit(lambda: _evaluation_request(account.pk))
    return IngestResult(accepted=len(stored), duplicates=duplicates)


def _evaluation_request(account_id: int) -> None:
    """Ask a worker to evaluate the account's queued conversations. If the broker cannot be reached the
    batch is still stored and queued: the next billing tick evaluates it (so a 202 is still the truth)."""
    from ..tasks import conversations_evaluate_task

    try:
        conversations_evaluate_task.delay(account_id)
    except Exception as exc:  # noqa: BLE001 - kombu raises its own and OS errors; none may fail the request
        logger.warning(
            "Evaluation of account %s left to the next billing tick: broker unreachable (%s)", account_id, exc
        )


def _conflict(index: int, message: str) -> dict:
    return {"index": index, "field": "id", "message": message}
