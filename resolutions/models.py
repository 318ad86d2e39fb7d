"""Conversation events, conversations, resolutions and daily usage rollups (DESIGN §3.1, §4)."""

from __future__ import annotations

from django.db import models
from django.db.models import ExpressionWrapper, Q

from accounts.models import Account, PricePlanVersion, User
from billing_portal import clock
from credits.models import CreditPack

MAX_ID_LENGTH = 255


class EventType(models.TextChoices):
    AI_ANSWER = "ai_answer", "AI answered"
    CUSTOMER_CONFIRMED = "customer_confirmed", "Customer confirmed"
    CUSTOMER_REPLY = "customer_reply", "Customer replied"
    HANDOFF = "handoff", "Handed off to a human"


class ConversationEventColumns(models.Model):
    """The columns of an event as posted: one definition for the live table and its archive."""

    # No index of its own: the composite indexes of each table lead with the account (one less index for COPY).
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+", db_index=False)
    event_id = models.CharField(max_length=MAX_ID_LENGTH)
    conversation_id = models.CharField(max_length=MAX_ID_LENGTH)
    type = models.CharField(max_length=24, choices=EventType.choices)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()

    class Meta:
        abstract = True


class ConversationEvent(ConversationEventColumns):
    """What the AI platform posted, as posted. Append-only; the client's id is unique per account."""

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "event_id"], name="conversation_event_id_unique")]
        indexes = [models.Index(fields=["account", "conversation_id"], name="conversation_event_conv_idx")]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type} @ {self.occurred_at:%Y-%m-%d %H:%M:%S}"


class ConversationEventArchive(ConversationEventColumns):
    """Events of finished conversations moved out of ConversationEvent once their conversation is past the
    late window (docs/data-lifecycle.md, `events_archive`): the same columns, the same unique id per account
    (ingestion still answers a reused id with 409), read only to re-evaluate an archived conversation."""

    archived_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "event_id"], name="event_archive_id_unique")]
        indexes = [models.Index(fields=["account", "conversation_id"], name="event_archive_conv_idx")]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type} @ {self.occurred_at:%Y-%m-%d %H:%M:%S} (archived)"


class ConversationEventArchiveMark(models.Model):
    """The accounts that have archived events, and the latest cut-off archived: ingestion and evaluation ask
    this one row (a primary-key probe) before they look in the archive, so accounts with nothing archived pay
    nothing more (an EXISTS on the archive itself was planned as a sequential scan)."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, primary_key=True, related_name="+")
    archived_before = models.DateTimeField(help_text="The latest --before archived: older events may be archived.")

    def __str__(self) -> str:
        return f"account {self.account_id}: events archived before {self.archived_before:%Y-%m-%d}"


class Conversation(models.Model):
    """The evaluated state of one conversation, kept so the sweep finds elapsed windows by index."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"  # no AI answer waiting for its window
        AWAITING = "awaiting", "Waiting for the inactivity window"
        RESOLVED = "resolved", "Resolved"
        ESCALATED = "escalated", "Escalated to a human"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+", db_index=False)
    conversation_id = models.CharField(max_length=MAX_ID_LENGTH)
    status = models.CharField(max_length=16, choices=Status.choices)
    window_ends_at = models.DateTimeField(null=True, blank=True, help_text="When an assumed resolution falls due.")
    last_event_at = models.DateTimeField()
    voided_by_staff = models.BooleanField(default=False, help_text="A disputed conversation is never billed again.")
    escalated_at = models.DateTimeField(
        null=True, blank=True, help_text="When escalated: the handoff that escalated it (its local date is counted)."
    )
    updated_at = models.DateTimeField(default=clock.now)
    events_archived_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When its events moved to the archive (docs/data-lifecycle.md): evaluation reads them there too.",
    )  # fmt: skip

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "conversation_id"], name="conversation_unique"),
        ]
        indexes = [
            models.Index(fields=["window_ends_at"], condition=Q(status="awaiting"), name="conversation_due_idx"),
            models.Index(fields=["account"], condition=Q(voided_by_staff=True), name="conversation_disputed_idx"),
            # The dashboard counts a billing period's escalations on its partial first and last days here.
            models.Index(
                fields=["account", "escalated_at"],
                condition=Q(escalated_at__isnull=False),
                name="conversation_escalated_idx",
            ),  # fmt: skip
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id} ({self.status})"


