"""Accounts (customer companies), users and roles, API keys, the audit log, price plans and versions."""

from __future__ import annotations

import uuid
import zoneinfo
from decimal import Decimal

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q
from django.utils.text import slugify

from billing_portal import clock
from billing_portal.money import SUPPORTED_CURRENCIES, round_minor

UNIT_AMOUNT_FIELD = {"max_digits": 24, "decimal_places": 12}  # Stripe's unit_amount_decimal precision


def validate_currency(value: str) -> None:
    if value not in SUPPORTED_CURRENCIES:
        raise ValidationError(f"'{value}' is not a currency Stripe supports (use a code such as usd or eur).")


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"'{value}' is not a known timezone (use a name such as Europe/Paris).") from None


class Role(models.TextChoices):
    CUSTOMER_VIEWER = "customer_viewer", "Customer viewer"
    CUSTOMER_BILLING_ADMIN = "customer_billing_admin", "Customer billing admin"
    ACCOUNT_MANAGER = "account_manager", "Account manager"
    ADMIN = "admin", "Admin"


# Staff roles are Django groups, so permissions can be tuned in the admin without a deploy.
ACCOUNT_MANAGER_GROUP = "Account managers"
ADMIN_GROUP = "Admins"


class StripeSyncStatus(models.TextChoices):
    PENDING = "pending", "Waiting to be sent to Stripe"
    SYNCED = "synced", "In Stripe"
    FAILED = "failed", "Failed (will be retried)"


class BillingMeter(models.Model):
    """The Stripe Billing Meter that counts overage resolutions (dj-stripe has no model for meters)."""

    event_name = models.CharField(max_length=100, unique=True)
    stripe_id = models.CharField(max_length=255, unique=True)
    display_name = models.CharField(max_length=250)
    status = models.CharField(max_length=16, default="active")
    created_at = models.DateTimeField(default=clock.now)
    last_error_report = models.JSONField(null=True, blank=True, help_text="Stripe's latest meter error report.")
    last_event_created = models.BigIntegerField(default=0, help_text="`created` of the newest event applied.")

    def __str__(self) -> str:
        return f"{self.event_name} ({self.stripe_id})"


