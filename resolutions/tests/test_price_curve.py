"""The price curve's arithmetic: its range, its points at tier boundaries, its labels (all amounts from
rating.price_quantity)."""

from decimal import Decimal

import pytest

from resolutions.price_curve import curve_range, price_curve_build
from resolutions.rating import PriceTerms, Tier

VOLUME = PriceTerms(unit_amount_decimal=None, tiers_mode="volume",
                    tiers=(Tier(up_to=1000, unit_amount_decimal=Decimal("99")),
                           Tier(up_to=None, unit_amount_decimal=Decimal("79"))))  # fmt: skip
PER_UNIT = PriceTerms(unit_amount_decimal=Decimal("0.5"), tiers_mode="")


@pytest.mark.parametrize(("largest", "expected"), [(0, 10_000), (1, 5), (2000, 10_000), (40_000, 200_000),
                                                   (800, 2500), (333_334, 2_000_000)])  # fmt: skip
def test_the_range_is_a_round_number_at_or_above_three_times_the_largest_period(largest, expected):
    assert curve_range(largest) == expected


def test_a_volume_price_is_drawn_through_both_sides_of_its_jump():
    curve = price_curve_build(currency="usd", curves=[("draft", "Draft", VOLUME)], largest_overage=0)
    points = dict(curve.series[0].points)
    assert points[1000] == 99_000 and points[1001] == 79_079  # every resolution repriced past the boundary
    assert curve.series[0].path.startswith("M88.0,248.0")  # (0, 0) at the plot's bottom-left corner


def test_half_cents_are_rounded_once_per_line_half_up():
    curve = price_curve_build(currency="usd", curves=[("draft", "Draft", PER_UNIT)], largest_overage=1)
    assert curve.max_quantity == 5
    assert {row.quantity: row.amounts[0] for row in curve.samples} == {0: 0, 1: 1, 2: 1, 3: 2, 5: 3}


def test_labels_are_short_and_the_description_names_the_last_figures():
    curve = price_curve_build(currency="usd", curves=[("draft", "Draft", VOLUME), ("current", "v1", PER_UNIT)],
                              largest_overage=2000)  # fmt: skip
    assert [label for _, label in curve.x_ticks] == ["0", "2.5k", "5k", "7.5k", "10k"]
    assert [label for _, label in curve.y_ticks] == ["0", "2.5k", "5k", "7.5k", "10k"]  # $7,900 → a $10k axis
    assert "at 10,000: Draft $7,900.00, v1 $50.00" in curve.description
    assert curve.samples[-1].difference == 790_000 - 5_000
