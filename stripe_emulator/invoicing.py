"""Invoice building blocks shared by invoices, invoice items, subscriptions and period rollover."""

from __future__ import annotations

from decimal import Decimal

from . import errors
from .core import Ctx, list_object, public, renderer
from .pricing import line_amount
from .resources.billing import aggregate
from .store import Store

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "cad": "CA$", "aud": "A$", "jpy": "¥"}


def money(minor_units, currency: str) -> str:
    value = Decimal(str(minor_units or 0)) / 100
    text = format(value.quantize(Decimal("0.01")) if value == value.quantize(Decimal("0.01")) else value, "f")
    symbol = _SYMBOLS.get(currency, "")
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def price_description(store: Store, price: dict, quantity) -> str:
    product = store.get("product", price["product"]) or {}
    name = product.get("name") or price["product"]
    if price["billing_scheme"] == "tiered":
        return f"{quantity} × {name} (Tiered)"
    unit = money(price["unit_amount_decimal"], price["currency"])
    interval = (price.get("recurring") or {}).get("interval")
    per = f" / {interval}" if interval else ""
    return f"{quantity} × {name} (at {unit}{per})"


def make_line(
    line_id: str,
    *,
    invoice_id: str | None,
    amount: int,
    currency: str,
    description: str | None,
    period: tuple[int, int],
    quantity,
    price: dict | None = None,
    subscription: str | None = None,
    subscription_item: str | None = None,
    invoice_item: str | None = None,
    proration: bool = False,
    metadata: dict | None = None,
) -> dict:
    details = {
        "invoice_item": invoice_item,
        "proration": proration,
        "proration_details": {"credited_items": None},
        "subscription": subscription,
    }
    if invoice_item:
        parent = {
            "type": "invoice_item_details",
            "invoice_item_details": details,
            "subscription_item_details": None,
        }
    else:
        details["subscription_item"] = subscription_item
        parent = {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": details,
        }
    pricing = None
    if price is not None:
        pricing = {
            "price_details": {"price": price["id"], "product": price["product"]},
            "type": "price_details",
            "unit_amount_decimal": price.get("unit_amount_decimal"),
        }
    return {
        "id": line_id,
        "object": "line_item",
        "amount": amount,
        "currency": currency,
        "description": description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "parent": parent,
        "period": {"end": period[1], "start": period[0]},
        "pretax_credit_amounts": [],
        "pricing": pricing,
        "quantity": None if quantity is None else int(quantity),
        "quantity_decimal": None if quantity is None else str(quantity),
        "subscription": subscription,
        "subtotal": amount,
        "taxes": [],
    }


