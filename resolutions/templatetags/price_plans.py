"""Formatting of plan versions for the pricing pages: a version's tiers as the ranges of resolutions they price."""

from django import template

register = template.Library()


@register.filter
def tier_ranges(version) -> list[dict]:
    """[{"first", "last" (None = no limit), "unit", "flat"}] for each tier of `version`, in order: a tier holds
    the resolutions after the previous tier's up_to, up to its own."""
    rows, first = [], 1
    for tier in version.tiers.all():
        rows.append({"first": first, "last": tier.up_to, "unit": tier.unit_amount_decimal, "flat": tier.flat_amount})
        first = (tier.up_to or 0) + 1
    return rows
