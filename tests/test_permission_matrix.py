"""The permission matrix: every URL pattern of the portal (read from the resolver) × every role → the status
the portal must answer. A pattern without a row fails, and so does a row whose pattern is gone: a new URL
cannot ship without someone deciding who may open it.

Roles: anonymous; a viewer of account A; a billing admin of account B (A's objects must be 404, never 403:
DESIGN §2); an account manager of another book (B); the account manager of A; an admin; for /api/ also the
API keys of A and of B. Pages a role may not open send it to the login page (anonymous) or home (another
role); APIs answer 401 (no credentials) or 403 (wrong role), and 404 for objects outside the caller's
accounts. POSTs of denied roles change nothing (a fingerprint of the tables they would write is compared).

The Django admin and dj-stripe's URLs follow rules per prefix (Django's own answers: login redirect for
anonymous and non-staff users, 403 without the model permission, the not-found redirect for an object the
user's queryset hides), and every one of their URLs is still visited, with kwargs from real objects."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import stripe  # the world signs webhook payloads the way Stripe does
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.test import Client, RequestFactory, TestCase, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse

from accounts.models import (
    Account,
    ApiKey,
    AuditLogEntry,
    CreditPackOffer,
    PlanMigration,
    PricePlan,
    PricePlanVersion,
)
from billing_portal import clock, stripe_client
from credits.models import CreditPack

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

PAGE_ROLES = ("anonymous", "viewer_a", "billing_admin_b", "manager_other", "manager_a", "admin")
API_ROLES = (*PAGE_ROLES, "key_a", "key_b")
CUSTOMERS = ("viewer_a", "billing_admin_b")
STAFF = ("manager_other", "manager_a", "admin")


# --- The patterns, from the resolver ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Pattern:
    route: str  # the full route string, e.g. "api/v1/staff/accounts/<int:account_id>"
    name: str | None  # namespaced, e.g. "admin:accounts_account_change"
    pattern: URLPattern

    @property
    def key(self) -> str:
        return self.name or self.route


def _walk(resolver: URLResolver, prefix: str = "", namespace: str | None = None):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            inner = namespace
            if entry.namespace:
                inner = f"{namespace}:{entry.namespace}" if namespace else entry.namespace
            yield from _walk(entry, prefix + str(entry.pattern), inner)
        else:
            name = entry.name and (f"{namespace}:{entry.name}" if namespace else entry.name)
            yield Pattern(prefix + str(entry.pattern), name, entry)


PATTERNS = list(_walk(get_resolver()))
PORTAL_PATTERNS = [p for p in PATTERNS if not p.route.startswith("admin/")]
ADMIN_PATTERNS = [p for p in PATTERNS if p.route.startswith("admin/")]


# --- Expected answers ---------------------------------------------------------------------------------
LOGIN = "→login"  # 302 to /login/?next=<the path>
HOME = "→home"  # 302 to / (a role this page is not for)
ADMIN_LOGIN = "→admin-login"  # 302 to /admin/login/?next=<the path>


def redirect(to: str) -> str:
    return f"→{to}"


def pages(*, anonymous=LOGIN, viewer_a=HOME, billing_admin_b=HOME, manager_other=HOME, manager_a=HOME, admin=HOME):
    return {
        "anonymous": anonymous, "viewer_a": viewer_a, "billing_admin_b": billing_admin_b,
        "manager_other": manager_other, "manager_a": manager_a, "admin": admin,
    }  # fmt: skip


def customer_page(ok=200, *, viewer=None, billing_admin=None):
    """Open to both customer roles (each sees their own account); staff are sent home."""
    return pages(viewer_a=viewer or ok, billing_admin_b=billing_admin or ok)


def billing_admin_page(ok, *, other_account=None):
    """Only the account's billing admin; the viewer is sent home; B's admin gets 404 for A's objects."""
    return pages(billing_admin_b=other_account or ok)


def staff_account_page(ok=200):
    """A staff page about account A: its manager and admins; another book's manager 404."""
    return pages(manager_other=404, manager_a=ok, admin=ok)


def admin_page(ok=200):
    """Pricing, simulations, migrations and operations: admins only; account managers are sent home."""
    return pages(admin=ok)


def apis(*, anonymous=401, viewer_a=403, billing_admin_b=403, manager_other=403, manager_a=403, admin=403,
         key_a=403, key_b=403):  # fmt: skip
    return {
        "anonymous": anonymous, "viewer_a": viewer_a, "billing_admin_b": billing_admin_b,
        "manager_other": manager_other, "manager_a": manager_a, "admin": admin, "key_a": key_a, "key_b": key_b,
    }  # fmt: skip


def customer_api(ok=200):
    """Reads of the caller's own account: customer users and API keys (each gets its own account)."""
    return apis(viewer_a=ok, billing_admin_b=ok, key_a=ok, key_b=ok)


def staff_account_api(ok):
    return apis(manager_other=404, manager_a=ok, admin=ok)


