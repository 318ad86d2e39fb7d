"""Price arithmetic: per-unit, graduated and volume tiers, transform_quantity, period arithmetic.

Stripe computes a line's amount exactly (decimal unit amounts allowed) and rounds once per invoice
line, half up ("0.05 * 30 = 1.5, which is then rounded up to 2 cents"). For tiered prices the first
tier starts at 0, so a quantity of 0 falls into the first tier (its flat fee, if any, applies).
"""

from __future__ import annotations

import calendar
import datetime as dt
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal


def _dec(value) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def unit_of(tier_or_price: dict) -> Decimal:
    if tier_or_price.get("unit_amount_decimal") not in (None, ""):
        return _dec(tier_or_price["unit_amount_decimal"])
    return _dec(tier_or_price.get("unit_amount"))


def flat_of(tier: dict) -> Decimal:
    if tier.get("flat_amount_decimal") not in (None, ""):
        return _dec(tier["flat_amount_decimal"])
    return _dec(tier.get("flat_amount"))


def transform(quantity: Decimal, transform_quantity: dict | None) -> Decimal:
    if not transform_quantity:
        return quantity
    divide_by = Decimal(int(transform_quantity["divide_by"]))
    rounding = ROUND_CEILING if transform_quantity.get("round") == "up" else ROUND_FLOOR
    return (quantity / divide_by).to_integral_value(rounding=rounding)


def exact_amount(price: dict, quantity) -> Decimal:
    """The unrounded amount (minor units) that ``quantity`` units of ``price`` cost."""
    q = _dec(quantity)
    if price.get("billing_scheme") != "tiered":
        return transform(q, price.get("transform_quantity")) * unit_of(price)
    tiers = price.get("_tiers") or []
    q = max(q, Decimal(0))
    if price.get("tiers_mode") == "volume":
        for tier in tiers:
            if tier.get("up_to") is None or q <= tier["up_to"]:
                return q * unit_of(tier) + flat_of(tier)
        return Decimal(0)
    total, prev = Decimal(0), Decimal(0)
    for i, tier in enumerate(tiers):
        upper = tier.get("up_to")
        if i > 0 and q <= prev:
            break
        top = q if upper is None else min(q, Decimal(upper))
        total += max(top - prev, Decimal(0)) * unit_of(tier) + flat_of(tier)
        if upper is None:
            break
        prev = Decimal(upper)
    return total


def round_amount(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_HALF_UP))


def graduated_tier_amounts(price: dict, quantity) -> list[Decimal]:
    """The unrounded amount of each tier a graduated price reaches (Stripe bills one line per tier)."""
    q = max(_dec(quantity), Decimal(0))
    amounts, prev = [], Decimal(0)
    for i, tier in enumerate(price.get("_tiers") or []):
        upper = tier.get("up_to")
        if i > 0 and q <= prev:
            break
        top = q if upper is None else min(q, Decimal(upper))
        amounts.append(max(top - prev, Decimal(0)) * unit_of(tier) + flat_of(tier))
        if upper is None:
            break
        prev = Decimal(upper)
    return amounts


def line_amount(price: dict, quantity) -> int:
    """Integer minor units, rounded half up once per invoice line: for graduated prices, once per tier."""
    if price.get("billing_scheme") == "tiered" and price.get("tiers_mode") != "volume":
        return sum(round_amount(amount) for amount in graduated_tier_amounts(price, quantity))
    return round_amount(exact_amount(price, quantity))


def add_interval(ts: int, interval: str, count: int = 1) -> int:
    """``ts`` plus ``count`` intervals, months clamped to the end of the month like Stripe."""
    if interval == "day":
        return ts + 86400 * count
    if interval == "week":
        return ts + 7 * 86400 * count
    months = count * (12 if interval == "year" else 1)
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    month_index = d.month - 1 + months
    year, month = d.year + month_index // 12, month_index % 12 + 1
    day = min(d.day, calendar.monthrange(year, month)[1])
    return int(d.replace(year=year, month=month, day=day).timestamp())
