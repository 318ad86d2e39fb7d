"""The resolutions app's hot statements: each PostgreSQL statement beside its ORM twin (billing_portal.
sql_twins). The SQL runs on PostgreSQL (through billing_portal.db: server-bound binary parameters and
rows); the ORM version runs elsewhere, and both run against the same data in the parity tests. Enum
values travel as parameters, never as literals in the SQL."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from django.db.models import F

from accounts.models import Account
from billing_portal.db import execute_bound, rows_fetch
from billing_portal.sql_twins import twin

from .models import (
    Conversation,
    ConversationEvent,
    ConversationEventArchive,
    ConversationTally,
    DailyUsage,
    FundingProgress,
    MeterWindow,
    Resolution,
)

UNFUNDED, CREDIT, OVERAGE = (Resolution.Funding.UNFUNDED.value, Resolution.Funding.CREDIT.value,
                             Resolution.Funding.OVERAGE.value)  # fmt: skip
CONFIRMED = Resolution.Kind.CONFIRMED.value


# --- Events: insert the new ones, in id order ------------------------------------------------------
def _events_store_orm(account_id: int, events: list, now: dt.datetime) -> set[str]:
    # SQLite has one writer at a time, so the lookup cannot race.
    existing = set(
        ConversationEvent.objects.filter(account_id=account_id, event_id__in=[e.event_id for e in events]).values_list(
            "event_id", flat=True
        )
    )
    new = [e for e in events if e.event_id not in existing]
    ConversationEvent.objects.bulk_create(
        [
            ConversationEvent(
                account_id=account_id,
                event_id=e.event_id,
                conversation_id=e.conversation_id,
                type=e.type,
                occurred_at=e.occurred_at,
                received_at=now,
            )  # fmt: skip
            for e in new
        ],
        batch_size=500,
    )
    return {e.event_id for e in new}


@twin(_events_store_orm)
def events_store(account_id: int, events: list, now: dt.datetime) -> set[str]:
    """Insert the events (sorted by id) whose id the account has not used yet; returns the ids inserted.
    One INSERT ... ON CONFLICT DO NOTHING RETURNING over arrays."""
    inserted = rows_fetch(
        f"""INSERT INTO {ConversationEvent._meta.db_table}
                (account_id, event_id, conversation_id, type, occurred_at, received_at)
            SELECT %s, v.event_id, v.conversation_id, v.type, v.occurred_at, %s
            FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::timestamptz[])
                AS v(event_id, conversation_id, type, occurred_at)
            ORDER BY v.event_id
            ON CONFLICT (account_id, event_id) DO NOTHING
            RETURNING event_id""",
        [
            account_id, now, [e.event_id for e in events], [e.conversation_id for e in events],
            [e.type for e in events], [e.occurred_at for e in events],
        ],
    )  # fmt: skip
    return {row[0] for row in inserted}


# --- Archiving: move conversations' events to the archive (services/archive.py) ----------------------
def _events_archive_move_orm(account_id: int, conversation_ids: list[str], now: dt.datetime) -> int:
    columns = ("event_id", "conversation_id", "type", "occurred_at", "received_at")
    rows = list(
        ConversationEvent.objects.filter(account_id=account_id, conversation_id__in=conversation_ids).values_list(
            "pk", *columns
        )
    )
    ConversationEventArchive.objects.bulk_create(
        [
            ConversationEventArchive(account_id=account_id, archived_at=now, **dict(zip(columns, row[1:], strict=True)))
            for row in rows
        ],
        batch_size=1000,
    )
    ConversationEvent.objects.filter(pk__in=[row[0] for row in rows]).delete()  # what was copied, nothing newer
    return len(rows)


@twin(_events_archive_move_orm)
def events_archive_move(account_id: int, conversation_ids: list[str], now: dt.datetime) -> int:
    """Move the events of these conversations of the account to the archive, stamped archived_at = now; returns
    how many. One DELETE ... RETURNING feeding an INSERT: exactly the rows deleted are archived (an event
    ingested meanwhile, not yet visible, stays live)."""
    if not conversation_ids:
        return 0
    return execute_bound(
        f"""WITH moved AS (
                DELETE FROM {ConversationEvent._meta.db_table} WHERE account_id = %s AND conversation_id = ANY(%s)
                RETURNING account_id, event_id, conversation_id, type, occurred_at, received_at)
            INSERT INTO {ConversationEventArchive._meta.db_table}
                (account_id, event_id, conversation_id, type, occurred_at, received_at, archived_at)
            SELECT account_id, event_id, conversation_id, type, occurred_at, received_at, %s FROM moved""",
        [account_id, conversation_ids, now],
    )


def _archived_events_by_id_orm(account_id: int, event_ids: list[str]) -> list[tuple]:
    rows = ConversationEventArchive.objects.filter(account_id=account_id, event_id__in=event_ids)
    return list(rows.values_list("event_id", "conversation_id", "type", "occurred_at"))


@twin(_archived_events_by_id_orm)
def archived_events_by_id(account_id: int, event_ids: list[str]) -> list[tuple]:
    """(event id, conversation id, type, occurred_at) of those ids in the account's archive: one `= ANY(array)`
    probe of its unique index, binary rows (ingestion asks it for every batch of an account with an archive)."""
    if not event_ids:
        return []
    return rows_fetch(
        f"""SELECT event_id, conversation_id, type, occurred_at FROM {ConversationEventArchive._meta.db_table}
            WHERE account_id = %s AND event_id = ANY(%s)""",
        [account_id, event_ids],
    )


# --- Rows of some conversations (events, conversation states, billable resolutions) -----------------
def _conversation_rows_orm(model, account_id: int, conversation_ids: list[str], columns: tuple, billable=False):
    if not conversation_ids:
        return []
    rows = model.objects.filter(account_id=account_id, conversation_id__in=conversation_ids)
    return list((rows.filter(voided_at=None) if billable else rows).values_list(*columns))


@twin(_conversation_rows_orm)
def conversation_rows(model, account_id: int, conversation_ids: list[str], columns: tuple, billable=False):
    """Rows (tuples of `columns`) of `model` for the given conversations of the account; with billable, only
    resolutions not voided. One `= ANY(array)` lookup in binary rows."""
    if not conversation_ids:
        return []
    sql = (
        f"SELECT {', '.join(columns)} FROM {model._meta.db_table} WHERE account_id = %s AND conversation_id = ANY(%s)"
        + (" AND voided_at IS NULL" if billable else "")
    )
    return rows_fetch(sql, [account_id, conversation_ids])


# --- Conversation states ---------------------------------------------------------------------------
def _conversations_upsert_orm(account_id: int, states: list[tuple], now: dt.datetime) -> dict[str, tuple]:
    if not states:
        return {}
    before = {
        cid: (status, escalated_at)
        for cid, status, escalated_at in Conversation.objects.filter(
            account_id=account_id, conversation_id__in=[state[0] for state in states]
        ).values_list("conversation_id", "status", "escalated_at")
    }
    Conversation.objects.bulk_create(
        [
            Conversation(
                account_id=account_id,
                conversation_id=cid,
                status=status,
                window_ends_at=window_ends_at,
                last_event_at=last_event_at,
                escalated_at=escalated_at,
                updated_at=now,
            )  # fmt: skip
            for cid, status, window_ends_at, last_event_at, escalated_at in states
        ],
        batch_size=500,
        update_conflicts=True,
        unique_fields=["account", "conversation_id"],
        update_fields=["status", "window_ends_at", "last_event_at", "escalated_at", "updated_at"],
    )
    return before


@twin(_conversations_upsert_orm)
def conversations_upsert(account_id: int, states: list[tuple], now: dt.datetime) -> dict[str, tuple]:
    """Write each conversation's evaluated state (conversation id, status, window end, last event, escalated
    at): one INSERT ... ON CONFLICT over arrays. Returns what the conversations that existed were before,
    {conversation id: (status, escalated_at)}, read by the same statement (so the rollups can move by the
    change). The caller holds the account's lock."""
    if not states:
        return {}
    ids, statuses, windows, lasts, escalations = (list(column) for column in zip(*states, strict=True))
    table = Conversation._meta.db_table
    before = rows_fetch(
        f"""WITH before AS (
                SELECT conversation_id, status, escalated_at FROM {table}
                WHERE account_id = %s AND conversation_id = ANY(%s)),
            written AS (
                INSERT INTO {table} (account_id, conversation_id, status, window_ends_at, last_event_at,
                                     escalated_at, voided_by_staff, updated_at)
                SELECT %s, v.cid, v.status, v.window_ends_at, v.last_event_at, v.escalated_at, false, %s
                FROM unnest(%s::varchar[], %s::varchar[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[])
                    AS v(cid, status, window_ends_at, last_event_at, escalated_at)
                ON CONFLICT (account_id, conversation_id) DO UPDATE SET status = EXCLUDED.status,
                    window_ends_at = EXCLUDED.window_ends_at, last_event_at = EXCLUDED.last_event_at,
                    escalated_at = EXCLUDED.escalated_at, updated_at = EXCLUDED.updated_at)
            SELECT conversation_id, status, escalated_at FROM before""",
        [account_id, ids, account_id, now, ids, statuses, windows, lasts, escalations],
    )
    return {cid: (status, escalated_at) for cid, status, escalated_at in before}


