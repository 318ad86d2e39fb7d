"""Products and prices."""

from __future__ import annotations

import copy

from .. import errors
from ..core import Ctx, filter_range, paginate, public, route
from ..params import (
    apply_metadata,
    decimal_str,
    one_of,
    opt_bool,
    opt_int,
    opt_str,
    require,
    to_decimal,
    to_int,
)

# ---------------------------------------------------------------------------- products


def _apply_product(rec: dict, params: dict) -> None:
    for key in ("name", "description", "statement_descriptor", "tax_code", "unit_label", "url"):
        if key in params:
            rec[key] = opt_str(params, key)
    if "active" in params:
        rec["active"] = opt_bool(params, "active")
    if "shippable" in params:
        rec["shippable"] = opt_bool(params, "shippable")
    if "metadata" in params:
        rec["metadata"] = apply_metadata(rec.get("metadata"), params["metadata"])
    if "images" in params:
        rec["images"] = params["images"] if isinstance(params["images"], list) else []
    if "marketing_features" in params:
        feats = params["marketing_features"]
        rec["marketing_features"] = (
            [{"name": f.get("name")} for f in feats] if isinstance(feats, list) else []
        )
    if "package_dimensions" in params:
        dims = params["package_dimensions"]
        rec["package_dimensions"] = (
            {k: float(dims[k]) for k in ("height", "length", "weight", "width")} if dims else None
        )


def new_product(ctx: Ctx, params: dict) -> dict:
    product_id = params.get("id") or ctx.store.new_id("prod", 14)
    if ctx.store.get("product", product_id):
        raise errors.StripeError("Product already exists.", code="resource_already_exists", param="id")
    now = ctx.now()
    rec = {
        "id": product_id,
        "object": "product",
        "active": True,
        "created": now,
        "default_price": None,
        "description": None,
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": {},
        "name": require(params, "name"),
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "type": one_of(params, "type", ["good", "service"], "service"),
        "unit_label": None,
        "updated": now,
        "url": None,
    }
    _apply_product(rec, params)
    ctx.store.put("product", rec)
    ctx.emit("product.created", "product", rec)
    return rec


@route("POST", "/v1/products", "product.create")
def create_product(ctx: Ctx, params: dict) -> dict:
    rec = new_product(ctx, params)
    data = params.get("default_price_data")
    if isinstance(data, dict):
        price_params = {k: v for k, v in data.items() if k != "metadata"}
        price_params["metadata"] = data.get("metadata") or {}
        price = new_price(ctx, {**price_params, "product": rec["id"]})
        rec["default_price"] = price["id"]
    return public(rec)


@route("GET", "/v1/products/{id}", "product.retrieve")
def retrieve_product(ctx: Ctx, params: dict, id: str) -> dict:
    return public(ctx.load("product", id))


@route("POST", "/v1/products/{id}", "product.update")
def update_product(ctx: Ctx, params: dict, id: str) -> dict:
    rec = ctx.load("product", id)
    before = public(rec)
    _apply_product(rec, params)
    if "default_price" in params:
        price_id = params["default_price"] or None
        if price_id:
            ctx.load("price", price_id, "default_price")
        rec["default_price"] = price_id
    previous = {k: v for k, v in before.items() if rec.get(k) != v}
    if previous:
        rec["updated"] = ctx.now()
        ctx.emit("product.updated", "product", rec, previous)
    return public(rec)


@route("DELETE", "/v1/products/{id}", "product.delete")
def delete_product(ctx: Ctx, params: dict, id: str) -> dict:
    ctx.load("product", id)
    if any(p["product"] == id for p in ctx.store.all("price")):
        raise errors.StripeError(
            "This product cannot be deleted because it has one or more user-created prices."
        )
    snapshot = public(ctx.store.data["product"].pop(id))
    ctx.store.record_event("product.deleted", snapshot, request_id=ctx.request_id)
    return {"id": id, "object": "product", "deleted": True}


@route("GET", "/v1/products", "product.list")
def list_products(ctx: Ctx, params: dict) -> dict:
    items = ctx.store.all("product")
    if "active" in params:
        active = opt_bool(params, "active")
        items = [p for p in items if p["active"] == active]
    if params.get("ids"):
        ids = params["ids"] if isinstance(params["ids"], list) else [params["ids"]]
        items = [p for p in items if p["id"] in ids]
    if "shippable" in params:
        shippable = opt_bool(params, "shippable")
        items = [p for p in items if p["shippable"] == shippable]
    items = filter_range(items, params, "created")
    return paginate(items, params, "/v1/products", "product")


@route("GET", "/v1/products/{id}/features", "product_feature.list")
def list_product_features(ctx: Ctx, params: dict, id: str) -> dict:
    """Entitlement features attached to a product: the portal attaches none, so always an empty list."""
    ctx.load("product", id)
    return paginate([], params, f"/v1/products/{id}/features", "product_feature")


# ---------------------------------------------------------------------------- prices


