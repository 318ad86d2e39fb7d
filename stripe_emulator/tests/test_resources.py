"""Resource behaviour: lists and pagination, expand, subscriptions, prorations, invoices, prices."""

from __future__ import annotations

import pytest
import stripe

from .conftest import make_metered


def _seat_price(client, amount=2000, **extra):
    product = client.v1.products.create({"name": "Seat"})
    return client.v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            **extra,
        }
    )


def test_pagination(client):
    ids = [client.v1.customers.create({"name": str(i)}).id for i in range(5)]
    page = client.v1.customers.list({"limit": 2})
    assert [c.id for c in page.data] == ids[::-1][:2] and page.has_more
    page2 = client.v1.customers.list({"limit": 2, "starting_after": page.data[-1].id})
    assert [c.id for c in page2.data] == ids[::-1][2:4] and page2.has_more
    back = client.v1.customers.list({"limit": 2, "ending_before": page2.data[0].id})
    assert [c.id for c in back.data] == ids[::-1][:2]
    assert [c.id for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()] == ids[::-1]


def test_customer_update_metadata_semantics_and_delete(client):
    customer = client.v1.customers.create({"metadata": {"a": "1", "b": "2"}})
    updated = client.v1.customers.update(customer.id, {"metadata": {"a": "", "c": "3"}, "name": "New"})
    assert updated.metadata.to_dict() == {"b": "2", "c": "3"} and updated.name == "New"
    event = client.v1.events.list({"type": "customer.updated"}).data[0]
    assert event.data.previous_attributes["name"] is None
    deleted = client.v1.customers.delete(customer.id)
    assert deleted.deleted is True
    assert client.v1.customers.retrieve(customer.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(customer.id, {"name": "x"})


def test_price_lookup_keys_and_transfer(client):
    p1 = _seat_price(client, lookup_key="seat_monthly")
    with pytest.raises(stripe.InvalidRequestError) as info:
        _seat_price(client, lookup_key="seat_monthly")
    assert info.value.param == "lookup_key"
    p2 = _seat_price(client, 2500, lookup_key="seat_monthly", transfer_lookup_key=True)
    found = client.v1.prices.list({"lookup_keys": ["seat_monthly"], "expand": ["data.tiers", "data.product"]})
    assert [p.id for p in found.data] == [p2.id]
    assert isinstance(found.data[0].product, stripe.Product)
    assert client.v1.prices.retrieve(p1.id).lookup_key is None
    assert client.v1.prices.update(p1.id, {"active": False, "nickname": "old"}).active is False
    assert [p.id for p in client.v1.prices.list({"active": False}).data] == [p1.id]


def test_decimal_price_echo(client):
    product = client.v1.products.create({"name": "p"})
    price = client.v1.prices.create({"currency": "usd", "product": product.id, "unit_amount_decimal": "0.05"})
    assert (price.unit_amount, price.last_response.data["unit_amount_decimal"], price.type) == (
        None,
        "0.05",
        "one_time",
    )
    price = client.v1.prices.create({"currency": "usd", "product": product.id, "unit_amount_decimal": "5"})
    assert (price.unit_amount, price.last_response.data["unit_amount_decimal"]) == (5, "5")
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.create(
            {"currency": "usd", "product": product.id, "unit_amount": 1, "unit_amount_decimal": "1"}
        )


def test_subscription_expand_and_items(client):
    price = _seat_price(client)
    customer = client.v1.customers.create({})
    sub = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id, "quantity": 2}],
            "metadata": {"org": "7"},
            "expand": ["customer", "latest_invoice", "items.data.price.product"],
        }
    )
    assert isinstance(sub.customer, stripe.Customer)
    assert isinstance(sub.latest_invoice, stripe.Invoice)
    assert isinstance(sub["items"].data[0].price.product, stripe.Product)
    assert sub.current_period_start == sub["items"].data[0].current_period_start
    listed = client.v1.subscription_items.list({"subscription": sub.id})
    assert [i.quantity for i in listed.data] == [2]
    assert client.v1.subscriptions.list({"customer": customer.id}).data[0].id == sub.id


