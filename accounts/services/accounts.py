"""Accounts and users."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from billing_portal import clock

from ..locks import account_lock
from ..models import ACCOUNT_MANAGER_GROUP, ADMIN_GROUP, Account, PricePlan, Role, User
from .audit import Actor, audit_log_write


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
    status: str = Account.Status.ACTIVE,
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
            status=status,
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
        account = account_lock(account.pk)
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
    timezone: str = "",
) -> User:
    """Create a user in one of the four roles. Customer roles need an account; staff roles must not have one.
    `timezone` is the zone pages show times in (blank: the account's for customers, UTC for staff)."""
    role = Role(role)
    customer_roles = {Role.CUSTOMER_VIEWER: "viewer", Role.CUSTOMER_BILLING_ADMIN: "billing_admin"}
    if role in customer_roles and account is None:
        raise ValidationError({"account": "A customer user belongs to an account."})
    if role not in customer_roles and account is not None:
        raise ValidationError({"account": "Staff users do not belong to a customer account."})
    with transaction.atomic():
        user = User(
            username=username, email=email, account=account, customer_role=customer_roles.get(role, ""),
            timezone=timezone,
        )  # fmt: skip
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
