"""What every page must be, checked on every page: each URL name in the three apps' `page_urlpatterns` (read
from the url modules, so a new page is covered when it lands), plus the login page and the admin index, for
each role that may open it.

Through Django's test client: 200, every image and `<svg role="img">` has a text alternative, every input a
label and every button a name, no URL to another host (no CDN), a CSRF token in every POST form; and another
account's objects answer 404. In chromium (Playwright) at 390 px wide: no horizontal overflow, every visible
interactive element reachable with Tab, no console error, no request to another host. Pages whose view is
still the `_being_built` placeholder are skipped with that reason."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.urls import URLPattern, reverse

import accounts.urls
import credits.urls
import resolutions.urls
from accounts.models import PlanMigration, PricePlan
from billing_portal import clock

ROOT = Path(__file__).resolve().parents[1]
PAGE_MODULES = (accounts.urls, credits.urls, resolutions.urls)
LOCAL_HOSTS = {"testserver", "localhost", "127.0.0.1", "[::1]"}
# Links people follow (not resources a page loads): Stripe's hosted invoices and its Dashboard.
LINK_HOSTS = {"invoice.stripe.com", "pay.stripe.com", "dashboard.stripe.com"}
XML_NAMESPACES = ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink", "http://www.w3.org/1999/xhtml")
URL_IN_TEXT = re.compile(r"""(?:https?:)?//([A-Za-z0-9.-]+(?::\d+)?)[^\s"'<>)]*""")
# The first matching prefix decides; pricing and operations are for admins only (DESIGN §2).
ROLES_BY_PREFIX = {
    "portal/": ("viewer", "billing_admin"),
    "staff/pricing/": ("admin",),
    "staff/ops/": ("admin",),
    "staff/": ("manager", "admin"),
}
ADMIN_ONLY_PREFIXES = ("staff/pricing/", "staff/ops/")
ALL_ROLES = ("viewer", "billing_admin", "manager", "admin")


@dataclass(frozen=True)
class Page:
    name: str
    route: str
    params: tuple[str, ...]
    placeholder: bool

    @property
    def roles(self) -> tuple[str, ...]:
        for prefix, roles in ROLES_BY_PREFIX.items():
            if self.route.startswith(prefix):
                return roles
        return ALL_ROLES


def _pages() -> list[Page]:
    pages = []
    for module in PAGE_MODULES:
        for pattern in module.page_urlpatterns:
            assert isinstance(pattern, URLPattern), f"{module.__name__}: nested includes are not pages"
            params = tuple(pattern.pattern.converters)
            pages.append(Page(pattern.name, str(pattern.pattern), params, pattern.callback.__name__ == "_being_built"))
    return pages


PAGES = _pages()
CASES = [pytest.param(page, role, id=f"{page.name}-{role}") for page in PAGES for role in page.roles]
EXTRA_CASES = [pytest.param("login", None, id="login-anonymous"), pytest.param("admin:index", "admin", id="admin")]


# --- data every page can show: one account with users, a key, a pack and resolutions; another account ----
@dataclass
class World:
    account: object
    other_account: object
    users: dict
    objects: dict  # URL kwarg -> an object of `account`
    other_objects: dict  # URL kwarg -> the same kind of object in `other_account`


