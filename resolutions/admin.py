"""Django admin for meter reporting and reconciliation, read-only: the report rows (meter events,
corrections and the adjustments that need a credit note or invoice item), the windows they report, and the
differences between the portal's reported totals and Stripe's (with the runs that looked). Changes go through
the services (the billing cycle's report and reconcile steps)."""

from __future__ import annotations

from django.contrib import admin

from accounts.admin import ReadOnlyAdminMixin

from .models import MeterReconciliationDifference, MeterReconciliationRun, MeterReport, MeterWindow


@admin.register(MeterReport)
class MeterReportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id", "account", "window_start", "sequence", "quantity", "state", "attempts", "adjustment_minor",
        "last_error", "created_at", "confirmed_at",
    ]  # fmt: skip
    list_filter = ["state"]
    search_fields = ["account__name", "identifier"]
    list_select_related = ["account", "window"]
    date_hierarchy = "created_at"

    @admin.display(description="Window", ordering="window__start")
    def window_start(self, report: MeterReport):
        return report.window.start


@admin.register(MeterWindow)
class MeterWindowAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["account", "start", "end", "period_start", "period_end", "overage", "reported"]
    search_fields = ["account__name"]
    list_select_related = ["account"]
    date_hierarchy = "start"


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
        "account", "period_start", "period_end", "portal", "stripe", "difference", "first_found_at",
        "last_checked_at", "resolved_at", "emailed_at",
    ]  # fmt: skip
    list_filter = [OpenFilter]
    list_select_related = ["account"]
    search_fields = ["account__name"]
    ordering = ["-first_found_at", "-pk"]
    readonly_fields = [f.name for f in MeterReconciliationDifference._meta.fields] + ["difference"]

    @admin.display(description="Stripe − portal")
    def difference(self, obj):
        return f"{obj.difference:+,}"


@admin.register(MeterReconciliationRun)
class MeterReconciliationRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["started_at", "checked", "differences", "in_flight", "failed"]
    ordering = ["-started_at"]
    readonly_fields = [f.name for f in MeterReconciliationRun._meta.fields]

    @admin.display(description="failed")
    def failed(self, obj):
        return len(obj.failures or [])
