"""Buying packs through a Stripe invoice (the emulator over HTTP); activation only by invoice.paid."""

import json
import time
from io import StringIO

import pytest
import stripe  # tests sign webhook payloads the way Stripe does
from django.core.management import call_command

from accounts.models import Account, CreditPackOffer
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure
from billing_portal import stripe_client
from credits.models import CreditLedgerEntry, CreditPack

pytestmark = pytest.mark.django_db


@pytest.fixture
def provisioned(stripe_emulator, api_client):
    out = StringIO()
    call_command("create_account", "--name", "Buyer Co", "--plan", "fin-standard", "--seats", "2", "--json", stdout=out)
    account = Account.objects.get(pk=json.loads(out.getvalue())["account_id"])
    endpoint = stripe_webhook_endpoint_ensure(base_url="http://testserver")
    return account, endpoint


def deliver(client, endpoint, event):
    payload = json.dumps(event, default=str)  # Stripe sends decimals as strings
    at = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{at}.{payload}", endpoint.secret)
    return client.post(
        f"/stripe/webhook/{endpoint.djstripe_uuid}/", data=payload, content_type="application/json",
        HTTP_STRIPE_SIGNATURE=f"t={at},v1={signature}",
    )  # fmt: skip


def invoice_events(type_):
    events = stripe_client.call(
        "e", lambda c, o: c.v1.events.list(params={"type": type_, "limit": 100}), idempotency_key=None
    ).data
    return [e.to_dict() for e in events]


def buy(api_client, account, billing_admin_user):
    api_client.force_authenticate(billing_admin_user)
    offer = CreditPackOffer.objects.get(version=account.plan_version)
    return api_client.post("/api/v1/credit-purchases", {"offer_id": offer.pk}, format="json")


def test_a_pack_is_active_only_once_stripe_says_paid_and_a_replay_grants_nothing(provisioned, api_client, client):
    from tests.factories import BillingAdminFactory

    account, endpoint = provisioned
    response = buy(api_client, account, BillingAdminFactory(account=account))
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending" and body["remaining"] == 0 and body["granted"] == 10_000
    invoice = stripe_client.call(
        "i", lambda c, o: c.v1.invoices.retrieve(body["stripe_invoice_id"]), idempotency_key=None
    )
    assert invoice.status == "paid" and invoice.amount_paid == 900_000  # $9,000.00
    assert invoice.metadata["credit_pack_uid"] == str(CreditPack.objects.get().uid)

    (paid,) = [e for e in invoice_events("invoice.paid") if e["data"]["object"]["id"] == invoice.id]
    assert deliver(client, endpoint, paid).status_code == 200
    assert deliver(client, endpoint, paid).status_code == 200  # replay
    pack = CreditPack.objects.get()
    assert (pack.status, pack.remaining) == ("active", 10_000)
    assert CreditLedgerEntry.objects.filter(kind="grant", pack=pack).count() == 1


def test_a_voided_invoice_cancels_the_pending_pack(provisioned, api_client, client, stripe_emulator, settings):
    from tests.factories import BillingAdminFactory

    account, endpoint = provisioned
    settings.STRIPE_MAX_RETRIES = 0
    stripe_emulator.add_fault(path_prefix="/v1/invoices/", method="POST", mode="500", count=1)  # finalize fails
    outage = buy(api_client, account, BillingAdminFactory(account=account))
    assert outage.status_code == 503 and "completed automatically" in outage.json()["errors"][0]["message"]
    pack = CreditPack.objects.get()
    assert pack.status == "pending" and pack.stripe_invoice_id
    invoice_id = pack.stripe_invoice_id
    stripe_client.call(  # the customer's finance team finalises it by hand, then voids it
        "f",
        lambda c, o: c.v1.invoices.finalize_invoice(invoice_id, params={"auto_advance": False}),
        idempotency_key="t:f",
    )
    stripe_client.call("v", lambda c, o: c.v1.invoices.void_invoice(invoice_id), idempotency_key="t:void")
    (voided,) = invoice_events("invoice.voided")
    deliver(client, endpoint, voided)
    pack.refresh_from_db()
    assert pack.status == "cancelled" and pack.remaining == 0 and not CreditLedgerEntry.objects.exists()


def test_viewers_cannot_buy_and_unknown_offers_are_400(provisioned, api_client):
    from tests.factories import BillingAdminFactory, CustomerUserFactory

    account, _ = provisioned
    api_client.force_authenticate(CustomerUserFactory(account=account))
    assert api_client.post("/api/v1/credit-purchases", {"offer_id": 1}, format="json").status_code == 403
    api_client.force_authenticate(BillingAdminFactory(account=account))
    response = api_client.post("/api/v1/credit-purchases", {"offer_id": 999999}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "offer_id"
    assert not CreditPack.objects.exists()


def test_a_lost_webhook_is_made_up_for_by_billing_tick(provisioned, api_client):
    from tests.factories import BillingAdminFactory

    account, _ = provisioned
    assert buy(api_client, account, BillingAdminFactory(account=account)).status_code == 201
    assert CreditPack.objects.get().status == "pending"  # invoice.paid never arrived
    out = StringIO()
    call_command("billing_tick", "--json", stdout=out)
    assert json.loads(out.getvalue())["packs_activated"] == 1
    pack = CreditPack.objects.get()
    assert (pack.status, pack.remaining) == ("active", 10_000)
    call_command("billing_tick", "--json", stdout=StringIO())
    assert CreditLedgerEntry.objects.filter(kind="grant").count() == 1