def _account_objects(account, actor, suffix: str) -> dict:
    from accounts.services.api_keys import api_key_create
    from credits.models import CreditPack
    from credits.services import credit_pack_grant
    from resolutions.ingestion import events_parse
    from resolutions.models import Resolution
    from resolutions.services import conversation_events_ingest

    key, _ = api_key_create(account=account, name=f"Helpdesk {suffix}", actor=actor)
    pack = credit_pack_grant(
        account=account, quantity=500, source=CreditPack.Source.PROMOTIONAL, actor=actor, reason="launch",
        expires_at=clock.now() + dt.timedelta(days=365),
    )  # fmt: skip
    now = clock.now()
    events = []
    for n in range(6):
        at = now - dt.timedelta(days=n % 3 + 1, minutes=n)
        events += [
            {"id": f"{suffix}-a{n}", "conversation_id": f"{suffix}-c{n}", "type": "ai_answer",
             "occurred_at": at.isoformat()},
            {"id": f"{suffix}-b{n}", "conversation_id": f"{suffix}-c{n}", "type": "customer_confirmed",
             "occurred_at": (at + dt.timedelta(minutes=1)).isoformat()},
        ]  # fmt: skip
    parsed, errors = events_parse({"events": events}, now=now)
    assert errors == []
    conversation_events_ingest(account=account, events=parsed)
    resolution = Resolution.objects.filter(account=account).order_by("pk").first()
    migration = PlanMigration.objects.create(
        account=account, from_version=account.plan_version, to_version=_published_version(actor),
        effective_at=now + dt.timedelta(days=20), batch_key=f"sample-{suffix}",
    )  # fmt: skip
    from resolutions.services.simulation import price_simulation_run, price_simulation_start

    simulation, _ = price_simulation_start(
        version=migration.to_version, periods=3, actor=actor, idempotency_key=f"sample-{suffix}"
    )
    simulation = price_simulation_run(simulation_id=simulation.pk)
    return {"key_id": key, "pack_id": pack, "resolution_id": resolution, "migration_id": migration,
            "simulation_id": simulation}  # fmt: skip


def _published_version(actor):
    from accounts.pricing import plan_version_spec_parse
    from accounts.services import price_plan_version_create, price_plan_version_publish

    spec = plan_version_spec_parse({
        "currency": "usd", "unit_amount_decimal": "80", "inactivity_window": "24:00:00", "seat_unit_amount": 3900,
        "seat_conversion_unit_amount_decimal": "90", "effective_from": "2026-01-01T00:00:00Z",
    })  # fmt: skip
    version = price_plan_version_create(plan=PricePlan.objects.get(slug="fin-standard"), spec=spec, actor=actor)
    return price_plan_version_publish(version=version, actor=actor)


def _ops_objects(account, objects: dict) -> dict:
    """Samples for the operations pages: an open reconciliation difference of the account, a meter report Stripe
    refused, a webhook delivery that failed, and the published version its sample migration moves to (the Stripe
    sync retry's URL)."""
    import json

    from djstripe.models import WebhookEventTrigger

    from resolutions.models import MeterReconciliationDifference, MeterReport, MeterWindow

    now = clock.now()
    start, period_start = now - dt.timedelta(hours=3), now - dt.timedelta(days=10)
    difference = MeterReconciliationDifference.objects.create(
        account=account, period_start=period_start, period_end=now + dt.timedelta(days=20),
        portal=5, stripe=7, first_found_at=now, last_checked_at=now,
    )  # fmt: skip
    window = MeterWindow.objects.create(
        account=account, start=start, end=start + dt.timedelta(hours=1), period_start=period_start,
        period_end=now + dt.timedelta(days=20), overage=3,
    )  # fmt: skip
    MeterReport.objects.create(
        account=account, window=window, sequence=0, quantity=3, timestamp=start, identifier=f"sample-{account.pk}",
        state=MeterReport.State.REJECTED, attempts=2, rejections=1,
        last_error="No such customer: 'cus_NffrFeUfNV2Hib'; a similar object exists in live mode, but a test mode "
        "key was used to make this request.",
    )  # fmt: skip
    WebhookEventTrigger.objects.create(
        headers={}, remote_ip="127.0.0.1", valid=True, processed=False, exception="IntegrityError: duplicate key",
        traceback="Traceback (most recent call last):\n  File \"djstripe/models/webhooks.py\", line 1, in process",
        body=json.dumps({"id": f"evt_sample_{account.pk}", "type": "invoice.finalized", "created": 1764000000}),
    )  # fmt: skip
    return {"difference_id": difference, "version_id": objects["migration_id"].to_version}


def _price_plan_objects(actor) -> dict:
    from accounts.pricing import plan_version_spec_parse
    from accounts.services import price_plan_version_create

    plan = PricePlan.objects.get(slug="fin-standard")
    draft = plan.versions.filter(status="draft").first() or price_plan_version_create(
        plan=plan, actor=actor, spec=plan_version_spec_parse({
            "currency": "usd", "tiers_mode": "graduated", "inactivity_window": "24:00:00",
            "tiers": [{"up_to": 1000, "unit_amount_decimal": "99"}, {"up_to": "", "unit_amount_decimal": "79"}],
            "seat_unit_amount": 3900, "seat_conversion_unit_amount_decimal": "90",
            "effective_from": "2027-01-01T00:00:00Z",
            "offers": [{"name": "Annual 50k", "resolutions": 50000, "unit_amount_decimal": "80"}],
        }),
    )  # fmt: skip
    return {"plan_id": plan, "version_id": plan.current_version(), "draft_id": draft}


