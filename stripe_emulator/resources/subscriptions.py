"""Subscriptions: create, retrieve, update, list, cancel."""

from __future__ import annotations

from decimal import Decimal

from .. import errors
from ..core import Ctx, filter_range, paginate, render, route
from ..invoicing import (
    attach_pending_items,
    finalize_and_collect,
    make_line,
    new_invoice,
    price_description,
    save_new,
    subscription_lines,
)
from ..params import apply_metadata, one_of, opt_bool, opt_int, opt_str, to_int
from ..pricing import add_interval, exact_amount, line_amount, round_amount
from .customers import ensure_customer
from .subscription_helpers import (
    PRORATION,
    apply_item_spec,
    check_compatible,
    emit_updated,
    invoice_now,
    is_metered,
    item_price,
    item_quantity,
    new_item,
    prorate_change,
)

# ---------------------------------------------------------------------------- subscriptions


@route("POST", "/v1/subscriptions", "subscription.create")
def create_subscription(ctx: Ctx, params: dict) -> dict:
    customer = ensure_customer(ctx, params.get("customer"))
    specs = params.get("items")
    if not isinstance(specs, list) or not specs:
        raise errors.missing_param("items")
    prices = [item_price(ctx, spec, f"items[{i}]") for i, spec in enumerate(specs)]
    quantities = [
        item_quantity(p, spec, f"items[{i}]") for i, (p, spec) in enumerate(zip(prices, specs, strict=True))
    ]
    check_compatible(prices)
    collection = one_of(
        params, "collection_method", ["charge_automatically", "send_invoice"], "charge_automatically"
    )
    days_until_due = opt_int(params, "days_until_due")
    if collection == "send_invoice" and days_until_due is None:
        raise errors.missing_param("days_until_due")
    behavior = one_of(params, "proration_behavior", PRORATION, "create_prorations")
    now = ctx.now()
    recurring = prices[0]["recurring"]
    interval = {"interval": recurring["interval"], "interval_count": recurring["interval_count"]}
    full_end = add_interval(now, interval["interval"], interval["interval_count"])
    anchor = opt_int(params, "billing_cycle_anchor")
    if anchor is not None and not now <= anchor <= full_end:
        raise errors.StripeError(
            "billing_cycle_anchor cannot be later than next natural billing date for plan",
            param="billing_cycle_anchor",
        )
    trial_days = opt_int(params, "trial_period_days")
    trial_end = params.get("trial_end")
    trial_end = None if trial_end in (None, "", "now") else to_int(trial_end, "trial_end")
    if trial_days:
        trial_end = now + trial_days * 86400
    period_end = trial_end or anchor or full_end
    sub = {
        "id": ctx.store.new_id("sub"),
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": anchor or period_end if (anchor or trial_end) else now,
        "billing_cycle_anchor_config": None,
        "billing_mode": {
            "flexible": {"proration_discounts": "included"},
            "type": "flexible",
            "updated_at": now,
        },
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": bool(opt_bool(params, "cancel_at_period_end", False)),
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": collection,
        "created": now,
        "currency": prices[0]["currency"],
        "current_period_end": period_end,
        "current_period_start": now,
        "customer": customer["id"],
        "customer_account": None,
        "days_until_due": days_until_due,
        "default_payment_method": opt_str(params, "default_payment_method"),
        "default_source": None,
        "default_tax_rates": [],
        "description": opt_str(params, "description"),
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "latest_invoice": None,
        "livemode": False,
        "managed_payments": {"enabled": False},
        "metadata": apply_metadata({}, params.get("metadata")),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": now,
        "status": "trialing" if trial_end else "active",
        "test_clock": None,
        "transfer_data": None,
        "trial_end": trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": now if trial_end else None,
        "_items": [],
        "_interval": interval,
    }
    for price, qty, spec in zip(prices, quantities, specs, strict=True):
        new_item(ctx, sub, price, qty, spec.get("metadata"))
    if cancel_at := opt_int(params, "cancel_at"):
        sub["cancel_at"] = cancel_at
    ctx.store.put("subscription", sub)
    if customer.get("currency") is None:
        customer["currency"] = sub["currency"]
    ctx.emit("customer.subscription.created", "subscription", sub)
    # First invoice: licensed items in advance (prorated to the anchor if one was given).
    inv = new_invoice(
        ctx,
        customer,
        subscription=sub,
        billing_reason="subscription_create",
        collection_method=collection,
        currency=sub["currency"],
        days_until_due=days_until_due,
        period=(now, now),
    )
    if not trial_end:
        for item_id in sub["_items"]:
            item = ctx.store.get("subscription_item", item_id)
            price = ctx.store.get("price", item["price"])
            if is_metered(price):
                continue
            amount = line_amount(price, item["quantity"])
            if anchor and behavior != "none":
                amount = round_amount(
                    exact_amount(price, item["quantity"]) * Decimal(anchor - now) / Decimal(full_end - now)
                )
            inv["_lines"].append(
                make_line(
                    ctx.store.new_id("il"),
                    invoice_id=inv["id"],
                    amount=amount,
                    currency=price["currency"],
                    description=price_description(ctx.store, price, item["quantity"]),
                    period=(now, period_end),
                    quantity=item["quantity"],
                    price=price,
                    subscription=sub["id"],
                    subscription_item=item_id,
                    metadata=item["metadata"],
                )
            )
    attach_pending_items(ctx, inv, sub["id"])
    save_new(ctx, inv)
    finalize_and_collect(ctx, inv)
    sub["latest_invoice"] = inv["id"]
    return render(ctx.store, "subscription", sub)


