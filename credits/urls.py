from django.urls import path

from . import apis
from .views import customer, staff

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

# Pages (included at the site root).
page_urlpatterns = [
    path("portal/credits/", customer.credit_page, name="customer-credits"),
    path("portal/credits/buy", customer.credit_purchase_form, name="customer-credit-purchase"),
    path("portal/credits/alerts", customer.alert_settings_form, name="customer-alert-settings"),
    path("staff/accounts/<int:account_id>/seat-conversion", staff.seat_conversion_form, name="staff-seat-conversion"),
    path("staff/accounts/<int:account_id>/grant", staff.credit_grant_form, name="staff-credit-grant"),
    path("staff/accounts/<int:account_id>/purchase", staff.staff_purchase_form, name="staff-credit-purchase"),
]