def _conversation_tally_add_orm(account_id: int, waiting: int) -> None:
    ConversationTally.objects.get_or_create(account_id=account_id)  # the account lock makes this race-free
    ConversationTally.objects.filter(account_id=account_id).update(waiting=F("waiting") + waiting)


@twin(_conversation_tally_add_orm)
def conversation_tally_add(account_id: int, waiting: int) -> None:
    """Add to the account's count of conversations waiting for an outcome (the caller holds its lock)."""
    table = ConversationTally._meta.db_table
    execute_bound(
        f"""INSERT INTO {table} (account_id, waiting) VALUES (%s, %s)
            ON CONFLICT (account_id) DO UPDATE SET waiting = {table}.waiting + EXCLUDED.waiting""",
        [account_id, waiting],
    )


# --- New (unfunded) resolutions --------------------------------------------------------------------
def _resolutions_insert_orm(account_id: int, plan_version_id: int, new: list, now: dt.datetime) -> None:
    Resolution.objects.bulk_create(
        [
            Resolution(
                account_id=account_id,
                conversation_id=r.conversation_id,
                kind=r.kind,
                resolved_at=r.resolved_at,
                plan_version_id=plan_version_id,
                funding=UNFUNDED,
                created_at=now,
            )  # fmt: skip
            for r in new
        ],
        batch_size=500,
    )


