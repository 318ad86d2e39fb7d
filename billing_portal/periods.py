"""Monthly billing periods anchored like Stripe's: same day of month and time as the anchor, clamped to
the month's last day (an anchor on the 31st bills on the 30th in April)."""

from __future__ import annotations

import calendar
import datetime as dt


def _add_months(anchor: dt.datetime, months: int) -> dt.datetime:
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def billing_period(*, anchor: dt.datetime, instant: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The [start, end) monthly period around `instant` for a subscription anchored at `anchor`."""
    months = (instant.year - anchor.year) * 12 + (instant.month - anchor.month)
    start = _add_months(anchor, months)
    if start > instant:
        months -= 1
        start = _add_months(anchor, months)
    end = _add_months(anchor, months + 1)
    if end <= instant:  # clamping can leave instant past this period's end
        start, end = end, _add_months(anchor, months + 2)
    return start, end
