"""The price plan workbench in a real browser (Debian's chromium): an admin starts a blank draft, prices it
with two graduated tiers, sees the validation message beside a bad row as they type (htmx, the services'
parser), fixes it, looks at the price curve beside the current version's, saves, and publishes it; the
publish creates the Stripe Prices in the emulator. Screenshots of each step; no console errors."""

from __future__ import annotations

import pytest

from tests.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_admin_drafts_two_tiers_sees_a_bad_row_saves_and_publishes(
    live_server, page, admin_user, stripe_emulator, settings, console_errors, screenshot
):
    from accounts.models import PricePlanVersion

    settings.CELERY_TASK_ALWAYS_EAGER = True  # the publish's sync task runs once its transaction commits
    settings.STRIPE_MAX_RETRIES = 1
    base = live_server.url
    log_in(page, base, "finance-admin")
    page.get_by_role("link", name="Pricing").click()
    page.wait_for_url("**/staff/pricing/plans/")
    screenshot("price-plans-list")
    page.get_by_role("link", name="New blank draft of Fin Standard").click()
    page.wait_for_url("**/versions/new?copy=none")

    page.get_by_label("How resolutions are priced").select_option("graduated")
    tiers = page.locator(".tiers-editor")
    tier1, tier2 = tiers.locator("[data-tier='0']"), tiers.locator("[data-tier='1']")
    tier1.get_by_label("Up to (resolutions)").fill("1000")
    tier1.get_by_label("Unit price").fill("99")
    tier2.get_by_label("Unit price").fill("7x9")  # a typo in the second row
    error = page.locator("#err-tier-1-unit_amount_decimal")
    error.filter(has_text="is not a number").wait_for()
    assert page.locator("#id_tier-1-unit_amount_decimal").get_attribute("aria-describedby") == (
        "err-tier-1-unit_amount_decimal"
    )
    page.locator("#editor-summary").filter(has_text="to fix before this draft can be saved").wait_for()
    screenshot("price-plan-draft-bad-row")

    # htmx adds and removes a row without losing what was typed
    page.get_by_role("button", name="Add a tier").click()
    page.locator("[data-tier='2']").wait_for()
    assert page.locator("#id_tier-0-up_to").input_value() == "1000"
    page.get_by_role("button", name="Remove tier 3").click()
    page.locator("[data-tier='2']").wait_for(state="detached")

    page.locator("#id_tier-1-unit_amount_decimal").fill("79")
    page.get_by_label("Seat price per seat per month, in minor units").fill("3900")
    page.get_by_label("Seat spend per resolution credit, in minor units").fill("90")
    page.locator("#err-tier-1-unit_amount_decimal:empty").wait_for(state="attached")
    curve = page.locator("#price-curve")
    curve.locator("path[data-series='draft']").wait_for()
    assert curve.locator("path[data-series='current']").count() == 1  # beside v1, the version in force
    # 10,000 resolutions: 1,000 × $0.99 + 9,000 × $0.79 = $8,100.00; v1 charges $0.99 each = $9,900.00
    last = curve.locator("tr[data-quantity='10000'] td")
    assert [last.nth(i).inner_text() for i in range(3)] == ["$8,100.00", "$9,900.00", "-$1,800.00"]
    assert page.locator("#editor-summary").inner_text().strip() == ""
    screenshot("price-plan-draft-curve")

    page.get_by_role("button", name="Save the draft").click()
    page.wait_for_url("**/staff/pricing/plans/versions/*/")
    draft = PricePlanVersion.objects.get(plan__slug="fin-standard", status="draft")
    assert [(t.up_to, int(t.unit_amount_decimal)) for t in draft.tiers.all()] == [(1000, 99), (None, 79)]
    assert "saved" in page.locator(".messages").inner_text()
    screenshot("price-plan-draft-saved")

    page.get_by_role("link", name="Publish…").click()
    page.get_by_label("Reason (kept in the audit log)").fill("Graduated pricing for Q1")
    screenshot("price-plan-publish-confirm")
    page.get_by_role("button", name=f"Publish v{draft.number}").click()
    page.wait_for_url(f"**/staff/pricing/plans/versions/{draft.pk}/")
    assert "is published" in page.locator(".messages").inner_text()
    page.reload()
    assert "In Stripe" in page.locator("#sync-status").inner_text()
    draft.refresh_from_db()
    assert draft.status == "published" and draft.stripe_sync_status == "synced" and draft.stripe_price_id
    screenshot("price-plan-published")
    assert console_errors == []
