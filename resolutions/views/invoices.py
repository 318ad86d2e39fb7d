"""The customer's invoices: Stripe's invoices as dj-stripe mirrors them, and the upcoming invoice (the invoice
preview, which asks Stripe: the page loads it with htmx after it renders, from its own small view)."""

from __future__ import annotations

import logging

from django.http import Http404

from accounts.pages import customer_page, render_page
from billing_portal import clock
from billing_portal.stripe_client import StripeFailure

from ..selectors import billing_period_overage_get, invoice_list
from ..services.invoice_preview import invoice_preview_get

logger = logging.getLogger(__name__)


def upcoming_invoice_context(*, account) -> dict:
    """The invoice preview for `_upcoming_invoice.html`, or the plain reason there is none to show."""
    try:
        return {"upcoming": invoice_preview_get(account=account, now=clock.now()), "upcoming_error": ""}
    except Http404:
        return {"upcoming": None, "upcoming_error": "No upcoming invoice: the account has no Stripe subscription yet."}
    except StripeFailure as exc:
        logger.warning("Invoice preview of account %s failed: %s", account.pk, exc)
        return {
            "upcoming": None,
            "upcoming_error": "Stripe could not be reached just now, so the upcoming invoice cannot be shown. "
            "Your invoices below are unaffected; try again in a minute.",
        }


INVOICES_SHOWN = 36  # three years of monthly invoices, with the packs bought between them


def _page_context(account) -> dict:
    invoices = invoice_list(account=account, limit=INVOICES_SHOWN + 1)
    return {
        "account": account,
        "invoices": invoices[:INVOICES_SHOWN],
        "invoices_more": len(invoices) > INVOICES_SHOWN,
        "invoices_shown": INVOICES_SHOWN,
        "billing_period": billing_period_overage_get(account=account, now=clock.now()),
    }


@customer_page
def invoice_list_page(request):
    return render_page(request, "portal/invoices.html", _page_context(request.account))


@customer_page
def invoice_upcoming(request):
    """The upcoming invoice: the fragment for htmx; without JavaScript, the invoices page with it filled in."""
    context = {"account": request.account, **upcoming_invoice_context(account=request.account)}
    if getattr(request, "htmx", None) and not request.htmx.history_restore_request:
        return render_page(request, "portal/invoices.html", context, partial="portal/_upcoming_invoice.html")
    return render_page(request, "portal/invoices.html", {**_page_context(request.account), **context})
