"""Plan migrations (DESIGN §3.2): an admin schedules accounts to move to a published version at one of
their Stripe billing-period starts; at that start the version in force and the Stripe subscription's
Prices switch together, with no proration and nothing billed twice.

How "together" holds:
- The version in force is decided by the `PlanMigration` rows themselves (`accounts.selectors.PlanSchedule`):
  from `effective_at` on, resolutions are stamped with the new version, whether or not Stripe's Price has
  been switched yet. A move can be scheduled or cancelled only while its start is more than CHANGE_CUTOFF
  away, so no resolution of that period has been stamped yet (events are refused more than 5 minutes in
  the future).
- Stripe's Prices are switched by the billing cycle (`plan_migrations_apply`) once Stripe has renewed the
  subscription into the new period (the renewal invoice, with the ended period's usage at the old Price,
  already exists): one `subscriptions.update` that replaces the metered and the seat items' Prices with
  `proration_behavior=none`, keyed by the row (`plan-migration:<id>:switch:<rejections>`).
- Until the switch is done, meter reports of the new period are held (`meter_report_hold_from`), so Stripe
  never counts new-period usage against the old Price.
- Seats are billed in advance: the new period's seats were charged at the old seat Price by the renewal
  invoice that opened it; the new seat Price bills from the next renewal. Nothing is charged twice.

Re-entry: a row in `switching` is continued by the next cycle (a lost answer: the subscription already has
the new Prices, so nothing is sent again); Stripe refusing puts it in `failed` with Stripe's words, and an
admin's retry sends it again under a new idempotency key. Every step is audited.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from djstripe.models import Subscription

from billing_portal import clock, stripe_client
from billing_portal.periods import EARLIEST, LATEST
from billing_portal.stripe_client import StripeRejected, StripeUnavailable

from ..locks import account_lock, accounts_lock
from ..models import Account, BillingPeriod, PlanMigration, PricePlanVersion, StripeSyncStatus, User
from ..selectors import plan_schedule_get
from .audit import Actor, audit_log_write
from .billing_periods import billing_period_calendar

logger = logging.getLogger(__name__)

CHANGE_CUTOFF = dt.timedelta(minutes=15)  # a move's start must be further away than this to schedule or cancel it
LATEST_START = dt.timedelta(days=2 * 366)  # how far ahead a move may be scheduled
APPLY_PER_CYCLE = 50
Status = PlanMigration.Status


@dataclass
class ScheduleResult:
    scheduled: list[PlanMigration] = field(default_factory=list)
    skipped: list[tuple[Account, str]] = field(default_factory=list)
    replayed: bool = False


def _snapshot(migration: PlanMigration) -> dict:
    return {
        "from_version": str(migration.from_version), "to_version": str(migration.to_version),
        "effective_at": migration.effective_at.isoformat(), "status": migration.status,
    }  # fmt: skip


def plan_migration_start_for(*, account: Account, not_before: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    """The account's first Stripe billing-period start at or after `not_before` and more than CHANGE_CUTOFF
    after `now` (projected with Stripe's arithmetic past the recorded periods), or None when Stripe has no
    subscription period for the account."""
    calendar = billing_period_calendar(account_id=account.pk)
    if not len(calendar):
        return None
    earliest = max(not_before, now + CHANGE_CUTOFF + dt.timedelta(microseconds=1))
    start, end = calendar.containing(earliest)
    if start == earliest and start != EARLIEST:
        return start
    return None if end == LATEST else end


def _target_checked(to_version: PricePlanVersion) -> PricePlanVersion:
    if not isinstance(to_version, PricePlanVersion):
        raise ValidationError({"to_version": "Choose the version to move to."})
    to_version = PricePlanVersion.objects.select_related("plan").get(pk=to_version.pk)
    if to_version.status != PricePlanVersion.Status.PUBLISHED:
        raise ValidationError(
            {"to_version": f"{to_version.plan.slug} v{to_version.number} is {to_version.status}: accounts can "
                           "only move to a published version."}
        )  # fmt: skip
    return to_version


@dataclass(frozen=True)
class MovePlan:
    """What scheduling decides for one account: its move's start, or why it cannot move (plain words)."""

    account: Account
    start: dt.datetime | None
    skip: str | None


def _candidates(*, accounts, from_version) -> list[Account]:
    if (accounts is None) == (from_version is None):
        raise ValidationError({"accounts": "Choose the accounts to move, or the version whose accounts move."})
    if from_version is not None:
        return list(Account.objects.filter(plan_version=from_version).exclude(status=Account.Status.CLOSED))
    candidates = list({a.pk: a for a in accounts}.values())
    if not candidates:
        raise ValidationError({"accounts": "Choose at least one account."})
    return candidates


def _not_before(not_before: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    if not_before is not None:
        if not_before.tzinfo is None:
            raise ValidationError({"not_before": "Give the date with a timezone."})
        if not_before > now + LATEST_START:
            raise ValidationError({"not_before": "A move can be scheduled at most two years ahead."})
    return max(not_before or now, now)


def _decide(candidates: list[Account], to_version: PricePlanVersion, not_before: dt.datetime, now) -> list[MovePlan]:
    """The one rule for who can move and from when (scheduling and its preview both use it)."""
    open_moves = dict(
        PlanMigration.objects.filter(account__in=[a.pk for a in candidates], status__in=PlanMigration.OPEN_STATES)
        .values_list("account_id", "to_version__number")
    )  # fmt: skip
    plans = []
    for account in sorted(candidates, key=lambda a: a.pk):
        skip, start = None, None
        if account.status != Account.Status.ACTIVE:
            skip = f"the account is {account.get_status_display().lower()}"
        elif account.currency != to_version.currency:
            skip = f"it is billed in {account.currency.upper()}, the version in {to_version.currency.upper()}"
        elif account.pk in open_moves:
            skip = f"a move to v{open_moves[account.pk]} is already scheduled (cancel it first)"
        elif account.plan_version_id == to_version.pk:
            skip = f"it is already on v{to_version.number}"
        else:
            start = plan_migration_start_for(account=account, not_before=not_before, now=now)
            if start is None:
                skip = "Stripe has no billing period for it (no subscription)"
        plans.append(MovePlan(account, start, skip))
    return plans


def plan_migrations_preview(
    *,
    to_version: PricePlanVersion,
    accounts: Iterable[Account] | None = None,
    from_version: PricePlanVersion | None = None,
    not_before: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> list[MovePlan]:
    """What `plan_migrations_schedule` would do now with the same arguments; writes nothing."""
    now = now or clock.now()
    to_version = _target_checked(to_version)
    candidates = _candidates(accounts=accounts, from_version=from_version)
    return _decide(candidates, to_version, _not_before(not_before, now), now)


def plan_migrations_schedule(
    *,
    to_version: PricePlanVersion,
    actor: Actor,
    batch_key: str,
    accounts: Iterable[Account] | None = None,
    from_version: PricePlanVersion | None = None,
    not_before: dt.datetime | None = None,
    reason: str = "",
    now: dt.datetime | None = None,
) -> ScheduleResult:
    """Schedule `accounts` (one or a list), or every account now on `from_version`, to move to the published
    `to_version` at their first billing-period start at or after `not_before` (default: the next one).
    Accounts that cannot move are returned in `skipped` with the reason in plain words (another currency,
    already on the version, a move already open, no Stripe subscription period). Bad input raises a
    ValidationError and schedules nothing. The same `batch_key` again returns the moves it made (replayed)."""
    now = now or clock.now()
    batch_key = (batch_key or "").strip()
    if not batch_key or len(batch_key) > 64:
        raise ValidationError({"batch_key": "A key of 1 to 64 characters names this request."})
    to_version = _target_checked(to_version)
    previous = list(PlanMigration.objects.filter(batch_key=batch_key).select_related("account", "to_version__plan"))
    if previous:
        if any(m.to_version_id != to_version.pk for m in previous):
            raise ValidationError({"batch_key": "This key already scheduled moves to another version."})
        return ScheduleResult(scheduled=previous, replayed=True)
    candidates = _candidates(accounts=accounts, from_version=from_version)
    plans = _decide(candidates, to_version, _not_before(not_before, now), now)
    result = ScheduleResult(skipped=[(p.account, p.skip) for p in plans if p.skip])
    planned = [(p.account.pk, p.start) for p in plans if not p.skip]
    if not planned:
        return result
    user = actor if isinstance(actor, User) else None
    try:
        with transaction.atomic(durable=True):
            locked = accounts_lock([pk for pk, _ in planned])  # one account's moves are decided under its lock
            for account_id, start in planned:
                account = locked[account_id]
                schedule = plan_schedule_get(account_id=account_id, account_version_id=account.plan_version_id)
                migration = PlanMigration.objects.create(
                    account=account, from_version_id=schedule.version_at(start), to_version=to_version,
                    effective_at=start, batch_key=batch_key, reason=reason, created_by=user, created_at=now,
                )  # fmt: skip
                audit_log_write(
                    actor=actor, action="plan_migration.schedule", obj=migration, account=account,
                    after=_snapshot(migration), reason=reason,
                )  # fmt: skip
                result.scheduled.append(migration)
    except IntegrityError:
        # A concurrent request scheduled one of these accounts (one open move each) or used the same key.
        replay = list(PlanMigration.objects.filter(batch_key=batch_key))
        if replay:
            return ScheduleResult(scheduled=replay, replayed=True)
        raise ValidationError(
            {"accounts": "Another move was scheduled for one of these accounts at the same moment: look again."}
        ) from None
    return result


def plan_migration_cancel(*, migration: PlanMigration, actor: Actor, reason: str = "", now=None) -> PlanMigration:
    """Cancel a scheduled move while its start is more than CHANGE_CUTOFF away (no resolution rated by it yet),
    or a failed one at any time (Stripe refused the switch, so its Prices never changed): the account stays on
    its version, the usage held for the move is reported again, and a new move can be scheduled."""
    now = now or clock.now()
    with transaction.atomic(durable=True):
        account_lock(migration.account_id)
        migration = PlanMigration.objects.select_related("to_version__plan", "from_version__plan").get(pk=migration.pk)
        if migration.status not in (Status.SCHEDULED, Status.FAILED):
            raise ValidationError(
                f"This move is {migration.get_status_display().lower()}: it can no longer be cancelled."
            )
        if migration.status == Status.SCHEDULED and migration.effective_at - now <= CHANGE_CUTOFF:
            raise ValidationError(
                "This move takes effect in less than 15 minutes (or already has): it can no longer be cancelled. "
                "Schedule a move back at the next period instead."
            )
        before = _snapshot(migration)
        migration.status, migration.cancelled_at = Status.CANCELLED, now
        migration.save(update_fields=["status", "cancelled_at"])
        audit_log_write(
            actor=actor, action="plan_migration.cancel", obj=migration, account=migration.account,
            before=before, after=_snapshot(migration), reason=reason,
        )  # fmt: skip
    return migration


def plan_migration_retry(*, migration: PlanMigration, actor: Actor, now=None) -> PlanMigration:
    """Send a move that Stripe refused again (after the cause was fixed), under a new idempotency key."""
    now = now or clock.now()
    with transaction.atomic(durable=True):
        account_lock(migration.account_id)
        migration = PlanMigration.objects.select_related("to_version__plan", "from_version__plan").get(pk=migration.pk)
        if migration.status != Status.FAILED:
            raise ValidationError(
                f"This move is {migration.get_status_display().lower()}: only a failed move is retried."
            )
        before = _snapshot(migration)
        migration.status, migration.rejections = Status.SWITCHING, migration.rejections + 1
        migration.save(update_fields=["status", "rejections"])
        audit_log_write(
            actor=actor, action="plan_migration.retry", obj=migration, account=migration.account,
            before=before, after=_snapshot(migration),
        )  # fmt: skip
    return migration


def meter_report_hold_from(*, account_id: int) -> dt.datetime | None:
    """Meter events timestamped at or after this instant must wait: the account's move starting then has not
    switched Stripe's Prices yet (None: nothing held)."""
    return (
        PlanMigration.objects.filter(account_id=account_id, status__in=PlanMigration.OPEN_STATES)
        .order_by("effective_at")
        .values_list("effective_at", flat=True)
        .first()
    )


@dataclass
class ApplyResult:
    switched: int = 0
    waiting: int = 0
    failed: int = 0
    unavailable: list[str] = field(default_factory=list)


def _wait(migration: PlanMigration, message: str, result: ApplyResult) -> None:
    if migration.last_error != message:
        PlanMigration.objects.filter(pk=migration.pk).update(last_error=message)
    result.waiting += 1


def plan_migrations_apply(*, now: dt.datetime, limit: int = APPLY_PER_CYCLE) -> ApplyResult:
    """The billing cycle's step: switch the Stripe Prices of moves whose start has come (oldest first, at
    most `limit`). Never calls Stripe inside a transaction. StripeUnavailable ends the step (next cycle)."""
    result = ApplyResult()
    due = (
        PlanMigration.objects.filter(status__in=(Status.SCHEDULED, Status.SWITCHING), effective_at__lte=now)
        .select_related("account", "to_version__plan", "from_version__plan")
        .order_by("effective_at", "pk")[:limit]
    )
    for migration in list(due):
        try:
            plan_migration_apply(migration=migration, now=now, result=result)
        except StripeUnavailable as exc:
            PlanMigration.objects.filter(pk=migration.pk).update(last_error=f"Stripe not reachable: {exc}"[:2000])
            result.unavailable.append(f"account {migration.account_id}: {exc}")
            break
    return result


def _items_to_switch(subscription: Mapping, to_version: PricePlanVersion) -> list[dict]:
    """The subscription's item updates that put it on the version's Prices: the metered item and the first
    licensed (seat) item; none when it already is (a repeated switch sends nothing)."""
    updates, seat_done = [], False
    for item in (subscription.get("items") or {}).get("data") or []:
        price = item.get("price") or {}
        usage = (price.get("recurring") or {}).get("usage_type")
        if usage == "metered":
            target = to_version.stripe_price_id
        elif usage == "licensed" and not seat_done:
            seat_done, target = True, to_version.stripe_seat_price_id
        else:
            continue
        if price.get("id") != target:
            update = {"id": item["id"], "price": target}
            if usage == "licensed":
                update["quantity"] = item.get("quantity") or 0
            updates.append(update)
    return updates


def plan_migration_apply(*, migration: PlanMigration, now: dt.datetime, result: ApplyResult | None = None) -> None:
    """Switch one due move (see the module docstring). Waits, with the reason on the row, while Stripe has
    not renewed into the move's period or the version's Prices are not in Stripe yet."""
    result = result if result is not None else ApplyResult()
    to_version = migration.to_version
    period = BillingPeriod.objects.filter(account_id=migration.account_id, start=migration.effective_at).first()
    if period is None:
        moved = BillingPeriod.objects.filter(
            account_id=migration.account_id, start__lt=migration.effective_at, end__gt=migration.effective_at
        ).exists()
        if moved:  # Stripe's periods no longer start there (the anchor changed): an admin must decide
            _fail(migration, "Stripe's billing periods no longer start at this move's date: cancel this move "
                             "and schedule one at the new period start.", now, result)  # fmt: skip
        else:
            _wait(migration, "Waiting for Stripe to renew the subscription into the new period.", result)
        return
    if to_version.stripe_sync_status != StripeSyncStatus.SYNCED or not to_version.stripe_price_id:
        _wait(migration, f"Waiting for {to_version}'s Prices to be created in Stripe.", result)
        return
    if migration.status == Status.SCHEDULED:
        updated = PlanMigration.objects.filter(pk=migration.pk, status=Status.SCHEDULED).update(
            status=Status.SWITCHING, switch_started_at=now, stripe_subscription_id=period.stripe_subscription_id
        )
        if not updated:
            return  # cancelled or taken by another caller meanwhile
        migration.status = Status.SWITCHING
    subscription_id = period.stripe_subscription_id
    try:
        subscription = stripe_client.call(
            "retrieve subscription", lambda c, o: c.v1.subscriptions.retrieve(subscription_id), idempotency_key=None
        )
        updates = _items_to_switch(stripe_client.to_dict(subscription), to_version)
        if updates:
            subscription = stripe_client.call(
                "switch subscription prices",
                lambda c, o: c.v1.subscriptions.update(
                    subscription_id,
                    params={
                        "items": updates,
                        "proration_behavior": "none",
                        "metadata": {"plan_version": str(to_version.pk)},
                    },
                    options=o,
                ),  # fmt: skip
                idempotency_key=f"plan-migration:{migration.pk}:switch:{migration.rejections}",
            )
    except StripeRejected as exc:
        _fail(migration, f"Stripe refused the switch: {exc}", now, result)
        return
    stripe_client.mirror(lambda: Subscription.sync_from_stripe_data(subscription, api_key=settings.STRIPE_SECRET_KEY))
    with transaction.atomic(durable=True):
        account = account_lock(migration.account_id)
        current = PlanMigration.objects.select_for_update().get(pk=migration.pk)
        if current.status != Status.SWITCHING:
            return
        before = _snapshot(current)
        account.plan_version = to_version
        account.save(update_fields=["plan_version"])
        current.status, current.applied_at, current.last_error = Status.DONE, now, ""
        current.save(update_fields=["status", "applied_at", "last_error"])
        audit_log_write(
            actor="system:billing_cycle", action="plan_migration.apply", obj=current, account=account,
            before=before, after={**_snapshot(current), "stripe_subscription_id": subscription_id,
                                  "items_switched": len(updates)},
        )  # fmt: skip
    result.switched += 1


def _fail(migration: PlanMigration, message: str, now: dt.datetime, result: ApplyResult) -> None:
    with transaction.atomic(durable=True):
        account_lock(migration.account_id)
        current = PlanMigration.objects.select_for_update().get(pk=migration.pk)
        if current.status not in (Status.SCHEDULED, Status.SWITCHING):
            return
        before = _snapshot(current)
        current.status, current.last_error = Status.FAILED, message[:2000]
        current.save(update_fields=["status", "last_error"])
        audit_log_write(
            actor="system:billing_cycle", action="plan_migration.fail", obj=current, account=current.account,
            before=before, after=_snapshot(current), reason=message[:500],
        )  # fmt: skip
    logger.warning("Plan migration %s failed: %s", migration.pk, message)
    result.failed += 1
