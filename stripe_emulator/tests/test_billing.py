"""Usage billing: tiered pricing in invoice previews, meter events, adjustments and summaries."""

from __future__ import annotations

import pytest
import stripe

from .conftest import make_metered

GRADUATED = {
    "billing_scheme": "tiered",
    "tiers_mode": "graduated",
    "tiers": [
        {"up_to": 1000, "unit_amount": 0, "flat_amount": 5000},
        {"up_to": 5000, "unit_amount_decimal": "2.5"},
        {"up_to": "inf", "unit_amount": 1, "flat_amount": 1000},
    ],
}
VOLUME = {
    "billing_scheme": "tiered",
    "tiers_mode": "volume",
    "tiers": [
        {"up_to": 100, "unit_amount": 50},
        {"up_to": 1000, "unit_amount": 40, "flat_amount": 500},
        {"up_to": "inf", "unit_amount": 30, "flat_amount": 1000},
    ],
}


def _usage_preview(client, now, price_params, usage: int, formula: str = "sum"):
    meter, product, price = make_metered(client, formula=formula, price=price_params)
    customer = client.v1.customers.create({"name": "usage"})
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    if usage:
        client.v1.billing.meter_events.create(
            {
                "event_name": "resolution",
                "payload": {"stripe_customer_id": customer.id, "value": str(usage)},
                "timestamp": now + 10,
            }
        )
    preview = client.v1.invoices.create_preview({"customer": customer.id, "subscription": sub.id})
    return preview, sub


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (0, 5000),  # quantity 0 falls into the first tier: its flat fee applies
        (1, 5000),
        (1000, 5000),
        (1001, 5003),  # 5000 + 1 × 2.5 = 5002.5, rounded half up once per line
        (5000, 15000),  # 5000 + 4000 × 2.5
        (6200, 17200),  # 5000 + 4000 × 2.5 + (1200 × 1 + 1000)
    ],
)
def test_graduated_tiers_price_each_tier_separately(client, now, usage, expected):
    preview, sub = _usage_preview(client, now, GRADUATED, usage)
    (line,) = preview.lines.data
    assert line.quantity == usage
    assert line.amount == expected
    assert preview.total == preview.subtotal == preview.amount_due == expected
    assert line.period.start == sub.current_period_start
    assert line.period.end == sub.current_period_end
    assert preview.id.startswith("upcoming_in_")


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (0, 0),
        (100, 5000),  # all 100 at 50
        (150, 6500),  # all 150 at 40 + 500 flat
        (1000, 40500),
        (1001, 31030),  # all 1001 at 30 + 1000 flat: a volume total can drop
    ],
)
def test_volume_tiers_price_all_units_at_the_reached_tier(client, now, usage, expected):
    preview, _ = _usage_preview(client, now, VOLUME, usage)
    assert preview.lines.data[0].amount == expected
    assert preview.total == expected


def test_decimal_unit_amount_rounds_half_up_per_line(client, now):
    preview, _ = _usage_preview(client, now, {"unit_amount_decimal": "0.05"}, 30)
    assert preview.lines.data[0].amount == 2  # 1.5 → 2


def test_decimal_unit_amount_rounds_down_below_half(client, now):
    preview, _ = _usage_preview(client, now, {"unit_amount_decimal": "0.05"}, 29)
    assert preview.lines.data[0].amount == 1  # 1.45 → 1


def test_preview_combines_licensed_metered_and_pending_items(client, now):
    meter, product, metered = make_metered(client, price={"unit_amount_decimal": "12.5"})
    seat = client.v1.prices.create(
        {"currency": "usd", "product": product.id, "unit_amount": 2000, "recurring": {"interval": "month"}}
    )
    customer = client.v1.customers.create({"name": "mix"})
    sub = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": metered.id}, {"price": seat.id, "quantity": 3}]}
    )
    for i, value in enumerate(["7", "-2", "10"]):
        client.v1.billing.meter_events.create(
            {
                "event_name": "resolution",
                "identifier": f"e{i}",
                "timestamp": now + i,
                "payload": {"stripe_customer_id": customer.id, "value": value},
            }
        )
    client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 999, "currency": "usd", "description": "setup"}
    )
    preview = client.v1.invoices.create_preview({"customer": customer.id})
    amounts = sorted((ln.amount, ln.quantity) for ln in preview.lines.data)
    assert amounts == [(188, 15), (999, 1), (6000, 3)]  # 15 × 12.5 = 187.5 → 188
    assert preview.total == 188 + 999 + 6000
    licensed = next(ln for ln in preview.lines.data if ln.quantity == 3)
    assert licensed.period.start == sub.current_period_end  # licensed items bill the next period


