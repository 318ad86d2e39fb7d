"""Django admin for meter reporting, read-only: the report rows (meter events, corrections and the
adjustments that need a credit note or invoice item) and the windows they report. Changes go through the
services (the billing cycle's report step)."""

from __future__ import annotations

from django.contrib import admin

from accounts.admin import ReadOnlyAdminMixin

from .models import MeterReport, MeterWindow


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
