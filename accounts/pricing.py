"""Price plan version specs: parsing and validation of what an admin asks for, before anything is stored.

A spec is a plain value; `plan_version_spec_parse` turns raw input (API, admin form, command, JSON)
into one, or raises a ValidationError whose keys name the offending field (`tiers[1].up_to`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime, parse_duration
from django.utils.text import slugify

from billing_portal.money import SUPPORTED_CURRENCIES, parse_unit_amount

TIERS_MODES = ("graduated", "volume")
MAX_DECIMAL_PLACES = 12  # Stripe: unit_amount_decimal has at most 12 decimal places
MAX_UNIT_AMOUNT = 10**12  # the columns hold 12 integer digits
MAX_WHOLE = 2**63 - 1  # bigint columns
MAX_INT = 2**31 - 1  # integer columns (offer resolutions, validity days)
MAX_STRIPE_AMOUNT = 99_999_999  # Stripe's largest unit_amount / flat_amount (8 digits of minor units)
MAX_TIERS = 250  # Stripe's limit for tiers on one price
MAX_OFFERS = 20
MAX_WINDOW = dt.timedelta(days=30)
MAX_TEXT = 60  # characters of a refused value quoted back in a message
MAX_DIGITS = 40  # longer numbers are refused before they are parsed (no 10,000-digit ints)
MAX_OFFER_NAME = 100  # CreditPackOffer.name
EARLIEST_EFFECTIVE_FROM = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST_EFFECTIVE_FROM = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class TierSpec:
    up_to: int | None  # None = infinity, the last tier
    unit_amount_decimal: Decimal | None = None
    flat_amount: int | None = None


@dataclass(frozen=True)
class OfferSpec:
    name: str
    resolutions: int
    validity_days: int
    unit_amount_decimal: Decimal


@dataclass(frozen=True)
class PlanVersionSpec:
    currency: str
    inactivity_window: dt.timedelta
    seat_unit_amount: int
    seat_conversion_unit_amount_decimal: Decimal
    effective_from: dt.datetime
    unit_amount_decimal: Decimal | None = None
    tiers_mode: str = ""
    tiers: tuple[TierSpec, ...] = ()
    offers: tuple[OfferSpec, ...] = field(default_factory=tuple)


class _Errors:
    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.by_field.setdefault(name, []).append(message)

    def raise_if_any(self) -> None:
        if self.by_field:
            raise ValidationError(self.by_field)


def _quoted(value) -> str:
    """A refused value as a message quotes it: short, so a hostile megabyte never comes back."""
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _plain_number_text(value) -> str | None:
    """The value as ASCII number text, or None for anything else (lists, "１２", "1_000", 10,000 digits)."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        return None
    text = str(value).strip()
    if not text.isascii() or "_" in text or len(text) > MAX_DIGITS + 10:
        return None
    return text


def _amount(errors: _Errors, name: str, value, *, required: bool) -> Decimal | None:
    if _blank(value):
        if required:
            errors.add(name, "This price is required.")
        return None
    if isinstance(value, float):
        errors.add(name, "Prices must be given as a string or Decimal, not a float.")
        return None
    text = _plain_number_text(value)
    if text is None:
        errors.add(name, f"'{_quoted(value)}' is not a number.")
        return None
    try:
        amount = parse_unit_amount(text)
    except ValueError as exc:
        errors.add(name, str(exc))
        return None
    if amount.adjusted() > 40 or amount.adjusted() < -40:  # 1e999999999: no arithmetic on it at all
        errors.add(
            name,
            f"Too large: at most {MAX_STRIPE_AMOUNT:,} minor units (Stripe's largest price)."
            if amount.adjusted() > 0
            else f"At most {MAX_DECIMAL_PLACES} decimal places (Stripe's limit for unit_amount_decimal).",
        )
        return None
    if amount < 0:
        errors.add(name, "A price cannot be negative.")
        return None
    sign, digits, exponent = amount.as_tuple()
    if exponent < -MAX_DECIMAL_PLACES:
        errors.add(name, f"At most {MAX_DECIMAL_PLACES} decimal places (Stripe's limit for unit_amount_decimal).")
        return None
    if amount > MAX_STRIPE_AMOUNT:  # Stripe refuses a larger unit_amount_decimal: caught here, not at publish
        errors.add(name, f"Too large: at most {MAX_STRIPE_AMOUNT:,} minor units (Stripe's largest price).")
        return None
    return amount


