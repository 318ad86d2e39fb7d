"""Staff pages: the book of accounts and one account's page (usage, credits, seats, invoices, history)."""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import render

from accounts.models import Role
from accounts.pages import staff_page
from accounts.selectors import account_get_visible, account_list_visible, audit_log_list, price_plan_list


@staff_page
def staff_home(request):
    is_admin = request.user.role == Role.ADMIN
    context = {
        "accounts": account_list_visible(user=request.user),
        "is_admin": is_admin,
        "plans": price_plan_list() if is_admin else [],
        "audit_entries": audit_log_list(limit=10) if is_admin else [],
    }
    return render(request, "portal/staff_home.html", context)


@staff_page
def staff_account(request, account_id: int):
    account = account_get_visible(user=request.user, pk=account_id)  # 404 unless assigned (or admin)
    context = {
        "account": account,
        "version": account.plan_version,
        "audit_entries": audit_log_list(account=account),
    }
    return render(request, "portal/staff_account.html", context)


def _being_built(*args, **kwargs):
    raise Http404("This page is being built.")


resolution_void_form = _being_built
