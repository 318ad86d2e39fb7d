"""The Django admin as an admin uses it: dj-stripe's mirrored Stripe objects (filled over HTTP from the Stripe
emulator and its webhooks, as production fills them) list and open without a 500 under the pinned API version
and cannot be added, changed or deleted; the portal's own money, unit prices and credits read formatted."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from decimal import Decimal
from io import StringIO

import pytest
import stripe  # tests sign webhook payloads the way Stripe does
from django.contrib import admin
from django.core.management import call_command
from django.urls import reverse
from djstripe import models as djstripe_models

from accounts.models import Account, CreditPackOffer, PricePlan
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure
from billing_portal import clock, stripe_client
from credits.models import CreditLedgerEntry, CreditPack
from credits.services import credit_pack_grant
from resolutions.models import MeterReport, MeterWindow, Resolution

pytestmark = pytest.mark.django_db

DJSTRIPE_MODELS = sorted(
    (model for model in admin.site._registry if model._meta.app_label == "djstripe"), key=lambda m: m.__name__
)
# What the portal mirrors from Stripe: the emulator's account, provisioning and a pack purchase must fill these.
MIRRORED = {
    "Account", "APIKey", "Customer", "Subscription", "Price", "Product", "Invoice", "LineItem", "Event",
    "WebhookEndpoint", "WebhookEventTrigger",
}  # fmt: skip
RAW_DECIMAL = re.compile(r"\d\.\d{6,}")  # e.g. 90.000000000000


def deliver(client, endpoint, event) -> int:
    payload = json.dumps(event, default=str)
    at = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{at}.{payload}", endpoint.secret)
    return client.post(
        f"/stripe/webhook/{endpoint.djstripe_uuid}/", data=payload, content_type="application/json",
        HTTP_STRIPE_SIGNATURE=f"t={at},v1={signature}",
    ).status_code  # fmt: skip


@pytest.fixture
def stripe_mirror(stripe_emulator, api_client, client):
    """An account provisioned in the emulator that bought a pack, with every event Stripe sent delivered to
    dj-stripe's webhook: customers, subscriptions, prices, products, invoices and their lines mirrored."""
    from tests.factories import BillingAdminFactory

    out = StringIO()
    call_command("create_account", "--name", "Buyer Co", "--plan", "fin-standard", "--seats", "2", "--json", stdout=out)
    account = Account.objects.get(pk=json.loads(out.getvalue())["account_id"])
    endpoint = stripe_webhook_endpoint_ensure(base_url="http://testserver")
    api_client.force_authenticate(BillingAdminFactory(account=account))
    offer = CreditPackOffer.objects.get(version=account.plan_version)
    assert api_client.post("/api/v1/credit-purchases", {"offer_id": offer.pk}, format="json").status_code == 201
    events = stripe_client.call("events", lambda c, o: c.v1.events.list(params={"limit": 100}), idempotency_key=None)
    for event in reversed(events.data):  # oldest first, as Stripe delivers them
        assert deliver(client, endpoint, event.to_dict()) == 200
    client.logout()
    return account


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def changelist_url(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def test_the_invoice_list_shows_what_stripe_has_under_the_pinned_api_version(stripe_mirror, admin_client):
    """dj-stripe's own invoice list read `paid`, which the pinned API version no longer sends: KeyError, 500."""
    invoice = djstripe_models.Invoice.objects.get(stripe_data__metadata__credit_pack_uid__isnull=False)
    assert "paid" not in invoice.stripe_data and invoice.stripe_data["status"] == "paid"
    response = admin_client.get(changelist_url(djstripe_models.Invoice))
    assert response.status_code == 200
    row = next(r for r in response.content.decode().split("<tr") if invoice.stripe_data["number"] in r)
    assert ">paid<" in row and "$9,000.00" in row  # status and the formatted total
    detail = admin_client.get(change_url(invoice))
    assert detail.status_code == 200
    assert "Mirrored from Stripe, read-only" in detail.content.decode()


@pytest.mark.parametrize("model", DJSTRIPE_MODELS, ids=lambda m: m.__name__)
def test_every_djstripe_list_and_page_answers_with_data_present(stripe_mirror, admin_client, model):
    if model.__name__ in MIRRORED:
        assert model.objects.exists(), f"the emulator run should have mirrored a {model.__name__}"
    response = admin_client.get(changelist_url(model))
    assert response.status_code == 200
    for obj in model.objects.all()[:3]:
        page = admin_client.get(change_url(obj))
        assert page.status_code == 200, f"{model.__name__} {obj.pk}"
        assert b'name="_save"' not in page.content  # nothing to save


@pytest.mark.parametrize("model", DJSTRIPE_MODELS, ids=lambda m: m.__name__)
def test_djstripe_objects_cannot_be_added_changed_or_deleted(stripe_mirror, admin_client, model):
    listing = admin_client.get(changelist_url(model)).content.decode()
    add = reverse(f"admin:djstripe_{model._meta.model_name}_add")
    assert f'href="{add}"' not in listing and 'name="action"' not in listing  # no "Add", no bulk actions
    assert admin_client.get(add).status_code == 403
    obj = model.objects.first()
    if obj is None:
        return
    before = model.objects.filter(pk=obj.pk).values().get()
    assert admin_client.post(change_url(obj), {"livemode": "on"}).status_code == 403
    delete = reverse(f"admin:djstripe_{model._meta.model_name}_delete", args=[obj.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=obj.pk).values().get() == before


def test_the_index_lists_stripe_objects_without_add_links(stripe_mirror, admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert changelist_url(djstripe_models.Invoice) in index
    assert not re.search(r'href="/admin/djstripe/[a-z]+/add/"', index)


@pytest.fixture
def billing_rows(account, admin_user):
    """A pack, its grant, a resolution in overage and a meter adjustment, in account `acme` (USD)."""
    now = clock.now()
    pack = credit_pack_grant(
        account=account, quantity=10_000, source=CreditPack.Source.PROMOTIONAL, actor=admin_user,
        unit_amount_decimal=Decimal("90"), reason="launch", expires_at=now + dt.timedelta(days=365),
    )  # fmt: skip
    resolution = Resolution.objects.create(
        account=account, conversation_id="conv-1", kind=Resolution.Kind.CONFIRMED, resolved_at=now,
        plan_version=account.plan_version, funding=Resolution.Funding.OVERAGE, amount_minor=99,
    )  # fmt: skip
    window = MeterWindow.objects.create(
        account=account, start=now, end=now + dt.timedelta(hours=1), period_start=now,
        period_end=now + dt.timedelta(days=30), overage=1234, reported=1234,
    )  # fmt: skip
    report = MeterReport.objects.create(
        account=account, window=window, sequence=0, quantity=-1234, timestamp=now, identifier="mr-1",
        state=MeterReport.State.ADJUSTMENT, adjustment_minor=-122_166,
    )  # fmt: skip
    return pack, resolution, window, report


def test_the_portal_admin_shows_money_and_credits_formatted(billing_rows, admin_client):
    pack, resolution, window, report = billing_rows
    version = PricePlan.objects.get(slug="fin-standard").current_version()
    pages = {
        "versions": admin_client.get(changelist_url(type(version))),
        "version": admin_client.get(change_url(version)),
        "plan": admin_client.get(change_url(version.plan)),
        "packs": admin_client.get(changelist_url(CreditPack)),
        "pack": admin_client.get(change_url(pack)),
        "ledger": admin_client.get(changelist_url(CreditLedgerEntry)),
        "resolutions": admin_client.get(changelist_url(Resolution)),
        "resolution": admin_client.get(change_url(resolution)),
        "reports": admin_client.get(changelist_url(MeterReport)),
        "report": admin_client.get(change_url(report)),
        "windows": admin_client.get(changelist_url(MeterWindow)),
    }
    html = {name: response.content.decode() for name, response in pages.items()}
    assert {name: response.status_code for name, response in pages.items()} == dict.fromkeys(pages, 200)
    for name, text in html.items():
        assert not RAW_DECIMAL.search(text), f"{name}: {RAW_DECIMAL.search(text).group()}"
    assert "$0.99 per resolution" in html["versions"] and "$39.00" in html["versions"]
    assert "$0.90 per credit" in html["version"]  # seat spend per credit
    assert "10,000 credits" in html["version"] and "$9,000.00" in html["version"]  # the offer: credits and price
    assert "$0.99 per resolution" in html["plan"]
    assert "10,000 credits" in html["packs"] and "$0.90 per resolution" in html["pack"]
    assert "+10,000 credits" in html["ledger"]
    assert "$0.99" in html["resolutions"] and "$0.99" in html["resolution"]
    assert "Adjustment (money)" in html["reports"] and "-$1,221.66" in html["reports"]
    assert "Adjustment minor" not in html["report"] and "-$1,221.66" in html["report"]
    assert "-1,234 resolutions" in html["reports"] and "1,234 resolutions" in html["windows"]
    # the meter-report list keeps to a few narrow columns (the error text is on the row's page)
    header = html["reports"].split("<thead>")[1].split("</thead>")[0]
    assert header.count('scope="col"') <= 9 and "Last error" not in header


def test_a_draft_version_form_shows_prices_without_padding_zeros(admin_client, admin_user):
    from accounts.pricing import plan_version_spec_parse
    from accounts.services import price_plan_version_create

    draft = price_plan_version_create(
        plan=PricePlan.objects.get(slug="fin-standard"), actor=admin_user,
        spec=plan_version_spec_parse({
            "currency": "usd", "unit_amount_decimal": "98.5", "inactivity_window": "24:00:00",
            "seat_unit_amount": 3900, "seat_conversion_unit_amount_decimal": "90",
            "effective_from": "2027-01-01T00:00:00Z", "offers": [],
        }),
    )  # fmt: skip
    text = admin_client.get(change_url(draft)).content.decode()
    assert 'name="unit_amount_decimal" value="98.5"' in text
    assert 'name="seat_conversion_unit_amount_decimal" value="90"' in text