def _whole(
    errors: _Errors, name: str, value, *, minimum: int, required: bool = True, maximum: int = MAX_WHOLE
) -> int | None:
    if _blank(value):
        if required:
            errors.add(name, "This number is required.")
        return None
    # An ASCII run of digits too long to be a sane number is out of range, not "not a number"; it is
    # refused before int() ever sees it.
    long_digits = isinstance(value, str) and value.strip().isascii() and value.strip().lstrip("+-").isdigit()
    if long_digits and len(value.strip().lstrip("+-")) > MAX_DIGITS:
        negative = value.strip().startswith("-")
        errors.add(name, f"Must be {'at least' if negative else 'at most'} {minimum if negative else maximum:,}.")
        return None
    text = None if isinstance(value, float) else _plain_number_text(value)
    try:
        number = int(text) if text is not None else None
    except ValueError:
        number = None
    if number is None:
        errors.add(name, f"'{_quoted(value)}' is not a whole number.")
        return None
    if number < minimum:
        errors.add(name, f"Must be at least {minimum}.")
        return None
    if number > maximum:
        errors.add(name, f"Must be at most {maximum:,}.")
        return None
    return number


def _tiers(errors: _Errors, raw_tiers) -> tuple[TierSpec, ...]:
    if not isinstance(raw_tiers, Sequence) or isinstance(raw_tiers, str | bytes):
        errors.add("tiers", "Tiers must be a list.")
        return ()
    if not raw_tiers:
        errors.add("tiers", "A tiered price needs at least one tier.")
        return ()
    if len(raw_tiers) > MAX_TIERS:
        errors.add("tiers", f"At most {MAX_TIERS} tiers.")
        return ()
    tiers: list[TierSpec] = []
    previous_up_to = 0
    for i, raw in enumerate(raw_tiers):
        name = f"tiers[{i}]"
        if not isinstance(raw, Mapping):
            errors.add(name, "Each tier must be an object with up_to, unit_amount_decimal, flat_amount.")
            continue
        unknown = {str(k) for k in raw} - {"up_to", "unit_amount_decimal", "flat_amount"}
        if unknown:
            errors.add(name, f"Unknown tier field(s): {_quoted(', '.join(sorted(unknown)))}.")
        is_last = i == len(raw_tiers) - 1
        raw_up_to = raw.get("up_to")
        up_to: int | None
        if _blank(raw_up_to) or (isinstance(raw_up_to, str) and raw_up_to.strip().lower() == "inf"):
            up_to = None
            if not is_last:
                errors.add(
                    f"{name}.up_to", "Only the last tier can be open-ended (up_to 'inf'): give this one an up_to."
                )
        else:
            up_to = _whole(errors, f"{name}.up_to", raw_up_to, minimum=1)
            if is_last:
                errors.add(f"{name}.up_to", "The last tier must be open-ended: set up_to to 'inf'.")
            elif up_to is not None and up_to <= previous_up_to:
                errors.add(f"{name}.up_to", f"up_to must increase: {up_to} is not above {previous_up_to}.")
            if up_to is not None:
                previous_up_to = max(previous_up_to, up_to)
        unit = _amount(errors, f"{name}.unit_amount_decimal", raw.get("unit_amount_decimal"), required=False)
        flat = _whole(
            errors, f"{name}.flat_amount", raw.get("flat_amount"), minimum=0, required=False, maximum=MAX_STRIPE_AMOUNT
        )
        if _blank(raw.get("unit_amount_decimal")) and _blank(raw.get("flat_amount")):
            errors.add(name, "A tier needs a unit_amount_decimal, a flat_amount, or both.")
        tiers.append(TierSpec(up_to=up_to, unit_amount_decimal=unit, flat_amount=flat))
    return tuple(tiers)


