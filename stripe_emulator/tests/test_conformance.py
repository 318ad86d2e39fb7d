"""Every object carries all top-level keys of Stripe's fixture for its resource, stripe-python 15 turns
each response into the right class, and every endpoint rejects unknown parameters like Stripe."""

from __future__ import annotations

import re
import time

import pytest
import stripe

from stripe_emulator.core import ROUTES

from .conftest import load_fixtures, make_metered

FIXTURES = load_fixtures()

EXPECTED_CLASS = {
    "account": stripe.Account,
    "customer": stripe.Customer,
    "deleted_customer": stripe.Customer,
    "product": stripe.Product,
    "deleted_product": stripe.Product,
    "price": stripe.Price,
    "plan": stripe.Plan,
    "subscription": stripe.Subscription,
    "subscription_item": stripe.SubscriptionItem,
    "deleted_subscription_item": stripe.SubscriptionItem,
    "invoiceitem": stripe.InvoiceItem,
    "deleted_invoiceitem": stripe.InvoiceItem,
    "invoice": stripe.Invoice,
    "deleted_invoice": stripe.Invoice,
    "line_item": stripe.InvoiceLineItem,
    "billing.meter": stripe.billing.Meter,
    "billing.meter_event": stripe.billing.MeterEvent,
    "billing.meter_event_adjustment": stripe.billing.MeterEventAdjustment,
    "billing.meter_event_summary": stripe.billing.MeterEventSummary,
    "webhook_endpoint": stripe.WebhookEndpoint,
    "deleted_webhook_endpoint": stripe.WebhookEndpoint,
    "event": stripe.Event,
}


def _raw(obj) -> dict:
    return obj.last_response.data


