"""32 threads funding one account's resolutions from a small pack at once (PostgreSQL, real locks)."""

import datetime as dt
import threading

import pytest
from django.db import connection
from django.db.models import Count

from accounts.defaults import EFFECTIVE_FROM
from billing_portal import clock
from credits.models import CreditLedgerEntry, CreditPack
from credits.selectors import credit_ledger_sum
from credits.services import credit_pack_grant
from resolutions.models import Resolution
from resolutions.services import resolutions_fund

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
NOW = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)


def test_32_threads_never_overdraw_and_fund_each_resolution_once(account):
    with clock.frozen(NOW):  # granted then, not today (the pack expires 30 days after NOW)
        pack = credit_pack_grant(
            account=account, quantity=150, source="adjustment", actor="test",
            starts_at=NOW - dt.timedelta(days=5), expires_at=NOW + dt.timedelta(days=30),
        )  # fmt: skip
    Resolution.objects.bulk_create(
        Resolution(
            account=account,
            conversation_id=f"c{i}",
            kind="confirmed",
            plan_version=account.plan_version,
            resolved_at=NOW - dt.timedelta(minutes=500 - i),
        )
        for i in range(400)
    )  # fixture rows: the ledger under test is the credit side, not the rules
    assert EFFECTIVE_FROM < NOW
    errors, barrier = [], threading.Barrier(32)

    def fund():
        try:
            barrier.wait()
            resolutions_fund(now=NOW)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=fund) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    pack.refresh_from_db()
    assert pack.remaining == 0 == credit_ledger_sum(pack=pack) + 0
    funding = dict(Resolution.objects.values_list("funding").annotate(n=Count("id")))
    assert funding == {"credit": 150, "overage": 250}
    drawdowns = CreditLedgerEntry.objects.filter(kind="drawdown")
    assert drawdowns.count() == 150 and drawdowns.values("idempotency_key").distinct().count() == 150
    # the credits went to the first 150 resolutions in resolved order
    credited = list(Resolution.objects.order_by("resolved_at", "id").values_list("funding", flat=True))
    assert credited == ["credit"] * 150 + ["overage"] * 250
    assert CreditPack.objects.get().remaining >= 0