def admin_api(ok):
    return apis(admin=ok)


@dataclasses.dataclass(frozen=True)
class Row:
    """How to call one pattern and what each role gets. `body` is posted as JSON to /api/ and as a form to
    pages; `denied_body`, when given, is what denied roles post instead (a valid body, so that a denial
    really is a denial and not a validation error that happens to come first)."""

    method: str
    expect: dict
    body: dict | None = None
    denied_body: dict | None = None
    kwargs: dict | None = None  # overrides of the world's kwargs for this pattern
    changes: bool = False  # the allowed roles' POST acts; otherwise no role's POST may change anything
    query: str = ""


GET, POST = "GET", "POST"
VERSION_PAGE = "/staff/pricing/plans/versions/{version_id}/"

MATRIX: dict[str, Row] = {
    # Home and authentication.
    "home": Row(
        GET,
        pages(
            viewer_a=redirect("/portal/"),
            billing_admin_b=redirect("/portal/"),
            manager_other=redirect("/staff/"),
            manager_a=redirect("/staff/"),
            admin=redirect("/staff/"),
        ),
    ),  # fmt: skip
    "login": Row(
        GET,
        pages(
            anonymous=200,
            **dict.fromkeys(("viewer_a", "billing_admin_b"), redirect("/")),
            **dict.fromkeys(STAFF, redirect("/")),
        ),
    ),  # fmt: skip
    "logout": Row(POST, pages(**dict.fromkeys(PAGE_ROLES, redirect("/login/")))),
    # Customer pages (accounts).
    "customer-api-keys": Row(GET, customer_page()),
    "customer-api-key-create": Row(POST, billing_admin_page(400), body={}),
    "customer-api-key-revoke": Row(POST, billing_admin_page(404), body={}),
    # Customer pages (credits).
    "customer-credits": Row(GET, customer_page()),
    "customer-credit-purchase": Row(POST, billing_admin_page(400), body={}),
    "customer-alert-settings": Row(POST, billing_admin_page(400), body={"low_credit_threshold_percent": "x"}),
    # Customer pages (resolutions).
    "customer-home": Row(GET, customer_page()),
    "customer-next-invoice-stripe": Row(GET, customer_page()),
    "customer-resolutions": Row(GET, customer_page()),
    "customer-resolutions-csv": Row(GET, customer_page()),
    "customer-invoices": Row(GET, customer_page()),
    "customer-invoice-upcoming": Row(GET, customer_page()),
    # Staff pages about one account.
    "staff-home": Row(GET, pages(manager_other=200, manager_a=200, admin=200)),
    "staff-account": Row(GET, staff_account_page()),
    # The staff forms redraw themselves with the errors (200, even as a full page: see the report).
    "staff-resolution-void": Row(POST, staff_account_page(200), body={}),
    "staff-invoice-preview": Row(GET, staff_account_page()),
    "staff-seat-conversion": Row(POST, staff_account_page(200), body={}),
    "staff-credit-grant": Row(POST, staff_account_page(200), body={}),
    "staff-credit-purchase": Row(POST, staff_account_page(200), body={}),
    # Admin pages: pricing, simulations, migrations, operations.
    "staff-price-simulations": Row(GET, admin_page()),
    "staff-price-simulation-new": Row(POST, admin_page(400), body={}),
    "staff-price-simulation": Row(GET, admin_page()),
    "staff-plan-migrations": Row(GET, admin_page()),
    "staff-plan-migration-new": Row(POST, admin_page(400), body={}),
    # Confirm steps: a POST without confirm=yes goes back to the list and does nothing.
    "staff-plan-migration-cancel": Row(POST, admin_page(redirect("/staff/pricing/migrations/")), body={}),
    "staff-plan-migration-retry": Row(POST, admin_page(redirect("/staff/pricing/migrations/")), body={}),
    "staff-ops": Row(GET, admin_page()),
    "staff-ops-meter-reports": Row(GET, admin_page()),
    "staff-ops-reconciliation": Row(GET, admin_page()),
    "staff-ops-difference-resolve": Row(POST, admin_page(400), body={}),
    "staff-ops-stripe-sync": Row(GET, admin_page()),
    "staff-ops-version-sync-retry": Row(POST, admin_page(redirect("/staff/ops/stripe-sync/")), body={}),
    "staff-ops-webhook-endpoint-retry": Row(  # a retry button: it acts on a plain POST (nothing to fill in)
        POST, admin_page(redirect("/staff/ops/stripe-sync/")), body={}, changes=True
    ),
    "staff-ops-webhooks": Row(GET, admin_page()),
    "staff-ops-audit": Row(GET, admin_page()),
    "staff-price-plans": Row(GET, admin_page()),
    "staff-price-plan-version-new": Row(GET, admin_page()),
    "staff-price-plan-version-validate": Row(POST, admin_page(200), body={}),  # the editor's live check
    "staff-price-plan-version": Row(GET, admin_page()),
    "staff-price-plan-version-edit": Row(GET, admin_page()),
    "staff-price-plan-version-publish": Row(POST, admin_page(redirect(VERSION_PAGE)), body={}),
    "staff-price-plan-version-retire": Row(POST, admin_page(redirect(VERSION_PAGE)), body={}),
    "staff-price-plan-version-sync-retry": Row(POST, admin_page(redirect(VERSION_PAGE)), body={}),
    # Customer APIs.
    "api-account": Row(GET, customer_api()),
    "api-keys": Row(POST, apis(billing_admin_b=400), body={}),
    "api-key-detail": Row(GET, apis(billing_admin_b=404)),
    "api-key-revoke": Row(POST, apis(billing_admin_b=404), body={}),
    # Ingestion takes API keys only: a logged-in person is not authenticated there (401, not 403).
    "api-conversation-events": Row(
        POST, apis(**dict.fromkeys((*CUSTOMERS, *STAFF), 401), key_a=400, key_b=400), body={}
    ),  # fmt: skip
    "api-usage": Row(GET, customer_api(400)),  # no from/to: a validation error, after access was granted
    "api-resolutions": Row(GET, customer_api()),
    "api-credits": Row(GET, customer_api()),
    "api-credit-purchases": Row(POST, apis(billing_admin_b=400), body={}),
    # Staff APIs about one account (manager of A or admin; 404 for another book).
    "api-staff-accounts": Row(GET, apis(manager_other=200, manager_a=200, admin=200)),
    "api-staff-account": Row(GET, staff_account_api(200)),
    "api-invoice-preview": Row(GET, staff_account_api(200)),
    "api-resolution-void": Row(POST, staff_account_api(400), body={}, denied_body={"reason": "probe"}),
    "api-staff-credits": Row(GET, staff_account_api(200)),
    "api-staff-credit-purchases": Row(POST, staff_account_api(400), body={}),
    "api-credit-grant": Row(POST, staff_account_api(400), body={}),
    "api-seat-conversion-preview": Row(POST, staff_account_api(400), body={}),
    "api-seat-conversion-confirm": Row(POST, staff_account_api(400), body={}),
    # Admin APIs.
    "api-plan-migrations": Row(GET, admin_api(200)),
    "api-plan-migration-cancel": Row(POST, admin_api(200), body={}, changes=True),  # the reason is optional
    "api-plan-migration-retry": Row(POST, admin_api(409), body={}),  # a scheduled move has nothing to retry
    "api-price-plans": Row(GET, admin_api(200)),
    "api-price-plan-versions": Row(GET, admin_api(200)),
    "api-price-plan-version": Row(GET, admin_api(200)),
    "api-price-plan-version-publish": Row(POST, admin_api(200), body={}, changes=True),  # the draft is valid
    "api-price-plan-version-retire": Row(POST, admin_api(409), body={}),  # a draft cannot be retired
    "api-price-plan-version-stripe-sync-retry": Row(POST, admin_api(409), body={}),  # nor synced
    "api-price-simulations": Row(GET, admin_api(200)),
    "api-price-simulation": Row(GET, admin_api(200)),
    # Stripe's webhook: public, and its signature decides (none here: 400 for everyone, nothing stored).
    "stripe-webhook": Row(POST, apis(**dict.fromkeys(API_ROLES, 400)), body={}),
    # dj-stripe's own view at the same path is shadowed by the portal's (which checks the signature first).
    "djstripe:djstripe_webhook_by_uuid": Row(POST, apis(**dict.fromkeys(API_ROLES, 400)), body={}),
    # The API's schema and docs: public documentation of a public contract.
    "api-schema": Row(GET, apis(**dict.fromkeys(API_ROLES, 200))),
    "api-docs": Row(GET, apis(**dict.fromkeys(API_ROLES, 200))),
    "api-redoc": Row(GET, apis(**dict.fromkeys(API_ROLES, redirect("/api/docs/")))),
    "favicon.ico": Row(GET, pages(**dict.fromkeys(PAGE_ROLES, redirect("/static/portal/favicon.svg")))),
    # The load balancer's probes: open to anyone, they show no account data (readyz: everything is up here).
    "healthz": Row(GET, pages(**dict.fromkeys(PAGE_ROLES, 200))),
    "readyz": Row(GET, pages(**dict.fromkeys(PAGE_ROLES, 200))),
}