def build_world(client: stripe.StripeClient) -> dict[str, tuple[object, dict]]:
    """One object of every served resource: name -> (stripe-python object, raw JSON)."""
    out: dict[str, tuple[object, dict]] = {}
    v1 = client.v1
    account = v1.accounts.retrieve_current()
    out["account"] = (account, _raw(account))
    customer = v1.customers.create({"name": "Ada", "email": "ada@example.com"})
    out["customer"] = (customer, _raw(customer))
    meter, product, metered = make_metered(client)
    out["billing.meter"] = (meter, _raw(meter))
    out["product"] = (product, _raw(product))
    out["price"] = (metered, _raw(metered))
    seat = v1.prices.create(
        {"currency": "usd", "product": product.id, "unit_amount": 2000, "recurring": {"interval": "month"}}
    )
    sub = v1.subscriptions.create({"customer": customer.id, "items": [{"price": metered.id}]})
    out["subscription"] = (sub, _raw(sub))
    item = v1.subscription_items.create({"subscription": sub.id, "price": seat.id, "quantity": 2})
    out["subscription_item"] = (item, _raw(item))
    out["plan"] = (item.plan, _raw(item)["plan"])
    deleted_item = v1.subscription_items.delete(item.id, {"proration_behavior": "none"})
    out["deleted_subscription_item"] = (deleted_item, _raw(deleted_item))
    ii = v1.invoice_items.create({"customer": customer.id, "amount": 1500, "currency": "usd"})
    out["invoiceitem"] = (ii, _raw(ii))
    invoice = v1.invoices.create({"customer": customer.id, "pending_invoice_items_behavior": "include"})
    out["invoice"] = (invoice, _raw(invoice))
    out["line_item"] = (invoice.lines.data[0], _raw(invoice)["lines"]["data"][0])
    ii2 = v1.invoice_items.create({"customer": customer.id, "amount": 10, "currency": "usd"})
    deleted_ii = v1.invoice_items.delete(ii2.id)
    out["deleted_invoiceitem"] = (deleted_ii, _raw(deleted_ii))
    draft = v1.invoices.create({"customer": customer.id})
    deleted_invoice = v1.invoices.delete(draft.id)
    out["deleted_invoice"] = (deleted_invoice, _raw(deleted_invoice))
    event = v1.billing.meter_events.create(
        {"event_name": "resolution", "payload": {"stripe_customer_id": customer.id, "value": "3"}}
    )
    out["billing.meter_event"] = (event, _raw(event))
    adjustment = v1.billing.meter_event_adjustments.create(
        {"event_name": "resolution", "type": "cancel", "cancel": {"identifier": event.identifier}}
    )
    out["billing.meter_event_adjustment"] = (adjustment, _raw(adjustment))
    now = int(time.time()) // 60 * 60
    summaries = v1.billing.meters.event_summaries.list(
        meter.id, {"customer": customer.id, "start_time": now - 3600, "end_time": now + 60}
    )
    out["billing.meter_event_summary"] = (summaries.data[0], _raw(summaries)["data"][0])
    endpoint = v1.webhook_endpoints.create({"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]})
    out["webhook_endpoint"] = (endpoint, _raw(endpoint))
    deleted_endpoint = v1.webhook_endpoints.delete(endpoint.id)
    out["deleted_webhook_endpoint"] = (deleted_endpoint, _raw(deleted_endpoint))
    evt = v1.events.list({"limit": 1}).data[0]
    evt = v1.events.retrieve(evt.id)
    out["event"] = (evt, _raw(evt))
    spare = v1.products.create({"name": "spare"})
    deleted_product = v1.products.delete(spare.id)
    out["deleted_product"] = (deleted_product, _raw(deleted_product))
    deleted_customer = v1.customers.delete(v1.customers.create({"name": "gone"}).id)
    out["deleted_customer"] = (deleted_customer, _raw(deleted_customer))
    return out


@pytest.mark.parametrize("resource", sorted(EXPECTED_CLASS))
def test_carries_every_fixture_key_and_parses_to_the_right_class(client, resource):
    world = build_world(client)
    obj, raw = world[resource]
    missing = sorted(set(FIXTURES[resource]) - set(raw))
    assert not missing, f"{resource} lacks fixture keys {missing}"
    assert raw["object"] == FIXTURES[resource]["object"]
    assert isinstance(obj, EXPECTED_CLASS[resource]), type(obj)
    if "livemode" in FIXTURES[resource]:
        assert raw["livemode"] is False


def test_world_covers_every_resource_in_the_fixture_list(client):
    assert set(build_world(client)) == set(EXPECTED_CLASS)


def _all_endpoints():
    for route in ROUTES:
        path = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", "x_1", route.regex.pattern.strip("^$"))
        yield pytest.param(route.method, path, id=f"{route.method} {path}")


@pytest.mark.parametrize(("method", "path"), list(_all_endpoints()))
def test_every_endpoint_rejects_an_unknown_parameter(raw, method, path):
    status, body, _ = raw.call(method, path, {"foo_unknown": "1"})
    assert status == 400, body
    assert body["error"] == {
        "code": "parameter_unknown",
        "doc_url": "https://stripe.com/docs/error-codes/parameter-unknown",
        "message": "Received unknown parameter: foo_unknown",
        "param": "foo_unknown",
        "request_log_url": body["error"]["request_log_url"],
        "type": "invalid_request_error",
    }


@pytest.mark.parametrize(
    ("path", "data", "param"),
    [
        (
            "/v1/prices",
            {"currency": "usd", "recurring[interval]": "month", "recurring[foo]": "1"},
            "recurring[foo]",
        ),
        (
            "/v1/subscriptions",
            {"customer": "cus_x", "items[0][price]": "p", "items[0][bogus]": "1"},
            "items[0][bogus]",
        ),
        (
            "/v1/billing/meters",
            {
                "display_name": "a",
                "event_name": "b",
                "default_aggregation[formula]": "sum",
                "default_aggregation[x]": "1",
            },
            "default_aggregation[x]",
        ),
        ("/v1/invoiceitems", {"customer": "cus_x", "price": "price_x"}, "price"),
    ],
)
def test_nested_unknown_parameters_are_rejected(raw, path, data, param):
    status, body, _ = raw.call("POST", path, data)
    assert status == 400
    assert body["error"]["code"] == "parameter_unknown"
    assert body["error"]["param"] == param
    assert body["error"]["message"] == f"Received unknown parameter: {param}"


def test_free_form_maps_accept_any_key(client):
    customer = client.v1.customers.create({"metadata": {"anything": "goes", "org_id": "42"}})
    assert customer.metadata.to_dict() == {"anything": "goes", "org_id": "42"}


def test_unknown_parameter_raises_invalid_request_error_in_stripe_python(client):
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.create({"nickname": "nope"})
    assert info.value.code == "parameter_unknown"
    assert info.value.param == "nickname"
    assert info.value.http_status == 400


def test_missing_required_parameter(raw):
    status, body, _ = raw.call("POST", "/v1/prices", {"product": "prod_x"})
    assert status == 400
    assert body["error"]["code"] == "parameter_missing"
    assert body["error"]["message"] == "Missing required param: currency."
    assert body["error"]["param"] == "currency"


def test_unknown_id_is_resource_missing(client):
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.retrieve("cus_nope")
    err = info.value
    assert (err.http_status, err.code, err.param) == (404, "resource_missing", "id")
    assert err.user_message == "No such customer: 'cus_nope'"


def test_authentication(raw):
    status, body, headers = raw.call("GET", "/v1/customers", key=None)
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error"
    assert "You did not provide an API key" in body["error"]["message"]
    status, body, _ = raw.call("GET", "/v1/customers", key="sk_live_123456789")
    assert status == 401
    assert body["error"]["message"].startswith("Invalid API Key provided: sk_live_")
    assert raw.call("GET", "/v1/customers", key="rk_test_abc")[0] == 200


def test_authentication_error_class(emulator):
    bad = stripe.StripeClient("sk_live_nope", base_addresses={"api": emulator.url}, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError):
        bad.v1.customers.list()


def test_responses_carry_request_id_and_lists_have_stripe_shape(raw):
    status, body, headers = raw.call("GET", "/v1/customers")
    assert status == 200
    assert headers["Request-Id"].startswith("req_")
    assert body == {"object": "list", "data": [], "has_more": False, "url": "/v1/customers"}


def test_unrecognized_url(raw):
    status, body, _ = raw.call("GET", "/v1/nothing_here")
    assert status == 404
    assert body["error"]["message"].startswith("Unrecognized request URL (GET: /v1/nothing_here)")