@route("GET", "/v1/subscriptions/{id}", "subscription.retrieve")
def retrieve_subscription(ctx: Ctx, params: dict, id: str) -> dict:
    return render(ctx.store, "subscription", ctx.load("subscription", id))


@route("POST", "/v1/subscriptions/{id}", "subscription.update")
def update_subscription(ctx: Ctx, params: dict, id: str) -> dict:
    sub = ctx.load("subscription", id)
    if sub["status"] == "canceled" and set(params) - {"metadata", "cancellation_details", "expand"}:
        raise errors.StripeError(
            "A canceled subscription can only update its cancellation_details and metadata."
        )
    before = render(ctx.store, "subscription", sub)
    behavior = one_of(params, "proration_behavior", PRORATION, "create_prorations")
    specs = params.get("items") if isinstance(params.get("items"), list) else []
    for i, spec in enumerate(specs):
        apply_item_spec(ctx, sub, spec, f"items[{i}]", behavior)
    if specs:
        prices = [
            ctx.store.get("price", ctx.store.get("subscription_item", s)["price"]) for s in sub["_items"]
        ]
        if not prices:
            raise errors.StripeError("A subscription must have at least one active plan.", param="items")
        check_compatible(prices)
    if "metadata" in params:
        sub["metadata"] = apply_metadata(sub["metadata"], params["metadata"])
    for key in ("description", "default_payment_method"):
        if key in params:
            sub[key] = opt_str(params, key)
    if "cancel_at_period_end" in params:
        sub["cancel_at_period_end"] = bool(opt_bool(params, "cancel_at_period_end"))
        sub["cancel_at"] = sub["current_period_end"] if sub["cancel_at_period_end"] else None
    if "cancel_at" in params:
        sub["cancel_at"] = opt_int(params, "cancel_at")
    if "collection_method" in params:
        sub["collection_method"] = one_of(
            params, "collection_method", ["charge_automatically", "send_invoice"]
        )
    if "days_until_due" in params:
        sub["days_until_due"] = opt_int(params, "days_until_due")
    if isinstance(params.get("cancellation_details"), dict):
        for key in ("comment", "feedback"):
            if key in params["cancellation_details"]:
                sub["cancellation_details"][key] = params["cancellation_details"][key] or None
    if behavior == "always_invoice" and specs:
        invoice_now(ctx, sub, "subscription_update")
    emit_updated(ctx, sub, before)
    return render(ctx.store, "subscription", sub)


def cancel_subscription(ctx: Ctx, sub: dict, params: dict) -> None:
    before = render(ctx.store, "subscription", sub)
    now = ctx.now()
    if opt_bool(params, "invoice_now", False) or opt_bool(params, "prorate", False):
        if opt_bool(params, "prorate", False):
            for item_id in sub["_items"]:
                item = ctx.store.get("subscription_item", item_id)
                price = ctx.store.get("price", item["price"])
                prorate_change(ctx, sub, item, (price, item["quantity"]), (None, None), "create_prorations")
        if opt_bool(params, "invoice_now", False):
            customer = ctx.store.get("customer", sub["customer"])
            inv = new_invoice(
                ctx,
                customer,
                subscription=sub,
                billing_reason="subscription_cycle",
                collection_method=sub["collection_method"],
                currency=sub["currency"],
                period=(sub["current_period_start"], now),
            )
            inv["_lines"] = subscription_lines(
                ctx.store,
                sub,
                usage_period=(sub["current_period_start"], now),
                licensed_period=None,
                invoice_id=inv["id"],
            )
            attach_pending_items(ctx, inv, sub["id"])
            save_new(ctx, inv)
            finalize_and_collect(ctx, inv)
            sub["latest_invoice"] = inv["id"]
    sub["status"] = "canceled"
    sub["canceled_at"] = sub["ended_at"] = now
    sub["cancellation_details"]["reason"] = "cancellation_requested"
    details = params.get("cancellation_details")
    if isinstance(details, dict):
        for key in ("comment", "feedback"):
            if key in details:
                sub["cancellation_details"][key] = details[key] or None
    previous = {k: v for k, v in before.items() if render(ctx.store, "subscription", sub).get(k) != v}
    ctx.emit("customer.subscription.deleted", "subscription", sub, previous)


@route("DELETE", "/v1/subscriptions/{id}", "subscription.cancel")
def delete_subscription(ctx: Ctx, params: dict, id: str) -> dict:
    sub = ctx.load("subscription", id)
    if sub["status"] == "canceled":
        raise errors.StripeError(
            f"No such subscription: '{id}'; a similar object exists in test mode, but it has been canceled.",
            status=404,
            code="resource_missing",
            param="id",
        )
    cancel_subscription(ctx, sub, params)
    return render(ctx.store, "subscription", sub)


@route("GET", "/v1/subscriptions", "subscription.list")
def list_subscriptions(ctx: Ctx, params: dict) -> dict:
    items = ctx.store.all("subscription")
    if params.get("customer"):
        items = [s for s in items if s["customer"] == params["customer"]]
    status = params.get("status")
    if status and status != "all":
        items = [s for s in items if s["status"] == status]
    elif not status:
        items = [s for s in items if s["status"] not in ("canceled", "incomplete_expired")]
    if params.get("price"):
        items = [
            s
            for s in items
            if any(ctx.store.get("subscription_item", i)["price"] == params["price"] for i in s["_items"])
        ]
    items = filter_range(items, params, "created")
    return paginate(
        items, params, "/v1/subscriptions", "subscription", lambda rec: render(ctx.store, "subscription", rec)
    )
