"""Django admin for meter reporting and reconciliation, read-only: the report rows (meter events,
corrections and the adjustments that need a credit note or invoice item), the windows they report, and the
differences between the portal's reported totals and Stripe's (with the runs that looked). Changes go through
the services (the billing cycle's report and reconcile steps)."""

from __future__ import annotations

from django.contrib import admin

from accounts.admin import ReadOnlyAdminMixin
from billing_portal.admin_display import count_column, fields_formatted, money_column

from .models import MeterReconciliationDifference, MeterReconciliationRun, MeterReport, MeterWindow, Resolution

resolution_amount = money_column("amount_minor", "Overage money")
report_quantity = count_column("quantity", "Overage", unit="resolution", signed=True)
report_adjustment = money_column("adjustment_minor", "Adjustment (money)")
window_overage = count_column("overage", "Overage", unit="resolution")
window_reported = count_column("reported", "Reported", unit="resolution")
difference_portal = count_column("portal", "Portal (confirmed in the meter)", unit="resolution")
difference_stripe = count_column("stripe", "Stripe's meter", unit="resolution")


@admin.register(Resolution)
class ResolutionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Billable resolutions, read-only (a void goes through the void service, with its reason)."""

    list_display = ["conversation_id", "account", "kind", "resolved_at", "funding", resolution_amount, "voided_at"]
    list_filter = ["kind", "funding"]
    search_fields = ["=conversation_id"]
    list_select_related = ["account"]
    ordering = ["-id"]
    show_full_result_count = False  # accounts have millions of rows: one count per page is enough
    fields = readonly_fields = fields_formatted(Resolution, {"amount_minor": resolution_amount})


@admin.register(MeterReport)
class MeterReportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Few, narrow columns (the list must fit a laptop screen): the error text and times are on the row's page.
    list_display = [
        "id",
        "account",
        "window_start",
        "sequence",
        report_quantity,
        "state",
        "attempts",
        report_adjustment,
        "error_brief",
    ]
    list_filter = ["state"]
    search_fields = ["account__name", "identifier"]
    list_select_related = ["account", "window"]
    date_hierarchy = "created_at"
    fields = readonly_fields = fields_formatted(
        MeterReport, {"quantity": report_quantity, "adjustment_minor": report_adjustment}
    )

    @admin.display(description="Stripe said")
    def error_brief(self, report: MeterReport):
        """Why a row is held, cut short so the list stays narrow (the whole text is on the row's page)."""
        text = report.last_error
        return (text[:57] + "…") if len(text) > 58 else (text or "—")

    @admin.display(description="Window", ordering="window__start")
    def window_start(self, report: MeterReport):
        return report.window.start


@admin.register(MeterWindow)
class MeterWindowAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["account", "start", "end", "period_start", "period_end", window_overage, window_reported]
    search_fields = ["account__name"]
    list_select_related = ["account"]
    date_hierarchy = "start"
    fields = readonly_fields = fields_formatted(MeterWindow, {"overage": window_overage, "reported": window_reported})


class OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("open", "Open"), ("resolved", "Resolved")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(MeterReconciliationDifference)
class MeterReconciliationDifferenceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "account", "period_start", "period_end", difference_portal, difference_stripe, "difference", "first_found_at",
        "last_checked_at", "resolved_at", "emailed_at",
    ]  # fmt: skip
    list_filter = [OpenFilter]
    list_select_related = ["account"]
    search_fields = ["account__name"]
    ordering = ["-first_found_at", "-pk"]
    readonly_fields = [
        *fields_formatted(MeterReconciliationDifference, {"portal": difference_portal, "stripe": difference_stripe}),
        "difference",
    ]
    fields = readonly_fields

    @admin.display(description="Stripe − portal")
    def difference(self, obj):
        return f"{obj.difference:+,} resolutions"


@admin.register(MeterReconciliationRun)
class MeterReconciliationRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["started_at", "checked", "differences", "in_flight", "failed"]
    ordering = ["-started_at"]
    readonly_fields = [f.name for f in MeterReconciliationRun._meta.fields]

    @admin.display(description="failed")
    def failed(self, obj):
        return len(obj.failures or [])