@twin(_resolutions_insert_orm)
def resolutions_insert(account_id: int, plan_version_id: int, new: list, now: dt.datetime) -> None:
    """Write new unfunded resolutions (conversation_id, kind, resolved_at): one INSERT over arrays. The
    partial unique index still refuses a second billable resolution of a conversation."""
    execute_bound(
        f"""INSERT INTO {Resolution._meta.db_table} (account_id, conversation_id, kind, resolved_at,
                plan_version_id, funding, amount_minor, created_at, void_reason)
            SELECT %s, v.conversation_id, v.kind, v.resolved_at, %s, %s, 0, %s, ''
            FROM unnest(%s::varchar[], %s::varchar[], %s::timestamptz[]) AS v(conversation_id, kind, resolved_at)""",
        [
            account_id, plan_version_id, UNFUNDED, now,
            [r.conversation_id for r in new], [r.kind for r in new], [r.resolved_at for r in new],
        ],
    )  # fmt: skip


# --- Daily rollups ---------------------------------------------------------------------------------
def _rollups_add_orm(delta: dict[tuple[int, dt.date], list[int]]) -> None:
    for account_id, day in sorted(delta):
        resolutions, credited, overage, amount, confirmed, escalated = delta[(account_id, day)]
        DailyUsage.objects.get_or_create(account_id=account_id, date=day)  # the account lock makes this race-free
        DailyUsage.objects.filter(account_id=account_id, date=day).update(
            resolutions=F("resolutions") + resolutions, credited=F("credited") + credited,
            overage=F("overage") + overage, amount_minor=F("amount_minor") + amount,
            confirmed=F("confirmed") + confirmed, escalated=F("escalated") + escalated,
        )  # fmt: skip


