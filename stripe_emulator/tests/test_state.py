"""State persistence (--state-file), reset, the emulated clock and period rollover."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import stripe

from stripe_emulator.server import EmulatorServer

from .conftest import KEY, Raw, make_metered

ROOT = Path(__file__).resolve().parents[2]


def test_state_survives_a_restart(tmp_path):
    state = tmp_path / "state.json"
    with EmulatorServer(port=0, state_file=str(state)) as srv:
        c = stripe.StripeClient(KEY, base_addresses={"api": srv.url}, max_network_retries=0)
        customer = c.v1.customers.create({"name": "Ada"}, {"idempotency_key": "persist-1"})
        meter, _, price = make_metered(c)
        c.v1.billing.meter_events.create(
            {
                "event_name": "resolution",
                "identifier": "evt-1",
                "payload": {"stripe_customer_id": customer.id, "value": "7"},
            }
        )
    assert state.exists()
    with EmulatorServer(port=0, state_file=str(state)) as srv:
        raw = Raw(srv.url)
        status, body, _ = raw.call("GET", f"/v1/customers/{customer.id}")
        assert status == 200 and body["name"] == "Ada"
        assert raw.call("GET", f"/v1/prices/{price.id}")[0] == 200
        status, _, headers = raw.call(
            "POST", "/v1/customers", {"name": "Ada"}, headers={"Idempotency-Key": "persist-1"}
        )
        assert headers.get("Idempotent-Replayed") == "true"
        status, body, _ = raw.call(
            "POST",
            "/v1/billing/meter_events",
            {
                "event_name": "resolution",
                "identifier": "evt-1",
                "payload[stripe_customer_id]": customer.id,
                "payload[value]": "7",
            },
        )
        assert status == 400  # the identifier is still remembered
        raw.control("POST", "reset")
        assert raw.call("GET", f"/v1/customers/{customer.id}")[0] == 404
    with EmulatorServer(port=0, state_file=str(state)) as srv:
        assert Raw(srv.url).call("GET", f"/v1/customers/{customer.id}")[0] == 404


def _start_cli(state: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stripe_emulator", "--port", "0", "--state-file", str(state)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    line = proc.stdout.readline()
    assert "listening on" in line, line
    return proc, line.strip().rsplit(" ", 1)[-1]


def test_command_line_server_persists_state(tmp_path):
    state = tmp_path / "cli-state.json"
    proc, url = _start_cli(state)
    try:
        status, body, _ = Raw(url).call("POST", "/v1/customers", {"email": "cli@example.com"})
        assert status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    proc, url = _start_cli(state)
    try:
        status, again, _ = Raw(url).call("GET", f"/v1/customers/{body['id']}")
        assert status == 200 and again["email"] == "cli@example.com"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_reset_clears_everything(raw, client):
    client.v1.customers.create({})
    raw.control("POST", "faults", {"path_prefix": "/v1/x", "mode": "500"})
    raw.control("POST", "reset")
    assert client.v1.customers.list().data == []
    assert raw.control("GET", "faults")[1]["faults"] == []
    assert [e["path"] for e in raw.control("GET", "requests")[1]["requests"]] == ["/v1/customers"]


def test_frozen_clock_drives_timestamps(raw, client):
    raw.control("POST", "clock", {"frozen_time": 1_800_000_000})
    assert client.v1.customers.create({}).created == 1_800_000_000
    _, clock, _ = raw.control("POST", "clock", {"advance_seconds": 60})
    assert clock == {"now": 1_800_000_060, "frozen_time": 1_800_000_060}
    _, clock, _ = raw.control("POST", "clock", {"frozen_time": None})
    assert clock["frozen_time"] is None


def test_period_rollover_bills_usage_in_arrears_and_seats_in_advance(emulator, client, now):
    meter, product, metered = make_metered(client, price={"unit_amount": 100})
    seat = client.v1.prices.create(
        {"currency": "usd", "product": product.id, "unit_amount": 2000, "recurring": {"interval": "month"}}
    )
    customer = client.v1.customers.create({})
    sub = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": metered.id}, {"price": seat.id, "quantity": 2}]}
    )
    first = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (first.billing_reason, first.status, first.total) == ("subscription_create", "paid", 4000)
    client.v1.billing.meter_events.create(
        {
            "event_name": "resolution",
            "timestamp": now + 5,
            "payload": {"stripe_customer_id": customer.id, "value": "5"},
        }
    )
    end = sub.current_period_end
    emulator.set_time(end + 10)
    sub2 = client.v1.subscriptions.retrieve(sub.id)
    assert sub2.current_period_start == end
    assert sub2["items"].data[0].current_period_start == end
    cycle = client.v1.invoices.retrieve(sub2.latest_invoice)
    assert (cycle.billing_reason, cycle.status, cycle.created) == ("subscription_cycle", "draft", end)
    assert sorted(ln.amount for ln in cycle.lines.data) == [500, 4000]
    emulator.set_time(end + 3601)
    cycle = client.v1.invoices.retrieve(cycle.id)
    assert (cycle.status, cycle.amount_paid) == ("paid", 4500)
    types = [e.type for e in client.v1.events.list({"limit": 100}).data]
    assert types[:5] == [
        "invoice.payment_succeeded",
        "invoice.paid",
        "invoice.finalized",
        "invoice.created",
        "customer.subscription.updated",
    ]