# The admin's tenant boundary, written out (the per-prefix rule below computes Django's answer; these must
# hold whatever that computation says): another book's manager cannot open A's rows, A's manager can.
HIDDEN = redirect("/admin/")  # the admin's "does not exist" answer for a row the user's queryset hides
ADMIN_TENANT = {
    ("admin:accounts_account_change", "manager_other"): HIDDEN,
    ("admin:accounts_account_change", "manager_a"): 200,
    ("admin:accounts_apikey_change", "manager_other"): HIDDEN,
    ("admin:accounts_apikey_change", "manager_a"): 200,
    ("admin:accounts_auditlogentry_change", "manager_other"): HIDDEN,
    ("admin:accounts_auditlogentry_change", "manager_a"): 200,
    ("admin:accounts_user_change", "manager_other"): HIDDEN,
    ("admin:accounts_user_change", "manager_a"): 200,
    ("admin:auth_user_password_change", "manager_other"): 403,
    ("admin:accounts_account_changelist", "viewer_a"): ADMIN_LOGIN,
    ("admin:accounts_account_changelist", "billing_admin_b"): ADMIN_LOGIN,
    ("admin:credits_creditpack_change", "manager_a"): 403,  # managers have no credits permission in the admin
    ("admin:resolutions_resolution_changelist", "manager_a"): 403,
}


