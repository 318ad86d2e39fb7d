from django.urls import path

from . import apis

api_urlpatterns = [
    path("conversation-events", apis.ConversationEventsApi.as_view(), name="api-conversation-events"),
    path("usage", apis.UsageApi.as_view(), name="api-usage"),
    path("resolutions", apis.ResolutionListApi.as_view(), name="api-resolutions"),
    path(
        "staff/accounts/<int:account_id>/invoice-preview", apis.InvoicePreviewApi.as_view(), name="api-invoice-preview"
    ),
    path("staff/resolutions/<int:resolution_id>/void", apis.ResolutionVoidApi.as_view(), name="api-resolution-void"),
]