@twin(_rollups_add_orm)
def rollups_add(delta: dict[tuple[int, dt.date], list[int]]) -> None:
    """Add (resolutions, credited, overage, amount, confirmed, escalated) to the (account, day) counters,
    whose accounts the caller's transaction has locked: one INSERT ... ON CONFLICT over arrays."""
    keys = sorted(delta)
    table = DailyUsage._meta.db_table
    execute_bound(
        f"""INSERT INTO {table} (account_id, date, resolutions, credited, overage, amount_minor, confirmed, escalated)
            SELECT v.account_id, v.day, v.resolutions, v.credited, v.overage, v.amount, v.confirmed, v.escalated
            FROM unnest(%s::bigint[], %s::date[], %s::int[], %s::int[], %s::int[], %s::bigint[], %s::int[], %s::int[])
                AS v(account_id, day, resolutions, credited, overage, amount, confirmed, escalated)
            ON CONFLICT (account_id, date) DO UPDATE SET
                resolutions = {table}.resolutions + EXCLUDED.resolutions,
                credited = {table}.credited + EXCLUDED.credited,
                overage = {table}.overage + EXCLUDED.overage,
                amount_minor = {table}.amount_minor + EXCLUDED.amount_minor,
                confirmed = {table}.confirmed + EXCLUDED.confirmed,
                escalated = {table}.escalated + EXCLUDED.escalated""",
        [[k[0] for k in keys], [k[1] for k in keys], *([delta[k][i] for k in keys] for i in range(6))],
    )


# --- Meter windows ----------------------------------------------------------------------------------
def _meter_windows_add_orm(delta: dict[tuple[int, dt.datetime], list]) -> None:
    for account_id, start in sorted(delta):
        end, period_start, period_end, n = delta[(account_id, start)]
        MeterWindow.objects.get_or_create(  # the account lock makes this race-free
            account_id=account_id, start=start,
            defaults={"end": end, "period_start": period_start, "period_end": period_end},
        )  # fmt: skip
        MeterWindow.objects.filter(account_id=account_id, start=start).update(overage=F("overage") + n)


@twin(_meter_windows_add_orm)
def meter_windows_add(delta: dict[tuple[int, dt.datetime], list]) -> None:
    """Add n to the overage of the (account, window start) windows, {key: [end, period start, period end,
    n]}, creating the windows they name; the caller's transaction holds the accounts' locks. One INSERT ...
    ON CONFLICT over arrays (a window keeps the bounds it was created with)."""
    keys = sorted(delta)
    table = MeterWindow._meta.db_table
    execute_bound(
        f"""INSERT INTO {table} (account_id, start, "end", period_start, period_end, overage, reported)
            SELECT v.account_id, v.start, v.ends, v.period_start, v.period_end, v.n, 0
            FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[],
                        %s::int[]) AS v(account_id, start, ends, period_start, period_end, n)
            ON CONFLICT (account_id, start) DO UPDATE SET overage = {table}.overage + EXCLUDED.overage""",
        [[k[0] for k in keys], [k[1] for k in keys], *([delta[k][i] for k in keys] for i in range(4))],
    )


# --- Funding: the resolutions past each account's mark ---------------------------------------------
def _resolutions_past_marks_orm(read_from: dict[int, int], limit: int) -> list[tuple]:
    rows: list[tuple] = []
    for account_id in sorted(read_from):
        past = Resolution.objects.filter(account_id=account_id, id__gt=read_from[account_id]).order_by("id")
        values = past.values_list("id", "account_id", "resolved_at", "plan_version_id", "funding", "voided_at")
        rows += [(*row[:4], row[4] == UNFUNDED and row[5] is None) for row in values[: limit - len(rows)]]
        if len(rows) == limit:
            break
    return rows


@twin(_resolutions_past_marks_orm)
def resolutions_past_marks(read_from: dict[int, int], limit: int) -> list[tuple]:
    """Up to `limit` resolutions with an id past read_from[account], in (account, id) order: (id, account
    id, resolved_at, plan version id, whether it is unfunded and not voided). Index range scans from the
    marks; binary rows."""
    group = sorted(read_from)
    return rows_fetch(
        f"""SELECT r.id, r.account_id, r.resolved_at, r.plan_version_id, r.funding = %s AND r.voided_at IS NULL
            FROM unnest(%s::bigint[], %s::bigint[]) AS m(account_id, after_id)
            CROSS JOIN LATERAL (
                SELECT id, account_id, resolved_at, plan_version_id, funding, voided_at
                FROM {Resolution._meta.db_table} r
                WHERE r.account_id = m.account_id AND r.id > m.after_id
                ORDER BY r.id LIMIT %s) r
            ORDER BY r.account_id, r.id LIMIT %s""",
        [UNFUNDED, group, [read_from[pk] for pk in group], limit, limit],
    )