# --- The world: one set of real objects for the module ------------------------------------------------
class _ModuleAtomics(TestCase):
    """Django's TestCase atomics, entered for the whole module: everything the world creates is rolled back
    at the end, and services' durable transactions and the Stripe guard see a test's transaction."""

    databases = {"default"}


def _stripe_settings(server):
    return override_settings(STRIPE_API_BASE=server.url, STRIPE_BACKOFF_BASE_SECONDS=0.01, STRIPE_TIMEOUT_SECONDS=5)


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, _stripe_emulator_server):
    from accounts.defaults import default_plan_ensure
    from accounts.pricing import plan_version_spec_parse
    from accounts.services import (
        price_plan_version_create,
        price_plan_version_publish,
        staff_groups_ensure,
    )
    from accounts.services.api_keys import api_key_create
    from accounts.services.provisioning import account_provision
    from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure
    from credits.models import CreditAlert, CreditPack, SeatConversion
    from resolutions.models import (
        MeterReconciliationDifference,
        MeterReconciliationRun,
        MeterReport,
        MeterWindow,
        Resolution,
    )
    from resolutions.services import resolutions_fund
    from resolutions.services.simulation import price_simulation_start
    from tests.factories import AdminUserFactory, BillingAdminFactory, CustomerUserFactory, StaffUserFactory

    server = _stripe_emulator_server
    server.reset()
    stripe_settings = _stripe_settings(server)
    stripe_settings.enable()
    with django_db_blocker.unblock():
        _ModuleAtomics.setUpClass()
        try:
            # What `migrate` creates, put back if a transactional test of another module emptied the tables.
            default_plan_ensure(PricePlan, PricePlanVersion, CreditPackOffer)
            staff_groups_ensure()
            plan = PricePlan.objects.get(slug="fin-standard")
            users = {
                "manager_other": StaffUserFactory(username="matrix-manager-other"),
                "manager_a": StaffUserFactory(username="matrix-manager-a"),
                "admin": AdminUserFactory(username="matrix-admin"),
            }
            a = account_provision(name="Matrix A", plan=plan, seats=3, actor="test", account_manager=users["manager_a"])
            b = account_provision(
                name="Matrix B", plan=plan, seats=2, actor="test", account_manager=users["manager_other"]
            )
            users["viewer_a"] = CustomerUserFactory(account=a.account, username="matrix-viewer-a")
            users["billing_admin_b"] = BillingAdminFactory(account=b.account, username="matrix-billing-b")
            admin = users["admin"]
            now = clock.now()
            # A resolution of A, through the ingestion API and funding, as real traffic makes it.
            events = [
                {"id": "m-ai", "conversation_id": "matrix-conv-a", "type": "ai_answer",
                 "occurred_at": (now - dt.timedelta(hours=2)).isoformat()},
                {"id": "m-ok", "conversation_id": "matrix-conv-a", "type": "customer_confirmed",
                 "occurred_at": (now - dt.timedelta(hours=1)).isoformat()},
            ]  # fmt: skip
            posted = Client(HTTP_AUTHORIZATION=f"Bearer {a.raw_api_key}").post(
                "/api/v1/conversation-events", {"events": events}, content_type="application/json"
            )
            assert posted.status_code == 202, posted.content
            # A promotional pack, granted by A's manager through the API with an Idempotency-Key (stored).
            staff_client = Client()
            staff_client.force_login(users["manager_a"])
            granted = staff_client.post(
                f"/api/v1/staff/accounts/{a.account.pk}/credit-grants", {"quantity": 100, "reason": "matrix"},
                content_type="application/json", HTTP_IDEMPOTENCY_KEY="matrix-grant",
            )  # fmt: skip
            assert granted.status_code == 201, granted.content
            pack = CreditPack.objects.get(pk=granted.json()["id"])
            resolutions_fund(now=now)
            resolution = Resolution.objects.get(account=a.account, conversation_id="matrix-conv-a")
            extra_key, _ = api_key_create(account=a.account, name="Matrix extra", actor=admin)
            spec = {
                "currency": "usd", "unit_amount_decimal": "95", "inactivity_window": "24:00:00",
                "seat_unit_amount": 3900, "seat_conversion_unit_amount_decimal": "90",
                "effective_from": "2027-01-01T00:00:00Z", "offers": [],
            }  # fmt: skip
            published = price_plan_version_create(plan=plan, actor=admin, spec=plan_version_spec_parse(spec))
            published = price_plan_version_publish(version=published, actor=admin, reason="matrix")
            draft = price_plan_version_create(
                plan=plan, actor=admin, spec=plan_version_spec_parse({**spec, "unit_amount_decimal": "97"})
            )
            migration = PlanMigration.objects.create(
                account=a.account, from_version=a.account.plan_version, to_version=published,
                effective_at=now + dt.timedelta(days=30), batch_key="matrix", created_by=admin,
            )  # fmt: skip
            simulation, _ = price_simulation_start(version=draft, periods=1, actor=admin, idempotency_key="matrix")
            window = MeterWindow.objects.create(
                account=a.account, start=now, end=now + dt.timedelta(hours=1), period_start=now,
                period_end=now + dt.timedelta(days=30), overage=1, reported=1,
            )  # fmt: skip
            MeterReport.objects.create(
                account=a.account, window=window, sequence=0, quantity=1, timestamp=now, identifier="matrix-1",
            )  # fmt: skip
            difference = MeterReconciliationDifference.objects.create(
                account=a.account, period_start=now, period_end=now + dt.timedelta(days=30), portal=1, stripe=2,
                first_found_at=now, last_checked_at=now,
            )  # fmt: skip
            MeterReconciliationRun.objects.create(started_at=now, checked=1, differences=1)
            CreditAlert.objects.create(account=a.account, kind=CreditAlert.Kind.LOW_BALANCE)
            SeatConversion.objects.create(
                account=a.account, status=SeatConversion.Status.FAILED, seats=1, seats_before=3,
                stripe_subscription_item_id="si_matrix", seat_unit_amount=3900,
                conversion_unit_amount_decimal=Decimal(90), term_start=now, term_end=now + dt.timedelta(days=30),
                value_minor=0, credits=0,
            )  # fmt: skip
            endpoint = stripe_webhook_endpoint_ensure(base_url="http://testserver")
            # B's billing admin buys a pack; every event Stripe sent is delivered to the webhook, signed, so the
            # admin's dj-stripe lists hold invoices, lines, events and webhook logs as in production.
            buyer = Client()
            buyer.force_login(users["billing_admin_b"])
            offer = CreditPackOffer.objects.get(version=b.account.plan_version)
            bought = buyer.post("/api/v1/credit-purchases", {"offer_id": offer.pk}, content_type="application/json")
            assert bought.status_code == 201, bought.content
            events = stripe_client.call(
                "events", lambda c, o: c.v1.events.list(params={"limit": 100}), idempotency_key=None
            )
            for event in reversed(events.data):  # oldest first, as Stripe delivers them
                payload = json.dumps(event.to_dict(), default=str)
                at = int(time.time())
                signature = stripe.WebhookSignature._compute_signature(f"{at}.{payload}", endpoint.secret)
                delivered = Client().post(
                    f"/stripe/webhook/{endpoint.djstripe_uuid}/", data=payload, content_type="application/json",
                    HTTP_STRIPE_SIGNATURE=f"t={at},v1={signature}",
                )  # fmt: skip
                assert delivered.status_code == 200, delivered.content
            yield dataclasses.make_dataclass("World", ["users", "raw_keys", "kwargs", "objects", "a", "b"])(
                users=users,
                raw_keys={"key_a": a.raw_api_key, "key_b": b.raw_api_key},
                kwargs={
                    "account_id": a.account.pk,
                    "key_id": extra_key.pk,
                    "migration_id": migration.pk,
                    "simulation_id": simulation.pk,
                    "difference_id": difference.pk,
                    "version_id": draft.pk,
                    "draft_id": draft.pk,
                    "plan_id": plan.pk,
                    "slug": plan.slug,
                    "resolution_id": resolution.pk,
                    "uuid": endpoint.djstripe_uuid,
                },  # fmt: skip
                objects={
                    Account: a.account,
                    ApiKey: extra_key,
                    AuditLogEntry: AuditLogEntry.objects.filter(account=a.account).first(),
                    type(users["viewer_a"]): users["viewer_a"],
                    CreditPack: pack,
                    PricePlanVersion: draft,
                    Resolution: resolution,
                },  # fmt: skip
                a=a.account,
                b=b.account,
            )
        finally:
            _ModuleAtomics.tearDownClass()
            stripe_settings.disable()
            server.reset()


