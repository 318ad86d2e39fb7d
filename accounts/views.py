"""Home (each role to its landing page) and the customer's API keys page: the list for everyone of the
account, create and revoke for its billing admin. A new key is shown once, in the answer to the create."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect

from .models import Role
from .pages import IdempotentForm, billing_admin_page, customer_page, form_errors_apply, refused_status, render_page
from .selectors import api_key_get, api_key_list
from .services import api_key_create, api_key_revoke

PAGE, PANEL = "portal/api_keys.html", "portal/_api_keys.html"


@login_required
def home(request):
    role = request.user.role
    if role in (Role.CUSTOMER_VIEWER, Role.CUSTOMER_BILLING_ADMIN):
        return redirect("customer-home")
    if role in (Role.ACCOUNT_MANAGER, Role.ADMIN):
        return redirect("staff-home")
    raise PermissionDenied("Your user has no role in the portal yet. Ask an admin to give you one.")


class ApiKeyCreateForm(IdempotentForm):
    name = forms.CharField(
        max_length=100,
        label="Name",
        help_text="What uses the key, e.g. “Production ingestion”.",
        error_messages={"required": "Give the key a name.", "max_length": "Keep the name to 100 characters."},
    )


class ApiKeyRevokeForm(IdempotentForm):
    pass


def _panel(request, *, form=None, created=None, revoking=None, revoke_form=None, status=200):
    can_manage = request.user.role == Role.CUSTOMER_BILLING_ADMIN
    context = {
        "account": request.account,
        "api_keys": api_key_list(account=request.account).select_related("created_by", "revoked_by"),
        "can_manage": can_manage,
        "form": (form or ApiKeyCreateForm()) if can_manage else None,
        "created": created,
        "revoking": revoking,
        "revoke_form": revoke_form or (ApiKeyRevokeForm() if revoking else None),
    }
    return render_page(request, PAGE, context, partial=PANEL, status=status)


@customer_page
def api_key_page(request):
    """The account's keys; billing admins also get the create form and a revoke link per active key."""
    return _panel(request)


@billing_admin_page
def api_key_create_form(request):
    """POST a name: the key is created (once per drawn form: the form's key makes a repeat return the same
    key) and shown in full in this answer only. Not a redirect: the secret is stored nowhere to show later."""
    if request.method != "POST":
        return redirect("customer-api-keys")
    form = ApiKeyCreateForm(request.POST)
    if form.is_valid():
        try:
            api_key, raw_key = api_key_create(
                account=request.account, name=form.cleaned_data["name"], actor=request.user,
                idempotency_key=form.cleaned_data["idempotency_key"],
            )  # fmt: skip
        except ValidationError as error:
            form_errors_apply(form, error)
        else:
            return _panel(request, created={"api_key": api_key, "raw_key": raw_key})
    return _panel(request, form=form, status=refused_status(request, 400))


@billing_admin_page
def api_key_revoke_form(request, key_id: int):
    """GET: the confirm step for one key (404 for another account's). POST: revoke it at once."""
    api_key = api_key_get(account=request.account, pk=key_id)
    if request.method != "POST":
        return _panel(request, revoking=api_key)
    form = ApiKeyRevokeForm(request.POST)
    if form.is_valid():
        try:
            api_key_revoke(api_key=api_key, actor=request.user)
        except ValidationError as error:
            messages.info(request, " ".join(error.messages))
        else:
            messages.success(request, f"The key “{api_key.name}” ({api_key.prefix}…) is revoked: it no longer works.")
        if request.htmx:
            return _panel(request)
        return redirect("customer-api-keys")
    return _panel(request, revoking=api_key, revoke_form=form, status=refused_status(request, 400))