class Resolution(models.Model):
    """A billable resolution. At most one non-voided row per conversation, enforced by the database."""

    class Kind(models.TextChoices):
        CONFIRMED = "confirmed", "Confirmed by the customer"
        ASSUMED = "assumed", "Assumed after the inactivity window"

    class Funding(models.TextChoices):
        UNFUNDED = "unfunded", "Not yet funded"
        CREDIT = "credit", "Credit pack"
        OVERAGE = "overage", "Overage"

    # Lean on indexes: every index is written again by each funding UPDATE (funding is in the unfunded
    # index's predicate, so no update is HOT). The account's composite indexes below lead with it; plan
    # versions and packs are never deleted (PROTECT), and nothing reads resolutions by version or pack.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+", db_index=False)
    conversation_id = models.CharField(max_length=MAX_ID_LENGTH)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    resolved_at = models.DateTimeField()
    plan_version = models.ForeignKey(PricePlanVersion, on_delete=models.PROTECT, related_name="+", db_index=False)

    funding = models.CharField(max_length=16, choices=Funding.choices, default=Funding.UNFUNDED)
    credit_pack = models.ForeignKey(
        CreditPack, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    amount_minor = models.BigIntegerField(
        default=0, help_text="Overage money of this resolution, minor units: its marginal share of its period."
    )
    created_at = models.DateTimeField(default=clock.now)
    voided_at = models.DateTimeField(null=True, blank=True)
    voided_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    void_reason = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "conversation_id"],
                condition=Q(voided_at__isnull=True),
                name="one_billable_resolution_per_conversation",
            ),
        ]
        indexes = [
            models.Index(fields=["account", "resolved_at", "id"], name="resolution_account_time_idx"),
            # Funding reads each account's new resolutions in id order (FundingProgress); no index may name
            # the funding columns, so that funding them is a heap-only update (see the 0007 migration).
            models.Index(fields=["account", "id"], name="resolution_account_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id} {self.kind} @ {self.resolved_at:%Y-%m-%d %H:%M}"


class DailyUsage(models.Model):
    """Per account and day (in the account's timezone): kept current as resolutions are written, so that
    usage reads never scan the ledger. Non-voided resolutions by resolved_at (all of them, those credited,
    those in overage and their money, those confirmed) and conversations escalated by their handoff; rows
    appear on the first day something is counted."""

    # No index of its own: the unique (account, date) constraint leads with it (one index less per rollup write).
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+", db_index=False)
    date = models.DateField()
    resolutions = models.IntegerField(default=0)
    credited = models.IntegerField(default=0)
    overage = models.IntegerField(default=0)
    amount_minor = models.BigIntegerField(default=0)
    confirmed = models.IntegerField(default=0, help_text="Of the resolutions, those the customer confirmed.")
    escalated = models.IntegerField(default=0, help_text="Conversations escalated to a human (by the handoff's day).")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "date"], name="daily_usage_unique")]
        verbose_name_plural = "daily usage"

    def __str__(self) -> str:
        return f"{self.account_id} {self.date}: {self.resolutions}"


