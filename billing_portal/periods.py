"""Billing periods: Stripe's calendar arithmetic, and the lookup of the period that holds an instant.

An account's periods are its Stripe subscription's (recorded as `accounts.BillingPeriod` whenever the
subscription is synced). `PeriodCalendar` answers "which period holds this instant" from those records:

- inside a recorded period: that period;
- before the first recorded start: the first period (its start reaches back to `EARLIEST`, so that what
  happened before the subscription started is counted in, and priced with, the first period);
- after the last recorded end (a renewal not seen yet), or in a gap between records: the period Stripe
  itself will make, projected from the subscription's `billing_cycle_anchor` with Stripe's arithmetic
  (same day of month and time as the anchor, clamped to the month's last day), never overlapping a
  recorded period; the recorded one replaces it once Stripe's renewal is synced;
- no record at all (an account Stripe has no subscription for): one open period.

Monthly periods anchored like Stripe's: an anchor on the 31st bills on the 30th in April.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # the first period's start, for what came before it
LATEST = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)  # the end of an account's one open period (no records)
_FIXED = {"day": dt.timedelta(days=1), "week": dt.timedelta(days=7)}


def _add_months(anchor: dt.datetime, months: int) -> dt.datetime:
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def billing_period(*, anchor: dt.datetime, instant: dt.datetime, months: int = 1) -> tuple[dt.datetime, dt.datetime]:
    """The [start, end) period of `months` months around `instant` for a subscription anchored at `anchor`."""
    if months < 1:
        raise ValueError("A billing period is at least one month long.")
    steps = ((instant.year - anchor.year) * 12 + (instant.month - anchor.month)) // months
    start = _add_months(anchor, steps * months)
    while start > instant:
        steps -= 1
        start = _add_months(anchor, steps * months)
    end = _add_months(anchor, (steps + 1) * months)
    while end <= instant:  # clamping can leave instant past this period's end
        steps += 1
        start, end = end, _add_months(anchor, (steps + 1) * months)
    return start, end


def projected_period(
    *, anchor: dt.datetime, interval: str, interval_count: int, instant: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The [start, end) period Stripe makes around `instant` for a subscription with this anchor and price
    interval (`month`, `year`, `week` or `day`, times `interval_count`)."""
    count = max(int(interval_count or 1), 1)
    if interval in _FIXED:
        length = _FIXED[interval] * count
        steps = (instant - anchor) // length
        start = anchor + steps * length
        return start, start + length
    return billing_period(anchor=anchor, instant=instant, months=count * (12 if interval == "year" else 1))


@dataclass(frozen=True)
class RecordedPeriod:
    start: dt.datetime
    end: dt.datetime
    billing_cycle_anchor: dt.datetime | None = None
    interval: str = "month"
    interval_count: int = 1


class PeriodCalendar:
    """An account's recorded periods, for many lookups: built once (one query), then each lookup is a
    bisection, plus date arithmetic for an instant outside every recorded period."""

    __slots__ = ("_periods", "_starts")

    def __init__(self, periods: Sequence[RecordedPeriod]):
        self._periods = sorted(periods, key=lambda p: p.start)
        self._starts = [p.start for p in self._periods]

    def __len__(self) -> int:
        return len(self._periods)

    @property
    def first_start(self) -> dt.datetime | None:
        """The first recorded period's real start (`containing` reaches it back to EARLIEST)."""
        return self._periods[0].start if self._periods else None

    def containing(self, instant: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """The [start, end) billing period that holds `instant` (see the module's rules)."""
        periods = self._periods
        if not periods:
            return EARLIEST, LATEST
        i = bisect.bisect_right(self._starts, instant) - 1
        if i < 0:
            return EARLIEST, periods[0].end
        period = periods[i]
        if instant < period.end:
            return (EARLIEST if i == 0 else period.start), period.end
        # Past this record: the period Stripe will make (a renewal not seen yet), kept clear of the records.
        anchor = period.billing_cycle_anchor or period.start
        start, end = projected_period(
            anchor=anchor, interval=period.interval, interval_count=period.interval_count, instant=instant
        )
        start = max(start, period.end)
        if i + 1 < len(periods):
            end = min(end, periods[i + 1].start)
        return start, end

    def current(self, instant: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
        """The period holding `instant` as Stripe shows it (its real start), or None without records."""
        if not self._periods:
            return None
        start, end = self.containing(instant)
        return (self._periods[0].start if start == EARLIEST else start), end
