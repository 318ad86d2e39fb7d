"""Evaluation: re-decide conversations from their events, under the account's lock, and write what
changed (conversation states, new resolutions, superseded ones voided, rollups)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from django.db import transaction

from accounts.locks import account_lock
from accounts.models import Account
from accounts.selectors import plan_schedule_get
from billing_portal import clock

from .. import sql
from ..models import Conversation, ConversationEvent, ConversationEventArchive, PendingEvaluation, Resolution
from ..rules import RESOLVED, EventFact, conversation_evaluate
from .archive import account_has_archive
from .rollups import rollups_adjust
from .voids import resolutions_unfund_voided

SUPERSEDED = "Superseded: a late event, earlier in time, changed this conversation's outcome."

WAITING = (Conversation.Status.OPEN.value, Conversation.Status.AWAITING.value)  # no outcome yet
EVALUATE_CONVERSATIONS = 5000  # conversations evaluated per transaction when draining the queue


def conversations_evaluate_pending(*, account_ids: list[int] | None = None, now: dt.datetime | None = None) -> int:
    """Evaluate the queued conversations (PendingEvaluation), per account under its lock, up to about
    EVALUATE_CONVERSATIONS per transaction; the queue rows read are deleted in the same transaction, so a
    crash leaves them for the next run and a second run finds nothing. Returns resolutions created."""
    now = now or clock.now()
    queued = PendingEvaluation.objects.all()
    if account_ids is not None:
        queued = queued.filter(account_id__in=account_ids)
    created = 0
    for account_id in queued.values_list("account_id", flat=True).order_by("account_id").distinct():
        while True:
            with transaction.atomic():
                account = account_lock(account_id)
                row_ids, conversation_ids = [], set()
                rows = PendingEvaluation.objects.filter(account_id=account_id).order_by("pk")
                for pk, ids in rows.values_list("pk", "conversation_ids").iterator(chunk_size=100):
                    row_ids.append(pk)
                    conversation_ids.update(ids)
                    if len(conversation_ids) >= EVALUATE_CONVERSATIONS:
                        break
                if not row_ids:
                    break
                created += conversations_evaluate(account=account, conversation_ids=sorted(conversation_ids), now=now)
                PendingEvaluation.objects.filter(pk__in=row_ids).delete()
            if len(conversation_ids) < EVALUATE_CONVERSATIONS:
                break
    return created


def conversations_evaluate(*, account: Account, conversation_ids: Iterable[str], now: dt.datetime) -> int:
    """Re-decide the given conversations of one account from all their events, and write what changed:
    conversation states, new resolutions, superseded resolutions (voided), and the daily rollups.
    Must run inside the transaction that holds the account's lock. Returns resolutions created."""
    conversation_ids = list(conversation_ids)
    window = account.plan_version.inactivity_window
    facts: dict[str, list[EventFact]] = defaultdict(list)
    last_event: dict[str, dt.datetime] = {}
    # Plain rows, not model instances: this runs for every ingested batch.
    for conversation_id, event_type, occurred_at, event_id in sql.conversation_rows(
        ConversationEvent, account.pk, conversation_ids, ("conversation_id", "type", "occurred_at", "event_id")
    ):
        facts[conversation_id].append(EventFact(occurred_at, event_type, event_id))
        if conversation_id not in last_event or occurred_at > last_event[conversation_id]:
            last_event[conversation_id] = occurred_at
    # Few accounts have disputed conversations: ask the small partial index first, the ids only if any. The
    # same for archived events (services/archive.py): a conversation whose events moved is decided from all.
    disputed, archived = set(), []
    if Conversation.objects.filter(account=account, voided_by_staff=True).exists() or account_has_archive(
        account_id=account.pk
    ):
        for conversation_id, voided_by_staff, events_archived_at in sql.conversation_rows(
            Conversation, account.pk, conversation_ids, ("conversation_id", "voided_by_staff", "events_archived_at")
        ):
            if voided_by_staff:
                disputed.add(conversation_id)
            if events_archived_at is not None:
                archived.append(conversation_id)
    if archived:
        for conversation_id, event_type, occurred_at, event_id in sql.conversation_rows(
            ConversationEventArchive, account.pk, archived, ("conversation_id", "type", "occurred_at", "event_id")
        ):
            facts[conversation_id].append(EventFact(occurred_at, event_type, event_id))
            if conversation_id not in last_event or occurred_at > last_event[conversation_id]:
                last_event[conversation_id] = occurred_at
    active = {
        conversation_id: (pk, kind, resolved_at)
        for conversation_id, pk, kind, resolved_at in sql.conversation_rows(
            Resolution, account.pk, conversation_ids, ("conversation_id", "id", "kind", "resolved_at"), billable=True
        )
    }
    states, to_create, void_ids = [], [], []
    for conversation_id in conversation_ids:
        if conversation_id in disputed:
            continue  # disputed and voided: never billed again, whatever arrives
        outcome = conversation_evaluate(facts[conversation_id], window=window, now=now)
        current = active.get(conversation_id)
        if current is not None and (outcome.status != RESOLVED or (outcome.kind, outcome.resolved_at) != current[1:]):
            void_ids.append(current[0])
            current = None
        if outcome.status == RESOLVED and current is None:
            to_create.append(_NewResolution(conversation_id, outcome.kind, outcome.resolved_at))
        states.append(
            (conversation_id, outcome.status, outcome.window_ends_at, last_event[conversation_id], outcome.escalated_at)
        )
    to_void = list(Resolution.objects.filter(pk__in=void_ids)) if void_ids else []
    if to_void:
        Resolution.objects.filter(pk__in=void_ids).update(voided_at=now, void_reason=SUPERSEDED)
        resolutions_unfund_voided(account, to_void, now)
    if to_create:
        _resolutions_insert(account, to_create, now)
    before = sql.conversations_upsert(account.pk, states, now)
    escalations, waiting = [], 0
    for conversation_id, status, _window, _last, escalated_at in states:
        status_before, escalated_before = before.get(conversation_id, (None, None))
        if escalated_before != escalated_at:
            escalations.append((escalated_before, escalated_at))
        waiting += (status in WAITING) - (status_before in WAITING)
    if waiting:
        sql.conversation_tally_add(account.pk, waiting)
    rollups_adjust(account, added=to_create, removed=to_void, escalations=escalations)
    return len(to_create)


