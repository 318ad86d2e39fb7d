"""create_account: account, Stripe customer, subscription (seats + metered resolutions), dj-stripe rows."""

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from djstripe.models import Customer, Subscription

from accounts.models import Account, ApiKey, AuditLogEntry, PricePlan
from billing_portal import stripe_client

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def create_account(*args):
    out = StringIO()
    call_command("create_account", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def stripe_customers():
    return stripe_client.call(
        "list", lambda c, o: c.v1.customers.list(params={"limit": 100}), idempotency_key=None
    ).data


def test_create_account_makes_everything_and_prints_the_contract(stripe_emulator, api_client):
    result = create_account("--name", "Initech", "--plan", "fin-standard", "--seats", "12")
    assert set(result) == {"account_id", "api_key", "stripe_customer_id"}
    account = Account.objects.get(pk=result["account_id"])
    assert account.status == "active" and account.plan_version == PricePlan.objects.get().current_version()

    (customer,) = stripe_customers()
    assert customer.id == result["stripe_customer_id"] and customer.name == "Initech"
    assert customer.metadata["djstripe_subscriber"] == str(account.pk)
    subscription = stripe_client.call(
        "list", lambda c, o: c.v1.subscriptions.list(params={"customer": customer.id}), idempotency_key=None
    ).data[0]
    items = {i.price.lookup_key: i for i in subscription["items"].data}
    assert items["fin-standard-v1-seat"].quantity == 12
    assert items["fin-standard-v1-resolution"].price.recurring.usage_type == "metered"

    # mirrored in dj-stripe's tables, linked to the account
    local_customer = Customer.objects.get(id=customer.id)
    assert local_customer.subscriber == account
    local_subscription = Subscription.objects.get(id=subscription.id)
    assert local_subscription.customer == local_customer
    assert {i.price.lookup_key: i.quantity for i in local_subscription.items.all()}["fin-standard-v1-seat"] == 12

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {result['api_key']}")
    assert api_client.get("/api/v1/account").json()["name"] == "Initech"
    assert AuditLogEntry.objects.filter(action="account.provision", account=account).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "X", "--plan", "no-such-plan"], "No price plan 'no-such-plan'"),
        (["--name", "   ", "--plan", "fin-standard"], "name: An account needs a name."),
        (["--name", "X", "--plan", "fin-standard", "--manager", "ghost"], "No staff user 'ghost'"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(stripe_emulator, args, message):
    with pytest.raises(CommandError, match=message):
        create_account(*args)
    assert not Account.objects.exists() and not ApiKey.objects.exists()
    assert stripe_customers() == []


def test_seats_must_be_a_whole_non_negative_number(stripe_emulator):
    for bad in ["-1", "abc", "2.5"]:
        with pytest.raises(CommandError, match="seats"):
            create_account("--name", "X", "--plan", "fin-standard", "--seats", bad)
    assert not Account.objects.exists()


def test_a_stripe_outage_mid_way_leaves_nothing_behind(stripe_emulator, settings):
    settings.STRIPE_MAX_RETRIES = 2
    stripe_emulator.add_fault(path_prefix="/v1/subscriptions", method="POST", mode="500", count=10)
    with pytest.raises(CommandError, match="Nothing was kept; run the command again"):
        create_account("--name", "Hooli", "--plan", "fin-standard", "--seats", "3")
    assert not Account.objects.filter(name="Hooli").exists()
    assert not ApiKey.objects.exists() and not Customer.objects.exists()
    assert stripe_customers() == []  # the customer made before the failure was deleted again
    assert AuditLogEntry.objects.filter(action="account.provision_failed").exists()

    stripe_emulator.faults.clear()
    result = create_account("--name", "Hooli", "--plan", "fin-standard", "--seats", "3")
    assert [c.id for c in stripe_customers()] == [result["stripe_customer_id"]]


def test_a_lost_response_is_retried_with_the_same_key_and_makes_one_customer(stripe_emulator):
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode="500_after_record", count=1)
    stripe_emulator.add_fault(path_prefix="/v1/subscriptions", method="POST", mode="500_after_record", count=1)
    result = create_account("--name", "Pied Piper", "--plan", "fin-standard", "--seats", "1")
    assert [c.id for c in stripe_customers()] == [result["stripe_customer_id"]]
    posts = [r for r in stripe_emulator.requests.list() if r["method"] == "POST" and r["path"] == "/v1/subscriptions"]
    assert len(posts) == 2 and posts[0]["idempotency_key"] == posts[1]["idempotency_key"]
    subs = stripe_client.call("s", lambda c, o: c.v1.subscriptions.list(), idempotency_key=None).data
    assert len(subs) == 1


def test_the_command_line_prints_one_error_line_and_exits_non_zero(db):
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        database_url = f"sqlite:///{settings_dict['NAME']}"
    else:
        database_url = (
            f"postgres://{settings_dict['USER']}@{settings_dict['HOST'] or '127.0.0.1'}:{settings_dict['PORT'] or 5432}"
            f"/{settings_dict['NAME']}"
        )
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "billing_portal.settings_test"}
    result = subprocess.run(
        [sys.executable, "manage.py", "create_account", "--name", "X", "--plan", "nope", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == ["CommandError: No price plan 'nope' (known: fin-standard)."]
