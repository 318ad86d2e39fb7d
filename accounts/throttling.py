"""API rate limits per caller: per API key for integrations, per user for session callers (DRF throttling).

Every API operation counts against API_RATE_LIMIT; ingestion (POST /api/v1/conversation-events) has its own,
much higher API_INGESTION_RATE_LIMIT instead (see the README for the figures). Over the limit: 429 in the one
error shape with Retry-After in whole seconds (billing_portal/api_errors.py keeps DRF's header).

A fixed-window counter in Django's cache, changed with one atomic increment (Redis INCR, one round trip: see
billing_portal/cache_counters.py), instead of DRF's
SimpleRateThrottle history list: that list is read, extended and written back, so concurrent requests in
several processes overwrite each other's counts, and it grows with the rate (thousands of timestamps per
request at ingestion's rate). A window lets through at most twice its limit across its boundary. If the cache
is unavailable, requests are let through (logged), not refused.
"""

from __future__ import annotations

import logging

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from billing_portal.cache_counters import cache_counter_incr

from .authentication import ApiKeyPrincipal

logger = logging.getLogger(__name__)


class ApiCallerRateThrottle(SimpleRateThrottle):
    scope = "api"
    rate_setting = "API_RATE_LIMIT"

    def get_rate(self):
        return getattr(settings, self.rate_setting)

    def get_cache_key(self, request, view):
        user = request.user
        if isinstance(user, ApiKeyPrincipal):
            ident = f"key:{user.api_key.pk}"
        elif user is not None and user.is_authenticated:
            ident = f"user:{user.pk}"
        else:
            return None  # anonymous: refused by the permissions anyway (401), never counted
        return f"api-throttle:{self.scope}:{ident}"

    def allow_request(self, request, view):
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = self.timer()
        window = int(now // self.duration)
        key = f"{key}:{window}"
        try:
            count = cache_counter_incr(key, timeout=self.duration + 1)
        except Exception:
            logger.exception("API throttle: the cache is unavailable; requests are not rate-limited meanwhile.")
            return True
        if count <= self.num_requests:
            return True
        self.wait_seconds = (window + 1) * self.duration - now
        return False

    def wait(self):
        return self.wait_seconds  # DRF rounds it up to whole seconds for Retry-After


class ConversationEventsRateThrottle(ApiCallerRateThrottle):
    scope = "conversation-events"
    rate_setting = "API_INGESTION_RATE_LIMIT"
