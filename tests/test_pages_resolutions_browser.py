"""The customer's Resolutions and Invoices pages in a real browser (Debian's chromium): filter in place with htmx,
page through, download the CSV and compare it with GET /api/v1/resolutions, open the invoices and the upcoming
invoice and compare them with Stripe's; screenshots at 1280 and 390 px, no horizontal overflow, no console errors."""

from __future__ import annotations

import csv
import datetime as dt
import os
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import PricePlan
from accounts.services.provisioning import account_provision
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure
from billing_portal import clock, stripe_client
from credits.purchases import credit_pack_purchase
from resolutions.models import Resolution
from resolutions.services import resolution_void
from resolutions.services.invoice_preview import invoice_preview_get
from resolutions.services.metering import meter_reports_run
from resolutions.tests.test_resolution_pages import deliver_invoice_events, resolve
from tests.browser import log_in
from tests.factories import AdminUserFactory, BillingAdminFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

T0 = dt.datetime(2026, 11, 2, 9, 30, 15, tzinfo=dt.UTC)
AFTER = T0 + dt.timedelta(days=30, hours=3)  # the first period ended on 2 Dec at 09:30; Stripe invoiced it
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def world(stripe_emulator, settings, client):
    """A customer a month in: seats, a first period with two overage resolutions (reported, invoiced), a pack
    bought and paid, and 62 resolutions of the new period paid from it (one voided). The clock stays at AFTER."""
    settings.STRIPE_MAX_RETRIES = 1
    stripe_emulator.set_time(int(T0.timestamp()))
    with clock.frozen(T0):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
        endpoint = stripe_webhook_endpoint_ensure(base_url="http://testserver")
        account = account_provision(
            name="Lantern Support", plan=PricePlan.objects.get(slug="fin-standard"), seats=3, actor="test"
        ).account
    user = BillingAdminFactory(account=account, username="lantern-billing", timezone="Europe/Paris")
    first = T0 + dt.timedelta(hours=2)
    stripe_emulator.set_time(int(first.timestamp()))
    resolve(account, [first - 10 * MINUTE, first - 5 * MINUTE], now=first)
    reported = T0 + dt.timedelta(hours=4)
    stripe_emulator.set_time(int(reported.timestamp()))
    with clock.frozen(reported):
        meter_reports_run(now=reported, account_ids=[account.pk])
        credit_pack_purchase(account=account, offer=account.plan_version.offers.first(), actor=user)
        deliver_invoice_events(client, endpoint)  # invoice.paid activates the pack
    stripe_emulator.set_time(int(AFTER.timestamp()))
    resolve(account, [AFTER - n * 7 * MINUTE for n in range(1, 63)], now=AFTER)
    with clock.frozen(AFTER):
        resolution_void(
            resolution=Resolution.objects.filter(account=account, funding="credit").order_by("id").first(),
            actor=AdminUserFactory(username="finance"), reason="Test conversation from the QA team",
        )  # fmt: skip
        deliver_invoice_events(client, endpoint)
    with clock.frozen(AFTER):
        yield account


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def api_resolutions(page, base_url, query: str) -> list[dict]:
    """Every page of GET /api/v1/resolutions, with the browser's session."""
    results, url = [], f"{base_url}/api/v1/resolutions?{query}&limit=1000"
    while url:
        body = page.request.get(url).json()
        results += body["results"]
        url = body["next"]
    return results


