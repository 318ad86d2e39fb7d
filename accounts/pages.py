"""What every server-rendered page shares: who may open it, which account it is about, full page or htmx
partial, and the idempotent form its actions post (so a double submit is one action)."""

from __future__ import annotations

import functools
import uuid

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from .models import Role
from .selectors import account_get_visible

CUSTOMER_ROLES = (Role.CUSTOMER_VIEWER, Role.CUSTOMER_BILLING_ADMIN)
STAFF_ROLES = (Role.ACCOUNT_MANAGER, Role.ADMIN)


def _role_page(roles, *, with_account: bool):
    def decorator(view):
        @login_required
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.user.role not in roles:
                return redirect("home")
            if with_account:
                request.account = account_get_visible(user=request.user, pk=request.user.account_id)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def customer_page(view):
    """A page of the customer's own account (viewer or billing admin): `request.account` is that account."""
    return _role_page(CUSTOMER_ROLES, with_account=True)(view)


def billing_admin_page(view):
    """A customer action only the account's billing admin may take (viewers are sent home)."""
    return _role_page((Role.CUSTOMER_BILLING_ADMIN,), with_account=True)(view)


def staff_page(view):
    """A page for account managers and admins; views look accounts up with account_get_visible (404 unless
    the manager is assigned to it)."""
    return _role_page(STAFF_ROLES, with_account=False)(view)


def admin_page(view):
    """A page for admins only (pricing, simulations, migrations, operations); others are sent home."""
    return _role_page((Role.ADMIN,), with_account=False)(view)


def render_page(request, template: str, context: dict, *, partial: str | None = None, status: int = 200):
    """The whole page, or only `partial` (a template the page includes) when htmx asked for it: htmx
    swaps the fragment, and without JavaScript the same URL answers the full page."""
    name = partial if partial and getattr(request, "htmx", False) else template
    return TemplateResponse(request, name, context, status=status)


def refused_status(request, status: int) -> int:
    """The status of an answer that explains refused input: 4xx for a full page; 200 for htmx, which swaps
    only successful answers (the fragment with its plain-words errors is what the person must see)."""
    return 200 if getattr(request, "htmx", False) else status


def page_number(text: str | None, *, limit: int = 10**9) -> int:
    """A page number from a query string: a plain ASCII whole number from 1 to `limit`, else page 1 (never a
    500: "²" is a digit to str.isdigit but not to int)."""
    if text and text.isascii() and text.isdecimal() and 0 < int(text) < limit:
        return int(text)
    return 1


class IdempotentForm(forms.Form):
    """A form whose action runs once per rendering: the hidden key is made when the form is drawn and goes
    to the service as its idempotency key, so a double click or a resubmitted POST returns the first result."""

    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=255)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("initial", {}).setdefault("idempotency_key", uuid.uuid4().hex)
        super().__init__(*args, **kwargs)


def form_errors_apply(form: forms.Form, error: ValidationError) -> None:
    """Put a service's ValidationError on the form: errors naming one of its fields go beside that field,
    the rest at the top of the form."""
    if hasattr(error, "error_dict"):
        for field, errors in error.error_dict.items():
            form.add_error(field if field in form.fields else None, [m for e in errors for m in e.messages])
    else:
        form.add_error(None, error.messages)


class VersionChoice(forms.ModelChoiceField):
    """A price plan version picked in a staff form, named as people read it: "Fin Standard v2 (published, USD)"."""

    def label_from_instance(self, version):
        state = version.get_status_display().lower()
        return f"{version.plan.name} v{version.number} ({state}, {version.currency.upper()})"