@pytest.fixture
def world(account, other_account, billing_admin, viewer, manager, admin_user):
    account.account_manager = manager  # the manager is assigned to `account`, not to `other_account`
    account.save(update_fields=["account_manager"])
    objects = _account_objects(account, admin_user, "acme")
    other_objects = _account_objects(other_account, admin_user, "globex")
    objects |= _ops_objects(account, objects)
    other_objects |= _ops_objects(other_account, other_objects)
    objects["account_id"], other_objects["account_id"] = account, other_account
    for sample in (objects, other_objects):  # price plans are not an account's: both worlds share them
        sample.update(_price_plan_objects(admin_user))
    users = {"viewer": viewer, "billing_admin": billing_admin, "manager": manager, "admin": admin_user}
    return World(account, other_account, users, objects, other_objects)


def page_url(page: Page, objects: dict) -> str:
    missing = [p for p in page.params if p not in objects]
    if missing:
        pytest.fail(f"test_pages_quality has no sample {missing} for {page.name}: add one to _account_objects")
    return reverse(page.name, kwargs={p: objects[p].pk for p in page.params})


# --- what the HTML must be --------------------------------------------------------------------------
class PageAudit(HTMLParser):
    """Collects the page's accessibility and no-CDN problems in one pass over its HTML."""

    FORM_CONTROLS = ("input", "select", "textarea")
    UNLABELLED_INPUT_TYPES = ("hidden", "submit", "button", "reset")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.ids: set[str] = set()
        self.label_for: set[str] = set()
        self.controls: list[tuple[dict, bool]] = []  # (attributes, inside a <label>)
        self.labelled_by: list[tuple[str, str]] = []
        self.label_depth = 0
        self.svgs: list[dict] = []  # open <svg role=img> elements: attrs + whether a <title> was seen
        self.forms: list[dict] = []
        self.buttons: list[dict] = []

    def handle_starttag(self, tag, attrs_list):
        attrs = {k: (v or "") for k, v in attrs_list}
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if attrs.get("aria-labelledby"):
            self.labelled_by.append((tag, attrs["aria-labelledby"]))
        self._check_urls(tag, attrs)
        if tag == "label":
            self.label_depth += 1
            if attrs.get("for"):
                self.label_for.add(attrs["for"])
        elif tag == "img" and "alt" not in attrs:
            self.problems.append(f"<img src={attrs.get('src')!r}> has no alt text")
        elif tag == "svg":
            self.svgs.append({"attrs": attrs, "title": False})
        elif tag == "title" and self.svgs:
            self.svgs[-1]["title"] = True
        elif tag in self.FORM_CONTROLS:
            if not (tag == "input" and attrs.get("type", "text") in self.UNLABELLED_INPUT_TYPES):
                self.controls.append((attrs, self.label_depth > 0))
            if self.forms and attrs.get("name") == "csrfmiddlewaretoken":
                self.forms[-1]["csrf"] = True
        elif tag == "form":
            self.forms.append({"attrs": attrs, "csrf": False})
        elif tag == "button":
            self.buttons.append({"attrs": attrs, "text": ""})

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag in ("svg", "label", "form", "button"):
            self.handle_endtag(tag)

    def handle_data(self, data):
        for button in self.buttons:
            if button.get("open", True):
                button["text"] += data

    def handle_endtag(self, tag):
        if tag == "label":
            self.label_depth = max(0, self.label_depth - 1)
        elif tag == "svg" and self.svgs:
            svg = self.svgs.pop()
            attrs = svg["attrs"]
            if attrs.get("role") == "img" and not (
                attrs.get("aria-label") or attrs.get("aria-labelledby") or svg["title"]
            ):
                self.problems.append("<svg role=img> has no text alternative (aria-label, aria-labelledby or <title>)")
        elif tag == "form" and self.forms:
            form = self.forms.pop()
            if form["attrs"].get("method", "get").lower() == "post" and not form["csrf"]:
                self.problems.append(f"POST form to {form['attrs'].get('action', '(this page)')!r} has no CSRF token")
        elif tag == "button":
            for button in reversed(self.buttons):
                if button.get("open", True):
                    button["open"] = False
                    break

    def _check_urls(self, tag, attrs):
        for name, value in attrs.items():
            if name == "xmlns" or name.startswith("xmlns:"):
                continue
            for match in URL_IN_TEXT.finditer(value):
                host = match.group(1).split(":")[0].lower()
                if not match.group(0).startswith(("http", "//")) or host in LOCAL_HOSTS:
                    continue
                if tag == "a" and name == "href" and host in LINK_HOSTS:
                    continue
                self.problems.append(f"<{tag} {name}={value!r}> points at another host ({host})")

    def close(self):
        super().close()
        for attrs, inside_label in self.controls:
            named = attrs.get("aria-label") or attrs.get("title") or attrs.get("aria-labelledby")
            if not (inside_label or named or (attrs.get("id") and attrs["id"] in self.label_for)):
                self.problems.append(f"<input name={attrs.get('name')!r} id={attrs.get('id')!r}> has no label")
        for tag, ids in self.labelled_by:
            for ref in ids.split():
                if ref not in self.ids:
                    self.problems.append(f"<{tag} aria-labelledby={ref!r}>: no element has that id")
        for button in self.buttons:
            if not (button["text"].strip() or button["attrs"].get("aria-label") or button["attrs"].get("title")):
                self.problems.append("a <button> has no text or aria-label")


