"""The credits page through Django's test client, against the Stripe emulator over HTTP: packs and balance
for both roles; buying a pack (choose, confirm, once per drawn form, awaiting payment until Stripe says
paid); alert settings (threshold, monthly budget) and the budget alert they drive."""

import datetime as dt
import json
import re
import time
from io import StringIO

import pytest
import stripe
from django.core.management import call_command

from accounts.models import Account, AuditLogEntry, CreditPackOffer
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure
from billing_portal import clock, stripe_client
from credits.budget import account_alert_settings_update
from credits.models import CreditAlert, CreditPack
from tests.factories import BillingAdminFactory, CustomerUserFactory

pytestmark = pytest.mark.django_db
PAGE = "/portal/credits/"


@pytest.fixture
def provisioned(stripe_emulator):
    out = StringIO()
    call_command("create_account", "--name", "Buyer Co", "--plan", "fin-standard", "--seats", "2", "--json", stdout=out)
    return Account.objects.get(pk=json.loads(out.getvalue())["account_id"])


@pytest.fixture
def buyer(provisioned):
    return BillingAdminFactory(account=provisioned, username="buyer", email="buyer@buyer.example")


def form_key(html: str) -> str:
    return re.search(r'name="idempotency_key" value="([0-9a-f]{32})"', html).group(1)


def stripe_invoices(account):
    customer_id = account.djstripe_customers.get().id
    data = stripe_client.call(
        "l", lambda c, o: c.v1.invoices.list(params={"customer": customer_id, "limit": 100}), idempotency_key=None
    ).data
    return [i for i in data if (i.metadata or {}).get("credit_pack_uid")]


def deliver_paid(client, invoice_id):
    endpoint = stripe_webhook_endpoint_ensure(base_url="http://testserver")
    events = stripe_client.call(
        "e", lambda c, o: c.v1.events.list(params={"type": "invoice.paid", "limit": 100}), idempotency_key=None
    ).data
    (event,) = [e.to_dict() for e in events if e.data.object.id == invoice_id]
    payload = json.dumps(event, default=str)
    at = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{at}.{payload}", endpoint.secret)
    response = client.post(
        f"/stripe/webhook/{endpoint.djstripe_uuid}/", data=payload, content_type="application/json",
        HTTP_STRIPE_SIGNATURE=f"t={at},v1={signature}",
    )  # fmt: skip
    assert response.status_code == 200


def test_a_new_account_explains_its_empty_packs(client, billing_admin):
    client.force_login(billing_admin)
    page = client.get(PAGE).content.decode()
    assert "No credit packs yet." in page and "billed as overage" in page
    assert "10,000 resolutions at $0.90 each, $9,000.00 in all, valid 365 days." in page
    assert "Buy this pack…" in page and "Save alert settings" in page


def test_viewers_see_packs_and_settings_without_any_action(client, viewer):
    from credits.services import credit_pack_grant

    credit_pack_grant(account=viewer.account, quantity=250, source="promotional", actor="t", reason="welcome")
    client.force_login(viewer)
    page = client.get(PAGE).content.decode()
    assert "Promotional" in page and "250" in page and 'id="credits-left">250<' in page
    assert "<form" not in page.split('<main id="main">')[1]
    assert "Buy this pack" not in page and "Only your account's billing admins can buy packs." in page
    assert "below 20 % of the active packs" in page and "none set" in page


def test_viewers_cannot_post_a_purchase_or_settings(client, provisioned):
    viewer = CustomerUserFactory(account=provisioned)
    offer = CreditPackOffer.objects.get(version=provisioned.plan_version)
    client.force_login(viewer)
    assert client.post("/portal/credits/buy", {"offer": offer.pk, "idempotency_key": "a" * 32}).status_code == 302
    assert client.post("/portal/credits/alerts", {"threshold_percent": 5, "budget": "10"}).status_code == 302
    assert not CreditPack.objects.exists()
    provisioned.refresh_from_db()
    assert provisioned.low_credit_threshold_percent == 20 and provisioned.monthly_budget_minor is None


def test_buying_a_pack_confirms_then_awaits_payment_then_is_active(client, provisioned, buyer, api_client):
    offer = CreditPackOffer.objects.get(version=provisioned.plan_version)
    client.force_login(buyer)
    confirm = client.get(f"/portal/credits/buy?offer={offer.pk}")
    html = confirm.content.decode()
    assert confirm.status_code == 200 and "Confirm your purchase" in html
    terms = re.search(r'<dl class="terms" id="purchase-terms">(.*?)</dl>', html, re.S).group(1)
    for text in ["10,000", "$0.90", "$9,000.00", "365 days"]:
        assert text in terms, text
    assert not CreditPack.objects.exists()  # the confirm step changes nothing

    key = form_key(html)
    response = client.post("/portal/credits/buy", {"offer": offer.pk, "idempotency_key": key})
    assert response.status_code == 302 and response["Location"] == PAGE
    again = client.post("/portal/credits/buy", {"offer": offer.pk, "idempotency_key": key})  # a double submit
    assert again.status_code == 302
    pack = CreditPack.objects.get()
    assert pack.status == "pending" and pack.idempotency_key == key
    assert len(stripe_invoices(provisioned)) == 1

    page = client.get(PAGE).content.decode()
    row = re.search(rf'<tr id="pack-{pack.pk}">(.*?)</tr>', page, re.S).group(1)
    assert "Awaiting payment" in row and "10,000" in row
    assert 'id="credits-left">0<' in page

    deliver_paid(client, pack.stripe_invoice_id)
    page = client.get(PAGE).content.decode()
    row = re.search(rf'<tr id="pack-{pack.pk}">(.*?)</tr>', page, re.S).group(1)
    assert "Active" in row and "Awaiting payment" not in row
    api_client.force_authenticate(buyer)
    remaining = api_client.get("/api/v1/credits").json()["remaining"]
    assert remaining == 10_000 and f'id="credits-left">{remaining:,}<' in page
    assert AuditLogEntry.objects.filter(action="credit_pack.purchase", actor=buyer).count() == 1


