from django.urls import path

from . import apis

api_urlpatterns = [
    path("account", apis.AccountDetailApi.as_view(), name="api-account"),
    path("api-keys", apis.ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("api-keys/<int:key_id>", apis.ApiKeyDetailApi.as_view(), name="api-key-detail"),
    path("api-keys/<int:key_id>/revoke", apis.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
    path("staff/accounts", apis.StaffAccountListApi.as_view(), name="api-staff-accounts"),
    path("staff/accounts/<int:account_id>", apis.StaffAccountDetailApi.as_view(), name="api-staff-account"),
]
