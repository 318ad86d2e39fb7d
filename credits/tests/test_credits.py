"""Credit packs: grants, soonest-expiry draw-down, overage pricing, expiry, give-backs, APIs, command."""

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from billing_portal import clock
from credits.models import CreditLedgerEntry, CreditPack
from credits.selectors import credit_ledger_sum
from credits.services import credit_pack_grant, credit_packs_expire
from resolutions.models import DailyUsage, MeterWindow, Resolution
from resolutions.services import resolution_void, resolutions_fund
from resolutions.tests.conftest import NOW, event

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


def ledger_matches_balances():
    for pack in CreditPack.objects.all():
        assert pack.remaining == credit_ledger_sum(pack=pack) >= 0, pack


def resolve(post_events, n, *, minutes_ago=120, prefix="c"):
    events = []
    for i in range(n):
        events += [event(f"{prefix}a{i}", f"{prefix}{i}", "ai_answer", minutes_ago - i % 50),
                   event(f"{prefix}b{i}", f"{prefix}{i}", "customer_confirmed", minutes_ago - i % 50 - 1)]  # fmt: skip
    for start in range(0, len(events), 1000):
        assert post_events(*events[start : start + 1000]).status_code == 202


def grant(account, quantity, *, source="adjustment", starts=NOW - 10 * DAY, expires=None, reason="test"):
    return credit_pack_grant(
        account=account, quantity=quantity, source=source, actor="test", starts_at=starts, expires_at=expires,
        reason=reason,
    )  # fmt: skip


def test_grant_writes_a_ledger_entry_and_an_audit(account, now):
    pack = grant(account, 500, source="promotional", reason="Q4 goodwill", starts=None)
    assert (pack.status, pack.granted, pack.remaining) == ("active", 500, 500)
    assert pack.expires_at == NOW + dt.timedelta(days=365)
    (entry,) = CreditLedgerEntry.objects.all()
    assert (entry.kind, entry.quantity) == ("grant", 500)
    from accounts.models import AuditLogEntry

    assert AuditLogEntry.objects.get(action="credit_pack.grant").reason == "Q4 goodwill"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"quantity": 0}, "quantity"), ({"quantity": 2.5}, "quantity"), ({"source": "gift"}, "source"),
     ({"expires_at": NOW - DAY}, "expires_at"), ({"starts_at": NOW + DAY, "expires_at": NOW + DAY}, "expires_at"),
     ({"source": "promotional", "reason": ""}, "reason")],
)  # fmt: skip
def test_bad_grants_are_refused_and_change_nothing(account, now, kwargs, field):
    args = {"account": account, "quantity": 10, "source": "adjustment", "actor": "test", "reason": "x", **kwargs}
    with pytest.raises(ValidationError) as info:
        credit_pack_grant(**args)
    assert field in info.value.message_dict
    assert not CreditPack.objects.exists() and not CreditLedgerEntry.objects.exists()


def test_draw_down_takes_the_soonest_expiring_pack_promotional_first_on_ties(post_events, account, now):
    later = grant(account, 5, expires=NOW + 300 * DAY)
    sooner_paid = grant(account, 2, expires=NOW + 30 * DAY)
    sooner_promo = grant(account, 2, source="promotional", expires=NOW + 30 * DAY)
    not_started = grant(account, 50, starts=NOW + DAY, expires=NOW + 60 * DAY)
    resolve(post_events, 7)
    result = resolutions_fund(now=NOW)
    assert (result.credited, result.overage) == (7, 0)
    order = list(Resolution.objects.order_by("resolved_at", "id").values_list("credit_pack_id", flat=True))
    assert order == [sooner_promo.pk] * 2 + [sooner_paid.pk] * 2 + [later.pk] * 3
    not_started.refresh_from_db()
    assert not_started.remaining == 50  # does not cover resolutions from before it started
    ledger_matches_balances()


def test_no_credit_left_means_overage_priced_to_the_cent_per_period(post_events, account, key_client, now):
    grant(account, 3)
    resolve(post_events, 10)
    first, second = resolutions_fund(now=NOW), resolutions_fund(now=NOW)
    assert (first.credited, first.overage, second.credited, second.overage) == (3, 7, 0, 0)
    funded = Resolution.objects.order_by("resolved_at", "id")
    assert [r.funding for r in funded] == ["credit"] * 3 + ["overage"] * 7
    assert all(r.amount_minor == 99 for r in funded[3:])
    usage = key_client.get("/api/v1/usage?from=2026-11-02&to=2026-11-02").json()["totals"]
    assert usage == {"resolutions": 10, "credited": 3, "overage": 7, "amount_minor": 693}
    api = key_client.get("/api/v1/resolutions").json()["results"]
    assert api[0]["funding"] == "credit" and api[0]["pack_id"] is not None and api[0]["amount_minor"] == 0
    assert api[-1] == {**api[-1], "funding": "overage", "pack_id": None, "amount_minor": 99}


