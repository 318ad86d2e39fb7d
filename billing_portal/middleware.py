"""Checks on every /api/ request before a view (or anything else) reads it; what caches may keep; the viewer's zone."""

from __future__ import annotations

from django.conf import settings
from django.utils.cache import patch_cache_control

from .api_errors import body_too_large_message, error_response, is_api
from .parsers import string_refusal


class ApiRequestGuard:
    """For /api/ paths only:

    - a body whose Content-Length is over DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 before it is read (DRF
      reads a JSON body straight from the stream, so Django's own check would not see it);
    - a NUL in the path, a query parameter or a header is a 400 naming it (the JSON body gets the same
      check in billing_portal.parsers), so none reaches a query to PostgreSQL, which refuses NULs.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if is_api(request):
            refused = self._refusal(request)
            if refused is not None:
                return refused
        return self.get_response(request)

    @staticmethod
    def _refusal(request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length > limit:
            return error_response(413, body_too_large_message())
        if "\x00" in request.path:
            return error_response(400, string_refusal(request.path, "The path"))
        for name, values in request.GET.lists():
            for text in (name, *values):
                refusal = string_refusal(text)
                if refusal:
                    return error_response(400, refusal, field=name)
        for key, value in request.META.items():
            if key.startswith("HTTP_") and isinstance(value, str) and "\x00" in value:
                header = key[5:].replace("_", "-").title()
                return error_response(400, string_refusal(value, f"The {header} header"), field=header)
        return None


class ViewerTimezone:
    """Pages show times in the viewer's zone (User.viewing_timezone), with the zone named on the page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.utils import timezone

        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and not is_api(request):
            timezone.activate(user.viewing_timezone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


class CacheControlPolicy:
    """Nothing with account data is kept by a browser or a shared cache:

    - every /api/ response, success or error, is `Cache-Control: no-store` (keys, usage, invoices);
    - a page served to a logged-in user is `private, no-store` (nothing left on disk, and Back after logging
      out does not show the last account's pages from the cache);
    - anything else (the login page, static files: WhiteNoise answers them before the session is read) keeps
      the headers its view gave it.

    First in MIDDLEWARE after SecurityMiddleware, so it also sees the /api/ guard's refusals.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if is_api(request):
            response["Cache-Control"] = "no-store"
        else:
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                patch_cache_control(response, private=True, no_store=True)
        return response
