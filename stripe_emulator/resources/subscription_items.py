"""Subscription items: create, retrieve, update, delete, list."""

from __future__ import annotations

from .. import errors
from ..core import Ctx, paginate, render, route
from ..params import one_of
from .subscription_helpers import (
    PRORATION,
    apply_item_spec,
    check_compatible,
    emit_updated,
    invoice_now,
    item_price,
    render_item,
)


@route("POST", "/v1/subscription_items", "subscription_item.create")
def create_item(ctx: Ctx, params: dict) -> dict:
    if not params.get("subscription"):
        raise errors.missing_param("subscription")
    sub = ctx.load("subscription", params["subscription"], "subscription")
    before = render(ctx.store, "subscription", sub)
    behavior = one_of(params, "proration_behavior", PRORATION, "create_prorations")
    spec = {k: v for k, v in params.items() if k in ("price", "plan", "quantity", "metadata")}
    price = item_price(ctx, spec, "")
    check_compatible(
        [ctx.store.get("price", ctx.store.get("subscription_item", i)["price"]) for i in sub["_items"]]
        + [price]
    )
    apply_item_spec(ctx, sub, spec, "", behavior)
    if behavior == "always_invoice":
        invoice_now(ctx, sub, "subscription_update")
    emit_updated(ctx, sub, before)
    return render_item(ctx.store, ctx.store.get("subscription_item", sub["_items"][-1]))


@route("GET", "/v1/subscription_items/{id}", "subscription_item.retrieve")
def retrieve_item(ctx: Ctx, params: dict, id: str) -> dict:
    return render_item(ctx.store, ctx.load("subscription_item", id))


@route("POST", "/v1/subscription_items/{id}", "subscription_item.update")
def update_item(ctx: Ctx, params: dict, id: str) -> dict:
    item = ctx.load("subscription_item", id)
    sub = ctx.store.get("subscription", item["subscription"])
    before = render(ctx.store, "subscription", sub)
    behavior = one_of(params, "proration_behavior", PRORATION, "create_prorations")
    spec = {k: v for k, v in params.items() if k in ("price", "plan", "quantity", "metadata")}
    apply_item_spec(ctx, sub, {**spec, "id": id}, "", behavior)
    if behavior == "always_invoice":
        invoice_now(ctx, sub, "subscription_update")
    emit_updated(ctx, sub, before)
    return render_item(ctx.store, item)


@route("DELETE", "/v1/subscription_items/{id}", "subscription_item.delete")
def delete_item(ctx: Ctx, params: dict, id: str) -> dict:
    item = ctx.load("subscription_item", id)
    sub = ctx.store.get("subscription", item["subscription"])
    if len(sub["_items"]) == 1:
        raise errors.StripeError(
            "A subscription must have at least one active plan. To cancel a subscription, "
            "please use the cancel API endpoint on /v1/subscriptions."
        )
    before = render(ctx.store, "subscription", sub)
    behavior = one_of(params, "proration_behavior", PRORATION, "create_prorations")
    apply_item_spec(ctx, sub, {"id": id, "deleted": "true"}, "", behavior)
    if behavior == "always_invoice":
        invoice_now(ctx, sub, "subscription_update")
    emit_updated(ctx, sub, before)
    return {"id": id, "object": "subscription_item", "deleted": True}


@route("GET", "/v1/subscription_items", "subscription_item.list")
def list_items(ctx: Ctx, params: dict) -> dict:
    if not params.get("subscription"):
        raise errors.missing_param("subscription")
    sub = ctx.load("subscription", params["subscription"], "subscription")
    items = [ctx.store.get("subscription_item", i) for i in sub["_items"]]
    return paginate(
        items, params, "/v1/subscription_items", "subscription_item", lambda rec: render_item(ctx.store, rec)
    )