class PricePlan(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def current_version(self, at=None) -> PricePlanVersion | None:
        """The published version in force at `at` (default: now): the latest effective_from not after it."""
        at = at or clock.now()
        return (
            self.versions.filter(status=PricePlanVersion.Status.PUBLISHED, effective_from__lte=at)
            .order_by("-effective_from", "-number")
            .first()
        )


class PricePlanVersion(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"
        RETIRED = "retired", "Retired"

    class TiersMode(models.TextChoices):
        GRADUATED = "graduated", "Graduated"
        VOLUME = "volume", "Volume"

    plan = models.ForeignKey(PricePlan, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    currency = models.CharField(max_length=3, default="usd", validators=[validate_currency])
    # Per-resolution price in minor units (99 = $0.99) when there are no tiers.
    unit_amount_decimal = models.DecimalField(**UNIT_AMOUNT_FIELD, null=True, blank=True)
    # Blank = per-unit pricing; otherwise the tiers below, with Stripe's semantics.
    tiers_mode = models.CharField(max_length=16, choices=TiersMode.choices, blank=True)
    inactivity_window = models.DurationField(help_text="Silence after the last AI answer that counts as resolved.")
    seat_unit_amount = models.PositiveBigIntegerField(help_text="Seat price per seat per month, minor units.")
    seat_conversion_unit_amount_decimal = models.DecimalField(
        **UNIT_AMOUNT_FIELD, help_text="Seat spend (minor units) that buys one resolution credit."
    )
    effective_from = models.DateTimeField()
    created_at = models.DateTimeField(default=clock.now)
    published_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    # Stripe bookkeeping, not terms: filled in once the version's immutable Stripe Prices exist.
    stripe_price_id = models.CharField(max_length=255, blank=True, help_text="Metered per-resolution Price.")
    stripe_seat_price_id = models.CharField(max_length=255, blank=True, help_text="Licensed per-seat Price.")
    stripe_sync_status = models.CharField(max_length=16, choices=StripeSyncStatus.choices, blank=True)
    stripe_sync_error = models.TextField(blank=True)

    class Meta:
        ordering = ["plan__slug", "number"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "number"], name="plan_version_number_unique"),
            models.CheckConstraint(
                condition=Q(status="draft") | Q(published_at__isnull=False), name="plan_version_published_at"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan.slug} v{self.number} ({self.status})"

    @property
    def is_editable(self) -> bool:
        return self.status == self.Status.DRAFT

    @property
    def lookup_key(self) -> str:
        """The Stripe Price lookup_key of this version: one immutable Stripe Price per version."""
        return f"{self.plan.slug}-v{self.number}-resolution"

    @property
    def seat_lookup_key(self) -> str:
        return f"{self.plan.slug}-v{self.number}-seat"


class PriceTier(models.Model):
    """One tier of a tiered version, exactly as Stripe's `tiers[]`: `up_to` null means infinity."""

    version = models.ForeignKey(PricePlanVersion, on_delete=models.CASCADE, related_name="tiers")
    position = models.PositiveSmallIntegerField()
    up_to = models.PositiveBigIntegerField(null=True, blank=True)
    unit_amount_decimal = models.DecimalField(**UNIT_AMOUNT_FIELD, null=True, blank=True)
    flat_amount = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["version", "position"]
        constraints = [
            models.UniqueConstraint(fields=["version", "position"], name="price_tier_position_unique"),
        ]

    def __str__(self) -> str:
        return f"up to {self.up_to if self.up_to is not None else '∞'}"


class CreditPackOffer(models.Model):
    """An annual credit pack on sale with a version: N resolutions, valid D days, at a unit price."""

    version = models.ForeignKey(PricePlanVersion, on_delete=models.CASCADE, related_name="offers")
    name = models.CharField(max_length=100)
    resolutions = models.PositiveIntegerField()
    validity_days = models.PositiveIntegerField(default=365)
    unit_amount_decimal = models.DecimalField(**UNIT_AMOUNT_FIELD)
    stripe_price_id = models.CharField(max_length=255, blank=True, help_text="One-time per-resolution Price.")

    class Meta:
        ordering = ["version", "resolutions"]
        constraints = [
            models.UniqueConstraint(fields=["version", "name"], name="credit_pack_offer_name_unique"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def amount_minor(self) -> int:
        return round_minor(Decimal(self.resolutions) * self.unit_amount_decimal)

    @property
    def lookup_key(self) -> str:
        return f"{self.version.plan.slug}-v{self.version.number}-pack-{slugify(self.name)}"


class Account(models.Model):
    """A customer company. Its Stripe customer is dj-stripe's Customer whose subscriber is this row."""

    class Status(models.TextChoices):
        PROVISIONING = "provisioning", "Being set up in Stripe"
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        CLOSED = "closed", "Closed"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False, help_text="Names the account in Stripe.")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    billing_email = models.EmailField(blank=True)
    currency = models.CharField(max_length=3, default="usd", validators=[validate_currency])
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    plan_version = models.ForeignKey(PricePlanVersion, on_delete=models.PROTECT, related_name="accounts")
    low_credit_threshold_percent = models.PositiveSmallIntegerField(
        default=20,
        validators=[MaxValueValidator(100)],
        help_text="Alert when remaining credits fall below this share of the active packs (0 turns it off).",
    )
    monthly_budget_minor = models.PositiveBigIntegerField(
        null=True, blank=True,
        help_text="Alert once a billing period when its spend (seats + overage) passes this, minor units; blank: off.",
    )  # fmt: skip
    account_manager = models.ForeignKey(
        "accounts.User",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="managed_accounts",
        limit_choices_to={"is_staff": True},
    )
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        ordering = ["name"]
        permissions = [("manage_assigned_accounts", "Can act on the accounts assigned to them")]

    def __str__(self) -> str:
        return self.name

    @property
    def email(self) -> str:
        """dj-stripe reads the subscriber's email when it creates a Stripe customer."""
        return self.billing_email


class User(AbstractUser):
    """A person. Customer users belong to exactly one account; staff users belong to none."""

    class CustomerRole(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        BILLING_ADMIN = "billing_admin", "Billing admin"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, null=True, blank=True, related_name="users")
    customer_role = models.CharField(max_length=16, choices=CustomerRole.choices, blank=True)
    timezone = models.CharField(
        max_length=64, blank=True, validators=[validate_timezone],
        help_text="Pages show times in this zone; blank: the account's zone for customers, UTC for staff.",
    )  # fmt: skip

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(account__isnull=True) & Q(customer_role=""))
                | (Q(account__isnull=False) & Q(customer_role__in=["viewer", "billing_admin"]) & Q(is_staff=False)),
                name="user_customer_or_staff",
            ),
        ]

    @property
    def viewing_timezone(self) -> str:
        """The zone this person reads times in (shown beside them on every page)."""
        if self.timezone:
            return self.timezone
        return self.account.timezone if self.account_id else "UTC"

    @property
    def role(self) -> Role | None:
        if self.account_id:
            if self.customer_role == self.CustomerRole.BILLING_ADMIN:
                return Role.CUSTOMER_BILLING_ADMIN
            return Role.CUSTOMER_VIEWER
        if not self.is_active or not self.is_staff:
            return None
        group_names = {g.name for g in self.groups.all()}
        if self.is_superuser or ADMIN_GROUP in group_names:
            return Role.ADMIN
        if ACCOUNT_MANAGER_GROUP in group_names:
            return Role.ACCOUNT_MANAGER
        return None


