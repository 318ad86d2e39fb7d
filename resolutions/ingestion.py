"""Validation of posted conversation events: fast, hand-written (a DRF serializer per event costs ~50x
more), and complete: every problem of a batch is reported with its index and field."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from billing_portal.clock import parse_instant
from billing_portal.parsers import JsonValueRefused, json_path

from .models import MAX_ID_LENGTH, EventType

MAX_BATCH = 1000
MAX_AGE = dt.timedelta(days=35)  # Stripe's limit for meter event timestamps
MAX_AHEAD = dt.timedelta(minutes=5)
FIELDS = ("id", "conversation_id", "type", "occurred_at")
TYPES = frozenset(EventType.values)
INSTANT_REQUIRED = "Required: an ISO 8601 date-time with a timezone, e.g. 2026-11-23T09:30:00Z."


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    index: int
    event_id: str
    conversation_id: str
    type: str
    occurred_at: dt.datetime

    @property
    def payload(self) -> tuple:
        """What must match for a repeated id to count as a duplicate (and not a conflict)."""
        return (self.conversation_id, self.type, self.occurred_at)


def _error(index, field, message) -> dict:
    return {"index": index, "field": field, "message": message}


def refused_value_error(refused: JsonValueRefused) -> dict:
    """The JSON parser's refusal of a string (a NUL, a lone surrogate) as an error of events_parse's kind:
    `events[3].id` of a batch is index 3, field "id"; a single event is index 0, as events_parse counts."""
    path, body = refused.path, refused.data
    if isinstance(body, dict) and "events" in body:
        if len(path) >= 2 and path[0] == "events" and isinstance(path[1], int):
            index, rest = path[1], path[2:]
        else:
            index, rest = None, path
    else:
        index, rest = (0, path) if isinstance(body, dict) else (None, path)
    return _error(index, json_path(rest) or None, refused.message)


def events_parse(body, *, now: dt.datetime) -> tuple[list[IncomingEvent], list[dict]]:
    """Turn a request body (one event, or {"events": [...]}) into events, or into errors. Any error
    rejects the whole batch, so the caller stores nothing when errors is not empty."""
    if isinstance(body, dict) and "events" in body:
        extra = set(body) - {"events"}
        if extra:
            return [], [_error(None, sorted(extra)[0], 'Unknown field: a batch is {"events": [...]} only.')]
        raw_events = body["events"]
        if not isinstance(raw_events, list):
            return [], [_error(None, "events", "events must be a list of events.")]
        if not raw_events:
            return [], [_error(None, "events", "events is empty: send 1 to 1,000 events.")]
        if len(raw_events) > MAX_BATCH:
            return [], [_error(None, "events", f"{len(raw_events):,} events: at most {MAX_BATCH:,} per request.")]
    elif isinstance(body, dict):
        raw_events = [body]
    else:
        return [], [_error(None, None, 'The body must be a JSON object: one event or {"events": [...]}.')]

    oldest, newest = now - MAX_AGE, now + MAX_AHEAD
    events: list[IncomingEvent] = []
    errors: list[dict] = []
    for index, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            errors.append(_error(index, None, "Each event must be a JSON object."))
            continue
        bad = len(errors)
        for field in sorted(set(raw) - set(FIELDS)):
            errors.append(_error(index, field, "Unknown field."))
        for field in ("id", "conversation_id"):
            value = raw.get(field)
            if not isinstance(value, str) or not value.strip():
                errors.append(_error(index, field, "Required: a non-empty string."))
            elif len(value) > MAX_ID_LENGTH:
                errors.append(_error(index, field, f"At most {MAX_ID_LENGTH} characters ({len(value)} given)."))
        event_type = raw.get("type")
        if not isinstance(event_type, str) or event_type not in TYPES:
            errors.append(_error(index, "type", f"Must be one of {', '.join(sorted(TYPES))}."))
        raw_instant = raw.get("occurred_at")
        try:
            occurred_at = parse_instant(raw_instant)
        except ValueError as exc:  # also an offset that overflows, or an instant out of range
            errors.append(_error(index, "occurred_at", INSTANT_REQUIRED if raw_instant is None else str(exc)))
            continue
        if occurred_at < oldest:
            errors.append(_error(index, "occurred_at", "More than 35 days old: too late to bill (Stripe's limit)."))
        elif occurred_at > newest:
            errors.append(_error(index, "occurred_at", "More than 5 minutes in the future: check the sender's clock."))
        if len(errors) == bad:
            events.append(IncomingEvent(index, raw["id"], raw["conversation_id"], event_type, occurred_at))
    return (events, []) if not errors else ([], errors)
