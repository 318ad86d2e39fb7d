import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import strategies as st

from accounts.pricing import plan_version_spec_parse


def terms(**overrides):
    base = {
        "currency": "usd",
        "unit_amount_decimal": "99",
        "inactivity_window": "24:00:00",
        "seat_unit_amount": 3900,
        "seat_conversion_unit_amount_decimal": "90",
        "effective_from": "2027-01-01T00:00:00Z",
        "offers": [{"name": "Annual", "resolutions": 10000, "validity_days": 365, "unit_amount_decimal": "90"}],
    }
    return {**base, **overrides}


def errors_of(data) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as info:
        plan_version_spec_parse(data)
    return info.value.message_dict


def test_valid_per_unit_terms_parse_to_exact_decimals():
    spec = plan_version_spec_parse(terms())
    assert spec.unit_amount_decimal == Decimal("99")
    assert spec.inactivity_window == dt.timedelta(hours=24)
    assert spec.effective_from == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert spec.offers[0].resolutions == 10000


def test_valid_graduated_tiers_with_flat_amounts():
    spec = plan_version_spec_parse(
        terms(
            unit_amount_decimal=None,
            tiers_mode="graduated",
            tiers=[
                {"up_to": 1000, "unit_amount_decimal": "99"},
                {"up_to": 10000, "unit_amount_decimal": "89.5", "flat_amount": 500},
                {"up_to": "inf", "unit_amount_decimal": "79"},
            ],
        )
    )
    assert [t.up_to for t in spec.tiers] == [1000, 10000, None]
    assert spec.tiers[1].unit_amount_decimal == Decimal("89.5")
    assert spec.tiers[1].flat_amount == 500


@pytest.mark.parametrize(
    ("tiers", "field", "words"),
    [
        ([{"up_to": 100, "unit_amount_decimal": "9"}, {"up_to": 50, "unit_amount_decimal": "8"},
          {"up_to": "inf", "unit_amount_decimal": "7"}], "tiers[1].up_to", "must increase"),
        ([{"up_to": 100, "unit_amount_decimal": "9"}, {"up_to": 100, "unit_amount_decimal": "8"},
          {"up_to": "inf", "unit_amount_decimal": "7"}], "tiers[1].up_to", "must increase"),
        ([{"up_to": 100, "unit_amount_decimal": "9"}, {"up_to": 200, "unit_amount_decimal": "8"}],
         "tiers[1].up_to", "open-ended"),
        ([{"up_to": "inf", "unit_amount_decimal": "9"}, {"up_to": "inf", "unit_amount_decimal": "8"}],
         "tiers[0].up_to", "Only the last tier"),
        ([{"up_to": "inf", "unit_amount_decimal": "-1"}], "tiers[0].unit_amount_decimal", "negative"),
        ([{"up_to": "inf", "unit_amount_decimal": "ninety"}], "tiers[0].unit_amount_decimal", "not a number"),
        ([{"up_to": "inf"}], "tiers[0]", "needs a unit_amount_decimal, a flat_amount"),
        ([{"up_to": "inf", "flat_amount": -5}], "tiers[0].flat_amount", "at least 0"),
        ([{"up_to": 0, "unit_amount_decimal": "1"}, {"up_to": "inf", "unit_amount_decimal": "1"}],
         "tiers[0].up_to", "at least 1"),
        ([], "tiers", "at least one tier"),
        ([{"up_to": 99999999999999999999999, "unit_amount_decimal": "1"}, {"up_to": "inf", "unit_amount_decimal": "1"}],
         "tiers[0].up_to", "at most"),
    ],
)  # fmt: skip
def test_bad_tiers_are_named_with_a_plain_message(tiers, field, words):
    errors = errors_of(terms(unit_amount_decimal=None, tiers_mode="graduated", tiers=tiers))
    assert field in errors, errors
    assert any(words in message for message in errors[field]), errors[field]


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"unit_amount_decimal": "-99"}, "unit_amount_decimal", "negative"),
        ({"unit_amount_decimal": "abc"}, "unit_amount_decimal", "not a number"),
        ({"unit_amount_decimal": 0.99}, "unit_amount_decimal", "not a float"),
        ({"unit_amount_decimal": "NaN"}, "unit_amount_decimal", "finite"),
        ({"unit_amount_decimal": None}, "unit_amount_decimal", "required"),
        ({"currency": "xyz"}, "currency", "not a currency"),
        ({"currency": ""}, "currency", "not a currency"),
        ({"tiers_mode": "stairstep", "tiers": [{"up_to": "inf", "unit_amount_decimal": "1"}]}, "tiers_mode",
         "graduated"),
        ({"inactivity_window": "-1:00:00"}, "inactivity_window", "longer than zero"),
        ({"inactivity_window": "soon"}, "inactivity_window", "duration"),
        ({"seat_unit_amount": -1}, "seat_unit_amount", "at least 0"),
        ({"seat_unit_amount": "39.5"}, "seat_unit_amount", "whole number"),
        ({"seat_conversion_unit_amount_decimal": "0"}, "seat_conversion_unit_amount_decimal", "above zero"),
        ({"effective_from": "2027-01-01T00:00:00"}, "effective_from", "timezone"),
        ({"effective_from": "next year"}, "effective_from", "ISO 8601"),
        ({"offers": [{"name": "A", "resolutions": 0, "unit_amount_decimal": "90"}]}, "offers[0].resolutions",
         "at least 1"),
        ({"offers": [{"name": "A", "resolutions": 5, "unit_amount_decimal": "-90"}]}, "offers[0].unit_amount_decimal",
         "negative"),
        ({"offers": [{"name": "A", "resolutions": 5, "unit_amount_decimal": "1"},
                     {"name": "A", "resolutions": 6, "unit_amount_decimal": "1"}]}, "offers[1].name", "Two offers"),
        ({"colour": "blue"}, "__all__", "Unknown field"),
        ({"unit_amount_decimal": "0.0000000000004"}, "unit_amount_decimal", "12 decimal places"),
        ({"unit_amount_decimal": "1e13"}, "unit_amount_decimal", "Too large"),
        ({"seat_unit_amount": 2**63}, "seat_unit_amount", "at most"),
        ({"offers": [{"name": "A", "resolutions": 2**31, "unit_amount_decimal": "1"}]}, "offers[0].resolutions",
         "at most"),
        ({"tiers": [{"up_to": "inf", "unit_amount_decimal": "1"}]}, "tiers", "need a tiers_mode"),
    ],
)  # fmt: skip
def test_bad_terms_are_named_with_a_plain_message(overrides, field, words):
    errors = errors_of(terms(**overrides))
    assert field in errors, errors
    assert any(words in message for message in errors[field]), errors[field]


