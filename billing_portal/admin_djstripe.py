"""dj-stripe's admin, read-only. Its models mirror Stripe (webhooks and the services' syncs write them), so
the admin shows them and never adds, edits, deletes or re-syncs one: a change is made in Stripe (or through
the portal's services) and the mirror follows.

dj-stripe 2.11 reads most fields from the stored Stripe object (`stripe_data["paid"]`), and newer API versions
than dj-stripe knows dropped some of them (Invoice.paid under the pinned STRIPE_API_VERSION): a column or field
whose key the stored object lacks shows "—" instead of answering 500. The invoice list shows what an invoice
has under the pinned version: its number, customer, status, total (formatted) and period."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable

import djstripe.admin  # noqa: F401 - dj-stripe's ModelAdmins are registered first, then replaced here
from django.contrib import admin
from django.utils.text import capfirst
from djstripe import models as djstripe_models

from billing_portal.money import format_money

MISSING = "—"


@functools.cache  # one callable per name: the admin matches read-only fields by identity
def _stripe_property(name: str) -> Callable:
    """A column / read-only field for a dj-stripe property: its value, or "—" when the stored object lacks it."""

    def show(obj):
        try:
            return getattr(obj, name)
        except KeyError:  # not in this API version's object
            return MISSING

    show.short_description = capfirst(name.replace("_", " "))
    show.__name__ = name
    return show


def _properties(model) -> set[str]:
    return {name for name in dir(model) if isinstance(getattr(model, name, None), property)}


def _safe(names, model) -> list:
    properties = _properties(model)
    return [_stripe_property(n) if isinstance(n, str) and n in properties else n for n in names]


class MirroredFromStripeAdmin:
    """Mixed in before a dj-stripe ModelAdmin: view only, no actions, and no 500 on a field Stripe dropped."""

    change_form_template = "admin/djstripe_mirror_change_form.html"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        return {}  # re-sync, sync-all, cancel and delete all write to Stripe or the mirror

    def get_urls(self):
        # dj-stripe also routes those actions at <model>/action/<name>/<model>/ behind is_staff alone (no model
        # permission; any staff user could cancel a customer's subscription): no actions, so no such URL.
        return [url for url in super().get_urls() if url.name != "djstripe_custom_action"]

    def get_list_display(self, request):
        return _safe(super().get_list_display(request), self.model)

    def get_readonly_fields(self, request, obj=None):
        return _safe(super().get_readonly_fields(request, obj), self.model)

    def get_fields(self, request, obj=None):
        return _safe(super().get_fields(request, obj), self.model)


class MirroredFromStripeInline:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _stripe_time(value) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value, tz=dt.UTC) if isinstance(value, int) else None


class InvoiceAdmin(MirroredFromStripeAdmin, djstripe.admin.admin.InvoiceAdmin):
    """Columns an invoice has under the pinned API version (no `paid`: `status` says it)."""

    list_display = ("number", "customer", "status", "total_money", "period_start_at", "period_end_at")
    list_filter = ("created",)

    def get_list_display(self, request):
        return ["__str__", *self.list_display, "created", "livemode"]

    @admin.display(description="Total")
    def total_money(self, invoice):
        total, currency = invoice.stripe_data.get("total"), invoice.stripe_data.get("currency")
        return MISSING if total is None or not currency else format_money(total, currency)

    @admin.display(description="Period start")
    def period_start_at(self, invoice):
        return _stripe_time(invoice.stripe_data.get("period_start"))

    @admin.display(description="Period end")
    def period_end_at(self, invoice):
        return _stripe_time(invoice.stripe_data.get("period_end"))


def _read_only_inlines(inlines) -> tuple:
    return tuple(type(f"ReadOnly{i.__name__}", (MirroredFromStripeInline, i), {}) for i in inlines)


def djstripe_admin_read_only(site: admin.AdminSite = admin.site) -> None:
    """Replace every registered dj-stripe ModelAdmin with a read-only subclass of itself (idempotent)."""
    for model, model_admin in list(site._registry.items()):
        if model._meta.app_label != djstripe_models.Invoice._meta.app_label:
            continue
        if isinstance(model_admin, MirroredFromStripeAdmin):
            continue
        original = type(model_admin)
        if model is djstripe_models.Invoice:
            replacement = InvoiceAdmin
        else:
            replacement = type(f"ReadOnly{original.__name__}", (MirroredFromStripeAdmin, original), {})
        replacement.inlines = _read_only_inlines(getattr(original, "inlines", ()))
        site.unregister(model)
        site.register(model, replacement)


djstripe_admin_read_only()