def html_problems(html: str) -> list[str]:
    audit = PageAudit()
    audit.feed(html)
    audit.close()
    text_urls = [
        m.group(0)
        for m in re.finditer(r"https?://[A-Za-z0-9.-]+(?::\d+)?[^\s\"'<>)]*", html)
        if not m.group(0).startswith(XML_NAMESPACES) and urlsplit(m.group(0)).hostname not in LOCAL_HOSTS | LINK_HOSTS
    ]
    return audit.problems + [f"URL to another host in the page: {u}" for u in text_urls]


def test_the_audit_finds_what_it_looks_for():
    """The checks themselves: a page with each fault is caught, a clean one passes."""
    bad = """<img src="/a.png"><svg role="img"></svg><form method="post"><input name="q"></form>
    <script src="https://cdn.example.com/x.js"></script><link rel="stylesheet" href="//fonts.example.com/a.css">
    <button></button><p aria-labelledby="nope">x</p>"""
    problems = "\n".join(html_problems(bad))
    for expected in ["<img", "<svg role=img>", "CSRF", "has no label", "cdn.example.com", "fonts.example.com",
                     "<button>", "'nope'"]:  # fmt: skip
        assert expected in problems
    good = """<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="t"><title id="t">Chart</title></svg>
    <form method="post"><input type="hidden" name="csrfmiddlewaretoken" value="x"><label for="q">Q</label>
    <input id="q" name="q"><label>Name <input name="n"></label><button>Save</button></form><img src="/a" alt="">
    <a href="https://invoice.stripe.com/i/1">Invoice</a>"""
    assert html_problems(good) == []


def _get(client, url):
    response = client.get(url)
    content_type = response.get("Content-Type", "")
    return response, content_type


@pytest.mark.django_db
@pytest.mark.parametrize(("page", "role"), CASES)
def test_page_renders_accessibly_without_a_cdn(client, world, page, role):
    if page.placeholder:
        pytest.skip(f"{page.name}: still the _being_built placeholder (being built in another worktree)")
    client.force_login(world.users[role])
    response, content_type = _get(client, page_url(page, world.objects))
    if response.status_code in (302, 405):
        # a role this page is not for goes home; an action URL (POST only, or GET back to its page) has no page
        assert response.status_code == 405 or response["Location"] not in ("", None)
        return
    assert response.status_code == 200, f"{page.name} as {role}: {response.status_code}"
    if "text/html" not in content_type:
        return  # e.g. the CSV export
    assert html_problems(response.content.decode()) == []


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "role"), EXTRA_CASES)
def test_login_and_admin_index_render_accessibly_without_a_cdn(client, world, name, role):
    if role:
        client.force_login(world.users[role])
    response = client.get(reverse(name))
    assert response.status_code == 200
    assert html_problems(response.content.decode()) == []


