"""The customer's credits page: balance and packs for everyone of the account; for its billing admin, buying
a pack from the plan's offers (choose, confirm, then Stripe invoices it) and the alert settings (low-credit
threshold, monthly budget). Each action is a POST with CSRF and an htmx enhancement of the same URL."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect

from accounts.models import CreditPackOffer, Role
from accounts.pages import (
    IdempotentForm,
    billing_admin_page,
    customer_page,
    form_errors_apply,
    refused_status,
    render_page,
)
from billing_portal import clock
from billing_portal.money import major_amount_text, parse_major_amount
from billing_portal.stripe_client import StripeRejected

from ..budget import THRESHOLD_RANGE, account_alert_settings_update, budget_alert_get
from ..purchases import CreditPurchaseInterrupted, credit_pack_purchase
from ..selectors import credit_balance, credit_pack_list

PAGE = "portal/credits.html"
PACKS_PANEL, ALERTS_PANEL = "portal/_credits_panel.html", "portal/_alert_settings.html"


class PurchaseConfirmForm(IdempotentForm):
    offer = forms.ModelChoiceField(
        queryset=CreditPackOffer.objects.none(), widget=forms.HiddenInput,
        error_messages={
            "required": "Choose a pack to buy.", "invalid_choice": "That pack is not on sale on your plan.",
        },
    )  # fmt: skip

    def __init__(self, *args, account, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["offer"].queryset = account.plan_version.offers.all()


class AlertSettingsForm(forms.Form):
    threshold_percent = forms.IntegerField(
        label="Low-credit alert threshold (%)",
        min_value=THRESHOLD_RANGE[0], max_value=THRESHOLD_RANGE[1],
        help_text="Tell me when the credits left fall below this share of my active packs.",
        error_messages={
            "required": "Enter a threshold from 1 to 99 %.", "invalid": "Enter a whole number from 1 to 99.",
            "min_value": "Enter a threshold from 1 to 99 %%.", "max_value": "Enter a threshold from 1 to 99 %%.",
        },
    )  # fmt: skip
    budget = forms.CharField(
        label="Monthly budget", required=False, max_length=40,
        help_text="Tell me once per billing period when its spend (seats and overage) passes this amount. "
                  "Leave blank for no budget alert.",
    )  # fmt: skip

    def __init__(self, *args, account, **kwargs):
        self.account = account
        super().__init__(*args, **kwargs)

    def clean_budget(self) -> int | None:
        text = self.cleaned_data["budget"].strip()
        if not text:
            return None
        try:
            amount = parse_major_amount(text, self.account.currency)
        except ValueError as error:
            raise ValidationError(str(error)) from None
        if amount <= 0:
            raise ValidationError("Enter an amount above zero, or leave it blank for no budget alert.")
        return amount


def _alert_form(account, data=None) -> AlertSettingsForm:
    initial = {
        "threshold_percent": account.low_credit_threshold_percent,
        "budget": major_amount_text(account.monthly_budget_minor, account.currency)
        if account.monthly_budget_minor
        else "",
    }
    return AlertSettingsForm(data, account=account, initial=initial)


def _context(request, **extra) -> dict:
    account = request.account
    budget_alert = budget_alert_get(account=account)
    now = clock.now()
    return {
        "account": account,
        "can_manage": request.user.role == Role.CUSTOMER_BILLING_ADMIN,
        "balance": credit_balance(account=account),
        "packs": credit_pack_list(account=account).select_related("offer"),
        "offers": account.plan_version.offers.all(),
        "alert_form": _alert_form(account),
        "budget_check": budget_alert
        if budget_alert and budget_alert.period_end and budget_alert.period_end > now
        else None,
        **extra,
    }


@customer_page
def credit_page(request):
    return render_page(request, PAGE, _context(request))


@billing_admin_page
def credit_purchase_form(request):
    """GET ?offer=<id>: the confirm step (resolutions, unit price, total, validity). POST: buy it once per
    drawn form (the form's key goes to the purchase), then back to the packs, where it awaits payment."""
    account = request.account
    if request.method != "POST":
        if "offer" not in request.GET:
            return redirect("customer-credits")
        form = PurchaseConfirmForm(initial={"offer": request.GET["offer"]}, account=account)
        offer = (
            form.fields["offer"].queryset.filter(pk=request.GET["offer"]).first()
            if request.GET["offer"].isascii() and request.GET["offer"].isdecimal()
            else None
        )
        if offer is None:
            return render_page(
                request, PAGE, _context(request, purchase_error="That pack is not on sale on your plan."),
                partial=PACKS_PANEL, status=refused_status(request, 404),
            )  # fmt: skip
        return render_page(request, PAGE, _context(request, confirm=form, offer=offer), partial=PACKS_PANEL)
    form = PurchaseConfirmForm(request.POST, account=account)
    if not form.is_valid():
        return render_page(
            request, PAGE, _context(request, purchase_error=" ".join(form.errors.get("offer", [])) or
                                    "The purchase form was incomplete: choose the pack again."),
            partial=PACKS_PANEL, status=refused_status(request, 400),
        )  # fmt: skip
    offer = form.cleaned_data["offer"]
    try:
        pack = credit_pack_purchase(
            account=account, offer=offer, actor=request.user, idempotency_key=form.cleaned_data["idempotency_key"]
        )
    except CreditPurchaseInterrupted:
        messages.warning(
            request,
            f"Stripe could not be reached while invoicing “{offer.name}”. Your purchase is saved and will be "
            "finished automatically within a few minutes; nothing is charged twice, so there is no need to buy "
            "it again. It shows below as awaiting payment until Stripe reports the invoice paid.",
        )
    except StripeRejected as error:
        messages.error(request, f"Stripe refused the purchase of “{offer.name}” ({error}). Nothing was charged.")
    except ValidationError as error:
        form_errors_apply(form, error)
        return render_page(
            request,
            PAGE,
            _context(request, confirm=form, offer=offer),
            partial=PACKS_PANEL,
            status=refused_status(request, 400),
        )
    else:
        if pack.status == pack.Status.ACTIVE:
            messages.success(request, f"“{offer.name}” is paid: {pack.granted:,} resolutions are ready to use.")
        else:
            messages.success(
                request,
                f"Purchase of “{offer.name}” started: Stripe has the invoice. The pack shows “awaiting payment” "
                "until Stripe reports the invoice paid, then its credits are yours.",
            )
    if request.htmx:
        return render_page(request, PAGE, _context(request), partial=PACKS_PANEL)
    return redirect("customer-credits")


@billing_admin_page
def alert_settings_form(request):
    """POST the threshold and the monthly budget (major units); one service saves them and audits it."""
    if request.method != "POST":
        return redirect("customer-credits")
    account = request.account
    form = _alert_form(account, request.POST)
    if form.is_valid():
        try:
            account_alert_settings_update(
                account=account, threshold_percent=form.cleaned_data["threshold_percent"],
                budget_minor=form.cleaned_data["budget"], actor=request.user,
            )  # fmt: skip
        except ValidationError as error:
            form_errors_apply(form, error)
        else:
            messages.success(request, "Alert settings saved.")
            if request.htmx:
                account.refresh_from_db()
                return render_page(request, PAGE, _context(request), partial=ALERTS_PANEL)
            return redirect("customer-credits")
    return render_page(
        request, PAGE, _context(request, alert_form=form), partial=ALERTS_PANEL, status=refused_status(request, 400)
    )
