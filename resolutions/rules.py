"""The resolution rules of DESIGN §3.1, as one pure function of a conversation's events.

The outcome depends only on the set of events (by `occurred_at`, never by arrival) and on "now", so any
permutation or duplication of the same events gives the same billing outcome.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

AI_ANSWER, CUSTOMER_CONFIRMED, CUSTOMER_REPLY, HANDOFF = "ai_answer", "customer_confirmed", "customer_reply", "handoff"
# Events at the same instant: the one least favourable to billing comes first (a handoff beats a confirmation).
_SAME_INSTANT_ORDER = {AI_ANSWER: 0, CUSTOMER_REPLY: 1, HANDOFF: 2, CUSTOMER_CONFIRMED: 3}

OPEN, AWAITING, RESOLVED, ESCALATED = "open", "awaiting", "resolved", "escalated"
CONFIRMED, ASSUMED = "confirmed", "assumed"


@dataclass(frozen=True, order=True)
class EventFact:
    occurred_at: dt.datetime
    type: str
    event_id: str


@dataclass(frozen=True)
class Outcome:
    status: str  # open | awaiting | resolved | escalated
    kind: str | None = None  # confirmed | assumed, when resolved
    resolved_at: dt.datetime | None = None
    window_ends_at: dt.datetime | None = None  # when awaiting: the assumed resolution falls due then
    escalated_at: dt.datetime | None = None  # when escalated: the handoff that escalated it


def conversation_evaluate(events: Iterable[EventFact], *, window: dt.timedelta, now: dt.datetime) -> Outcome:
    """Walk the events in `occurred_at` order; the first resolution is the only one, ever.

    - `ai_answer` opens (or extends) the inactivity window: silence until `last answer + window` is an
      assumed resolution at that instant;
    - `customer_confirmed` after an `ai_answer` is a confirmed resolution at that instant;
    - `customer_reply` closes the window: only the next `ai_answer` opens a new one, and only after it
      does a confirmation count again;
    - `handoff` before any resolution escalates the conversation: never billable;
    - events after the resolution (or the escalation) change nothing.
    """
    window_end: dt.datetime | None = None
    answered = False
    ordered = sorted(set(events), key=lambda e: (e.occurred_at, _SAME_INSTANT_ORDER[e.type], e.event_id))
    for event in ordered:
        if window_end is not None and event.occurred_at >= window_end:
            return Outcome(RESOLVED, ASSUMED, window_end)
        if event.type == AI_ANSWER:
            window_end = event.occurred_at + window
            answered = True
        elif event.type == CUSTOMER_REPLY:
            window_end = None
            answered = False
        elif event.type == HANDOFF:
            return Outcome(ESCALATED, escalated_at=event.occurred_at)
        elif event.type == CUSTOMER_CONFIRMED and answered:
            return Outcome(RESOLVED, CONFIRMED, event.occurred_at)
    if window_end is None:
        return Outcome(OPEN)
    if now >= window_end:
        return Outcome(RESOLVED, ASSUMED, window_end)
    return Outcome(AWAITING, window_ends_at=window_end)
