"""Webhook endpoints and events."""

from __future__ import annotations

from .. import errors
from ..core import Ctx, filter_range, paginate, public, route
from ..params import apply_metadata, opt_bool, opt_str, require
from ..store import random_token


def _enabled_events(value) -> list[str]:
    events = value if isinstance(value, list) else [value]
    if not events or any(not isinstance(e, str) or not e for e in events):
        raise errors.StripeError("Invalid array", param="enabled_events")
    return events


@route("POST", "/v1/webhook_endpoints", "webhook_endpoint.create")
def create_endpoint(ctx: Ctx, params: dict) -> dict:
    url = require(params, "url")
    if not str(url).startswith(("http://", "https://")):
        raise errors.StripeError("Invalid URL: URL must be publicly accessible.", param="url")
    rec = {
        "id": ctx.store.new_id("we"),
        "object": "webhook_endpoint",
        "api_version": opt_str(params, "api_version"),
        "application": None,
        "created": ctx.now(),
        "description": opt_str(params, "description"),
        "enabled_events": _enabled_events(require(params, "enabled_events")),
        "livemode": False,
        "metadata": apply_metadata({}, params.get("metadata")),
        "status": "enabled",
        "url": url,
        "_secret": "whsec_" + random_token(32),
    }
    ctx.store.put("webhook_endpoint", rec)
    out = public(rec)
    out["secret"] = rec["_secret"]
    return out


@route("GET", "/v1/webhook_endpoints/{id}", "webhook_endpoint.retrieve")
def retrieve_endpoint(ctx: Ctx, params: dict, id: str) -> dict:
    return public(ctx.load("webhook_endpoint", id))


@route("POST", "/v1/webhook_endpoints/{id}", "webhook_endpoint.update")
def update_endpoint(ctx: Ctx, params: dict, id: str) -> dict:
    rec = ctx.load("webhook_endpoint", id)
    if "url" in params:
        rec["url"] = require(params, "url")
    if "enabled_events" in params:
        rec["enabled_events"] = _enabled_events(params["enabled_events"])
    if "description" in params:
        rec["description"] = opt_str(params, "description")
    if "metadata" in params:
        rec["metadata"] = apply_metadata(rec["metadata"], params["metadata"])
    if "disabled" in params:
        rec["status"] = "disabled" if opt_bool(params, "disabled") else "enabled"
    return public(rec)


@route("DELETE", "/v1/webhook_endpoints/{id}", "webhook_endpoint.delete")
def delete_endpoint(ctx: Ctx, params: dict, id: str) -> dict:
    ctx.load("webhook_endpoint", id)
    del ctx.store.data["webhook_endpoint"][id]
    return {"id": id, "object": "webhook_endpoint", "deleted": True}


@route("GET", "/v1/webhook_endpoints", "webhook_endpoint.list")
def list_endpoints(ctx: Ctx, params: dict) -> dict:
    return paginate(ctx.store.all("webhook_endpoint"), params, "/v1/webhook_endpoints", "webhook_endpoint")


@route("GET", "/v1/events/{id}", "event.retrieve")
def retrieve_event(ctx: Ctx, params: dict, id: str) -> dict:
    return public(ctx.load("event", id))


@route("GET", "/v1/events", "event.list")
def list_events(ctx: Ctx, params: dict) -> dict:
    items = ctx.store.all("event")
    wanted = params.get("type")
    if wanted:
        items = [e for e in items if _type_matches(wanted, e["type"])]
    types = params.get("types")
    if types:
        types = types if isinstance(types, list) else [types]
        items = [e for e in items if any(_type_matches(t, e["type"]) for t in types)]
    items = filter_range(items, params, "created")
    return paginate(items, params, "/v1/events", "event")


def _type_matches(pattern: str, event_type: str) -> bool:
    """Stripe's ``type`` filter accepts a trailing ``*`` wildcard (e.g. ``invoice.*``)."""
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type
