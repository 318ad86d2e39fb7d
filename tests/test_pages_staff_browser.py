"""The account manager's pages in a real browser (Debian's chromium): the book, then every action on the
account page with htmx (convert seats, grant, buy for the customer, void a resolution found by its
conversation id), the page's figures checked against the staff API, the history read as sentences, another
manager's account a 404; screenshots at 1280 and 390 px, no horizontal overflow, no console errors."""

from __future__ import annotations

import datetime as dt
import os
import re
from io import StringIO

import pytest
from django.core.management import call_command

from conftest import SCREENSHOTS
from tests.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def managed_account(stripe_emulator, settings, manager):
    """An account provisioned in the emulator now, with 10 seats, managed by `manager`, with two overage
    resolutions of yesterday (conversations c-101 and c-102)."""
    from accounts.models import PricePlan
    from accounts.services.provisioning import account_provision
    from billing_portal import clock
    from resolutions.ingestion import events_parse
    from resolutions.services import conversation_events_ingest, resolutions_fund

    settings.STRIPE_MAX_RETRIES = 1
    call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
    provisioned = account_provision(
        name="Acme Support", plan=PricePlan.objects.get(slug="fin-standard"), seats=10, actor="test",
        account_manager=manager,
    )  # fmt: skip
    now = clock.now()
    events = []
    for n in (101, 102):
        at = now - dt.timedelta(hours=2, minutes=n - 100)
        events += [
            {"id": f"a{n}", "conversation_id": f"c-{n}", "type": "ai_answer", "occurred_at": at.isoformat()},
            {"id": f"b{n}", "conversation_id": f"c-{n}", "type": "customer_confirmed",
             "occurred_at": (at + dt.timedelta(minutes=1)).isoformat()},
        ]  # fmt: skip
    parsed, errors = events_parse({"events": events}, now=now)
    assert errors == []
    conversation_events_ingest(account=provisioned.account, events=parsed)
    resolutions_fund(now=now)
    return provisioned.account


def overflowing(page) -> list[str]:
    """Elements reaching past the viewport's right edge (wide tables scroll inside their wrapper instead),
    or the page itself if it scrolls sideways: [] when nothing overflows."""
    wide = page.evaluate(
        "[...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.table-wrap'))"
        ".map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).slice(0, 8)"
    )
    if not page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"):
        wide.append("the page scrolls sideways")
    return wide


def api(page, base_url, path):
    response = page.request.get(f"{base_url}/api/v1/{path}")
    assert response.status == 200, response.text()
    return response.json()


def words(locator) -> str:
    """The element's visible text, whitespace (tabs between table cells, line breaks) collapsed."""
    return " ".join(locator.inner_text().split())


def figure(page, name) -> str:
    return page.locator(f"#account-figures [data-figure='{name}']").first.inner_text().strip()