class ApiKey(models.Model):
    """An account's API key. Only a SHA-256 of the key is stored; the key is shown once, at creation."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=32, unique=True, help_text="Visible start of the key, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=clock.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditLogEntry(models.Model):
    """Who did what to which object, with before/after and a reason. Written by services, in the same
    transaction as the change; never edited."""

    created_at = models.DateTimeField(default=clock.now, db_index=True)
    actor = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    actor_label = models.CharField(max_length=200, help_text="Who acted, kept even if the user is deleted.")
    action = models.CharField(max_length=100, db_index=True)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    account = models.ForeignKey(Account, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.object_repr}"


class BillingPeriod(models.Model):
    """One billing period of an account's Stripe subscription (its metered item's period), recorded when
    the subscription is synced: at provisioning, on `customer.subscription.*` webhooks, and by the billing
    cycle once the latest known period has ended (a renewal). Kept as history: funding prices each
    period's overage with these (`billing_portal.periods.PeriodCalendar` says which period holds an
    instant, including before the first and after the last record)."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="billing_periods")
    start = models.DateTimeField()
    end = models.DateTimeField()
    stripe_subscription_id = models.CharField(max_length=255)
    billing_cycle_anchor = models.DateTimeField(null=True, blank=True, help_text="The subscription's anchor.")
    interval = models.CharField(max_length=8, default="month", help_text="The metered Price's interval.")
    interval_count = models.PositiveSmallIntegerField(default=1)
    recorded_at = models.DateTimeField(default=clock.now)
    renewal_checked_at = models.DateTimeField(
        null=True, blank=True, help_text="When the billing cycle last asked Stripe for the period after this one."
    )

    class Meta:
        ordering = ["account", "start"]
        constraints = [
            models.UniqueConstraint(fields=["account", "start"], name="billing_period_account_start_unique"),
            models.CheckConstraint(condition=Q(end__gt=models.F("start")), name="billing_period_end_after_start"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M}"


class PlanMigration(models.Model):
    """One account's scheduled move to another published plan version, at one of its Stripe billing-period
    starts (DESIGN §3.2). The row is also the account's version history: the version in force at an instant
    is the `to_version` of the latest migration (not cancelled) whose `effective_at` is not after it, else the
    `from_version` of the first one, else the account's version (`accounts.selectors.PlanSchedule`).
    Resolutions are stamped with the version in force at their `resolved_at`, so a period is rated by one
    version whether or not Stripe's price has been switched yet.

    States: scheduled → switching (the billing cycle has started to switch the Stripe subscription's Prices;
    set before the call, so a crash leaves a row that says where it stopped) → done; scheduled → cancelled;
    switching → failed (Stripe refused; an admin retries it, which puts it back to switching)."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        SWITCHING = "switching", "Switching the Stripe price"
        DONE = "done", "Done"
        FAILED = "failed", "Failed (Stripe refused)"
        CANCELLED = "cancelled", "Cancelled"

    OPEN_STATES = (Status.SCHEDULED, Status.SWITCHING, Status.FAILED)

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="plan_migrations")
    from_version = models.ForeignKey(PricePlanVersion, on_delete=models.PROTECT, related_name="+")
    to_version = models.ForeignKey(PricePlanVersion, on_delete=models.PROTECT, related_name="migrations_in")
    effective_at = models.DateTimeField(help_text="The Stripe billing-period start the move takes effect at.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    batch_key = models.CharField(
        max_length=64, help_text="What scheduled it (a form's or a client's Idempotency-Key): a repeat is one move."
    )
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=clock.now)
    switch_started_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True, help_text="When Stripe's Prices were switched.")
    cancelled_at = models.DateTimeField(null=True, blank=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True)
    rejections = models.PositiveIntegerField(
        default=0,
        help_text="Times Stripe refused the switch and an admin retried it (a new idempotency key each time).",
    )
    last_error = models.TextField(blank=True, help_text="Why the switch is waiting or failed, in plain words.")

    class Meta:
        ordering = ["effective_at", "account_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["batch_key", "account"], name="plan_migration_batch_account_unique"),
            # One open move per account: a second waits until the first is done or cancelled.
            models.UniqueConstraint(
                fields=["account"], condition=Q(status__in=["scheduled", "switching", "failed"]),
                name="plan_migration_one_open_per_account",
            ),
        ]  # fmt: skip
        indexes = [models.Index(fields=["status", "effective_at"], name="plan_migration_due_idx")]

    def __str__(self) -> str:
        return f"{self.account} → {self.to_version} at {self.effective_at:%Y-%m-%d %H:%M}"


from .idempotency import IdempotencyKey  # noqa: E402,F401 - its migration belongs to accounts