def test_quantity_change_creates_prorations(client, emulator, now):
    price = _seat_price(client, 3000)
    customer = client.v1.customers.create({})
    sub = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id, "quantity": 1}]}
    )
    start, end = sub.current_period_start, sub.current_period_end
    emulator.set_time(start + (end - start) // 2)
    item = sub["items"].data[0]
    updated = client.v1.subscriptions.update(sub.id, {"items": [{"id": item.id, "quantity": 3}]})
    assert updated["items"].data[0].quantity == 3
    pending = client.v1.invoice_items.list({"customer": customer.id, "pending": True}).data
    assert sorted(i.amount for i in pending) == [-1500, 4500]
    assert all(i.proration for i in pending)
    client.v1.subscriptions.update(
        sub.id, {"items": [{"id": item.id, "quantity": 4}], "proration_behavior": "always_invoice"}
    )
    invoice = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    assert invoice.billing_reason == "subscription_update" and invoice.status == "paid"
    assert invoice.total == -1500 + 4500 - 4500 + 6000
    client.v1.subscriptions.update(
        sub.id, {"items": [{"id": item.id, "quantity": 5}], "proration_behavior": "none"}
    )
    assert client.v1.invoice_items.list({"customer": customer.id, "pending": True}).data == []


def test_subscription_item_endpoints(client):
    seat = _seat_price(client)
    _, _, metered = make_metered(client)
    customer = client.v1.customers.create({})
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": seat.id}]})
    item = client.v1.subscription_items.create(
        {"subscription": sub.id, "price": metered.id, "proration_behavior": "none"}
    )
    assert item.quantity is None and item.price.recurring.usage_type == "metered"
    seat_item = sub["items"].data[0]
    assert (
        client.v1.subscription_items.update(
            seat_item.id, {"quantity": 4, "proration_behavior": "none"}
        ).quantity
        == 4
    )
    assert client.v1.subscription_items.retrieve(seat_item.id).quantity == 4
    client.v1.subscription_items.delete(item.id)
    assert len(client.v1.subscriptions.retrieve(sub.id)["items"].data) == 1
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscription_items.delete(seat_item.id)


def test_cancel_subscription(client):
    price = _seat_price(client)
    customer = client.v1.customers.create({})
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    canceled = client.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled" and canceled.canceled_at is not None
    assert client.v1.subscriptions.list({"customer": customer.id}).data == []
    assert client.v1.subscriptions.list({"customer": customer.id, "status": "canceled"}).data[0].id == sub.id
    assert client.v1.events.list({"type": "customer.subscription.deleted"}).data[0].data.object.id == sub.id


def test_invoice_lifecycle(client):
    customer = client.v1.customers.create({"email": "bill@example.com"})
    client.v1.invoice_items.create({"customer": customer.id, "amount": 1234, "currency": "usd"})
    client.v1.invoice_items.create(
        {"customer": customer.id, "unit_amount_decimal": "0.5", "quantity": 3, "currency": "usd"}
    )
    invoice = client.v1.invoices.create(
        {
            "customer": customer.id,
            "pending_invoice_items_behavior": "include",
            "metadata": {"period": "2026-11"},
        }
    )
    assert (invoice.status, invoice.total, len(invoice.lines.data)) == ("draft", 1236, 2)
    assert invoice.customer_email == "bill@example.com"
    invoice = client.v1.invoices.finalize_invoice(invoice.id)
    assert invoice.status == "open" and invoice.number.endswith("-0001")
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.finalize_invoice(invoice.id)
    invoice = client.v1.invoices.pay(invoice.id)
    assert (invoice.status, invoice.amount_paid, invoice.amount_remaining) == ("paid", 1236, 0)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.void_invoice(invoice.id)
    other = client.v1.invoices.create(
        {"customer": customer.id, "collection_method": "send_invoice", "days_until_due": 14}
    )
    client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 500, "currency": "usd", "invoice": other.id}
    )
    other = client.v1.invoices.finalize_invoice(other.id)
    assert other.due_date is not None and other.amount_due == 500
    voided = client.v1.invoices.void_invoice(other.id)
    assert voided.status == "void"
    assert [i.id for i in client.v1.invoices.list({"customer": customer.id, "status": "void"}).data] == [
        other.id
    ]
    types = {e.type for e in client.v1.events.list({"limit": 100}).data}
    assert {
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.voided",
        "invoiceitem.created",
    } <= types


def test_zero_amount_invoice_is_paid_on_finalize(client):
    customer = client.v1.customers.create({})
    invoice = client.v1.invoices.create({"customer": customer.id})
    assert client.v1.invoices.finalize_invoice(invoice.id).status == "paid"


def test_invoiceitem_with_price(client):
    product = client.v1.products.create({"name": "Credit pack"})
    price = client.v1.prices.create({"currency": "usd", "product": product.id, "unit_amount": 4900})
    customer = client.v1.customers.create({})
    item = client.v1.invoice_items.create(
        {"customer": customer.id, "pricing": {"price": price.id}, "quantity": 2}
    )
    assert (item.amount, item.currency, item.pricing.price_details.price) == (9800, "usd", price.id)
    assert client.v1.invoice_items.retrieve(item.id).amount == 9800
