"""The customer's dashboard in a real browser (Debian's chromium): a busy account in its second Stripe billing
period and a new account, at 1280 px and 390 px wide; the figures against the APIs, Stripe's preview loaded
into its card by htmx, no horizontal overflow, the tables reachable by keyboard, no console errors."""

from __future__ import annotations

import datetime as dt
import os
import random
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import PricePlan
from accounts.services.provisioning import account_provision
from billing_portal import clock
from credits.services import credit_pack_grant
from resolutions.ingestion import events_parse
from resolutions.services import conversation_events_ingest, resolution_windows_finalise, resolutions_fund
from resolutions.services.invoice_preview import invoice_preview_get
from tests.browser import log_in
from tests.factories import BillingAdminFactory, CustomerUserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NOW = dt.datetime(2026, 12, 2, 15, 20, tzinfo=dt.UTC)
DAY, HOUR, MINUTE = dt.timedelta(days=1), dt.timedelta(hours=1), dt.timedelta(minutes=1)
WIDTHS = {"desktop": 1280, "phone": 390}


@pytest.fixture
def frozen_at_now(stripe_emulator):
    stripe_emulator.set_time(int(NOW.timestamp()))
    with clock.frozen(NOW):
        yield NOW


def screenshot_path(name: str) -> str:
    from conftest import SCREENSHOTS

    os.makedirs(SCREENSHOTS, exist_ok=True)
    return os.path.join(SCREENSHOTS, f"{name}.png")


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def busy_account(stripe_emulator, manager):
    """Provisioned 40 days ago (so now is its second Stripe period), 60 days of conversations with a weekly
    rhythm; a 600-credit pack that ran out weeks ago (overage since), and a promotional pack of 300 from
    two days ago that expires in 25 days."""
    started = NOW - 40 * DAY
    stripe_emulator.set_time(int(started.timestamp()))
    with clock.frozen(started):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
        account = account_provision(name="Steady Support", plan=PricePlan.objects.get(slug="fin-standard"), seats=4,
                                    actor="test", account_manager=manager, timezone="America/New_York")  # fmt: skip
        account = account.account
        credit_pack_grant(account=account, quantity=600, source="adjustment", actor="test", reason="annual pack",
                          starts_at=NOW - 60 * DAY, expires_at=NOW + 200 * DAY)  # fmt: skip
    stripe_emulator.set_time(int(NOW.timestamp()))
    with clock.frozen(NOW):
        credit_pack_grant(account=account, quantity=300, source="promotional", actor="test", reason="campaign",
                          starts_at=NOW - 2 * DAY, expires_at=NOW + 25 * DAY)  # fmt: skip
        rng = random.Random(3)
        events, n = [], 0
        for day in range(60, 0, -1):
            weekday = (NOW - day * DAY).weekday()
            for _ in range(rng.randint(18, 26) if weekday < 5 else rng.randint(6, 12)):
                n += 1
                at = NOW - day * DAY + rng.randrange(0, 24 * 60) * MINUTE
                events.append({"id": f"a{n}", "conversation_id": f"c{n}", "type": "ai_answer", "occurred_at": at})
                outcome = rng.random()
                if outcome < 0.55:
                    events.append({"id": f"b{n}", "conversation_id": f"c{n}", "type": "customer_confirmed",
                                   "occurred_at": at + 3 * MINUTE})  # fmt: skip
                elif outcome < 0.75:
                    events.append({"id": f"b{n}", "conversation_id": f"c{n}", "type": "handoff",
                                   "occurred_at": at + 5 * MINUTE})  # fmt: skip
        events.sort(key=lambda e: e["occurred_at"])
        for start in range(0, len(events), 200):  # sent as they happen: a batch at its last event's minute
            batch = events[start : start + 200]
            sent_at = batch[-1]["occurred_at"] + MINUTE
            with clock.frozen(sent_at):
                parsed, errors = events_parse(
                    {"events": [{**e, "occurred_at": e["occurred_at"].isoformat()} for e in batch]}, now=sent_at
                )
                assert errors == []
                conversation_events_ingest(account=account, events=parsed)
        resolution_windows_finalise(now=NOW)
        resolutions_fund(now=NOW)
    return account


def test_busy_account_dashboard_matches_the_apis_on_desktop_and_phone(
    live_server, page, stripe_emulator, manager, console_errors, screenshot, frozen_at_now
):
    account = busy_account(stripe_emulator, manager)
    stripe_emulator.set_time(int(NOW.timestamp()))
    BillingAdminFactory(account=account, username="steady-billing")
    preview = invoice_preview_get(account=account, now=NOW)
    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        if name == "desktop":
            log_in(page, live_server.url, "steady-billing")
        else:
            page.reload()
        page.locator("#stripe-total, #stripe-error").first.wait_for()  # htmx loaded Stripe's preview
        credits = page.request.get(f"{live_server.url}/api/v1/credits").json()
        assert page.locator("#credits-remaining").inner_text() == f"{credits['remaining']:,}"
        assert page.locator("#period-overage").inner_text() == f"{preview['portal']['overage_resolutions']:,}"
        assert page.locator("#period-overage-minor").inner_text() == f"${preview['portal']['overage_minor'] / 100:,.2f}"
        assert page.locator("#invoice-total").inner_text() == f"${preview['portal']['total_minor'] / 100:,.2f}"
        assert f"${preview['stripe']['total_minor'] / 100:,.2f}" in page.locator("#stripe-total").inner_text()
        period_start = page.locator("#billing-period strong").inner_text()
        assert period_start.startswith(
            "23 Nov 2026, 10:20"
        )  # the second period (the first began 23 Oct), New York time
        assert page.get_by_role("img", name="Resolutions per day").is_visible()
        assert page.get_by_role("img", name="Credit burn-down").is_visible()
        assert page.locator("#credits-run-out").is_visible()
        assert no_horizontal_overflow(page), f"horizontal overflow at {width} px"
        assert os.path.getsize(screenshot(f"dashboard-busy-{name}")) > 20_000
        for section in ("period", "credits", "daily"):  # each card at its real size, to look at
            page.locator(f"#{section}").screenshot(path=screenshot_path(f"dashboard-busy-{name}-{section}"))
    # The numbers behind the chart, by keyboard: focus the summary and open it.
    page.locator("#daily summary").focus()
    page.keyboard.press("Enter")
    assert page.locator("#daily-table").is_visible()
    assert page.locator("#daily-table tbody tr").count() == 90
    assert console_errors == []


def test_new_account_dashboard_explains_itself(live_server, page, account, console_errors, screenshot, frozen_at_now):
    CustomerUserFactory(account=account, username="new-viewer")
    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        if name == "desktop":
            log_in(page, live_server.url, "new-viewer")
        else:
            page.reload()
        main = page.inner_text("main")
        assert "No Stripe subscription yet" in main
        assert "No credit packs yet" in main and "No resolutions in the last 90 days" in main
        assert "No upcoming invoice" in main
        assert no_horizontal_overflow(page), f"horizontal overflow at {width} px"
        assert os.path.getsize(screenshot(f"dashboard-new-{name}")) > 10_000
    assert console_errors == []
