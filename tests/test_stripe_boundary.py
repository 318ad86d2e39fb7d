"""No Stripe HTTP call inside a database transaction: the guard in stripe_client (ours and dj-stripe's
calls), stripe_client.mirror for dj-stripe's syncs, and the paths that used to call Stripe while a
transaction was open (provisioning, webhook processing, webhook endpoint registration)."""

import json
import logging
import time

import pytest
import stripe  # tests sign payloads the way Stripe does
from django.db import transaction
from django.dispatch import receiver
from djstripe.models import Customer, Event, Subscription, WebhookEventTrigger
from djstripe.signals import webhook_post_process

from accounts.models import Account
from accounts.services.provisioning import account_provision
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure
from billing_portal import stripe_client
from billing_portal.stripe_client import StripeCallInTransaction

pytestmark = pytest.mark.django_db


@pytest.fixture
def strict(settings):
    """The guard raises (as in the whole suite: settings_test), whatever a test's settings say."""
    settings.STRIPE_FORBID_CALLS_IN_TRANSACTION = True


def customer_create(name="Umbrella", key="boundary:customer"):
    return stripe_client.call(
        "create customer", lambda c, o: c.v1.customers.create(params={"name": name}, options=o), idempotency_key=key
    )


def customers_list():
    return stripe_client.call(
        "list customers", lambda c, o: c.v1.customers.list(params={"limit": 100}), idempotency_key=None
    )


def requests_to(emulator, method, prefix):
    return [r for r in emulator.requests.list() if r["method"] == method and r["path"].startswith(prefix)]


def test_the_whole_suite_runs_with_the_guard_raising():
    from django.conf import settings

    assert settings.STRIPE_FORBID_CALLS_IN_TRANSACTION is True


def test_our_call_inside_a_transaction_is_refused_before_it_reaches_stripe(stripe_emulator, strict):
    with pytest.raises(StripeCallInTransaction, match=r"list customers, GET /v1/customers"):
        with transaction.atomic():
            customers_list()
    assert requests_to(stripe_emulator, "GET", "/v1/customers") == []
    assert customers_list().data == []  # outside a transaction (the test's own wrapping atomic aside) it is fine


def test_a_write_inside_a_transaction_is_refused_and_creates_nothing(stripe_emulator, strict):
    with pytest.raises(StripeCallInTransaction, match=r"create customer, POST /v1/customers"):
        with transaction.atomic():
            customer_create()
    assert customers_list().data == []


@pytest.mark.django_db(transaction=True)
def test_the_guard_holds_without_a_test_case_transaction_too(stripe_emulator, strict):
    customer_create("Outside")  # no transaction at all: allowed
    with pytest.raises(StripeCallInTransaction), transaction.atomic():
        customer_create("Inside", key="boundary:inside")
    assert [c.name for c in customers_list().data] == ["Outside"]


def test_djstripe_calls_through_stripe_python_globals_are_guarded_too(stripe_emulator, strict):
    customer = customer_create()
    with pytest.raises(StripeCallInTransaction, match=r"dj-stripe, GET /v1/customers/"), transaction.atomic():
        Customer(id=customer.id).api_retrieve()


def test_djstripe_sync_reads_stripe_inside_its_own_transaction_so_it_runs_in_mirror(stripe_emulator, strict):
    customer = customer_create()
    # dj-stripe opens transaction.atomic() itself and, in it, reads what the customer refers to:
    with pytest.raises(StripeCallInTransaction):
        Customer.sync_from_stripe_data(customer)
    assert not Customer.objects.filter(id=customer.id).exists()

    local = stripe_client.mirror(lambda: Customer.sync_from_stripe_data(customer))
    assert Customer.objects.get(id=customer.id) == local and local.name == "Umbrella"
    assert requests_to(stripe_emulator, "GET", "/v1/account")  # the reads were made, outside the transaction


def test_mirror_inside_someone_elses_transaction_is_still_refused(stripe_emulator, strict):
    customer = customer_create()
    with pytest.raises(StripeCallInTransaction), transaction.atomic():
        stripe_client.mirror(lambda: Customer.sync_from_stripe_data(customer))
    assert not Customer.objects.filter(id=customer.id).exists()


def test_outside_tests_a_mirror_inside_a_transaction_still_syncs_and_logs_each_read(stripe_emulator, settings, caplog):
    settings.STRIPE_FORBID_CALLS_IN_TRANSACTION = False
    customer = customer_create()
    with caplog.at_level(logging.ERROR, logger="billing_portal.stripe_client"), transaction.atomic():
        local = stripe_client.mirror(lambda: Customer.sync_from_stripe_data(customer))
    assert Customer.objects.get(id=customer.id) == local
    logged = [r.getMessage() for r in caplog.records if r.name == "billing_portal.stripe_client"]
    assert logged and all("dj-stripe, GET /v1/" in message for message in logged)


