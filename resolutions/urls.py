from django.urls import path

from . import apis, simulation_apis
from .views import dashboard, invoices, operations, plan_migrations, price_plans, resolution_list, simulations, staff

api_urlpatterns = [
    path("conversation-events", apis.ConversationEventsApi.as_view(), name="api-conversation-events"),
    path("usage", apis.UsageApi.as_view(), name="api-usage"),
    path("resolutions", apis.ResolutionListApi.as_view(), name="api-resolutions"),
    path(
        "staff/accounts/<int:account_id>/invoice-preview", apis.InvoicePreviewApi.as_view(), name="api-invoice-preview"
    ),
    path("staff/resolutions/<int:resolution_id>/void", apis.ResolutionVoidApi.as_view(), name="api-resolution-void"),
    path("staff/price-simulations", simulation_apis.PriceSimulationListApi.as_view(), name="api-price-simulations"),
    path(
        "staff/price-simulations/<int:simulation_id>",
        simulation_apis.PriceSimulationDetailApi.as_view(),
        name="api-price-simulation",
    ),
]

# Pages (included at the site root).
page_urlpatterns = [
    path("portal/", dashboard.customer_home, name="customer-home"),
    path("portal/next-invoice/stripe", dashboard.next_invoice_stripe, name="customer-next-invoice-stripe"),
    path("portal/resolutions/", resolution_list.resolution_list_page, name="customer-resolutions"),
    path("portal/resolutions/export.csv", resolution_list.resolution_export_csv, name="customer-resolutions-csv"),
    path("portal/invoices/", invoices.invoice_list_page, name="customer-invoices"),
    path("portal/invoices/upcoming/", invoices.invoice_upcoming, name="customer-invoice-upcoming"),
    path("staff/", staff.staff_home, name="staff-home"),
    path("staff/accounts/<int:account_id>/", staff.staff_account, name="staff-account"),
    path("staff/accounts/<int:account_id>/void", staff.resolution_void_form, name="staff-resolution-void"),
    path("staff/accounts/<int:account_id>/invoice-preview", staff.staff_invoice_preview, name="staff-invoice-preview"),
    path("staff/pricing/simulations/", simulations.price_simulation_list, name="staff-price-simulations"),
    path("staff/pricing/simulations/new", simulations.price_simulation_new, name="staff-price-simulation-new"),
    path(
        "staff/pricing/simulations/<int:simulation_id>/",
        simulations.price_simulation_detail,
        name="staff-price-simulation",
    ),
    path("staff/pricing/migrations/", plan_migrations.plan_migration_list, name="staff-plan-migrations"),
    path("staff/pricing/migrations/new", plan_migrations.plan_migration_new, name="staff-plan-migration-new"),
    path(
        "staff/pricing/migrations/<int:migration_id>/cancel",
        plan_migrations.plan_migration_cancel_form,
        name="staff-plan-migration-cancel",
    ),
    path(
        "staff/pricing/migrations/<int:migration_id>/retry",
        plan_migrations.plan_migration_retry_form,
        name="staff-plan-migration-retry",
    ),
    # Operations (admins only): what needs attention and the logs behind it.
    path("staff/ops/", operations.ops_index, name="staff-ops"),
    path("staff/ops/meter-reports/", operations.ops_meter_reports, name="staff-ops-meter-reports"),
    path("staff/ops/reconciliation/", operations.ops_reconciliation, name="staff-ops-reconciliation"),
    path(
        "staff/ops/reconciliation/<int:difference_id>/resolve",
        operations.ops_difference_resolve,
        name="staff-ops-difference-resolve",
    ),
    path("staff/ops/stripe-sync/", operations.ops_stripe_sync, name="staff-ops-stripe-sync"),
    path(
        "staff/ops/stripe-sync/versions/<int:version_id>/retry",
        operations.ops_version_sync_retry,
        name="staff-ops-version-sync-retry",
    ),
    path(
        "staff/ops/stripe-sync/webhook-endpoint/retry",
        operations.ops_webhook_endpoint_retry,
        name="staff-ops-webhook-endpoint-retry",
    ),
    path("staff/ops/webhooks/", operations.ops_webhooks, name="staff-ops-webhooks"),
    path("staff/ops/audit/", operations.ops_audit, name="staff-ops-audit"),
    path("staff/pricing/plans/", price_plans.price_plan_list_page, name="staff-price-plans"),
    path(
        "staff/pricing/plans/<int:plan_id>/versions/new",
        price_plans.price_plan_version_new,
        name="staff-price-plan-version-new",
    ),
    path(
        "staff/pricing/plans/<int:plan_id>/versions/validate",
        price_plans.price_plan_version_validate,
        name="staff-price-plan-version-validate",
    ),
    path(
        "staff/pricing/plans/versions/<int:version_id>/",
        price_plans.price_plan_version_page,
        name="staff-price-plan-version",
    ),
    path(
        "staff/pricing/plans/versions/<int:draft_id>/edit",
        price_plans.price_plan_version_edit,
        name="staff-price-plan-version-edit",
    ),
    path(
        "staff/pricing/plans/versions/<int:version_id>/publish",
        price_plans.price_plan_version_publish_form,
        name="staff-price-plan-version-publish",
    ),
    path(
        "staff/pricing/plans/versions/<int:version_id>/retire",
        price_plans.price_plan_version_retire_form,
        name="staff-price-plan-version-retire",
    ),
    path(
        "staff/pricing/plans/versions/<int:version_id>/stripe-sync-retry",
        price_plans.price_plan_version_sync_retry_form,
        name="staff-price-plan-version-sync-retry",
    ),
]
