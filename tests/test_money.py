from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_portal.money import format_money, parse_unit_amount, round_minor


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("0.5", 1), ("1.5", 2), ("2.5", 3), ("2.4999", 2), ("-0.5", -1), ("98.5", 99), ("0", 0)],
)
def test_round_minor_is_half_up(amount, expected):
    assert round_minor(Decimal(amount)) == expected


@given(st.decimals(min_value=-(10**12), max_value=10**12, places=6, allow_nan=False))
def test_round_minor_is_never_more_than_half_a_unit_off(amount):
    assert abs(Decimal(round_minor(amount)) - amount) <= Decimal("0.5")


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [(99, "usd", "$0.99"), (123456789, "usd", "$1,234,567.89"), (Decimal("98.5"), "usd", "$0.985"),
     (-250, "eur", "-€2.50"), (1235, "jpy", "¥1,235"), (1250, "sek", "12.50 SEK"), (0, "usd", "$0.00")],
)  # fmt: skip
def test_format_money_for_people(minor, currency, text):
    assert format_money(minor, currency) == text


@pytest.mark.parametrize("bad", [0.99, "ninety", "", "1e"])
def test_parse_unit_amount_refuses_floats_and_junk(bad):
    with pytest.raises(ValueError):
        parse_unit_amount(bad)
