"""Daily usage rollups, moved in the same transaction as the resolutions they count, and rebuilt in the
same transaction as a change of the account's timezone (which moves resolutions to other local dates)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.locks import account_lock
from accounts.models import Account, validate_timezone
from accounts.services import Actor, audit_log_write

from .. import sql
from ..models import Resolution

ROLLUP_ZERO = (0, 0, 0, 0, 0, 0)  # resolutions, credited, overage, amount, confirmed, escalated


def rollup_row() -> list[int]:
    """A day's delta: [resolutions, credited, overage, amount_minor, confirmed, escalated]."""
    return list(ROLLUP_ZERO)


def rollups_adjust(
    account: Account,
    *,
    added: list[Resolution],
    removed: list[Resolution],
    escalations: list[tuple[dt.datetime | None, dt.datetime | None]] = (),
) -> None:
    """Move the day counters by resolutions written or voided, and by conversations whose escalation moved
    ((before, after) handoff instants, either None), in the same transaction as the rows they count."""
    delta: dict[dt.date, list[int]] = defaultdict(rollup_row)
    local_date = LocalDates()
    confirmed = Resolution.Kind.CONFIRMED.value
    for resolution, sign in [(r, 1) for r in added] + [(r, -1) for r in removed]:
        row = delta[local_date(account, resolution.resolved_at)]
        row[0] += sign
        row[1] += sign * (resolution.funding == Resolution.Funding.CREDIT)
        row[2] += sign * (resolution.funding == Resolution.Funding.OVERAGE)
        row[3] += sign * resolution.amount_minor
        row[4] += sign * (resolution.kind == confirmed)
    for before, after in escalations:
        if before is not None:
            delta[local_date(account, before)][5] -= 1
        if after is not None:
            delta[local_date(account, after)][5] += 1
    _rollups_apply(account, delta)


def _rollups_apply(account: Account, delta: dict[dt.date, list[int]]) -> None:
    rollups_apply_many({(account.pk, day): row for day, row in delta.items()})


def rollups_apply_many(delta: dict[tuple[int, dt.date], list[int]]) -> None:
    """Add (resolutions, credited, overage, amount, confirmed, escalated) to the (account, day) counters,
    whose accounts the caller's transaction has locked."""
    delta = {key: row for key, row in delta.items() if any(row)}
    if delta:
        sql.rollups_add(delta)


def account_timezone_change(*, account: Account, timezone: str, actor: Actor) -> Account:
    """Change the account's timezone and rebuild its daily rollups from its resolutions by their new local
    dates, in one transaction under the account's lock (so evaluation and funding, which move the rollups
    under the same lock, never see the new timezone with the old days, nor the other way round); one audit
    entry. An unknown timezone is refused and changes nothing; the same timezone changes nothing. Returns
    the locked, updated account."""
    try:
        validate_timezone(timezone)
    except ValidationError as error:
        raise ValidationError({"timezone": error.messages}) from None
    with transaction.atomic():
        locked = account_lock(account.pk)
        before = locked.timezone
        if before == timezone:
            return locked
        locked.timezone = timezone
        locked.save(update_fields=["timezone"])
        days = sql.rollups_rebuild(locked.pk, timezone)
        audit_log_write(
            actor=actor, action="account.timezone_change", obj=locked, account=locked,
            before={"timezone": before}, after={"timezone": timezone, "usage_days_rebuilt": days},
        )  # fmt: skip
    account.timezone = timezone
    return locked


class LocalDates:
    """An instant's date in its account's timezone. Instants come mostly in order, so the last day's bounds
    are kept per account and most instants need no time zone arithmetic at all."""

    def __init__(self) -> None:
        self._zones: dict[str, zoneinfo.ZoneInfo] = {}
        self._day: dict[int, tuple[dt.datetime, dt.datetime, dt.date]] = {}

    def __call__(self, account: Account, instant: dt.datetime) -> dt.date:
        known = self._day.get(account.id)
        if known is not None and known[0] <= instant < known[1]:
            return known[2]
        zone = self._zones.get(account.timezone)
        if zone is None:
            zone = self._zones[account.timezone] = zoneinfo.ZoneInfo(account.timezone)
        day = instant.astimezone(zone).date()
        starts = dt.datetime.combine(day, dt.time(), tzinfo=zone)
        ends = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone)
        starts, ends = starts.astimezone(dt.UTC), ends.astimezone(dt.UTC)  # quick to compare with UTC instants
        tick = dt.timedelta(microseconds=1)
        if (
            starts.astimezone(zone).date() == day
            and (ends - tick).astimezone(zone).date() == day < ends.astimezone(zone).date()
        ):
            self._day[account.id] = (starts, ends, day)  # not where a DST change skips or repeats midnight
        return day
