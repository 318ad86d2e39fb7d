"""Staff actions on an account's credits, each a form with a confirm step whose idempotency key goes to the
service (a double submit is one action): convert seats into credits, grant promotional credits, buy a pack
for the customer. With htmx each step swaps the action's card and the account's figures refresh after it
(`HX-Trigger: account-changed`); without JavaScript each step is a full page and the last redirects back."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.urls import reverse

from accounts.models import CreditPackOffer
from accounts.pages import IdempotentForm, form_errors_apply, render_page, staff_page
from accounts.selectors import account_get_visible
from billing_portal import clock
from billing_portal.stripe_client import StripeFailure, StripeRejected, StripeUnavailable

from ..conversions import seat_conversion_confirm, seat_conversion_preview
from ..models import CreditPack
from ..purchases import CreditPurchaseInterrupted, credit_pack_purchase
from ..services import MAX_GRANT, credit_pack_grant


def _render(request, account, partial: str, title: str, **context):
    context = {"account": account, "partial": partial, "title": title, **context}
    return render_page(request, "portal/staff_action.html", context, partial=partial)


def _done(request, account, partial: str, title: str, message: str, **context):
    """The last step: htmx gets the result in the card (and the figures refresh); a plain POST is redirected
    to the account page with the message (so reloading it does not post again)."""
    if not request.htmx:
        messages.success(request, message)
        return redirect(reverse("staff-account", args=[account.pk]))
    response = _render(request, account, partial, title, step="done", message=message, **context)
    response["HX-Trigger"] = "account-changed"
    return response


# --- Seat-to-credit conversion: seats -> preview -> confirm -> result ------------------------------------


class SeatConversionForm(IdempotentForm):
    seats = forms.IntegerField(
        label="Seats to convert", min_value=1, max_value=100_000,
        error_messages={"required": "Say how many seats to convert.", "min_value": "Convert at least one seat.",
                        "invalid": "Give a whole number of seats."},
    )  # fmt: skip


CONVERSION = ("portal/_staff_conversion.html", "Convert seats into credits")


@staff_page
def seat_conversion_form(request, account_id: int):
    account = account_get_visible(user=request.user, pk=account_id)
    if request.method != "POST":
        return _render(request, account, *CONVERSION, step="seats", form=SeatConversionForm())
    form = SeatConversionForm(request.POST)
    step = request.POST.get("step", "preview")
    if not form.is_valid():
        return _render(request, account, *CONVERSION, step="seats", form=form)
    seats = form.cleaned_data["seats"]
    try:
        preview = seat_conversion_preview(account=account, seats=seats)
    except ValidationError as exc:
        if step != "confirm":
            form_errors_apply(form, exc)
            return _render(request, account, *CONVERSION, step="seats", form=form)
        preview = None  # a repeat of a confirmed conversion: its seats are gone already; the key finds it
    except StripeFailure as exc:
        form.add_error(None, f"Stripe could not be asked about the seats just now ({exc}). Try again shortly.")
        return _render(request, account, *CONVERSION, step="seats", form=form)
    if step != "confirm":
        return _render(request, account, *CONVERSION, step="preview", form=form, preview=preview)
    try:
        conversion = seat_conversion_confirm(
            account=account, seats=seats, actor=request.user, idempotency_key=form.cleaned_data["idempotency_key"]
        )
    except ValidationError as exc:
        form_errors_apply(form, exc)
        return _render(request, account, *CONVERSION, step="preview" if preview else "seats", form=form,
                       preview=preview)  # fmt: skip
    except StripeUnavailable as exc:
        form.add_error(
            None,
            f"Stripe could not be reached ({exc}). The conversion is saved and the billing cycle finishes it: "
            "seats are never removed without the credits, and the credits are never granted twice.",
        )
        return _render(request, account, *CONVERSION, step="preview", form=form, preview=preview)
    seats = f"{conversion.seats} seat{'' if conversion.seats == 1 else 's'}"
    message = (
        f"Converted {seats} into {conversion.credits:,} credits."
        if conversion.status == conversion.Status.DONE
        else f"The conversion of {seats} is {conversion.get_status_display().lower()}."
    )
    return _done(
        request,
        account,
        *CONVERSION,
        message,
        conversion=conversion,
        seats_after=conversion.seats_before - conversion.seats,
    )


# --- Promotional grant: quantity, expiry, reason -> confirm -> result -----------------------------------


class CreditGrantForm(IdempotentForm):
    quantity = forms.IntegerField(
        label="Credits (resolutions)", min_value=1, max_value=MAX_GRANT,
        error_messages={"required": "Say how many credits to grant.", "min_value": "Grant at least one credit.",
                        "max_value": f"Grant at most {MAX_GRANT:,} credits at a time.",
                        "invalid": "Give a whole number of credits."},
    )  # fmt: skip
    expires_on = forms.DateField(
        label="Usable through (optional; default one year)", required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Give a date such as 2027-06-30."},
    )  # fmt: skip
    reason = forms.CharField(
        label="Reason (required, audited)", max_length=2000, strip=True, widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": "Say why promotional credit is granted: it is audited."},
    )  # fmt: skip

    def clean_expires_on(self):
        day = self.cleaned_data.get("expires_on")
        if day is not None and day >= dt.date(9000, 1, 1):  # the day after must exist (9999-12-31 has none)
            raise forms.ValidationError("Give a date before the year 9000.")
        return day

    def expires_at(self, account) -> dt.datetime | None:
        """The end of the chosen day in the account's timezone (the customer can use it all that day)."""
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zoneinfo.ZoneInfo(account.timezone))