def _overage_counts_orm(keys: list[tuple]) -> dict[tuple, int]:
    return {
        key: Resolution.objects.filter(
            account_id=key[0], funding=OVERAGE, voided_at=None, resolved_at__gte=key[1], resolved_at__lt=key[2]
        ).count()
        for key in keys
    }


@twin(_overage_counts_orm)
def overage_counts(keys: list[tuple]) -> dict[tuple, int]:
    """Per (account, period start, period end): overage resolutions not voided in that account's period
    (of any plan version, as Stripe's meter counts them). One statement."""
    if not keys:
        return {}
    counts = rows_fetch(
        f"""SELECT v.i, (SELECT count(*) FROM {Resolution._meta.db_table} r
                         WHERE r.account_id = v.account_id AND r.funding = %s AND r.voided_at IS NULL
                           AND r.resolved_at >= v.starts AND r.resolved_at < v.ends)
            FROM unnest(%s::int[], %s::bigint[], %s::timestamptz[], %s::timestamptz[])
                AS v(i, account_id, starts, ends)""",
        [OVERAGE, list(range(len(keys))), [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]],
    )
    return {keys[i]: n for i, n in counts}


def _funding_marks_write_orm(marks: dict[int, int]) -> None:
    for account_id, mark in sorted(marks.items()):
        FundingProgress.objects.update_or_create(account_id=account_id, defaults={"funded_through_id": mark})


@twin(_funding_marks_write_orm)
def funding_marks_write(marks: dict[int, int]) -> None:
    """Move the accounts' FundingProgress marks (the caller holds their locks)."""
    if not marks:
        return
    accounts = sorted(marks)
    execute_bound(
        f"""INSERT INTO {FundingProgress._meta.db_table} (account_id, funded_through_id)
            SELECT * FROM unnest(%s::bigint[], %s::bigint[])
            ON CONFLICT (account_id) DO UPDATE SET funded_through_id = EXCLUDED.funded_through_id""",
        [accounts, [marks[a] for a in accounts]],
    )


def _funding_write_orm(batch: list) -> None:
    Resolution.objects.bulk_update(
        [
            Resolution(
                pk=r.pk,
                funding=CREDIT if r.credit_pack_id is not None else OVERAGE,
                credit_pack_id=r.credit_pack_id,
                amount_minor=r.amount_minor,
            )  # fmt: skip
            for r in batch
        ],
        ["funding", "credit_pack", "amount_minor"],
        batch_size=1000,
    )


@twin(_funding_write_orm)
def funding_write(batch: list) -> None:
    """Write the funding of a batch (rows with pk, credit_pack_id and amount_minor; a pack means credit,
    none means overage): one UPDATE ... FROM unnest(arrays), a fraction of bulk_update's CASE per row. The
    three integer columns go as comma-separated text: joining str() of ints costs a fraction of psycopg's
    (pure Python) array dumpers."""
    execute_bound(
        f"""UPDATE {Resolution._meta.db_table} AS r
            SET funding = CASE WHEN v.pack IS NULL THEN %s ELSE %s END,
                credit_pack_id = v.pack, amount_minor = v.amount
            FROM unnest(string_to_array(%s, ',')::bigint[], string_to_array(%s, ',', '')::bigint[],
                        string_to_array(%s, ',')::bigint[]) AS v(id, pack, amount)
            WHERE r.id = v.id""",
        [
            OVERAGE, CREDIT,
            ",".join([str(r.pk) for r in batch]),
            ",".join(["" if r.credit_pack_id is None else str(r.credit_pack_id) for r in batch]),
            ",".join([str(r.amount_minor) for r in batch]),
        ],
    )  # fmt: skip


def _unfunded_counts_orm(account_ids: list[int] | None) -> dict[int, int]:
    marks = dict(FundingProgress.objects.values_list("account_id", "funded_through_id"))
    pending = Resolution.objects.all() if account_ids is None else Resolution.objects.filter(account_id__in=account_ids)
    sizes: dict[int, int] = defaultdict(int)
    for account_id, pk in pending.values_list("account_id", "id"):
        if pk > marks.get(account_id, 0):
            sizes[account_id] += 1
    return dict(sorted(sizes.items()))