def test_a_manager_converts_grants_buys_and_voids_from_the_account_page(
    live_server, page, manager, managed_account, console_errors, screenshot
):
    from tests.factories import AccountFactory, StaffUserFactory

    theirs = AccountFactory(name="Someone Else's", account_manager=StaffUserFactory(username="other-manager"))
    base, account = live_server.url, managed_account
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(page, base, "manager")
    page.wait_for_url(f"{base}/staff/")

    # The book: this account only, with its spend (10 seats × $39 + 2 overage × $0.99).
    book = page.locator("#book")
    assert book.get_by_role("link", name="Acme Support").is_visible()
    assert "Someone Else's" not in words(book)
    assert "$391.98" in words(book) and "10 seats $390.00 + 2 overage $1.98" in words(book)
    page.get_by_role("link", name="Spend this period").click()  # htmx sorts in place, the URL follows
    page.wait_for_url(re.compile(r".*sort=spend.*"))
    assert page.locator("th[aria-sort='descending']").inner_text().startswith("Spend this period")
    screenshot("staff-book-1280")

    page.get_by_role("link", name="Acme Support").click()
    page.wait_for_url(f"{base}/staff/accounts/{account.pk}/")
    preview = page.locator("#invoice-preview")
    preview.get_by_text("Portal’s total").wait_for()  # loaded with htmx after the page
    assert "Seats (10 × $39.00) $390.00" in words(preview)
    assert figure(page, "seats") == "10" and figure(page, "credits") == "0"

    # 1. Seat conversion: seats, then the preview, then confirm.
    page.get_by_role("link", name="Start a seat conversion").click()
    page.get_by_label("Seats to convert").fill("4")
    page.get_by_role("button", name="Preview the conversion").click()
    card = page.locator("#action-conversion")
    card.locator("[data-preview='conversion']").wait_for()
    assert card.locator("[data-figure='seats-before']").inner_text() == "10"
    assert card.locator("[data-figure='seats-after']").inner_text() == "6"
    credits = int(card.locator("[data-figure='credits']").inner_text().replace(",", ""))
    assert credits > 0
    screenshot("staff-conversion-preview")
    card.get_by_role("button", name=re.compile(r"^Convert 4 seats into")).click()
    card.get_by_text("Converted 4 seats into").wait_for()
    # Functions, not expressions: Playwright evaluates an expression with eval, which the CSP forbids.
    page.wait_for_function("() => document.querySelector(\"#account-figures [data-figure='seats']\").innerText == '6'")
    api_credits = api(page, base, f"staff/accounts/{account.pk}/credits")
    assert api_credits["remaining"] == credits == int(figure(page, "credits").replace(",", ""))

    # 2. Promotional grant, reason required.
    page.get_by_role("link", name="Grant credits").click()
    grant = page.locator("#action-grant")
    grant.get_by_label("Credits (resolutions)").fill("500")
    grant.get_by_role("button", name="Review the grant").click()
    grant.get_by_text("Say why promotional credit is granted").wait_for()  # the plain message, nothing granted
    grant.get_by_label("Reason (required, audited)").fill("launch campaign")
    grant.get_by_role("button", name="Review the grant").click()
    grant.get_by_role("button", name="Grant 500 credits").click()
    grant.get_by_text("Granted 500 promotional credits.").wait_for()
    page.wait_for_function(
        f"() => document.querySelector(\"#account-figures [data-figure='credits']\").innerText.replace(',', '') == "
        f"'{credits + 500}'"
    )
    assert api(page, base, f"staff/accounts/{account.pk}/credits")["remaining"] == credits + 500

    # 3. A pack bought for the customer waits for payment.
    page.get_by_role("link", name="Buy a pack").click()
    purchase = page.locator("#action-purchase")
    purchase.get_by_label(re.compile(r"10,000 resolutions for 365 days")).check()
    purchase.get_by_role("button", name="Review the purchase").click()
    purchase.get_by_role("button", name="Invoice $9,000.00").click()
    purchase.locator("[data-figure='status']").wait_for()
    assert purchase.locator("[data-figure='status']").inner_text() == "Awaiting payment"
    packs = api(page, base, f"staff/accounts/{account.pk}/credits")["packs"]
    assert sorted(p["status"] for p in packs) == ["active", "active", "pending"]

    # 4. Void the resolution of conversation c-101, found by its id.
    page.get_by_role("link", name="Find a resolution").click()
    void = page.locator("#action-void")
    void.get_by_label("Conversation id").fill("c-101")
    void.get_by_role("button", name="Find its resolution").click()
    void.get_by_label("Reason (the customer sees it)").fill("customer dispute")
    void.get_by_role("button", name="Review the void").click()
    void.get_by_role("button", name="Void this resolution").wait_for()
    assert "overage of $0.99" in words(void)
    void.get_by_role("button", name="Void this resolution").click()
    void.get_by_text("Voided the resolution of conversation c-101").wait_for()

    # The history, refreshed in place, reads as sentences.
    page.wait_for_function("() => document.querySelector('ol.audit').innerText.includes('voided the resolution')")
    history = words(page.locator("ol.audit"))
    assert f"manager converted 4 seats into {credits} credits" in history
    assert "manager granted 500 promotional credits: launch campaign" in history
    assert "manager bought a pack of 10,000 credits" in history
    assert "manager voided the resolution of conversation c-101: customer dispute" in history
    assert re.search(r"\d{1,2} \w{3} \d{4} \d{2}:\d{2} UTC", history)  # the manager reads times in UTC, shown
    # The next invoice follows the void (one overage resolution left), reloaded after the action.
    page.wait_for_function(
        "() => document.querySelector('#invoice-preview').innerText.includes('Overage: 1 resolution')"
    )
    screenshot("staff-account-1280")

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.locator("#invoice-preview").get_by_text("Portal’s total").wait_for()
    assert overflowing(page) == []
    screenshot("staff-account-390")
    for part in ("account-figures", "actions-title", "preview-title"):  # readable pieces of the long page
        section = page.locator(f"#{part}") if part == "account-figures" else page.locator(f"section:has(#{part})")
        section.screenshot(path=os.path.join(SCREENSHOTS, f"staff-account-390-{part}.png"))
    page.goto(f"{base}/staff/")
    assert overflowing(page) == []
    screenshot("staff-book-390")

    # Another manager's account is a 404 (asked without navigating, so the 404 is no console error).
    assert page.request.get(f"{base}/staff/accounts/{theirs.pk}/").status == 404
    assert page.request.get(f"{base}/api/v1/staff/accounts/{theirs.pk}/credits").status == 404
    assert (
        os.path.getsize(os.path.join(os.path.dirname(screenshot("staff-book-390")), "staff-account-390.png")) > 10_000
    )
    assert console_errors == []


def test_the_book_searches_and_pages_without_javascript(live_server, browser, admin_user, screenshot):
    from tests.factories import AccountFactory

    for n in range(27):
        AccountFactory(name=f"Shop {n:02d}", slug=f"shop-{n:02d}")
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    base = live_server.url
    log_in(page, base, "finance-admin")
    page.wait_for_url(f"{base}/staff/")
    assert page.locator("#book tbody tr").count() == 25
    page.get_by_role("link", name="Next →").click()
    assert page.locator("#book tbody tr").count() == 2 and "page=2" in page.url
    page.get_by_label("Search by name or slug").fill("shop-0")
    page.get_by_role("button", name="Search").click()
    assert page.locator("#book tbody tr").count() == 10
    page.get_by_role("link", name="Account", exact=True).click()  # the name column again: Z to A
    assert page.locator("#book tbody tr").first.inner_text().startswith("Shop 09")
    screenshot("staff-book-no-js")
    context.close()
