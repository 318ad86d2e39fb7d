"""Schemathesis against /api/schema/, in process (issue 13): every operation of the API, as the three kinds of
caller (an account's API key, a logged-in customer billing admin, a logged-in admin), with inputs generated from
the schema (valid ones, and invalid ones the API must refuse). For every answer: no 5xx, its status code is
documented for the operation, its content type is the documented one, its body matches the documented schema,
its documented headers (429's Retry-After) are there, and a request the schema says is invalid was refused (a
4xx: negative_data_rejection). No check is excluded.

The world is seeded so that reads return real objects: an account provisioned in the Stripe emulator, with
conversation events, resolutions (credit-funded and overage), credit packs and a price simulation, and a second
account for the staff lists. Path parameters are drawn both from the schema and from the seeded objects' ids, so
that the operations on one object reach their code and not only their 404.

Each caller sends its own credentials, so schemathesis does not generate the security scheme's (a random bearer
token would only ever be a 401, which tests/test_api_robustness.py covers).

Bounded and deterministic: MAX_EXAMPLES per operation and generation mode, hypothesis derandomized, the clock
frozen (the emulator's too).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import os
from dataclasses import dataclass, field
from io import StringIO

import pytest
import schemathesis
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import PricePlan
from accounts.services.provisioning import account_provision
from billing_portal import clock
from billing_portal.wsgi import application
from credits.services import credit_pack_grant
from resolutions.models import Resolution
from resolutions.services import resolutions_fund
from tests.factories import AccountFactory, AdminUserFactory, BillingAdminFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
# Per operation and generation mode: the file stays under ~3 minutes on 2 loaded cores. More for a deeper run:
# SCHEMA_FUZZ_EXAMPLES=200 pytest tests/test_api_schema_fuzz.py (still deterministic: hypothesis is derandomized).
MAX_EXAMPLES = int(os.environ.get("SCHEMA_FUZZ_EXAMPLES", "8"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
CSRF_TOKEN = "fuzz0csrf0secret0of0the0schema00"  # Django takes an unmasked secret (32 letters and digits)


@contextlib.contextmanager
def requests_keep_the_connection():
    """Schemathesis calls the WSGI application itself, whose request signals would close the test's database
    connection (and its transaction) after every request: Django's test Client disconnects them the same way
    (and connects them again after each of its requests, hence this around every run)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture(scope="module")
def api_schema(django_db_blocker):
    with django_db_blocker.unblock(), requests_keep_the_connection():
        schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    schema.config.generation.update(with_security_parameters=False)
    return schema


@dataclass
class World:
    raw_key: str
    billing_admin: object
    admin: object
    ids: dict[str, object] = field(default_factory=dict)
    bodies: dict[str, list] = field(default_factory=dict)


def _events(n: int) -> list[dict]:
    events = []
    for i in range(n):
        at = NOW - dt.timedelta(hours=2 + i)
        kinds = [("ai_answer", at - dt.timedelta(minutes=1))]
        if i % 4 != 3:  # every fourth conversation stays open
            kinds.append(("customer_confirmed", at))
        for kind, when in kinds:
            events.append(
                {"id": f"{kind}-{i}", "conversation_id": f"conv-{i}", "type": kind, "occurred_at": when.isoformat()}
            )
    return events


@pytest.fixture
def world(stripe_emulator, api_client):
    stripe_emulator.set_time(int(NOW.timestamp()))
    with clock.frozen(NOW):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
        plan = PricePlan.objects.get(slug="fin-standard")
        provisioned = account_provision(name="Fuzz Support", plan=plan, seats=200, actor="test")  # many conversions
        account = provisioned.account
        admin = AdminUserFactory(username="fuzz-admin")
        billing_admin = BillingAdminFactory(account=account, username="fuzz-billing")
        AccountFactory(name="Other Helpdesk", slug="other-helpdesk")
        credit_pack_grant(
            account=account,
            quantity=5,
            source="promotional",
            actor=admin,
            reason="fuzz seed",
            starts_at=NOW - dt.timedelta(days=1),
        )
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {provisioned.raw_api_key}")
        response = api_client.post("/api/v1/conversation-events", {"events": _events(12)}, format="json")
        assert response.status_code == 202, response.content
        api_client.credentials()
        resolutions_fund(now=NOW)
        resolutions = Resolution.objects.filter(account=account)
        assert {r.funding for r in resolutions} >= {"credit", "overage"}, "the seed must fund both ways"
        version = account.plan_version
        ids = {
            "account_id": account.pk,
            "key_id": provisioned.api_key.pk,
            "resolution_id": resolutions.order_by("pk").first().pk,
            "version_id": version.pk,
            "slug": plan.slug,
        }
        ids.update(_seed_simulation(admin, account, version))
        yield World(
            raw_key=provisioned.raw_api_key, billing_admin=billing_admin, admin=admin, ids=ids,
            bodies=_bodies(account, version),
        )  # fmt: skip


def _bodies(account, version) -> dict[str, list]:
    """Valid bodies that reach the seeded objects (and Stripe), beside the generated ones: random text rarely
    names a real offer or version, or an instant within ingestion's 35 days."""
    offer = {"offer_id": version.offers.get().pk}
    event = {"id": "fuzz-1", "conversation_id": "fuzz-c1", "type": "ai_answer", "occurred_at": NOW.isoformat()}
    conflicting = {**_events(1)[0], "type": "handoff"}  # a seeded event's id with another payload: 409
    return {
        "POST /api/v1/conversation-events": [event, {"events": _events(3)}, conflicting],
        "POST /api/v1/credit-purchases": [offer],
        "POST /api/v1/staff/accounts/{account_id}/credit-purchases": [offer],
        "POST /api/v1/staff/accounts/{account_id}/credit-grants": [{"quantity": 10, "reason": "goodwill"}],
        "POST /api/v1/staff/accounts/{account_id}/seat-conversions/preview": [{"seats": 1}],
        "POST /api/v1/staff/accounts/{account_id}/seat-conversions": [{"seats": 1}],
        "POST /api/v1/staff/price-simulations": [{"version_id": version.pk}],
        "POST /api/v1/staff/plan-migrations": [{"to_version_id": version.pk, "account_ids": [account.pk]}],
        "POST /api/v1/staff/resolutions/{resolution_id}/void": [{"reason": "a duplicate conversation"}],
    }


