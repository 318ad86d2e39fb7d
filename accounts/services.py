"""Writes for accounts, users, API keys, the audit log and price plans. Views, APIs, admin actions and
commands call these; each keeps its invariant and writes its audit entry in the same transaction."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict
from decimal import Decimal

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils.text import slugify

from billing_portal import clock

from .models import (
    ACCOUNT_MANAGER_GROUP,
    ADMIN_GROUP,
    Account,
    ApiKey,
    AuditLogEntry,
    CreditPackOffer,
    PricePlan,
    PricePlanVersion,
    PriceTier,
    Role,
    User,
)
from .pricing import PlanVersionSpec

Actor = User | str  # a person, or a label for the system ("command:create_account")

# --- Audit log ---------------------------------------------------------------------------------------


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "total_seconds"):
        return value.total_seconds()
    return value


def audit_log_write(
    *,
    actor: Actor,
    action: str,
    obj,
    account: Account | None = None,
    before=None,
    after=None,
    reason: str = "",
) -> AuditLogEntry:
    """Record a change. Must run inside the transaction that makes the change, so that the entry and the
    change are committed (or rolled back) together."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_log_write must be called inside the transaction of the change it records.")
    user = actor if isinstance(actor, User) else None
    return AuditLogEntry.objects.create(
        created_at=clock.now(),
        actor=user,
        actor_label=(user.get_username() if user else str(actor))[:200],
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        account=account,
        before=_json_safe(before),
        after=_json_safe(after),
        reason=reason,
    )


# --- Accounts and users ------------------------------------------------------------------------------


def _unique_slug(name: str) -> str:
    base = slugify(name)[:70] or "account"
    slug, n = base, 1
    while Account.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def _account_snapshot(account: Account) -> dict:
    return {
        "name": account.name,
        "slug": account.slug,
        "currency": account.currency,
        "timezone": account.timezone,
        "status": account.status,
        "plan_version_id": account.plan_version_id,
        "account_manager_id": account.account_manager_id,
        "billing_email": account.billing_email,
    }


def account_create(
    *,
    name: str,
    plan: PricePlan,
    actor: Actor,
    timezone: str = "UTC",
    billing_email: str = "",
    account_manager: User | None = None,
    slug: str | None = None,
) -> Account:
    """Create a customer account on the plan version in force now."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "An account needs a name."})
    version = plan.current_version()
    if version is None:
        raise ValidationError({"plan": f"Plan '{plan.slug}' has no published version in force."})
    if account_manager is not None and account_manager.role not in (Role.ACCOUNT_MANAGER, Role.ADMIN):
        raise ValidationError({"account_manager": "The account manager must be a staff user."})
    with transaction.atomic():
        account = Account(
            name=name,
            slug=slug or _unique_slug(name),
            currency=version.currency,
            timezone=timezone,
            billing_email=billing_email,
            plan_version=version,
            account_manager=account_manager,
            created_at=clock.now(),
        )
        account.full_clean()
        account.save()
        audit_log_write(
            actor=actor,
            action="account.create",
            obj=account,
            account=account,
            after=_account_snapshot(account),
        )
    return account


def account_assign_manager(*, account: Account, manager: User | None, actor: Actor, reason: str = "") -> Account:
    if manager is not None and manager.role not in (Role.ACCOUNT_MANAGER, Role.ADMIN):
        raise ValidationError({"account_manager": "The account manager must be a staff user."})
    with transaction.atomic():
        account = Account.objects.select_for_update().get(pk=account.pk)
        before = _account_snapshot(account)
        account.account_manager = manager
        account.save(update_fields=["account_manager"])
        audit_log_write(
            actor=actor, action="account.assign_manager", obj=account, account=account,
            before=before, after=_account_snapshot(account), reason=reason,
        )  # fmt: skip
    return account


def user_create(
    *,
    username: str,
    password: str | None,
    role: Role,
    actor: Actor,
    account: Account | None = None,
    email: str = "",
) -> User:
    """Create a user in one of the four roles. Customer roles need an account; staff roles must not have one."""
    role = Role(role)
    customer_roles = {Role.CUSTOMER_VIEWER: "viewer", Role.CUSTOMER_BILLING_ADMIN: "billing_admin"}
    if role in customer_roles and account is None:
        raise ValidationError({"account": "A customer user belongs to an account."})
    if role not in customer_roles and account is not None:
        raise ValidationError({"account": "Staff users do not belong to a customer account."})
    with transaction.atomic():
        user = User(username=username, email=email, account=account, customer_role=customer_roles.get(role, ""))
        user.is_staff = role not in customer_roles
        user.set_password(password) if password else user.set_unusable_password()
        user.full_clean(exclude=["password"])
        user.save()
        if role == Role.ACCOUNT_MANAGER:
            user.groups.add(Group.objects.get(name=ACCOUNT_MANAGER_GROUP))
        elif role == Role.ADMIN:
            user.groups.add(Group.objects.get(name=ADMIN_GROUP))
        audit_log_write(
            actor=actor, action="user.create", obj=user, account=account,
            after={"username": username, "role": role.value, "account_id": account.pk if account else None},
        )  # fmt: skip
    return user


# --- API keys ----------------------------------------------------------------------------------------

API_KEY_PREFIX = "rbp"


def _api_key_hash(raw_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough (as for GitHub tokens); no salt needed.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(*, account: Account, name: str, actor: Actor) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored and cannot be shown again."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError({"name": "Give the key a name of 1 to 100 characters."})
    prefix = f"{API_KEY_PREFIX}_{secrets.token_hex(4)}"
    raw_key = f"{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            account=account,
            name=name,
            prefix=prefix,
            key_hash=_api_key_hash(raw_key),
            created_by=actor if isinstance(actor, User) else None,
            created_at=clock.now(),
        )
        audit_log_write(
            actor=actor, action="api_key.create", obj=api_key, account=account,
            after={"name": name, "prefix": prefix},
        )  # fmt: skip
    return api_key, raw_key


def api_key_revoke(*, api_key: ApiKey, actor: Actor, reason: str = "") -> ApiKey:
    with transaction.atomic():
        api_key = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if api_key.revoked_at is not None:
            raise ValidationError("This API key is already revoked.")
        api_key.revoked_at = clock.now()
        api_key.revoked_by = actor if isinstance(actor, User) else None
        api_key.save(update_fields=["revoked_at", "revoked_by"])
        audit_log_write(
            actor=actor, action="api_key.revoke", obj=api_key, account=api_key.account,
            before={"revoked_at": None}, after={"revoked_at": api_key.revoked_at}, reason=reason,
        )  # fmt: skip
    return api_key


LAST_USED_RESOLUTION_SECONDS = 60  # write last_used_at at most once a minute per key, not per request


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """The active key matching `raw_key`, or None. Records when it was last used (to the minute)."""
    parts = (raw_key or "").split("_", 2)  # rbp_<8 hex>_<secret>; the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[2]:
        return None
    api_key = ApiKey.objects.select_related("account").filter(prefix=f"{parts[0]}_{parts[1]}").first()
    if api_key is None or not hmac.compare_digest(api_key.key_hash, _api_key_hash(raw_key)):
        return None
    if api_key.revoked_at is not None:
        return None
    now = clock.now()
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() >= LAST_USED_RESOLUTION_SECONDS:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


# --- Price plans -------------------------------------------------------------------------------------


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
        version.save(update_fields=["status", "published_at"])
        audit_log_write(
            actor=actor, action="price_plan_version.publish", obj=version,
            before={"status": "draft"}, after=price_plan_version_snapshot(version), reason=reason,
        )  # fmt: skip
    return version


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
