"""Rating: what a period's overage costs, priced exactly as Stripe Billing prices a metered Price.

Pure functions over plain values: no models, no database. Money is integer minor units; per-unit prices are
Decimals of minor units (Decimal("99") = $0.99, Decimal("0.5") = half a cent); never floats.

Stripe's semantics, which this module reproduces:

- Per-unit (``tiers_mode`` ""): one invoice line, ``quantity × unit_amount_decimal``.
- Graduated: the quantity fills the tiers in order (tier ``i`` holds units ``up_to[i-1] + 1 … up_to[i]``; the
  first tier starts at 0, ``up_to`` None is infinity) and each tier reached is billed on its own invoice line:
  its units × its unit amount, plus its ``flat_amount`` ("price for the entire tier"). The first tier is
  always reached, so a quantity of 0 still pays the first tier's flat amount.
- Volume: the tier holding the whole quantity prices every unit, plus that tier's flat amount, on one line.
- Rounding happens on each invoice line, half up, once (Stripe: "Rounding occurs on the line item level of
  your invoices … If you have multiple line items, each will be rounded before summing up the total"; the
  house rule: "round half up once per priced line"). Arithmetic before that rounding is exact.

Stripe actually writes a tier's units and its flat fee as two invoice lines; a flat amount is a whole number
of minor units, so rounding them together or apart gives the same amount, and `PricedLine` keeps one line
per tier with both parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, Inexact, localcontext

from billing_portal.money import round_minor

PER_UNIT = ""
GRADUATED = "graduated"
VOLUME = "volume"
TIERS_MODES = (PER_UNIT, GRADUATED, VOLUME)

# Enough digits for any product of a quantity and a 24-digit unit price: the arithmetic is exact, and
# `Inexact` is trapped so that it could never be silently rounded anyway.
_EXACT_PRECISION = 200


def _decimal_amount(value: object, *, name: str) -> Decimal | None:
    """A non-negative, finite Decimal of minor units (ints are accepted and converted), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"{name} must be a Decimal (or int) of minor units, not {type(value).__name__}.")
    if isinstance(value, int):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise ValueError(f"{name} must be a Decimal of minor units, not {type(value).__name__}.")
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite number, not {value}.")
    if value < 0:
        raise ValueError(f"{name} cannot be negative ({value}).")
    return value


