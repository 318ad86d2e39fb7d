"""One account provisioned in the Stripe emulator that resolves conversations through the ingestion API, on
the controllable clock: the world the billing tests across a renewal share (plan migrations, invoice preview,
staff pages)."""

from __future__ import annotations

import datetime as dt

from billing_portal import clock
from resolutions.services import resolutions_fund

MINUTE = dt.timedelta(minutes=1)


def ts(instant: dt.datetime) -> int:
    return int(instant.timestamp())


class EmulatorWorld:
    def __init__(self, provisioned, emulator, api_client):
        self.provisioned = provisioned
        self.account = provisioned.account
        self.customer = provisioned.stripe_customer_id
        self.subscription = provisioned.stripe_subscription_id
        self.raw_key = provisioned.raw_api_key
        self.emulator, self.api = emulator, api_client
        self.counter = 0

    def at(self, instant: dt.datetime):
        """The emulator's clock and ours at `instant` (a context manager for ours)."""
        self.emulator.set_time(ts(instant))
        return clock.frozen(instant)

    def resolve(self, *instants: dt.datetime, posted_at: dt.datetime | None = None, prefix: str = "c") -> list[str]:
        """Confirmed resolutions at these instants, posted and funded at `posted_at` (default: the latest of
        them); returns their conversation ids."""
        events, ids = [], []
        for instant in instants:
            self.counter += 1
            n = self.counter
            ids.append(f"{prefix}{n}")
            for kind, when in (("ai_answer", instant - MINUTE), ("customer_confirmed", instant)):
                events.append({"id": f"{kind}-{n}", "conversation_id": f"{prefix}{n}", "type": kind,
                               "occurred_at": when.isoformat()})  # fmt: skip
        when = posted_at or max(instants)
        self.api.credentials(HTTP_AUTHORIZATION=f"Bearer {self.raw_key}")
        with self.at(when):
            response = self.api.post("/api/v1/conversation-events", {"events": events}, format="json")
            assert response.status_code == 202, response.content
            resolutions_fund(now=when)
        self.api.credentials()
        return ids