def _resolutions_insert(account: Account, to_create: list, now: dt.datetime) -> None:
    """Write new resolutions stamped with the plan version in force at their resolved_at (DESIGN §3.2: a
    period is rated by the account's version in that period; `PlanMigration` moves change it only at a
    period start). One INSERT per version: one for an account that never moved."""
    schedule = plan_schedule_get(account_id=account.pk, account_version_id=account.plan_version_id)
    if schedule.single_version_id is not None:
        sql.resolutions_insert(account.pk, schedule.single_version_id, to_create, now)
        return
    by_version: dict[int, list] = defaultdict(list)
    for new in to_create:
        by_version[schedule.version_at(new.resolved_at)].append(new)
    for version_id, rows in sorted(by_version.items()):
        sql.resolutions_insert(account.pk, version_id, rows, now)


class _NewResolution(NamedTuple):
    """A resolution to write: unfunded, so no money yet (what _rollups_adjust reads of it, too)."""

    conversation_id: str
    kind: str
    resolved_at: dt.datetime
    funding: str = Resolution.Funding.UNFUNDED.value
    amount_minor: int = 0


FINALISE_BATCH = 2000


def resolution_windows_finalise(*, now: dt.datetime | None = None) -> int:
    """The sweep: conversations whose inactivity window has elapsed become assumed resolutions.
    Batched per account, under the account's lock; running it twice changes nothing the second time."""
    now = now or clock.now()
    created = 0
    due_accounts = (
        Conversation.objects.filter(status=Conversation.Status.AWAITING, window_ends_at__lte=now)
        .values_list("account_id", flat=True)
        .distinct()
    )
    for account_id in list(due_accounts):
        while True:
            with transaction.atomic():
                account = account_lock(account_id)
                due = list(
                    Conversation.objects.filter(
                        account=account, status=Conversation.Status.AWAITING, window_ends_at__lte=now
                    ).values_list("conversation_id", flat=True)[:FINALISE_BATCH]
                )
                if not due:
                    break
                created += conversations_evaluate(account=account, conversation_ids=due, now=now)
            if len(due) < FINALISE_BATCH:
                break
    return created