def test_every_problem_is_reported_at_once():
    errors = errors_of(terms(currency="zzz", unit_amount_decimal="-1", seat_unit_amount=-3))
    assert {"currency", "unit_amount_decimal", "seat_unit_amount"} <= set(errors)


@given(
    bounds=st.lists(st.integers(min_value=1, max_value=10**9), min_size=0, max_size=8, unique=True).map(sorted),
    amounts=st.lists(st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False), min_size=9, max_size=9),
    mode=st.sampled_from(["graduated", "volume"]),
)
def test_any_increasing_open_ended_tiers_are_accepted_exactly(bounds, amounts, mode):
    tiers = [{"up_to": b, "unit_amount_decimal": str(a)} for b, a in zip(bounds, amounts, strict=False)]
    tiers.append({"up_to": "inf", "unit_amount_decimal": str(amounts[-1])})
    spec = plan_version_spec_parse(terms(unit_amount_decimal=None, tiers_mode=mode, tiers=tiers))
    assert [t.up_to for t in spec.tiers] == [*bounds, None]
    assert [t.unit_amount_decimal for t in spec.tiers] == [Decimal(t["unit_amount_decimal"]) for t in tiers]


HOSTILE = [
    ({"unit_amount_decimal": "9" * 5000}, "unit_amount_decimal", "not a number"),
    ({"unit_amount_decimal": "1e999999999"}, "unit_amount_decimal", "Too large"),
    ({"unit_amount_decimal": "1e-999999999"}, "unit_amount_decimal", "decimal places"),
    ({"unit_amount_decimal": "１２"}, "unit_amount_decimal", "not a number"),
    ({"unit_amount_decimal": "1_000"}, "unit_amount_decimal", "not a number"),
    ({"unit_amount_decimal": ["99"]}, "unit_amount_decimal", "not a number"),
    ({"unit_amount_decimal": {"amount": 99}}, "unit_amount_decimal", "not a number"),
    ({"unit_amount_decimal": "-0.01"}, "unit_amount_decimal", "negative"),
    ({"seat_unit_amount": "9" * 5000}, "seat_unit_amount", "at most"),
    ({"seat_unit_amount": "-" + "9" * 5000}, "seat_unit_amount", "at least"),
    ({"seat_unit_amount": "١٢"}, "seat_unit_amount", "whole number"),
    ({"seat_unit_amount": 100_000_000}, "seat_unit_amount", "at most 99,999,999"),
    ({"seat_unit_amount": True}, "seat_unit_amount", "whole number"),
    ({"seat_unit_amount": 39.0}, "seat_unit_amount", "whole number"),
    ({"effective_from": "2027-02-30T00:00:00Z"}, "effective_from", "not a date that exists"),
    ({"effective_from": "2027-01-01T25:00:00Z"}, "effective_from", "not a date that exists"),
    ({"effective_from": "9999-12-31T23:00:00-05:00"}, "effective_from", "between 2000 and 2100"),
    ({"effective_from": "0001-01-01T00:00:00+05:00"}, "effective_from", "between 2000 and 2100"),
    ({"effective_from": "2027-01-01T00:00:00Z" * 1000}, "effective_from", "ISO 8601"),
    ({"effective_from": 20270101}, "effective_from", "ISO 8601"),
    ({"inactivity_window": "99999999999 00:00:00"}, "inactivity_window", "cannot exceed 30 days"),
    ({"inactivity_window": "P9999999999D"}, "inactivity_window", "cannot exceed 30 days"),
    ({"inactivity_window": 10**30}, "inactivity_window", "cannot exceed 30 days"),
    ({"inactivity_window": -(10**30)}, "inactivity_window", "longer than zero"),
    ({"inactivity_window": "31 00:00:00"}, "inactivity_window", "cannot exceed 30 days"),
    ({"inactivity_window": ["24:00:00"]}, "inactivity_window", "duration"),
    ({"currency": ["usd"]}, "currency", "not a currency"),
    ({"currency": "x" * 100_000}, "currency", "not a currency"),
    ({"offers": "all of them"}, "offers", "must be a list"),
    ({"offers": [{"name": "Pack", "resolutions": 1, "unit_amount_decimal": "1"}] * 21}, "offers", "At most 20"),
    ({"offers": [{"name": "x" * 101, "resolutions": 1, "unit_amount_decimal": "1"}]}, "offers[0].name", "100"),
    ({"offers": [{"name": "!!!", "resolutions": 1, "unit_amount_decimal": "1"}]}, "offers[0].name", "letters"),
    ({"offers": [{"name": ["A"], "resolutions": 1, "unit_amount_decimal": "1"}]}, "offers[0].name", "text"),
    ({"offers": [{"name": "Annual 50k", "resolutions": 1, "unit_amount_decimal": "1"},
                 {"name": "annual-50K", "resolutions": 2, "unit_amount_decimal": "1"}]}, "offers[1].name",
     "same Stripe Price"),
    ({"offers": [{"name": "A", "resolutions": 1, "validity_days": 10**9, "unit_amount_decimal": "1"}]},
     "offers[0].validity_days", "at most"),
    ({"offers": [7]}, "offers[0]", "must be an object"),
    ({"unit_amount_decimal": None, "tiers_mode": "volume",
      "tiers": [{"up_to": "inf", "unit_amount_decimal": "1"}] * 251}, "tiers", "At most 250"),
    ({"unit_amount_decimal": None, "tiers_mode": "volume", "tiers": {"up_to": "inf"}}, "tiers", "must be a list"),
    ({"unit_amount_decimal": None, "tiers_mode": "volume", "tiers": [{}, {}]}, "tiers[0]", "needs a unit_amount"),
    ({"unit_amount_decimal": None, "tiers_mode": "volume",
      "tiers": [{"up_to": "", "unit_amount_decimal": ""}, {"up_to": "inf", "unit_amount_decimal": "1"}]},
     "tiers[0].up_to", "Only the last tier"),
    ({"unit_amount_decimal": None, "tiers_mode": "graduated",
      "tiers": [{"up_to": 10, "flat_amount": 10**9}, {"up_to": "inf", "unit_amount_decimal": "1"}]},
     "tiers[0].flat_amount", "at most"),
    ({"unit_amount_decimal": None, "tiers_mode": "graduated",
      "tiers": [{"up_to": 10, "unit_amount_decimal": "1", 3: "x"}, {"up_to": "inf", "unit_amount_decimal": "1"}]},
     "tiers[0]", "Unknown tier field"),
    ({"unit_amount_decimal": None, "tiers_mode": ["volume"], "tiers": [{"up_to": "inf", "unit_amount_decimal": "1"}]},
     "tiers_mode", "graduated"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "field", "words"), HOSTILE)
def test_hostile_input_gets_a_plain_error_on_its_field_never_an_exception(overrides, field, words):
    errors = errors_of(terms(**overrides))
    assert field in errors, errors
    assert any(words in message for message in errors[field]), errors[field]
    assert all(len(m) < 300 for messages in errors.values() for m in messages)  # a megabyte is never echoed


@pytest.mark.parametrize("data", [None, [], ["currency"], "usd", 7, [{"currency": "usd"}]])
def test_terms_that_are_not_an_object_are_refused_plainly(data):
    errors = errors_of(data)
    assert "object" in errors["__all__"][0]


@given(data=st.dictionaries(
    st.sampled_from(["currency", "unit_amount_decimal", "tiers_mode", "tiers", "inactivity_window",
                     "seat_unit_amount", "seat_conversion_unit_amount_decimal", "effective_from", "offers", "x"]),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
                 | st.decimals(allow_nan=True),
                 lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children,
                                                                                   max_size=4), max_leaves=12),
))  # fmt: skip
def test_any_json_like_input_either_parses_or_raises_a_validation_error(data):
    try:
        plan_version_spec_parse(data)
    except ValidationError as exc:
        assert exc.message_dict
