"""Invoice items, invoices and invoice previews."""

from __future__ import annotations

from .. import errors
from ..core import Ctx, filter_range, paginate, public, render, route
from ..invoicing import (
    attach_pending_items,
    finalize,
    line_for_invoiceitem,
    mark_paid,
    new_invoice,
    price_description,
    recompute,
    save_new,
    subscription_lines,
)
from ..params import apply_metadata, decimal_str, one_of, opt_bool, opt_int, opt_str, to_decimal, to_int
from ..pricing import add_interval, line_amount, round_amount
from ..store import random_token
from .customers import ensure_customer

# ---------------------------------------------------------------------------- invoice items


@route("POST", "/v1/invoiceitems", "invoiceitem.create")
def create_invoiceitem(ctx: Ctx, params: dict) -> dict:
    customer = ensure_customer(ctx, params.get("customer"))
    now = ctx.now()
    quantity = opt_int(params, "quantity", 1)
    price = None
    price_id = (params.get("pricing") or {}).get("price") if isinstance(params.get("pricing"), dict) else None
    unit_dec = None
    if price_id:
        price = ctx.load("price", price_id, "pricing[price]")
        if params.get("amount") not in (None, "") or params.get("unit_amount_decimal") not in (None, ""):
            raise errors.StripeError(
                "You may only specify one of these parameters: amount, pricing[price], unit_amount_decimal.",
                param="amount",
            )
        currency = price["currency"]
        amount = line_amount(price, quantity)
        unit_dec = price["unit_amount_decimal"]
    elif params.get("unit_amount_decimal") not in (None, ""):
        d = to_decimal(params["unit_amount_decimal"], "unit_amount_decimal")
        unit_dec = decimal_str(d)
        amount = round_amount(d * quantity)
        currency = params.get("currency") or customer.get("currency")
    elif params.get("amount") not in (None, ""):
        amount = to_int(params["amount"], "amount")
        currency = params.get("currency") or customer.get("currency")
    else:
        raise errors.missing_param("amount")
    if not currency:
        raise errors.missing_param("currency")
    currency = str(currency).lower()
    invoice = None
    if params.get("invoice"):
        invoice = ctx.load("invoice", params["invoice"], "invoice")
        if invoice["status"] != "draft":
            raise errors.StripeError(
                f"Invoice {invoice['id']} is no longer editable. You can only add items to draft invoices.",
                param="invoice",
            )
    subscription_id = params.get("subscription") or None
    if subscription_id:
        ctx.load("subscription", subscription_id, "subscription")
    period = params.get("period") if isinstance(params.get("period"), dict) else None
    rec = {
        "id": ctx.store.new_id("ii"),
        "object": "invoiceitem",
        "amount": amount,
        "currency": currency,
        "customer": customer["id"],
        "customer_account": None,
        "date": now,
        "description": opt_str(params, "description"),
        "discountable": opt_bool(params, "discountable", True),
        "discounts": [],
        "invoice": invoice["id"] if invoice else None,
        "livemode": False,
        "metadata": apply_metadata({}, params.get("metadata")),
        "net_amount": amount,
        "parent": (
            {
                "subscription_details": {"subscription": subscription_id, "subscription_item": None},
                "type": "subscription_details",
            }
            if subscription_id
            else None
        ),
        "period": {
            "end": to_int(period["end"], "period[end]") if period else now,
            "start": to_int(period["start"], "period[start]") if period else now,
        },
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]} if price else None,
            "type": "price_details",
            "unit_amount_decimal": unit_dec,
        },
        "proration": False,
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "tax_rates": [],
        "test_clock": None,
    }
    if rec["description"] is None and price is not None:
        rec["description"] = price_description(ctx.store, price, quantity)
    ctx.store.put("invoiceitem", rec)
    if customer.get("currency") is None:
        customer["currency"] = currency
    if invoice is not None:
        invoice["_lines"].append(line_for_invoiceitem(ctx.store, rec, invoice["id"], ctx.store.new_id("il")))
        recompute(invoice)
    ctx.emit("invoiceitem.created", "invoiceitem", rec)
    return public(rec)


@route("GET", "/v1/invoiceitems/{id}", "invoiceitem.retrieve")
def retrieve_invoiceitem(ctx: Ctx, params: dict, id: str) -> dict:
    return public(ctx.load("invoiceitem", id))


@route("DELETE", "/v1/invoiceitems/{id}", "invoiceitem.delete")
def delete_invoiceitem(ctx: Ctx, params: dict, id: str) -> dict:
    rec = ctx.load("invoiceitem", id)
    if rec["invoice"]:
        inv = ctx.store.get("invoice", rec["invoice"])
        if inv and inv["status"] != "draft":
            raise errors.StripeError(
                "This invoice item is attached to an invoice that is no longer editable."
            )
        if inv:
            inv["_lines"] = [
                ln
                for ln in inv["_lines"]
                if ln["parent"].get("invoice_item_details") is None
                or ln["parent"]["invoice_item_details"]["invoice_item"] != id
            ]
            recompute(inv)
    snapshot = public(ctx.store.data["invoiceitem"].pop(id))
    ctx.store.record_event("invoiceitem.deleted", snapshot, request_id=ctx.request_id)
    return {"id": id, "object": "invoiceitem", "deleted": True}