def fingerprint(world) -> dict:
    """What a POST could write: counts and states of the rows the portal's actions create or change."""
    from django.db.models import Count
    from djstripe.models import WebhookEventTrigger

    from accounts.idempotency import IdempotencyKey
    from credits.models import CreditLedgerEntry, CreditPack, SeatConversion
    from resolutions.models import ConversationEvent, MeterReconciliationDifference, PriceSimulation, Resolution

    def states(model, field):
        return dict(model.objects.values_list(field).annotate(n=Count("pk")).values_list(field, "n"))

    return {
        "api_keys": ApiKey.objects.count(),
        "revoked_keys": ApiKey.objects.filter(revoked_at__isnull=False).count(),
        "packs": states(CreditPack, "status"),
        "ledger": CreditLedgerEntry.objects.count(),
        "audit": AuditLogEntry.objects.count(),
        "migrations": states(PlanMigration, "status"),
        "simulations": PriceSimulation.objects.count(),
        "versions": states(PricePlanVersion, "status"),
        "seat_conversions": SeatConversion.objects.count(),
        "events": ConversationEvent.objects.count(),
        "voided": Resolution.objects.filter(voided_at__isnull=False).count(),
        "differences_resolved": MeterReconciliationDifference.objects.filter(resolved_at__isnull=False).count(),
        "idempotency_keys": IdempotencyKey.objects.count(),
        "webhook_triggers": WebhookEventTrigger.objects.count(),
        "accounts": list(Account.objects.order_by("pk").values_list(
            "pk", "status", "low_credit_threshold_percent", "monthly_budget_minor", "plan_version_id")),
        "stripe_sync": list(PricePlanVersion.objects.order_by("pk").values_list("pk", "stripe_sync_status")),
    }  # fmt: skip


