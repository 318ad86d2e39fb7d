"""How the Django admin shows money, unit prices and counts: formatted for people (`$0.99`, `$0.90 per
resolution`, `1,234 credits`) from what is stored (integer minor units, Decimals of minor units), which it never
changes. Each helper makes an admin column / read-only field, sortable by the stored field."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from django.contrib import admin

from billing_portal.money import format_money

# Where an object's currency is, in the order tried: its own, its account's, its plan version's, its pack's.
_CURRENCY_PATHS = ("currency", "account.currency", "version.currency", "pack.currency", "window.account.currency")


def currency_of(obj) -> str:
    for path in _CURRENCY_PATHS:
        value = obj
        for part in path.split("."):
            value = getattr(value, part, None)
            if value is None:
                break
        if isinstance(value, str) and value:
            return value
    return "usd"


def _unit_text(count: int, unit: str | None) -> str:
    if not unit:
        return ""
    return f" {unit}" if abs(count) == 1 else f" {unit}s"


def money_column(field: str, description: str, *, sortable: bool = True) -> Callable:
    """Integer minor units in the object's currency: 99 -> "$0.99" (`field` may be a property: sortable=False)."""

    @admin.display(description=description, ordering=field if sortable else None)
    def show(obj):
        amount = getattr(obj, field)
        return None if amount is None else format_money(amount, currency_of(obj))

    show.__name__ = f"{field}_money"
    return show


def unit_price_column(field: str, description: str, *, per: str = "resolution") -> Callable:
    """A Decimal of minor units per unit: Decimal("90.000000000000") -> "$0.90 per resolution"."""

    @admin.display(description=description, ordering=field)
    def show(obj):
        amount = getattr(obj, field)
        if amount is None:
            return None
        return f"{format_money(Decimal(amount), currency_of(obj))} per {per}"

    show.__name__ = f"{field}_unit_price"
    return show


def count_column(field: str, description: str, *, unit: str | None = None, signed: bool = False) -> Callable:
    """A whole number with separators and its unit: 1234 -> "1,234 credits" (signed: "+1,234")."""

    @admin.display(description=description, ordering=field)
    def show(obj):
        count = getattr(obj, field)
        if count is None:
            return None
        return f"{count:+,}{_unit_text(count, unit)}" if signed else f"{count:,}{_unit_text(count, unit)}"

    show.__name__ = f"{field}_count"
    return show


def decimal_plain(value: Decimal) -> str:
    """A stored Decimal without its padding zeros, never in exponent form: 90.000000000000 -> "90"."""
    return format(value.normalize(), "f")


def fields_formatted(model, formatted: dict[str, Callable], *, exclude: tuple[str, ...] = ("id",)) -> list:
    """Every concrete field of `model` in declaration order, for a read-only change page, with the fields in
    `formatted` replaced by their formatted display (so no raw `90.000000000000` is left)."""
    return [formatted.get(f.name, f.name) for f in model._meta.fields if f.name not in exclude]
