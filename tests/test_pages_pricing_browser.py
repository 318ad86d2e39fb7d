"""The admin's pricing workbench in a real browser (Debian's chromium): a price simulation started from its form,
its progress while it waits for a worker, the page updating by itself when the run finishes (htmx polling), the
result's totals, movers chart and table; screenshots at 1280 and 390 px and no console errors."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def priced_world(admin_user):
    """Two accounts on fin-standard v1 ($0.99), each with two closed monthly periods and the current one, and a
    graduated draft. Acme: 6 overage resolutions in the last closed period; Globex: 2 in each closed period."""
    from accounts.models import BillingPeriod, PricePlan
    from accounts.pricing import plan_version_spec_parse
    from accounts.services import price_plan_version_create
    from billing_portal import clock
    from resolutions.tests.test_price_simulation import BASE_SPEC, resolve
    from tests.factories import AccountFactory

    now = clock.now().replace(microsecond=0)
    bounds = [now - dt.timedelta(days=61), now - dt.timedelta(days=31), now - dt.timedelta(days=1),
              now + dt.timedelta(days=29)]  # fmt: skip
    accounts = []
    for name, slug in (("Acme Support", "acme-b"), ("Globex", "globex-b")):
        account = AccountFactory(name=name, slug=slug)
        for start, end in zip(bounds, bounds[1:], strict=False):
            BillingPeriod.objects.create(account=account, start=start, end=end, stripe_subscription_id=f"sub_{slug}")
        accounts.append(account)
    acme, globex = accounts
    resolve(acme, *(bounds[1] + dt.timedelta(days=2, hours=h) for h in range(6)))
    resolve(globex, bounds[0] + dt.timedelta(days=3), bounds[0] + dt.timedelta(days=4))
    resolve(globex, bounds[1] + dt.timedelta(days=3), bounds[1] + dt.timedelta(days=4))
    spec = plan_version_spec_parse({**BASE_SPEC, "tiers_mode": "graduated", "tiers": [
        {"up_to": 3, "unit_amount_decimal": "99"}, {"up_to": "inf", "unit_amount_decimal": "50"}]})  # fmt: skip
    draft = price_plan_version_create(plan=PricePlan.objects.get(slug="fin-standard"), spec=spec, actor=admin_user)
    return {"draft": draft, "acme": acme, "globex": globex}


def test_a_simulation_shows_its_progress_then_its_result(
    live_server, page, admin_user, priced_world, console_errors, screenshot
):
    from resolutions.models import PriceSimulation
    from resolutions.services.simulation import price_simulation_run

    draft = priced_world["draft"]
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(page, live_server.url, admin_user.username)
    page.get_by_role("link", name="Simulations").click()
    page.get_by_role("link", name="Start a simulation").first.click()
    page.get_by_label("Version to simulate").select_option(str(draft.pk))
    page.get_by_label("Past billing periods per account").fill("2")
    page.get_by_role("button", name="Start the simulation").click()
    page.get_by_role("heading", name="Waiting for a worker").wait_for()
    screenshot("pricing-simulation-waiting")

    simulation = PriceSimulation.objects.get()
    assert price_simulation_run(simulation_id=simulation.pk).status == "done"  # what the worker does
    page.get_by_role("heading", name="Totals").wait_for(timeout=10_000)  # the page polls every 2 s
    # Acme: 6 overage in one period: actual 6 × 99 = 594; simulated 3 × 99 + 3 × 50 = 447 (-147, -24.7 %).
    # Globex: 2 + 2 in two periods: actual 396; simulated 396 (the first tier holds 3 a period): no change.
    # Totals: 990 and 843, -147: -14.85 % → -14.8 (half up on the absolute value).
    totals = page.locator("#simulation-totals").inner_text().replace("\u2212", "-")
    assert "$9.90" in totals and "$8.43" in totals and "-14.8 %" in totals, totals
    rows = page.locator("#simulation-rows tbody tr")
    assert rows.count() == 2 and rows.first.inner_text().startswith("Acme Support")
    assert page.get_by_role("img", name="Largest movers").count() == 1
    screenshot("pricing-simulation-result")
    page.set_viewport_size({"width": 390, "height": 800})
    screenshot("pricing-simulation-result-390")
    assert console_errors == []


def test_the_whole_admin_flow_draft_with_tiers_simulate_publish_and_schedule_a_migration(
    live_server, page, admin_user, priced_world, stripe_emulator, settings, console_errors, screenshot
):
    """Draft (two graduated tiers) → simulate it on the accounts' past usage → publish it (Stripe Prices in the
    emulator) → schedule every account on v1 to move to it at their next period start."""
    from accounts.models import PlanMigration, PricePlanVersion
    from resolutions.models import PriceSimulation

    settings.CELERY_TASK_ALWAYS_EAGER = True  # the publish's sync and the simulation run once their change commits
    settings.STRIPE_MAX_RETRIES = 1
    PricePlanVersion.objects.filter(pk=priced_world["draft"].pk).delete()  # this flow makes its own draft
    v1 = priced_world["acme"].plan_version
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(page, live_server.url, admin_user.username)

    # 1. The draft, with tiers as rows.
    page.get_by_role("link", name="Pricing").click()
    page.get_by_role("link", name="New blank draft of Fin Standard").click()
    page.get_by_label("How resolutions are priced").select_option("graduated")
    tiers = page.locator(".tiers-editor")
    tiers.locator("[data-tier='0']").get_by_label("Up to (resolutions)").fill("3")
    tiers.locator("[data-tier='0']").get_by_label("Unit price").fill("99")
    tiers.locator("[data-tier='1']").get_by_label("Unit price").fill("50")
    page.get_by_label("Seat price per seat per month, in minor units").fill("3900")
    page.get_by_label("Seat spend per resolution credit, in minor units").fill("90")
    page.locator("#price-curve path[data-series='draft']").wait_for()
    screenshot("pricing-flow-1-draft")
    page.get_by_role("button", name="Save the draft").click()
    page.wait_for_url("**/staff/pricing/plans/versions/*/")
    draft = PricePlanVersion.objects.get(plan__slug="fin-standard", status="draft")
    assert [(t.up_to, int(t.unit_amount_decimal)) for t in draft.tiers.all()] == [(3, 99), (None, 50)]

    # 2. Simulate it on the last two closed periods of every account.
    page.get_by_role("link", name="Simulate on past usage").click()
    assert page.get_by_label("Version to simulate").input_value() == str(draft.pk)
    page.get_by_label("Past billing periods per account").fill("2")
    page.get_by_role("button", name="Start the simulation").click()
    page.get_by_role("heading", name="Totals").wait_for(timeout=15_000)
    totals = page.locator("#simulation-totals").inner_text().replace("\u2212", "-")
    assert "$9.90" in totals and "$8.43" in totals and "-14.8 %" in totals, totals  # hand-computed above
    assert PriceSimulation.objects.get().status == "done"
    screenshot("pricing-flow-2-simulated")

    # 3. Publish it: its Stripe Prices are created.
    page.goto(f"{live_server.url}/staff/pricing/plans/versions/{draft.pk}/")
    page.get_by_role("link", name="Publish…").click()
    page.get_by_label("Reason (kept in the audit log)").fill("Cheaper past three resolutions")
    page.get_by_role("button", name=f"Publish v{draft.number}").click()
    page.wait_for_url(f"**/staff/pricing/plans/versions/{draft.pk}/")
    page.reload()
    assert "In Stripe" in page.locator("#sync-status").inner_text()
    draft.refresh_from_db()
    assert draft.status == "published" and draft.stripe_price_id
    screenshot("pricing-flow-3-published")

    # 4. Move every account on v1 to it at their next billing-period start.
    page.get_by_role("link", name="Move accounts to it…").click()
    assert page.get_by_label("Move to").input_value() == str(draft.pk)
    page.get_by_label("Which accounts").select_option("version")
    page.get_by_label("Every account now on").select_option(str(v1.pk))
    page.get_by_label("Reason (kept in the audit log)").fill("Cheaper past three resolutions")
    page.get_by_role("button", name="Preview the moves").click()
    page.get_by_role("heading", name="Check each account's start").wait_for()
    screenshot("pricing-flow-4-preview")
    page.get_by_role("button", name="Schedule 2 moves").click()
    page.wait_for_url("**/staff/pricing/migrations/")
    moves = PlanMigration.objects.filter(to_version=draft, status="scheduled")
    assert {m.account.slug for m in moves} == {"acme-b", "globex-b"}
    for move in moves:  # the start of the period after the current one: the current period's end
        assert move.effective_at == move.account.billing_periods.order_by("-start").first().end
    assert page.locator("table").filter(has_text="Acme Support").count() == 1
    screenshot("pricing-flow-5-scheduled")
    assert console_errors == []