def line_for_invoiceitem(store: Store, ii: dict, invoice_id: str | None, line_id: str) -> dict:
    price = None
    pricing = ii.get("pricing") or {}
    price_id = (pricing.get("price_details") or {}).get("price")
    if price_id:
        price = store.get("price", price_id)
    sub = ((ii.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    return make_line(
        line_id,
        invoice_id=invoice_id,
        amount=ii["amount"],
        currency=ii["currency"],
        description=ii["description"],
        period=(ii["period"]["start"], ii["period"]["end"]),
        quantity=ii["quantity"],
        price=price,
        subscription=sub,
        invoice_item=ii["id"],
        proration=ii["proration"],
        metadata=ii["metadata"],
    )


def subscription_lines(
    store: Store,
    sub: dict,
    *,
    usage_period: tuple[int, int],
    licensed_period: tuple[int, int] | None,
    invoice_id: str | None,
    line_prefix: str = "il",
) -> list[dict]:
    """Lines a subscription bills: metered usage in arrears, licensed quantity in advance."""
    lines = []
    for item_id in sub["_items"]:
        item = store.get("subscription_item", item_id)
        price = store.get("price", item["price"])
        recurring = price.get("recurring") or {}
        if recurring.get("usage_type") == "metered":
            quantity, period = metered_quantity(store, price, sub["customer"], usage_period), usage_period
        elif licensed_period is None:
            continue
        else:
            quantity, period = item["quantity"] or 0, licensed_period
        lines.append(
            make_line(
                store.new_id(line_prefix),
                invoice_id=invoice_id,
                amount=line_amount(price, quantity),
                currency=price["currency"],
                description=price_description(store, price, quantity),
                period=period,
                quantity=quantity,
                price=price,
                subscription=sub["id"],
                subscription_item=item_id,
                metadata=item.get("metadata"),
            )
        )
    return lines


def metered_quantity(store: Store, price: dict, customer_id: str, period: tuple[int, int]) -> int:
    """A metered price's quantity for ``customer_id``: its meter's aggregate over ``period``."""
    meter = store.get("billing.meter", (price.get("recurring") or {}).get("meter"))
    return aggregate(store, meter, customer_id, *period) if meter else 0


def refresh_usage(store: Store, inv: dict) -> None:
    """Bring each metered subscription line up to the meter's latest total over the line's period.

    Stripe's finalization grace period: usage for an ended period may still be reported until the
    period's invoice is finalized, and finalization updates the invoice to the latest quantity. Events
    that arrive after finalization are stored (and show in summaries) but bill nowhere.
    """
    for line in inv["_lines"]:
        if (line.get("parent") or {}).get("type") != "subscription_item_details":
            continue
        price_id = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
        price = store.get("price", price_id) if price_id else None
        if price is None or (price.get("recurring") or {}).get("usage_type") != "metered":
            continue
        period = (line["period"]["start"], line["period"]["end"])
        quantity = metered_quantity(store, price, inv["customer"], period)
        amount = line_amount(price, quantity)
        line["amount"] = line["subtotal"] = amount
        line["quantity"], line["quantity_decimal"] = int(quantity), str(quantity)
        line["description"] = price_description(store, price, quantity)


def recompute(inv: dict) -> None:
    subtotal = sum(line["amount"] for line in inv["_lines"])
    inv["subtotal"] = inv["subtotal_excluding_tax"] = subtotal
    inv["total"] = inv["total_excluding_tax"] = subtotal
    if inv["status"] in ("draft", "open"):
        inv["amount_due"] = max(subtotal, 0)
        inv["amount_remaining"] = max(inv["amount_due"] - inv["amount_paid"], 0)


@renderer("invoice")
def render_invoice(store: Store, rec: dict) -> dict:
    out = public(rec)
    out["lines"] = list_object(public_lines(rec), f"/v1/invoices/{rec['id']}/lines", len(rec["_lines"]))
    return out


def public_lines(rec: dict) -> list[dict]:
    return [dict(line) for line in rec["_lines"]]


def new_invoice(
    ctx: Ctx,
    customer: dict,
    *,
    subscription: dict | None = None,
    billing_reason: str = "manual",
    collection_method: str = "charge_automatically",
    auto_advance: bool = False,
    days_until_due: int | None = None,
    description: str | None = None,
    metadata: dict | None = None,
    currency: str | None = None,
    created: int | None = None,
    period: tuple[int, int] | None = None,
    invoice_id: str | None = None,
) -> dict:
    now = created if created is not None else ctx.now()
    period = period or (now, now)
    currency = currency or customer.get("currency") or "usd"
    parent = None
    if subscription is not None:
        parent = {
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(subscription["metadata"]),
                "subscription": subscription["id"],
            },
            "type": "subscription_details",
        }
    address = customer.get("address")
    inv = {
        "id": invoice_id or ctx.store.new_id("in"),
        "object": "invoice",
        "account_country": "US",
        "account_name": "Stripe Emulator",
        "account_tax_ids": None,
        "amount_due": 0,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": auto_advance,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": now + 3600 if auto_advance else None,
        "billing_reason": billing_reason,
        "collection_method": collection_method,
        "created": now,
        "currency": currency,
        "custom_fields": None,
        "customer": customer["id"],
        "customer_account": None,
        "customer_address": address,
        "customer_email": customer.get("email"),
        "customer_name": customer.get("name"),
        "customer_phone": customer.get("phone"),
        "customer_shipping": customer.get("shipping"),
        "customer_tax_exempt": customer.get("tax_exempt", "none"),
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": description,
        "discounts": [],
        "due_date": None,
        "effective_at": None,
        "ending_balance": None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "next_payment_attempt": now + 3600 if collection_method == "charge_automatically" else None,
        "number": None,
        "on_behalf_of": None,
        "parent": parent,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": period[1],
        "period_start": period[0],
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": customer.get("balance", 0),
        "statement_descriptor": None,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subscription": subscription["id"] if subscription else None,
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "test_clock": None,
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None,
        "_lines": [],
        "_days_until_due": days_until_due,
    }
    if customer.get("currency") is None:
        customer["currency"] = currency
    return inv


def attach_pending_items(ctx: Ctx, inv: dict, subscription_id: str | None = None) -> None:
    """Move the customer's pending invoice items onto ``inv`` (oldest first)."""
    for ii in ctx.store.all("invoiceitem", newest_first=False):
        if ii["customer"] != inv["customer"] or ii["invoice"] is not None or ii.get("deleted"):
            continue
        ii_sub = ((ii.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        if subscription_id is not None and ii_sub not in (None, subscription_id):
            continue
        ii["invoice"] = inv["id"]
        inv["_lines"].append(line_for_invoiceitem(ctx.store, ii, inv["id"], ctx.store.new_id("il")))


def save_new(ctx: Ctx, inv: dict) -> dict:
    recompute(inv)
    ctx.store.put("invoice", inv)
    ctx.emit("invoice.created", "invoice", inv)
    return inv


def finalize(ctx: Ctx, inv: dict) -> None:
    if inv["status"] != "draft":
        raise errors.StripeError(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice."
        )
    if inv.get("subscription"):
        refresh_usage(ctx.store, inv)
    now = ctx.now()
    customer = ctx.store.get("customer", inv["customer"]) or {}
    seq = customer.get("next_invoice_sequence", 1)
    customer["next_invoice_sequence"] = seq + 1
    inv["number"] = f"{customer.get('invoice_prefix', 'EMU')}-{seq:04d}"
    inv["status"] = "open"
    inv["status_transitions"]["finalized_at"] = now
    inv["effective_at"] = now
    inv["ending_balance"] = inv["starting_balance"]
    inv["automatically_finalizes_at"] = None
    inv["hosted_invoice_url"] = f"https://invoice.stripe.com/i/emulator/{inv['id']}"
    inv["invoice_pdf"] = f"https://pay.stripe.com/invoice/emulator/{inv['id']}/pdf"
    if inv["collection_method"] == "send_invoice":
        inv["due_date"] = now + 86400 * int(inv.get("_days_until_due") or 30)
        inv["next_payment_attempt"] = None
    recompute(inv)
    ctx.emit("invoice.finalized", "invoice", inv)
    if inv["amount_due"] == 0:
        mark_paid(ctx, inv, out_of_band=False)
    elif inv["auto_advance"] and inv["collection_method"] == "charge_automatically":
        mark_paid(ctx, inv, out_of_band=False)


def mark_paid(ctx: Ctx, inv: dict, *, out_of_band: bool) -> None:
    now = ctx.now()
    inv["status"] = "paid"
    inv["amount_paid"] = inv["amount_due"]
    inv["amount_remaining"] = 0
    inv["status_transitions"]["paid_at"] = now
    inv["next_payment_attempt"] = None
    if inv["amount_due"] > 0 and not out_of_band:
        inv["attempted"] = True
        inv["attempt_count"] += 1
    ctx.emit("invoice.paid", "invoice", inv)
    if not out_of_band:
        ctx.emit("invoice.payment_succeeded", "invoice", inv)


def finalize_and_collect(ctx: Ctx, inv: dict) -> None:
    """What Stripe does with a subscription invoice: finalize it, then charge it (always succeeds here)."""
    finalize(ctx, inv)
    if inv["status"] == "open" and inv["collection_method"] == "charge_automatically":
        mark_paid(ctx, inv, out_of_band=False)
