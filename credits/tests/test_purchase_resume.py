"""Purchases are one resumable row (pending -> invoice_created -> item_added -> finalized -> paid | void): a lost
Stripe answer, a retry with the same Idempotency-Key, the billing cycle and an expired Stripe key never make a
second invoice, a second line or a second pack. Late payments of cancelled packs activate them, flagged."""

import json
import logging
import time
from io import StringIO

import pytest
import stripe
from django.core.management import call_command

from accounts.models import Account, AuditLogEntry, CreditPackOffer
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure
from billing_portal import clock, stripe_client
from credits.models import CreditLedgerEntry, CreditPack
from tests.factories import BillingAdminFactory

pytestmark = pytest.mark.django_db
DAY = 24 * 3600


@pytest.fixture
def buyer(stripe_emulator, api_client, settings):
    out = StringIO()
    call_command("create_account", "--name", "Buyer Co", "--plan", "fin-standard", "--seats", "2", "--json", stdout=out)
    account = Account.objects.get(pk=json.loads(out.getvalue())["account_id"])
    api_client.force_authenticate(BillingAdminFactory(account=account))
    settings.STRIPE_MAX_RETRIES = 0  # a fault is the answer the portal sees
    return account


def buy(api_client, account, key=None):
    offer = CreditPackOffer.objects.get(version=account.plan_version)
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api_client.post("/api/v1/credit-purchases", {"offer_id": offer.pk}, format="json", **headers)


def our_invoices(account):
    from djstripe.models import Customer

    customer = Customer.objects.get(subscriber=account)
    invoices = stripe_client.call(
        "list", lambda c, o: c.v1.invoices.list(params={"customer": customer.id, "limit": 100}), idempotency_key=None
    ).data
    return [i for i in invoices if (i.metadata or {}).get("credit_pack_uid")]


def lines(invoice_id):
    return stripe_client.call(
        "lines", lambda c, o: c.v1.invoices.line_items.list(invoice_id, params={"limit": 100}), idempotency_key=None
    ).data


def test_a_lost_finalize_answer_then_a_retry_with_the_same_key_is_one_invoice_one_pack_paid_once(
    buyer, api_client, stripe_emulator
):
    stripe_emulator.add_fault(path_prefix="/v1/invoices/", method="POST", mode="500_after_record", count=1)
    lost = buy(api_client, buyer, key="buy-1")
    assert lost.status_code == 503
    message = lost.json()["errors"][0]["message"]
    pack = CreditPack.objects.get()
    assert f"pack {pack.pk}" in message and "saved" in message and "same Idempotency-Key" in message
    assert "Nothing was charged twice" not in message
    retry = buy(api_client, buyer, key="buy-1")
    assert retry.status_code == 201 and retry.json()["id"] == pack.pk
    (invoice,) = our_invoices(buyer)
    assert invoice.status == "paid" and invoice.amount_paid == 900_000 and len(lines(invoice.id)) == 1
    assert CreditPack.objects.count() == 1
    assert sum(i.amount_paid for i in our_invoices(buyer)) == 900_000
    pack.refresh_from_db()
    assert pack.stripe_invoice_id == invoice.id and pack.purchase_state == "finalized"


def test_a_double_submit_with_the_same_key_is_one_pack(buyer, api_client, stripe_emulator):
    first, second = buy(api_client, buyer, key="dbl"), buy(api_client, buyer, key="dbl")
    assert first.status_code == second.status_code == 201 and first.json() == second.json()
    assert CreditPack.objects.count() == 1 and len(our_invoices(buyer)) == 1
    assert buy(api_client, buyer).status_code == 201  # without a key, a second purchase is a second purchase
    assert CreditPack.objects.count() == 2


def test_the_service_with_one_key_continues_the_same_purchase(buyer, stripe_emulator):
    from credits.purchases import credit_pack_purchase

    offer = CreditPackOffer.objects.get(version=buyer.plan_version)
    first = credit_pack_purchase(account=buyer, offer=offer, actor="test", idempotency_key="svc-1")
    again = credit_pack_purchase(account=buyer, offer=offer, actor="test", idempotency_key="svc-1")
    assert first.pk == again.pk and CreditPack.objects.count() == 1 and len(our_invoices(buyer)) == 1


def test_the_cycle_resumes_a_purchase_left_at_invoice_created(buyer, api_client, stripe_emulator):
    from credits.purchases import credit_purchases_resume

    stripe_emulator.add_fault(path_prefix="/v1/invoiceitems", method="POST", mode="500", count=1)
    outage = buy(api_client, buyer)
    assert outage.status_code == 503 and "completed automatically" in outage.json()["errors"][0]["message"]
    pack = CreditPack.objects.get()
    assert pack.purchase_state == "invoice_created" and pack.stripe_invoice_id
    result = credit_purchases_resume(now=clock.now())
    # continued to the end, then (no webhook came) the paid invoice seen in Stripe activates the pack
    assert (result.continued, result.activated, result.failed) == (1, 1, 0)
    (invoice,) = our_invoices(buyer)
    assert invoice.id == pack.stripe_invoice_id and invoice.status == "paid" and len(lines(invoice.id)) == 1
    pack.refresh_from_db()
    assert (pack.status, pack.remaining, pack.purchase_state) == ("active", 10_000, "paid")
    assert credit_purchases_resume(now=clock.now()).activated == 0
    assert CreditLedgerEntry.objects.filter(kind="grant").count() == 1