@pytest.mark.django_db
def test_every_built_page_answers_some_role(client, world):
    """No built page is a dead end: some role gets it (an action URL may answer 302/405 to a GET)."""
    for page in PAGES:
        if page.placeholder:
            continue
        statuses = {}
        for role in page.roles:
            client.force_login(world.users[role])
            statuses[role] = client.get(page_url(page, world.objects)).status_code
        assert any(s in (200, 302, 405) for s in statuses.values()) and 404 not in statuses.values(), (
            page.name,
            statuses,
        )


ADMIN_ONLY = [pytest.param(p, id=p.name) for p in PAGES if p.route.startswith(ADMIN_ONLY_PREFIXES)]


@pytest.mark.django_db
@pytest.mark.parametrize("page", ADMIN_ONLY)
def test_admin_only_pages_send_everyone_else_home(client, world, page):
    """Pricing and operations are the admins': an account manager or a customer is sent home, for GET and
    POST, and nothing changes."""
    url = page_url(page, world.objects)
    for role in ("viewer", "billing_admin", "manager"):
        client.force_login(world.users[role])
        assert client.get(url).status_code == 302, (page.name, role)
        assert client.post(url, {"confirm": "yes", "idempotency_key": "k"}).status_code == 302, (page.name, role)


SCOPED = [pytest.param(p, id=p.name) for p in PAGES if any(param.endswith("_id") for param in p.params)]


@pytest.mark.django_db
@pytest.mark.parametrize("page", SCOPED)
def test_another_accounts_objects_are_404(client, world, page):
    """A customer of `account`, or its manager (not assigned to `other_account`), asking for an object of
    `other_account`: 404 for GET and POST alike, and nothing changes."""
    if page.placeholder:
        pytest.skip(f"{page.name}: still the _being_built placeholder (being built in another worktree)")
    url = page_url(page, world.other_objects)
    for role in page.roles:
        if role == "admin":
            continue  # admins see every account
        client.force_login(world.users[role])
        sent_home = {302} if role == "viewer" else set()  # a viewer on a billing-admin page goes home first
        get = client.get(url).status_code
        assert get in {404, 405} | sent_home, (role, get)
        if get == 405:  # POST only: the POST must not find the object either
            post = client.post(url, {"confirm": "yes", "reason": "test", "idempotency_key": "k"}).status_code
            assert post in {404} | sent_home, (role, post)


# --- in chromium, at 390 px ------------------------------------------------------------------------
def _browser_check(page, live_server, client, user, path, screenshot, shot_name):
    """Open `path` as `user` at 390 px; return the problems found (overflow, Tab, console, other hosts)."""
    problems, console = [], []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: console.append(str(exc)))
    base = urlsplit(live_server.url)
    foreign = []
    page.on("request", lambda r: foreign.append(r.url) if urlsplit(r.url).netloc != base.netloc else None)
    if user is not None:
        client.force_login(user)
        page.context.add_cookies([{
            "name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
            "url": live_server.url,
        }])  # fmt: skip
    page.set_viewport_size({"width": 390, "height": 844})
    response = page.goto(live_server.url + path)
    assert response.status == 200, f"{path}: {response.status}"
    page.wait_for_load_state("networkidle")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 0:
        # the outermost elements that stick out (their parent does not): where to look
        wide = page.evaluate("""() => {
            const out = e => e && e.getBoundingClientRect().right > window.innerWidth + 1;
            return [...document.querySelectorAll('body *')].filter(e => out(e) && !out(e.parentElement))
                .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '')); }""")
        problems.append(f"{overflow}px of horizontal overflow at 390px: {wide}")
    problems += _tab_unreachable(page)
    screenshot(shot_name)
    problems += [f"console error: {m}" for m in console]
    problems += [f"request to another host: {u}" for u in foreign]
    return problems