def _seed_simulation(admin, account, version) -> dict:
    """A price simulation, through its API (admin), for its path id."""
    client = Client()
    client.force_login(admin)
    ids = {}
    response = client.post(
        "/api/v1/staff/price-simulations",
        {"version_id": version.pk},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    ids["simulation_id"] = response.json()["id"]
    return ids


def _session_caller(user) -> dict:
    """A logged-in browser: the session and CSRF cookies, and the CSRF header unsafe methods need."""
    client = Client()
    client.force_login(user)
    cookies = {"sessionid": client.cookies["sessionid"].value, "csrftoken": CSRF_TOKEN}
    return {"headers": {"X-CSRFToken": CSRF_TOKEN}, "cookies": cookies}


def _run_every_operation(api_schema, caller: dict, world: World) -> dict[str, set[int]]:
    failures, unbreakable = [], []
    statuses = collections.defaultdict(set)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 30, "every operation of the API is in the schema"
    for operation in operations:
        names = {parameter.name for parameter in operation.path_parameters}
        known = {name: world.ids[name] for name in names if name in world.ids}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies = [operation.as_strategy(generation_mode=mode)]
            if known.keys() == names and mode is GenerationMode.POSITIVE:
                if names:
                    strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=known))
                for body in world.bodies.get(operation.label, []):
                    strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=known, body=body))
            strategy = st.one_of(*strategies)

            @given(case=strategy)
            @settings(
                max_examples=MAX_EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            def check(case):
                with clock.frozen(NOW):
                    response = case.call_and_validate(checks=CHECKS, **caller)
                statuses[operation.label].add(response.status_code)  # noqa: B023 - called below, in this iteration

            try:
                with requests_keep_the_connection():
                    check()
            except Unsatisfiable:
                # Nothing to make invalid (no parameter, no body): only the negative mode may find none.
                if mode is GenerationMode.POSITIVE:
                    failures.append(f"{operation.label} [{mode.value}]: no valid input could be generated")
                else:
                    unbreakable.append(operation.label)
            except (Exception, BaseExceptionGroup) as failure:  # every operation's failure is reported, not the first
                failures.append(f"{operation.label} [{mode.value}]: {failure}")
    assert len(unbreakable) < 10, f"negative mode ran for too few operations: {unbreakable}"
    assert not failures, f"{len(failures)} operation(s) failed:\n\n" + "\n\n".join(failures)
    return statuses


def succeeded(statuses: dict[str, set[int]]) -> set[str]:
    return {label for label, codes in statuses.items() if any(200 <= code < 300 for code in codes)}


# What each caller must have done successfully at least once: the run reached the views, not only their 401/403.
CUSTOMER_READS = {"GET /api/v1/account", "GET /api/v1/credits", "GET /api/v1/resolutions", "GET /api/v1/usage"}


def test_the_api_conforms_to_its_schema_for_an_api_key(api_schema, world):
    statuses = _run_every_operation(api_schema, {"headers": {"Authorization": f"Bearer {world.raw_key}"}}, world)
    assert succeeded(statuses) == CUSTOMER_READS | {"POST /api/v1/conversation-events"}
    assert 409 in statuses["POST /api/v1/conversation-events"]  # same id, another payload


def test_the_api_conforms_to_its_schema_for_a_customer_billing_admin(api_schema, world):
    statuses = _run_every_operation(api_schema, _session_caller(world.billing_admin), world)
    assert succeeded(statuses) >= CUSTOMER_READS | {
        "GET /api/v1/api-keys", "POST /api/v1/api-keys", "GET /api/v1/api-keys/{key_id}",
        "POST /api/v1/api-keys/{key_id}/revoke", "POST /api/v1/credit-purchases",
    }  # fmt: skip
    assert not {label for label in succeeded(statuses) if "/staff/" in label}


def test_the_api_conforms_to_its_schema_for_an_admin(api_schema, world):
    statuses = _run_every_operation(api_schema, _session_caller(world.admin), world)
    assert succeeded(statuses) >= {
        "GET /api/v1/staff/accounts", "GET /api/v1/staff/accounts/{account_id}",
        "GET /api/v1/staff/accounts/{account_id}/credits", "GET /api/v1/staff/accounts/{account_id}/invoice-preview",
        "POST /api/v1/staff/accounts/{account_id}/credit-grants",
        "POST /api/v1/staff/accounts/{account_id}/credit-purchases",
        "POST /api/v1/staff/accounts/{account_id}/seat-conversions/preview",
        "POST /api/v1/staff/accounts/{account_id}/seat-conversions",
        "GET /api/v1/staff/price-plans", "GET /api/v1/staff/price-plans/{slug}/versions",
        "GET /api/v1/staff/price-plan-versions/{version_id}", "GET /api/v1/staff/price-simulations",
        "GET /api/v1/staff/price-simulations/{simulation_id}", "POST /api/v1/staff/price-simulations",
        "GET /api/v1/staff/plan-migrations", "POST /api/v1/staff/resolutions/{resolution_id}/void",
    }  # fmt: skip
    assert not succeeded(statuses) & CUSTOMER_READS
