"""Django admin for credits: packs (with the purchase state and the review flag), read-only; the ledger,
conversions and alerts, read-only too. Changes go through the services (grants, purchases, expiry)."""

from __future__ import annotations

from django.contrib import admin

from accounts.admin import ReadOnlyAdminMixin

from .models import CreditAlert, CreditLedgerEntry, CreditPack, SeatConversion


@admin.register(CreditPack)
class CreditPackAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id", "account", "source", "status", "purchase_state", "granted", "remaining", "expires_at",
        "stripe_invoice_id", "needs_review", "review_note",
    ]  # fmt: skip
    list_filter = ["needs_review", "status", "source", "purchase_state"]
    search_fields = ["account__name", "stripe_invoice_id", "uid"]
    list_select_related = ["account"]


@admin.register(CreditLedgerEntry)
class CreditLedgerEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "account", "pack", "kind", "quantity", "idempotency_key"]
    list_filter = ["kind"]
    list_select_related = ["account", "pack"]
    search_fields = ["idempotency_key"]


@admin.register(SeatConversion)
class SeatConversionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "account", "seats", "credits", "status", "error"]
    list_filter = ["status"]


@admin.register(CreditAlert)
class CreditAlertAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["account", "kind", "active", "raised_at", "cleared_at", "times_raised"]
