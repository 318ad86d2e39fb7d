"""Archiving raw conversation events (docs/data-lifecycle.md): the events of finished conversations whose last
event is older than the late window and a margin move from ConversationEvent to ConversationEventArchive, in
bounded batches, one transaction each under the account's lock. Money rows (resolutions, the credit ledger,
meter windows and reports, rollups) and conversation states are never touched."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection, transaction

from accounts.locks import account_lock
from accounts.models import Account
from billing_portal import clock

from .. import sql
from ..ingestion import MAX_AGE
from ..models import Conversation, ConversationEvent, ConversationEventArchive, ConversationEventArchiveMark

# Past Stripe's 35 days (after which ingestion refuses an event) by a week: for clocks that disagree and for
# the billing cycle to have evaluated, funded and reported everything the conversations led to.
ARCHIVE_MARGIN = dt.timedelta(days=7)
FINISHED = (Conversation.Status.RESOLVED.value, Conversation.Status.ESCALATED.value)


class ArchiveTooRecent(ValueError):
    """The cut-off is inside the window in which events may still arrive late."""


@dataclass
class ArchiveResult:
    accounts: int = 0  # accounts walked
    conversations: int = 0  # conversations whose events moved (or would, in a dry run)
    events: int = 0  # events moved (or that would be)
    dry_run: bool = False


def archive_cutoff_latest(*, now: dt.datetime) -> dt.datetime:
    """The latest cut-off allowed at `now`: the late window (35 days) plus the margin."""
    return now - MAX_AGE - ARCHIVE_MARGIN


def conversation_events_archive(
    *,
    before: dt.datetime,
    batch_size: int = 2000,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveResult:
    """Move the events of every finished (resolved or escalated, not disputed) conversation whose last event
    occurred before `before` to the archive, and mark the conversation (`events_archived_at`) so that
    evaluation reads its archived events too. Idempotent and resumable: each batch of up to `batch_size`
    conversations is one transaction under the account's lock (evaluation cannot run in between), exactly the
    rows deleted are archived (`sql.events_archive_move`: an event ingested meanwhile is not deleted unseen),
    and a second run finds nothing left to move. `before` may not be later than `archive_cutoff_latest(now)`
    (ArchiveTooRecent)."""
    now = now or clock.now()
    latest = archive_cutoff_latest(now=now)
    if before > latest:
        raise ArchiveTooRecent(
            f"--before {before:%Y-%m-%d %H:%M} is too recent: events may still arrive for conversations until "
            f"{MAX_AGE.days} days after them; archive before {latest:%Y-%m-%d %H:%M} UTC at the latest."
        )
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    # Every account (a small table): DISTINCT over the live events would read all of them.
    account_ids = list(Account.objects.order_by("pk").values_list("pk", flat=True))
    result = ArchiveResult(dry_run=dry_run)
    for done, account_id in enumerate(account_ids, start=1):
        after = ""  # keyset over the live events' (account, conversation_id) index
        while True:
            walked = list(
                ConversationEvent.objects.filter(account_id=account_id, conversation_id__gt=after)
                .order_by("conversation_id")
                .values_list("conversation_id", flat=True)
                .distinct()[:batch_size]
            )
            if not walked:
                break
            after = walked[-1]
            moved = _batch_archive(account_id=account_id, conversation_ids=walked, before=before, dry_run=dry_run,
                                   now=now)  # fmt: skip
            result.conversations += moved[0]
            result.events += moved[1]
            if len(walked) < batch_size:
                break
        result.accounts += 1
        if progress:
            progress(done, len(account_ids))
    if result.events and not dry_run:
        # Fresh statistics now: with the archive's grown by a run's rows and not yet analyzed, ingestion's
        # id probe was planned as a scan of the account's whole archive (84 ms a batch instead of 3 ms).
        with connection.cursor() as cursor:
            for model in (ConversationEvent, ConversationEventArchive):
                cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
    return result


def _batch_archive(
    *, account_id: int, conversation_ids: list[str], before: dt.datetime, dry_run: bool, now: dt.datetime
) -> tuple[int, int]:
    """Of these conversations of the account, archive the events of those finished before `before`: one
    transaction under the account's lock. Returns (conversations, events)."""
    with transaction.atomic():
        if not dry_run:
            account_lock(account_id)
        finished = list(
            Conversation.objects.filter(
                account_id=account_id, conversation_id__in=conversation_ids, status__in=FINISHED,
                last_event_at__lt=before, voided_by_staff=False,
            ).values_list("conversation_id", flat=True)
        )  # fmt: skip
        if not finished:
            return 0, 0
        if dry_run:
            return len(finished), ConversationEvent.objects.filter(
                account_id=account_id, conversation_id__in=finished
            ).count()
        mark, created = ConversationEventArchiveMark.objects.get_or_create(  # the account lock makes this race-free
            account_id=account_id, defaults={"archived_before": before}
        )
        if not created and mark.archived_before < before:
            ConversationEventArchiveMark.objects.filter(pk=account_id).update(archived_before=before)
        moved = sql.events_archive_move(account_id, finished, now)
        Conversation.objects.filter(account_id=account_id, conversation_id__in=finished).update(events_archived_at=now)
        return len(finished), moved


def archived_event_payloads(*, account_id: int, event_ids: list[str]) -> dict[str, tuple]:
    """{event id: (conversation id, type, occurred_at)} of the ids that are in the account's archive: ingestion
    asks for the ids it just stored, so that an archived id sent again is still a duplicate or a conflict.
    One primary-key probe first: accounts with nothing archived pay nothing more."""
    if not event_ids or not account_has_archive(account_id=account_id):
        return {}
    rows = sql.archived_events_by_id(account_id, event_ids)
    return {event_id: (conversation_id, type_, occurred_at) for event_id, conversation_id, type_, occurred_at in rows}


def account_has_archive(*, account_id: int) -> bool:
    """Whether any of the account's events were archived (its mark: one primary-key probe)."""
    return ConversationEventArchiveMark.objects.filter(account_id=account_id).exists()