def test_mirror_replays_reads_only_a_write_in_it_is_refused(stripe_emulator, strict):
    with pytest.raises(StripeCallInTransaction, match="create customer"):
        stripe_client.mirror(customer_create)
    assert customers_list().data == []


def test_outside_tests_a_call_in_a_transaction_is_logged_with_its_operation(stripe_emulator, settings, caplog):
    settings.STRIPE_FORBID_CALLS_IN_TRANSACTION = False
    with caplog.at_level(logging.ERROR, logger="billing_portal.stripe_client"), transaction.atomic():
        assert customers_list().data == []  # the call goes on
    (record,) = [r for r in caplog.records if r.name == "billing_portal.stripe_client"]
    assert record.levelno == logging.ERROR
    assert "inside a database transaction (default): list customers, GET /v1/customers" in record.getMessage()


def test_provisioning_makes_no_stripe_call_while_a_transaction_is_open(stripe_emulator, strict, default_plan):
    """Fails on the code before the guard's fixes: dj-stripe's sync read Stripe (six GETs) while the
    account row was locked, and the guard turned that into a failed provisioning."""
    provisioned = account_provision(name="Initech", plan=default_plan, seats=3, actor="test")
    account = Account.objects.get(pk=provisioned.account.pk)
    assert account.status == Account.Status.ACTIVE
    customer = Customer.objects.get(id=provisioned.stripe_customer_id)
    assert customer.subscriber == account
    subscription = Subscription.objects.get(id=provisioned.stripe_subscription_id)
    assert subscription.customer == customer
    assert sorted(i.price.recurring["usage_type"] for i in subscription.items.all()) == ["licensed", "metered"]
    # dj-stripe did read from Stripe (the objects the subscription refers to), only never in a transaction
    assert requests_to(stripe_emulator, "GET", "/v1/")


# --- Webhooks: dj-stripe re-reads the event's object; the portal makes that read before the transaction --
@pytest.fixture
def endpoint(stripe_emulator, strict):
    return stripe_webhook_endpoint_ensure(base_url="http://testserver")


def deliver(client, endpoint, event: dict):
    payload = json.dumps(event, default=str)  # *_decimal fields: strings, as Stripe sends them
    at = int(time.time())
    signature = f"t={at},v1={stripe.WebhookSignature._compute_signature(f'{at}.{payload}', endpoint.secret)}"
    return client.post(
        f"/stripe/webhook/{endpoint.djstripe_uuid}/", data=payload, content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature,
    )  # fmt: skip


def stripe_event(type_):
    events = stripe_client.call(
        "list events", lambda c, o: c.v1.events.list(params={"type": type_, "limit": 1}), idempotency_key=None
    )
    return events.data[0].to_dict()


def test_a_subscription_event_is_synced_with_its_reads_made_outside_the_transaction(
    client, endpoint, stripe_emulator, default_plan
):
    provisioned = account_provision(name="Hooli", plan=default_plan, seats=2, actor="test")
    Customer.objects.all().delete()  # as if the webhook came first: dj-stripe must read customer, prices, …
    event = stripe_event("customer.subscription.created")
    before = len(requests_to(stripe_emulator, "GET", "/v1/"))
    response = deliver(client, endpoint, event)
    assert response.status_code == 200
    trigger = WebhookEventTrigger.objects.get(id=int(response.content))
    assert trigger.valid and trigger.processed and trigger.event_id == event["id"]
    subscription = Subscription.objects.get(id=provisioned.stripe_subscription_id)
    assert subscription.customer.subscriber_id == provisioned.account.pk
    assert len(requests_to(stripe_emulator, "GET", "/v1/")) > before  # dj-stripe's re-read did happen


def test_a_failing_webhook_keeps_its_trigger_and_the_error_but_nothing_it_processed(client, endpoint):
    customer = customer_create("Fails")
    event = stripe_event("customer.created")

    @receiver(webhook_post_process, dispatch_uid="test.boundary.fails")
    def fail(sender, instance, **kwargs):
        raise RuntimeError("receiver broke")

    try:
        with pytest.raises(RuntimeError, match="receiver broke"):
            deliver(client, endpoint, event)
    finally:
        webhook_post_process.disconnect(dispatch_uid="test.boundary.fails")
    trigger = WebhookEventTrigger.objects.get()
    assert trigger.exception == "receiver broke" and not trigger.processed and "RuntimeError" in trigger.traceback
    assert not Event.objects.filter(id=event["id"]).exists() and not Customer.objects.filter(id=customer.id).exists()

    response = deliver(client, endpoint, event)  # Stripe delivers again: now it goes through
    assert response.status_code == 200 and Customer.objects.get(id=customer.id).name == "Fails"