def _whole(value: object, *, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, not {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}.")
    return value


def _quantity(value: object, *, name: str = "quantity") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, not {value!r}.")
    if value < 0:
        raise ValueError(f"{name} cannot be negative ({value}).")
    return value


@dataclass(frozen=True)
class Tier:
    """One tier of a tiered price, exactly as Stripe's ``tiers[]``.

    Invariant: ``up_to`` is None (infinity; the last tier only) or a whole number ≥ 1; ``unit_amount_decimal``
    is None or a finite Decimal ≥ 0; ``flat_amount`` is None or a whole number ≥ 0; at least one of the two
    amounts is set. None amounts price as 0.
    """

    up_to: int | None
    unit_amount_decimal: Decimal | None = None
    flat_amount: int | None = None

    def __post_init__(self) -> None:
        if self.up_to is not None:
            _whole(self.up_to, name="up_to", minimum=1)
        object.__setattr__(
            self, "unit_amount_decimal", _decimal_amount(self.unit_amount_decimal, name="unit_amount_decimal")
        )
        if self.flat_amount is not None:
            _whole(self.flat_amount, name="flat_amount", minimum=0)
        if self.unit_amount_decimal is None and self.flat_amount is None:
            raise ValueError("A tier needs a unit_amount_decimal, a flat_amount, or both.")

    @property
    def unit(self) -> Decimal:
        return self.unit_amount_decimal if self.unit_amount_decimal is not None else Decimal(0)

    @property
    def flat(self) -> int:
        return self.flat_amount if self.flat_amount is not None else 0


@dataclass(frozen=True)
class PriceTerms:
    """The terms of a metered per-resolution Stripe Price.

    Invariant: ``tiers_mode`` is "" (per-unit), "graduated" or "volume". Per-unit terms have a
    ``unit_amount_decimal`` and no tiers. Tiered terms have no top-level ``unit_amount_decimal`` (Stripe refuses
    one on a tiered price) and at least one tier; every tier but the last has an ``up_to``, strictly
    increasing, and the last tier's ``up_to`` is None (infinity).
    """

    unit_amount_decimal: Decimal | None
    tiers_mode: str  # "" per-unit, "graduated" or "volume"
    tiers: tuple[Tier, ...] = ()

    def __post_init__(self) -> None:
        mode = self.tiers_mode if self.tiers_mode is not None else ""
        if mode not in TIERS_MODES:
            raise ValueError(f"tiers_mode must be 'graduated', 'volume' or '' (per-unit), not {mode!r}.")
        object.__setattr__(self, "tiers_mode", mode)
        object.__setattr__(
            self, "unit_amount_decimal", _decimal_amount(self.unit_amount_decimal, name="unit_amount_decimal")
        )
        tiers = tuple(self.tiers)
        object.__setattr__(self, "tiers", tiers)
        if mode == PER_UNIT:
            if tiers:
                raise ValueError("Tiers need a tiers_mode (graduated or volume).")
            if self.unit_amount_decimal is None:
                raise ValueError("A per-unit price needs a unit_amount_decimal.")
            return
        if self.unit_amount_decimal is not None:
            raise ValueError("A tiered price takes its amounts from its tiers: unit_amount_decimal must be None.")
        if not tiers:
            raise ValueError(f"A {mode} price needs at least one tier.")
        previous = 0
        for i, tier in enumerate(tiers):
            if not isinstance(tier, Tier):
                raise ValueError(f"tiers[{i}] must be a Tier, not {type(tier).__name__}.")
            is_last = i == len(tiers) - 1
            if tier.up_to is None:
                if not is_last:
                    raise ValueError(f"tiers[{i}]: only the last tier can be open-ended (up_to None).")
            elif is_last:
                raise ValueError(f"tiers[{i}]: the last tier must be open-ended (up_to None), not {tier.up_to}.")
            elif tier.up_to <= previous:
                raise ValueError(f"tiers[{i}]: up_to must increase: {tier.up_to} is not above {previous}.")
            else:
                previous = tier.up_to

    @classmethod
    def from_version(cls, version: object) -> PriceTerms:
        """The terms of a PricePlanVersion-like object (duck-typed: ``unit_amount_decimal``, ``tiers_mode`` and
        ``tiers.all()`` yielding objects with ``up_to``, ``unit_amount_decimal``, ``flat_amount``, in tier
        order). Raises ValueError if they are not valid Stripe terms."""
        mode = getattr(version, "tiers_mode", "") or ""
        tiers: tuple[Tier, ...] = ()
        if mode:
            tiers = tuple(
                Tier(up_to=t.up_to, unit_amount_decimal=t.unit_amount_decimal, flat_amount=t.flat_amount)
                for t in version.tiers.all()
            )
        return cls(unit_amount_decimal=version.unit_amount_decimal, tiers_mode=mode, tiers=tiers)


@dataclass(frozen=True)
class PricedLine:
    """One priced invoice line.

    Invariant: ``amount == round_half_up(quantity × unit_amount_decimal + flat_amount)`` (None unit = 0),
    rounded exactly once; ``quantity`` is the units this line prices (for a graduated tier, the units that
    fall in that tier; 0 for a tier reached only for its flat amount)."""

    quantity: int
    unit_amount_decimal: Decimal | None
    flat_amount: int
    amount: int

    @property
    def exact_amount(self) -> Decimal:
        """The unrounded amount of the line, in minor units."""
        unit = self.unit_amount_decimal if self.unit_amount_decimal is not None else Decimal(0)
        with localcontext() as ctx:
            ctx.prec = _EXACT_PRECISION
            ctx.traps[Inexact] = True
            return Decimal(self.quantity) * unit + Decimal(self.flat_amount)


def _line(*, quantity: int, unit_amount_decimal: Decimal | None, flat_amount: int) -> PricedLine:
    line = PricedLine(quantity=quantity, unit_amount_decimal=unit_amount_decimal, flat_amount=flat_amount, amount=0)
    exact = line.exact_amount
    with localcontext() as ctx:
        ctx.prec = _EXACT_PRECISION  # room for any amount; the one rounding is round_minor's, half up
        amount = round_minor(exact)
    return PricedLine(
        quantity=quantity, unit_amount_decimal=unit_amount_decimal, flat_amount=flat_amount, amount=amount
    )


def price_lines(*, quantity: int, terms: PriceTerms) -> list[PricedLine]:
    """The invoice lines Stripe bills for ``quantity`` units (a period's total) under ``terms``.

    Per-unit and volume: one line. Graduated: one line per tier reached, in tier order; the first tier is
    always reached (a quantity of 0 still pays its flat amount), tier ``i > 0`` is reached when the quantity
    exceeds ``tiers[i-1].up_to``. The lines' quantities sum to ``quantity``; each line is rounded half up once.
    """
    quantity = _quantity(quantity)
    if not isinstance(terms, PriceTerms):
        raise ValueError(f"terms must be PriceTerms, not {type(terms).__name__}.")
    if terms.tiers_mode == PER_UNIT:
        return [_line(quantity=quantity, unit_amount_decimal=terms.unit_amount_decimal, flat_amount=0)]
    if terms.tiers_mode == VOLUME:
        tier = next(t for t in terms.tiers if t.up_to is None or quantity <= t.up_to)
        return [_line(quantity=quantity, unit_amount_decimal=tier.unit_amount_decimal, flat_amount=tier.flat)]
    lines: list[PricedLine] = []
    lower = 0  # units already placed in earlier tiers
    for i, tier in enumerate(terms.tiers):
        if i > 0 and quantity <= lower:
            break
        top = quantity if tier.up_to is None else min(quantity, tier.up_to)
        lines.append(_line(quantity=top - lower, unit_amount_decimal=tier.unit_amount_decimal, flat_amount=tier.flat))
        if tier.up_to is None:
            break
        lower = tier.up_to
    return lines


def price_quantity(*, quantity: int, terms: PriceTerms) -> int:
    """What Stripe charges, in minor units, for ``quantity`` units under ``terms``: the sum of
    `price_lines`, each line rounded half up once (never the sum rounded once)."""
    return sum(line.amount for line in price_lines(quantity=quantity, terms=terms))


def allocate(*, total: int, weights: Sequence[int]) -> list[int]:
    """Split the integer ``total`` over ``weights`` in proportion, by the largest-remainder method.

    Invariants: the parts are integers and ``sum(parts) == total`` exactly; each part is within 1 of its
    exact share ``total × weight / sum(weights)`` (it is that share rounded down or up, toward zero first and
    then one unit away from zero for the largest remainders); remainders that tie give the extra unit to the
    earlier index; a zero weight gets 0. Negative totals (corrections) are split as their magnitude is, then
    negated: ``allocate(total=-t, weights=w) == [-p for p in allocate(total=t, weights=w)]``.

    Weights must be whole numbers ≥ 0. All weights zero (or no weights) gives all zeros when ``total`` is 0
    and raises ValueError otherwise: there is nothing to split it by.
    """
    if isinstance(total, bool) or not isinstance(total, int):
        raise ValueError(f"total must be a whole number of minor units, not {total!r}.")
    parts_weights = [_whole(w, name=f"weights[{i}]", minimum=0) for i, w in enumerate(weights)]
    weight_sum = sum(parts_weights)
    if weight_sum == 0:
        if total != 0:
            raise ValueError(f"Cannot split {total} over weights that are all zero.")
        return [0] * len(parts_weights)
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    floors = [magnitude * w // weight_sum for w in parts_weights]
    remainders = [magnitude * w - f * weight_sum for w, f in zip(parts_weights, floors, strict=True)]
    leftover = magnitude - sum(floors)  # 0 <= leftover < number of non-zero remainders
    order = sorted(range(len(parts_weights)), key=lambda i: (-remainders[i], i))
    for i in order[:leftover]:
        floors[i] += 1
    return [sign * part for part in floors]


def period_charge_by_day(*, daily_quantities: Sequence[int], terms: PriceTerms) -> list[int]:
    """Each day's share of its billing period's charge, in minor units: the period's charge is
    ``price_quantity(sum(daily_quantities))`` (what Stripe invoices for the period) and it is split over the
    days in proportion to their quantities with `allocate`.

    Invariants: one amount per day; the days sum exactly to the period's charge; a day with quantity 0 gets
    0 — except when every day is 0 and the period still costs something (a first tier's flat amount), in which
    case that charge is spread evenly over the days (equal weights), so the days still sum to the charge.
    ``daily_quantities`` must be every day of the period (at least one), each a whole number ≥ 0.
    """
    quantities = [_quantity(q, name=f"daily_quantities[{i}]") for i, q in enumerate(daily_quantities)]
    if not quantities:
        raise ValueError("daily_quantities is empty: a billing period has at least one day.")
    charge = price_quantity(quantity=sum(quantities), terms=terms)
    weights = quantities if any(quantities) else [1] * len(quantities)
    return allocate(total=charge, weights=weights)