@route("GET", "/v1/invoiceitems", "invoiceitem.list")
def list_invoiceitems(ctx: Ctx, params: dict) -> dict:
    items = ctx.store.all("invoiceitem")
    if params.get("customer"):
        items = [i for i in items if i["customer"] == params["customer"]]
    if params.get("invoice"):
        items = [i for i in items if i["invoice"] == params["invoice"]]
    if "pending" in params:
        pending = opt_bool(params, "pending")
        items = [i for i in items if (i["invoice"] is None) == pending]
    items = filter_range(items, params, "created", "date")
    return paginate(items, params, "/v1/invoiceitems", "invoiceitem")


# ---------------------------------------------------------------------------- invoices

_COLLECTION = ["charge_automatically", "send_invoice"]


@route("POST", "/v1/invoices", "invoice.create")
def create_invoice(ctx: Ctx, params: dict) -> dict:
    subscription = None
    if params.get("subscription"):
        subscription = ctx.load("subscription", params["subscription"], "subscription")
    customer_id = params.get("customer") or (subscription["customer"] if subscription else None)
    customer = ensure_customer(ctx, customer_id)
    collection = one_of(params, "collection_method", _COLLECTION, "charge_automatically")
    days = opt_int(params, "days_until_due")
    if collection == "send_invoice" and days is None and not params.get("due_date"):
        raise errors.missing_param("days_until_due")
    behavior = one_of(params, "pending_invoice_items_behavior", ["exclude", "include"], "exclude")
    inv = new_invoice(
        ctx,
        customer,
        subscription=subscription,
        collection_method=collection,
        auto_advance=bool(opt_bool(params, "auto_advance", False)),
        days_until_due=days,
        description=opt_str(params, "description"),
        metadata=apply_metadata({}, params.get("metadata")),
        currency=(params.get("currency") or None),
    )
    if behavior == "include":
        attach_pending_items(ctx, inv, subscription["id"] if subscription else None)
    return render(ctx.store, "invoice", save_new(ctx, inv))


@route("GET", "/v1/invoices/{id}", "invoice.retrieve")
def retrieve_invoice(ctx: Ctx, params: dict, id: str) -> dict:
    return render(ctx.store, "invoice", ctx.load("invoice", id))


@route("POST", "/v1/invoices/{id}", "invoice.update")
def update_invoice(ctx: Ctx, params: dict, id: str) -> dict:
    inv = ctx.load("invoice", id)
    before = render(ctx.store, "invoice", inv)
    if inv["status"] != "draft" and set(params) - {"metadata", "description", "footer", "expand"}:
        raise errors.StripeError("You can only update the metadata and description of a finalized invoice.")
    if "metadata" in params:
        inv["metadata"] = apply_metadata(inv["metadata"], params["metadata"])
    if "description" in params:
        inv["description"] = opt_str(params, "description")
    if "auto_advance" in params:
        inv["auto_advance"] = opt_bool(params, "auto_advance")
        inv["automatically_finalizes_at"] = inv["created"] + 3600 if inv["auto_advance"] else None
    if "collection_method" in params:
        inv["collection_method"] = one_of(params, "collection_method", _COLLECTION)
    if "days_until_due" in params:
        inv["_days_until_due"] = opt_int(params, "days_until_due")
    after = render(ctx.store, "invoice", inv)
    previous = {k: v for k, v in before.items() if after.get(k) != v}
    if previous:
        ctx.emit("invoice.updated", "invoice", inv, previous)
    return after


@route("DELETE", "/v1/invoices/{id}", "invoice.delete")
def delete_invoice(ctx: Ctx, params: dict, id: str) -> dict:
    inv = ctx.load("invoice", id)
    if inv["status"] != "draft":
        raise errors.StripeError("You can only delete draft invoices.")
    for ii in ctx.store.all("invoiceitem"):
        if ii["invoice"] == id:
            ii["invoice"] = None
    snapshot = render(ctx.store, "invoice", ctx.store.data["invoice"].pop(id))
    ctx.store.record_event("invoice.deleted", snapshot, request_id=ctx.request_id)
    return {"id": id, "object": "invoice", "deleted": True}


@route("POST", "/v1/invoices/{id}/finalize", "invoice.finalize")
def finalize_invoice(ctx: Ctx, params: dict, id: str) -> dict:
    inv = ctx.load("invoice", id)
    if "auto_advance" in params:
        inv["auto_advance"] = opt_bool(params, "auto_advance")
    finalize(ctx, inv)
    return render(ctx.store, "invoice", inv)