def test_htmx_purchase_answers_the_panel_with_the_message(client, provisioned, buyer):
    offer = CreditPackOffer.objects.get(version=provisioned.plan_version)
    client.force_login(buyer)
    confirm = client.get(f"/portal/credits/buy?offer={offer.pk}", HTTP_HX_REQUEST="true").content.decode()
    assert confirm.strip().startswith('<div id="credits-panel">') and "<html" not in confirm
    response = client.post(
        "/portal/credits/buy", {"offer": offer.pk, "idempotency_key": form_key(confirm)}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert "Purchase of “Annual 10,000 resolutions” started: Stripe has the invoice" in html
    assert "Awaiting payment" in html


def test_stripe_unreachable_says_the_purchase_finishes_by_itself_and_it_does(
    client, provisioned, buyer, stripe_emulator, settings
):
    offer = CreditPackOffer.objects.get(version=provisioned.plan_version)
    settings.STRIPE_MAX_RETRIES = 0
    stripe_emulator.add_fault(path_prefix="/v1/invoices", method="POST", mode="500", count=1)  # creating fails
    client.force_login(buyer)
    key = form_key(client.get(f"/portal/credits/buy?offer={offer.pk}").content.decode())
    page = client.post("/portal/credits/buy", {"offer": offer.pk, "idempotency_key": key}, follow=True)
    html = page.content.decode()
    assert "Stripe could not be reached" in html and "finished automatically" in html
    assert "no need to buy it again" in html
    pack = CreditPack.objects.get()
    assert pack.status == "pending" and pack.purchase_state == "pending"

    out = StringIO()
    call_command("billing_tick", "--json", stdout=out)  # the billing cycle resumes the purchase
    pack.refresh_from_db()
    assert (pack.status, pack.remaining) == ("active", 10_000)
    assert len(stripe_invoices(provisioned)) == 1


def test_an_offer_of_another_plan_is_refused_and_buys_nothing(client, provisioned, buyer):
    from accounts.models import PricePlan, PricePlanVersion

    plan = PricePlan.objects.create(slug="other", name="Other")
    version = PricePlanVersion.objects.create(
        plan=plan, number=1, inactivity_window=dt.timedelta(hours=24), seat_unit_amount=100,
        seat_conversion_unit_amount_decimal=1, effective_from=clock.now(), unit_amount_decimal=99,
    )  # fmt: skip
    foreign = CreditPackOffer.objects.create(version=version, name="Cheap", resolutions=5, unit_amount_decimal=1)
    client.force_login(buyer)
    assert client.get(f"/portal/credits/buy?offer={foreign.pk}").status_code == 404
    assert client.get("/portal/credits/buy?offer=abc").status_code == 404
    response = client.post("/portal/credits/buy", {"offer": foreign.pk, "idempotency_key": "b" * 32})
    assert response.status_code == 400 and "not on sale on your plan" in response.content.decode()
    assert not CreditPack.objects.exists()


def test_alert_settings_are_saved_in_minor_units_and_audited(client, billing_admin):
    client.force_login(billing_admin)
    response = client.post("/portal/credits/alerts", {"threshold_percent": "15", "budget": "1,500.00"})
    assert response.status_code == 302
    account = Account.objects.get(pk=billing_admin.account_id)
    assert (account.low_credit_threshold_percent, account.monthly_budget_minor) == (15, 150_000)
    entry = AuditLogEntry.objects.get(action="account.alert_settings")
    assert entry.actor == billing_admin and entry.after == {"low_credit_threshold_percent": 15,
                                                            "monthly_budget_minor": 150_000}  # fmt: skip
    page = client.get(PAGE).content.decode()
    assert 'value="1,500.00"' in page and 'value="15"' in page

    client.post("/portal/credits/alerts", {"threshold_percent": "15", "budget": ""})  # blank: no budget
    account.refresh_from_db()
    assert account.monthly_budget_minor is None


@pytest.mark.parametrize(
    ("threshold", "budget", "message"),
    [
        ("0", "100", "Enter a threshold from 1 to 99 %."),
        ("100", "100", "Enter a threshold from 1 to 99 %."),
        ("ten", "100", "Enter a whole number from 1 to 99."),
        ("20", "12.345", "USD amounts have 2 decimal places."),
        ("20", "-5", "Enter an amount such as 1,500.00"),
        ("20", "0", "Enter an amount above zero"),
        ("20", "1,50", "Enter an amount such as 1,500.00"),
    ],
)
def test_bad_alert_settings_are_explained_and_change_nothing(client, billing_admin, threshold, budget, message):
    client.force_login(billing_admin)
    response = client.post("/portal/credits/alerts", {"threshold_percent": threshold, "budget": budget})
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html and 'aria-invalid="true"' in html
    account = Account.objects.get(pk=billing_admin.account_id)
    assert (account.low_credit_threshold_percent, account.monthly_budget_minor) == (20, None)
    assert not AuditLogEntry.objects.filter(action="account.alert_settings").exists()


def test_the_budget_alert_is_told_once_per_period_and_cleared_by_a_higher_budget(
    client, provisioned, buyer, manager, mailoutbox, django_capture_on_commit_callbacks
):
    """Two seats at $39 are $78 of spend as the period starts: a $50 budget is passed."""
    from resolutions.services import resolutions_fund

    provisioned.account_manager = manager
    provisioned.save()
    manager.email = "am@example.com"
    manager.save()
    client.force_login(buyer)
    client.post("/portal/credits/alerts", {"threshold_percent": "20", "budget": "50"})
    with django_capture_on_commit_callbacks(execute=True):
        resolutions_fund()  # the cycle's funding step: the changed budget is due for a check
    alert = CreditAlert.objects.get(kind="budget")
    assert alert.active and alert.spend_minor == 7_800 and alert.budget_minor == 5_000
    (mail,) = mailoutbox
    assert "Monthly budget passed" in mail.subject and {"buyer@buyer.example", "am@example.com"} <= set(mail.to)
    assert "$78.00" in mail.body and "$50.00" in mail.body
    dashboard = client.get("/portal/").content.decode()
    assert "Monthly budget passed." in dashboard and "seats $78.00" in dashboard

    with django_capture_on_commit_callbacks(execute=True):
        resolutions_fund()
        resolutions_fund()
    assert len(mailoutbox) == 1  # once per period

    client.post("/portal/credits/alerts", {"threshold_percent": "20", "budget": "100"})  # above the spend
    alert.refresh_from_db()
    assert not alert.active and "Monthly budget passed." not in client.get("/portal/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        resolutions_fund()
    alert.refresh_from_db()
    assert not alert.active and alert.budget_minor == 10_000

    client.post("/portal/credits/alerts", {"threshold_percent": "20", "budget": "60"})  # passed again
    alert.refresh_from_db()
    assert alert.active and len(mailoutbox) == 1  # the banner again, but no second e-mail this period

    with clock.frozen(alert.period_end + dt.timedelta(days=1)), django_capture_on_commit_callbacks(execute=True):
        resolutions_fund()  # a new period (Stripe's renewal, projected from the anchor) can alert again
    alert.refresh_from_db()
    assert alert.active and alert.period_start >= alert.raised_at - dt.timedelta(days=1)
    assert len(mailoutbox) == 2


def test_the_period_spend_is_the_dashboards_overage_money_plus_seats(provisioned, buyer, api_client):
    """The budget's spend (reporting windows, no scan of resolutions) against the dashboard's figure."""
    from accounts.services import api_key_create
    from resolutions.selectors import billing_period_overage_get, billing_period_spend_list
    from resolutions.services import resolutions_fund

    _, raw = api_key_create(account=provisioned, name="bot", actor=buyer)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    now = clock.now()
    events = []
    for i in range(37):
        at = now - dt.timedelta(minutes=200 - i)
        events += [
            {"id": f"a{i}", "conversation_id": f"c{i}", "type": "ai_answer", "occurred_at": at.isoformat()},
            {"id": f"b{i}", "conversation_id": f"c{i}", "type": "customer_confirmed",
             "occurred_at": (at + dt.timedelta(minutes=1)).isoformat()},
        ]  # fmt: skip
    assert api_client.post("/api/v1/conversation-events", {"events": events}, format="json").status_code == 202
    resolutions_fund(now=now)
    spend = billing_period_spend_list(account_ids=[provisioned.pk], now=now)[provisioned.pk]
    dashboard = billing_period_overage_get(account=provisioned, now=now)
    assert dashboard["overage"] == 37 and spend.overage_minor == dashboard["amount_minor"] == 37 * 99
    assert spend.seats_minor == 2 * 3_900 and spend.period_end == dashboard["end"]


def test_the_settings_service_refuses_out_of_range_values(account):
    from django.core.exceptions import ValidationError

    for threshold, budget in [(0, None), (100, None), (True, None), (20, 0), (20, -1), (20, 10**16)]:
        with pytest.raises(ValidationError):
            account_alert_settings_update(account=account, threshold_percent=threshold, budget_minor=budget, actor="t")
    account.refresh_from_db()
    assert (account.low_credit_threshold_percent, account.monthly_budget_minor) == (20, None)
