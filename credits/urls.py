from django.urls import path

from . import apis

api_urlpatterns = [
    path("credits", apis.CreditsApi.as_view(), name="api-credits"),
    path("staff/accounts/<int:account_id>/credits", apis.StaffCreditsApi.as_view(), name="api-staff-credits"),
    path("staff/accounts/<int:account_id>/credit-grants", apis.StaffCreditGrantApi.as_view(), name="api-credit-grant"),
]