def test_preview_without_anything_to_bill(client):
    customer = client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.invoices.create_preview({"customer": customer.id})
    assert info.value.code == "invoice_upcoming_none"


def test_meter_identifier_is_deduplicated(client, raw, now):
    meter, _, _ = make_metered(client)
    customer = client.v1.customers.create({})
    data = {
        "event_name": "resolution",
        "identifier": "res-1",
        "payload[stripe_customer_id]": customer.id,
        "payload[value]": "4",
    }
    status, body, _ = raw.call("POST", "/v1/billing/meter_events", data)
    assert status == 200 and body["identifier"] == "res-1" and body["payload"]["value"] == "4"
    status, body, headers = raw.call("POST", "/v1/billing/meter_events", {**data, "payload[value]": "9"})
    assert status == 400
    assert body["error"]["message"] == "An event already exists with identifier res-1."
    assert body["error"]["type"] == "invalid_request_error"
    assert headers["Stripe-Should-Retry"] == "false"
    summary = client.v1.billing.meters.event_summaries.list(
        meter.id, {"customer": customer.id, "start_time": now - 3600, "end_time": now + 3600}
    )
    assert summary.data[0].aggregated_value == 4


def test_meter_event_timestamp_limits(client, raw, now):
    make_metered(client)
    customer = client.v1.customers.create({})

    def send(ts):
        return raw.call(
            "POST",
            "/v1/billing/meter_events",
            {
                "event_name": "resolution",
                "timestamp": str(ts),
                "payload[stripe_customer_id]": customer.id,
                "payload[value]": "1",
            },
        )

    status, body, _ = send(now - 35 * 86400 - 1)
    assert status == 400 and body["error"]["param"] == "timestamp"
    assert body["error"]["message"] == (
        "The event timestamp cannot be more than 35 days in past. "
        f"Expected a timestamp greater than or equal to {now - 35 * 86400}."
    )
    assert send(now - 35 * 86400)[0] == 200
    status, body, _ = send(now + 301)
    assert status == 400 and body["error"]["param"] == "timestamp"
    assert "5 minutes in the future" in body["error"]["message"]
    assert send(now + 300)[0] == 200


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"payload[stripe_customer_id]": "CUS", "payload[value]": "1.5"}, "payload[value]"),
        ({"payload[stripe_customer_id]": "CUS", "payload[value]": "ten"}, "payload[value]"),
        ({"payload[stripe_customer_id]": "CUS"}, "payload[value]"),
        ({"payload[value]": "1"}, "payload[stripe_customer_id]"),
        (
            {"payload[stripe_customer_id]": "cus_missing", "payload[value]": "1"},
            "payload[stripe_customer_id]",
        ),
    ],
)
def test_meter_event_payload_validation(client, raw, payload, param):
    make_metered(client)
    customer = client.v1.customers.create({})
    data = {k: (customer.id if v == "CUS" else v) for k, v in payload.items()}
    status, body, _ = raw.call("POST", "/v1/billing/meter_events", {"event_name": "resolution", **data})
    assert status in (400, 404)
    assert body["error"]["param"] == param


def test_meter_event_needs_an_active_meter(client, raw):
    meter, _, _ = make_metered(client)
    customer = client.v1.customers.create({})
    data = {"event_name": "unknown_event", "payload[stripe_customer_id]": customer.id, "payload[value]": "1"}
    status, body, _ = raw.call("POST", "/v1/billing/meter_events", data)
    assert status == 400 and body["error"]["param"] == "event_name"
    client.v1.billing.meters.deactivate(meter.id)
    status, _, _ = raw.call("POST", "/v1/billing/meter_events", {**data, "event_name": "resolution"})
    assert status == 400


