"""Staff pages: the book of accounts, one account's page (usage, credits, seats, invoice preview,
reporting, history) and voiding a resolution found by its conversation id."""

from __future__ import annotations

import datetime as dt
import logging

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode

from accounts.models import Role
from accounts.pages import IdempotentForm, form_errors_apply, page_number, render_page, staff_page
from accounts.selectors import account_get_visible, audit_log_list, price_plan_list
from billing_portal import clock
from billing_portal.stripe_client import StripeFailure

from ..account_page import conversation_resolutions_list, staff_account_figures_get
from ..book import Sort, account_book_get
from ..history import history_lines
from ..models import Resolution
from ..selectors import billing_period_overage_get, invoice_list
from ..services import resolution_void
from ..services.invoice_preview import invoice_preview_get

logger = logging.getLogger(__name__)

HISTORY_SHOWN = 50


# Column -> (header, numeric). A numeric column sorts biggest first when first clicked.
COLUMNS = [
    (Sort.NAME, ("Account", False)),
    (Sort.SPEND, ("Spend this period", True)),
    (Sort.CREDITS, ("Credits left", True)),
    (Sort.RUN_OUT, ("Credits run out", True)),
    (Sort.ALERTS, ("Open alerts", True)),
    (Sort.ACTIVITY, ("Last activity", False)),
]


def _book_url(book, **changes) -> str:
    params = {"q": book.query, "sort": book.sort, "dir": "desc" if book.descending else "asc", "page": book.page}
    params.update(changes)
    return f"{reverse('staff-home')}?{urlencode({k: v for k, v in params.items() if v not in ('', None)})}"


def _columns(book) -> list[dict]:
    """Each header's link: the same column again flips the direction; another starts at its natural one
    (biggest first for figures and activity, A to Z for names), on page 1."""
    columns = []
    for key, (label, numeric) in COLUMNS:
        active = book.sort == key
        if active:
            direction = "asc" if book.descending else "desc"
        else:
            direction = "asc" if key == Sort.NAME or key == Sort.RUN_OUT else "desc"
        columns.append({"key": key, "label": label, "numeric": numeric, "active": active,
                        "url": _book_url(book, sort=key, dir=direction, page=1)})  # fmt: skip
    return columns


@staff_page
def staff_home(request):
    """The book: GET q (name or slug), sort (a column), dir (asc/desc), page; htmx swaps the table only."""
    is_admin = request.user.role == Role.ADMIN
    sort = request.GET.get("sort", Sort.NAME)
    book = account_book_get(
        user=request.user, now=clock.now(), query=request.GET.get("q", ""), sort=sort,
        descending=request.GET.get("dir") == "desc", page=page_number(request.GET.get("page")),
    )  # fmt: skip
    context = {
        "book": book,
        "columns": _columns(book),
        "sort_label": dict(COLUMNS)[book.sort][0].lower(),
        "previous_url": _book_url(book, page=book.page - 1),
        "next_url": _book_url(book, page=book.page + 1),
        "is_admin": is_admin,
        "plans": price_plan_list() if is_admin and not request.htmx else [],
        "audit_entries": history_lines(entries=audit_log_list(limit=10)) if is_admin and not request.htmx else [],
    }
    return render_page(request, "portal/staff_home.html", context, partial="portal/_staff_book.html")


def _history(account):
    return history_lines(entries=audit_log_list(account=account, limit=HISTORY_SHOWN))


@staff_page
def staff_account(request, account_id: int):
    """The account page; with htmx, only its figures, or its history (`?part=history`), refreshed after each
    action."""
    account = account_get_visible(user=request.user, pk=account_id)  # 404 unless assigned (or admin)
    history_only = request.htmx and request.GET.get("part") == "history"
    context = {"account": account, "version": account.plan_version, "audit_entries": _history(account)}
    if not history_only:
        context["figures"] = staff_account_figures_get(account=account, now=clock.now())
        context["invoices"] = invoice_list(account=account)
        context["billing_period"] = billing_period_overage_get(account=account, now=clock.now())
    partial = "portal/_staff_history.html" if history_only else "portal/_staff_figures.html"
    return render_page(request, "portal/staff_account.html", context, partial=partial)