def _amount_pair(obj: dict, int_key: str, dec_key: str, param_prefix: str) -> tuple[int | None, str | None]:
    """Normalise (unit_amount, unit_amount_decimal) the way Stripe echoes them."""
    has_int, has_dec = obj.get(int_key) not in (None, ""), obj.get(dec_key) not in (None, "")
    if has_int and has_dec:
        raise errors.StripeError(
            "You may only specify one of these parameters: "
            f"{param_prefix}{int_key}, {param_prefix}{dec_key}.",
            param=f"{param_prefix}{int_key}",
        )
    if has_int:
        value = to_int(obj[int_key], f"{param_prefix}{int_key}")
        if value < 0:
            raise errors.StripeError(
                "This value must be greater than or equal to 0.", param=f"{param_prefix}{int_key}"
            )
        return value, str(value)
    if has_dec:
        d = to_decimal(obj[dec_key], f"{param_prefix}{dec_key}")
        if d < 0:
            raise errors.StripeError(
                "This value must be greater than or equal to 0.", param=f"{param_prefix}{dec_key}"
            )
        if d.as_tuple().exponent < -12:
            raise errors.StripeError(
                "Decimal values can have at most 12 decimal places.", param=f"{param_prefix}{dec_key}"
            )
        return (int(d) if d == d.to_integral_value() else None), decimal_str(d)
    return None, None


def _tiers(raw) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise errors.missing_param("tiers")
    tiers, prev = [], 0
    for i, tier in enumerate(raw):
        p = f"tiers[{i}]"
        if not isinstance(tier, dict):
            raise errors.StripeError("Invalid hash", param=p)
        up_raw = tier.get("up_to")
        up_to = None if up_raw == "inf" else to_int(up_raw, f"{p}[up_to]")
        last = i == len(raw) - 1
        if (up_to is None) != last:
            raise errors.StripeError(
                "Only the last tier may (and must) have `up_to` set to `inf`.", param=f"{p}[up_to]"
            )
        if up_to is not None and up_to <= prev and i > 0 or (up_to is not None and up_to < 1):
            raise errors.StripeError("Tiers must be sorted by ascending `up_to` values.", param=f"{p}[up_to]")
        unit_amount, unit_dec = _amount_pair(tier, "unit_amount", "unit_amount_decimal", f"{p}[")
        flat_amount, flat_dec = _amount_pair(tier, "flat_amount", "flat_amount_decimal", f"{p}[")
        tiers.append(
            {
                "flat_amount": flat_amount,
                "flat_amount_decimal": flat_dec,
                "unit_amount": unit_amount,
                "unit_amount_decimal": unit_dec,
                "up_to": up_to,
            }
        )
        prev = up_to or prev
    return tiers


def _recurring(ctx: Ctx, raw) -> dict | None:
    if not isinstance(raw, dict):
        return None
    usage_type = one_of(raw, "usage_type", ["licensed", "metered"], "licensed")
    meter = raw.get("meter") or None
    if usage_type == "metered":
        if not meter:
            raise errors.missing_param("recurring[meter]")
        ctx.load("billing.meter", meter, "recurring[meter]")
    elif meter:
        raise errors.StripeError(
            "You can only set `recurring[meter]` when `recurring[usage_type]` is `metered`.",
            param="recurring[meter]",
        )
    interval = raw.get("interval")
    if interval not in ("day", "week", "month", "year"):
        raise errors.invalid_enum("recurring[interval]", ["day", "week", "month", "year"])
    return {
        "interval": interval,
        "interval_count": opt_int(raw, "interval_count", 1),
        "meter": meter,
        "trial_period_days": opt_int(raw, "trial_period_days"),
        "usage_type": usage_type,
    }


def _claim_lookup_key(ctx: Ctx, price_id: str, lookup_key, transfer: bool) -> None:
    if not lookup_key:
        return
    for other in ctx.store.all("price"):
        if other["id"] != price_id and other.get("lookup_key") == lookup_key:
            if not transfer:
                raise errors.StripeError(
                    f"A price (`{other['id']}`) already uses that lookup key.", param="lookup_key"
                )
            before = other["lookup_key"]
            other["lookup_key"] = None
            ctx.emit("price.updated", "price", other, {"lookup_key": before})