@twin(_unfunded_counts_orm)
def unfunded_counts(account_ids: list[int] | None) -> dict[int, int]:
    """Account id -> resolutions past its FundingProgress mark (what funding has not read yet: nearly all
    of them unfunded; the exact count only sizes the groups), in account id order. Per account, a count
    over the (account, id) index from its mark."""
    only = "WHERE a.id = ANY(%s)" if account_ids is not None else ""
    rows = rows_fetch(
        f"""SELECT a.id, c.n FROM {Account._meta.db_table} a
            LEFT JOIN {FundingProgress._meta.db_table} p ON p.account_id = a.id
            CROSS JOIN LATERAL (
                SELECT count(*) AS n FROM {Resolution._meta.db_table} r
                WHERE r.account_id = a.id AND r.id > coalesce(p.funded_through_id, 0)) c
            {only} ORDER BY a.id""",
        [list(account_ids)] if account_ids is not None else [],
    )
    return {account_id: n for account_id, n in rows if n}


# --- Re-pricing a billing period's overage after a void ----------------------------------------------
def _period_overage_rows_orm(account_id: int, starts: dt.datetime, ends: dt.datetime) -> list[tuple]:
    rows = Resolution.objects.filter(
        account_id=account_id, funding=OVERAGE, voided_at=None, resolved_at__gte=starts, resolved_at__lt=ends
    ).order_by("resolved_at", "id")
    return list(rows.values_list("id", "resolved_at", "amount_minor"))


@twin(_period_overage_rows_orm)
def period_overage_rows(account_id: int, starts: dt.datetime, ends: dt.datetime) -> list[tuple]:
    """(id, resolved_at, amount_minor) of the account's non-voided overage resolutions resolved in
    [starts, ends), in (resolved_at, id) order: a range scan of the (account, resolved_at, id) index,
    binary rows."""
    return rows_fetch(
        f"""SELECT id, resolved_at, amount_minor FROM {Resolution._meta.db_table}
            WHERE account_id = %s AND resolved_at >= %s AND resolved_at < %s AND funding = %s AND voided_at IS NULL
            ORDER BY resolved_at, id""",
        [account_id, starts, ends, OVERAGE],
    )


def _resolution_amounts_write_orm(amounts: list[tuple[int, int]]) -> None:
    Resolution.objects.bulk_update(
        [Resolution(pk=pk, amount_minor=amount) for pk, amount in amounts], ["amount_minor"], batch_size=1000
    )


@twin(_resolution_amounts_write_orm)
def resolution_amounts_write(amounts: list[tuple[int, int]]) -> None:
    """Set each (resolution id, amount_minor): one UPDATE ... FROM unnest."""
    if not amounts:
        return
    ids, values = (list(column) for column in zip(*amounts, strict=True))
    execute_bound(
        f"""UPDATE {Resolution._meta.db_table} AS r SET amount_minor = v.amount
            FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, amount) WHERE r.id = v.id""",
        [ids, values],
    )


