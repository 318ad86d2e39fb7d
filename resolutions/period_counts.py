"""A billing period's exact counts, from the daily rollups and the period's two ragged edges: the one rule
the dashboard, the invoice preview and the price simulation share. Reads only: nothing here writes.

Speed: nothing scans a period's resolutions. A period's counts are whole local days from the daily rollups
(DailyUsage) plus, on its first and last local days, which a Stripe period cuts at an arbitrary instant, the
part of the day on the right side of the cut, counted from the (account, resolved_at, id) and (account,
escalated_at) indexes. On the first day the shorter side is counted (the part in the period, added; or the
part before it, taken from the day's rollup), so at most about twelve hours are read; on the last day the
part after the period's end is taken away (for the current period it lies in the future and is empty).
Any number of periods, of any accounts, are one statement (`sql.period_usage_sums`), so one snapshot:
exact counts, never an estimate.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass

from . import sql

EDGE_SPAN = dt.timedelta(hours=26)  # a local day is at most 25 hours long (DST); the edges stay inside this
USAGE_KEYS = ("resolutions", "credited", "overage", "amount_minor", "confirmed", "escalated")


@dataclass(frozen=True, slots=True)
class PeriodKey:
    """[starts, ends) of one account, whose local days are in `timezone`."""

    account_id: int
    timezone: str
    starts: dt.datetime
    ends: dt.datetime


def local_date(instant: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.date:
    return instant.astimezone(zone).date()


def _day_start(day: dt.date, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=zone)


def period_edges(*, starts: dt.datetime, ends: dt.datetime, timezone: str) -> tuple[dt.date, dt.date, list[tuple]]:
    """The whole local days [days_from, days_to] of [starts, ends) to read from the rollups, and the edges:
    (sign, from, to, local date), the day's resolutions in [from, to) added (+1) or taken away (-1)."""
    zone = zoneinfo.ZoneInfo(timezone)
    first, last = local_date(starts, zone), local_date(ends - dt.timedelta(microseconds=1), zone)
    edges = []
    if starts - _day_start(first, zone) <= dt.timedelta(hours=12):
        days_from = first
        edges.append((-1, starts - EDGE_SPAN, starts, first))  # the day's part before the period
    else:
        days_from = first + dt.timedelta(days=1)
        edges.append((1, starts, starts + EDGE_SPAN, first))  # the day's part inside the period
    edges.append((-1, ends, ends + EDGE_SPAN, last))  # the last day's part after the period
    return days_from, last, edges


def period_usage_sums(*, keys: Sequence[PeriodKey]) -> list[dict]:
    """For each key, in order: its exact counts (USAGE_KEYS: resolutions not voided, of them credited,
    overage and confirmed, their overage money as the rollups hold it, and conversations escalated),
    all keys in one statement."""
    plans = []
    for key in keys:
        days_from, days_to, edges = period_edges(starts=key.starts, ends=key.ends, timezone=key.timezone)
        plans.append((key.account_id, key.timezone, days_from, days_to, edges))
    totals = sql.period_usage_sums(plans) if plans else {}
    zero = (0,) * len(USAGE_KEYS)
    return [dict(zip(USAGE_KEYS, totals.get(i, zero), strict=True)) for i in range(len(plans))]


def period_first_versions(*, keys: Sequence[PeriodKey]) -> list[int | None]:
    """For each key, in order: the plan version its first resolution (by resolved_at, then id) was stamped
    with, or None when it has none (one index probe a key, all in one statement)."""
    if not keys:
        return []
    found = sql.period_first_versions([(k.account_id, k.starts, k.ends) for k in keys])
    return [found.get(i) for i in range(len(keys))]
