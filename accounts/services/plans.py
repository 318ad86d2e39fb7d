"""Price plans and versions: drafts change, published versions never do."""

from __future__ import annotations

import logging
from dataclasses import asdict

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from billing_portal import clock

from ..models import (
    ACCOUNT_MANAGER_GROUP,
    ADMIN_GROUP,
    CreditPackOffer,
    PlanMigration,
    PricePlan,
    PricePlanVersion,
    PriceTier,
    StripeSyncStatus,
)
from ..pricing import PlanVersionSpec
from .audit import Actor, audit_log_write

logger = logging.getLogger(__name__)


def price_plan_version_snapshot(version: PricePlanVersion) -> dict:
    return {
        "plan": version.plan.slug,
        "number": version.number,
        "status": version.status,
        "currency": version.currency,
        "unit_amount_decimal": version.unit_amount_decimal,
        "tiers_mode": version.tiers_mode,
        "tiers": [
            {"up_to": t.up_to, "unit_amount_decimal": t.unit_amount_decimal, "flat_amount": t.flat_amount}
            for t in version.tiers.all()
        ],
        "inactivity_window": version.inactivity_window,
        "seat_unit_amount": version.seat_unit_amount,
        "seat_conversion_unit_amount_decimal": version.seat_conversion_unit_amount_decimal,
        "effective_from": version.effective_from,
        "offers": [
            {
                "name": o.name,
                "resolutions": o.resolutions,
                "validity_days": o.validity_days,
                "unit_amount_decimal": o.unit_amount_decimal,
            }
            for o in version.offers.all()
        ],  # fmt: skip
    }


def price_plan_create(*, slug: str, name: str, actor: Actor, description: str = "") -> PricePlan:
    plan = PricePlan(slug=(slug or "").strip(), name=(name or "").strip(), description=description)
    plan.full_clean()
    with transaction.atomic():
        plan.save()
        audit_log_write(actor=actor, action="price_plan.create", obj=plan, after={"slug": plan.slug, "name": name})
    return plan


def _write_spec(version: PricePlanVersion, spec: PlanVersionSpec) -> None:
    version.currency = spec.currency
    version.unit_amount_decimal = spec.unit_amount_decimal
    version.tiers_mode = spec.tiers_mode
    version.inactivity_window = spec.inactivity_window
    version.seat_unit_amount = spec.seat_unit_amount
    version.seat_conversion_unit_amount_decimal = spec.seat_conversion_unit_amount_decimal
    version.effective_from = spec.effective_from
    version.save()
    version.tiers.all().delete()
    version.offers.all().delete()
    PriceTier.objects.bulk_create(
        PriceTier(version=version, position=i, **asdict(tier)) for i, tier in enumerate(spec.tiers)
    )
    CreditPackOffer.objects.bulk_create(CreditPackOffer(version=version, **asdict(offer)) for offer in spec.offers)


