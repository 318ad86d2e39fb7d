"""Signed webhook deliveries that stripe-python's Webhook.construct_event accepts."""

from __future__ import annotations

import json
import time

import stripe

from .conftest import CLI_SECRET


def test_cli_webhook_url_receives_signed_customer_and_invoice_events(client, receiver, emulator):
    customer = client.v1.customers.create({"name": "Ada"})
    client.v1.products.create({"name": "not delivered"})  # product.* is not in the CLI URL's event set
    got = receiver.wait_for(1)
    assert len(got) == 1
    delivery = got[0]
    event = stripe.Webhook.construct_event(
        delivery["body"], delivery["headers"]["Stripe-Signature"], CLI_SECRET
    )
    assert isinstance(event, stripe.Event)
    assert event.type == "customer.created"
    assert event.data.object.id == customer.id
    assert event.pending_webhooks == 1
    emulator.webhooks.wait_idle()
    assert len(receiver.received) == 1


def test_endpoint_created_through_the_api_gets_matching_events(client, receiver, emulator):
    endpoint = client.v1.webhook_endpoints.create(
        {"url": receiver.url + "/endpoint", "enabled_events": ["product.created"]}
    )
    assert endpoint.secret.startswith("whsec_")
    assert "secret" not in client.v1.webhook_endpoints.retrieve(endpoint.id).last_response.data
    client.v1.products.create({"name": "Widget"})
    (delivery,) = receiver.wait_for(1)
    event = stripe.Webhook.construct_event(
        delivery["body"], delivery["headers"]["Stripe-Signature"], endpoint.secret
    )
    assert event.type == "product.created"
    try:
        stripe.Webhook.construct_event(
            delivery["body"], delivery["headers"]["Stripe-Signature"], "whsec_wrong"
        )
        raise AssertionError("a wrong secret must not verify")
    except stripe.SignatureVerificationError:
        pass


def test_wildcard_endpoint_and_retries_on_failure(client, receiver, emulator):
    emulator.webhooks.cli_url = None
    try:
        client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": ["*"]})
        receiver.statuses.extend([500, 503])
        client.v1.customers.create({"name": "Ada"})
        got = receiver.wait_for(3)
        assert [d["status"] for d in got] == [500, 503, 200]
        assert len({json.loads(d["body"])["id"] for d in got}) == 1
        emulator.webhooks.wait_idle()
        log = json.loads(json.dumps(emulator.webhooks.public_log()))
        assert log[-1]["attempts"] == 3 and log[-1]["delivered"] is True
    finally:
        emulator.webhooks.cli_url = receiver.url


def test_delay_and_duplicate_knobs(raw, client, receiver, emulator):
    raw.control("POST", "webhooks", {"delay_seconds": 0.4, "duplicate": True})
    started = time.time()
    client.v1.customers.create({"name": "Ada"})
    got = receiver.wait_for(2)
    assert len(got) == 2
    assert all(d["at"] - started >= 0.35 for d in got)
    assert json.loads(got[0]["body"])["id"] == json.loads(got[1]["body"])["id"]
    deliveries = raw.control("GET", "webhooks")[1]["deliveries"]
    assert len(deliveries) == 2 and all(d["delivered"] for d in deliveries)


def test_subscription_and_invoice_events_are_delivered(client, receiver, emulator):
    product = client.v1.products.create({"name": "Seat"})
    price = client.v1.prices.create(
        {"currency": "usd", "product": product.id, "unit_amount": 500, "recurring": {"interval": "month"}}
    )
    customer = client.v1.customers.create({})
    client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    emulator.webhooks.wait_idle()
    types = [json.loads(d["body"])["type"] for d in receiver.received]
    assert types == [
        "customer.created",
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
