"""The Stripe client module against the emulator over HTTP: retries, backoff, idempotency keys, failures."""

import time
from types import SimpleNamespace

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


@pytest.fixture
def sleeps(monkeypatch):
    """The waits `call` makes between attempts, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(stripe_client, "time", SimpleNamespace(sleep=recorded.append))
    return recorded


@pytest.mark.parametrize("mode", ["429", "500"])
def test_rate_limits_and_server_errors_are_retried_with_the_same_key(stripe_emulator, sleeps, mode):
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode=mode, count=2)
    customer = create_customer()
    assert customer.name == "Retry Inc"
    posts = customer_posts(stripe_emulator)
    assert len(posts) == 3
    assert {p["idempotency_key"] for p in posts} == {"test:customer:1"}
    assert len(all_customers()) == 1
    assert len(sleeps) == 2
    if mode == "429":  # the emulator's 429 asks for Retry-After: 1
        assert all(s >= 1 for s in sleeps)


def test_a_429_waits_at_least_its_retry_after(stripe_emulator, settings, sleeps):
    settings.STRIPE_RETRY_AFTER_CAP_SECONDS = 5
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode="429", count=2, retry_after=3)
    create_customer()
    assert len(customer_posts(stripe_emulator)) == 3
    # Backoff alone would be 0.01–0.04s (base 0.01 in tests): the server's ask wins.
    assert len(sleeps) == 2 and all(3 <= s < 3.1 for s in sleeps)


def test_retry_after_is_really_waited_for(stripe_emulator):
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode="429", retry_after=0.3)
    started = time.monotonic()
    create_customer()
    assert time.monotonic() - started >= 0.3
    assert len(customer_posts(stripe_emulator)) == 2


def test_without_retry_after_the_backoff_is_exponential_with_jitter(stripe_emulator, settings, sleeps):
    settings.STRIPE_BACKOFF_BASE_SECONDS = 0.1
    settings.STRIPE_BACKOFF_CAP_SECONDS = 0.3
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode="429", count=3, retry_after=None)
    create_customer()
    assert len(sleeps) == 3
    for sleep, full in zip(sleeps, [0.1, 0.2, 0.3], strict=True):  # base × 2^attempt, capped
        assert full / 2 <= sleep <= full


def test_a_retry_after_beyond_the_cap_ends_the_call_with_it(stripe_emulator, settings, sleeps):
    settings.STRIPE_RETRY_AFTER_CAP_SECONDS = 2
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode="429", count=5, retry_after=30)
    with pytest.raises(StripeUnavailable) as info:
        create_customer()
    assert info.value.retryable and info.value.http_status == 429
    assert info.value.retry_after == 30
    assert "after 1 attempts" in str(info.value) and "wait 30s" in str(info.value)
    assert sleeps == [] and len(customer_posts(stripe_emulator)) == 1


def test_an_outage_of_429s_ends_with_the_last_retry_after(stripe_emulator, settings, sleeps):
    settings.STRIPE_MAX_RETRIES = 2
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode="429", count=5, retry_after=1)
    with pytest.raises(StripeUnavailable) as info:
        create_customer()
    assert info.value.retry_after == 1.0 and "after 3 attempts" in str(info.value)
    assert len(sleeps) == 2 and len(customer_posts(stripe_emulator)) == 3


@pytest.mark.parametrize("mode", ["429", "500"])
def test_stripe_should_retry_false_is_not_retried(stripe_emulator, sleeps, mode):
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode=mode, count=3, should_retry=False)
    with pytest.raises(StripeRejected) as info:
        create_customer()
    assert not info.value.retryable and info.value.http_status == int(mode)
    assert info.value.retry_after == (1.0 if mode == "429" else None)
    assert sleeps == [] and len(customer_posts(stripe_emulator)) == 1


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
    assert info.value.retry_after is None  # a 500 asks for no particular wait
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


def test_webhook_signature_dated_ahead_is_refused_as_well_as_one_dated_behind():
    import time

    import stripe

    payload = '{"id": "evt_1"}'

    def header(at: int) -> str:
        return f"t={at},v1={stripe.WebhookSignature._compute_signature(f'{at}.{payload}', 'whsec_abc')}"

    now = int(time.time())
    assert stripe_client.webhook_signature_valid(payload.encode(), header(now + 200), "whsec_abc", tolerance=300)
    assert not stripe_client.webhook_signature_valid(payload.encode(), header(now + 400), "whsec_abc", tolerance=300)
    assert not stripe_client.webhook_signature_valid(payload.encode(), header(now - 400), "whsec_abc", tolerance=300)
