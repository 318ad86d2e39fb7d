"""Home (each role to its landing page) and the customer's API keys page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect

from .models import Role


@login_required
def home(request):
    role = request.user.role
    if role in (Role.CUSTOMER_VIEWER, Role.CUSTOMER_BILLING_ADMIN):
        return redirect("customer-home")
    if role in (Role.ACCOUNT_MANAGER, Role.ADMIN):
        return redirect("staff-home")
    raise PermissionDenied("Your user has no role in the portal yet. Ask an admin to give you one.")


def _being_built(*args, **kwargs):
    raise Http404("This page is being built.")


api_key_page = api_key_create_form = api_key_revoke_form = _being_built