def client_for(world, role: str) -> Client:
    if role in world.raw_keys:
        return Client(HTTP_AUTHORIZATION=f"Bearer {world.raw_keys[role]}")
    client = Client()
    if role != "anonymous":
        client.force_login(world.users[role])
    return client


def check(response, expected, path: str, world_kwargs: dict | None = None) -> str | None:
    """None when the response is what `expected` says, else what it was instead (for the failure message)."""
    status = response.status_code
    location = response.headers.get("Location", "")
    got = f"{status} {location}".strip()
    if isinstance(expected, int):
        return None if status == expected else got
    if status not in (301, 302):
        return got
    target = urlsplit(location)
    if expected in (LOGIN, ADMIN_LOGIN):
        login = "/login/" if expected == LOGIN else "/admin/login/"
        return None if target.path == login and parse_qs(target.query).get("next") == [path] else got
    if expected == HOME:
        return None if location == "/" else got
    return None if location == expected.removeprefix("→").format(**(world_kwargs or {})) else got


def _kwarg_names(pattern: URLPattern) -> list[str]:
    return list(getattr(pattern.pattern, "converters", {}) or pattern.pattern.regex.groupindex)


def portal_path(world, p: Pattern, row: Row) -> str:
    if p.name is None:
        return "/" + p.route
    kwargs = {name: (row.kwargs or {}).get(name, world.kwargs.get(name)) for name in _kwarg_names(p.pattern)}
    return reverse(p.name, kwargs=kwargs)


def _portal_cases():
    for p in PORTAL_PATTERNS:
        row = MATRIX.get(p.key)
        for role in row.expect if row else ():
            yield pytest.param(p, role, id=f"{p.key}|{role}")


# --- The tests ------------------------------------------------------------------------------------------
def test_every_pattern_has_a_row_and_every_row_a_pattern():
    keys = [p.key for p in PORTAL_PATTERNS]
    assert sorted(set(keys) - set(MATRIX)) == [], "URL patterns without a row in MATRIX: decide who may open them"
    assert sorted(set(MATRIX) - set(keys)) == [], "rows of MATRIX whose URL pattern no longer exists"
    assert len(keys) == len(set(keys)), "two patterns share a name: the matrix cannot tell them apart"
    for p in PORTAL_PATTERNS:
        roles = API_ROLES if p.route.startswith(("api/", "stripe/")) else PAGE_ROLES
        assert tuple(MATRIX[p.key].expect) == roles, f"{p.key}: a row must say what each of {roles} gets"
    unknown = {name for name, _ in ADMIN_TENANT} - {p.key for p in ADMIN_PATTERNS}
    assert unknown == set(), f"ADMIN_TENANT names admin URLs that no longer exist: {unknown}"
    assert len(ADMIN_PATTERNS) > 100, "the admin's URLs are part of the matrix"


