"""Pages in a real browser: log in per role, look at the page, keyboard-only login, no console errors."""

import os

import pytest

from conftest import PASSWORD
from tests.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_customer_logs_in_and_sees_plan_and_keys(live_server, page, billing_admin, console_errors, screenshot):
    log_in(page, live_server.url, "acme-billing")
    page.wait_for_url(f"{live_server.url}/portal/")
    assert page.get_by_role("heading", name="Acme Support").is_visible()
    assert page.get_by_role("heading", name="API keys").is_visible()
    assert "$0.99" in page.inner_text("main")
    assert os.path.getsize(screenshot("customer-home")) > 10_000
    assert console_errors == []


def test_wrong_password_is_announced(live_server, page, viewer, screenshot):
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("acme-viewer")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    alert = page.get_by_role("alert")
    assert "correct username and password" in alert.inner_text()
    assert page.get_by_label("Password").get_attribute("aria-invalid") == "true"
    screenshot("login-error")


def test_login_works_with_the_keyboard_alone(live_server, page, manager, account, screenshot):
    account.account_manager = manager
    account.save()
    page.goto(f"{live_server.url}/login/")
    page.keyboard.type("manager")  # the username field has focus on arrival
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/staff/")
    assert page.get_by_role("link", name="Acme Support").is_visible()
    screenshot("staff-home-manager")


def test_admin_landing_lists_plans_and_history(live_server, page, admin_user, account, console_errors, screenshot):
    log_in(page, live_server.url, "finance-admin")
    page.wait_for_url(f"{live_server.url}/staff/")
    main = page.inner_text("main")
    assert "All accounts" in main and "fin-standard" in main
    screenshot("staff-home-admin")
    page.get_by_role("link", name="Acme Support").click()
    assert page.get_by_role("heading", name="Acme Support").is_visible()
    screenshot("staff-account")
    assert console_errors == []


def test_dashboard_shows_usage_as_a_chart_and_a_table(live_server, page, billing_admin, account, screenshot):
    import datetime as dt
    import zoneinfo

    from billing_portal import clock
    from resolutions.ingestion import events_parse
    from resolutions.services import conversation_events_ingest

    now = clock.now()
    # Noon in the account's timezone, so a run just after midnight cannot spread one day's events over two
    # of the chart's days.
    noon = now.astimezone(zoneinfo.ZoneInfo(account.timezone)).replace(hour=12, minute=0, second=0, microsecond=0)
    events = []
    for day in range(1, 8):
        for n in range(day * 3):
            at = noon - dt.timedelta(days=day, minutes=n)
            events += [
                {"id": f"a{day}-{n}", "conversation_id": f"c{day}-{n}", "type": "ai_answer",
                 "occurred_at": at.isoformat()},
                {"id": f"b{day}-{n}", "conversation_id": f"c{day}-{n}", "type": "customer_confirmed",
                 "occurred_at": (at + dt.timedelta(minutes=1)).isoformat()},
            ]  # fmt: skip
    parsed, errors = events_parse({"events": events}, now=now)
    assert errors == []
    conversation_events_ingest(account=account, events=parsed)

    log_in(page, live_server.url, "acme-billing")
    page.wait_for_url(f"{live_server.url}/portal/")
    chart = page.get_by_role("img", name="Resolutions per day")
    assert chart.is_visible()
    assert page.locator("#daily svg.chart rect.bar").count() == 7  # a bar for each day with resolutions
    assert "84 resolutions in 90 days" in page.locator("#daily").inner_text()  # 3+6+...+21 resolutions
    page.get_by_text("Show the numbers as a table").click()
    assert page.get_by_role("table").filter(has_text="Resolutions").first.is_visible()
    assert os.path.getsize(screenshot("customer-dashboard")) > 10_000
