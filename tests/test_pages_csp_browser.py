"""The Content-Security-Policy in a real browser (Debian's chromium): every kind of page (customer, staff,
Django's admin, Swagger UI at /api/docs/) works under it with no violation, and a violation is seen when one
happens (so that "none seen" means something)."""

from __future__ import annotations

import os
from io import StringIO

import pytest
from django.core.management import call_command
from djstripe.models import Customer

from accounts.models import PricePlan
from accounts.services.provisioning import account_provision
from tests.browser import log_in
from tests.factories import AdminUserFactory, BillingAdminFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Reported by the page itself: the `securitypolicyviolation` event fires for every blocked script, style,
# image, frame, form action and inline attribute, enforced or not.
LISTEN = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolation([e.violatedDirective, e.blockedURI, e.sourceFile, e.lineNumber, e.sample].join(" | "));
});
"""


@pytest.fixture
def csp_violations(page):
    violations: list[str] = []
    page.expose_function("__cspViolation", lambda text: violations.append(text))
    page.add_init_script(LISTEN)
    return violations


def visit(page, url: str, screenshot, name: str) -> None:
    response = page.goto(url)
    assert response.status == 200, url
    assert "Content-Security-Policy" in {k.title(): v for k, v in response.headers.items()}, url
    page.wait_for_load_state("networkidle")  # htmx's load-triggered partials are in
    assert os.path.getsize(screenshot(name)) > 5_000


def test_a_violation_is_seen(live_server, page, csp_violations, console_errors):
    page.goto(f"{live_server.url}/login/")
    page.evaluate("""() => {
      const s = document.createElement("script"); s.textContent = "window.ran = 1"; document.body.append(s);
      const d = document.createElement("div"); d.setAttribute("style", "color: red"); document.body.append(d);
    }""")
    page.wait_for_timeout(200)
    assert page.evaluate("window.ran") is None  # the inline script was blocked
    assert any(v.startswith("script-src") for v in csp_violations), csp_violations
    assert any(v.startswith("style-src") for v in csp_violations), csp_violations
    assert any("Content Security Policy" in e for e in console_errors), console_errors


def test_every_kind_of_page_has_no_csp_violation(
    live_server, page, stripe_emulator, manager, csp_violations, console_errors, screenshot
):
    call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
    plan = PricePlan.objects.get(slug="fin-standard")
    account = account_provision(
        name="Steady Support", plan=plan, seats=4, actor="test", account_manager=manager, timezone="UTC"
    ).account  # a Stripe subscription: the dashboard shows its billing period's progress bar
    BillingAdminFactory(account=account, username="steady-billing")
    AdminUserFactory(username="finance-admin")
    version = plan.versions.order_by("pk").last()
    base = live_server.url

    log_in(page, base, "steady-billing")
    visit(page, f"{base}/portal/", screenshot, "csp-customer-dashboard")
    assert page.get_by_role("progressbar", name="Share of the billing period elapsed").is_visible()
    bar = page.locator("#period svg.progress rect").bounding_box()
    assert bar is not None and bar["height"] > 0  # the bar is drawn (no inline style needed for its width)
    assert page.evaluate("document.querySelector('style')") is None  # htmx injected no indicator style
    for path, name in [
        ("/portal/resolutions/", "resolutions"),
        ("/portal/invoices/", "invoices"),
        ("/portal/credits/", "credits"),
        ("/portal/api-keys/", "api-keys"),
    ]:
        visit(page, f"{base}{path}", screenshot, f"csp-customer-{name}")
    page.get_by_role("button", name="Log out").click()

    log_in(page, base, "finance-admin")
    for path, name in [
        ("/staff/", "home"),
        (f"/staff/accounts/{account.pk}/", "account"),
        ("/staff/pricing/plans/", "plans"),
        (f"/staff/pricing/plans/versions/{version.pk}/", "plan-version"),
        ("/staff/pricing/simulations/", "simulations"),
        ("/staff/pricing/simulations/new", "simulation-new"),
        ("/staff/pricing/migrations/", "migrations"),
        ("/staff/ops/", "ops"),
        ("/staff/ops/audit/", "ops-audit"),
    ]:
        visit(page, f"{base}{path}", screenshot, f"csp-staff-{name}")

    for path, name in [
        ("/admin/", "index"),
        ("/admin/accounts/account/", "accounts"),
        (f"/admin/accounts/account/{account.pk}/change/", "account-change"),
        ("/admin/accounts/priceplanversion/", "plan-versions"),
        ("/admin/accounts/auditlogentry/", "audit"),
        ("/admin/djstripe/customer/", "stripe-customers"),  # dj-stripe's mirror: read-only, no actions
        (f"/admin/djstripe/customer/{Customer.objects.get(subscriber=account).djstripe_id}/change/", "stripe-customer"),
    ]:
        visit(page, f"{base}{path}", screenshot, f"csp-admin-{name}")
    page.goto(f"{base}/admin/accounts/account/")
    page.locator("#searchbar").fill("Steady")
    page.locator("#searchbar").press("Enter")
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("link", name="Steady Support").first.is_visible()

    visit(page, f"{base}/api/docs/", screenshot, "csp-api-docs-empty")
    page.locator(".opblock").first.wait_for()  # Swagger UI ran and drew the operations from /api/schema/
    page.locator(".opblock-summary").first.click()  # one operation opened: its parameters and responses
    page.locator(".opblock-body").first.wait_for()
    assert page.locator(".opblock").count() > 10
    assert os.path.getsize(screenshot("csp-api-docs")) > 20_000

    assert csp_violations == []
    assert console_errors == []
