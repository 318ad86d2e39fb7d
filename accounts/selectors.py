"""Reads for accounts, with tenancy applied: who may see which account."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from .models import Account, ApiKey, AuditLogEntry, PricePlan, Role, User


def account_list_visible(*, user: User) -> QuerySet[Account]:
    """Admins see every account, account managers the ones assigned to them, customers their own."""
    accounts = Account.objects.select_related("plan_version__plan", "account_manager")
    role = getattr(user, "role", None)
    if role == Role.ADMIN:
        return accounts.all()
    if role == Role.ACCOUNT_MANAGER:
        return accounts.filter(account_manager=user)
    if role in (Role.CUSTOMER_VIEWER, Role.CUSTOMER_BILLING_ADMIN):
        return accounts.filter(pk=user.account_id)
    return accounts.none()


def account_get_visible(*, user: User, pk: int) -> Account:
    """The account if `user` may see it; otherwise 404, never 403, so ids of other tenants leak nothing."""
    account = account_list_visible(user=user).filter(pk=pk).first()
    if account is None:
        raise Http404("No such account.")
    return account


def api_key_list(*, account: Account) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(account=account).select_related("created_by")


def api_key_get(*, account: Account, pk: int) -> ApiKey:
    api_key = api_key_list(account=account).filter(pk=pk).first()
    if api_key is None:
        raise Http404("No such API key.")
    return api_key


def audit_log_list(*, account: Account | None = None, limit: int = 50) -> QuerySet[AuditLogEntry]:
    entries = AuditLogEntry.objects.select_related("actor")
    if account is not None:
        entries = entries.filter(account=account)
    return entries[:limit]


def price_plan_list() -> QuerySet[PricePlan]:
    return PricePlan.objects.prefetch_related("versions__tiers", "versions__offers")