@pytest.mark.parametrize("p,role", list(_portal_cases()))
def test_portal_url_answers_each_role_as_the_matrix_says(world, p, role):
    row = MATRIX[p.key]
    expected = row.expect[role]
    path = portal_path(world, p, row)
    client = client_for(world, role)
    denied = expected in (401, 403, 404, LOGIN, HOME)
    body = row.denied_body if denied and row.denied_body is not None else row.body
    before = fingerprint(world) if row.method == POST else None
    if row.method == GET:
        response = client.get(path + row.query)
    elif path.startswith("/api/") or path.startswith("/stripe/"):
        response = client.post(path, json.dumps(body or {}), content_type="application/json")
    else:
        response = client.post(path, body or {})
    wrong = check(response, expected, path, world.kwargs)
    assert wrong is None, f"{row.method} {path} as {role}: expected {expected}, got {wrong}"
    if path.startswith("/api/") and response.status_code >= 400:
        payload = response.json()
        assert set(payload) == {"errors"} and payload["errors"], payload
        assert set(payload["errors"][0]) == {"index", "field", "message"}, payload
    if before is not None and (denied or not row.changes):
        assert fingerprint(world) == before, f"{row.method} {path} as {role} changed something"


# --- The Django admin (and dj-stripe's models in it): one rule per prefix, every URL visited -------------
ADMIN_KINDS = ("changelist", "add", "change", "delete", "history")
MISSING_PK = 2_000_000_000  # for a model with no row in the world: the admin's "does not exist" answer


def _admin_target(p: Pattern):
    """(kind, model, model_admin) of an admin URL; model and model_admin are None for the site's own."""
    name = (p.name or "").removeprefix("admin:")
    if name == "auth_user_password_change":  # Django's UserAdmin names it so, whatever the user model
        model = next(m for m in admin.site._registry if m._meta.model_name == "user")
        return "password", model, admin.site._registry[model]
    for model, model_admin in admin.site._registry.items():
        prefix = f"{model._meta.app_label}_{model._meta.model_name}_"
        if name.startswith(prefix) and name.removeprefix(prefix) in ADMIN_KINDS:
            return name.removeprefix(prefix), model, model_admin
    return (name or "catch_all"), None, None


def _admin_object(world, model):
    obj = world.objects.get(model) or model._default_manager.order_by("pk").first()
    return obj


def admin_requests(world, p: Pattern) -> list[tuple[str, str, object]]:
    """The (method, path, object) requests that visit one admin pattern."""
    kind, model, _ = _admin_target(p)
    if kind == "app_list":
        return [(GET, reverse("admin:app_list", kwargs={"app_label": label}), label)
                for label in sorted({m._meta.app_label for m in admin.site._registry})]  # fmt: skip
    if kind == "view_on_site":
        ct = ContentType.objects.get_for_model(Account)
        return [(GET, reverse("admin:view_on_site", args=[ct.pk, world.a.pk]), None)]
    if kind == "catch_all":
        return [(GET, "/admin/no-such-page/", None)]
    if kind == "logout":
        return [(POST, reverse("admin:logout"), None)]
    if model is None or kind in ("changelist", "add"):
        return [(GET, reverse(p.name), None)]
    obj = _admin_object(world, model)
    return [(GET, reverse(p.name, args=[obj.pk if obj else MISSING_PK]), obj)]


def admin_expected(world, p: Pattern, role: str, obj):
    """Django's own answer for this role: the admin's login for anyone who is not active staff; for staff the
    model admin's permissions and queryset decide (403 without the permission, the not-found redirect for a
    row the queryset hides)."""
    kind, model, model_admin = _admin_target(p)
    user = world.users.get(role)
    staff = user is not None and user.is_active and user.is_staff
    if kind == "login":
        return redirect("/admin/") if staff else 200
    if kind == "logout":
        return redirect("/login/") if staff else redirect("/admin/")  # staff: LOGOUT_REDIRECT_URL
    if not staff:
        return ADMIN_LOGIN
    request = RequestFactory().get("/admin/")
    request.user = user
    if kind in ("index", "password_change", "password_change_done", "jsi18n"):
        return 200
    if kind == "autocomplete":
        return 403  # no term, app or model given: Django's AutocompleteJsonView refuses
    if kind == "view_on_site":
        return 404  # accounts have no public page
    if kind == "catch_all":
        return 404
    if kind == "app_list":
        shown = [ma for m, ma in admin.site._registry.items() if m._meta.app_label == obj
                 and ma.has_module_permission(request) and any(ma.get_model_perms(request).values())]  # fmt: skip
        return 200 if shown else 404
    if kind == "changelist":
        return 200 if model_admin.has_view_or_change_permission(request) else 403
    if kind == "add":
        allowed = model_admin.has_add_permission(request)
        if kind == "add" and model_admin.__class__.__name__ == "UserAdmin":
            allowed = allowed and model_admin.has_change_permission(request)
        return 200 if allowed else 403
    visible = obj is not None and model_admin.get_queryset(request).filter(pk=obj.pk).exists()
    found = obj if visible else None
    if kind == "history":
        if found is None:
            return HIDDEN
        return 200 if model_admin.has_view_or_change_permission(request, found) else 403
    if kind == "password":
        if not model_admin.has_change_permission(request, found):
            return 403
        return 200 if found else 404
    allowed = (
        model_admin.has_delete_permission(request, found)
        if kind == "delete"
        else model_admin.has_view_or_change_permission(request, found)
    )
    if not allowed:
        return 403
    return 200 if found else HIDDEN