# --- Rebuilding an account's daily rollups (its timezone changed) -----------------------------------------
def _rollups_rebuild_orm(account_id: int, timezone: str) -> int:
    import zoneinfo

    zone = zoneinfo.ZoneInfo(timezone)
    days: dict[dt.date, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    resolutions = Resolution.objects.filter(account_id=account_id, voided_at=None)
    rows = resolutions.values_list("resolved_at", "funding", "amount_minor", "kind")
    for resolved_at, funding, amount, kind in rows.iterator():
        row = days[resolved_at.astimezone(zone).date()]
        row[0] += 1
        row[1] += funding == CREDIT
        row[2] += funding == OVERAGE
        row[3] += amount
        row[4] += kind == CONFIRMED
    escalations = Conversation.objects.filter(account_id=account_id, escalated_at__isnull=False)
    for escalated_at in escalations.values_list("escalated_at", flat=True).iterator():
        days[escalated_at.astimezone(zone).date()][5] += 1
    DailyUsage.objects.filter(account_id=account_id).delete()
    DailyUsage.objects.bulk_create(
        [
            DailyUsage(
                account_id=account_id,
                date=day,
                resolutions=n,
                credited=c,
                overage=o,
                amount_minor=a,
                confirmed=k,
                escalated=e,
            )
            for day, (n, c, o, a, k, e) in sorted(days.items())
        ],  # fmt: skip
        batch_size=1000,
    )
    return len(days)


@twin(_rollups_rebuild_orm)
def rollups_rebuild(account_id: int, timezone: str) -> int:
    """Replace the account's daily rollups by a recomputation from its non-voided resolutions and its
    escalated conversations, each on its date in `timezone` (the caller holds the account's lock): one
    DELETE, one INSERT ... SELECT grouped by local date. Returns the days written."""
    execute_bound(f"DELETE FROM {DailyUsage._meta.db_table} WHERE account_id = %s", [account_id])
    return execute_bound(
        f"""INSERT INTO {DailyUsage._meta.db_table}
                (account_id, date, resolutions, credited, overage, amount_minor, confirmed, escalated)
            SELECT %s, day, sum(n), sum(c), sum(o), sum(a), sum(k), sum(e) FROM (
                SELECT (resolved_at AT TIME ZONE %s)::date AS day, count(*) AS n,
                       count(*) FILTER (WHERE funding = %s) AS c, count(*) FILTER (WHERE funding = %s) AS o,
                       sum(amount_minor) AS a, count(*) FILTER (WHERE kind = %s) AS k, 0 AS e
                FROM {Resolution._meta.db_table}
                WHERE account_id = %s AND voided_at IS NULL
                GROUP BY day
                UNION ALL
                SELECT (escalated_at AT TIME ZONE %s)::date AS day, 0, 0, 0, 0, 0, count(*)
                FROM {Conversation._meta.db_table}
                WHERE account_id = %s AND escalated_at IS NOT NULL
                GROUP BY day) AS d
            GROUP BY day""",
        [account_id, timezone, CREDIT, OVERAGE, CONFIRMED, account_id, timezone, account_id],
    )


# --- Billing periods' counts from the rollups and their two ragged edges (resolutions/period_counts.py) ---
def _period_usage_sums_orm(plans: list[tuple]) -> dict[int, tuple[int, ...]]:
    import zoneinfo

    from django.db.models import Sum

    keys = ("resolutions", "credited", "overage", "amount_minor", "confirmed", "escalated")
    result: dict[int, tuple[int, ...]] = {}
    for index, (account_id, timezone, days_from, days_to, edges) in enumerate(plans):
        zone = zoneinfo.ZoneInfo(timezone)
        whole = DailyUsage.objects.filter(account_id=account_id, date__gte=days_from, date__lte=days_to).aggregate(
            **{key: Sum(key) for key in keys}
        )
        totals = [whole[key] or 0 for key in keys]
        for sign, lower, upper, day in edges:
            rows = Resolution.objects.filter(
                account_id=account_id, voided_at=None, resolved_at__gte=lower, resolved_at__lt=upper
            ).values_list("resolved_at", "funding", "amount_minor", "kind")
            for resolved_at, funding, amount, kind in rows:
                if resolved_at.astimezone(zone).date() == day:
                    for i, value in enumerate((1, funding == CREDIT, funding == OVERAGE, amount, kind == CONFIRMED)):
                        totals[i] += sign * value
            escalations = Conversation.objects.filter(
                account_id=account_id, escalated_at__gte=lower, escalated_at__lt=upper
            ).values_list("escalated_at", flat=True)
            totals[5] += sign * sum(1 for at in escalations if at.astimezone(zone).date() == day)
        result[index] = tuple(int(value) for value in totals)
    return result


@twin(_period_usage_sums_orm)
def period_usage_sums(plans: list[tuple]) -> dict[int, tuple[int, ...]]:
    """Per plan (account_id, timezone, days_from, days_to, edges), by its index in `plans`: (resolutions,
    credited, overage, amount_minor, confirmed, escalated) of the account, its daily rollups from days_from
    to days_to, plus or minus (sign) each edge's non-voided resolutions and escalated conversations in
    [from, to) whose local date in `timezone` is the edge's date. One statement for every plan, so one
    snapshot: the rollups and the edges agree even while resolutions are written. Each edge is a range
    scan of the (account, resolved_at, id) index and of the partial (account, escalated_at) index: LATERAL
    with OFFSET 0 (so not flattened into a join), since the planner chose a hash join over the whole tables
    once they held a few hundred thousand rows (resolutions/tests/test_query_plans.py)."""
    if not plans:
        return {}
    keys: list[list] = [[], [], [], []]  # index, account, days_from, days_to
    edges: list[list] = [[], [], [], [], [], [], []]  # index, account, timezone, sign, from, to, local date
    for index, (account_id, timezone, days_from, days_to, plan_edges) in enumerate(plans):
        for column, value in zip(keys, (index, account_id, days_from, days_to), strict=True):
            column.append(value)
        for sign, lower, upper, day in plan_edges:
            for column, value in zip(edges, (index, account_id, timezone, sign, lower, upper, day), strict=True):
                column.append(value)
    rows = rows_fetch(
        f"""WITH k AS (
                SELECT * FROM unnest(%s::int[], %s::bigint[], %s::date[], %s::date[])
                    AS k(i, account_id, days_from, days_to)),
            e AS (
                SELECT * FROM unnest(%s::int[], %s::bigint[], %s::text[], %s::int[], %s::timestamptz[],
                                     %s::timestamptz[], %s::date[])
                    AS e(i, account_id, tz, sign, lower_at, upper_at, day))
            SELECT i, sum(n)::bigint, sum(c)::bigint, sum(o)::bigint, sum(a)::bigint, sum(f)::bigint, sum(x)::bigint
            FROM (
                SELECT k.i, d.resolutions AS n, d.credited AS c, d.overage AS o, d.amount_minor AS a,
                       d.confirmed AS f, d.escalated AS x
                FROM k JOIN {DailyUsage._meta.db_table} d
                  ON d.account_id = k.account_id AND d.date >= k.days_from AND d.date <= k.days_to
                UNION ALL
                SELECT e.i, e.sign, e.sign * (r.funding = %s)::int, e.sign * (r.funding = %s)::int,
                       e.sign * r.amount_minor, e.sign * (r.kind = %s)::int, 0
                FROM e CROSS JOIN LATERAL (
                    SELECT funding, amount_minor, kind FROM {Resolution._meta.db_table} r
                    WHERE r.account_id = e.account_id AND r.resolved_at >= e.lower_at AND r.resolved_at < e.upper_at
                      AND r.voided_at IS NULL AND (r.resolved_at AT TIME ZONE e.tz)::date = e.day OFFSET 0) r
                UNION ALL
                SELECT e.i, 0, 0, 0, 0, 0, e.sign
                FROM e CROSS JOIN LATERAL (
                    SELECT 1 FROM {Conversation._meta.db_table} c
                    WHERE c.account_id = e.account_id AND c.escalated_at >= e.lower_at AND c.escalated_at < e.upper_at
                      AND c.escalated_at IS NOT NULL AND (c.escalated_at AT TIME ZONE e.tz)::date = e.day OFFSET 0) c
            ) AS t
            GROUP BY i""",
        [*keys, *edges, CREDIT, OVERAGE, CONFIRMED],
    )
    return {row[0]: tuple(int(value) for value in row[1:]) for row in rows}


def _period_first_versions_orm(keys: list[tuple]) -> dict[int, int]:
    found = {}
    for index, (account_id, starts, ends) in enumerate(keys):
        version_id = (
            Resolution.objects.filter(account_id=account_id, resolved_at__gte=starts, resolved_at__lt=ends)
            .order_by("resolved_at", "id")
            .values_list("plan_version_id", flat=True)[:1]
            .first()
        )
        if version_id is not None:
            found[index] = version_id
    return found


@twin(_period_first_versions_orm)
def period_first_versions(keys: list[tuple]) -> dict[int, int]:
    """Per key (account_id, starts, ends), by its index: the plan version of the account's first resolution
    (voided or not) resolved in [starts, ends), by (resolved_at, id); keys without one are left out. One
    probe of the (account, resolved_at, id) index a key."""
    if not keys:
        return {}
    columns = [list(column) for column in zip(*[(i, *key) for i, key in enumerate(keys)], strict=True)]
    rows = rows_fetch(
        f"""SELECT k.i, (SELECT r.plan_version_id FROM {Resolution._meta.db_table} r
                        WHERE r.account_id = k.account_id AND r.resolved_at >= k.starts AND r.resolved_at < k.ends
                        ORDER BY r.resolved_at, r.id LIMIT 1)
            FROM unnest(%s::int[], %s::bigint[], %s::timestamptz[], %s::timestamptz[])
                AS k(i, account_id, starts, ends)""",
        columns,
    )
    return {index: version_id for index, version_id in rows if version_id is not None}
