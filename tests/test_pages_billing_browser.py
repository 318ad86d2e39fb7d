"""The customer billing admin's pages in a real browser (Debian's chromium through Playwright), against the
Stripe emulator over HTTP: buy a pack (confirm, awaiting payment, paid through Stripe's webhook, active),
set a budget alert (e-mail and banner), create a key (copied with the keyboard, then used against the API),
revoke it (the API answers 401); a viewer sees no actions. Screenshots at 1280 and 390 px wide, no
horizontal overflow, no console errors."""

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from io import StringIO

import pytest
import stripe
from django.core.management import call_command

from accounts.models import Account, ApiKey
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure
from billing_portal import clock, stripe_client
from credits.models import CreditAlert, CreditPack
from tests.browser import log_in
from tests.factories import BillingAdminFactory, CustomerUserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
WIDE, NARROW = {"width": 1280, "height": 900}, {"width": 390, "height": 844}


@pytest.fixture
def shop(stripe_emulator):
    out = StringIO()
    call_command(
        "create_account", "--name", "Steady Co", "--plan", "fin-standard", "--seats", "2", "--json", stdout=out
    )
    account = Account.objects.get(pk=json.loads(out.getvalue())["account_id"])
    admin = BillingAdminFactory(account=account, username="steady-billing", email="billing@steady.example")
    viewer = CustomerUserFactory(account=account, username="steady-viewer")
    return account, admin, viewer