def _admin_cases():
    for p in ADMIN_PATTERNS:
        for role in PAGE_ROLES:
            yield pytest.param(p, role, id=f"{p.key or p.route}|{role}")


@pytest.mark.parametrize("p,role", list(_admin_cases()))
def test_admin_url_answers_each_role_as_django_decides(world, p, role):
    client = client_for(world, role)
    for method, path, obj in admin_requests(world, p):
        expected = admin_expected(world, p, role, obj)
        tenant = ADMIN_TENANT.get((p.key, role))
        if tenant is not None:
            assert expected == tenant, f"{path} as {role}: the admin's rule says {expected}, the boundary {tenant}"
        response = client.get(path) if method == GET else client.post(path)
        wrong = check(response, expected, path)
        assert wrong is None, f"{method} {path} as {role}: expected {expected}, got {wrong}"


# --- What the lists open to other tenants show: nothing of account A -----------------------------------
LISTS_WITHOUT_A = [
    ("manager_other", "/staff/"),
    ("manager_other", "/api/v1/staff/accounts"),
    ("manager_other", "/admin/accounts/account/"),
    ("manager_other", "/admin/accounts/apikey/"),
    ("manager_other", "/admin/accounts/auditlogentry/"),
    ("manager_other", "/admin/accounts/user/"),
    ("billing_admin_b", "/portal/"),
    ("billing_admin_b", "/portal/api-keys/"),
    ("billing_admin_b", "/portal/resolutions/"),
    ("billing_admin_b", "/portal/resolutions/export.csv"),
    ("billing_admin_b", "/api/v1/account"),
    ("billing_admin_b", "/api/v1/resolutions"),
    ("key_b", "/api/v1/account"),
    ("key_b", "/api/v1/resolutions"),
    ("key_b", "/api/v1/credits"),
]


@pytest.mark.parametrize("role,path", LISTS_WITHOUT_A, ids=lambda v: v)
def test_a_list_open_to_another_tenant_shows_nothing_of_account_a(world, role, path):
    response = client_for(world, role).get(path)
    assert response.status_code == 200
    text = b"".join(response.streaming_content if response.streaming else [response.content]).decode()
    key = world.objects[ApiKey]
    markers = ["Matrix A", world.a.slug, key.prefix, "matrix-conv-a", "matrix-viewer-a"]
    if path == "/api/v1/credits":  # ids only: A's pack by its id
        markers.append(f'"id":{world.objects[CreditPack].pk},')
    for marker in markers:
        assert marker not in text, f"{path} as {role} shows {marker!r} of account A"
    # the same page as A's own people does show A: the markers are real
    own = "manager_a" if role.startswith("manager") else ("key_a" if role.startswith("key") else "viewer_a")
    mine = client_for(world, own).get(path)
    mine_text = b"".join(mine.streaming_content if mine.streaming else [mine.content]).decode()
    assert any(m in mine_text for m in (*markers, str(world.a.pk))), path


# --- dj-stripe's "custom action" URL: routed by dj-stripe for every one of its ModelAdmins, behind nothing but
# is_staff (no model permission, any method name of the view as the action). The portal's admin of Stripe
# objects is read-only, so the URL must not exist: an account manager of another book could otherwise cancel
# account A's Stripe subscription (`_cancel`) or re-sync every object from Stripe, unaudited.
@pytest.mark.parametrize("role", ["manager_other", "manager_a", "admin"])
@pytest.mark.parametrize("action", ["_cancel", "_resync_instances", "_sync_all_instances"])
def test_djstripe_admin_actions_cannot_change_stripe_objects(world, role, action):
    from djstripe.models import Subscription

    subscription = Subscription.objects.get(customer__subscriber=world.a)
    path = f"/admin/djstripe/subscription/action/{action}/subscription/"
    selected = [action] if action == "_sync_all_instances" else [subscription.pk]
    before = fingerprint(world)
    response = client_for(world, role).post(path, {"_selected_action": selected})
    assert resolve(path).url_name != "djstripe_custom_action"
    # what answers now is the admin's old-style object URL (`<object_id>/` → its change page), not the action
    assert response.status_code == 302 and response.headers["Location"] == f"{path}change/", response
    assert fingerprint(world) == before
    in_stripe = stripe_client.call(
        "retrieve subscription", lambda c, o: c.v1.subscriptions.retrieve(subscription.id), idempotency_key=None
    )
    assert in_stripe.status == "active"


def test_every_portal_model_in_the_admin_is_visited_with_a_real_row(world):
    """The admin's object URLs of the portal's own models open real rows of the world (only dj-stripe models
    that the emulator run does not mirror fall back to the not-found answer)."""
    missing = sorted(
        model.__name__
        for model in admin.site._registry
        if model._meta.app_label in ("accounts", "credits", "resolutions") and _admin_object(world, model) is None
    )
    assert missing == []
