"""The one clock of the portal (DESIGN §3.6).

Every time-based rule asks `clock.now()`. Like a Stripe test clock, it can be frozen: for the whole
process (setting BILLING_CLOCK_NOW), for a block (`with clock.frozen(dt):`), or for one management
command (`--now ISO8601`, see `add_now_argument`). Frozen time is process-wide on purpose, so that
threads started inside a frozen block (concurrency tests) see the same "now".
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

_lock = threading.Lock()
_frozen: list[dt.datetime] = []  # a stack, so that frozen blocks nest


# The instants the portal takes from outside (API bodies, cursors, command options, BILLING_CLOCK_NOW). Far
# enough from datetime's own limits (years 1 and 9999) that the date arithmetic done on an instant (a pack's
# default 365-day validity, billing periods, local dates in any timezone) can never overflow.
INSTANT_MIN = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
INSTANT_MAX = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)  # excluded
MAX_INSTANT_LENGTH = 40  # "2026-11-23T09:30:00.123456+01:00" is 32 characters
_HAS_TIME = re.compile(r"\d[Tt ]\d")  # a date-time, not a bare date (which would parse as midnight)


def parse_instant(value) -> dt.datetime:
    """Parse an ISO 8601 instant that carries its timezone, in [INSTANT_MIN, INSTANT_MAX); return it in UTC.

    The one instant parser: anything else (not a string, too long, a bare date, no timezone, an offset that
    overflows when converted to UTC, out of range) raises ValueError with a plain one-line message. Ingestion
    calls it for every event, so the explanation is only worked out for a value that fails."""
    if isinstance(value, str) and len(value) <= MAX_INSTANT_LENGTH:
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:  # well-formed but impossible, e.g. February 30 or an offset of 24 hours
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            try:
                instant = parsed.astimezone(dt.UTC)
            except OverflowError:  # e.g. 9999-12-31T23:59:59-05:00
                instant = None
            if instant is not None and INSTANT_MIN <= instant < INSTANT_MAX:
                return instant
    raise ValueError(_instant_refusal(value))


def _instant_refusal(value) -> str:
    if not isinstance(value, str) or len(value) > MAX_INSTANT_LENGTH:
        return "The value is not an ISO 8601 date-time with a timezone (e.g. 2026-11-23T09:30:00Z)."
    try:
        parsed = parse_datetime(value.strip()) if _HAS_TIME.search(value) else None
    except ValueError:
        parsed = None
    if parsed is None:
        return f"'{value}' is not an ISO 8601 date-time with a timezone (e.g. 2026-11-23T09:30:00Z)."
    if parsed.tzinfo is None:
        return f"'{value}' has no timezone: give an ISO 8601 date-time with a timezone (Z, or an offset like +01:00)."
    return f"'{value}' is out of range: an instant must lie between 1970-01-01 and 9000-01-01 (UTC)."


def now() -> dt.datetime:
    """The current instant, timezone-aware in UTC."""
    with _lock:
        if _frozen:
            return _frozen[-1]
    if settings.BILLING_CLOCK_NOW:
        return parse_instant(settings.BILLING_CLOCK_NOW)
    return timezone.now()


@contextmanager
def frozen(instant: dt.datetime) -> Iterator[dt.datetime]:
    """Freeze `now()` at `instant` inside the block."""
    if timezone.is_naive(instant):
        raise ValueError("clock.frozen needs a timezone-aware datetime.")
    instant = instant.astimezone(dt.UTC)
    with _lock:
        _frozen.append(instant)
    try:
        yield instant
    finally:
        with _lock:
            _frozen.remove(instant)


def instant_argument(value: str) -> dt.datetime:
    """argparse type for an ISO 8601 instant: bad input becomes argparse's error (see errors_on_one_line)."""
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def errors_on_one_line(parser: argparse.ArgumentParser) -> None:
    """A bad option prints one line on stderr (DESIGN §4), not argparse's several lines of usage first;
    --help still shows the usage."""
    parser.print_usage = lambda file=None: None


def add_now_argument(parser: argparse.ArgumentParser) -> None:
    """Give a management command the `--now ISO8601` option; run its work inside `frozen_for(options)`."""
    errors_on_one_line(parser)
    parser.add_argument(
        "--now",
        type=instant_argument,
        default=None,
        help="Run as if it were this instant (ISO 8601 with timezone), like a Stripe test clock.",
    )


@contextmanager
def frozen_for(options: dict) -> Iterator[dt.datetime]:
    """Freeze the clock at the command's --now, or leave it running when --now was not given."""
    if options.get("now") is None:
        yield now()
        return
    with frozen(options["now"]) as instant:
        yield instant
