from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.forms import PortalSignInForm
from accounts.urls import api_urlpatterns as account_api
from accounts.urls import page_urlpatterns as account_pages
from billing_portal.health import healthz, readyz
from billing_portal.stripe_webhook import stripe_webhook
from credits.urls import api_urlpatterns as credit_api
from credits.urls import page_urlpatterns as credit_pages
from resolutions.urls import api_urlpatterns as resolution_api
from resolutions.urls import page_urlpatterns as resolution_pages

# JSON in the one error shape for /api/ paths, Django's pages elsewhere.
handler400 = "billing_portal.api_errors.json_bad_request"
handler403 = "billing_portal.api_errors.json_permission_denied"
handler404 = "billing_portal.api_errors.json_not_found"
handler500 = "billing_portal.api_errors.json_server_error"

urlpatterns = [
    # Liveness and readiness (billing_portal/health.py): no login, no CSRF, no throttle.
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    *account_pages,
    *credit_pages,
    *resolution_pages,
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True, authentication_form=PortalSignInForm),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(account_api)),
    path("api/v1/", include(resolution_api)),
    path("api/v1/", include(credit_api)),
    # Signature checked before dj-stripe stores anything; same URL as dj-stripe's own view.
    path("stripe/webhook/<uuid:uuid>/", stripe_webhook, name="stripe-webhook"),
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # Redoc is not served: its bundle always loads a logo from cdn.redoc.ly and its template Google Fonts (no
    # CDN here). Swagger UI above is served from drf-spectacular-sidecar; old links to /api/redoc/ land there.
    path("api/redoc/", RedirectView.as_view(pattern_name="api-docs"), name="api-redoc"),
    path("favicon.ico", RedirectView.as_view(url="/static/portal/favicon.svg", permanent=True)),
]