@route("POST", "/v1/invoices/{id}/pay", "invoice.pay")
def pay_invoice(ctx: Ctx, params: dict, id: str) -> dict:
    inv = ctx.load("invoice", id)
    if inv["status"] == "paid":
        raise errors.StripeError("Invoice is already paid")
    if inv["status"] == "void":
        raise errors.StripeError("This invoice has been voided and cannot be paid.")
    if inv["status"] == "draft":
        finalize(ctx, inv)
    if inv["status"] != "paid":
        mark_paid(ctx, inv, out_of_band=bool(opt_bool(params, "paid_out_of_band", False)))
    return render(ctx.store, "invoice", inv)


@route("POST", "/v1/invoices/{id}/void", "invoice.void")
def void_invoice(ctx: Ctx, params: dict, id: str) -> dict:
    inv = ctx.load("invoice", id)
    if inv["status"] not in ("open", "uncollectible"):
        raise errors.StripeError(
            f"You can only void an open or uncollectible invoice (this one is {inv['status']})."
        )
    inv["status"] = "void"
    inv["amount_remaining"] = 0
    inv["status_transitions"]["voided_at"] = ctx.now()
    inv["next_payment_attempt"] = None
    ctx.emit("invoice.voided", "invoice", inv)
    return render(ctx.store, "invoice", inv)


@route("GET", "/v1/invoices/{id}/lines", "invoice.list_lines")
def list_lines(ctx: Ctx, params: dict, id: str) -> dict:
    inv = ctx.load("invoice", id)
    return paginate(list(inv["_lines"]), params, f"/v1/invoices/{id}/lines", "invoice", dict)


@route("GET", "/v1/invoices", "invoice.list")
def list_invoices(ctx: Ctx, params: dict) -> dict:
    items = ctx.store.all("invoice")
    for key in ("customer", "status", "subscription", "collection_method"):
        if params.get(key):
            items = [i for i in items if i.get(key) == params[key]]
    items = filter_range(items, params, "created")
    items = filter_range(items, params, "due_date")
    return paginate(items, params, "/v1/invoices", "invoice", lambda rec: render(ctx.store, "invoice", rec))


# ---------------------------------------------------------------------------- preview


def _preview_subscription(ctx: Ctx, params: dict, customer_id: str | None) -> dict | None:
    if params.get("subscription"):
        return ctx.load("subscription", params["subscription"], "subscription")
    live = [
        s
        for s in ctx.store.all("subscription")
        if s["customer"] == customer_id and s["status"] in ("active", "trialing", "past_due")
    ]
    return min(live, key=lambda s: s["current_period_end"]) if live else None


@route("POST", "/v1/invoices/create_preview", "invoice.create_preview")
def create_preview(ctx: Ctx, params: dict) -> dict:
    if not params.get("customer") and not params.get("subscription"):
        raise errors.StripeError(
            "Missing required param: customer or subscription.", code="parameter_missing", param="customer"
        )
    subscription = _preview_subscription(ctx, params, params.get("customer"))
    customer_id = params.get("customer") or subscription["customer"]
    customer = ensure_customer(ctx, customer_id)
    if subscription is not None and subscription["customer"] != customer["id"]:
        raise errors.StripeError("The subscription does not belong to this customer.", param="subscription")
    preview_id = "upcoming_in_" + random_token(24)
    if subscription is not None:
        ps, pe = subscription["current_period_start"], subscription["current_period_end"]
        interval = subscription["_interval"]
        next_period = (pe, add_interval(pe, interval["interval"], interval["interval_count"]))
        if subscription["cancel_at_period_end"]:
            next_period = None
        inv = new_invoice(
            ctx,
            customer,
            subscription=subscription,
            billing_reason="upcoming",
            created=pe,
            period=(ps, pe),
            currency=subscription["currency"],
            invoice_id=preview_id,
            collection_method=subscription["collection_method"],
        )
        inv["_lines"] = subscription_lines(
            ctx.store,
            subscription,
            usage_period=(ps, pe),
            licensed_period=next_period,
            invoice_id=None,
            line_prefix="il_tmp",
        )
    else:
        inv = new_invoice(ctx, customer, billing_reason="manual", invoice_id=preview_id)
    pending = [
        ii
        for ii in ctx.store.all("invoiceitem", newest_first=False)
        if ii["customer"] == customer["id"] and ii["invoice"] is None
    ]
    for ii in pending:
        inv["_lines"].append(line_for_invoiceitem(ctx.store, ii, None, ctx.store.new_id("il_tmp")))
    if not inv["_lines"]:
        raise errors.StripeError(
            f"No upcoming invoices for customer: {customer['id']}", status=404, code="invoice_upcoming_none"
        )
    inv["id"] = preview_id
    recompute(inv)
    inv["automatically_finalizes_at"] = None
    out = render(ctx.store, "invoice", inv)
    out["lines"]["url"] = "/v1/invoices/upcoming/lines"
    return out
