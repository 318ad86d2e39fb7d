"""Billing meters, meter events, meter event adjustments and meter event summaries."""

from __future__ import annotations

import hashlib
import uuid

from .. import errors
from ..core import Ctx, filter_range, paginate, public, route
from ..params import one_of, opt_int, opt_str, require, to_int
from ..store import Store

PAST_LIMIT = 35 * 86400
FUTURE_LIMIT = 5 * 60
DEDUP_WINDOW = 24 * 3600
CANCEL_WINDOW = 24 * 3600


# ---------------------------------------------------------------------------- meters


@route("POST", "/v1/billing/meters", "billing.meter.create")
def create_meter(ctx: Ctx, params: dict) -> dict:
    event_name = require(params, "event_name")
    display_name = require(params, "display_name")
    formula = one_of(params["default_aggregation"], "formula", ["count", "last", "sum"])
    if formula is None:
        raise errors.missing_param("default_aggregation[formula]")
    if any(m["event_name"] == event_name for m in ctx.store.all("billing.meter")):
        raise errors.StripeError(
            f"A meter with event_name `{event_name}` already exists.", param="event_name"
        )
    mapping = params.get("customer_mapping") or {}
    if mapping and mapping.get("type") != "by_id":
        raise errors.invalid_enum("customer_mapping[type]", ["by_id"])
    value_settings = params.get("value_settings") or {}
    now = ctx.now()
    rec = {
        "id": "mtr_test_61" + uuid.uuid4().hex[:22],
        "object": "billing.meter",
        "created": now,
        "customer_mapping": {
            "event_payload_key": mapping.get("event_payload_key") or "stripe_customer_id",
            "type": "by_id",
        },
        "default_aggregation": {"formula": formula},
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": one_of(params, "event_time_window", ["day", "hour"]),
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": now,
        "value_settings": {"event_payload_key": value_settings.get("event_payload_key") or "value"},
    }
    ctx.store.put("billing.meter", rec)
    ctx.emit("billing.meter.created", "billing.meter", rec)
    return public(rec)


@route("GET", "/v1/billing/meters/{id}", "billing.meter.retrieve")
def retrieve_meter(ctx: Ctx, params: dict, id: str) -> dict:
    return public(ctx.load("billing.meter", id))


@route("POST", "/v1/billing/meters/{id}", "billing.meter.update")
def update_meter(ctx: Ctx, params: dict, id: str) -> dict:
    rec = ctx.load("billing.meter", id)
    if params.get("display_name"):
        previous = {"display_name": rec["display_name"]}
        rec["display_name"] = params["display_name"]
        rec["updated"] = ctx.now()
        ctx.emit("billing.meter.updated", "billing.meter", rec, previous)
    return public(rec)


def _set_status(ctx: Ctx, id: str, status: str) -> dict:
    rec = ctx.load("billing.meter", id)
    if rec["status"] == status:
        word = "inactive" if status == "inactive" else "active"
        raise errors.StripeError(f"This meter is already {word}.")
    rec["status"] = status
    rec["updated"] = ctx.now()
    rec["status_transitions"]["deactivated_at"] = ctx.now() if status == "inactive" else None
    kind = "deactivated" if status == "inactive" else "reactivated"
    ctx.emit(f"billing.meter.{kind}", "billing.meter", rec)
    return public(rec)


@route("POST", "/v1/billing/meters/{id}/deactivate", "billing.meter.deactivate")
def deactivate_meter(ctx: Ctx, params: dict, id: str) -> dict:
    return _set_status(ctx, id, "inactive")


@route("POST", "/v1/billing/meters/{id}/reactivate", "billing.meter.reactivate")
def reactivate_meter(ctx: Ctx, params: dict, id: str) -> dict:
    return _set_status(ctx, id, "active")


@route("GET", "/v1/billing/meters", "billing.meter.list")
def list_meters(ctx: Ctx, params: dict) -> dict:
    items = ctx.store.all("billing.meter")
    if params.get("status"):
        items = [m for m in items if m["status"] == params["status"]]
    items = filter_range(items, params, "created")
    return paginate(items, params, "/v1/billing/meters", "billing.meter")


def active_meter(store: Store, event_name: str) -> dict | None:
    for meter in store.all("billing.meter"):
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    return None


# ---------------------------------------------------------------------------- meter events


