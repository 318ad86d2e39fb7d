"""The operations pages in a real browser (Debian's chromium), over the Stripe emulator: an admin logs in, opens
Operations from the nav, reads what needs attention, the meter reports, a reconciliation difference found by a real
run (portal 5, Stripe 7) and resolves it with a note, retries a failed Stripe sync of a price version, registers the
webhook endpoint, sees Stripe's deliveries in the webhook log and their own actions in the audit log. Screenshots of
each page at 1280 px, no console errors."""

from __future__ import annotations

import datetime as dt
import os
import time
from io import StringIO

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from conftest import SCREENSHOTS
from tests.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
T0 = dt.datetime(2026, 11, 2, 12, 0, 30, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(days=1)


@pytest.fixture
def ops_world(stripe_emulator, settings, live_server, admin_user):
    """Alpha Support provisioned at T0; a reconciliation run at T1 found portal 5 against Stripe 7; one meter report
    Stripe rejected; the default price version's last sync failed. Webhooks go to the live server."""
    from accounts.models import PricePlan
    from accounts.services.provisioning import account_provision
    from accounts.services.stripe_catalog import price_plan_version_stripe_sync
    from billing_portal import clock, stripe_client
    from billing_portal.stripe_client import StripeFailure
    from resolutions.models import MeterReport
    from resolutions.services.reconciliation import meter_reconcile
    from resolutions.tests.test_reconciliation import period_of, report, sent, stripe_event

    settings.STRIPE_MAX_RETRIES = 0
    settings.PORTAL_BASE_URL = live_server.url
    settings.CELERY_TASK_ALWAYS_EAGER = True  # "Retry now" runs the sync task here, against the emulator
    stripe_emulator.set_time(int(T0.timestamp()))
    with clock.frozen(T0):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
        alpha = account_provision(name="Alpha Support", plan=PricePlan.objects.get(slug="fin-standard"), seats=1,
                                  actor="test")  # fmt: skip
    stripe_emulator.set_time(int(T1.timestamp()))
    period = period_of(alpha.account)
    sent(alpha, report(alpha.account, period, 1, 5))
    stripe_event(alpha, 2, period[0] + dt.timedelta(hours=2), "stray-1")
    rejected = report(alpha.account, period, 3, 4, state=MeterReport.State.REJECTED)
    MeterReport.objects.filter(pk=rejected.pk).update(last_error="No such customer: 'cus_gone' (resource_missing)")
    with clock.frozen(T1):
        result = meter_reconcile(now=T1)
    assert [(d.portal, d.stripe) for d in result.differences] == [(5, 7)]

    stripe_emulator.set_time(None)  # from here on Stripe's clock is the real one: its webhooks are signed now
    version = PricePlan.objects.get(slug="fin-standard").current_version()
    stripe_emulator.add_fault(path_prefix="/v1/prices", method="GET", mode="500", count=1)
    with pytest.raises(StripeFailure):
        price_plan_version_stripe_sync(version=version)
    version.refresh_from_db()
    assert version.stripe_sync_status == "failed"
    admin_user.timezone = "UTC"
    admin_user.save(update_fields=["timezone"])
    return {"alpha": alpha, "version": version, "stripe_client": stripe_client}


def shot(page, name: str) -> None:
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, f"ops-{name}.png"), full_page=True)


def words(locator) -> str:
    return " ".join(locator.inner_text().split())


