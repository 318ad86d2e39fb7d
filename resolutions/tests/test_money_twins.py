"""Parity of the statements added for late credits, void re-pricing and timezone rebuilds: each
PostgreSQL statement and its ORM twin, run against the same data, return and write the same."""

import datetime as dt

import pytest
from django.db import transaction

from credits import sql as credits_sql
from credits.models import CreditPack
from resolutions import sql
from resolutions.models import DailyUsage, Resolution
from resolutions.services import resolution_void, resolutions_fund
from resolutions.tests.conftest import NOW, event

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


class _Rollback(Exception):
    pass


def both(statement, *args, state):
    """(result, state afterwards) of the SQL twin and of the ORM twin, each rolled back afterwards."""
    outcomes = []
    for version in (statement.sql, statement.orm):
        try:
            with transaction.atomic():
                outcomes.append((version(*args), state()))
                raise _Rollback
        except _Rollback:
            pass
    return outcomes


@pytest.fixture
def mixed(post_events, account, manager, now):
    """Resolutions around midnight in three funding states, one voided, a credit pack partly used."""
    from credits.services import credit_pack_grant

    credit_pack_grant(account=account, quantity=2, source="adjustment", actor="test", starts_at=NOW - dt.timedelta(1))
    events = []
    for i, minutes_ago in enumerate([730, 725, 715, 700, 300, 5]):
        events += [event(f"a{i}", f"c{i}", "ai_answer", minutes_ago + 1),
                   event(f"b{i}", f"c{i}", "customer_confirmed", minutes_ago)]  # fmt: skip
    post_events(*events[:-2])
    resolutions_fund(now=NOW)
    post_events(*events[-2:])  # left unfunded
    resolution_void(resolution=Resolution.objects.get(conversation_id="c3"), actor=manager, reason="dispute")
    return account


def daily(account):
    return sorted(DailyUsage.objects.filter(account=account).values_list("date", "resolutions", "credited", "overage",
                                                                          "amount_minor"))  # fmt: skip


def test_rollups_rebuild_twins_agree(mixed):
    for timezone in ("UTC", "Asia/Tokyo", "America/Los_Angeles", "Asia/Kathmandu"):
        (sql_days, sql_state), (orm_days, orm_state) = both(
            sql.rollups_rebuild, mixed.pk, timezone, state=lambda: daily(mixed)
        )
        assert sql_days == orm_days == len(sql_state) and sql_state == orm_state


def test_period_overage_rows_and_amounts_write_twins_agree(mixed):
    starts, ends = NOW - dt.timedelta(days=3), NOW + dt.timedelta(days=1)
    assert sql.period_overage_rows.sql(mixed.pk, starts, ends) == sql.period_overage_rows.orm(mixed.pk, starts, ends)
    assert len(sql.period_overage_rows.sql(mixed.pk, starts, ends)) == 2  # c2, c4 (c3 voided, c0 and c1 credit)
    ids = list(Resolution.objects.filter(account=mixed).order_by("id").values_list("id", flat=True))
    amounts = [(pk, 7 * i - 3) for i, pk in enumerate(ids)]

    def state():
        return list(Resolution.objects.filter(account=mixed).order_by("id").values_list("id", "amount_minor"))

    (_, sql_state), (_, orm_state) = both(sql.resolution_amounts_write, amounts, state=state)
    assert sql_state == orm_state == amounts


def test_pack_balances_write_twins_agree(mixed):
    pack = CreditPack.objects.get(account=mixed)

    def state():
        return list(CreditPack.objects.order_by("pk").values_list("pk", "remaining", "written_off"))

    (_, sql_state), (_, orm_state) = both(credits_sql.pack_balances_write, [(pack.pk, 0, 1)], state=state)
    assert sql_state == orm_state == [(pack.pk, 0, 1)]
