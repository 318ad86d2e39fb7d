"""Formatting for people: money with currency symbols, whole numbers with separators, durations in words."""

import datetime as dt

from django import template

from billing_portal.money import format_money

register = template.Library()


@register.filter
def money(amount_minor, currency):
    if amount_minor is None or amount_minor == "":
        return "—"
    return format_money(amount_minor, currency)


@register.filter
def intcomma_int(value):
    return f"{int(value):,}" if value is not None else "—"


@register.filter
def duration_words(value: dt.timedelta):
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    if seconds % 86400 == 0 and seconds >= 86400 and seconds != 86400:
        return f"{seconds // 86400} days"
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{seconds // 60} minutes"


@register.filter
def parse_instant(value):
    """An ISO 8601 instant as the APIs write it ("2026-12-02T09:30:15Z") -> an aware datetime, for |date."""
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