GRANT = ("portal/_staff_grant.html", "Grant promotional credits")


@staff_page
def credit_grant_form(request, account_id: int):
    account = account_get_visible(user=request.user, pk=account_id)
    if request.method != "POST":
        return _render(request, account, *GRANT, step="form", form=CreditGrantForm())
    form = CreditGrantForm(request.POST)
    if not form.is_valid():
        return _render(request, account, *GRANT, step="form", form=form)
    expires_at = form.expires_at(account)
    if request.POST.get("step") != "confirm":
        if expires_at is not None and expires_at <= clock.now():
            form.add_error("expires_on", "That day is over: the pack would already be expired.")
            return _render(request, account, *GRANT, step="form", form=form)
        return _render(request, account, *GRANT, step="confirm", form=form, expires_at=expires_at)
    try:
        pack = credit_pack_grant(
            account=account, quantity=form.cleaned_data["quantity"], source=CreditPack.Source.PROMOTIONAL,
            actor=request.user, expires_at=expires_at, reason=form.cleaned_data["reason"],
            idempotency_key=form.cleaned_data["idempotency_key"],
        )  # fmt: skip
    except ValidationError as exc:
        if hasattr(exc, "error_dict") and "expires_at" in exc.error_dict:
            exc = ValidationError({"expires_on": exc.error_dict["expires_at"]})
        form_errors_apply(form, exc)
        return _render(request, account, *GRANT, step="form", form=form)
    return _done(request, account, *GRANT, f"Granted {pack.granted:,} promotional credits.", pack=pack)


# --- Buy a pack for the customer: offer -> confirm -> awaiting payment ----------------------------------


class StaffPurchaseForm(IdempotentForm):
    offer = forms.ModelChoiceField(
        queryset=CreditPackOffer.objects.none(), label="Credit pack", widget=forms.RadioSelect, empty_label=None,
        error_messages={"required": "Choose a credit pack.", "invalid_choice": "Choose one of the plan's packs."},
    )  # fmt: skip

    def __init__(self, *args, account, **kwargs):
        super().__init__(*args, **kwargs)
        offers = self.fields["offer"]
        offers.queryset = CreditPackOffer.objects.filter(version=account.plan_version).select_related("version")
        offers.label_from_instance = lambda o: f"{o.name}: {o.resolutions:,} resolutions for {o.validity_days} days"


PURCHASE = ("portal/_staff_purchase.html", "Buy a credit pack for the customer")


@staff_page
def staff_purchase_form(request, account_id: int):
    account = account_get_visible(user=request.user, pk=account_id)
    if request.method != "POST":
        return _render(request, account, *PURCHASE, step="form", form=StaffPurchaseForm(account=account))
    form = StaffPurchaseForm(request.POST, account=account)
    if not form.is_valid():
        return _render(request, account, *PURCHASE, step="form", form=form)
    offer = form.cleaned_data["offer"]
    if request.POST.get("step") != "confirm":
        return _render(request, account, *PURCHASE, step="confirm", form=form, offer=offer)
    try:
        pack = credit_pack_purchase(
            account=account, offer=offer, actor=request.user, idempotency_key=form.cleaned_data["idempotency_key"]
        )
    except ValidationError as exc:
        form_errors_apply(form, exc)
        return _render(request, account, *PURCHASE, step="form", form=form)
    except StripeRejected as exc:
        form.add_error(None, f"Stripe refused the purchase ({exc}). Nothing was charged.")
        return _render(request, account, *PURCHASE, step="form", form=form)
    except CreditPurchaseInterrupted as exc:
        form.add_error(
            None,
            f"Stripe could not be reached while invoicing the pack ({exc}). The purchase is saved and will be "
            "completed automatically; confirming again continues the same purchase, nothing is charged twice.",
        )
        return _render(request, account, *PURCHASE, step="confirm", form=form, offer=offer)
    message = f"Bought {offer.name} for the customer: {pack.get_status_display().lower()}."
    return _done(request, account, *PURCHASE, message, pack=pack, offer=offer)