class PendingEvaluation(models.Model):
    """Conversations that received events and await (re-)evaluation: one row per ingested batch, written
    without taking the account's lock, so that the batches of one account are stored in parallel. The
    evaluator (a Celery task right after the batch commits, `billing_tick`, or the request itself when
    EVENT_EVALUATION is "inline") takes the account's lock, evaluates, and deletes the rows it read."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    conversation_ids = models.JSONField(help_text="The batch's distinct conversation ids.")
    created_at = models.DateTimeField(default=clock.now)

    def __str__(self) -> str:
        return f"{len(self.conversation_ids)} conversation(s) of account {self.account_id}"


class FundingProgress(models.Model):
    """How far funding has read an account's resolutions: each one with an id up to `funded_through_id` is
    funded or voided. An account's resolutions are only written under its lock, so their ids grow in the
    order they commit; funding reads on from the mark instead of asking an index for unfunded rows (such an
    index would have to change with every funding write, which PostgreSQL could then never do in place)."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, primary_key=True, related_name="+")
    funded_through_id = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "funding progress"

    def __str__(self) -> str:
        return f"account {self.account_id}: funded through resolution {self.funded_through_id}"


class ConversationTally(models.Model):
    """Per account: conversations still waiting for an outcome right now (status open or awaiting), moved
    by evaluation in the transaction that writes the conversation states (under the account's lock), so the
    dashboard reads one row instead of counting conversations. Invariant: `waiting` equals the count of the
    account's conversations whose status is open or awaiting (tests check it)."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, primary_key=True, related_name="+")
    waiting = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"account {self.account_id}: {self.waiting} conversation(s) waiting"


class MeterWindow(models.Model):
    """One reporting window of an account (DESIGN §3.5): an aligned UTC slot (METER_WINDOW_SECONDS, an
    hour by default) cut at its Stripe billing period's boundaries. `overage` is what the portal counts in
    it (non-voided overage resolutions resolved in it), kept by funding and voids in their transactions;
    `reported` is how much of that report rows already carry. A window whose two differ once it has
    closed gets a report row for the difference (negative after a void)."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+", db_index=False)
    start = models.DateTimeField()
    end = models.DateTimeField()
    period_start = models.DateTimeField(help_text="The Stripe billing period that holds the window (its real start).")
    period_end = models.DateTimeField()
    overage = models.IntegerField(default=0, help_text="Overage resolutions in the window, as the portal counts them.")
    reported = models.IntegerField(default=0, help_text="The sum of the quantities of the window's report rows.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "start"], name="meter_window_unique")]
        indexes = [
            # The reporter's work list: windows whose count moved since their last report row. On the expression,
            # not partial on it: PostgreSQL cannot estimate `overage <> reported` (it guesses 99.5 % of the rows,
            # and so scanned every window each tick) but keeps statistics of an index's expression; it is written
            # as often as the partial index was (new windows are moved windows, funding moves `overage`).
            models.Index(
                ExpressionWrapper(~Q(overage=models.F("reported")), output_field=models.BooleanField()),
                "end",
                name="meter_window_moved_idx",
            ),
            # Reconciliation reads the windows (and their report rows) of periods that ended recently or are current.
            models.Index(fields=["period_end"], name="meter_window_period_end_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.start:%Y-%m-%d %H:%M}: {self.overage} (reported {self.reported})"


class MeterReport(models.Model):
    """One meter event for one window (the first for its overage, or a correction for a change after it
    was reported), or, when the change can no longer reach Stripe's invoice, the credit note or invoice item
    it needs. Moves pending -> sent (handed to Stripe, answer not known yet) -> confirmed; the identifier and
    idempotency key are the row's own, so a resend after a lost answer is the same event to Stripe."""

    class State(models.TextChoices):
        PENDING = "pending", "Waiting to be sent"
        SENT = "sent", "Sent, Stripe's answer not yet recorded"
        CONFIRMED = "confirmed", "In Stripe"
        REJECTED = "rejected", "Rejected by Stripe (retried; see the error)"
        ADJUSTMENT = "adjustment", "Too late for Stripe's meter: needs a credit note or invoice item"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+", db_index=False)
    window = models.ForeignKey(MeterWindow, on_delete=models.PROTECT, related_name="reports")
    sequence = models.PositiveIntegerField(help_text="0 for the window's first report, then 1, 2, … for corrections.")
    quantity = models.IntegerField(help_text="Overage resolutions this event adds (negative: taken back).")
    timestamp = models.DateTimeField(help_text="The meter event's timestamp: inside the window and its period.")
    identifier = models.CharField(max_length=100, unique=True, help_text="The meter event's identifier in Stripe.")
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    rejections = models.PositiveIntegerField(
        default=0, help_text="Refusals so far: part of the idempotency key, since Stripe replays a refusal for its key."
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="Not sent again before this (backoff).")
    last_error = models.TextField(blank=True, help_text="Stripe's latest refusal or failure, as Stripe said it.")
    adjustment_minor = models.BigIntegerField(
        null=True, blank=True,
        help_text="For an adjustment: the money it needs, minor units (negative: a credit note; positive: an "
        "invoice item).",
    )  # fmt: skip
    created_at = models.DateTimeField(default=clock.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["window", "sequence"], name="meter_report_sequence_unique")]
        indexes = [
            models.Index(
                fields=["account", "id"],
                condition=Q(state__in=["pending", "sent", "rejected"]),
                name="meter_report_open_idx",
            ),  # fmt: skip
        ]

    def __str__(self) -> str:
        return f"{self.identifier}: {self.quantity:+d} ({self.state})"


class MeterReconciliationDifference(models.Model):
    """A billing period whose reported total (the portal's confirmed meter events) and Stripe's meter event
    summary disagree (DESIGN §3.5 reconciliation). At most one open row per account and period: a later run
    that finds other figures updates it, one that finds them equal resolves it, and a difference that comes
    back after that is a new row (told to the admins again). `emailed_at` records that the admins were told.
    An admin may resolve an open row with a note (`resolved_by`): its figures are then accepted, and a run that
    finds the same figures again leaves it resolved; other figures are a new row."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+", db_index=False)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    portal = models.IntegerField(help_text="Overage resolutions the portal has in Stripe's meter (confirmed events).")
    stripe = models.IntegerField(help_text="Overage resolutions Stripe's meter event summary counts for the period.")
    first_found_at = models.DateTimeField()
    last_checked_at = models.DateTimeField()
    resolved_at = models.DateTimeField(
        null=True, blank=True, help_text="When a run found the two figures equal, or an admin accepted them."
    )
    emailed_at = models.DateTimeField(null=True, blank=True, help_text="When the admins were e-mailed about it.")
    resolved_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        help_text="The admin who accepted the figures (empty when a run found them equal).",
    )  # fmt: skip
    resolution_note = models.TextField(blank=True, help_text="Why the admin accepted the figures.")
    resolution_key = models.CharField(
        max_length=255, null=True, blank=True, unique=True,
        help_text="The idempotency key of the form that resolved it (a double submit is one resolution).",
    )  # fmt: skip

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "period_start"],
                condition=Q(resolved_at__isnull=True),
                name="meter_difference_open_unique",
            ),
        ]

    def __str__(self) -> str:
        state = "resolved" if self.resolved_at else "open"
        return f"{self.account_id} {self.period_start:%Y-%m-%d}: portal {self.portal}, Stripe {self.stripe} ({state})"

    @property
    def difference(self) -> int:
        """Stripe's count minus the portal's: positive when Stripe would bill more than the portal reported."""
        return self.stripe - self.portal


class MeterReconciliationRun(models.Model):
    """One reconciliation run: when it ran and what it found. The billing cycle reconciles only when the last
    run is older than METER_RECONCILE_INTERVAL_SECONDS."""

    started_at = models.DateTimeField(db_index=True)
    checked = models.PositiveIntegerField(default=0, help_text="Periods compared with Stripe.")
    differences = models.PositiveIntegerField(default=0, help_text="Periods whose figures disagreed.")
    in_flight = models.PositiveIntegerField(default=0, help_text="Periods skipped: a meter event on its way.")
    failures = models.JSONField(default=list, blank=True, help_text="Periods Stripe could not be asked about, why.")

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M}: {self.checked} checked, {self.differences} difference(s)"


class PriceSimulation(models.Model):
    """A re-pricing of accounts' last N closed Stripe billing periods under a price plan version (DESIGN §3.2),
    computed from per-period counts and never by touching live rows. `terms` is a frozen snapshot of the
    version's prices taken at start (a draft may be edited afterwards; the result stays what was simulated).
    Runs as a Celery task that claims the row (`status` running, `run_token`, `heartbeat_at`) so two deliveries
    never compute at once; rows are written per account idempotently and `accounts_done` / `resume_after_id`
    move with them, so a redelivery after a crash continues where the last batch committed."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    version = models.ForeignKey(PricePlanVersion, on_delete=models.PROTECT, related_name="+")
    terms = models.JSONField(help_text="The version's prices when the simulation started (a frozen snapshot).")
    periods = models.PositiveSmallIntegerField(help_text="How many of each account's last closed periods.")
    filter_version = models.ForeignKey(
        PricePlanVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text="Only the accounts on this version (none: every account in the simulated version's currency).",
    )  # fmt: skip
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    accounts_total = models.PositiveIntegerField(default=0)
    accounts_done = models.PositiveIntegerField(default=0)
    accounts_other_currency = models.PositiveIntegerField(
        default=0, help_text="Accounts left out: billed in another currency than the simulated version's."
    )
    resume_after_id = models.BigIntegerField(default=0, help_text="Accounts up to this id are done.")
    run_token = models.CharField(max_length=32, blank=True, help_text="Which run holds the simulation.")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="When its run last saved progress.")
    actual_minor = models.BigIntegerField(default=0)
    simulated_minor = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    idempotency_key = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=clock.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["created_by", "idempotency_key"], name="price_simulation_key_unique"),
        ]
        indexes = [models.Index(fields=["-created_at", "-id"], name="price_simulation_recent_idx")]

    def __str__(self) -> str:
        return f"simulation {self.pk} of version {self.version_id} ({self.status})"

    @property
    def difference_minor(self) -> int:
        return self.simulated_minor - self.actual_minor

    @property
    def difference_percent(self):
        from .services.simulation import percent_change

        return percent_change(actual=self.actual_minor, simulated=self.simulated_minor)

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        return 100 * self.accounts_done // self.accounts_total if self.accounts_total else 0