@staff_page
def staff_invoice_preview(request, account_id: int):
    """The next invoice, portal beside Stripe (it calls Stripe, so the account page loads it after render)."""
    account = account_get_visible(user=request.user, pk=account_id)
    context = {"account": account, "preview": None, "problem": ""}
    try:
        context["preview"] = preview = invoice_preview_get(account=account, now=clock.now())
        for bound in ("period_start", "period_end"):  # shown in the viewer's zone
            context[bound] = dt.datetime.fromisoformat(preview[bound].replace("Z", "+00:00"))
    except Http404 as exc:
        context["problem"] = str(exc)
    except StripeFailure as exc:
        logger.warning("invoice preview of account %s: %s", account.pk, exc)
        context["problem"] = "Stripe could not be asked for the preview just now. Try again in a minute."
    return render_page(
        request, "portal/staff_action.html", {**context, "partial": "portal/_staff_invoice_preview.html",
                                              "title": "Invoice preview"},
        partial="portal/_staff_invoice_preview.html",
    )  # fmt: skip


class ConversationLookupForm(forms.Form):
    conversation_id = forms.CharField(
        label="Conversation id", max_length=255, strip=True,
        error_messages={"required": "Type the conversation id the customer disputes."},
    )  # fmt: skip


class ResolutionVoidForm(IdempotentForm):
    conversation_id = forms.CharField(widget=forms.HiddenInput, max_length=255)
    resolution = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(
        label="Reason (the customer sees it)", max_length=2000, strip=True, widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": "Say why the resolution is voided: the customer sees the reason."},
    )  # fmt: skip


def _void_render(request, account, step: str, **context):
    context = {"account": account, "step": step, "partial": "portal/_staff_void.html", "title": "Void a resolution",
               **context}  # fmt: skip
    return render_page(request, "portal/staff_action.html", context, partial="portal/_staff_void.html")


@staff_page
def resolution_void_form(request, account_id: int):
    """Find the resolution by conversation id (this account's only), give a reason, confirm, void it.
    Steps (POST `step`): find -> confirm -> void. A repeat of the same void (same person, resolution and
    reason: a double submit) shows the first void's result and changes nothing."""
    account = account_get_visible(user=request.user, pk=account_id)
    if request.method != "POST":
        return _void_render(request, account, "find", lookup=ConversationLookupForm())
    step = request.POST.get("step", "find")
    if step == "find":
        lookup = ConversationLookupForm(request.POST)
        if not lookup.is_valid():
            return _void_render(request, account, "find", lookup=lookup)
        conversation_id = lookup.cleaned_data["conversation_id"]
        found = list(conversation_resolutions_list(account=account, conversation_id=conversation_id))
        billable = next((r for r in found if r.voided_at is None), None)
        form = ResolutionVoidForm(
            initial={"conversation_id": conversation_id, "resolution": getattr(billable, "pk", 0)}
        )
        return _void_render(request, account, "found", lookup=lookup, found=found, billable=billable, form=form,
                            conversation_id=conversation_id)  # fmt: skip
    form = ResolutionVoidForm(request.POST)
    if not form.is_valid():
        return _void_render(request, account, "found", **_void_lookup(account, form))
    resolution = _resolution_of_account(account, form.cleaned_data["resolution"])
    if step != "void":  # "confirm": show what the void does before doing it
        return _void_render(request, account, "confirm", form=form, resolution=resolution)
    reason = form.cleaned_data["reason"]
    try:
        resolution = resolution_void(resolution=resolution, actor=request.user, reason=reason)
    except ValidationError as exc:
        resolution.refresh_from_db()
        repeated = resolution.voided_at is not None and resolution.voided_by_id == request.user.pk
        if not (repeated and resolution.void_reason == reason):
            form_errors_apply(form, exc)
            return _void_render(request, account, "confirm", form=form, resolution=resolution)
    if not request.htmx:
        messages.success(request, f"Voided the resolution of conversation {resolution.conversation_id}.")
        return redirect(reverse("staff-account", args=[account.pk]))
    response = _void_render(request, account, "done", resolution=resolution)
    response["HX-Trigger"] = "account-changed"
    return response


def _void_lookup(account, form: ResolutionVoidForm) -> dict:
    conversation_id = form.data.get("conversation_id", "")
    found = list(conversation_resolutions_list(account=account, conversation_id=conversation_id))
    return {
        "form": form, "found": found, "billable": next((r for r in found if r.voided_at is None), None),
        "conversation_id": conversation_id,
        "lookup": ConversationLookupForm(initial={"conversation_id": conversation_id}),
    }  # fmt: skip


def _resolution_of_account(account, pk: int) -> Resolution:
    resolution = Resolution.objects.filter(account=account, pk=pk).first()
    if resolution is None:
        raise Http404("No such resolution in this account.")
    return resolution
