"""The one clock of the portal (DESIGN §3.6).

Every time-based rule asks `clock.now()`. Like a Stripe test clock, it can be frozen: for the whole
process (setting BILLING_CLOCK_NOW), for a block (`with clock.frozen(dt):`), or for one management
command (`--now ISO8601`, see `add_now_argument`). Frozen time is process-wide on purpose, so that
threads started inside a frozen block (concurrency tests) see the same "now".
"""

from __future__ import annotations

import argparse
import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

_lock = threading.Lock()
_frozen: list[dt.datetime] = []  # a stack, so that frozen blocks nest


def parse_instant(value: str) -> dt.datetime:
    """Parse an ISO 8601 instant that carries its timezone; raise ValueError with a plain message."""
    parsed = parse_datetime(value.strip()) if isinstance(value, str) else None
    if parsed is None:
        raise ValueError(f"'{value}' is not an ISO 8601 date-time (e.g. 2026-11-23T09:30:00Z).")
    if timezone.is_naive(parsed):
        raise ValueError(f"'{value}' has no timezone: add Z or an offset such as +01:00.")
    return parsed.astimezone(dt.UTC)


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


def _instant_argument(value: str) -> dt.datetime:
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def instant_argument(value: str) -> dt.datetime:
    """argparse type for an ISO 8601 instant: bad input becomes argparse's one-line error."""
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_now_argument(parser: argparse.ArgumentParser) -> None:
    """Give a management command the `--now ISO8601` option; run its work inside `frozen_for(options)`."""
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
