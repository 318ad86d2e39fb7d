"""Money: integer minor units with a currency; unit prices are Decimals of minor units (99 = $0.99).

Rounding happens once per priced line, half-up, here and nowhere else.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 codes Stripe charges in (lowercase, as Stripe writes them).
SUPPORTED_CURRENCIES = frozenset(
    """usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn
    bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf gtq
    gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak lbp lkr lrd lsl
    mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr
    pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs tnd top try ttd twd
    tzs uah ugx uyu uzs vnd vuv wst xaf xcd xof xpf yer zar zmw""".split()
)
# Currencies whose minor unit is the major unit (Stripe's list).
ZERO_DECIMAL_CURRENCIES = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
THREE_DECIMAL_CURRENCIES = frozenset("bhd jod kwd omr tnd".split())

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$", "chf": "CHF "}


def round_minor(amount: Decimal) -> int:
    """Round a Decimal amount of minor units to a whole number of minor units, half-up."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def parse_unit_amount(value: object) -> Decimal:
    """Parse a per-unit price in minor units (Decimal, int or numeric string); never from a float."""
    if isinstance(value, float):
        raise ValueError("Prices must be given as a string or Decimal, not a float.")
    try:
        parsed = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"'{value}' is not a number.") from None
    if not parsed.is_finite():
        raise ValueError(f"'{value}' is not a finite number.")
    return parsed


def minor_exponent(currency: str) -> int:
    currency = currency.lower()
    if currency in ZERO_DECIMAL_CURRENCIES:
        return 0
    if currency in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def format_money(amount_minor: int | Decimal, currency: str) -> str:
    """Format minor units for people: `$1,234.56`, `¥1,235`, `12.50 SEK`. Sub-cent unit prices keep
    their digits (`$0.985`)."""
    exponent = minor_exponent(currency)
    major = Decimal(amount_minor).scaleb(-exponent)
    places = max(exponent, -major.normalize().as_tuple().exponent if major != major.to_integral() else 0)
    sign = "-" if major < 0 else ""
    text = f"{abs(major):,.{places}f}"
    symbol = _SYMBOLS.get(currency.lower())
    if symbol:
        return f"{sign}{symbol}{text}"
    return f"{sign}{text} {currency.upper()}"


def format_major(amount_minor: int, currency: str) -> str:
    """Minor units as a plain decimal of major units, for files machines read: 99 usd -> "0.99", -5 -> "-0.05",
    1234 jpy -> "1234". No symbol, no separators; exact (integer arithmetic, no rounding)."""
    exponent = minor_exponent(currency)
    if not exponent:
        return str(amount_minor)
    whole, part = divmod(abs(amount_minor), 10**exponent)
    return f"{'-' if amount_minor < 0 else ''}{whole}.{part:0{exponent}d}"


def parse_major_amount(text: str, currency: str) -> int:
    """An amount typed by a person in major units ("1,500.00", "$1500", "1500") -> integer minor units of
    `currency`. Thousands separators must be commas in groups of three; more decimals than the currency has
    are refused, never rounded. Raises ValueError with a plain message."""
    cleaned = re.sub(r"\s", "", str(text or "")).lstrip("$€£¥")
    if cleaned.upper().endswith(currency.upper()):
        cleaned = cleaned[: -len(currency)]
    exponent = minor_exponent(currency)
    if not re.fullmatch(r"(\d{1,3}(,\d{3})+|\d+)(\.\d+)?", cleaned):
        raise ValueError("Enter an amount such as 1,500.00 (digits, commas between thousands, a dot for cents).")
    whole, _, fraction = cleaned.replace(",", "").partition(".")
    if len(fraction) > exponent:
        places = f"{exponent} decimal place{'s' if exponent != 1 else ''}" if exponent else "no decimals"
        raise ValueError(f"{currency.upper()} amounts have {places}.")
    return int(whole) * 10**exponent + int((fraction or "0").ljust(exponent, "0") or 0)


def major_amount_text(amount_minor: int, currency: str) -> str:
    """Minor units -> the major-unit text a person types back ("1,500.00"), without a currency symbol."""
    exponent = minor_exponent(currency)
    return f"{Decimal(amount_minor).scaleb(-exponent):,.{exponent}f}"