def new_price(ctx: Ctx, params: dict) -> dict:
    currency = str(require(params, "currency")).lower()
    if len(currency) != 3 or not currency.isalpha():
        raise errors.StripeError(f"Invalid currency: {currency}.", param="currency")
    if params.get("product_data"):
        product = new_product(ctx, params["product_data"])
    elif params.get("product"):
        product = ctx.load("product", params["product"], "product")
    else:
        raise errors.missing_param("product")
    scheme = one_of(params, "billing_scheme", ["per_unit", "tiered"], "per_unit")
    tiers, tiers_mode = None, None
    unit_amount, unit_dec = _amount_pair(params, "unit_amount", "unit_amount_decimal", "")
    custom = params.get("custom_unit_amount") if isinstance(params.get("custom_unit_amount"), dict) else None
    if scheme == "tiered":
        if unit_dec is not None:
            raise errors.StripeError(
                "You may not specify `unit_amount` when `billing_scheme` is `tiered`.", param="unit_amount"
            )
        if not params.get("tiers_mode"):
            raise errors.missing_param("tiers_mode")
        tiers_mode = one_of(params, "tiers_mode", ["graduated", "volume"])
        tiers = _tiers(params.get("tiers"))
        if params.get("transform_quantity"):
            raise errors.StripeError("`transform_quantity` cannot be combined with `tiers`.", param="tiers")
    else:
        if params.get("tiers") or params.get("tiers_mode"):
            raise errors.StripeError(
                "You may only specify `tiers` when `billing_scheme` is `tiered`.", param="billing_scheme"
            )
        if unit_dec is None and not custom:
            raise errors.missing_param("unit_amount")
    transform = params.get("transform_quantity")
    if isinstance(transform, dict):
        transform = {
            "divide_by": to_int(transform["divide_by"], "transform_quantity[divide_by]"),
            "round": one_of(transform, "round", ["up", "down"]),
        }
    else:
        transform = None
    recurring = _recurring(ctx, params.get("recurring"))
    price_id = ctx.store.new_id("price")
    lookup_key = opt_str(params, "lookup_key")
    _claim_lookup_key(ctx, price_id, lookup_key, bool(opt_bool(params, "transfer_lookup_key", False)))
    rec = {
        "id": price_id,
        "object": "price",
        "active": opt_bool(params, "active", True),
        "billing_scheme": scheme,
        "created": ctx.now(),
        "currency": currency,
        "custom_unit_amount": (
            {k: opt_int(custom, k) for k in ("maximum", "minimum", "preset")} if custom else None
        ),
        "livemode": False,
        "lookup_key": lookup_key,
        "metadata": apply_metadata({}, params.get("metadata")),
        "nickname": opt_str(params, "nickname"),
        "product": product["id"],
        "recurring": recurring,
        "tax_behavior": one_of(
            params, "tax_behavior", ["exclusive", "inclusive", "unspecified"], "unspecified"
        ),
        "tiers_mode": tiers_mode,
        "transform_quantity": transform,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_dec,
        "_tiers": tiers,
    }
    ctx.store.put("price", rec)
    ctx.emit("price.created", "price", rec)
    return rec


@route("POST", "/v1/prices", "price.create")
def create_price(ctx: Ctx, params: dict) -> dict:
    return public(new_price(ctx, params))


@route("GET", "/v1/prices/{id}", "price.retrieve")
def retrieve_price(ctx: Ctx, params: dict, id: str) -> dict:
    return public(ctx.load("price", id))


@route("POST", "/v1/prices/{id}", "price.update")
def update_price(ctx: Ctx, params: dict, id: str) -> dict:
    rec = ctx.load("price", id)
    before = public(rec)
    if "active" in params:
        rec["active"] = opt_bool(params, "active")
    if "metadata" in params:
        rec["metadata"] = apply_metadata(rec["metadata"], params["metadata"])
    if "nickname" in params:
        rec["nickname"] = opt_str(params, "nickname")
    if "tax_behavior" in params:
        rec["tax_behavior"] = one_of(params, "tax_behavior", ["exclusive", "inclusive", "unspecified"])
    if "lookup_key" in params:
        key = opt_str(params, "lookup_key")
        _claim_lookup_key(ctx, id, key, bool(opt_bool(params, "transfer_lookup_key", False)))
        rec["lookup_key"] = key
    previous = {k: v for k, v in before.items() if rec.get(k) != v}
    if previous:
        ctx.emit("price.updated", "price", rec, previous)
    return public(rec)


@route("GET", "/v1/prices", "price.list")
def list_prices(ctx: Ctx, params: dict) -> dict:
    items = ctx.store.all("price")
    if "active" in params:
        active = opt_bool(params, "active")
        items = [p for p in items if p["active"] == active]
    if params.get("currency"):
        items = [p for p in items if p["currency"] == str(params["currency"]).lower()]
    if params.get("product"):
        items = [p for p in items if p["product"] == params["product"]]
    if params.get("type"):
        items = [p for p in items if p["type"] == params["type"]]
    if params.get("lookup_keys"):
        keys = params["lookup_keys"] if isinstance(params["lookup_keys"], list) else [params["lookup_keys"]]
        items = [p for p in items if p.get("lookup_key") in keys]
    recurring = params.get("recurring")
    if isinstance(recurring, dict):
        for key, want in recurring.items():
            items = [p for p in items if p["recurring"] and p["recurring"].get(key) == want]
    items = filter_range(items, params, "created")
    return paginate(items, params, "/v1/prices", "price")


def plan_from_price(price: dict) -> dict:
    """The legacy ``plan`` view of a recurring price (still returned on subscription items)."""
    recurring = price.get("recurring") or {}
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring.get("interval"),
        "interval_count": recurring.get("interval_count"),
        "livemode": False,
        "metadata": copy.deepcopy(price["metadata"]),
        "meter": recurring.get("meter"),
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": price["tiers_mode"],
        "transform_usage": copy.deepcopy(price["transform_quantity"]),
        "trial_period_days": recurring.get("trial_period_days"),
        "usage_type": recurring.get("usage_type"),
    }
