from django.urls import path

from . import apis, migration_apis, plan_apis, views

api_urlpatterns = [
    path("staff/plan-migrations", migration_apis.PlanMigrationListApi.as_view(), name="api-plan-migrations"),
    path(
        "staff/plan-migrations/<int:migration_id>/cancel",
        migration_apis.PlanMigrationCancelApi.as_view(),
        name="api-plan-migration-cancel",
    ),
    path(
        "staff/plan-migrations/<int:migration_id>/retry",
        migration_apis.PlanMigrationRetryApi.as_view(),
        name="api-plan-migration-retry",
    ),
    path("account", apis.AccountDetailApi.as_view(), name="api-account"),
    path("api-keys", apis.ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("api-keys/<int:key_id>", apis.ApiKeyDetailApi.as_view(), name="api-key-detail"),
    path("api-keys/<int:key_id>/revoke", apis.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
    path("staff/accounts", apis.StaffAccountListApi.as_view(), name="api-staff-accounts"),
    path("staff/accounts/<int:account_id>", apis.StaffAccountDetailApi.as_view(), name="api-staff-account"),
    path("staff/price-plans", plan_apis.PricePlanListApi.as_view(), name="api-price-plans"),
    path(
        "staff/price-plans/<slug:slug>/versions",
        plan_apis.PricePlanVersionListApi.as_view(),
        name="api-price-plan-versions",
    ),
    path(
        "staff/price-plan-versions/<int:version_id>",
        plan_apis.PricePlanVersionDetailApi.as_view(),
        name="api-price-plan-version",
    ),
    path(
        "staff/price-plan-versions/<int:version_id>/publish",
        plan_apis.PricePlanVersionPublishApi.as_view(),
        name="api-price-plan-version-publish",
    ),
    path(
        "staff/price-plan-versions/<int:version_id>/retire",
        plan_apis.PricePlanVersionRetireApi.as_view(),
        name="api-price-plan-version-retire",
    ),
    path(
        "staff/price-plan-versions/<int:version_id>/stripe-sync-retry",
        plan_apis.PricePlanVersionStripeSyncRetryApi.as_view(),
        name="api-price-plan-version-stripe-sync-retry",
    ),
]

# Pages (included at the site root).
page_urlpatterns = [
    path("", views.home, name="home"),
    path("portal/api-keys/", views.api_key_page, name="customer-api-keys"),
    path("portal/api-keys/new", views.api_key_create_form, name="customer-api-key-create"),
    path("portal/api-keys/<int:key_id>/revoke", views.api_key_revoke_form, name="customer-api-key-revoke"),
]