def test_a_resume_days_later_finds_the_invoice_stripe_already_has(buyer, api_client, stripe_emulator):
    """The invoice was created but its answer lost; Stripe's 24-hour idempotency key has expired by the
    resume, so only looking at the customer's invoices keeps it from creating a second one."""
    from credits.purchases import credit_purchases_resume

    stripe_emulator.add_fault(path_prefix="/v1/invoices", method="POST", mode="500_after_record", count=1)
    assert buy(api_client, buyer).status_code == 503
    pack = CreditPack.objects.get()
    assert pack.purchase_state == "pending" and not pack.stripe_invoice_id
    stripe_emulator.set_time(int(time.time()) + 3 * DAY)
    credit_purchases_resume(now=clock.now())
    (invoice,) = our_invoices(buyer)
    pack.refresh_from_db()
    assert pack.stripe_invoice_id == invoice.id and len(lines(invoice.id)) == 1


def test_a_resume_days_later_finds_the_line_stripe_already_has(buyer, api_client, stripe_emulator):
    from credits.purchases import credit_purchases_resume

    stripe_emulator.add_fault(path_prefix="/v1/invoiceitems", method="POST", mode="500_after_record", count=1)
    assert buy(api_client, buyer).status_code == 503
    stripe_emulator.set_time(int(time.time()) + 3 * DAY)
    credit_purchases_resume(now=clock.now())
    (invoice,) = our_invoices(buyer)
    assert len(lines(invoice.id)) == 1 and invoice.amount_due == 900_000


def test_a_5xx_answer_is_not_kept_so_a_retry_re_enters(buyer, api_client, stripe_emulator):
    from accounts.models import IdempotencyKey

    stripe_emulator.add_fault(path_prefix="/v1/invoiceitems", method="POST", mode="500", count=1)
    assert buy(api_client, buyer, key="k5").status_code == 503
    assert not IdempotencyKey.objects.exists()
    assert buy(api_client, buyer, key="k5").status_code == 201
    assert IdempotencyKey.objects.count() == 1 and CreditPack.objects.count() == 1


def test_purchases_for_a_closed_account_are_refused(buyer, api_client):
    Account.objects.filter(pk=buyer.pk).update(status=Account.Status.CLOSED)
    response = buy(api_client, buyer)
    assert response.status_code == 400 and "closed" in response.json()["errors"][0]["message"]
    assert not CreditPack.objects.exists()


# --- webhooks --------------------------------------------------------------------------------------------
def deliver(client, endpoint, event):
    payload = json.dumps(event, default=str)
    at = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{at}.{payload}", endpoint.secret)
    return client.post(
        f"/stripe/webhook/{endpoint.djstripe_uuid}/", data=payload, content_type="application/json",
        HTTP_STRIPE_SIGNATURE=f"t={at},v1={signature}",
    )  # fmt: skip


def events_of(type_):
    events = stripe_client.call(
        "e", lambda c, o: c.v1.events.list(params={"type": type_, "limit": 100}), idempotency_key=None
    ).data
    return [e.to_dict() for e in events]


def test_invoice_paid_for_a_cancelled_pack_activates_it_flagged_for_review(buyer, api_client, client):
    endpoint = stripe_webhook_endpoint_ensure(base_url="http://testserver")
    assert buy(api_client, buyer).status_code == 201
    pack = CreditPack.objects.get()
    (paid,) = [e for e in events_of("invoice.paid") if e["data"]["object"]["id"] == pack.stripe_invoice_id]
    from credits.purchases import credit_pack_invoice_event_apply

    uncollectible = {**paid, "id": "evt_uncollectible", "type": "invoice.marked_uncollectible"}  # came first
    credit_pack_invoice_event_apply(event=uncollectible)
    pack.refresh_from_db()
    assert pack.status == "cancelled"
    assert deliver(client, endpoint, paid).status_code == 200
    pack.refresh_from_db()
    assert (pack.status, pack.remaining, pack.needs_review) == ("active", 10_000, True)
    assert pack.stripe_invoice_id in pack.review_note and "cancelled" in pack.review_note
    entry = AuditLogEntry.objects.get(action="credit_pack.activate_after_cancel")
    assert entry.before["status"] == "cancelled" and entry.after["status"] == "active"
    assert deliver(client, endpoint, paid).status_code == 200  # a replay grants nothing more
    assert CreditLedgerEntry.objects.filter(kind="grant", pack=pack).count() == 1


def test_invoice_paid_for_an_unknown_pack_is_logged_at_error_and_recorded(db, caplog):
    from credits.purchases import credit_pack_invoice_event_apply

    event = {
        "id": "evt_1", "type": "invoice.paid",
        "data": {"object": {"id": "in_ghost", "status": "paid",
                            "metadata": {"credit_pack_uid": "00000000-0000-0000-0000-000000000000"}}},
    }  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="credits.purchases"):
        assert credit_pack_invoice_event_apply(event=event) is None
    assert any(r.levelno == logging.ERROR and "in_ghost" in r.getMessage() for r in caplog.records)
    assert AuditLogEntry.objects.filter(action="credit_pack.invoice_paid_unknown_pack", object_id="in_ghost").exists()


def test_the_admin_lists_packs_that_need_review(admin_client, account):
    from credits.services import credit_pack_grant

    pack = credit_pack_grant(account=account, quantity=5, source="adjustment", actor="test", reason="x")
    CreditPack.objects.filter(pk=pack.pk).update(needs_review=True, review_note="paid after cancel")
    page = admin_client.get("/admin/credits/creditpack/?needs_review__exact=1")
    assert page.status_code == 200 and "paid after cancel" in page.content.decode()
