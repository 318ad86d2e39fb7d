"""Customers: create, retrieve, update, list, delete."""

from __future__ import annotations

from .. import errors
from ..core import Ctx, filter_range, paginate, public, route
from ..params import apply_metadata, opt_int, opt_str
from ..store import random_token

_ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")
_SIMPLE = ("name", "email", "description", "phone")


def _address(value) -> dict | None:
    if not isinstance(value, dict):
        return None
    return {k: value.get(k) or None for k in _ADDRESS_KEYS}


def _shipping(value) -> dict | None:
    if not isinstance(value, dict):
        return None
    return {"address": _address(value.get("address")), "name": value.get("name"), "phone": value.get("phone")}


def _apply(rec: dict, params: dict) -> None:
    for key in _SIMPLE:
        if key in params:
            rec[key] = opt_str(params, key)
    if "metadata" in params:
        rec["metadata"] = apply_metadata(rec.get("metadata"), params["metadata"])
    if "address" in params:
        rec["address"] = _address(params["address"])
    if "shipping" in params:
        rec["shipping"] = _shipping(params["shipping"])
    if "balance" in params:
        rec["balance"] = opt_int(params, "balance", 0)
    if "preferred_locales" in params:
        locales = params["preferred_locales"]
        rec["preferred_locales"] = locales if isinstance(locales, list) else []
    if "tax_exempt" in params:
        rec["tax_exempt"] = params["tax_exempt"] or "none"
    if "invoice_prefix" in params:
        rec["invoice_prefix"] = params["invoice_prefix"]
    if "next_invoice_sequence" in params:
        rec["next_invoice_sequence"] = opt_int(params, "next_invoice_sequence", 1)
    settings = params.get("invoice_settings")
    if isinstance(settings, dict):
        cur = rec["invoice_settings"]
        for key in ("default_payment_method", "footer"):
            if key in settings:
                cur[key] = settings[key] or None
        if "custom_fields" in settings:
            cur["custom_fields"] = settings["custom_fields"] or None


@route("POST", "/v1/customers", "customer.create")
def create(ctx: Ctx, params: dict) -> dict:
    rec = {
        "id": ctx.store.new_id("cus", 14),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": ctx.now(),
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": random_token(8).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }
    _apply(rec, params)
    ctx.store.put("customer", rec)
    ctx.emit("customer.created", "customer", rec)
    return public(rec)


@route("GET", "/v1/customers/{id}", "customer.retrieve")
def retrieve(ctx: Ctx, params: dict, id: str) -> dict:
    rec = ctx.load("customer", id, allow_deleted=True)
    if rec.get("deleted"):
        return {"id": rec["id"], "object": "customer", "deleted": True}
    return public(rec)


@route("POST", "/v1/customers/{id}", "customer.update")
def update(ctx: Ctx, params: dict, id: str) -> dict:
    rec = ctx.load("customer", id)
    before = public(rec)
    _apply(rec, params)
    previous = {k: v for k, v in before.items() if rec.get(k) != v}
    if previous:
        ctx.emit("customer.updated", "customer", rec, previous)
    return public(rec)


@route("DELETE", "/v1/customers/{id}", "customer.delete")
def delete(ctx: Ctx, params: dict, id: str) -> dict:
    rec = ctx.load("customer", id)
    snapshot = public(rec)
    rec["deleted"] = True
    for sub in ctx.store.all("subscription"):
        if sub["customer"] == id and sub["status"] not in ("canceled", "incomplete_expired"):
            from .subscriptions import cancel_subscription

            cancel_subscription(ctx, sub, {})
    ctx.store.record_event(
        "customer.deleted",
        snapshot,
        request_id=ctx.request_id,
        idempotency_key=ctx.idempotency_key,
    )
    return {"id": id, "object": "customer", "deleted": True}


@route("GET", "/v1/customers", "customer.list")
def list_(ctx: Ctx, params: dict) -> dict:
    items = [c for c in ctx.store.all("customer") if not c.get("deleted")]
    email = params.get("email")
    if email:
        items = [c for c in items if c.get("email") == email]
    items = filter_range(items, params, "created")
    return paginate(items, params, "/v1/customers", "customer")


def ensure_customer(ctx: Ctx, customer_id, param: str = "customer") -> dict:
    if customer_id in (None, ""):
        raise errors.missing_param(param)
    return ctx.load("customer", customer_id, param)