def _offers(errors: _Errors, raw_offers) -> tuple[OfferSpec, ...]:
    if _blank(raw_offers):
        return ()
    if not isinstance(raw_offers, Sequence) or isinstance(raw_offers, str | bytes):
        errors.add("offers", "Offers must be a list.")
        return ()
    if len(raw_offers) > MAX_OFFERS:
        errors.add("offers", f"At most {MAX_OFFERS} credit pack offers on one version.")
        return ()
    offers: list[OfferSpec] = []
    names: set[str] = set()
    slugs: set[str] = set()
    for i, raw in enumerate(raw_offers):
        name = f"offers[{i}]"
        if not isinstance(raw, Mapping):
            errors.add(name, "Each offer must be an object with name, resolutions, validity_days, unit price.")
            continue
        raw_name = raw.get("name")
        offer_name = raw_name.strip() if isinstance(raw_name, str) else ""
        offer_slug = slugify(offer_name)
        if raw_name is not None and not isinstance(raw_name, str):
            errors.add(f"{name}.name", "An offer's name is text.")
        elif not offer_name:
            errors.add(f"{name}.name", "An offer needs a name.")
        elif len(offer_name) > MAX_OFFER_NAME:
            errors.add(f"{name}.name", f"At most {MAX_OFFER_NAME} characters.")
        elif offer_name in names:
            errors.add(f"{name}.name", f"Two offers are named '{_quoted(offer_name)}'.")
        elif not offer_slug:
            errors.add(f"{name}.name", "An offer's name needs letters or digits (it names its Stripe Price).")
        elif offer_slug in slugs:
            errors.add(f"{name}.name", f"'{_quoted(offer_name)}' names the same Stripe Price as another offer.")
        names.add(offer_name)
        slugs.add(offer_slug)
        resolutions = _whole(errors, f"{name}.resolutions", raw.get("resolutions"), minimum=1, maximum=MAX_INT)
        validity = _whole(errors, f"{name}.validity_days", raw.get("validity_days", 365), minimum=1, maximum=3660)
        unit = _amount(errors, f"{name}.unit_amount_decimal", raw.get("unit_amount_decimal"), required=True)
        if resolutions is not None and validity is not None and unit is not None:
            offers.append(OfferSpec(offer_name, resolutions, validity, unit))
    return tuple(offers)


def _effective_from(errors: _Errors, value) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        parsed = None
        if isinstance(value, str) and 0 < len(value.strip()) <= 64:
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:  # well formed but impossible: 2027-02-30, hour 25
                errors.add("effective_from", f"'{_quoted(value)}' is not a date that exists.")
                return None
        if parsed is None:
            errors.add("effective_from", "Give effective_from as an ISO 8601 date-time with a timezone.")
            return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        errors.add("effective_from", "effective_from needs a timezone (e.g. 2027-01-01T00:00:00Z).")
        return None
    try:
        instant = parsed.astimezone(dt.UTC)
    except (OverflowError, ValueError):  # 9999-12-31T23:00-05:00 is after the last datetime
        instant = None
    if instant is None or not EARLIEST_EFFECTIVE_FROM <= instant < LATEST_EFFECTIVE_FROM:
        errors.add(
            "effective_from",
            f"effective_from must fall between {EARLIEST_EFFECTIVE_FROM.year} and {LATEST_EFFECTIVE_FROM.year}.",
        )
        return None
    return instant