def test_customer_filters_pages_exports_and_opens_invoices(live_server, page, world, console_errors, screenshot):
    account = world
    base = live_server.url
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(page, base, "lantern-billing")
    page.get_by_role("link", name="Resolutions").click()
    page.wait_for_url(f"{base}/portal/resolutions/")
    results = page.locator("#resolution-results")
    assert "page 1" in results.inner_text()
    assert results.locator("tbody tr").count() == 50  # 64 in all: two pages
    assert "times in Europe/Paris" in page.inner_text("header")
    screenshot("resolutions-1280")

    page.get_by_role("link", name="Older →").click()
    page.wait_for_url("**page=2**")
    assert "page 2" in results.inner_text() and results.locator("tbody tr").count() == 14
    page.get_by_role("link", name="← Newer").click()
    page.wait_for_url("**page=1**")

    # Filter in place: the first period's days only, confirmed, not voided.
    page.get_by_label("From (day)").fill("2026-11-01")
    page.get_by_label("To (day)").fill("2026-12-02")
    page.get_by_label("Kind").select_option("confirmed")
    page.get_by_label("Voided").select_option("no")
    page.get_by_role("button", name="Show resolutions").click()
    page.wait_for_url("**from=2026-11-01**")
    api = [r for r in api_resolutions(page, base, "from=2026-11-01&to=2026-12-02") if not r["voided"]]
    rows = results.locator("tbody tr")
    assert len(api) == 63  # 2 of November, 62 of 2 December, less the voided one
    assert rows.count() == 50 and "page 1" in results.inner_text()  # newest first: the API's last 50
    shown = [rows.nth(i).locator("code").inner_text() for i in range(50)]
    assert shown == [r["conversation_id"] for r in reversed(api[-50:])]
    assert "Matching resolutions" in results.inner_text()

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    download = download_info.value
    assert download.suggested_filename == "resolutions-lantern-support-2026-11-01-to-2026-12-02-times-utc.csv"
    with open(download.path(), newline="") as handle:
        exported = list(csv.DictReader(handle))
    assert [int(r["id"]) for r in exported] == [r["id"] for r in api]
    assert [r["conversation_id"] for r in exported] == [r["conversation_id"] for r in api]
    assert [r["funding"] for r in exported] == [r["funding"] for r in api]
    assert [round(float(r["amount"]) * 100) for r in exported] == [r["amount_minor"] for r in api]
    assert [r["amount"] for r in exported[:2]] == ["0.99", "0.99"]  # November's two: overage
    assert {r["funding"] for r in exported[2:]} == {"credit"}

    # A viewer's voided filter: the one voided resolution, with its reason.
    page.get_by_label("Voided").select_option("yes")
    page.get_by_label("Kind").select_option("")
    page.get_by_role("button", name="Show resolutions").click()
    page.wait_for_url("**voided=yes**")
    assert results.locator("tbody tr").count() == 1
    assert "Test conversation from the QA team" in results.inner_text()
    screenshot("resolutions-voided-1280")
    page.get_by_label("From (day)").fill("2026-12-05")  # after To: a plain message, nothing listed
    page.get_by_role("button", name="Show resolutions").click()
    page.get_by_role("alert").wait_for()
    assert "The end date is before the start date" in results.inner_text()
    assert results.locator("tbody tr").count() == 0
    screenshot("resolutions-bad-filter-1280")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/portal/resolutions/")
    assert no_horizontal_overflow(page)
    screenshot("resolutions-390")
    top = page.locator("#resolution-results").bounding_box()["y"]
    page.screenshot(  # the first rows, at a size a person can look at
        path=os.path.join(os.path.dirname(screenshot("resolutions-390")), "resolutions-390-rows.png"),
        full_page=True, clip={"x": 0, "y": top - 400, "width": 390, "height": 1100},
    )  # fmt: skip

    # Invoices: Stripe's, mirrored by dj-stripe, and the upcoming one loaded by htmx.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("link", name="Invoices").click()
    page.wait_for_url(f"{base}/portal/invoices/")
    page.locator("#upcoming-total").wait_for()
    preview = invoice_preview_get(account=account, now=AFTER)
    assert page.locator("#upcoming-total").inner_text() == "$117.00" == f"${preview['portal']['total_minor'] / 100:.2f}"
    stripe_invoices = stripe_client.call(
        "list invoices", lambda c, o: c.v1.invoices.list(params={"customer": account.djstripe_customers.get().id}),
        idempotency_key=None,
    ).data  # fmt: skip
    listed = page.locator("li.invoice")
    assert listed.count() == len(stripe_invoices) == 3
    text = page.locator("ol.invoice-list").inner_text()
    for invoice in stripe_invoices:
        assert f"Invoice {invoice.number}" in text
    cycle = next(i for i in stripe_invoices if i.billing_reason == "subscription_cycle")
    cycle_item = listed.filter(has_text=f"Invoice {cycle.number}")
    assert f"${cycle.total / 100:,.2f}" in cycle_item.inner_text() == cycle_item.inner_text()
    assert cycle.total == 3 * 3900 + 2 * 99
    link = cycle_item.get_by_role("link", name="View in Stripe")
    assert link.get_attribute("href") == cycle.hosted_invoice_url and "noopener" in link.get_attribute("rel")
    assert link.get_attribute("target") == "_blank"
    screenshot("invoices-1280")

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.locator("#upcoming-total").wait_for()
    assert no_horizontal_overflow(page)
    assert os.path.getsize(screenshot("invoices-390")) > 10_000
    assert console_errors == []
