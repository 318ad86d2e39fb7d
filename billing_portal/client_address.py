"""The address of the client that sent a request, for throttling and logs.

REMOTE_ADDR unless TRUSTED_PROXY_COUNT says how many proxies of ours stand in front of the portal: each appends
the address it received the request from to X-Forwarded-For, so the client is the TRUSTED_PROXY_COUNT-th
entry from the right. Entries left of it were written by the client and are never believed.
"""

from __future__ import annotations

from django.conf import settings


def client_address(request) -> str:
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if len(forwarded) < proxies:  # it did not come through all our proxies: the peer is who sent it
        return remote
    return forwarded[-proxies]