def _window(errors: _Errors, value) -> dt.timedelta | None:
    window = None
    too_long = "The inactivity window cannot exceed 30 days (events expire at 35)."
    if isinstance(value, dt.timedelta):
        window = value
    elif isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_WINDOW.total_seconds() * 2:
            errors.add(
                "inactivity_window", too_long if value > 0 else "The inactivity window must be longer than zero."
            )
            return None
        window = dt.timedelta(seconds=value)
    elif isinstance(value, str) and 0 < len(value.strip()) <= 64 and value.isascii():
        try:
            window = parse_duration(value.strip())
        except (OverflowError, ValueError):  # "99999999999 00:00:00", "P9999999999D": beyond any timedelta
            errors.add("inactivity_window", too_long)
            return None
    if window is None:
        errors.add(
            "inactivity_window", "Give the inactivity window as a duration, e.g. 24:00:00 (or 2 00:00:00 for 2 days)."
        )
        return None
    if window <= dt.timedelta(0):
        errors.add("inactivity_window", "The inactivity window must be longer than zero.")
        return None
    if window > MAX_WINDOW:
        errors.add("inactivity_window", too_long)
        return None
    return window


PLAN_VERSION_FIELDS = {
    "currency", "unit_amount_decimal", "tiers_mode", "tiers", "inactivity_window", "seat_unit_amount",
    "seat_conversion_unit_amount_decimal", "effective_from", "offers",
}  # fmt: skip


def plan_version_spec_parse(data: Mapping) -> PlanVersionSpec:
    """Validate raw input for a plan version; raise ValidationError naming every bad field at once."""
    errors = _Errors()
    if not isinstance(data, Mapping):
        errors.add("__all__", "Give the version's terms as an object (currency, unit_amount_decimal, tiers, …).")
        errors.raise_if_any()
    unknown = {str(k) for k in data} - PLAN_VERSION_FIELDS
    if unknown:
        errors.add("__all__", f"Unknown field(s): {_quoted(', '.join(sorted(unknown)))}.")
    raw_currency = data.get("currency")
    currency = raw_currency.strip().lower() if isinstance(raw_currency, str) else ""
    if currency not in SUPPORTED_CURRENCIES:
        errors.add("currency", f"'{_quoted(raw_currency or '')}' is not a currency Stripe supports (e.g. usd, eur).")
    raw_mode = data.get("tiers_mode")
    tiers_mode = raw_mode.strip() if isinstance(raw_mode, str) else ("" if raw_mode is None else str(raw_mode))
    tiers: tuple[TierSpec, ...] = ()
    unit = None
    if tiers_mode:
        if tiers_mode not in TIERS_MODES:
            errors.add("tiers_mode", "tiers_mode must be 'graduated', 'volume' or empty for a per-unit price.")
        tiers = _tiers(errors, data.get("tiers"))
        if not _blank(data.get("unit_amount_decimal")):
            errors.add("unit_amount_decimal", "A tiered price takes its amounts from its tiers: leave this empty.")
    else:
        if data.get("tiers"):
            errors.add("tiers", "Tiers need a tiers_mode (graduated or volume).")
        unit = _amount(errors, "unit_amount_decimal", data.get("unit_amount_decimal"), required=True)
    window = _window(errors, data.get("inactivity_window"))
    seat = _whole(errors, "seat_unit_amount", data.get("seat_unit_amount"), minimum=0, maximum=MAX_STRIPE_AMOUNT)
    conversion = _amount(
        errors,
        "seat_conversion_unit_amount_decimal",
        data.get("seat_conversion_unit_amount_decimal"),
        required=True,
    )
    if conversion is not None and conversion == 0:
        errors.add("seat_conversion_unit_amount_decimal", "The conversion rate must be above zero.")
    effective_from = _effective_from(errors, data.get("effective_from"))
    offers = _offers(errors, data.get("offers"))
    errors.raise_if_any()
    return PlanVersionSpec(
        currency=currency,
        unit_amount_decimal=unit,
        tiers_mode=tiers_mode,
        tiers=tiers,
        inactivity_window=window,
        seat_unit_amount=seat,
        seat_conversion_unit_amount_decimal=conversion,
        effective_from=effective_from,
        offers=offers,
    )