@route("POST", "/v1/billing/meter_events", "billing.meter_event.create")
def create_meter_event(ctx: Ctx, params: dict) -> dict:
    event_name = require(params, "event_name")
    payload = params.get("payload")
    if not isinstance(payload, dict):
        raise errors.missing_param("payload")
    now = ctx.now()
    timestamp = opt_int(params, "timestamp", now)
    if timestamp < now - PAST_LIMIT:
        raise errors.StripeError(
            "The event timestamp cannot be more than 35 days in past. "
            f"Expected a timestamp greater than or equal to {now - PAST_LIMIT}.",
            param="timestamp",
        )
    if timestamp > now + FUTURE_LIMIT:
        raise errors.StripeError(
            "The event timestamp cannot be more than 5 minutes in the future. "
            f"Expected a timestamp less than or equal to {now + FUTURE_LIMIT}.",
            param="timestamp",
        )
    meter = active_meter(ctx.store, event_name)
    if meter is None:
        raise errors.StripeError(f"No active meter found for event_name `{event_name}`.", param="event_name")
    customer_key = meter["customer_mapping"]["event_payload_key"]
    value_key = meter["value_settings"]["event_payload_key"]
    customer_id = payload.get(customer_key)
    if not customer_id:
        raise errors.missing_param(f"payload[{customer_key}]")
    value = 1
    if meter["default_aggregation"]["formula"] != "count" or value_key in payload:
        raw = payload.get(value_key)
        if raw in (None, ""):
            raise errors.missing_param(f"payload[{value_key}]")
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise errors.StripeError(
                f"Invalid value `{raw}` for payload[{value_key}]: must be a whole number.",
                param=f"payload[{value_key}]",
            ) from None
    customer = ctx.store.get("customer", customer_id)
    if customer is None or customer.get("deleted"):
        raise errors.resource_missing("customer", customer_id, f"payload[{customer_key}]")
    identifier = opt_str(params, "identifier") or str(uuid.uuid4())
    if len(identifier) > 100:
        raise errors.StripeError("Identifier must be at most 100 characters.", param="identifier")
    existing = ctx.store.meter_events.get(identifier)
    if existing is not None and existing["created"] > now - DEDUP_WINDOW:
        raise errors.StripeError(
            f"An event already exists with identifier {identifier}.",
            param="identifier",
            headers={"Stripe-Should-Retry": "false"},
        )
    clean_payload = {str(k): str(v) for k, v in payload.items()}
    ctx.store.meter_events[identifier] = {
        "identifier": identifier,
        "event_name": event_name,
        "meter": meter["id"],
        "customer": customer_id,
        "value": value,
        "timestamp": timestamp,
        "created": now,
        "payload": clean_payload,
        "canceled": False,
    }
    return {
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": clean_payload,
        "timestamp": timestamp,
    }


@route("POST", "/v1/billing/meter_event_adjustments", "billing.meter_event_adjustment.create")
def create_adjustment(ctx: Ctx, params: dict) -> dict:
    event_name = require(params, "event_name")
    adj_type = one_of(params, "type", ["cancel"], "cancel")
    cancel = params.get("cancel")
    identifier = cancel.get("identifier") if isinstance(cancel, dict) else None
    if not identifier:
        raise errors.missing_param("cancel[identifier]")
    if active_meter(ctx.store, event_name) is None:
        raise errors.StripeError(f"No active meter found for event_name `{event_name}`.", param="event_name")
    event = ctx.store.meter_events.get(identifier)
    # Stripe processes adjustments asynchronously: unknown identifiers or events older than the
    # cancellation window are accepted here and simply have no effect.
    if event and event["event_name"] == event_name and event["created"] > ctx.now() - CANCEL_WINDOW:
        event["canceled"] = True
    return {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": event_name,
        "livemode": False,
        "status": "pending",
        "type": adj_type,
    }


# ---------------------------------------------------------------------------- summaries


def aggregate(store: Store, meter: dict, customer_id: str, start: int, end: int) -> int:
    """The meter's aggregated value for ``customer_id`` over ``[start, end)``."""
    events = [
        e
        for e in store.meter_events.values()
        if e["meter"] == meter["id"]
        and e["customer"] == customer_id
        and start <= e["timestamp"] < end
        and not e["canceled"]
    ]
    formula = meter["default_aggregation"]["formula"]
    if formula == "count":
        return len(events)
    if formula == "last":
        if not events:
            return 0
        return max(events, key=lambda e: (e["timestamp"], e["created"]))["value"]
    return sum(e["value"] for e in events)


def _aligned(ts: int, step: int, param: str, unit: str) -> None:
    if ts % step:
        raise errors.StripeError(f"`{param}` must be aligned with {unit} boundaries.", param=param)


@route("GET", "/v1/billing/meters/{id}/event_summaries", "billing.meter_event_summary.list")
def list_summaries(ctx: Ctx, params: dict, id: str) -> dict:
    meter = ctx.load("billing.meter", id)
    customer_id = require(params, "customer")
    ctx.load("customer", customer_id, "customer", allow_deleted=True)
    start = to_int(require(params, "start_time"), "start_time")
    end = to_int(require(params, "end_time"), "end_time")
    window = one_of(params, "value_grouping_window", ["day", "hour"])
    step = {"day": 86400, "hour": 3600, None: 60}[window]
    unit = {"day": "day", "hour": "hour", None: "minute"}[window]
    _aligned(start, step, "start_time", unit)
    _aligned(end, step, "end_time", unit)
    if end <= start:
        raise errors.StripeError("`end_time` must be after `start_time`.", param="end_time")
    bounds = [(start, end)] if window is None else [(t, min(t + step, end)) for t in range(start, end, step)]
    summaries = []
    for lo, hi in reversed(bounds):
        digest = hashlib.sha1(f"{meter['id']}:{customer_id}:{lo}:{hi}".encode()).hexdigest()[:24]
        summaries.append(
            {
                "id": f"mtrusg_{digest}",
                "object": "billing.meter_event_summary",
                "aggregated_value": aggregate(ctx.store, meter, customer_id, lo, hi),
                "end_time": hi,
                "livemode": False,
                "meter": meter["id"],
                "start_time": lo,
            }
        )
    return paginate(
        summaries, params, f"/v1/billing/meters/{id}/event_summaries", "billing.meter_event_summary"
    )
