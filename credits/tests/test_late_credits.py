"""Late resolutions keep their prepaid credit (DESIGN §3.3), and a voided credit of an expired pack joins
that pack's breakage instead of being reversed in Stripe (it was never metered)."""

import datetime as dt

import pytest
from django.db.models import Sum

from billing_portal import clock
from credits.models import CreditLedgerEntry, CreditPack
from credits.services import credit_packs_expire
from resolutions.models import DailyUsage, MeterWindow, Resolution
from resolutions.services import resolution_void, resolutions_fund
from resolutions.tests.conftest import NOW

from .test_credits import grant, ledger_matches_balances, resolve

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)
LATER = NOW + 2 * DAY  # the packs below expire at NOW + 1 day: by then they are written off


def ledger_breakage(pack: CreditPack) -> int:
    """What the ledger says is written off and not taken back: -(expiry entries) - (reclaim entries)."""
    written_off = -(pack.entries.filter(kind="expiry").aggregate(n=Sum("quantity"))["n"] or 0)
    reclaimed = pack.entries.filter(kind="reclaim").aggregate(n=Sum("quantity"))["n"] or 0
    return written_off - reclaimed


def breakage_agrees(account):
    """The cached figure, the selector and the ledger tell the same breakage per pack."""
    from credits.selectors import credit_breakage_list

    by_pack = {b.pack_id: b.resolutions for b in credit_breakage_list(account=account)}
    for pack in CreditPack.objects.filter(account=account):
        assert pack.written_off == ledger_breakage(pack) == by_pack.get(pack.pk, 0) >= 0, pack
    return by_pack


def test_a_late_resolution_takes_its_credit_back_from_an_expired_packs_write_off(post_events, account, now):
    expired = grant(account, 3, expires=NOW + DAY)
    live = grant(account, 1, expires=NOW + 300 * DAY)
    resolve(post_events, 1)
    resolutions_fund(now=NOW)
    assert Resolution.objects.get().credit_pack_id == expired.pk  # expires soonest
    with clock.frozen(LATER):
        (item,) = credit_packs_expire()
        assert (item.pack_id, item.resolutions) == (expired.pk, 2)
        assert ledger_breakage(expired) == 2
        # Four resolutions arrive late: they happened before the pack expired (resolved about NOW - 3 h).
        resolve(post_events, 4, minutes_ago=180, prefix="late")
        result = resolutions_fund(now=LATER)
    assert (result.credited, result.overage) == (3, 1)
    late = list(Resolution.objects.filter(conversation_id__startswith="late").order_by("resolved_at", "id"))
    assert [(r.funding, r.credit_pack_id) for r in late] == [
        ("credit", expired.pk), ("credit", expired.pk), ("credit", live.pk), ("overage", None)
    ]  # fmt: skip
    reclaims = CreditLedgerEntry.objects.filter(kind="reclaim")
    assert sorted(e.idempotency_key for e in reclaims) == sorted(f"reclaim:resolution:{r.pk}" for r in late[:2])
    assert all(e.quantity == 1 and e.pack_id == expired.pk for e in reclaims)
    assert CreditLedgerEntry.objects.filter(kind="drawdown", idempotency_key=f"drawdown:resolution:{late[0].pk}")
    expired.refresh_from_db()
    assert (expired.status, expired.remaining) == ("expired", 0)
    assert breakage_agrees(account) == {}  # breakage shrank by the two credits taken back
    ledger_matches_balances()
    assert sum(DailyUsage.objects.values_list("credited", flat=True)) == 4
    with clock.frozen(LATER):
        assert resolutions_fund(now=LATER) == type(result)(0, 0)  # a second run changes nothing


def test_a_late_resolution_outside_every_packs_validity_is_overage(post_events, account, now):
    with clock.frozen(NOW - DAY):
        grant(account, 3, starts=NOW - DAY, expires=NOW - dt.timedelta(hours=4))  # ends before the resolution
    with clock.frozen(LATER):
        credit_packs_expire()
        resolve(post_events, 1, minutes_ago=180)  # resolved after the pack's end
        assert resolutions_fund(now=LATER).overage == 1
    assert not CreditLedgerEntry.objects.filter(kind="reclaim").exists()
    ledger_matches_balances()


def test_voiding_a_credit_of_an_expired_pack_joins_its_breakage_and_is_never_reversed(
    post_events, account, manager, now
):
    pack = grant(account, 1, expires=NOW + DAY)
    resolve(post_events, 2)
    resolutions_fund(now=NOW)
    credited, overage = Resolution.objects.order_by("resolved_at", "id")
    assert (credited.funding, overage.funding) == ("credit", "overage")
    with clock.frozen(LATER):
        assert [b.resolutions for b in credit_packs_expire()] == [0]
        resolution_void(resolution=credited, actor=manager, reason="late dispute")
        resolution_void(resolution=overage, actor=manager, reason="dispute")
    credited.refresh_from_db()
    overage.refresh_from_db()
    # Only the overage was ever in the meter's count; its void takes it back (the credit was prepaid).
    assert list(MeterWindow.objects.values_list("overage", flat=True)) == [0]
    keys = dict(pack.entries.values_list("idempotency_key", "quantity"))
    assert keys[f"void:resolution:{credited.pk}"] == 1 and keys[f"expiry:resolution:{credited.pk}"] == -1
    assert breakage_agrees(account) == {pack.pk: 1}
    ledger_matches_balances()
    # That credit is still the pack's to give to a late resolution of its validity.
    with clock.frozen(LATER):
        resolve(post_events, 1, minutes_ago=100, prefix="late")
        assert resolutions_fund(now=LATER).credited == 1
    assert breakage_agrees(account) == {}
    ledger_matches_balances()


def test_voiding_a_credit_of_a_pack_past_expiry_not_yet_swept_gives_it_back_for_the_write_off(
    post_events, account, manager, now
):
    pack = grant(account, 2, expires=NOW + DAY)
    resolve(post_events, 1)
    resolutions_fund(now=NOW)
    with clock.frozen(LATER):
        resolution_void(resolution=Resolution.objects.get(), actor=manager, reason="dispute")
        (item,) = credit_packs_expire()
    assert item.resolutions == 2 and not MeterWindow.objects.exists()  # a credit is never metered
    assert breakage_agrees(account) == {pack.pk: 2}
    ledger_matches_balances()
