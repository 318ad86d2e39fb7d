"""Shared pieces of subscriptions and subscription items: rendering, item validation, prorations."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from .. import errors
from ..core import Ctx, list_object, public, render, renderer
from ..invoicing import attach_pending_items, finalize_and_collect, new_invoice, price_description, save_new
from ..params import apply_metadata, opt_bool, opt_int
from ..pricing import exact_amount, round_amount
from ..store import Store
from .catalog import plan_from_price

PRORATION = ["always_invoice", "create_prorations", "none"]


@renderer("subscription_item")
def render_item(store: Store, rec: dict) -> dict:
    out = public(rec)
    price = store.get("price", rec["price"])
    out["price"] = public(price)
    out["plan"] = plan_from_price(price)
    return out


@renderer("subscription")
def render_subscription(store: Store, rec: dict) -> dict:
    out = public(rec)
    items = [render_item(store, store.get("subscription_item", i)) for i in rec["_items"]]
    out["items"] = list_object(items, f"/v1/subscription_items?subscription={rec['id']}", len(items))
    return out


def is_metered(price: dict) -> bool:
    return (price.get("recurring") or {}).get("usage_type") == "metered"


def param_name(param: str, key: str) -> str:
    return f"{param}[{key}]" if param else key


def item_price(ctx: Ctx, spec: dict, param: str) -> dict:
    price_id = spec.get("price") or spec.get("plan")
    if not price_id:
        raise errors.missing_param(param_name(param, "price"))
    price = ctx.load("price", price_id, param_name(param, "price"))
    if price["type"] != "recurring":
        raise errors.StripeError(
            "The price specified is set to `type=one_time` but this field only accepts prices with "
            "`type=recurring`.",
            param=param_name(param, "price"),
        )
    if not price["active"]:
        raise errors.StripeError(
            "The price specified is inactive. This field only accepts active prices.",
            param=param_name(param, "price"),
        )
    return price


def item_quantity(price: dict, spec: dict, param: str, default: int | None = 1) -> int | None:
    if is_metered(price):
        if spec.get("quantity") not in (None, ""):
            raise errors.StripeError(
                "Quantity should not be specified where usage_type is `metered`. "
                f"Remove quantity from `{param or 'the request'}`.",
                param=param_name(param, "quantity"),
            )
        return None
    qty = opt_int(spec, "quantity", default)
    if qty is not None and qty < 0:
        raise errors.StripeError(
            "Invalid quantity: must be greater than or equal to 0", param=param_name(param, "quantity")
        )
    return qty


def check_compatible(prices: list[dict]) -> None:
    keys = {(p["currency"], p["recurring"]["interval"], p["recurring"]["interval_count"]) for p in prices}
    if len(keys) > 1:
        raise errors.StripeError(
            "Currency and interval fields must match across all plans on this subscription."
        )
    ids = [p["id"] for p in prices]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise errors.StripeError(
            f"Cannot add multiple subscription items with the same price: {sorted(dupes)[0]}"
        )


def new_item(ctx: Ctx, sub: dict, price: dict, quantity, metadata) -> dict:
    item = {
        "id": ctx.store.new_id("si", 14),
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": ctx.now(),
        "current_period_end": sub["current_period_end"],
        "current_period_start": sub["current_period_start"],
        "discounts": [],
        "metadata": apply_metadata({}, metadata),
        "price": price["id"],
        "quantity": quantity,
        "subscription": sub["id"],
        "tax_rates": [],
    }
    ctx.store.put("subscription_item", item)
    sub["_items"].append(item["id"])
    return item


def _fmt_date(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%d %b %Y")


def _proration_item(ctx: Ctx, sub: dict, item: dict, price: dict, qty: int, sign: int) -> None:
    now, start, end = ctx.now(), sub["current_period_start"], sub["current_period_end"]
    if not start <= now < end or qty == 0:
        return
    amount = sign * round_amount(exact_amount(price, qty) * Decimal(end - now) / Decimal(end - start))
    if amount == 0:
        return
    word = "Unused" if sign < 0 else "Remaining"
    description = (
        f"{word} time on {price_description(ctx.store, price, qty).split(' (')[0]} after {_fmt_date(now)}"
    )
    rec = {
        "id": ctx.store.new_id("ii"),
        "object": "invoiceitem",
        "amount": amount,
        "currency": price["currency"],
        "customer": sub["customer"],
        "customer_account": None,
        "date": now,
        "description": description,
        "discountable": False,
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": {},
        "net_amount": amount,
        "parent": {
            "subscription_details": {"subscription": sub["id"], "subscription_item": item["id"]},
            "type": "subscription_details",
        },
        "period": {"end": end, "start": now},
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]},
            "type": "price_details",
            "unit_amount_decimal": price["unit_amount_decimal"],
        },
        "proration": True,
        "quantity": qty,
        "quantity_decimal": str(qty),
        "tax_rates": [],
        "test_clock": None,
    }
    ctx.store.put("invoiceitem", rec)
    ctx.emit("invoiceitem.created", "invoiceitem", rec)


def prorate_change(ctx: Ctx, sub: dict, item: dict, old: tuple, new: tuple, behavior: str) -> None:
    """Create proration invoice items for a licensed item going from ``old`` to ``new`` (price, qty)."""
    if behavior == "none" or sub["status"] == "trialing":
        return
    (old_price, old_qty), (new_price, new_qty) = old, new
    if old_price is not None and not is_metered(old_price) and old_qty:
        _proration_item(ctx, sub, item, old_price, old_qty, -1)
    if new_price is not None and not is_metered(new_price) and new_qty:
        _proration_item(ctx, sub, item, new_price, new_qty, +1)


def invoice_now(ctx: Ctx, sub: dict, billing_reason: str) -> None:
    customer = ctx.store.get("customer", sub["customer"])
    inv = new_invoice(
        ctx,
        customer,
        subscription=sub,
        billing_reason=billing_reason,
        collection_method=sub["collection_method"],
        currency=sub["currency"],
        days_until_due=sub["days_until_due"],
    )
    attach_pending_items(ctx, inv, sub["id"])
    if inv["_lines"]:
        save_new(ctx, inv)
        finalize_and_collect(ctx, inv)
        sub["latest_invoice"] = inv["id"]


def emit_updated(ctx: Ctx, sub: dict, before: dict) -> None:
    after = render(ctx.store, "subscription", sub)
    previous = {k: v for k, v in before.items() if after.get(k) != v}
    if previous:
        ctx.emit("customer.subscription.updated", "subscription", sub, previous)


def apply_item_spec(ctx: Ctx, sub: dict, spec: dict, param: str, behavior: str) -> None:
    item_id = spec.get("id")
    if not item_id:
        price = item_price(ctx, spec, param)
        qty = item_quantity(price, spec, param)
        item = new_item(ctx, sub, price, qty, spec.get("metadata"))
        prorate_change(ctx, sub, item, (None, None), (price, qty), behavior)
        return
    if item_id not in sub["_items"]:
        raise errors.resource_missing("subscription item", item_id, param_name(param, "id"))
    item = ctx.store.get("subscription_item", item_id)
    old_price = ctx.store.get("price", item["price"])
    old = (old_price, item["quantity"])
    if opt_bool(spec, "deleted", False):
        sub["_items"].remove(item_id)
        del ctx.store.data["subscription_item"][item_id]
        prorate_change(ctx, sub, item, old, (None, None), behavior)
        return
    price = item_price(ctx, spec, param) if spec.get("price") or spec.get("plan") else old_price
    qty = item_quantity(price, spec, param, default=None)
    if qty is None and not is_metered(price):
        qty = item["quantity"] if not is_metered(old_price) else 1
    item["price"], item["quantity"] = price["id"], qty
    if "metadata" in spec:
        item["metadata"] = apply_metadata(item["metadata"], spec["metadata"])
    if (price["id"], qty) != (old_price["id"], old[1]):
        prorate_change(ctx, sub, item, old, (price, qty), behavior)
