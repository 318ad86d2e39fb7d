"""Rating: Stripe's per-unit, graduated and volume pricing, allocation of a period's charge over its days.

Pure tests: no database. Hand-computed examples first, then properties against a deliberately plain second
implementation written here (unit by unit, exact Fractions, hand-made half-up rounding), then agreement with
the local Stripe emulator's pricing.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from resolutions.rating import (
    PricedLine,
    PriceTerms,
    Tier,
    allocate,
    period_charge_by_day,
    price_lines,
    price_quantity,
)
from stripe_emulator import pricing as emulator

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EXAMPLE_TIERS = (
    Tier(up_to=1000, unit_amount_decimal=Decimal("99")),
    Tier(up_to=10000, unit_amount_decimal=Decimal("89.5"), flat_amount=500),
    Tier(up_to=None, unit_amount_decimal=Decimal("79")),
)
GRADUATED = PriceTerms(unit_amount_decimal=None, tiers_mode="graduated", tiers=EXAMPLE_TIERS)
VOLUME = PriceTerms(unit_amount_decimal=None, tiers_mode="volume", tiers=EXAMPLE_TIERS)
FLAT_ONLY_TIERS = (
    Tier(up_to=10, flat_amount=1000),
    Tier(up_to=100, flat_amount=500),
    Tier(up_to=None, flat_amount=200),
)


def per_unit(unit: str) -> PriceTerms:
    return PriceTerms(unit_amount_decimal=Decimal(unit), tiers_mode="")


# --- hand-computed examples -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "quantity", "expected"),
    [
        ("99", 3, 297),
        ("0.5", 3, 2),  # 1.5 rounds half up
        ("0.5", 1, 1),  # 0.5 rounds half up
        ("0.49", 1, 0),
        ("0.05", 30, 2),  # Stripe's own example: 0.05 × 30 = 1.5, "rounded up to 2 cents"
        ("99", 0, 0),
    ],
)
def test_per_unit(unit, quantity, expected):
    assert price_quantity(quantity=quantity, terms=per_unit(unit)) == expected
    (line,) = price_lines(quantity=quantity, terms=per_unit(unit))
    assert (line.quantity, line.unit_amount_decimal, line.flat_amount, line.amount) == (
        quantity,
        Decimal(unit),
        0,
        expected,
    )


@pytest.mark.parametrize(
    ("quantity", "expected_lines"),
    [
        (0, [(0, 0)]),  # the first tier is always reached; it has no flat amount here
        (1, [(1, 99)]),
        (1000, [(1000, 99000)]),
        (1001, [(1000, 99000), (1, 590)]),  # 1 × 89.5 + 500 = 589.5 → 590
        (10000, [(1000, 99000), (9000, 806000)]),  # 9000 × 89.5 + 500
        (10001, [(1000, 99000), (9000, 806000), (1, 79)]),
        (12345, [(1000, 99000), (9000, 806000), (2345, 185255)]),
    ],
)
def test_graduated_examples(quantity, expected_lines):
    lines = price_lines(quantity=quantity, terms=GRADUATED)
    assert [(line.quantity, line.amount) for line in lines] == expected_lines
    assert price_quantity(quantity=quantity, terms=GRADUATED) == sum(amount for _, amount in expected_lines)


def test_graduated_totals():
    totals = {q: price_quantity(quantity=q, terms=GRADUATED) for q in (0, 1, 1000, 1001, 10000, 10001, 12345)}
    assert totals == {0: 0, 1: 99, 1000: 99000, 1001: 99590, 10000: 905000, 10001: 905079, 12345: 1090255}


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        (0, 0),  # first tier: 0 × 99
        (1, 99),
        (1000, 99000),
        (1001, 90090),  # 1001 × 89.5 + 500 = 90089.5 → 90090
        (10000, 895500),  # 10000 × 89.5 + 500
        (10001, 790079),  # 10001 × 79
        (12345, 975255),  # 12345 × 79
    ],
)
def test_volume_examples(quantity, expected):
    (line,) = price_lines(quantity=quantity, terms=VOLUME)
    assert (line.quantity, line.amount) == (quantity, expected)
    assert price_quantity(quantity=quantity, terms=VOLUME) == expected


@pytest.mark.parametrize(
    ("mode", "quantity", "expected"),
    [
        ("graduated", 0, 1000),  # a quantity of 0 still pays the first tier's flat amount
        ("graduated", 10, 1000),
        ("graduated", 11, 1500),
        ("graduated", 100, 1500),
        ("graduated", 101, 1700),
        ("volume", 0, 1000),
        ("volume", 10, 1000),
        ("volume", 11, 500),
        ("volume", 101, 200),
    ],
)
def test_flat_only_tiers(mode, quantity, expected):
    terms = PriceTerms(unit_amount_decimal=None, tiers_mode=mode, tiers=FLAT_ONLY_TIERS)
    assert price_quantity(quantity=quantity, terms=terms) == expected


def test_graduated_rounds_each_tier_line_once_not_the_sum():
    # Two half-cent tier lines: Stripe rounds each invoice line (1 + 1), not their sum (round(1.0) = 1).
    terms = PriceTerms(
        unit_amount_decimal=None,
        tiers_mode="graduated",
        tiers=(Tier(up_to=1, unit_amount_decimal=Decimal("0.5")), Tier(up_to=None, unit_amount_decimal=Decimal("0.5"))),
    )
    assert [line.amount for line in price_lines(quantity=2, terms=terms)] == [1, 1]
    assert price_quantity(quantity=2, terms=terms) == 2


def test_exact_arithmetic_beyond_default_decimal_precision():
    # 24 significant digits × a 13-digit quantity: more than Decimal's default 28 digits, still exact.
    unit = Decimal("123456789012.345678901234")
    quantity = 9_999_999_999_999
    expected = int((Fraction(unit) * quantity + Fraction(1, 2)) // 1)
    assert price_quantity(quantity=quantity, terms=PriceTerms(unit_amount_decimal=unit, tiers_mode="")) == expected


def test_from_version_reads_a_version_like_object():
    rows = [
        SimpleNamespace(up_to=1000, unit_amount_decimal=Decimal("99.000000000000"), flat_amount=None),
        SimpleNamespace(up_to=None, unit_amount_decimal=Decimal("89.5"), flat_amount=500),
    ]
    version = SimpleNamespace(
        unit_amount_decimal=None, tiers_mode="graduated", tiers=SimpleNamespace(all=lambda: list(rows))
    )
    terms = PriceTerms.from_version(version)
    assert terms == PriceTerms(
        unit_amount_decimal=None,
        tiers_mode="graduated",
        tiers=(Tier(1000, Decimal("99")), Tier(None, Decimal("89.5"), 500)),
    )
    flat = SimpleNamespace(unit_amount_decimal=Decimal("99"), tiers_mode="", tiers=None)
    assert PriceTerms.from_version(flat) == per_unit("99")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unit_amount_decimal": None, "tiers_mode": "graduated"}, "at least one tier"),
        ({"unit_amount_decimal": None, "tiers_mode": "volume", "tiers": ()}, "at least one tier"),
        ({"unit_amount_decimal": None, "tiers_mode": ""}, "needs a unit_amount_decimal"),
        ({"unit_amount_decimal": Decimal(1), "tiers_mode": "stairstep"}, "tiers_mode"),
        ({"unit_amount_decimal": Decimal("-1"), "tiers_mode": ""}, "negative"),
        ({"unit_amount_decimal": 0.5, "tiers_mode": ""}, "not float"),
        ({"unit_amount_decimal": Decimal("NaN"), "tiers_mode": ""}, "finite"),
        ({"unit_amount_decimal": Decimal(1), "tiers_mode": "", "tiers": (Tier(None, Decimal(1)),)}, "tiers_mode"),
        ({"unit_amount_decimal": Decimal(1), "tiers_mode": "volume", "tiers": (Tier(None, Decimal(1)),)}, "None"),
        ({"unit_amount_decimal": None, "tiers_mode": "volume", "tiers": (Tier(5, Decimal(1)),)}, "open-ended"),
        (
            {"unit_amount_decimal": None, "tiers_mode": "graduated", "tiers": (Tier(None, Decimal(1)), Tier(None, 1))},
            "only the last tier",
        ),
        (
            {
                "unit_amount_decimal": None,
                "tiers_mode": "graduated",
                "tiers": (Tier(5, Decimal(1)), Tier(5, Decimal(1)), Tier(None, Decimal(1))),
            },
            "must increase",
        ),
    ],
)
def test_invalid_terms_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PriceTerms(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"up_to": 0, "unit_amount_decimal": Decimal(1)}, "at least 1"),
        ({"up_to": None}, "needs a unit_amount_decimal, a flat_amount, or both"),
        ({"up_to": None, "flat_amount": -1}, "at least 0"),
        ({"up_to": None, "unit_amount_decimal": 1.5}, "not float"),
    ],
)
def test_invalid_tiers_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Tier(**kwargs)


@pytest.mark.parametrize("terms", [per_unit("99"), GRADUATED, VOLUME])
def test_negative_quantity_is_refused(terms):
    with pytest.raises(ValueError, match=r"quantity cannot be negative \(-1\)"):
        price_quantity(quantity=-1, terms=terms)
    with pytest.raises(ValueError, match="whole number"):
        price_quantity(quantity=1.0, terms=terms)


# --- a second, deliberately plain implementation ---------------------------------------------------------


def plain_half_up(amount: Fraction) -> int:
    """Half up for amounts ≥ 0, by hand."""
    assert amount >= 0
    return int((amount + Fraction(1, 2)) // 1)


def plain_tier_of_unit(tiers: tuple[Tier, ...], n: int) -> int:
    for i, tier in enumerate(tiers):
        if tier.up_to is None or n <= tier.up_to:
            return i
    raise AssertionError("the last tier is open-ended")


def plain_graduated(tiers: tuple[Tier, ...], quantity: int) -> list[tuple[int, int]]:
    """(units, amount) per tier reached: walk the units one by one, summing exact Fractions per tier; the
    first tier is always reached; then round each tier line once."""
    units = [0] * len(tiers)
    exact = [Fraction(0)] * len(tiers)
    for n in range(1, quantity + 1):
        i = plain_tier_of_unit(tiers, n)
        units[i] += 1
        exact[i] += Fraction(tiers[i].unit_amount_decimal or 0)
    return [
        (units[i], plain_half_up(exact[i] + (tiers[i].flat_amount or 0)))
        for i in range(len(tiers))
        if i == 0 or units[i] > 0
    ]


def plain_volume(tiers: tuple[Tier, ...], quantity: int) -> int:
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return plain_half_up(Fraction(tier.unit_amount_decimal or 0) * quantity + (tier.flat_amount or 0))
    raise AssertionError("the last tier is open-ended")


unit_amounts = st.decimals(min_value=0, max_value=500, places=4, allow_nan=False, allow_infinity=False)
flat_amounts = st.integers(min_value=0, max_value=5000)


@st.composite
def tier_lists(draw, max_tiers: int = 5, max_up_to: int = 3000) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=max_up_to), max_size=max_tiers - 1)))
    tiers = []
    for up_to in [*bounds, None]:
        unit = draw(st.none() | unit_amounts)
        flat = draw(st.none() | flat_amounts)
        if unit is None and flat is None:
            unit = draw(unit_amounts)
        tiers.append(Tier(up_to=up_to, unit_amount_decimal=unit, flat_amount=flat))
    return tuple(tiers)


quantities = st.integers(min_value=0, max_value=4000)


@PROPERTY
@given(tiers=tier_lists(), quantity=quantities)
def test_graduated_matches_the_plain_implementation(tiers, quantity):
    terms = PriceTerms(unit_amount_decimal=None, tiers_mode="graduated", tiers=tiers)
    lines = price_lines(quantity=quantity, terms=terms)
    assert [(line.quantity, line.amount) for line in lines] == plain_graduated(tiers, quantity)
    assert sum(line.quantity for line in lines) == quantity
    assert price_quantity(quantity=quantity, terms=terms) == sum(line.amount for line in lines)


@PROPERTY
@given(tiers=tier_lists(), quantity=quantities)
def test_volume_matches_the_plain_implementation(tiers, quantity):
    terms = PriceTerms(unit_amount_decimal=None, tiers_mode="volume", tiers=tiers)
    (line,) = price_lines(quantity=quantity, terms=terms)
    assert line.quantity == quantity
    assert line.amount == price_quantity(quantity=quantity, terms=terms) == plain_volume(tiers, quantity)


@PROPERTY
@given(unit=unit_amounts, quantity=st.integers(min_value=0, max_value=10**9))
def test_per_unit_matches_the_plain_implementation(unit, quantity):
    terms = PriceTerms(unit_amount_decimal=unit, tiers_mode="")
    assert price_quantity(quantity=quantity, terms=terms) == plain_half_up(Fraction(unit) * quantity)


@PROPERTY
@given(tiers=tier_lists(), quantity=quantities)
def test_every_line_is_rounded_once_from_its_exact_amount(tiers, quantity):
    for mode in ("graduated", "volume"):
        terms = PriceTerms(unit_amount_decimal=None, tiers_mode=mode, tiers=tiers)
        for line in price_lines(quantity=quantity, terms=terms):
            assert isinstance(line, PricedLine) and isinstance(line.amount, int)
            assert line.amount == plain_half_up(Fraction(line.exact_amount))


# --- agreement with the Stripe emulator ------------------------------------------------------------------


def emulator_price(terms: PriceTerms) -> dict:
    """The Price record the emulator stores, as `stripe_emulator.resources.catalog` builds it."""
    if not terms.tiers_mode:
        return {"billing_scheme": "per_unit", "unit_amount_decimal": str(terms.unit_amount_decimal)}
    return {
        "billing_scheme": "tiered",
        "tiers_mode": terms.tiers_mode,
        "_tiers": [
            {
                "up_to": tier.up_to,
                "unit_amount_decimal": None if tier.unit_amount_decimal is None else str(tier.unit_amount_decimal),
                "flat_amount": tier.flat_amount,
            }
            for tier in terms.tiers
        ],
    }


@pytest.mark.parametrize("terms", [GRADUATED, VOLUME, per_unit("99"), per_unit("0.5")])
@pytest.mark.parametrize("quantity", [0, 1, 3, 1000, 1001, 10000, 10001, 12345])
def test_emulator_agrees_on_the_examples(terms, quantity):
    assert price_quantity(quantity=quantity, terms=terms) == emulator.line_amount(emulator_price(terms), quantity)


@PROPERTY
@given(tiers=tier_lists(), quantity=quantities, mode=st.sampled_from(["graduated", "volume"]))
def test_emulator_agrees_on_exact_and_rounded_amounts(tiers, quantity, mode):
    terms = PriceTerms(unit_amount_decimal=None, tiers_mode=mode, tiers=tiers)
    lines = price_lines(quantity=quantity, terms=terms)
    price = emulator_price(terms)
    # Same tier arithmetic: the emulator's unrounded amount is the sum of our lines' unrounded amounts.
    assert emulator.exact_amount(price, quantity) == sum(line.exact_amount for line in lines)
    # And both round once per invoice line (each graduated tier is its own line), so the totals agree.
    assert price_quantity(quantity=quantity, terms=terms) == emulator.line_amount(price, quantity)


@PROPERTY
@given(unit=unit_amounts, quantity=st.integers(min_value=0, max_value=10**9))
def test_emulator_agrees_on_per_unit(unit, quantity):
    terms = PriceTerms(unit_amount_decimal=unit, tiers_mode="")
    assert price_quantity(quantity=quantity, terms=terms) == emulator.line_amount(emulator_price(terms), quantity)


def test_emulator_rounds_each_graduated_tier_line_like_stripe():
    terms = PriceTerms(
        unit_amount_decimal=None,
        tiers_mode="graduated",
        tiers=(Tier(up_to=1, unit_amount_decimal=Decimal("0.5")), Tier(up_to=None, unit_amount_decimal=Decimal("0.5"))),
    )
    assert price_quantity(quantity=2, terms=terms) == 2  # Stripe: round(0.5) + round(0.5)
    assert emulator.line_amount(emulator_price(terms), 2) == 2  # the emulator rounds each tier line too


# --- allocation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (10, [1, 1, 1], [4, 3, 3]),
        (-10, [1, 1, 1], [-4, -3, -3]),
        (1, [1, 1], [1, 0]),
        (-1, [1, 1], [-1, 0]),
        (100, [1, 0, 3], [25, 0, 75]),
        (7, [2, 1, 1], [3, 2, 2]),  # shares 3.5, 1.75, 1.75: two units left over, the .75 remainders win
        (2, [1, 1, 1], [1, 1, 0]),  # equal remainders: the earlier indices first
        (0, [0, 0], [0, 0]),
        (0, [], []),
        (5, [0, 3], [0, 5]),
    ],
)
def test_allocate_examples(total, weights, expected):
    assert allocate(total=total, weights=weights) == expected


def test_allocate_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="all zero"):
        allocate(total=5, weights=[0, 0])
    with pytest.raises(ValueError, match="all zero"):
        allocate(total=-5, weights=[])
    with pytest.raises(ValueError, match="at least 0"):
        allocate(total=5, weights=[1, -1])
    with pytest.raises(ValueError, match="whole number"):
        allocate(total=5.0, weights=[1])


totals = st.integers(min_value=-(10**9), max_value=10**9)
weight_lists = st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=40)


@PROPERTY
@given(total=totals, weights=weight_lists)
def test_allocate_parts_sum_exactly_and_stay_within_one_of_the_exact_share(total, weights):
    assume(sum(weights) > 0)
    parts = allocate(total=total, weights=weights)
    assert len(parts) == len(weights) and all(isinstance(p, int) for p in parts)
    assert sum(parts) == total
    weight_sum = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        share = Fraction(total * weight, weight_sum)
        assert abs(part - share) < 1
        if weight == 0:
            assert part == 0


@PROPERTY
@given(total=totals, weights=weight_lists)
def test_allocate_ties_give_the_earlier_index_the_extra_unit(total, weights):
    assume(sum(weights) > 0)
    parts = allocate(total=total, weights=weights)
    for i in range(len(weights)):
        for j in range(i + 1, len(weights)):
            if weights[i] == weights[j]:
                assert abs(parts[i]) - abs(parts[j]) in (0, 1)
            elif weights[i] > weights[j]:
                assert abs(parts[i]) >= abs(parts[j])  # more weight never gets less


@PROPERTY
@given(total=totals, weights=weight_lists)
def test_allocate_negative_totals_mirror_positive_ones(total, weights):
    assume(sum(weights) > 0)
    assert allocate(total=-total, weights=weights) == [-p for p in allocate(total=total, weights=weights)]


@PROPERTY
@given(total=st.integers(min_value=0, max_value=10**6), weights=weight_lists)
def test_allocate_is_largest_remainder(total, weights):
    assume(sum(weights) > 0)
    weight_sum = sum(weights)
    shares = [Fraction(total * w, weight_sum) for w in weights]
    floors = [s.numerator // s.denominator for s in shares]
    leftover = total - sum(floors)
    ranked = sorted(range(len(weights)), key=lambda i: (-(shares[i] - floors[i]), i))
    expected = [f + (1 if i in ranked[:leftover] else 0) for i, f in enumerate(floors)]
    assert allocate(total=total, weights=weights) == expected


# --- a period's charge over its days ----------------------------------------------------------------------


def test_period_charge_by_day_examples():
    assert period_charge_by_day(daily_quantities=[1, 2, 0], terms=per_unit("99")) == [99, 198, 0]
    assert period_charge_by_day(daily_quantities=[1, 1, 1], terms=per_unit("0.5")) == [1, 1, 0]  # 1.5 → 2
    # 600 + 500 = 1101 units: 1000 × 99 + (101 × 89.5 + 500 = 9539.5 → 9540) = 108540
    assert period_charge_by_day(daily_quantities=[600, 0, 501], terms=GRADUATED) == [59150, 0, 49390]


def test_a_period_without_usage_spreads_a_first_tier_flat_amount_evenly():
    terms = PriceTerms(unit_amount_decimal=None, tiers_mode="graduated", tiers=FLAT_ONLY_TIERS)
    assert period_charge_by_day(daily_quantities=[0, 0, 0], terms=terms) == [334, 333, 333]
    assert period_charge_by_day(daily_quantities=[0, 0], terms=GRADUATED) == [0, 0]


def test_period_charge_by_day_refuses_bad_input():
    with pytest.raises(ValueError, match=r"daily_quantities\[1\] cannot be negative"):
        period_charge_by_day(daily_quantities=[1, -1], terms=GRADUATED)
    with pytest.raises(ValueError, match="at least one day"):
        period_charge_by_day(daily_quantities=[], terms=GRADUATED)


@PROPERTY
@given(
    tiers=tier_lists(),
    mode=st.sampled_from(["graduated", "volume"]),
    days=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=31),
)
def test_the_days_of_a_period_sum_to_the_period_charge(tiers, mode, days):
    terms = PriceTerms(unit_amount_decimal=None, tiers_mode=mode, tiers=tiers)
    amounts = period_charge_by_day(daily_quantities=days, terms=terms)
    assert len(amounts) == len(days)
    assert sum(amounts) == price_quantity(quantity=sum(days), terms=terms)
    if any(days):
        assert all(amount == 0 for amount, q in zip(amounts, days, strict=True) if q == 0)