def test_negative_values_and_count_and_last_formulas(client, now):
    customer = client.v1.customers.create({})
    meters = {}
    for formula in ("sum", "count", "last"):
        meters[formula], _, _ = make_metered(client, formula=formula, event_name=f"ev_{formula}")
        for i, value in enumerate(["5", "-8", "3"]):
            client.v1.billing.meter_events.create(
                {
                    "event_name": f"ev_{formula}",
                    "timestamp": now + i,
                    "payload": {"stripe_customer_id": customer.id, "value": value},
                }
            )
    window = {"customer": customer.id, "start_time": now, "end_time": now + 60}
    got = {
        f: client.v1.billing.meters.event_summaries.list(m.id, window).data[0].aggregated_value
        for f, m in meters.items()
    }
    assert got == {"sum": 0, "count": 3, "last": 3}


def test_cancel_adjustment_removes_the_event_from_totals(client, now):
    meter, _, _ = make_metered(client)
    customer = client.v1.customers.create({})
    for ident, value in (("a", "10"), ("b", "32")):
        client.v1.billing.meter_events.create(
            {
                "event_name": "resolution",
                "identifier": ident,
                "timestamp": now,
                "payload": {"stripe_customer_id": customer.id, "value": value},
            }
        )
    adj = client.v1.billing.meter_event_adjustments.create(
        {"event_name": "resolution", "type": "cancel", "cancel": {"identifier": "b"}}
    )
    assert (adj.status, adj.type, adj.cancel.identifier) == ("pending", "cancel", "b")
    window = {"customer": customer.id, "start_time": now, "end_time": now + 60}
    assert client.v1.billing.meters.event_summaries.list(meter.id, window).data[0].aggregated_value == 10


def test_summaries_grouped_by_hour(client, now):
    meter, _, _ = make_metered(client)
    customer = client.v1.customers.create({})
    for offset, value in ((0, "1"), (3600 + 5, "2"), (3600 + 10, "3")):
        client.v1.billing.meter_events.create(
            {
                "event_name": "resolution",
                "timestamp": now - 2 * 3600 + offset,
                "payload": {"stripe_customer_id": customer.id, "value": value},
            }
        )
    result = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {
            "customer": customer.id,
            "start_time": now - 2 * 3600,
            "end_time": now,
            "value_grouping_window": "hour",
        },
    )
    assert [(s.start_time - now, s.end_time - now, s.aggregated_value) for s in result.data] == [
        (-3600, 0, 5),
        (-7200, -3600, 1),
    ]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meters.event_summaries.list(
            meter.id,
            {
                "customer": customer.id,
                "start_time": now + 30,
                "end_time": now + 3600,
                "value_grouping_window": "hour",
            },
        )


def test_one_meter_per_event_name(client):
    make_metered(client)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meters.create(
            {"display_name": "again", "event_name": "resolution", "default_aggregation": {"formula": "sum"}}
        )
    assert info.value.param == "event_name"


def test_metered_price_requires_a_meter_and_subscription_rejects_quantity(client):
    product = client.v1.products.create({"name": "p"})
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.prices.create(
            {
                "currency": "usd",
                "product": product.id,
                "unit_amount": 1,
                "recurring": {"interval": "month", "usage_type": "metered"},
            }
        )
    assert info.value.param == "recurring[meter]"
    _, _, price = make_metered(client)
    customer = client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": price.id, "quantity": 2}]}
        )
    assert info.value.param == "items[0][quantity]"


# ---------------------------------------------------------------------------- finalization grace period


def _metered_subscription(client, *, seats: int = 0):
    _, product, metered = make_metered(client, price={"unit_amount": 100})
    items = [{"price": metered.id}]
    if seats:
        month = {"interval": "month"}
        seat = client.v1.prices.create(
            {"currency": "usd", "product": product.id, "unit_amount": 2000, "recurring": month}
        )
        items.append({"price": seat.id, "quantity": seats})
    customer = client.v1.customers.create({"name": "grace"})
    return customer, client.v1.subscriptions.create({"customer": customer.id, "items": items})


