"""The invoice preview (DESIGN §3.5, §4), over HTTP against the Stripe emulator: the portal's next invoice
(seats for the next period, this period's overage by tier, credits used) beside Stripe's create_preview of
the subscription, compared after meter reporting, with both clocks frozen at the same instant."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
import stripe  # an outside party sending usage straight to Stripe's meter
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import PricePlan
from accounts.pricing import plan_version_spec_parse
from accounts.services import price_plan_create, price_plan_version_create, price_plan_version_publish
from accounts.services.provisioning import account_provision
from billing_portal import clock
from credits.conversions import seat_conversion_confirm
from resolutions.models import Resolution
from resolutions.rating import GRADUATED, VOLUME, PriceTerms, Tier
from resolutions.services import resolution_void
from resolutions.services.invoice_preview import _tier_lines
from resolutions.services.metering import meter_reports_run
from tests.emulator_world import EmulatorWorld, ts
from tests.test_api_robustness import assert_one_shape

pytestmark = pytest.mark.django_db

START = dt.datetime(2026, 11, 2, 9, 30, 15, tzinfo=dt.UTC)  # the subscription starts mid-minute
PERIOD_END = dt.datetime(2026, 12, 2, 9, 30, 15, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
ROOT = Path(__file__).resolve().parents[2]


def url(account_id) -> str:
    return f"/api/v1/staff/accounts/{account_id}/invoice-preview"


@pytest.fixture
def tiered_plan(admin_user):
    """Two resolutions for a flat $5, then $1.005 each (a half cent: rounding per line shows)."""
    plan = price_plan_create(slug="fin-tiered", name="Fin Tiered", actor=admin_user)
    version = price_plan_version_create(
        plan=plan, actor=admin_user,
        spec=plan_version_spec_parse({
            "currency": "usd", "tiers_mode": "graduated", "inactivity_window": "24:00:00", "seat_unit_amount": 2500,
            "seat_conversion_unit_amount_decimal": "90", "effective_from": "2026-01-01T00:00:00Z",
            "tiers": [{"up_to": 2, "unit_amount_decimal": "0", "flat_amount": 500},
                      {"up_to": "inf", "unit_amount_decimal": "100.5"}]}),
    )  # fmt: skip
    price_plan_version_publish(version=version, actor=admin_user)
    return plan


@pytest.fixture
def provision(stripe_emulator, settings, api_client, manager):
    """An account provisioned in the emulator at START (its Stripe period starts then), managed by
    `manager`, with ways to resolve conversations, report to the meter and ask for the preview, each with
    the portal's clock and the emulator's at the same instant."""
    settings.STRIPE_MAX_RETRIES = 1
    stripe_emulator.set_time(ts(START))
    with clock.frozen(START):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())

    def make(plan=None, seats=3):
        with clock.frozen(START):
            provisioned = account_provision(
                name="Preview Co", plan=plan or PricePlan.objects.get(slug="fin-standard"), seats=seats,
                actor="test", account_manager=manager,
            )  # fmt: skip
        return World(provisioned, stripe_emulator, api_client, manager)

    return make


class World(EmulatorWorld):
    def __init__(self, provisioned, emulator, api_client, manager):
        super().__init__(provisioned, emulator, api_client)
        self.manager = manager

    def report(self, now: dt.datetime):
        with self.at(now):
            return meter_reports_run(now=now, account_ids=[self.account.pk])

    def preview(self, now: dt.datetime, user=None) -> dict:
        self.api.force_authenticate(user or self.manager)
        with self.at(now):
            response = self.api.get(url(self.account.pk))
        self.api.force_authenticate(None)
        assert response.status_code == 200, response.content
        return response.json()


def overage_shares() -> int:
    return sum(Resolution.objects.filter(voided_at__isnull=True).values_list("amount_minor", flat=True))


def test_flat_plan_lags_before_reporting_and_agrees_to_the_cent_after(provision):
    world = provision(seats=3)
    world.resolve(START + 40 * MINUTE, START + 50 * MINUTE, START + 2 * HOUR)  # 10:10, 10:20, 11:30

    before = world.preview(START + 2 * HOUR + 5 * MINUTE)  # nothing reported yet: Stripe has the seats only
    assert before["portal"] == {"seats_minor": 11700, "overage_resolutions": 3, "overage_minor": 297,
                                "total_minor": 11997}  # fmt: skip
    assert before["stripe"] == {"total_minor": 11700}
    assert before["agrees"] is False and before["difference_minor"] == -297
    assert before["breakdown"]["meter"]["awaiting_report"] == 3
    assert "3 overage resolution(s) of this period are not in Stripe's meter yet" in before["note"]
    assert "compare after reporting" in before["note"]

    assert world.report(START + 3 * HOUR).confirmed == 2  # the 10:00 and 11:00 windows have closed
    after = world.preview(START + 3 * HOUR)
    assert {k: after[k] for k in ("account_id", "currency", "period_start", "period_end", "portal", "stripe",
                                  "agrees")} == {  # fmt: skip
        "account_id": world.account.pk, "currency": "usd",
        "period_start": "2026-11-02T09:30:15Z", "period_end": "2026-12-02T09:30:15Z",
        "portal": {"seats_minor": 11700, "overage_resolutions": 3, "overage_minor": 297, "total_minor": 11997},
        "stripe": {"total_minor": 11997}, "agrees": True,
    }  # fmt: skip
    assert after["difference_minor"] == 0 and overage_shares() == 297
    breakdown = after["breakdown"]
    assert breakdown["overage_tiers"] == [
        {"tier": None, "first_unit": 1, "last_unit": None, "quantity": 3, "unit_amount_decimal": "99",
         "flat_amount": 0, "amount_minor": 297},
    ]  # fmt: skip
    assert breakdown["seats"] == {
        "quantity": 3, "unit_amount": 3900, "amount_minor": 11700,
        "period_start": "2026-12-02T09:30:15Z", "period_end": "2027-01-02T09:30:15Z",  # seats bill the next period
    }  # fmt: skip
    assert breakdown["meter"]["reported_resolutions"] == 3 and breakdown["meter"]["awaiting_report"] == 0
    assert (breakdown["credited_resolutions"], breakdown["unfunded_resolutions"]) == (0, 0)
    assert breakdown["stripe_subscription_id"] == world.subscription
    assert sorted((line["quantity"], line["amount_minor"]) for line in breakdown["stripe_lines"]) == [
        (3, 297), (3, 11700)]  # fmt: skip
    assert "every overage resolution of this period is in Stripe's meter" in after["note"]
    previews = [r for r in world.emulator.requests.list() if r["path"] == "/v1/invoices/create_preview"]
    assert len(previews) == 2 and previews[-1]["params"] == {"subscription": world.subscription}
    # No key of the portal's: Stripe would replay the first answer to a repeated key (a stale preview).
    assert previews[0]["idempotency_key"] != previews[1]["idempotency_key"]


def test_graduated_plan_is_priced_by_tier_with_one_rounding_per_line(provision, tiered_plan):
    world = provision(plan=tiered_plan, seats=2)
    world.resolve(*(START + (40 + i) * MINUTE for i in range(5)))
    world.report(START + 2 * HOUR)
    preview = world.preview(START + 2 * HOUR)
    # 2 in the first tier ($5 flat) + 3 × 100.5 = 301.5 → 302; seats 2 × $25 for the next period.
    assert preview["portal"] == {"seats_minor": 5000, "overage_resolutions": 5, "overage_minor": 802,
                                 "total_minor": 5802}  # fmt: skip
    assert preview["stripe"] == {"total_minor": 5802} and preview["agrees"] is True
    assert overage_shares() == 802  # the resolutions' shares sum to the period's charge
    assert preview["breakdown"]["overage_tiers"] == [
        {"tier": 1, "first_unit": 1, "last_unit": 2, "quantity": 2, "unit_amount_decimal": "0", "flat_amount": 500,
         "amount_minor": 500},
        {"tier": 2, "first_unit": 3, "last_unit": None, "quantity": 3, "unit_amount_decimal": "100.5",
         "flat_amount": 0, "amount_minor": 302},
    ]  # fmt: skip


def test_after_a_void_the_correction_reaches_stripe_and_the_period_is_repriced(provision, tiered_plan, manager):
    world = provision(plan=tiered_plan, seats=2)
    world.resolve(*(START + (40 + i) * MINUTE for i in range(5)))
    world.report(START + 2 * HOUR)
    with world.at(START + 2 * HOUR + 5 * MINUTE):
        resolution_void(resolution=Resolution.objects.order_by("id").first(), actor=manager, reason="dispute")

    pending = world.preview(START + 2 * HOUR + 5 * MINUTE)  # the -1 correction is not sent yet
    assert pending["portal"]["overage_resolutions"] == 4 and pending["portal"]["overage_minor"] == 701
    assert pending["stripe"]["total_minor"] == 5802 and pending["difference_minor"] == 101
    assert pending["breakdown"]["meter"]["awaiting_report"] == -1 and "taking back 1 voided" in pending["note"]

    world.report(START + 2 * HOUR + 10 * MINUTE)
    preview = world.preview(START + 2 * HOUR + 10 * MINUTE)
    # 500 + 2 × 100.5 = 701: the void takes the tier-2 unit off and the period is re-priced.
    assert preview["portal"] == {"seats_minor": 5000, "overage_resolutions": 4, "overage_minor": 701,
                                 "total_minor": 5701}  # fmt: skip
    assert preview["stripe"] == {"total_minor": 5701} and preview["agrees"] is True
    assert overage_shares() == 701
    assert [t["quantity"] for t in preview["breakdown"]["overage_tiers"]] == [2, 2]


def test_after_a_seat_conversion_seats_drop_and_the_credits_are_used_before_overage(provision, manager):
    world = provision(seats=10)
    with world.at(START + HOUR):
        conversion = seat_conversion_confirm(account=world.account, seats=4, actor=manager)
    assert conversion.status == "done" and conversion.credits > 3
    world.resolve(START + 2 * HOUR, START + 2 * HOUR + MINUTE, START + 2 * HOUR + 2 * MINUTE)
    world.report(START + 4 * HOUR)
    preview = world.preview(START + 4 * HOUR)
    assert preview["portal"] == {"seats_minor": 6 * 3900, "overage_resolutions": 0, "overage_minor": 0,
                                 "total_minor": 23400}  # fmt: skip
    assert preview["stripe"] == {"total_minor": 23400} and preview["agrees"] is True
    assert preview["breakdown"]["credited_resolutions"] == 3
    assert preview["breakdown"]["seats"]["quantity"] == 6


def test_a_meter_event_the_portal_did_not_send_makes_them_disagree_by_its_price(provision, settings):
    world = provision(seats=1)
    world.resolve(START + 40 * MINUTE, START + 50 * MINUTE)
    world.report(START + 2 * HOUR)
    outsider = stripe.StripeClient(settings.STRIPE_SECRET_KEY, base_addresses={"api": world.emulator.url})
    with world.at(START + 2 * HOUR):
        outsider.v1.billing.meter_events.create({
            "event_name": settings.STRIPE_METER_EVENT_NAME, "identifier": "not-from-the-portal",
            "timestamp": ts(START + 90 * MINUTE), "payload": {"stripe_customer_id": world.customer, "value": "1"},
        })  # fmt: skip
    preview = world.preview(START + 2 * HOUR)
    assert preview["portal"]["total_minor"] == 3900 + 198
    assert preview["stripe"]["total_minor"] == 3900 + 297
    assert preview["agrees"] is False and preview["difference_minor"] == 99
    assert preview["breakdown"]["meter"]["awaiting_report"] == 0  # the portal has sent all it has


# --- The command ------------------------------------------------------------------------------------------
def test_the_command_prints_the_same_object_as_the_api(provision, admin_user):
    world = provision(seats=2)
    world.resolve(START + 40 * MINUTE)
    world.report(START + 2 * HOUR)
    from_api = world.preview(START + 2 * HOUR, user=admin_user)  # admins see every account
    out = StringIO()
    world.emulator.set_time(ts(START + 2 * HOUR))
    call_command("invoice_preview", "--account", str(world.account.pk), "--now", "2026-11-02T11:30:15Z", "--json",
                 stdout=out)  # fmt: skip
    assert json.loads(out.getvalue()) == from_api and from_api["agrees"] is True
    text = StringIO()
    call_command("invoice_preview", "--account", str(world.account.pk), "--now", "2026-11-02T11:30:15Z", stdout=text)
    assert "They agree to the cent." in text.getvalue() and "$78.99" in text.getvalue()


def test_the_command_refuses_an_unknown_account_and_says_when_stripe_is_down(provision):
    with pytest.raises(CommandError, match=r"No account with id 999999\."):
        call_command("invoice_preview", "--account", "999999", "--json")
    world = provision(seats=1)
    world.emulator.add_fault(path_prefix="/v1/", mode="500", count=50)
    with pytest.raises(CommandError, match="Stripe retrieve subscription failed") as failure:
        call_command("invoice_preview", "--account", str(world.account.pk), "--json", stdout=StringIO())
    assert "\n" not in str(failure.value)


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--account", "1", "--now", "2026-11-02"], "--now"), (["--account", "one"], "--account"), ([], "--account")],
)
def test_bad_options_print_one_line_and_exit_non_zero(args, words):
    env = {**os.environ, "DJANGO_DEBUG": "true", "DJANGO_SETTINGS_MODULE": "billing_portal.settings"}
    done = subprocess.run(
        [sys.executable, "manage.py", "invoice_preview", *args, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr


# --- Who may ask, and what goes wrong --------------------------------------------------------------------
def test_only_the_accounts_manager_or_an_admin_may_see_it(api_client, account, other_account, viewer, billing_admin):
    from tests.factories import StaffUserFactory

    mine, theirs = StaffUserFactory(username="mine"), StaffUserFactory(username="theirs")
    account.account_manager = mine
    account.save()
    other_account.account_manager = theirs
    other_account.save()
    api_client.force_authenticate(theirs)
    (error,) = assert_one_shape(api_client.get(url(account.pk)), 404)  # ids of other accounts leak nothing
    assert error["message"] == "No such account."
    for customer in (viewer, billing_admin):
        api_client.force_authenticate(customer)
        (error,) = assert_one_shape(api_client.get(url(account.pk)), 403)
        assert "account managers and admins" in error["message"]
    api_client.force_authenticate(None)
    assert_one_shape(api_client.get(url(account.pk)), 401)  # not logged in


@pytest.mark.parametrize("account_id", ["999999", "99999999999999999999"])
def test_an_unknown_account_is_404_in_the_one_shape(api_client, admin_user, account_id):
    api_client.force_authenticate(admin_user)
    (error,) = assert_one_shape(api_client.get(url(account_id)), 404)
    assert error["message"] == "No such account."


def test_an_account_without_a_stripe_subscription_has_no_preview(api_client, admin_user, account):
    api_client.force_authenticate(admin_user)
    (error,) = assert_one_shape(api_client.get(url(account.pk)), 404)
    assert "no Stripe subscription" in error["message"]


@pytest.mark.parametrize("path", ["/v1/subscriptions", "/v1/invoices/create_preview"])
def test_stripe_down_is_a_503_in_the_one_shape(provision, path):
    world = provision(seats=1)
    world.emulator.add_fault(path_prefix=path, mode="500", count=50)
    world.api.force_authenticate(world.manager)
    with world.at(START + HOUR):
        (error,) = assert_one_shape(world.api.get(url(world.account.pk)), 503)
    assert "Stripe" in error["message"] and "try again" in error["message"]


def test_the_schema_describes_the_preview(client):
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/staff/accounts/{account_id}/invoice-preview"]["get"]
    assert {"200", "403", "404", "503"} <= set(operation["responses"])
    body = schema["components"]["schemas"]["InvoicePreview"]
    contract = {"account_id", "currency", "period_start", "period_end", "portal", "stripe", "agrees"}
    assert contract <= set(body["properties"])
    assert set(schema["components"]["schemas"]["InvoicePreviewPortal"]["properties"]) == {
        "seats_minor", "overage_resolutions", "overage_minor", "total_minor"}  # fmt: skip


def test_tier_lines_name_the_tier_each_line_prices():
    tiers = (
        Tier(up_to=2, unit_amount_decimal=Decimal(0), flat_amount=500),
        Tier(up_to=10, unit_amount_decimal=Decimal(50)),
        Tier(up_to=None, unit_amount_decimal=Decimal("40.5"), flat_amount=100),
    )
    volume = _tier_lines(11, PriceTerms(unit_amount_decimal=None, tiers_mode=VOLUME, tiers=tiers))
    assert volume == [{"tier": 3, "first_unit": 11, "last_unit": None, "quantity": 11, "unit_amount_decimal": "40.5",
                       "flat_amount": 100, "amount_minor": 546}]  # fmt: skip  # 11 × 40.5 + 100 = 545.5 → 546
    # A period without overage still pays a graduated first tier's flat amount, as Stripe charges it.
    empty = _tier_lines(0, PriceTerms(unit_amount_decimal=None, tiers_mode=GRADUATED, tiers=tiers))
    assert empty == [{"tier": 1, "first_unit": 1, "last_unit": 2, "quantity": 0, "unit_amount_decimal": "0",
                      "flat_amount": 500, "amount_minor": 500}]  # fmt: skip
    graduated = _tier_lines(12, PriceTerms(unit_amount_decimal=None, tiers_mode=GRADUATED, tiers=tiers))
    assert [(t["tier"], t["first_unit"], t["last_unit"], t["quantity"], t["amount_minor"]) for t in graduated] == [
        (1, 1, 2, 2, 500), (2, 3, 10, 8, 400), (3, 11, None, 2, 181)]  # fmt: skip