def price_plan_version_create(*, plan: PricePlan, spec: PlanVersionSpec, actor: Actor) -> PricePlanVersion:
    """Create a draft version numbered after the plan's last one."""
    with transaction.atomic():
        plan = PricePlan.objects.select_for_update().get(pk=plan.pk)  # serialises version numbering
        number = (plan.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = PricePlanVersion(plan=plan, number=number, status=PricePlanVersion.Status.DRAFT)
        version.created_at = clock.now()
        _write_spec(version, spec)
        audit_log_write(
            actor=actor, action="price_plan_version.create", obj=version,
            after=price_plan_version_snapshot(version),
        )  # fmt: skip
    return version


def _locked_draft(version: PricePlanVersion, doing: str) -> PricePlanVersion:
    locked = PricePlanVersion.objects.select_for_update().select_related("plan").get(pk=version.pk)
    if locked.status != PricePlanVersion.Status.DRAFT:
        raise ValidationError(
            f"{locked.plan.slug} v{locked.number} is {locked.status}: only a draft can be {doing}. "
            "Create a new version instead."
        )
    return locked


def price_plan_version_update(*, version: PricePlanVersion, spec: PlanVersionSpec, actor: Actor) -> PricePlanVersion:
    """Replace a draft's terms. Published and retired versions never change (invoices point at them)."""
    with transaction.atomic():
        version = _locked_draft(version, "edited")
        before = price_plan_version_snapshot(version)
        _write_spec(version, spec)
        audit_log_write(
            actor=actor, action="price_plan_version.update", obj=version,
            before=before, after=price_plan_version_snapshot(version),
        )  # fmt: skip
    return version


def price_plan_version_publish(*, version: PricePlanVersion, actor: Actor, reason: str = "") -> PricePlanVersion:
    """Freeze a draft: from now on it is immutable, and accounts can move to it from effective_from."""
    with transaction.atomic():
        version = _locked_draft(version, "published")
        version.status = PricePlanVersion.Status.PUBLISHED
        version.published_at = clock.now()
        version.stripe_sync_status = StripeSyncStatus.PENDING
        version.save(update_fields=["status", "published_at", "stripe_sync_status"])
        audit_log_write(
            actor=actor, action="price_plan_version.publish", obj=version,
            before={"status": "draft"}, after=price_plan_version_snapshot(version), reason=reason,
        )  # fmt: skip
        # Stripe Prices are immutable like the version: create them once it is committed.
        transaction.on_commit(lambda: _queue_stripe_sync(version.pk))
    return version


def _queue_stripe_sync(version_id: int) -> None:
    """Queue the version's Stripe sync (after its change committed). A broker that cannot be reached leaves
    the version pending: the ten-minute `stripe-catalog-retry` sweep queues it again, so the publish or retry
    that committed is not reported as failed."""
    from ..tasks import price_plan_version_stripe_sync_task

    try:
        price_plan_version_stripe_sync_task.delay(version_id)
    except Exception as exc:  # noqa: BLE001 - kombu raises its own and OS errors; the sweep finishes the job
        logger.warning("The Stripe sync of version %s stays pending: broker unreachable (%s)", version_id, exc)


def price_plan_version_retire(*, version: PricePlanVersion, actor: Actor, reason: str = "") -> PricePlanVersion:
    """Stop offering a published version to new accounts. Its terms stay as they were."""
    with transaction.atomic():
        version = PricePlanVersion.objects.select_for_update().select_related("plan").get(pk=version.pk)
        if version.status != PricePlanVersion.Status.PUBLISHED:
            raise ValidationError(
                f"{version.plan.slug} v{version.number} is {version.status}: only a published version can be retired."
            )
        if version.accounts.exists():
            raise ValidationError(f"{version.accounts.count()} account(s) are still on this version: move them first.")
        moving_in = PlanMigration.objects.filter(to_version=version, status__in=PlanMigration.OPEN_STATES).count()
        if moving_in:
            raise ValidationError(
                f"{moving_in} account(s) are scheduled to move to this version: cancel those moves first."
            )
        version.status = PricePlanVersion.Status.RETIRED
        version.retired_at = clock.now()
        version.save(update_fields=["status", "retired_at"])
        audit_log_write(
            actor=actor, action="price_plan_version.retire", obj=version,
            before={"status": "published"}, after={"status": "retired"}, reason=reason,
        )  # fmt: skip
    return version


def staff_groups_ensure() -> None:
    """Create the staff role groups with their permissions (idempotent; runs after every migrate)."""
    from django.contrib.auth.models import Permission

    admins, _ = Group.objects.get_or_create(name=ADMIN_GROUP)
    managers, _ = Group.objects.get_or_create(name=ACCOUNT_MANAGER_GROUP)
    app_labels = ["accounts", "credits", "resolutions", "djstripe"]
    admins.permissions.set(Permission.objects.filter(content_type__app_label__in=app_labels))
    manager_codenames = [
        "view_account", "manage_assigned_accounts", "view_priceplan", "view_priceplanversion",
        "view_pricetier", "view_creditpackoffer", "view_apikey", "view_auditlogentry", "view_user",
    ]  # fmt: skip
    managers.permissions.set(
        Permission.objects.filter(content_type__app_label="accounts", codename__in=manager_codenames)
    )
