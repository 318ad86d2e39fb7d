"""A seeded, deterministic fault simulation of the billing pipeline (issue 13; in the spirit of TigerBeetle's
simulator). From one seed, a `random.Random` decides every step on the frozen clock (ours and the Stripe
emulator's, moving forward across a billing period's end): ingest batches (duplicates, same id with another
payload, late and out-of-order events, handoffs, refused events), billing cycles, funding, staff voids,
promotional grants, credit purchases and their (late, repeated) paid webhooks, seat conversions, expiries,
repeated Celery deliveries; Stripe faults (429, 500, 500 after record, hang past the client timeout) armed
before a step, and crashes between a Stripe answer and the recording of its outcome (a SimulatedCrash raised
after the k-th Stripe write of the step, or just before it is sent, so a later step must finish the work).

After every step the invariants hold (`check_step`): each pack's ledger sum = its remaining >= 0; every
resolution funded at most once and as its ledger says; Stripe's meter holds only events the portal sent;
every accepted event stored once. At quiescence (faults off, cycles until nothing is pending, `settle`):
every billable resolution funded exactly once, Stripe's meter total = the portal's reported total =
non-voided overage (less what was flagged as a credit-note adjustment) per account and period,
reconciliation finds no difference, and each conversation ends as an independent model of DESIGN §3.1 says.

Nothing in a decision comes from the wall clock or an unseeded RNG: Stripe retries use zero backoff and
tiny Retry-After values (stripe_client's jitter multiplies a zero delay), a hang is waited out before the
next attempt (so the emulator has recorded it, as it would have by then), and the log and final state name
accounts by their index, never by ids a database sequence or uuid4 gives. A broken invariant raises
InvariantBroken with the seed, the step number and the step log: `FAULT_SEEDS=N` (or
`python3 dev.py faults --seeds N`) replays it exactly.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from io import StringIO

from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db.models import Count, Q, Sum

from accounts.models import BillingPeriod, CreditPackOffer, PricePlan
from accounts.services.provisioning import account_provision
from billing_portal import clock, stripe_client
from billing_portal.stripe_client import StripeFailure
from credits.conversions import seat_conversion_confirm, seat_conversion_preview
from credits.models import CreditLedgerEntry, CreditPack, SeatConversion
from credits.purchases import OPEN as PURCHASE_OPEN
from credits.purchases import credit_pack_invoice_event_apply, credit_pack_purchase
from credits.services import credit_pack_grant, credit_packs_expire
from resolutions.billing_cycle import billing_cycle_run
from resolutions.models import Conversation as ConversationState
from resolutions.models import ConversationEvent, DailyUsage, MeterReport, MeterWindow, PendingEvaluation, Resolution
from resolutions.selectors import METER_OPEN_STATES
from resolutions.services import resolution_void, resolutions_fund
from resolutions.services.metering import meter_accounts_due
from resolutions.services.reconciliation import meter_reconcile
from resolutions.tasks import billing_cycle_task, conversations_evaluate_task, meter_report_task

START = dt.datetime(2026, 11, 2, 9, 30, 15, tzinfo=dt.UTC)  # the subscriptions start here, mid-minute
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
WINDOW = dt.timedelta(hours=24)  # fin-standard's inactivity window
HANG_SECONDS = 2.5  # a hang outlasts the client's timeout (2 s) by a margin a loaded machine keeps
SIM_SETTINGS = {
    "STRIPE_MAX_RETRIES": 2,
    "STRIPE_BACKOFF_BASE_SECONDS": 0.0,  # no sleep, and the jitter multiplies zero: deterministic
    "STRIPE_TIMEOUT_SECONDS": 2.0,
    "STRIPE_RETRY_AFTER_CAP_SECONDS": 0.5,  # a longer Retry-After ends the call at once (StripeUnavailable)
    "EVENT_EVALUATION": "deferred",  # evaluation by the (redelivered) task or the cycle's evaluate step
    "METER_REPORTING": "inline",
    "METER_REPORT_THREADS": 1,
}
FAULT_PATHS = ["/v1/", "/v1/billing/meter_events", "/v1/invoices", "/v1/subscription_items", "/v1/subscriptions"]
FAULT_MODES = ["429", "500", "500_after_record", "hang"]


_RANDOM_IDS = re.compile(r"\b(req|in|ii|cus|sub|si|price|prod|evt|mtr|pi|ch)_[A-Za-z0-9]+")  # Stripe's own ids
_UUIDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_REAL_CALL = stripe_client.call  # the unpatched call, whatever a test patched since


class SimulatedCrash(BaseException):
    """The process dies right after Stripe answered, before the caller recorded the answer. A BaseException,
    so that no `except Exception` on the way (the cycle's per-step isolation) can swallow it."""


class InvariantBroken(AssertionError):
    pass


@dataclass
class Conversation:
    account: int  # index into Simulation.accounts
    conversation_id: str
    pattern: str
    events: list[dict]
    unsent: list[dict] = field(default_factory=list)  # parts that arrive late, in a later batch
    voided_by_staff: bool = False


def expected_outcome(events: list[dict], now: dt.datetime, window: dt.timedelta = WINDOW):
    """An independent model of DESIGN §3.1 for the simulator's patterns: (kind, resolved_at) or None."""
    last_ai = None
    for e in sorted(events, key=lambda e: (e["occurred_at"], e["id"])):
        at = dt.datetime.fromisoformat(e["occurred_at"])
        if last_ai is not None and last_ai + window <= at:
            return ("assumed", last_ai + window)
        if e["type"] == "ai_answer":
            last_ai = at
        elif e["type"] == "customer_confirmed" and last_ai is not None:
            return ("confirmed", at)
        elif e["type"] == "customer_reply":
            last_ai = None
        elif e["type"] == "handoff":
            return None
    if last_ai is not None and last_ai + window <= now:
        return ("assumed", last_ai + window)
    return None


class Simulation:
    def __init__(self, seed: int, emulator, api_client, staff, *, steps: int = 40, accounts: int = 2):
        self.seed, self.emulator, self.api, self.staff = seed, emulator, api_client, staff
        self.rng = random.Random(seed)
        self.steps, self.n_accounts = steps, accounts
        self.now = START
        self.log: list[str] = []
        self.step_no = 0
        self.accounts: list = []  # ProvisionedAccount
        self.conversations: list[Conversation] = []
        self.accepted_ids: list[set[str]] = []  # per account: every event id a 202 batch carried
        self.sent_batches: list[tuple[int, list[dict]]] = []  # accepted batches, to send again (duplicates)
        self.grant_keys: list[tuple[int, str, int]] = []
        self.purchase_keys: list[tuple[int, str]] = []
        self.counter = 0
        self.crash_after: int | None = None  # crash at this Stripe write of the current step
        self.crash_when = "after"  # after Stripe answered (the usual), or before it is asked
        self.writes = 0
        self.hang_armed = False
        self.offer = None

    # --- the world --------------------------------------------------------------------------------------
    def at(self, instant: dt.datetime):
        self.emulator.set_time(int(instant.timestamp()))
        return clock.frozen(instant)

    def setup(self) -> None:
        plan = PricePlan.objects.get(slug="fin-standard")
        version = plan.versions.get(number=1)
        # A small pack valid for a week, so that purchases, drawdown to zero and expiry all happen in a run.
        self.offer = CreditPackOffer.objects.create(
            version=version, name="Simulation 6 resolutions", resolutions=6, validity_days=7,
            unit_amount_decimal=Decimal("90"),
        )  # fmt: skip
        with self.at(START):
            call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
            for k in range(self.n_accounts):
                self.accounts.append(
                    account_provision(name=f"Sim Co {k}", plan=plan, seats=4, actor="simulation", slug=f"sim-{k}")
                )
                self.accepted_ids.append(set())
        self.offer.refresh_from_db()

    def install(self, monkeypatch) -> None:
        """Route every Stripe call through the crash point and the hang wait."""
        real_call = _REAL_CALL

        def call(operation, request, *, idempotency_key):
            def attempt(c, o):
                try:
                    return request(c, o)
                finally:
                    if self.hang_armed:
                        self._emulator_idle()

            crash = None
            if idempotency_key is not None and self.crash_after is not None:
                self.writes += 1
                if self.writes >= self.crash_after:
                    crash, self.crash_after = self.crash_when, None
            if crash == "before":  # what the caller recorded before the call (e.g. a row `sent`) stays
                raise SimulatedCrash(f"crash before Stripe was asked to {operation}")
            result = real_call(operation, attempt, idempotency_key=idempotency_key)
            if crash == "after":
                raise SimulatedCrash(f"crash after Stripe answered {operation}")
            return result

        monkeypatch.setattr(stripe_client, "call", call)

    def _emulator_idle(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while any(r["status"] is None for r in self.emulator.requests.list()):
            if time.monotonic() > deadline:
                raise RuntimeError("the emulator is still answering a hung request")
            time.sleep(0.02)

    # --- running ----------------------------------------------------------------------------------------
    def run(self) -> None:
        self.setup()
        self.now = START + HOUR
        kinds = [
            ("ingest", 30), ("cycle", 16), ("fund", 5), ("celery", 8), ("void", 6), ("grant", 6),
            ("purchase", 5), ("webhook", 5), ("conversion", 3), ("expire", 3), ("bad_batch", 4),
        ]  # fmt: skip
        names, weights = zip(*kinds, strict=True)
        for _ in range(self.steps):
            self.step_no += 1
            self._advance()
            self._deliver_aging_parts()
            kind = self.rng.choices(names, weights)[0]
            self._step(kind)
        self.step_no += 1
        self.settle()

    def _advance(self) -> None:
        roll = self.rng.random()
        if roll < 0.15:
            gap = dt.timedelta(0)
        elif roll < 0.45:
            gap = self.rng.randint(1, 120) * MINUTE + dt.timedelta(seconds=self.rng.randint(0, 59))
        elif roll < 0.8:
            gap = self.rng.randint(2, 24) * HOUR
        else:
            gap = self.rng.randint(24, 72) * HOUR
        self.now += gap

    def _step(self, kind: str) -> None:
        stripe_step = kind in ("cycle", "celery", "purchase", "conversion", "webhook")
        armed = []
        if stripe_step and self.rng.random() < 0.4:
            armed.append(self._arm_fault())
        if stripe_step and self.rng.random() < 0.2:
            self.crash_after = self.rng.randint(1, 4)
            self.crash_when = self.rng.choice(["after", "after", "before"])
            self.writes = 0
            armed.append(f"crash {self.crash_when} write {self.crash_after}")
        unfunded = None
        if kind in ("cycle", "fund"):
            unfunded = set(
                Resolution.objects.filter(funding="unfunded", voided_at__isnull=True).values_list("pk", flat=True)
            )
        with self.at(self.now):
            try:
                outcome = getattr(self, f"_do_{kind}")()
            except SimulatedCrash as crash:
                outcome = str(crash)
            finally:
                if self.hang_armed:  # a hung request records when it wakes: before anything looks
                    self._emulator_idle()
                self.emulator.faults.clear()
                self.crash_after, self.hang_armed = None, False
        self._record(kind, armed, outcome)
        self.check_step()
        if unfunded:
            self.inv_no_overage_beside_credit(unfunded)

    def _record(self, kind: str, armed: list[str], outcome: str) -> None:
        outcome = _RANDOM_IDS.sub(lambda m: f"{m.group(1)}_*", _UUIDS.sub("<uuid>", outcome))  # not the seed's
        faults = f" [{'; '.join(armed)}]" if armed else ""
        self.log.append(f"#{self.step_no} {self.now.isoformat()} {kind}{faults}: {outcome}")

    def _arm_fault(self) -> str:
        mode = self.rng.choice(FAULT_MODES)
        path = self.rng.choice(FAULT_PATHS)
        fault = {"path_prefix": path, "mode": mode, "count": 1 if mode == "hang" else self.rng.randint(1, 3)}
        if mode == "429":
            fault["retry_after"] = self.rng.choice([None, 0, 30])
        if mode == "hang":
            fault["hang_seconds"] = HANG_SECONDS
            self.hang_armed = True
        self.emulator.add_fault(**fault)
        return f"{mode} x{fault['count']} on {path}" + (f" retry_after={fault['retry_after']}" if mode == "429" else "")

    # --- steps ------------------------------------------------------------------------------------------
    def _post(self, k: int, events: list[dict]):
        self.api.credentials(HTTP_AUTHORIZATION=f"Bearer {self.accounts[k].raw_api_key}")
        response = self.api.post("/api/v1/conversation-events", {"events": events}, format="json")
        self.api.credentials()
        return response

    def _new_conversation(self, k: int) -> Conversation:
        self.counter += 1
        cid = f"s{self.seed}-c{self.counter}"
        pattern = self.rng.choices(
            ["confirmed", "assumed", "escalated", "after", "reply"], [40, 20, 15, 15, 10]
        )[0]  # fmt: skip
        late = self.rng.random() < 0.25
        offset = self.rng.randint(2, 20 * 24 * 60) if late else self.rng.randint(12, 180)
        t = max(self.now - offset * MINUTE, START + 15 * MINUTE)
        spec = {
            "confirmed": [("ai_answer", -2), ("customer_confirmed", 0)],
            "assumed": [("ai_answer", 0)],
            "escalated": [("ai_answer", -3), ("handoff", -2), ("customer_confirmed", 0)],
            "after": [("ai_answer", -2), ("customer_confirmed", 0), ("handoff", 1)],
            "reply": [("ai_answer", -10), ("customer_reply", -8), ("ai_answer", -5), ("customer_confirmed", 0)],
        }[pattern]
        events = [
            {"id": f"{cid}-e{i}", "conversation_id": cid, "type": kind, "occurred_at": (t + m * MINUTE).isoformat()}
            for i, (kind, m) in enumerate(spec)
        ]
        conversation = Conversation(k, cid, pattern, events)
        if len(events) > 1 and self.rng.random() < 0.35:  # some parts arrive later (out of order)
            held = self.rng.sample(events, self.rng.randint(1, len(events) - 1))
            conversation.unsent = held
        self.conversations.append(conversation)
        return conversation

    def _young(self, event: dict, days: int = 34) -> bool:
        return dt.datetime.fromisoformat(event["occurred_at"]) >= self.now - days * DAY

    def _deliver_aging_parts(self) -> None:
        """Late parts are sent before they pass 28 days (steps move the clock at most 3 days): a client that
        holds an event past Stripe's 35 days has it refused, which is not what the simulation tests."""
        for k in range(self.n_accounts):
            batch = []
            for c in self.conversations:
                if c.account == k and c.unsent and not all(self._young(e, days=28) for e in c.unsent):
                    batch += c.unsent
                    c.unsent = []
            if batch:
                with self.at(self.now):
                    response = self._post(k, batch)
                self._check(response.status_code == 202, f"late parts refused: {response.content}")
                self.accepted_ids[k].update(e["id"] for e in batch)
                self.sent_batches.append((k, batch))
                self._record("late_parts", [], f"account {k}: {len(batch)} events, {response.json()['accepted']} new")

    def _do_ingest(self) -> str:
        k = self.rng.randrange(self.n_accounts)
        batch: list[dict] = []
        for _ in range(self.rng.randint(1, 5)):
            c = self._new_conversation(k)
            batch += [e for e in c.events if e not in c.unsent]
        for c in self.conversations:  # late parts of earlier conversations (forced before they get too old)
            if c.account == k and c.unsent:
                oldest = min(dt.datetime.fromisoformat(e["occurred_at"]) for e in c.unsent)
                if self.rng.random() < 0.5 or oldest < self.now - 20 * DAY:
                    batch += c.unsent
                    c.unsent = []
        accepted = self.accepted_ids[k]
        new_ids = {e["id"] for e in batch} - accepted
        if self.sent_batches and self.rng.random() < 0.3:  # a retried earlier batch's events, mixed in
            k_old, old = self.rng.choice(self.sent_batches)
            if k_old == k:  # those still young enough to be taken (a 36-day-old one is refused, rightly)
                batch += [e for e in old[: self.rng.randint(1, len(old))] if self._young(e)]
        if self.rng.random() < 0.2:
            batch.append(dict(batch[0]))  # the same event twice in one batch
        self.rng.shuffle(batch)
        response = self._post(k, batch)
        if response.status_code != 202:
            raise InvariantBroken(
                self._failure(f"ingest refused a valid batch: {response.status_code} {response.content}")
            )
        body = response.json()
        if body["accepted"] != len(new_ids):
            raise InvariantBroken(self._failure(f"accepted {body['accepted']} of {len(new_ids)} new events: {body}"))
        accepted.update(e["id"] for e in batch)
        self.sent_batches.append((k, batch))
        return f"account {k}: {len(batch)} events, {body['accepted']} new, {body['duplicates']} duplicates"

    def _do_bad_batch(self) -> str:
        """Refused batches change nothing: the same id with another payload (409), an event too old or in
        the future (400). The stored-events invariant checks that nothing was kept."""
        k = self.rng.randrange(self.n_accounts)
        fresh = self._new_conversation(k)
        self.conversations.remove(fresh)
        batch = [dict(e) for e in fresh.events]
        choice = self.rng.choice(["conflict", "too_old", "future"])
        young = [(k_old, old) for k_old, old in self.sent_batches if self._young(old[0], days=30)]
        if choice == "conflict" and young:
            k, old = self.rng.choice(young)
            changed = dict(old[0])
            changed["occurred_at"] = (dt.datetime.fromisoformat(changed["occurred_at"]) - MINUTE).isoformat()
            batch = [dict(e) for e in fresh.events if fresh.account == k] + [changed]
            expected = 409
        elif choice == "future":
            batch[0]["occurred_at"] = (self.now + 10 * MINUTE).isoformat()
            expected = 400
        else:
            batch[0]["occurred_at"] = (self.now - 36 * DAY).isoformat()
            expected = 400
        response = self._post(k, batch)
        if response.status_code != expected or "errors" not in response.json():
            raise InvariantBroken(self._failure(f"{choice}: expected {expected}, got {response.status_code}"))
        return f"account {k}: {choice} refused with {response.status_code}"

    def _do_cycle(self) -> str:
        result = billing_cycle_run(now=self.now)
        return self._cycle_summary(result)

    @staticmethod
    def _cycle_summary(result) -> str:
        if not result.ran:
            return result.skipped
        counts = {s.name: s.counts for s in result.steps}
        failed = [s.name for s in result.steps if s.status != "ok"]
        f, r = counts.get("funding", {}), counts.get("report", {})
        return (
            f"funded {f.get('credited', '-')}/{f.get('overage', '-')}, meter confirmed "
            f"{r.get('meter_events_confirmed', '-')}, expired {counts.get('expiry', {}).get('packs_expired', '-')}"
            + (f", failed {','.join(failed)}" if failed else "")
        )

    def _do_fund(self) -> str:
        r = resolutions_fund(now=self.now)
        return f"funded {r.credited} from credit, {r.overage} overage"

    def _do_celery(self) -> str:
        """A task delivered twice (acks_late: a worker lost before its ack gets it redelivered)."""
        task = self.rng.choice(["evaluate", "report", "cycle"])
        k = self.rng.randrange(self.n_accounts)
        account_id = self.accounts[k].account.pk
        outcomes = []
        for _ in range(2):
            try:
                if task == "evaluate":
                    outcomes.append(f"{conversations_evaluate_task(account_id)} created")
                elif task == "report":
                    out = meter_report_task(account_id)
                    outcomes.append(f"{out['confirmed']} confirmed")
                else:
                    billing_cycle_task()
                    outcomes.append("ran")
            except Exception as exc:  # noqa: BLE001 - a task failing (Stripe down) is retried by Celery
                outcomes.append(exc.__class__.__name__)
        return f"{task} task for account {k} twice: {', '.join(outcomes)}"

    def _do_void(self) -> str:
        candidates = list(
            Resolution.objects.filter(voided_at__isnull=True, account__in=[a.account for a in self.accounts])
            .order_by("resolved_at", "conversation_id")
            .values_list("pk", "conversation_id", "funding")
        )
        if not candidates:
            return "nothing to void"
        pk, cid, funding = self.rng.choice(candidates)
        resolution_void(resolution=Resolution.objects.get(pk=pk), actor=self.staff, reason="simulated dispute")
        next(c for c in self.conversations if c.conversation_id == cid).voided_by_staff = True
        return f"voided {cid} ({funding})"

    def _do_grant(self) -> str:
        k = self.rng.randrange(self.n_accounts)
        if self.grant_keys and self.rng.random() < 0.25:  # a client retrying a grant with its key
            k, key, quantity = self.rng.choice(self.grant_keys)
        else:
            key, quantity = f"sim-grant-{self.seed}-{len(self.grant_keys)}", self.rng.randint(1, 6)
            self.grant_keys.append((k, key, quantity))
        starts = max(self.now - self.rng.randint(0, 5 * 24) * HOUR, START)
        expires = self.now + self.rng.randint(1, 8 * 24) * HOUR
        before = CreditPack.objects.count()
        credit_pack_grant(
            account=self.accounts[k].account, quantity=quantity, source=CreditPack.Source.PROMOTIONAL,
            actor="simulation", starts_at=starts, expires_at=expires, reason="simulation", idempotency_key=key,
        )  # fmt: skip
        return f"account {k}: {quantity} promotional ({key}), {CreditPack.objects.count() - before} new pack"

    def _do_purchase(self) -> str:
        k = self.rng.randrange(self.n_accounts)
        if self.purchase_keys and self.rng.random() < 0.3:
            k, key = self.rng.choice(self.purchase_keys)
        else:
            key = f"sim-purchase-{self.seed}-{len(self.purchase_keys)}"
            self.purchase_keys.append((k, key))
        try:
            pack = credit_pack_purchase(account=self.accounts[k].account, offer=self.offer, actor="simulation",
                                        idempotency_key=key)  # fmt: skip
        except (StripeFailure, ValidationError) as exc:
            return f"account {k}: {key} {exc.__class__.__name__} {str(exc)[:120]}"
        return f"account {k}: {key} {pack.status}/{pack.purchase_state}"

    def _do_webhook(self) -> str:
        """invoice.paid delivered late, maybe twice (Stripe redelivers), for a purchase whose invoice was paid."""
        packs = list(
            CreditPack.objects.filter(source=CreditPack.Source.PURCHASE)
            .exclude(stripe_invoice_id="")
            .order_by("idempotency_key")
            .values_list("pk", "idempotency_key", "stripe_invoice_id")
        )
        if not packs:
            return "no invoice to deliver"
        pk, key, invoice_id = self.rng.choice(packs)
        try:
            invoice = stripe_client.call(
                "retrieve invoice", lambda c, o: c.v1.invoices.retrieve(invoice_id), idempotency_key=None
            )
        except StripeFailure as exc:
            return f"{key}: Stripe not reachable ({exc.__class__.__name__})"
        if invoice.status != "paid":
            return f"{key}: invoice {invoice.status}, no event"
        event = {"type": "invoice.paid", "data": {"object": stripe_client.to_dict(invoice)}}
        times = self.rng.randint(1, 2)
        for _ in range(times):
            pack = credit_pack_invoice_event_apply(event=event)
        return f"{key}: invoice.paid x{times}, pack {pack.status}"

    def _do_conversion(self) -> str:
        k = self.rng.randrange(self.n_accounts)
        account = self.accounts[k].account
        try:
            if seat_conversion_preview(account=account, seats=1).seats_before < 2:
                return f"account {k}: one seat left, nothing converted"
            conversion = seat_conversion_confirm(
                account=account, seats=1, actor="simulation",
                idempotency_key=f"sim-conversion-{self.seed}-{self.step_no}",
            )  # fmt: skip
        except (StripeFailure, ValidationError) as exc:
            return f"account {k}: {exc.__class__.__name__} {str(exc)[:120]}"
        return f"account {k}: {conversion.status}, {conversion.credits} credits"

    def _do_expire(self) -> str:
        breakage = credit_packs_expire(now=self.now)
        return f"{len(breakage)} pack(s) expired, {sum(b.resolutions for b in breakage)} written off"

    # --- quiescence -------------------------------------------------------------------------------------
    def settle(self, rounds: int = 40) -> None:
        """Faults off; every late part delivered; then cycles until nothing is pending, the clock moving past
        every window, retry time and the conversions' resume delay. Then the end-state invariants."""
        self.now += MINUTE
        with self.at(self.now):
            for k in range(self.n_accounts):
                batch = [e for c in self.conversations if c.account == k for e in c.unsent]
                for c in self.conversations:
                    if c.account == k:
                        c.unsent = []
                if batch:
                    response = self._post(k, batch)
                    if response.status_code != 202:
                        raise InvariantBroken(self._failure(f"late parts refused: {response.content}"))
                    self.accepted_ids[k].update(e["id"] for e in batch)
        self.now += WINDOW + HOUR
        for _ in range(rounds):
            with self.at(self.now):
                result = billing_cycle_run(now=self.now)
            self._record("settle", [], self._cycle_summary(result))
            self.check_step()
            if not self._pending():
                break
            waiting = MeterReport.objects.filter(state__in=METER_OPEN_STATES, next_attempt_at__gt=self.now)
            next_at = min(waiting.values_list("next_attempt_at", flat=True), default=None)
            self.now = max(self.now + HOUR, next_at or self.now)
        else:
            raise InvariantBroken(self._failure(f"not quiet after {rounds} fault-free cycles: {self._pending()}"))
        self.check_quiet()

    def _pending(self) -> list[str]:
        mine = [a.account.pk for a in self.accounts]
        pending = []
        if PendingEvaluation.objects.filter(account_id__in=mine).exists():
            pending.append("queued evaluations")
        if Resolution.objects.filter(account_id__in=mine, voided_at__isnull=True, funding="unfunded").exists():
            pending.append("unfunded resolutions")
        if MeterReport.objects.filter(account_id__in=mine, state__in=METER_OPEN_STATES).exists():
            pending.append("open meter reports")
        if meter_accounts_due(now=self.now, account_ids=mine):
            pending.append("meter windows due")
        if CreditPack.objects.filter(account_id__in=mine, purchase_state__in=PURCHASE_OPEN).exists():
            pending.append("open purchases")
        if SeatConversion.objects.filter(account_id__in=mine, status__in=["started", "seats_reduced"]).exists():
            pending.append("unfinished seat conversions")
        return pending

    # --- invariants -------------------------------------------------------------------------------------
    def _failure(self, message: str) -> str:
        log = "\n".join(self.log[-60:])
        return (
            f"fault simulation seed {self.seed}, step {self.step_no}: {message}\n"
            f"replay: FAULT_SEEDS={self.seed} pytest tests/test_fault_simulation.py -k invariants\n{log}"
        )

    def _check(self, ok: bool, message: str) -> None:
        if not ok:
            raise InvariantBroken(self._failure(message))

    def check_step(self) -> None:
        self.inv_ledger()
        self.inv_funding()
        self.inv_meter_known()
        self.inv_events_stored()
        self.inv_rollups()

    def inv_ledger(self) -> None:
        """Each pack's ledger sum = its remaining >= 0; written-off credit never negative."""
        sums = dict(
            CreditLedgerEntry.objects.values_list("pack_id").annotate(n=Sum("quantity")).values_list("pack_id", "n")
        )
        for pk, status, remaining, written_off in CreditPack.objects.values_list("pk", "status", "remaining",
                                                                                 "written_off"):  # fmt: skip
            self._check(
                sums.get(pk, 0) == remaining >= 0 and written_off >= 0,
                f"pack {pk} ({status}): ledger sum {sums.get(pk, 0)}, remaining {remaining}, written off {written_off}",
            )

    def inv_funding(self) -> None:
        """Every resolution funded at most once, as the ledger says: a credit resolution has exactly one
        draw-down, from its pack; an overage or unfunded one none; a voided credit one gave its credit back;
        at most one billable resolution per conversation."""
        drawdowns = defaultdict(list)
        for key, pack_id in CreditLedgerEntry.objects.filter(kind="drawdown").values_list("idempotency_key", "pack_id"):
            drawdowns[key].append(pack_id)
        voids = set(CreditLedgerEntry.objects.filter(kind="void").values_list("idempotency_key", flat=True))
        for pk, cid, funding, pack_id, voided in Resolution.objects.values_list(
            "pk", "conversation_id", "funding", "credit_pack_id", "voided_at"
        ):
            drawn = drawdowns.get(f"drawdown:resolution:{pk}", [])
            if funding == "credit":
                self._check(drawn == [pack_id], f"credit resolution {cid}: pack {pack_id}, draw-downs {drawn}")
                if voided is not None:
                    self._check(f"void:resolution:{pk}" in voids, f"voided credit resolution {cid}: credit not back")
            else:
                self._check(not drawn and pack_id is None, f"{funding} resolution {cid} has credit {drawn} {pack_id}")
        doubles = (
            Resolution.objects.filter(voided_at__isnull=True)
            .values("account_id", "conversation_id")
            .annotate(n=Count("pk"))
            .filter(n__gt=1)
        )
        self._check(not doubles.exists(), f"two billable resolutions for one conversation: {list(doubles)}")

    def inv_no_overage_beside_credit(self, unfunded: set[int]) -> None:
        """No overage for a resolution that had credit: a resolution this step funded as overage had no pack of
        its account covering its instant with credit left (active, or written off and reclaimable), not
        counting packs created during the step (a seat conversion grants after the cycle's funding)."""
        overage = Resolution.objects.filter(pk__in=unfunded, funding="overage", voided_at__isnull=True)
        for pk, account_id, cid, resolved_at in overage.values_list(
            "pk", "account_id", "conversation_id", "resolved_at"
        ):
            with_credit = CreditPack.objects.filter(
                Q(status="active", remaining__gt=0) | Q(status="expired", written_off__gt=0),
                account_id=account_id, starts_at__lte=resolved_at, expires_at__gt=resolved_at,
                created_at__lt=self.now,
            )  # fmt: skip
            self._check(
                not with_credit.exists(),
                f"{cid} (resolution {pk}) funded as overage beside credit: "
                f"{list(with_credit.values('pk', 'status', 'remaining', 'written_off', 'starts_at', 'expires_at'))}",
            )

    def inv_meter_known(self) -> None:
        """Stripe's meter holds only events the portal sent (rows sent or confirmed), and every confirmed row
        is in Stripe with its quantity; a window's reported count is the sum of its rows."""
        with self.emulator.store.lock:
            in_stripe = {i: e["value"] for i, e in self.emulator.store.meter_events.items() if not e["canceled"]}
        rows = {i: (state, q) for i, state, q in MeterReport.objects.values_list("identifier", "state", "quantity")}
        for identifier, value in in_stripe.items():
            state, quantity = rows.get(identifier, (None, None))
            self._check(
                state in ("sent", "confirmed") and int(value) == quantity,
                f"Stripe holds {identifier} = {value}, the portal's row is {state} {quantity}",
            )
        for identifier, (state, _quantity) in rows.items():
            if state == "confirmed":
                self._check(identifier in in_stripe, f"row {identifier} confirmed but not in Stripe")
        totals = dict(
            MeterReport.objects.values_list("window_id").annotate(n=Sum("quantity")).values_list("window_id", "n")
        )
        for pk, reported in MeterWindow.objects.values_list("pk", "reported"):
            self._check(reported == totals.get(pk, 0), f"window {pk}: reported {reported}, rows {totals.get(pk)}")

    def inv_events_stored(self) -> None:
        """Nothing lost, nothing doubled: the stored events are exactly the ids of the accepted batches."""
        for k, provisioned in enumerate(self.accounts):
            stored = list(
                ConversationEvent.objects.filter(account=provisioned.account).values_list("event_id", flat=True)
            )
            self._check(len(stored) == len(set(stored)), f"account {k}: an event stored twice")
            self._check(
                set(stored) == self.accepted_ids[k],
                f"account {k}: stored {len(stored)} events, accepted {len(self.accepted_ids[k])} "
                f"(missing {sorted(self.accepted_ids[k] - set(stored))[:5]}, "
                f"extra {sorted(set(stored) - self.accepted_ids[k])[:5]})",
            )

    def inv_rollups(self) -> None:
        """The daily rollups the usage pages read add up to the resolutions they count (non-voided ones: all,
        credited, overage, their money, confirmed) and to the escalated conversations."""
        for k, provisioned in enumerate(self.accounts):
            account = provisioned.account
            rolled = DailyUsage.objects.filter(account=account).aggregate(
                n=Sum("resolutions"), credited=Sum("credited"), overage=Sum("overage"), amount=Sum("amount_minor"),
                confirmed=Sum("confirmed"), escalated=Sum("escalated"),
            )  # fmt: skip
            live = Resolution.objects.filter(account=account, voided_at__isnull=True)
            counted = live.aggregate(
                n=Count("pk"), credited=Count("pk", filter=Q(funding="credit")),
                overage=Count("pk", filter=Q(funding="overage")), amount=Sum("amount_minor"),
                confirmed=Count("pk", filter=Q(kind="confirmed")),
            )  # fmt: skip
            counted["escalated"] = ConversationState.objects.filter(account=account, escalated_at__isnull=False).count()
            rolled = {name: value or 0 for name, value in rolled.items()}
            counted = {name: value or 0 for name, value in counted.items()}
            self._check(rolled == counted, f"account {k}: daily rollups {rolled}, resolutions {counted}")

    def check_quiet(self) -> None:
        self._check(not self._pending(), f"still pending: {self._pending()}")
        for k, provisioned in enumerate(self.accounts):
            account = provisioned.account
            periods = list(BillingPeriod.objects.filter(account=account).order_by("start").values_list("start", "end"))
            self._check(bool(periods), f"account {k} has no billing period")

            def period(instant, periods=periods, k=k):
                for start, end in periods:
                    if instant < end:
                        return start
                raise InvariantBroken(self._failure(f"account {k}: {instant} after every known period"))

            stripe, reported, adjusted, overage, windows = Counter(), Counter(), Counter(), Counter(), Counter()
            with self.emulator.store.lock:
                events = list(self.emulator.store.meter_events.values())
            for e in events:
                if e["customer"] == provisioned.stripe_customer_id and not e["canceled"]:
                    stripe[period(dt.datetime.fromtimestamp(e["timestamp"], dt.UTC))] += int(e["value"])
            for state, quantity, period_start in MeterReport.objects.filter(account=account).values_list(
                "state", "quantity", "window__period_start"
            ):
                (reported if state == "confirmed" else adjusted)[period_start] += quantity
            resolved = Resolution.objects.filter(account=account, funding="overage", voided_at__isnull=True)
            for resolved_at in resolved.values_list("resolved_at", flat=True):
                overage[period(resolved_at)] += 1
            for period_start, n in MeterWindow.objects.filter(account=account).values_list("period_start", "overage"):
                windows[period_start] += n
            for start, _end in periods:
                figures = (
                    stripe[start],
                    reported[start],
                    overage[start] - adjusted[start],
                    windows[start] - adjusted[start],
                )
                self._check(
                    len(set(figures)) == 1,
                    f"account {k}, period {start:%Y-%m-%d}: Stripe {figures[0]}, reported {figures[1]}, "
                    f"non-voided overage less adjustments {figures[2]}, windows less adjustments {figures[3]}",
                )
        with clock.frozen(self.now):
            recon = meter_reconcile(now=self.now)
        self._check(not recon.differences and not recon.failures, f"reconciliation: {recon.as_dict()}")
        self._check_outcomes()

    def _check_outcomes(self) -> None:
        """Each conversation ends as the model of DESIGN §3.1 says, funded; a staff void keeps it unbilled."""
        billable = {
            (account_id, cid): (kind, resolved_at, funding)
            for account_id, cid, kind, resolved_at, funding in Resolution.objects.filter(
                voided_at__isnull=True
            ).values_list("account_id", "conversation_id", "kind", "resolved_at", "funding")
        }
        for c in self.conversations:
            got = billable.get((self.accounts[c.account].account.pk, c.conversation_id))
            want = None if c.voided_by_staff else expected_outcome(c.events, self.now)
            self._check(
                (got[:2] if got else None) == want,
                f"conversation {c.conversation_id} ({c.pattern}, events {c.events}): want {want}, got {got}",
            )
            if got:
                self._check(got[2] in ("credit", "overage"), f"{c.conversation_id} is {got[2]} at quiescence")
        # The plan has one flat price (99 cents, no tiers): an overage resolution costs that, a credited one 0.
        for cid, funding, amount in Resolution.objects.filter(voided_at__isnull=True).values_list(
            "conversation_id", "funding", "amount_minor"
        ):
            self._check(amount == (99 if funding == "overage" else 0), f"{cid} ({funding}) priced {amount}")

    # --- the final state, to compare two runs of one seed ------------------------------------------------
    def final_state(self) -> dict:
        state = {}
        for k, provisioned in enumerate(self.accounts):
            account = provisioned.account
            state[k] = {
                "resolutions": sorted(
                    (cid, kind, resolved_at.isoformat(), funding, voided is not None)
                    for cid, kind, resolved_at, funding, voided in Resolution.objects.filter(
                        account=account
                    ).values_list("conversation_id", "kind", "resolved_at", "funding", "voided_at")
                ),
                "packs": sorted(
                    CreditPack.objects.filter(account=account).values_list(
                        "source", "status", "granted", "remaining", "written_off", "idempotency_key"
                    )
                ),
                "ledger": sorted(
                    Counter(CreditLedgerEntry.objects.filter(account=account).values_list("kind", flat=True)).items()
                ),
                "meter": sorted(
                    MeterReport.objects.filter(account=account).values_list(
                        "sequence", "quantity", "state", "timestamp"
                    )  # fmt: skip
                ),
                "events": ConversationEvent.objects.filter(account=account).count(),
            }
        return state


def seeds_from(text: str) -> list[int]:
    """'7', '1-500' or '1,5,9-12' -> the seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = part.split("-", 1)
            seeds += range(int(low), int(high) + 1)
        elif part:
            seeds.append(int(part))
    return seeds


__all__ = ["InvariantBroken", "SIM_SETTINGS", "SimulatedCrash", "Simulation", "expected_outcome", "seeds_from"]
