"""The price curve of the pricing workbench: what N overage resolutions in one billing period cost under a
version's terms, for N from 0 to a few times the largest account's period volume, drawn as an inline SVG.

Every amount comes from `rating.price_quantity` on integer minor units (the same function that rates real
periods), never from a second implementation of tiers. Between two tier boundaries a price is linear in N,
so the curve is evaluated at every boundary (`up_to` and `up_to + 1`, where a volume price jumps) plus evenly
spaced points, and drawn through them: what the line shows at a boundary is what Stripe would charge there.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Sum

from accounts.pricing import PlanVersionSpec
from billing_portal.money import format_money, minor_exponent

from .models import MeterWindow
from .rating import PriceTerms, Tier, price_quantity

DEFAULT_MAX_QUANTITY = 10_000  # the range when no account has any overage yet
VOLUME_FACTOR = 3  # the range is this many times the largest account's period overage
LOOKBACK = dt.timedelta(days=400)  # the periods the range is taken from
MAX_LARGEST = 10**9  # a posted largest_overage above this is not believed
EVEN_POINTS = 48
SAMPLE_POINTS = 5
# Geometry of the SVG, in its own units (it scales to the card's width).
WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 88, 16, 16, 52


def terms_from_spec(spec: PlanVersionSpec) -> PriceTerms:
    """The Stripe terms of a parsed (not yet saved) version."""
    tiers = tuple(
        Tier(up_to=t.up_to, unit_amount_decimal=t.unit_amount_decimal, flat_amount=t.flat_amount) for t in spec.tiers
    )
    return PriceTerms(
        unit_amount_decimal=spec.unit_amount_decimal if not spec.tiers_mode else None,
        tiers_mode=spec.tiers_mode,
        tiers=tiers,
    )


def largest_period_overage(*, now: dt.datetime) -> int:
    """The most overage resolutions any account had in one Stripe billing period of the last 13 months, from
    the reporting windows (one grouped query on the period_end index, never a scan of resolutions); 0 when
    there is none."""
    row = (
        MeterWindow.objects.filter(period_end__gt=now - LOOKBACK)
        .values("account_id", "period_start")
        .annotate(n=Sum("overage"))
        .order_by("-n")
        .values_list("n", flat=True)
        .first()
    )
    return max(int(row or 0), 0)


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above `value` (axis ends people can read)."""
    if value <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 2.5, 5, 10):
        candidate = int(step * magnitude)
        if candidate >= value:
            return candidate
    return 10 * magnitude  # pragma: no cover - the loop always returns


def curve_range(largest_overage: int) -> int:
    """The largest N the curve shows: a readable round number at or above 3 × the largest period overage."""
    if largest_overage <= 0:
        return DEFAULT_MAX_QUANTITY
    return _nice_ceiling(VOLUME_FACTOR * largest_overage)


@dataclass(frozen=True)
class Series:
    key: str  # "draft" or "current": the CSS class of its line
    label: str
    points: tuple[tuple[int, int], ...]  # (quantity, amount in minor units), quantity ascending
    path: str = ""


@dataclass(frozen=True)
class SampleRow:
    quantity: int
    amounts: tuple[int | None, ...]  # one per series, in the series' order
    difference: int | None  # first series minus second, when there are two


@dataclass(frozen=True)
class PriceCurve:
    currency: str
    max_quantity: int
    max_amount: int
    series: tuple[Series, ...]
    samples: tuple[SampleRow, ...]
    x_ticks: tuple[tuple[float, str], ...]  # (x, quantity, short: "7.5k")
    y_ticks: tuple[tuple[float, str], ...]  # (y, amount in major units, short: "2.5k")
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_right: int = WIDTH - RIGHT
    plot_bottom: int = HEIGHT - BOTTOM

    @property
    def description(self) -> str:
        """The curve in words, for the SVG's <desc>."""
        last = self.samples[-1]
        parts = [f"{s.label} {format_money(a, self.currency)}" for s, a in zip(self.series, last.amounts, strict=True)]
        return (
            f"Charge for 0 to {self.max_quantity:,} resolutions in a billing period; at {last.quantity:,}: "
            f"{', '.join(parts)}. The table below lists sample points."
        )


def _short(number: Decimal) -> str:
    """An axis label short enough for a phone: "0", "250", "2.5k", "1.2M"."""
    for size, suffix in ((Decimal(10**6), "M"), (Decimal(1000), "k")):
        if number >= size:
            return f"{(number / size).quantize(Decimal('0.1')).normalize():f}{suffix}"
    return f"{number.quantize(Decimal('0.01')).normalize():f}"


def _short_major(amount_minor: int, currency: str) -> str:
    return _short(Decimal(amount_minor).scaleb(-minor_exponent(currency)))


def _quantities(terms: PriceTerms, max_quantity: int) -> list[int]:
    quantities = {round(max_quantity * i / EVEN_POINTS) for i in range(EVEN_POINTS + 1)}
    for tier in terms.tiers:
        if tier.up_to is not None:
            quantities.update(q for q in (tier.up_to, tier.up_to + 1) if q <= max_quantity)
    return sorted(quantities)


def _sample_quantities(max_quantity: int, largest_overage: int) -> list[int]:
    quantities = {max_quantity * i // (SAMPLE_POINTS - 1) for i in range(SAMPLE_POINTS)}
    if 0 < largest_overage <= max_quantity:
        quantities.add(largest_overage)
    return sorted(quantities)


def price_curve_build(
    *, currency: str, curves: list[tuple[str, str, PriceTerms]], largest_overage: int, max_quantity: int | None = None
) -> PriceCurve:
    """The curves of `curves` ((key, label, terms), at most two: the draft first, then the version it would
    replace) over 0..max_quantity (default: `curve_range(largest_overage)`), with axis ticks, SVG paths and
    a few sample points (0, quarters of the range, and the largest account's volume) with the difference."""
    max_quantity = max_quantity or curve_range(largest_overage)
    raw = [
        (key, label, terms, [(q, price_quantity(quantity=q, terms=terms)) for q in _quantities(terms, max_quantity)])
        for key, label, terms in curves
    ]
    top_amount = max((amount for *_, points in raw for _, amount in points), default=0)
    max_amount = _nice_ceiling(top_amount) if top_amount > 0 else 100
    plot_w, plot_h = WIDTH - RIGHT - LEFT, HEIGHT - BOTTOM - TOP

    def x_of(quantity: int) -> float:
        return round(LEFT + plot_w * quantity / max_quantity, 2)

    def y_of(amount: int) -> float:
        return round(TOP + plot_h * (1 - Decimal(amount) / Decimal(max_amount)), 2)

    series = tuple(
        Series(
            key=key,
            label=label,
            points=tuple(points),
            path="M" + " L".join(f"{x_of(q)},{y_of(a)}" for q, a in points),
        )  # fmt: skip
        for key, label, _, points in raw
    )
    samples = []
    for quantity in _sample_quantities(max_quantity, largest_overage):
        amounts = tuple(price_quantity(quantity=quantity, terms=terms) for _, _, terms, _ in raw)
        difference = amounts[0] - amounts[1] if len(amounts) == 2 else None
        samples.append(SampleRow(quantity=quantity, amounts=amounts, difference=difference))
    return PriceCurve(
        currency=currency, max_quantity=max_quantity, max_amount=max_amount, series=series, samples=tuple(samples),
        x_ticks=tuple((x_of(max_quantity * i // 4), _short(Decimal(max_quantity * i // 4))) for i in range(5)),
        y_ticks=tuple((y_of(max_amount * i // 4), _short_major(max_amount * i // 4, currency)) for i in range(5)),
    )  # fmt: skip
