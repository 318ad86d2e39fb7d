"""One error shape for the whole API (DESIGN §4): `{"errors": [{"index", "field", "message"}]}`.

Service-layer ValidationErrors (Django's) become 400s here, so APIs stay thin callers of services.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def _flatten(detail, field: str | None = None) -> list[dict]:
    if isinstance(detail, dict):
        errors = []
        for key, value in detail.items():
            name = None if key in ("non_field_errors", "__all__") else (f"{field}.{key}" if field else str(key))
            errors.extend(_flatten(value, name))
        return errors
    if isinstance(detail, list):
        return [e for item in detail for e in _flatten(item, field)]
    return [{"index": None, "field": field, "message": str(detail)}]


def api_exception_handler(exc, context):
    from .stripe_client import StripeFailure

    if isinstance(exc, StripeFailure):  # Stripe down or refusing: say so plainly, never a bare 500
        code = status.HTTP_503_SERVICE_UNAVAILABLE if exc.retryable else status.HTTP_502_BAD_GATEWAY
        hint = " Nothing was charged twice; try again in a minute." if exc.retryable else ""
        return Response({"errors": [{"index": None, "field": None, "message": f"{exc}.{hint}"}]}, status=code)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
        exc = exceptions.ValidationError(detail)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"errors": _flatten(exc.detail)}
    elif isinstance(exc, exceptions.ParseError | exceptions.UnsupportedMediaType):
        response.data = {"errors": [{"index": None, "field": None, "message": str(exc.detail)}]}
    return response


def json_not_found(request, exception=None):
    """Django's 404 for API paths answers JSON; pages keep the HTML page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)
