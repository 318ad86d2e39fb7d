"""The credits app's hot statements, each PostgreSQL statement beside its ORM twin (billing_portal.
sql_twins; the parity tests run both on PostgreSQL against the same data)."""

from __future__ import annotations

from django.db import connection

from billing_portal.db import execute_bound
from billing_portal.sql_twins import twin

from .models import CreditLedgerEntry, CreditPack

LEDGER_COLUMNS = ("pack_id", "account_id", "kind", "quantity", "idempotency_key", "created_at")


def _ledger_insert_orm(entries: list[tuple]) -> None:
    CreditLedgerEntry.objects.bulk_create(
        [CreditLedgerEntry(**dict(zip(LEDGER_COLUMNS, row, strict=True))) for row in entries], batch_size=1000
    )


@twin(_ledger_insert_orm)
def ledger_insert(entries: list[tuple]) -> None:
    """Append entries (tuples in LEDGER_COLUMNS order): COPY (one round trip, no per-row ORM cost). The
    unique idempotency keys still hold: a duplicate aborts the whole transaction."""
    statement = f"COPY {CreditLedgerEntry._meta.db_table} ({', '.join(LEDGER_COLUMNS)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for row in entries:
            copy.write_row(row)


def _pack_balances_write_orm(balances: list[tuple[int, int, int]]) -> None:
    for pk, remaining, written_off in balances:
        CreditPack.objects.filter(pk=pk).update(remaining=remaining, written_off=written_off)


@twin(_pack_balances_write_orm)
def pack_balances_write(balances: list[tuple[int, int, int]]) -> None:
    """Set each (pack id, remaining, written_off): one UPDATE ... FROM unnest."""
    pks, remaining, written_off = (list(column) for column in zip(*balances, strict=True))
    execute_bound(
        f"""UPDATE {CreditPack._meta.db_table} AS p SET remaining = v.remaining, written_off = v.written_off
            FROM unnest(%s::bigint[], %s::int[], %s::int[]) AS v(id, remaining, written_off) WHERE p.id = v.id""",
        [pks, remaining, written_off],
    )
