"""One error shape for the whole API (DESIGN §4): `{"errors": [{"index", "field", "message"}]}`.

Every answer under /api/ that is not a success has it: DRF's exceptions (401, 403, 404, 405, 415, 429,
validation), Django's own 400/403/404/500 pages and CSRF failures (the handlers below, named in urls.py and
settings.py), 413 for a body too large (billing_portal.middleware) and Stripe failures (502/503). Headers
DRF sets (WWW-Authenticate, Retry-After) are kept. Service-layer ValidationErrors (Django's) become 400s
here, so APIs stay thin callers of services.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure
from drf_spectacular.utils import inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .parsers import JsonValueRefused

SERVER_ERROR_MESSAGE = "Something went wrong on our side; it is logged. Try again, or tell support if it goes on."


def error(message: str, *, field: str | None = None, index: int | None = None) -> dict:
    return {"index": index, "field": field, "message": message}


def error_response(status_code: int, message: str, *, field: str | None = None) -> JsonResponse:
    """An error answer in the one shape, for code outside DRF views (middleware, Django's handlers)."""
    return JsonResponse({"errors": [error(message, field=field)]}, status=status_code)


def body_too_large_message() -> str:
    return (
        f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes, the most the API takes "
        "(a batch of 1,000 events fits)."
    )


def is_api(request) -> bool:
    return request.path_info.startswith("/api/")


def _flatten(detail, field: str | None = None) -> list[dict]:
    if isinstance(detail, dict):
        errors = []
        for key, value in detail.items():
            name = None if key in ("non_field_errors", "__all__") else (f"{field}.{key}" if field else str(key))
            errors.extend(_flatten(value, name))
        return errors
    if isinstance(detail, list):
        return [e for item in detail for e in _flatten(item, field)]
    return [error(str(detail), field=field)]


def api_exception_handler(exc, context):
    from .stripe_client import StripeFailure

    if isinstance(exc, StripeFailure):  # Stripe down or refusing: say so plainly, never a bare 500
        code = status.HTTP_503_SERVICE_UNAVAILABLE if exc.retryable else status.HTTP_502_BAD_GATEWAY
        hint = " Nothing was charged twice; try again in a minute." if exc.retryable else ""
        return Response({"errors": [error(f"{exc}.{hint}")]}, status=code)
    if isinstance(exc, RequestDataTooBig):  # a body without Content-Length that grew past the limit
        return Response({"errors": [error(body_too_large_message())]}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
        exc = exceptions.ValidationError(detail)
    response = drf_exception_handler(exc, context)  # also turns Http404 and PermissionDenied into DRF's
    if response is None:
        return None  # not an API error: Django's 500 handler answers (json_server_error)
    if isinstance(exc, JsonValueRefused):
        response.data = {"errors": exc.errors}
    elif isinstance(exc, exceptions.ValidationError):
        response.data = {"errors": _flatten(exc.detail)}
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"errors": [error(str(response.data["detail"]))]}
    else:
        response.data = {"errors": _flatten(response.data)}
    return response


# --- Django's own error views: JSON for /api/, the usual pages elsewhere ------------------------------


def json_bad_request(request, exception=None):
    if not is_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return error_response(413, body_too_large_message())
    return error_response(400, "Bad request.")  # a SuspiciousOperation: its details are not for the caller


def json_permission_denied(request, exception=None):
    if not is_api(request):
        return defaults.permission_denied(request, exception)
    return error_response(403, "You do not have permission to perform this action.")


def json_not_found(request, exception=None):
    """Django's 404 for API paths answers JSON; pages keep the HTML page."""
    if not is_api(request):
        return defaults.page_not_found(request, exception)
    return error_response(404, "Not found.")


def json_server_error(request):
    if not is_api(request):
        return defaults.server_error(request)
    return error_response(500, SERVER_ERROR_MESSAGE)


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW. DRF views check CSRF themselves (a 403 through api_exception_handler); this
    answers for anything else under /api/."""
    if not is_api(request):
        return django_csrf_failure(request, reason)
    return error_response(403, f"CSRF check failed: {reason}" if reason else "CSRF check failed.")


# The one error shape, for drf-spectacular's `responses` of every API view.
ERRORS = inline_serializer(
    "Errors",
    {
        "errors": inline_serializer(
            "Error",
            {
                "index": serializers.IntegerField(allow_null=True),
                "field": serializers.CharField(allow_null=True),
                "message": serializers.CharField(),
            },
            many=True,
        )
    },
)

# Operations that call Stripe before answering: 503 when it cannot be reached (retry later), 502 when it refused.
STRIPE_ERRORS = {502: ERRORS, 503: ERRORS}