def test_overage_shares_of_a_tiered_period_sum_to_stripes_charge(post_events, account, key_client, now, admin_user):
    from accounts.pricing import plan_version_spec_parse
    from accounts.services import price_plan_version_create, price_plan_version_publish
    from resolutions.rating import PriceTerms, price_quantity

    version = price_plan_version_create(
        plan=account.plan_version.plan, actor=admin_user,
        spec=plan_version_spec_parse({
            "currency": "usd", "tiers_mode": "graduated", "inactivity_window": "24:00:00", "seat_unit_amount": 3900,
            "seat_conversion_unit_amount_decimal": "90", "effective_from": "2026-01-01T00:00:00Z",
            "tiers": [{"up_to": 4, "unit_amount_decimal": "99.5"}, {"up_to": "inf", "unit_amount_decimal": "80.25",
                                                                    "flat_amount": 7}]}),
    )  # fmt: skip
    price_plan_version_publish(version=version, actor=admin_user)
    account.plan_version = version
    account.save()
    resolve(post_events, 9)
    resolutions_fund(now=NOW)
    total = sum(Resolution.objects.values_list("amount_minor", flat=True))
    assert total == price_quantity(quantity=9, terms=PriceTerms.from_version(version))
    assert sum(DailyUsage.objects.values_list("amount_minor", flat=True)) == total


def test_expiry_writes_off_the_rest_once_and_reports_breakage(account, now):
    pack = grant(account, 40, expires=NOW + DAY)
    with clock.frozen(NOW + 2 * DAY):
        breakage = credit_packs_expire()
        assert credit_packs_expire() == []
    (item,) = breakage
    assert (item.resolutions, item.pack_id) == (40, pack.pk)
    pack.refresh_from_db()
    assert (pack.status, pack.remaining) == ("expired", 0)
    assert CreditLedgerEntry.objects.get(kind="expiry").quantity == -40
    ledger_matches_balances()


def test_billing_tick_funds_before_it_expires(post_events, account, now):
    grant(account, 5, expires=NOW + 2 * DAY)
    post_events(event("a", "c1", "ai_answer", 60))  # assumed resolution at NOW + 23h, inside the pack's life
    out = StringIO()
    call_command("billing_tick", "--now", (NOW + 3 * DAY).isoformat(), "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert (summary["assumed_resolutions"], summary["credited"], summary["packs_expired"]) == (1, 1, 1)
    assert summary["breakage_resolutions"] == 4


def test_void_gives_the_credit_back_while_the_pack_lives(post_events, account, manager, now):
    pack = grant(account, 2)
    resolve(post_events, 1)
    resolutions_fund(now=NOW)
    resolution = Resolution.objects.get()
    resolution_void(resolution=resolution, actor=manager, reason="dispute")
    pack.refresh_from_db()
    assert pack.remaining == 2 and CreditLedgerEntry.objects.filter(kind="void").count() == 1
    assert not MeterWindow.objects.exists()  # a credit is never metered: nothing to take back from Stripe
    ledger_matches_balances()


def test_void_of_overage_is_taken_back_from_the_meter_but_a_credit_after_expiry_is_not(
    post_events, account, manager, now
):
    grant(account, 1, expires=NOW + DAY)
    resolve(post_events, 2)
    resolutions_fund(now=NOW)
    credited, overage = Resolution.objects.order_by("resolved_at", "id")
    with clock.frozen(NOW + 2 * DAY):
        credit_packs_expire()
        resolution_void(resolution=credited, actor=manager, reason="late dispute")
        resolution_void(resolution=overage, actor=manager, reason="dispute")
    # Only the overage was counted for the meter, and its void takes it back (a credit was never metered).
    assert list(MeterWindow.objects.values_list("overage", flat=True)) == [0]
    ledger_matches_balances()


def test_credits_api_shows_packs_and_the_balance(account, key_client, now):
    pack = grant(account, 1200, starts=None)
    grant(account, 5, expires=NOW + DAY)
    body = key_client.get("/api/v1/credits").json()
    assert body["remaining"] == 1205
    assert [p["granted"] for p in body["packs"]] == [5, 1200]
    assert body["packs"][1] == {
        "id": pack.pk, "source": "adjustment", "granted": 1200, "remaining": 1200,
        "starts_at": "2026-11-02T12:00:00Z", "expires_at": "2027-11-02T12:00:00Z", "status": "active",
    }  # fmt: skip


def test_staff_grant_api_is_audited_and_scoped(account, other_account, manager, api_client, now):
    account.account_manager = manager
    account.save()
    api_client.force_authenticate(manager)
    ok = api_client.post(
        f"/api/v1/staff/accounts/{account.pk}/credit-grants", {"quantity": 100, "reason": "sorry"}, format="json"
    )
    assert ok.status_code == 201 and ok.json()["remaining"] == 100
    other = api_client.post(
        f"/api/v1/staff/accounts/{other_account.pk}/credit-grants", {"quantity": 100, "reason": "x"}, format="json"
    )
    assert other.status_code == 404
    bad = api_client.post(f"/api/v1/staff/accounts/{account.pk}/credit-grants", {"quantity": 0}, format="json")
    assert bad.status_code == 400 and {e["field"] for e in bad.json()["errors"]} == {"quantity", "reason"}
    assert CreditPack.objects.count() == 1


def test_grant_credits_command_contract(account, now):
    out = StringIO()
    call_command("grant_credits", "--account", str(account.pk), "--quantity", "250", "--json", stdout=out)
    body = json.loads(out.getvalue())
    assert body["remaining"] == 250 and body["expires_at"] == "2027-11-02T12:00:00+00:00"
    assert CreditPack.objects.get(pk=body["pack_id"]).source == "promotional"
    for bad in (["--account", "999999", "--quantity", "1"], ["--account", str(account.pk), "--quantity", "0"],
                ["--account", str(account.pk), "--quantity", "5", "--expires", "2020-01-01T00:00:00Z"],
                ["--account", str(account.pk), "--quantity", "5", "--starts", "tomorrow"]):  # fmt: skip
        with pytest.raises(CommandError):
            call_command("grant_credits", *bad, "--json", stdout=StringIO())
    assert CreditPack.objects.count() == 1
