from django.urls import path

from . import apis

api_urlpatterns = [
    path("credits", apis.CreditsApi.as_view(), name="api-credits"),
    path("credit-purchases", apis.CreditPurchaseApi.as_view(), name="api-credit-purchases"),
    path(
        "staff/accounts/<int:account_id>/credit-purchases",
        apis.StaffCreditPurchaseApi.as_view(),
        name="api-staff-credit-purchases",
    ),
    path("staff/accounts/<int:account_id>/credits", apis.StaffCreditsApi.as_view(), name="api-staff-credits"),
    path("staff/accounts/<int:account_id>/credit-grants", apis.StaffCreditGrantApi.as_view(), name="api-credit-grant"),
    path(
        "staff/accounts/<int:account_id>/seat-conversions/preview",
        apis.SeatConversionPreviewApi.as_view(),
        name="api-seat-conversion-preview",
    ),
    path(
        "staff/accounts/<int:account_id>/seat-conversions",
        apis.SeatConversionConfirmApi.as_view(),
        name="api-seat-conversion-confirm",
    ),
]
