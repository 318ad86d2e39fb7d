"""Sign-in throttling for the portal and admin login forms, over Django's cache (shared by every web process
when CACHE_URL is Redis).

Failed sign-ins are counted per username and, apart, per client address. LOGIN_FAILURE_LIMIT failures of a
username (LOGIN_ADDRESS_FAILURE_LIMIT of an address: higher, since an office shares one address and one person's
typos must not lock out everyone behind it) within LOGIN_FAILURE_WINDOW_SECONDS lock that username (or that
address) out for LOGIN_LOCKOUT_SECONDS; each further
lockout of the same subject within LOGIN_LOCKOUT_MEMORY_SECONDS of the last one lasts twice as long, up to
LOGIN_LOCKOUT_MAX_SECONDS. While locked out, the form does not even check the password, whether the user
exists or not: the answer is the same message and takes the same path. A successful sign-in clears the
username's failures and lockout history, not the address's (one valid account must not reset the counter of
an address that tries other people's names).

The window is a sliding estimate over two fixed buckets (this bucket's count plus the previous bucket's,
weighted by how much of it still lies inside the window): one atomic increment per failure, no list of
timestamps. Times are the real wall clock (never the billing clock, which a demo may freeze). If the cache is
down, sign-in is not throttled (logged as an error) rather than refused for everyone.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from billing_portal.cache_counters import cache_counter_incr

logger = logging.getLogger(__name__)

_PREFIX = "sign-in"


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class SignInLockout:
    """A lockout in force: until when (epoch seconds), and how many lockouts in a row it is."""

    until: float
    strikes: int

    def seconds_left(self, now: float | None = None) -> int:
        return max(1, math.ceil(self.until - (_now() if now is None else now)))

    def message(self, now: float | None = None) -> str:
        minutes = math.ceil(self.seconds_left(now) / 60)
        return f"Too many failed sign-ins. Try again in {minutes} minute{'' if minutes == 1 else 's'}."


def _subjects(*, username: str | None, address: str | None) -> list[str]:
    # Hashed: a username is any text the caller typed (cache keys must be short and plain); case-folded, so
    # that "Admin" and "admin" count together.
    subjects = []
    if username:
        subjects.append("user:" + hashlib.sha256(username.strip().casefold().encode("utf-8", "replace")).hexdigest())
    if address:
        subjects.append("address:" + hashlib.sha256(address.encode()).hexdigest())
    return subjects


def _lockout_key(subject: str) -> str:
    return f"{_PREFIX}:lockout:{subject}"


def _failures_key(subject: str, bucket: int) -> str:
    return f"{_PREFIX}:failures:{subject}:{bucket}"


def _lockout_duration(strikes: int) -> int:
    return min(settings.LOGIN_LOCKOUT_SECONDS * 2 ** (strikes - 1), settings.LOGIN_LOCKOUT_MAX_SECONDS)


def sign_in_lockout_get(*, username: str | None, address: str | None) -> SignInLockout | None:
    """The lockout in force for this username or this address (the longer one if both), or None."""
    subjects = _subjects(username=username, address=address)
    try:
        stored = cache.get_many([_lockout_key(s) for s in subjects])
    except Exception:
        logger.exception("Sign-in throttle: the cache is unavailable; sign-in is not throttled meanwhile.")
        return None
    now = _now()
    active = [SignInLockout(*value) for value in stored.values() if value and value[0] > now]
    return max(active, key=lambda lockout: lockout.until, default=None)


def sign_in_attempt_record(*, username: str | None, address: str | None, succeeded: bool) -> SignInLockout | None:
    """Count a sign-in attempt. A failure that reaches the limit for its username or address starts a lockout,
    returned; a success clears the username's failures and lockout history."""
    try:
        if succeeded:
            for subject in _subjects(username=username, address=None):
                bucket = int(_now() // settings.LOGIN_FAILURE_WINDOW_SECONDS)
                cache.delete_many(
                    [_lockout_key(subject), _failures_key(subject, bucket), _failures_key(subject, bucket - 1)]
                )
            return None
        return _failure_record(_subjects(username=username, address=address))
    except Exception:
        logger.exception("Sign-in throttle: the cache is unavailable; sign-in is not throttled meanwhile.")
        return None


def _failure_record(subjects: list[str]) -> SignInLockout | None:
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    now = _now()
    bucket = int(now // window)
    into_bucket = (now - bucket * window) / window
    started = None
    for subject in subjects:
        key = _failures_key(subject, bucket)
        count = cache_counter_incr(key, timeout=2 * window + 5)
        previous = cache.get(_failures_key(subject, bucket - 1)) or 0
        # The previous bucket's share is rounded up: five failures in a few seconds across a boundary are five.
        limit = settings.LOGIN_ADDRESS_FAILURE_LIMIT if subject.startswith("address:") else settings.LOGIN_FAILURE_LIMIT
        if count + math.ceil(previous * (1 - into_bucket)) < limit:
            continue
        last = cache.get(_lockout_key(subject))
        remembered = last is not None and now - last[0] < settings.LOGIN_LOCKOUT_MEMORY_SECONDS
        strikes = last[1] + 1 if remembered else 1
        lockout = SignInLockout(until=now + _lockout_duration(strikes), strikes=strikes)
        # Kept past its end, so that the next lockout of this subject knows how many came before.
        cache.set(
            _lockout_key(subject), (lockout.until, lockout.strikes),
            timeout=math.ceil(lockout.until - now) + settings.LOGIN_LOCKOUT_MEMORY_SECONDS,
        )  # fmt: skip
        cache.delete_many([key, _failures_key(subject, bucket - 1)])  # the lockout starts a fresh count
        logger.warning("Sign-in lockout of %s for %d s (lockout %d in a row).", subject.split(":")[0],
                       math.ceil(lockout.until - now), strikes)  # fmt: skip
        if started is None or lockout.until > started.until:
            started = lockout
    return started
