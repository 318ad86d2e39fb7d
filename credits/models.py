"""Annual credit packs and their append-only ledger (DESIGN §3.3, §3.4)."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import F, Q

from accounts.models import UNIT_AMOUNT_FIELD, Account, CreditPackOffer, User
from billing_portal import clock


class CreditPack(models.Model):
    """A number of resolutions an account can use between starts_at and expires_at.

    `remaining` is a cached balance kept beside the ledger, updated in the same transaction as each entry:
    remaining == sum(ledger quantities) >= 0 (checked by the database and by tests). `written_off` is the
    pack's breakage, cached the same way: what expiry wrote off (expiry entries) less what late resolutions
    of its validity took back (reclaim entries), == -(sum of expiry) - (sum of reclaim) >= 0.
    """

    class Source(models.TextChoices):
        PURCHASE = "purchase", "Purchased"
        SEAT_CONVERSION = "seat_conversion", "Converted from seats"
        PROMOTIONAL = "promotional", "Promotional"
        ADJUSTMENT = "adjustment", "Adjustment"

    class Status(models.TextChoices):
        PENDING = "pending", "Awaiting payment"
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled (never paid)"

    class PurchaseState(models.TextChoices):
        """Where a purchase got in Stripe; each step is recorded before the next Stripe call."""

        PENDING = "pending", "Saved, no invoice yet"
        INVOICE_CREATED = "invoice_created", "Draft invoice created"
        ITEM_ADDED = "item_added", "Pack added to the invoice"
        FINALIZED = "finalized", "Invoice finalised, awaiting payment"
        PAID = "paid", "Paid"
        VOID = "void", "Invoice voided or uncollectible"
        FAILED = "failed", "Stripe refused (nothing charged)"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="credit_packs")
    source = models.CharField(max_length=20, choices=Source.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    granted = models.PositiveIntegerField(help_text="Resolutions granted.")
    remaining = models.IntegerField(default=0, help_text="Cached ledger sum.")
    written_off = models.IntegerField(
        default=0,
        help_text="Cached breakage: written off at or after expiry, not taken back by a late resolution.",
    )
    starts_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    currency = models.CharField(max_length=3, default="usd")
    unit_amount_decimal = models.DecimalField(**UNIT_AMOUNT_FIELD, default=0, help_text="Paid per resolution.")
    offer = models.ForeignKey(CreditPackOffer, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    stripe_invoice_id = models.CharField(max_length=255, blank=True)
    purchase_state = models.CharField(max_length=16, choices=PurchaseState.choices, blank=True)
    idempotency_key = models.CharField(max_length=255, blank=True, help_text="The buyer's Idempotency-Key, if any.")
    purchase_claimed_until = models.DateTimeField(
        null=True, blank=True, help_text="A worker is continuing the purchase until then (one at a time)."
    )
    purchase_checked_at = models.DateTimeField(null=True, blank=True, help_text="Last time the cycle asked Stripe.")
    purchase_error = models.TextField(blank=True)
    needs_review = models.BooleanField(default=False, help_text="Something an admin should look at (see the note).")
    review_note = models.TextField(blank=True)
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(remaining__gte=0), name="credit_pack_remaining_not_negative"),
            models.CheckConstraint(condition=Q(remaining__lte=F("granted")), name="credit_pack_remaining_le_granted"),
            models.CheckConstraint(condition=Q(expires_at__gt=F("starts_at")), name="credit_pack_expires_after_start"),
            models.CheckConstraint(
                condition=Q(written_off__gte=0, written_off__lte=F("granted") - F("remaining")),
                name="credit_pack_written_off_in_range",
            ),
            models.UniqueConstraint(
                fields=["account", "idempotency_key"], condition=~Q(idempotency_key=""),
                name="credit_pack_purchase_idempotency_key_unique",
            ),
        ]  # fmt: skip
        indexes = [
            models.Index(fields=["account", "status", "expires_at"], name="credit_pack_drawable_idx"),
            models.Index(
                fields=["purchase_state", "purchase_checked_at"], name="credit_pack_purchase_open_idx",
                condition=Q(purchase_state__in=["pending", "invoice_created", "item_added", "finalized"]),
            ),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.get_source_display()} pack of {self.granted:,} ({self.remaining:,} left)"


class CreditLedgerEntry(models.Model):
    """One change of a pack, never edited. The idempotency key is derived from the cause
    (`grant:pack:<uid>`, `drawdown:resolution:<id>`, `expiry:pack:<uid>`), so a retry cannot apply twice.

    A late resolution funded by an expired pack takes one credit back from its write-off (`reclaim` +1,
    `reclaim:resolution:<id>`) and draws it down as usual (`drawdown` -1). A voided credit of an expired pack
    is given back (`void` +1) and written off again (`expiry` -1, `expiry:resolution:<id>`): it joins the
    pack's breakage. Either way the expired pack's ledger still sums to its remaining, 0."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Grant"
        DRAWDOWN = "drawdown", "Draw-down"
        EXPIRY = "expiry", "Expiry"
        RECLAIM = "reclaim", "Reclaim (a late resolution takes back written-off credit)"
        VOID = "void", "Void (credit given back)"
        REVERSAL = "reversal", "Reversal"

    # The pack's composite index below leads with it; the key's uniqueness is a constraint, not unique=True,
    # so PostgreSQL gets no second (varchar_pattern_ops) index on it: one index less to write per draw-down.
    pack = models.ForeignKey(CreditPack, on_delete=models.PROTECT, related_name="entries", db_index=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    quantity = models.IntegerField(help_text="Signed: grants and give-backs positive, draw-downs and expiry negative.")
    idempotency_key = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        verbose_name_plural = "credit ledger"
        constraints = [models.UniqueConstraint(fields=["idempotency_key"], name="credit_ledger_idempotency_key_unique")]
        indexes = [models.Index(fields=["pack", "kind"], name="credit_ledger_pack_kind_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.quantity:+,} ({self.idempotency_key})"


class SeatConversion(models.Model):
    """Seats moved into credits (DESIGN §3.4), one recoverable operation with a state per step:
    started -> seats_reduced (Stripe quantity lowered) -> done (pack granted). A retry resumes from the
    recorded step, so seats are never removed without credits and credits are never granted twice."""

    class Status(models.TextChoices):
        STARTED = "started", "Started"
        SEATS_REDUCED = "seats_reduced", "Seats reduced in Stripe"
        DONE = "done", "Done"
        FAILED = "failed", "Failed (nothing changed)"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="seat_conversions")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTED)
    seats = models.PositiveIntegerField()
    seats_before = models.PositiveIntegerField()
    stripe_subscription_item_id = models.CharField(max_length=255)
    seat_unit_amount = models.PositiveBigIntegerField()
    conversion_unit_amount_decimal = models.DecimalField(**UNIT_AMOUNT_FIELD)
    term_start = models.DateTimeField()
    term_end = models.DateTimeField()
    value_minor = models.BigIntegerField()
    credits = models.PositiveIntegerField()
    pack = models.OneToOneField(CreditPack, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    idempotency_key = models.CharField(max_length=255, blank=True, help_text="The caller's Idempotency-Key, if any.")
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=Q(status__in=["started", "seats_reduced"]),
                name="one_seat_conversion_in_progress_per_account",
            ),
            models.UniqueConstraint(
                fields=["account", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="seat_conversion_idempotency_key_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.seats} seat(s) -> {self.credits:,} credits ({self.status})"


class CreditAlert(models.Model):
    """A condition about an account's credits, raised once per crossing: it is told once when it becomes
    true (email + dashboard banner) and cleared when it stops being true, so a later crossing tells again."""

    class Kind(models.TextChoices):
        LOW_BALANCE = "low_balance", "Credits running low"
        BURN_RATE = "burn_rate", "Credits will run out before they expire"
        BUDGET = "budget", "Monthly budget passed"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="credit_alerts")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    active = models.BooleanField(default=False)
    message = models.TextField(blank=True)
    raised_at = models.DateTimeField(null=True, blank=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    times_raised = models.PositiveIntegerField(default=0)
    # The figures a budget alert was last decided on (credits/budget.py); empty for the other kinds.
    period_start = models.DateTimeField(null=True, blank=True, help_text="Budget: the billing period decided on.")
    period_end = models.DateTimeField(null=True, blank=True)
    spend_minor = models.BigIntegerField(null=True, blank=True, help_text="Budget: the period's spend then.")
    budget_minor = models.BigIntegerField(null=True, blank=True, help_text="Budget: the budget it was compared with.")
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "kind"], name="credit_alert_unique")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({'active' if self.active else 'clear'})"