def _tab_unreachable(page) -> list[str]:
    """Press Tab through the page; every visible interactive element must take the focus once."""
    page.evaluate("""() => {
        const selector = 'a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), select, '
            + 'textarea, summary, [tabindex]:not([tabindex="-1"])';
        window.__focusables = [...document.querySelectorAll(selector)].filter(e => {
            const r = e.getBoundingClientRect(); const s = getComputedStyle(e);
            return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && !e.closest('[inert]');
        });
        window.__reached = new Set();
        document.addEventListener('focusin', e => window.__reached.add(e.target), true);
        document.activeElement && document.activeElement.blur();
    }""")
    count = page.evaluate("window.__focusables.length")
    # a date input takes three Tab stops (day, month, year) and Chromium stops on scrollable boxes too
    for presses in range(1, 4 * count + 20):
        page.keyboard.press("Tab")
        if presses % 10 == 0 and page.evaluate("window.__focusables.every(e => window.__reached.has(e))"):
            break
    return [
        f"not reachable with Tab: {label}"
        for label in page.evaluate("""() => window.__focusables.filter(e => !window.__reached.has(e))
            .map(e => e.outerHTML.slice(0, 120))""")
    ]


BROWSER_CASES = [
    pytest.param(page, role, id=f"{page.name}-{role}", marks=pytest.mark.browser)
    for page in PAGES
    for role in page.roles
]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("page_spec", "role"), BROWSER_CASES)
def test_page_at_390px_fits_is_keyboard_reachable_and_quiet(live_server, page, client, world, page_spec, role,
                                                           screenshot):  # fmt: skip
    if page_spec.placeholder:
        pytest.skip(f"{page_spec.name}: still the _being_built placeholder (being built in another worktree)")
    client.force_login(world.users[role])
    path = page_url(page_spec, world.objects)
    response = client.get(path)
    if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
        # Not a page for this role: an action URL that sends a GET elsewhere (302, 405) or a file (the CSV).
        # That answer is all there is to check here; the HTML pages it leads to have their own cases.
        assert response.status_code in (302, 405) or response.get("Content-Type", "").startswith("text/csv"), (
            f"{page_spec.name} as {role}: neither a page, a redirect nor a file ({response.status_code})"
        )
        return
    problems = _browser_check(page, live_server, client, world.users[role], path, screenshot,
                              f"quality-{page_spec.name}-{role}")  # fmt: skip
    assert problems == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("name", "role"), EXTRA_CASES)
def test_login_and_admin_at_390px(live_server, page, client, world, name, role, screenshot):
    user = world.users[role] if role else None
    problems = _browser_check(page, live_server, client, user, reverse(name), screenshot,
                              f"quality-{name.replace(':', '-')}")  # fmt: skip
    assert problems == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_api_docs_load_nothing_from_another_host(live_server, page, client, world, screenshot):
    """Swagger UI from drf-spectacular-sidecar, no validator badge; /api/redoc/ (Redoc always fetched a logo
    from cdn.redoc.ly and Google Fonts) now leads to it."""
    client.force_login(world.users["billing_admin"])
    assert client.get("/api/redoc/")["Location"] == reverse("api-docs")
    problems = _browser_check(page, live_server, client, world.users["billing_admin"], reverse("api-docs"),
                              screenshot, "quality-api-docs")  # fmt: skip
    problems = [p for p in problems if not p.startswith(("not reachable with Tab", "console error: schema"))]
    assert problems == []
    assert page.get_by_text("/api/v1/api-keys").first.is_visible()


# --- the files themselves ----------------------------------------------------------------------------
def _project_files():
    dirs = [ROOT / "templates", ROOT / "static"]
    dirs += [ROOT / app / sub for app in ("accounts", "credits", "resolutions", "billing_portal")
             for sub in ("templates", "static")]  # fmt: skip
    for directory in dirs:
        if directory.exists():
            yield from (p for p in directory.rglob("*") if p.suffix in (".html", ".css", ".js", ".svg", ".txt"))


def test_no_template_or_static_file_references_another_host():
    offenders = []
    for path in _project_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in re.finditer(r"(?:https?:)?//[A-Za-z0-9-]+\.[A-Za-z0-9.-]+[^\s\"'<>)]*", line):
                url = match.group(0)
                if url.startswith(XML_NAMESPACES) or urlsplit(url).hostname in LOCAL_HOSTS:
                    continue
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {url}")
    assert offenders == []
    assert any(p.name == "base.html" for p in _project_files())  # the scan did find the templates
