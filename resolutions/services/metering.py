"""Meter reporting (DESIGN §3.5): the portal's overage, per account and reporting window, sent to Stripe's
meter as one event per window, exactly once.

Windows. An account's overage is counted per window (`MeterWindow`): aligned UTC slots of
METER_WINDOW_SECONDS (an hour by default), cut at the account's Stripe billing-period boundaries, so a
window never straddles two invoices. Funding adds its new overage to the windows and a void takes it
away, in their own transactions (`meter_windows_move`); nothing here scans the resolutions.

Timestamps. A window's events carry `meter_event_timestamp(window)`: the window's start, or for a period's
first window (which starts at the period's start, mid-minute) the next whole minute. Every event of a
period then lies in [ceil_minute(period start), period end), so Stripe's meter event summaries, whose
bounds must be whole minutes, count exactly one period's events over `meter_summary_bounds(period)`.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings

from billing_portal.periods import EARLIEST

MINUTE = dt.timedelta(minutes=1)


def _ceil_minute(instant: dt.datetime) -> dt.datetime:
    floored = instant.replace(second=0, microsecond=0)
    return floored if floored == instant else floored + MINUTE


def window_bounds(
    instant: dt.datetime, period: tuple[dt.datetime, dt.datetime], first_period_start: dt.datetime | None = None
) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
    """(window start, window end, the period's real start) of the reporting window holding `instant` in its
    billing period [start, end). A first period reaching back to EARLIEST (what came before the
    subscription) really starts at `first_period_start`: an instant before it lands in the period's first
    window, so that its event is timestamped inside the period Stripe invoices."""
    period_start, period_end = period
    if period_start == EARLIEST and first_period_start is not None:
        period_start = first_period_start
    instant = max(instant, period_start)
    size = settings.METER_WINDOW_SECONDS
    aligned = dt.datetime.fromtimestamp(int(instant.timestamp()) // size * size, dt.UTC)
    return max(aligned, period_start), min(aligned + dt.timedelta(seconds=size), period_end), period_start


def meter_event_timestamp(window_start: dt.datetime, window_end: dt.datetime) -> dt.datetime:
    """The timestamp of a window's events: its start, moved to the next whole minute if that is still in
    the window (only a period's first window starts mid-minute)."""
    moved = _ceil_minute(window_start)
    return moved if moved < window_end else window_start


def meter_summary_bounds(period_start: dt.datetime, period_end: dt.datetime) -> tuple[int, int]:
    """[start_time, end_time) for Stripe's meter event summaries of one billing period: whole minutes (as
    Stripe requires) that hold every event of this period and none of its neighbours' (see the module
    docstring)."""
    return int(_ceil_minute(period_start).timestamp()), int(_ceil_minute(period_end).timestamp())