def test_an_admin_works_through_the_operations_pages(
    page, live_server, ops_world, admin_user, console_errors, stripe_emulator
):
    from djstripe.models import WebhookEventTrigger

    from accounts.models import AuditLogEntry
    from resolutions.models import MeterReconciliationDifference

    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(page, live_server.url, admin_user.username)
    page.get_by_role("link", name="Operations").click()
    page.wait_for_url("**/staff/ops/")
    attention = words(page.locator("ul.attention"))
    assert "1 Meter reports rejected by Stripe" in attention and "1 Open reconciliation differences" in attention
    assert "1 Price versions whose Stripe sync failed" in attention
    shot(page, "index")

    # meter reports: Stripe's refusal as Stripe said it, filtered to the rejected ones
    page.get_by_role("link", name="Meter reports rejected by Stripe").click()
    table = page.locator("table.ops")
    assert "No such customer: 'cus_gone' (resource_missing)" in words(table)
    assert page.locator("tr[data-report]").count() == 1
    page.get_by_label("State").select_option("")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("tr[data-report]")).to_have_count(2)  # waits for the filtered page to load
    shot(page, "meter-reports")

    # reconciliation: both figures, resolved with a note
    page.locator("nav.ops-nav").get_by_role("link", name="Reconciliation").click()
    row = page.locator("tr[data-difference]")
    assert "Alpha Support" in words(row) and "+2 Stripe counts more" in words(row) and "Open" in words(row)
    shot(page, "reconciliation")
    row.get_by_role("link", name="Resolve").click()
    page.get_by_role("button", name="Resolve with this note").click()  # no note: the browser asks for one first
    assert page.get_by_label("Note").evaluate("e => e.validity.valueMissing") is True
    assert "/resolve" in page.url and MeterReconciliationDifference.objects.get().resolved_at is None
    page.get_by_label("Note").fill("Stripe's 2 extra are a test event; credit note CN-0042 issued.")
    shot(page, "difference-resolve")
    page.get_by_role("button", name="Resolve with this note").click()
    page.wait_for_url("**/staff/ops/reconciliation/")
    assert "is resolved" in words(page.locator("body"))
    assert "by finance-admin: “Stripe's 2 extra are a test event; credit note CN-0042 issued.”" in words(row)
    difference = MeterReconciliationDifference.objects.get()
    assert difference.resolved_by == admin_user and difference.resolution_key
    shot(page, "reconciliation-resolved")

    # Stripe sync: the failed version retried (the task runs against the emulator), the endpoint registered
    page.goto(f"{live_server.url}/staff/ops/stripe-sync/")
    version_row = page.locator(f"tr[data-version='{ops_world['version'].pk}']")
    assert "Failed (will be retried)" in words(version_row) and "find price" in words(version_row)
    shot(page, "stripe-sync-failed")
    version_row.get_by_role("button", name="Retry now").click()
    page.wait_for_load_state()
    assert "is queued again" in words(page.locator("body"))
    assert "In Stripe" in words(page.locator(f"tr[data-version='{ops_world['version'].pk}']"))
    assert "No webhook endpoint is registered yet" in words(page.locator("body"))
    page.get_by_role("button", name="Register the webhook endpoint again").click()
    page.wait_for_load_state()
    assert "is registered in Stripe for" in words(page.locator("body"))
    assert "this portal" in words(page.locator("tr[data-endpoint]"))
    shot(page, "stripe-sync")

    # webhooks: a customer changed in Stripe reaches the portal, and the log shows the delivery processed
    client = ops_world["stripe_client"]
    client.call(
        "update customer",
        lambda c, o: c.v1.customers.update(ops_world["alpha"].stripe_customer_id, params={"name": "Alpha Support Ltd"},
                                           options=o),
        idempotency_key="ops-browser:update",
    )  # fmt: skip
    assert stripe_emulator.webhooks.wait_idle(timeout=20)
    deadline = time.monotonic() + 10
    while not WebhookEventTrigger.objects.filter(processed=True).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    page.locator("nav.ops-nav").get_by_role("link", name="Webhook log").click()
    page.get_by_label("Event type").fill("customer.")
    page.get_by_role("button", name="Show").click()
    log = words(page.locator("table.ops"))
    assert "customer.updated" in log and "Processed" in log
    shot(page, "webhooks")

    # the audit log: this admin's three actions, before and after readable
    page.locator("nav.ops-nav").get_by_role("link", name="Audit log").click()
    page.get_by_label("Actor").fill(admin_user.username)
    page.get_by_role("button", name="Show").click()
    entries = page.locator("li[data-entry]")
    assert entries.count() == AuditLogEntry.objects.filter(actor=admin_user).count() == 3
    resolve_entry = page.locator("li[data-entry]", has_text="meter_difference.resolve")
    resolve_entry.locator("summary").click()
    assert "resolved at changed" in words(resolve_entry) and "portal 5 5" in words(resolve_entry)
    shot(page, "audit")

    assert [e for e in console_errors if "favicon" not in e] == []
