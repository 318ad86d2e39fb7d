"""Reads for accounts, with tenancy applied: who may see which account."""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class PlanSchedule:
    """Which plan version is in force for an account at any instant (see `PlanMigration`): the account's
    moves that were not cancelled, as (effective_at, from_version_id, to_version_id) in time order."""

    account_version_id: int
    moves: tuple[tuple[dt.datetime, int, int], ...] = ()

    @property
    def single_version_id(self) -> int | None:
        """The one version of every instant when the account never moved (the usual case), else None."""
        return None if self.moves else self.account_version_id

    def version_at(self, instant: dt.datetime) -> int:
        if not self.moves:
            return self.account_version_id
        i = bisect.bisect_right([m[0] for m in self.moves], instant) - 1
        return self.moves[i][2] if i >= 0 else self.moves[0][1]


def plan_schedule_get(*, account_id: int, account_version_id: int | None = None) -> PlanSchedule:
    """The account's plan schedule (one small query, two when the account's version is not given)."""
    from .models import PlanMigration

    moves = tuple(
        PlanMigration.objects.filter(account_id=account_id)
        .exclude(status=PlanMigration.Status.CANCELLED)
        .order_by("effective_at", "id")
        .values_list("effective_at", "from_version_id", "to_version_id")
    )
    if account_version_id is None:
        account_version_id = Account.objects.values_list("plan_version_id", flat=True).get(pk=account_id)
    return PlanSchedule(account_version_id, moves)


def price_plan_version_usage() -> dict[int, dict[str, int]]:
    """Per version id: how many accounts are on it now and how many open moves go to it (what keeps a
    published version from being retired). Two grouped queries for every version."""
    from django.db.models import Count

    from .models import PlanMigration

    usage: dict[int, dict[str, int]] = {}
    for version_id, n in Account.objects.values_list("plan_version_id").annotate(n=Count("pk")).order_by():
        usage.setdefault(version_id, {"accounts": 0, "moving_in": 0})["accounts"] = n
    moving = PlanMigration.objects.filter(status__in=PlanMigration.OPEN_STATES).values_list("to_version_id")
    for version_id, n in moving.annotate(n=Count("pk")).order_by():
        usage.setdefault(version_id, {"accounts": 0, "moving_in": 0})["moving_in"] = n
    return usage


def price_plan_version_given(pk: int, field: str):
    """The version a request names by id in `field`, or a ValidationError on that field (the APIs' 400)."""
    from django.core.exceptions import ValidationError

    from .models import PricePlanVersion

    version = PricePlanVersion.objects.select_related("plan").filter(pk=pk).first()
    if version is None:
        raise ValidationError({field: f"No price plan version has the id {pk}."})
    return version
