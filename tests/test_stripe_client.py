"""The Stripe client module against the emulator over HTTP: retries, backoff, idempotency keys, failures."""

import pytest

from billing_portal import stripe_client
from billing_portal.stripe_client import StripeRejected, StripeUnavailable


def create_customer(name="Retry Inc", key="test:customer:1"):
    return stripe_client.call(
        "create customer", lambda c, o: c.v1.customers.create(params={"name": name}, options=o), idempotency_key=key
    )


def customer_posts(emulator):
    return [r for r in emulator.requests.list() if r["method"] == "POST" and r["path"] == "/v1/customers"]


def all_customers():
    return stripe_client.call(
        "list", lambda c, o: c.v1.customers.list(params={"limit": 100}), idempotency_key=None
    ).data


@pytest.mark.parametrize("mode", ["429", "500"])
def test_rate_limits_and_server_errors_are_retried_with_the_same_key(stripe_emulator, mode):
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode=mode, count=2)
    customer = create_customer()
    assert customer.name == "Retry Inc"
    posts = customer_posts(stripe_emulator)
    assert len(posts) == 3
    assert {p["idempotency_key"] for p in posts} == {"test:customer:1"}
    assert len(all_customers()) == 1


def test_accepted_but_lost_response_is_retried_without_a_duplicate(stripe_emulator):
    # Stripe stored the customer, then the answer was lost: the retry replays the stored result.
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode="500_after_record", count=1)
    customer = create_customer()
    assert [c.id for c in all_customers()] == [customer.id]


def test_a_hang_past_the_timeout_is_retried(stripe_emulator, settings):
    settings.STRIPE_TIMEOUT_SECONDS = 0.5
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode="hang", count=1, hang_seconds=1.5)
    customer = create_customer()
    assert len(customer_posts(stripe_emulator)) == 2
    assert [c.id for c in all_customers()] == [customer.id]


def test_persistent_outage_ends_in_a_retryable_failure(stripe_emulator, settings):
    settings.STRIPE_MAX_RETRIES = 3
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode="500", count=10)
    with pytest.raises(StripeUnavailable) as info:
        create_customer()
    assert info.value.retryable and "after 4 attempts" in str(info.value)
    assert len(customer_posts(stripe_emulator)) == 4
    # The outage ends: the same call, same key, now succeeds once.
    stripe_emulator.faults.clear()
    create_customer()
    assert len(all_customers()) == 1


def test_a_rejected_request_is_not_retried(stripe_emulator):
    with pytest.raises(StripeRejected) as info:
        stripe_client.call(
            "create customer",
            lambda c, o: c.v1.customers.create(params={"colour": "blue"}, options=o),
            idempotency_key="test:bad",
        )
    assert not info.value.retryable and info.value.http_status == 400
    assert "colour" in str(info.value)
    assert len(customer_posts(stripe_emulator)) == 1


def test_the_pinned_api_version_is_sent(stripe_emulator, settings):
    create_customer()
    assert {r["stripe_version"] for r in stripe_emulator.requests.list()} == {settings.STRIPE_API_VERSION}


def test_webhook_signature_check():
    import time

    import stripe  # tests may build signatures the way Stripe does

    payload = b'{"id": "evt_1"}'
    timestamp = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{timestamp}.{payload.decode()}", "whsec_abc")
    header = f"t={timestamp},v1={signature}"
    assert stripe_client.webhook_signature_valid(payload, header, "whsec_abc")
    assert not stripe_client.webhook_signature_valid(payload, header, "whsec_other")
    assert not stripe_client.webhook_signature_valid(b'{"id": "evt_2"}', header, "whsec_abc")
    assert not stripe_client.webhook_signature_valid(payload, "", "whsec_abc")
    hour_ago = timestamp - 3600
    old = f"t={hour_ago},v1={stripe.WebhookSignature._compute_signature(f'{hour_ago}.{payload.decode()}', 'whsec_abc')}"
    assert not stripe_client.webhook_signature_valid(payload, old, "whsec_abc", tolerance=300)
