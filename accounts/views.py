"""Landing pages, one per role. The full dashboards come with later issues."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render

from .models import Role
from .selectors import (
    account_get_visible,
    account_list_visible,
    audit_log_list,
    price_plan_list,
)


@login_required
def home(request):
    role = request.user.role
    if role in (Role.CUSTOMER_VIEWER, Role.CUSTOMER_BILLING_ADMIN):
        return redirect("customer-home")
    if role in (Role.ACCOUNT_MANAGER, Role.ADMIN):
        return redirect("staff-home")
    raise PermissionDenied("Your user has no role in the portal yet. Ask an admin to give you one.")


@login_required
def staff_home(request):
    if request.user.role not in (Role.ACCOUNT_MANAGER, Role.ADMIN):
        return redirect("home")
    is_admin = request.user.role == Role.ADMIN
    context = {
        "accounts": account_list_visible(user=request.user),
        "is_admin": is_admin,
        "plans": price_plan_list() if is_admin else [],
        "audit_entries": audit_log_list(limit=10) if is_admin else [],
    }
    return render(request, "accounts/staff_home.html", context)


@login_required
def staff_account(request, account_id: int):
    if request.user.role not in (Role.ACCOUNT_MANAGER, Role.ADMIN):
        return redirect("home")
    account = account_get_visible(user=request.user, pk=account_id)  # 404 unless assigned (or admin)
    context = {
        "account": account,
        "version": account.plan_version,
        "audit_entries": audit_log_list(account=account),
    }
    return render(request, "accounts/staff_account.html", context)
