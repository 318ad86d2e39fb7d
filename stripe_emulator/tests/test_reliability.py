"""Idempotency keys, fault injection knobs and the request log."""

from __future__ import annotations

import time

import pytest
import stripe


def test_idempotent_replay_returns_the_first_response(raw):
    headers = {"Idempotency-Key": "key-1"}
    s1, first, h1 = raw.call("POST", "/v1/customers", {"name": "Ada"}, headers=headers)
    s2, second, h2 = raw.call("POST", "/v1/customers", {"name": "Ada"}, headers=headers)
    assert (s1, s2) == (200, 200)
    assert first == second
    assert h2["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in h1
    assert h2["Request-Id"] == h1["Request-Id"]
    _, listing, _ = raw.call("GET", "/v1/customers")
    assert len(listing["data"]) == 1


def test_idempotency_key_reused_with_other_parameters(raw, client):
    raw.call("POST", "/v1/customers", {"name": "Ada"}, headers={"Idempotency-Key": "key-2"})
    status, body, _ = raw.call("POST", "/v1/customers", {"name": "Bob"}, headers={"Idempotency-Key": "key-2"})
    assert status == 400
    assert body["error"]["type"] == "idempotency_error"
    assert "key-2" in body["error"]["message"]
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create({"name": "Eve"}, {"idempotency_key": "key-2"})


def test_idempotency_replays_errors_raised_while_executing(raw):
    h = {"Idempotency-Key": "key-3"}
    status, body, _ = raw.call(
        "POST", "/v1/subscriptions", {"customer": "cus_missing", "items[0][price]": "p"}, headers=h
    )
    assert status == 404
    status2, body2, headers2 = raw.call(
        "POST", "/v1/subscriptions", {"customer": "cus_missing", "items[0][price]": "p"}, headers=h
    )
    assert (status2, body2) == (status, body)
    assert headers2["Idempotent-Replayed"] == "true"


def test_events_record_request_and_idempotency_key(raw):
    _, cus, h = raw.call("POST", "/v1/customers", {"name": "Ada"}, headers={"Idempotency-Key": "key-4"})
    _, events, _ = raw.call("GET", "/v1/events", {"type": "customer.created"})
    assert events["data"][0]["request"] == {"id": h["Request-Id"], "idempotency_key": "key-4"}
    assert events["data"][0]["data"]["object"]["id"] == cus["id"]


def test_fault_429_then_recovers(raw, client):
    raw.control(
        "POST", "faults", {"path_prefix": "/v1/customers", "method": "POST", "mode": "429", "count": 2}
    )
    for _ in range(2):
        with pytest.raises(stripe.RateLimitError) as info:
            client.v1.customers.create({"name": "x"})
        assert info.value.json_body["error"]["code"] == "rate_limit"
        assert info.value.headers["Retry-After"] == "1"  # the default wait a 429 asks for
    client.v1.customers.create({"name": "x"})
    assert len(client.v1.customers.list().data) == 1


def test_fault_retry_after_and_should_retry_headers(raw):
    faults = [
        {"mode": "429", "retry_after": 7, "should_retry": False},
        {"mode": "429", "retry_after": 0.25},
        {"mode": "429", "retry_after": None},
        {"mode": "500", "should_retry": True},
        {"mode": "500_after_record", "should_retry": False},
    ]
    for fault in faults:
        raw.control("POST", "faults", {"path_prefix": "/v1/customers", "method": "POST", **fault})
    got = []
    for _ in faults:
        status, _, headers = raw.call("POST", "/v1/customers", {})
        got.append((status, headers.get("Retry-After"), headers.get("Stripe-Should-Retry")))
    assert got == [
        (429, "7", "false"),
        (429, "0.25", None),
        (429, None, None),
        (500, None, "true"),
        (500, None, "false"),
    ]
    for bad in ({"retry_after": -1}, {"retry_after": "soon"}, {"should_retry": "yes"}):
        status, body, _ = raw.control("POST", "faults", {"path_prefix": "/v1", "mode": "429", **bad})
        assert status == 400, bad


def test_fault_500_does_not_record(raw, client):
    raw.control("POST", "faults", {"path_prefix": "/v1/billing/meter_events", "mode": "500", "count": 1})
    status, body, _ = raw.call("POST", "/v1/billing/meter_events", {"event_name": "x"})
    assert status == 500 and body["error"]["type"] == "api_error"
    raw.control("POST", "faults", {"path_prefix": "/v1/customers", "mode": "500"})
    with pytest.raises(stripe.APIError):
        client.v1.customers.create({"name": "lost"})
    assert client.v1.customers.list().data == []


def test_fault_500_after_record_keeps_the_object_and_replays_on_retry(raw):
    raw.control("POST", "faults", {"path_prefix": "/v1/customers", "mode": "500_after_record"})
    h = {"Idempotency-Key": "retry-me"}
    status, body, _ = raw.call("POST", "/v1/customers", {"name": "Ada"}, headers=h)
    assert status == 500 and body["error"]["type"] == "api_error"
    _, listing, _ = raw.call("GET", "/v1/customers")
    assert [c["name"] for c in listing["data"]] == ["Ada"]
    status, replay, headers = raw.call("POST", "/v1/customers", {"name": "Ada"}, headers=h)
    assert status == 200 and replay["id"] == listing["data"][0]["id"]
    assert headers["Idempotent-Replayed"] == "true"


def test_fault_hang_outlives_the_client_timeout(raw):
    raw.control("POST", "faults", {"path_prefix": "/v1/account", "mode": "hang", "hang_seconds": 0.6})
    started = time.monotonic()
    with pytest.raises(OSError):
        raw.call("GET", "/v1/account", timeout=0.2)
    assert time.monotonic() - started < 0.5
    assert raw.call("GET", "/v1/account")[0] == 200


def test_faults_match_method_and_can_be_cleared(raw):
    raw.control(
        "POST", "faults", {"path_prefix": "/v1/customers", "method": "POST", "mode": "500", "count": 5}
    )
    assert raw.call("GET", "/v1/customers")[0] == 200
    assert len(raw.control("GET", "faults")[1]["faults"]) == 1
    raw.control("DELETE", "faults")
    assert raw.call("POST", "/v1/customers", {})[0] == 200


def test_bad_fault_mode_is_rejected(raw):
    status, body, _ = raw.control("POST", "faults", {"path_prefix": "/v1", "mode": "explode"})
    assert status == 400


def test_request_log(raw):
    raw.call("POST", "/v1/customers", {"name": "Ada", "metadata[k]": "v"}, headers={"Idempotency-Key": "k1"})
    raw.call("GET", "/v1/customers", {"limit": "3"})
    entries = raw.control("GET", "requests")[1]["requests"]
    assert [(e["method"], e["path"]) for e in entries] == [
        ("POST", "/v1/customers"),
        ("GET", "/v1/customers"),
    ]
    assert entries[0]["params"] == {"name": "Ada", "metadata": {"k": "v"}}
    assert entries[0]["idempotency_key"] == "k1"
    assert entries[0]["status"] == 200
    assert entries[1]["params"] == {"limit": "3"}
