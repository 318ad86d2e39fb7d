"""Demo traffic: 90 days of conversations per demo account, sent through the same validation and
ingestion services as the API, day by day with the clock set to that day (so the 35-day lateness limit
holds as it would have in real time; evaluated as they are stored), then each day one billing cycle
(`billing_cycle_run`, exactly what the minutely task does).

When Stripe is the local emulator, its clock follows the portal's simulated time (`EmulatorClock`): set
before the accounts are provisioned, moved with each simulated day (so subscriptions renew in the
emulator as they would in Stripe, and the cycle's period sync records the renewals), released at the
end. That is emulator-only and lives here, never in the services."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings

from accounts.models import Account
from billing_portal import clock

from .billing_cycle import billing_cycle_run
from .ingestion import MAX_BATCH, events_parse
from .services import conversation_events_ingest

logger = logging.getLogger(__name__)


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
    profiles' 90), with a billing cycle after each day; returns the number of events sent per account.
    The emulator's clock (if Stripe is the emulator) is moved with the simulated time.

    A day is posted at 01:00 the next day, except that when a billing period of a demo account ends during
    it, what happened before the end is posted, and a cycle run, five minutes after it: so the period's
    last hour is reported to Stripe's meter within its invoice's grace hour, as a live integration's would
    be, and the invoice Stripe finalizes bills all of the period's overage."""
    emulator_clock = EmulatorClock.for_settings()
    rng = random.Random(20261123)
    sent = {account.slug: 0 for account in accounts}
    start_day = (end - dt.timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    posted_until = start_day
    for offset in range(days):
        day = DAYS - days + offset  # the profile's day index
        day_start = start_day + dt.timedelta(days=offset)
        post_at = min(day_start + dt.timedelta(days=1, hours=1), end)
        waiting: dict[int, list[dict]] = {}
        for account in accounts:
            profile = PROFILES.get(account.slug)
            if profile is None or day < profile.first_day:
                continue
            events = waiting.setdefault(account.pk, [])
            for n in range(profile.conversations(day)):
                conversation_id = f"{account.slug[:3]}-{day:02d}-{n:04d}"
                begin = day_start + dt.timedelta(seconds=rng.randint(6 * 3600, 22 * 3600))
                for i, (event_type, at) in enumerate(_conversation(rng, conversation_id, begin)):
                    if at <= post_at + dt.timedelta(minutes=4):
                        events.append({"id": f"{conversation_id}-{i}", "conversation_id": conversation_id,
                                       "type": event_type, "occurred_at": at})  # fmt: skip
        for cut in _period_ends(accounts, posted_until, post_at - PERIOD_END_POSTING) + [None]:
            posting_at = post_at if cut is None else cut + PERIOD_END_POSTING
            with clock.frozen(posting_at):
                for account in accounts:
                    pending = waiting.get(account.pk, [])
                    due = [e for e in pending if cut is None or e["occurred_at"] < cut]
                    waiting[account.pk] = [e for e in pending if cut is not None and e["occurred_at"] >= cut]
                    sent[account.slug] += _ingest(account, due)
            emulator_clock.set(posting_at)  # the emulator's subscriptions renew as the days go by
            _billing_cycle(posting_at)  # what the minutely task does
        posted_until = post_at
        if progress:
            progress(offset + 1, days)
    return sent


PERIOD_END_POSTING = dt.timedelta(minutes=5)  # how long after a period's end its last events are posted


def _period_ends(accounts: list[Account], after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    """The ends of the accounts' billing periods in (after, until], in order."""
    from .services.funding import period_calendar

    ends = set()
    for account in accounts:
        calendar = period_calendar(Account.objects.get(pk=account.pk))  # fresh: renewals are recorded daily
        instant = after
        while True:
            period_end = calendar.containing(instant)[1]
            if period_end > until:
                break
            if period_end > after:
                ends.add(period_end)
            instant = period_end
    return sorted(ends)


def _ingest(account: Account, events: list[dict]) -> int:
    """The events through the API's validation and the ingestion service; returns how many were sent."""
    for i in range(0, len(events), MAX_BATCH):
        body = [{**e, "occurred_at": e["occurred_at"].isoformat()} for e in events[i : i + MAX_BATCH]]
        parsed, errors = events_parse({"events": body}, now=clock.now())
        if errors:
            raise ValueError(f"demo traffic is invalid: {errors[:3]}")
        # Inline: the seeding evaluates as it goes, and leaves no task per batch in the broker.
        conversation_events_ingest(account=account, events=parsed, evaluation="inline")
    return len(events)


def _billing_cycle(now: dt.datetime) -> None:
    """One cycle as of `now`; waits (briefly) for a cycle another process is running, as the day needs its own."""
    for _ in range(60):
        result = billing_cycle_run(now=now)
        if result.ran:
            for step in result.failed:
                logger.warning("Demo day %s: billing cycle step %s failed: %s", now.date(), step.name, step.error)
            return
        time.sleep(1)
    raise RuntimeError(f"Demo day {now.date()}: another billing cycle kept running for a minute.")


class EmulatorClock:
    """The local Stripe emulator's clock (`POST /_emulator/clock`), driven by the demo. With real Stripe
    (no emulator answering at STRIPE_API_BASE) every method does nothing."""

    def __init__(self, base_url: str | None):
        self.base_url = base_url.rstrip("/") if base_url else None

    @classmethod
    def for_settings(cls) -> EmulatorClock:
        base = settings.STRIPE_API_BASE
        if "api.stripe.com" in base:
            return cls(None)
        try:
            with urllib.request.urlopen(f"{base.rstrip('/')}/_emulator/health", timeout=5) as response:
                ok = json.load(response).get("ok") is True
        except (urllib.error.URLError, OSError, ValueError):
            ok = False
        return cls(base if ok else None)

    @property
    def active(self) -> bool:
        return self.base_url is not None

    def _post(self, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.base_url}/_emulator/clock", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def set(self, instant: dt.datetime) -> None:
        """Freeze the emulator at `instant` (moving it forward rolls subscription periods over)."""
        if self.active:
            self._post({"frozen_time": int(instant.timestamp())})

    def release(self) -> None:
        """Back to real time."""
        if self.active:
            self._post({"frozen_time": None})

    @contextlib.contextmanager
    def released_after(self, now: dt.datetime, *, keep: bool) -> Iterator[EmulatorClock]:
        """Around a seeding: afterwards, back to real time; or, when the portal runs at a chosen instant
        (`keep`, e.g. `seed_demo --now`), frozen at `now` so that the two clocks still agree."""
        try:
            yield self
        finally:
            if keep or settings.BILLING_CLOCK_NOW:
                self.set(now)
            else:
                self.release()


@dataclass(frozen=True)
class InvoiceCheck:
    """One finalized period invoice of an account: the overage Stripe billed, and the portal's figure."""

    account: str
    invoice: str
    period_start: dt.datetime
    period_end: dt.datetime
    stripe_minor: int
    portal_minor: int

    @property
    def agrees(self) -> bool:
        return self.stripe_minor == self.portal_minor


def invoices_against_portal(*, account: Account) -> list[InvoiceCheck]:
    """Each finalized `subscription_cycle` invoice of the account in Stripe: its metered (overage) lines
    beside the portal's overage money for the same billing period (the sum of its resolutions' shares).
    The demo prints these, so that anyone can see "Stripe" billed what the portal computed."""
    from django.db.models import Sum
    from djstripe.models import Customer

    from accounts.models import PricePlanVersion
    from billing_portal import stripe_client

    from .models import Resolution
    from .services.funding import period_of

    customer_id = Customer.objects.filter(subscriber_id=account.pk).values_list("id", flat=True).first()
    if customer_id is None:
        return []
    metered = set(PricePlanVersion.objects.exclude(stripe_price_id="").values_list("stripe_price_id", flat=True))
    invoices = stripe_client.call(
        "list invoices",
        lambda c, o: c.v1.invoices.list(params={"customer": customer_id, "limit": 100}),
        idempotency_key=None,
    )
    checks = []
    for invoice in invoices.auto_paging_iter():
        if invoice.billing_reason != "subscription_cycle" or invoice.status in ("draft", "void"):
            continue
        lines = [
            line for line in invoice.lines.auto_paging_iter()
            if line.pricing and line.pricing.price_details and line.pricing.price_details.price in metered
        ]  # fmt: skip
        if not lines:
            continue
        start = dt.datetime.fromtimestamp(lines[0].period.start, dt.UTC)
        period = period_of(account, start)
        portal = Resolution.objects.filter(
            account=account, funding=Resolution.Funding.OVERAGE, voided_at=None,
            resolved_at__gte=period[0], resolved_at__lt=period[1],
        ).aggregate(n=Sum("amount_minor"))["n"] or 0  # fmt: skip
        ends = dt.datetime.fromtimestamp(lines[0].period.end, dt.UTC)
        checks.append(InvoiceCheck(account.slug, invoice.id, start, ends, sum(line.amount for line in lines), portal))
    return sorted(checks, key=lambda c: c.period_start)