class PriceSimulationRow(models.Model):
    """One account's figures in a simulation: over its `periods` closed billing periods, the billable
    resolutions, those credits funded (as they were used) and the rest (overage), what that overage was
    rated at (actual: each period's version in force) and what the simulated terms rate it at."""

    # No index of its own: the unique (simulation, account) constraint leads with it.
    simulation = models.ForeignKey(PriceSimulation, on_delete=models.CASCADE, related_name="rows", db_index=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    plan_version = models.ForeignKey(
        PricePlanVersion, on_delete=models.PROTECT, related_name="+", help_text="The account's version when simulated."
    )
    periods = models.PositiveSmallIntegerField()
    billable = models.BigIntegerField()
    credited = models.BigIntegerField()
    overage = models.BigIntegerField()
    actual_minor = models.BigIntegerField()
    simulated_minor = models.BigIntegerField()
    difference_minor = models.BigIntegerField()
    movement_minor = models.BigIntegerField(help_text="|difference|: largest movers first.")
    percent = models.DecimalField(max_digits=12, decimal_places=1, null=True, blank=True)
    currency = models.CharField(max_length=3)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["simulation", "account"], name="price_simulation_row_unique"),
        ]
        indexes = [
            models.Index(fields=["simulation", "-movement_minor", "account"], name="price_simulation_movers_idx"),
        ]

    def __str__(self) -> str:
        return f"simulation {self.simulation_id} account {self.account_id}: {self.difference_minor:+d}"
