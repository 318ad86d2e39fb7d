"""Demo traffic: 90 days of conversations per demo account, sent through the same validation and
ingestion services as the API, day by day with the clock set to that day (so the 35-day lateness limit
holds as it would have in real time; evaluated as they are stored), then each day what the periodic task
does: finalise elapsed windows, draw down credits, expire packs."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from accounts.models import Account
from billing_portal import clock
from credits.services import credit_packs_expire

from .ingestion import MAX_BATCH, events_parse
from .services import (
    conversation_events_ingest,
    resolution_windows_finalise,
    resolutions_fund,
)


@dataclass(frozen=True)
class TrafficProfile:
    """Conversations per day as a function of the day's index (0 = 90 days ago)."""

    conversations: Callable[[int], int]
    first_day: int = 0


def _steady(day: int) -> int:
    return 40 + (day * 7919) % 12  # about the same every day: well inside its annual pack


def _seasonal(day: int) -> int:
    return 380 + (day * 31) % 60 if 60 <= day <= 80 else 35 + (day * 13) % 10  # a campaign spike


def _new(day: int) -> int:
    return 8 + day % 9


PROFILES = {
    "steady-retail": TrafficProfile(_steady),
    "seasonal-travel": TrafficProfile(_seasonal),
    "newco-labs": TrafficProfile(_new, first_day=76),
}
DAYS = 90


def _conversation(rng: random.Random, conversation_id: str, start: dt.datetime) -> Iterator[tuple[str, dt.datetime]]:
    """The events of one conversation: answered, then confirmed, silent, replied to, or handed off."""
    t = start
    yield "ai_answer", t
    roll = rng.random()
    if roll < 0.45:
        yield "customer_confirmed", t + dt.timedelta(minutes=rng.randint(1, 30))
    elif roll < 0.65:
        t += dt.timedelta(minutes=rng.randint(1, 20))
        yield "customer_reply", t
        t += dt.timedelta(minutes=rng.randint(1, 5))
        yield "ai_answer", t
        if rng.random() < 0.5:
            yield "customer_confirmed", t + dt.timedelta(minutes=rng.randint(1, 30))
    elif roll < 0.78:
        yield "handoff", t + dt.timedelta(minutes=rng.randint(1, 15))
    # else: silence, an assumed resolution once the inactivity window has elapsed


def demo_traffic_ingest(
    *, accounts: list[Account], end: dt.datetime, days: int = DAYS, progress: Callable[[int, int], None] | None = None
) -> dict[str, int]:
    """Send `days` days of traffic ending at `end` for the given demo accounts (the last `days` of the
    profiles' 90); returns the number of events sent per account."""
    rng = random.Random(20261123)
    sent = {account.slug: 0 for account in accounts}
    start_day = (end - dt.timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    for offset in range(days):
        day = DAYS - days + offset  # the profile's day index
        day_start = start_day + dt.timedelta(days=offset)
        post_at = min(day_start + dt.timedelta(days=1, hours=1), end)
        with clock.frozen(post_at):
            for account in accounts:
                profile = PROFILES.get(account.slug)
                if profile is None or day < profile.first_day:
                    continue
                events = []
                for n in range(profile.conversations(day)):
                    conversation_id = f"{account.slug[:3]}-{day:02d}-{n:04d}"
                    begin = day_start + dt.timedelta(seconds=rng.randint(6 * 3600, 22 * 3600))
                    for i, (event_type, at) in enumerate(_conversation(rng, conversation_id, begin)):
                        if at <= post_at + dt.timedelta(minutes=4):
                            events.append({
                                "id": f"{conversation_id}-{i}", "conversation_id": conversation_id,
                                "type": event_type, "occurred_at": at.isoformat(),
                            })  # fmt: skip
                for i in range(0, len(events), MAX_BATCH):
                    parsed, errors = events_parse({"events": events[i : i + MAX_BATCH]}, now=clock.now())
                    if errors:
                        raise ValueError(f"demo traffic is invalid: {errors[:3]}")
                    # Inline: the seeding evaluates as it goes, and leaves no task per batch in the broker.
                    conversation_events_ingest(account=account, events=parsed, evaluation="inline")
                sent[account.slug] += len(events)
            resolution_windows_finalise(now=post_at)  # what the periodic task does, day by day
            resolutions_fund(now=post_at)
            credit_packs_expire(now=post_at)
        if progress:
            progress(offset + 1, days)
    return sent