# What sticks out past the viewport, for the failure message.
WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 8)
  .map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right))"""


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def shots(page, screenshot, name, *, check_overflow=True):
    """The page at 1280 px and at 390 px (no horizontal overflow at either), then back to 1280."""
    page.set_viewport_size(WIDE)
    assert no_horizontal_overflow(page) or not check_overflow, name
    screenshot(f"{name}-1280")
    page.set_viewport_size(NARROW)
    assert no_horizontal_overflow(page) or not check_overflow, f"{name} overflows at 390 px: {page.evaluate(WIDEST)}"
    screenshot(f"{name}-390")
    page.set_viewport_size(WIDE)


def api(base_url, path, raw_key):
    """A request with nothing but the API key (no browser session), as a program would send it."""
    request = urllib.request.Request(base_url + path, headers={"Authorization": f"Bearer {raw_key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def deliver_paid(live_url, invoice_id):
    """Stripe's invoice.paid event for the invoice, signed and posted to the portal's webhook endpoint."""
    endpoint = stripe_webhook_endpoint_ensure(base_url=live_url)
    events = stripe_client.call(
        "e", lambda c, o: c.v1.events.list(params={"type": "invoice.paid", "limit": 100}), idempotency_key=None
    ).data
    (event,) = [e.to_dict() for e in events if e.data.object.id == invoice_id]
    payload = json.dumps(event, default=str)
    at = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{at}.{payload}", endpoint.secret)
    request = urllib.request.Request(
        f"{live_url}/stripe/webhook/{endpoint.djstripe_uuid}/", data=payload.encode(), method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": f"t={at},v1={signature}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_billing_admin_buys_a_pack_and_sets_a_budget(live_server, page, shop, console_errors, screenshot, mailoutbox):
    account, admin, _ = shop
    page.set_viewport_size(WIDE)
    log_in(page, live_server.url, "steady-billing")
    page.get_by_role("link", name="Credits").click()
    page.wait_for_url(f"{live_server.url}/portal/credits/")
    assert "No credit packs yet." in page.inner_text("main")
    shots(page, screenshot, "billing-credits-empty")

    page.get_by_role("button", name="Buy Annual 10,000 resolutions: review the purchase").click()
    terms = page.locator("#purchase-terms")
    terms.wait_for()
    text = terms.inner_text()
    for figure in ["10,000", "$0.90", "$9,000.00", "365 days"]:
        assert figure in text, figure
    assert not CreditPack.objects.exists()
    shots(page, screenshot, "billing-credits-confirm")

    page.get_by_role("button", name="Buy for $9,000.00").click()
    page.get_by_text("Purchase of “Annual 10,000 resolutions” started").wait_for()
    pack = CreditPack.objects.get()
    row = page.locator(f"#pack-{pack.pk}")
    assert "Awaiting payment" in row.inner_text() and page.locator("#credits-left").inner_text() == "0"
    shots(page, screenshot, "billing-credits-awaiting-payment")

    deliver_paid(live_server.url, pack.stripe_invoice_id)  # Stripe paid the invoice and says so
    page.reload()
    row = page.locator(f"#pack-{pack.pk}")
    assert "Active" in row.inner_text() and "Awaiting payment" not in row.inner_text()
    credits = page.request.get(f"{live_server.url}/api/v1/credits").json()
    assert credits["remaining"] == 10_000
    assert page.locator("#credits-left").inner_text() == f"{credits['remaining']:,}"
    (api_pack,) = credits["packs"]
    assert api_pack["status"] == "active" and f"{api_pack['granted']:,}" in row.inner_text()
    shots(page, screenshot, "billing-credits-active")

    budget = page.get_by_label("Monthly budget (USD)")
    budget.fill("50.00")
    page.get_by_role("button", name="Save alert settings").click()
    page.get_by_text("Alert settings saved.").wait_for()
    account.refresh_from_db()
    assert account.monthly_budget_minor == 5_000
    assert page.get_by_label("Monthly budget (USD)").input_value() == "50.00"

    bad = page.get_by_label("Monthly budget (USD)")
    bad.fill("12.345")
    page.get_by_role("button", name="Save alert settings").click()
    page.get_by_text("USD amounts have 2 decimal places.").wait_for()
    assert page.get_by_label("Monthly budget (USD)").get_attribute("aria-invalid") == "true"
    account.refresh_from_db()
    assert account.monthly_budget_minor == 5_000  # nothing changed
    shots(page, screenshot, "billing-credits-alert-error")

    from resolutions.services import resolutions_fund

    resolutions_fund(now=clock.now())  # the billing cycle's check: 2 seats at $39 pass the $50 budget
    alert = CreditAlert.objects.get(account=account, kind="budget")
    assert alert.active and alert.spend_minor == 7_800
    assert [m for m in mailoutbox if "Monthly budget passed" in m.subject]
    page.get_by_role("link", name="Dashboard").click()
    banner = page.get_by_text("Monthly budget passed.")
    banner.wait_for()
    assert "$78.00" in page.locator(".banner").first.inner_text()
    # The dashboard is another part of issue 11 (its own 390 px check lives with it): only the banner here.
    shots(page, screenshot, "billing-dashboard-budget-banner", check_overflow=False)
    page.get_by_role("link", name="Credits").click()
    assert "$78.00" in page.locator("#budget-status").inner_text()
    assert console_errors == []


def test_billing_admin_creates_copies_uses_and_revokes_a_key(live_server, page, shop, console_errors, screenshot):
    account, _, _ = shop
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.set_viewport_size(WIDE)
    log_in(page, live_server.url, "steady-billing")
    page.get_by_role("link", name="API keys").click()
    page.wait_for_url(f"{live_server.url}/portal/api-keys/")
    before = ApiKey.objects.filter(account=account).count()  # create_account made the first key
    assert page.locator("tbody tr").count() == before
    shots(page, screenshot, "billing-api-keys")

    # By keyboard, with no name: the form comes back with its error and the focus on the field to mend (not on
    # <body>, where the swap that replaced the focused button would leave it).
    page.get_by_role("button", name="Create key").focus()
    page.keyboard.press("Enter")
    page.locator("#key-name-error").wait_for()
    page.wait_for_function("() => document.activeElement.getAttribute('aria-invalid') === 'true'")  # once settled
    assert page.evaluate("() => document.activeElement.name") == "name"

    page.get_by_label("Name").fill("Production ingestion")
    page.get_by_role("button", name="Create key").focus()
    page.keyboard.press("Enter")
    secret = page.get_by_label("API key")
    secret.wait_for()
    # The panel was redrawn: the focus is on what it now says first, not back at the top of the page.
    page.wait_for_function("() => document.activeElement.id === 'created-title'")
    raw = secret.input_value()
    assert raw.startswith("rbp_") and "it will not be shown again" in page.inner_text("main")
    assert ApiKey.objects.filter(account=account).count() == before + 1

    copy = page.get_by_role("button", name="Copy")
    copy.focus()
    page.keyboard.press("Enter")  # by keyboard
    page.locator("#copy-status").filter(has_text="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == raw
    shots(page, screenshot, "billing-api-key-created")

    today = clock.now().date()
    status, body = api(live_server.url, f"/api/v1/usage?from={today - dt.timedelta(days=6)}&to={today}", raw)
    assert status == 200 and body["currency"] == "usd" and len(body["days"]) == 7

    page.reload()  # shown once: the secret is gone from the page
    assert raw not in page.content()
    page.get_by_role("link", name="Revoke Production ingestion").focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Revoke “Production ingestion”?").wait_for()
    page.wait_for_function("() => document.activeElement.id === 'revoke-title'")  # the question, read out first
    shots(page, screenshot, "billing-api-key-revoke-confirm")
    page.get_by_role("button", name="Revoke the key").click()
    page.get_by_text("is revoked: it no longer works").wait_for()
    row = page.locator("tbody tr", has_text="Production ingestion")
    assert "revoked" in row.inner_text()
    assert page.get_by_role("link", name="Revoke Production ingestion").count() == 0
    shots(page, screenshot, "billing-api-keys-revoked")

    status, body = api(live_server.url, f"/api/v1/usage?from={today}&to={today}", raw)
    assert status == 401 and body["errors"]
    assert console_errors == []


def test_a_viewer_sees_credits_and_keys_without_any_action(live_server, page, shop, console_errors, screenshot):
    from accounts.services import api_key_create
    from credits.services import credit_pack_grant

    account, admin, _ = shop
    credit_pack_grant(account=account, quantity=500, source="promotional", actor=admin, reason="welcome")
    api_key_create(account=account, name="Ingestion", actor=admin)
    page.set_viewport_size(WIDE)
    log_in(page, live_server.url, "steady-viewer")
    page.get_by_role("link", name="Credits").click()
    page.wait_for_url(f"{live_server.url}/portal/credits/")
    assert page.locator("#credits-left").inner_text() == "500"
    assert page.locator("main button").count() == 0 and page.locator("main form").count() == 0
    assert "Only your account's billing admins can buy packs." in page.inner_text("main")
    shots(page, screenshot, "viewer-credits")
    page.get_by_role("link", name="API keys").click()
    page.wait_for_url(f"{live_server.url}/portal/api-keys/")
    assert "Ingestion" in page.inner_text("main")
    assert page.locator("main button").count() == 0 and page.locator("main form").count() == 0
    shots(page, screenshot, "viewer-api-keys")
    assert console_errors == []
