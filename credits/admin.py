"""Django admin for credits: packs (with the purchase state and the review flag), read-only; the ledger,
conversions and alerts, read-only too. Changes go through the services (grants, purchases, expiry).
Credits and money are shown formatted ("10,000 credits", "$0.90 per resolution"), as stored underneath."""

from __future__ import annotations

from django.contrib import admin

from accounts.admin import ReadOnlyAdminMixin
from billing_portal.admin_display import count_column, fields_formatted, money_column, unit_price_column

from .models import CreditAlert, CreditLedgerEntry, CreditPack, SeatConversion

pack_granted = count_column("granted", "Granted", unit="credit")
pack_remaining = count_column("remaining", "Remaining", unit="credit")
pack_unit_price = unit_price_column("unit_amount_decimal", "Paid per resolution")
ledger_quantity = count_column("quantity", "Credits", unit="credit", signed=True)
conversion_credits = count_column("credits", "Credits", unit="credit")
conversion_value = money_column("value_minor", "Seat value converted")


@admin.register(CreditPack)
class CreditPackAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id", "account", "source", "status", "purchase_state", pack_granted, pack_remaining, "expires_at",
        "needs_review", "review_note",
    ]  # fmt: skip
    list_filter = ["needs_review", "status", "source", "purchase_state"]
    search_fields = ["account__name", "stripe_invoice_id", "uid"]
    list_select_related = ["account"]
    fields = readonly_fields = fields_formatted(
        CreditPack,
        {
            "granted": pack_granted,
            "remaining": pack_remaining,
            "written_off": count_column("written_off", "Written off", unit="credit"),
            "unit_amount_decimal": pack_unit_price,
        },
    )


@admin.register(CreditLedgerEntry)
class CreditLedgerEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "account", "pack", "kind", ledger_quantity, "idempotency_key"]
    list_filter = ["kind"]
    list_select_related = ["account", "pack"]
    search_fields = ["idempotency_key"]
    fields = readonly_fields = fields_formatted(CreditLedgerEntry, {"quantity": ledger_quantity})


@admin.register(SeatConversion)
class SeatConversionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "account", "seats", conversion_value, conversion_credits, "status", "error"]
    list_filter = ["status"]
    list_select_related = ["account"]
    fields = readonly_fields = fields_formatted(
        SeatConversion,
        {
            "seat_unit_amount": money_column("seat_unit_amount", "Seat price (per seat, per month)"),
            "conversion_unit_amount_decimal": unit_price_column(
                "conversion_unit_amount_decimal", "Seat spend per credit", per="credit"
            ),
            "value_minor": conversion_value,
            "credits": conversion_credits,
        },
    )


@admin.register(CreditAlert)
class CreditAlertAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["account", "kind", "active", "raised_at", "cleared_at", "times_raised"]
