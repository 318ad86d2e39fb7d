"""Price plans and versions: drafts change, published versions never do."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from billing_portal import clock

from ..idempotency import IdempotencyKey, idempotency_key_digest
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

STALE = "This draft changed since you opened this page: look at it again."


class PlanVersionConflict(ValidationError):
    """A refusal about the version's state, not the request's terms: not a draft, changed since it was read,
    or an Idempotency-Key already used for other terms. The API answers it with 409."""


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


def price_plan_version_digest(version: PricePlanVersion) -> str:
    """A fingerprint of a version's terms and state, as `price_plan_version_snapshot` shows them: a page or
    client that read the version sends it back, and publishing or saving is refused if it no longer matches."""
    text = json.dumps(price_plan_version_snapshot(version), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


def _spec_fingerprint(spec: PlanVersionSpec) -> str:
    text = json.dumps(asdict(spec), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def price_plan_version_create(
    *, plan: PricePlan, spec: PlanVersionSpec, actor: Actor, idempotency_key: str | None = None
) -> PricePlanVersion:
    """Create a draft version numbered after the plan's last one.

    With `idempotency_key` (the API's header, the editor form's key) the key is stored beside the draft in
    its transaction, after the plan lock: a repeat with the same terms, even a concurrent one, returns the
    first draft, and a repeat with other terms is refused (PlanVersionConflict) rather than ignoring them."""
    scope = f"price_plan_version_create actor:{getattr(actor, 'pk', actor)} plan:{plan.pk}"[:400]
    fingerprint = _spec_fingerprint(spec)
    try:
        with transaction.atomic():
            plan = PricePlan.objects.select_for_update().get(pk=plan.pk)  # serialises numbering and keys
            if idempotency_key is not None:
                first = _draft_for_key(scope, idempotency_key_digest(idempotency_key), fingerprint)
                if first is not None:
                    return first
            number = (plan.versions.aggregate(n=Max("number"))["n"] or 0) + 1
            version = PricePlanVersion(plan=plan, number=number, status=PricePlanVersion.Status.DRAFT)
            version.created_at = clock.now()
            _write_spec(version, spec)
            audit_log_write(
                actor=actor, action="price_plan_version.create", obj=version,
                after=price_plan_version_snapshot(version),
            )  # fmt: skip
            if idempotency_key is not None:
                IdempotencyKey.objects.create(
                    scope=scope, key_hash=idempotency_key_digest(idempotency_key), fingerprint=fingerprint,
                    status_code=201, response_body={"version_id": version.pk}, created_at=clock.now(),
                )  # fmt: skip
    except IntegrityError:  # the key was stored meanwhile by another path: its draft is the answer
        if idempotency_key is None:
            raise
        first = _draft_for_key(scope, idempotency_key_digest(idempotency_key), fingerprint)
        if first is None:
            raise
        return first
    return version


def _draft_for_key(scope: str, key_hash: str, fingerprint: str) -> PricePlanVersion | None:
    row = IdempotencyKey.objects.filter(scope=scope, key_hash=key_hash).first()
    if row is None:
        return None
    if row.fingerprint != fingerprint:
        raise PlanVersionConflict(
            "This request was already used to create a draft with other terms: open that draft to change it, "
            "or start a new one."
        )
    first = PricePlanVersion.objects.filter(pk=row.response_body.get("version_id")).first()
    if first is None:  # deleted since: the key no longer names a draft
        raise PlanVersionConflict("The draft this request created no longer exists: start a new one.")
    return first


def _locked_draft(version: PricePlanVersion, doing: str) -> PricePlanVersion:
    locked = PricePlanVersion.objects.select_for_update().select_related("plan").get(pk=version.pk)
    if locked.status != PricePlanVersion.Status.DRAFT:
        raise PlanVersionConflict(
            f"{locked.plan.slug} v{locked.number} is {locked.status}: only a draft can be {doing}. "
            "Create a new version instead."
        )
    return locked


def _check_digest(version: PricePlanVersion, expected_digest: str | None) -> None:
    if expected_digest is not None and expected_digest != price_plan_version_digest(version):
        raise PlanVersionConflict(STALE)


def price_plan_version_update(
    *,
    version: PricePlanVersion,
    actor: Actor,
    spec: PlanVersionSpec | None = None,
    build: Callable[[PricePlanVersion], PlanVersionSpec] | None = None,
    expected_digest: str | None = None,
) -> PricePlanVersion:
    """Replace a draft's terms. Published and retired versions never change (invoices point at them).

    Give either `spec`, or `build`: it is called with the draft as locked here and returns the spec (the API's
    PATCH lays the client's fields over the locked terms, so two patches of different fields both stay). With
    `expected_digest` (the digest the editor was opened with) the save is refused if the draft changed since."""
    if (spec is None) == (build is None):
        raise TypeError("give exactly one of spec and build")
    with transaction.atomic():
        version = _locked_draft(version, "edited")
        _check_digest(version, expected_digest)
        before = price_plan_version_snapshot(version)
        if build is not None:
            spec = build(version)
        _write_spec(version, spec)
        audit_log_write(
            actor=actor, action="price_plan_version.update", obj=version,
            before=before, after=price_plan_version_snapshot(version),
        )  # fmt: skip
    return version


def price_plan_version_publish(
    *, version: PricePlanVersion, actor: Actor, reason: str = "", expected_digest: str | None = None
) -> PricePlanVersion:
    """Freeze a draft: from now on it is immutable, and accounts can move to it from effective_from. With
    `expected_digest` (what the admin confirmed) it is refused if the draft changed since."""
    with transaction.atomic():
        version = _locked_draft(version, "published")
        _check_digest(version, expected_digest)
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