def _report(client, customer, timestamp: int, value: int) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": "resolution",
            "timestamp": timestamp,
            "payload": {"stripe_customer_id": customer.id, "value": str(value)},
        }
    )


def _usage_line(invoice):
    (line,) = [ln for ln in invoice.lines.data if ln.period.start == invoice.period_start]
    return line.quantity, line.amount


def test_usage_reported_in_the_grace_hour_is_billed_and_later_usage_is_not(emulator, client, now):
    customer, sub = _metered_subscription(client, seats=1)
    start, end = sub.current_period_start, sub.current_period_end
    _report(client, customer, now + 5, 5)
    emulator.set_time(end + 10)
    draft = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    assert (draft.status, draft.period_start, draft.period_end) == ("draft", start, end)
    assert _usage_line(draft) == (5, 500)
    # In the grace hour: one more event for the ended period, one for the new period.
    _report(client, customer, end - 30, 3)
    _report(client, customer, end + 20, 7)
    preview = client.v1.invoices.create_preview({"subscription": sub.id})
    assert (preview.period_start, _usage_line(preview)) == (end, (7, 700))  # the new period's usage only
    emulator.set_time(end + 3601)
    final = client.v1.invoices.retrieve(draft.id)
    assert (final.status, final.status_transitions.finalized_at) == ("paid", end + 3601)
    assert _usage_line(final) == (8, 800)
    assert final.total == final.amount_paid == 800 + 2000
    # After finalization an event for the ended period is accepted (it is within 35 days) but bills nowhere.
    _report(client, customer, end - 20, 4)
    assert _usage_line(client.v1.invoices.retrieve(draft.id)) == (8, 800)
    events = client.v1.events.list({"type": "invoice.finalized"}).data
    # The invoice.finalized event carries the new total.
    assert [e.data.object.total for e in events if e.data.object.id == draft.id] == [2800]
    assert _usage_line(client.v1.invoices.create_preview({"subscription": sub.id})) == (7, 700)


def test_manual_finalize_bills_the_latest_usage(emulator, client, now):
    customer, sub = _metered_subscription(client)
    end = sub.current_period_end
    _report(client, customer, now + 5, 2)
    emulator.set_time(end + 60)
    draft_id = client.v1.subscriptions.retrieve(sub.id).latest_invoice
    assert _usage_line(client.v1.invoices.retrieve(draft_id)) == (2, 200)
    _report(client, customer, end - 1, 40)
    final = client.v1.invoices.finalize_invoice(draft_id, {"auto_advance": False})
    assert final.status == "open"
    assert _usage_line(final) == (42, 4200)
    assert (final.subtotal, final.total, final.amount_due) == (4200, 4200, 4200)
    (line,) = final.lines.data
    assert line.quantity_decimal == 42 and line.description.startswith("42 × ")
    _report(client, customer, end - 2, 1000)  # too late: the invoice is no longer a draft
    assert client.v1.invoices.retrieve(draft_id).total == 4200


def test_a_clock_jump_past_the_grace_hour_creates_and_finalizes_with_the_stored_usage(emulator, client, now):
    customer, sub = _metered_subscription(client)
    first_end = sub.current_period_end
    _report(client, customer, now + 5, 5)
    emulator.set_time(first_end - 60)
    _report(client, customer, first_end - 30, 6)
    emulator.set_time(first_end + 40 * 86400)  # past the next period's end and its grace hour too
    invoices = client.v1.invoices.list({"subscription": sub.id, "limit": 10}).data
    cycles = sorted(
        (i for i in invoices if i.billing_reason == "subscription_cycle"), key=lambda i: i.period_start
    )
    assert [(i.status, i.period_start) for i in cycles] == [
        ("paid", sub.current_period_start),
        ("paid", first_end),
    ]
    assert [_usage_line(i) for i in cycles] == [(11, 1100), (0, 0)]
