"""Liveness and readiness for load balancers and orchestrators (docs/operations.md).

`/healthz`: the process answers; it touches nothing else (no database), so a slow dependency never gets
a healthy web process restarted. `/readyz`: the database (SELECT 1), the Celery broker (one connection
attempt) and Stripe (one cheap read, no retries) answer, each within READYZ_TIMEOUT_SECONDS, with the time
each took; 503 naming what is down and why. `?check=database&check=broker` checks only those (e.g. for a
load balancer that should keep serving ingestion while Stripe is down). Plain Django views: no
authentication, no CSRF, no throttling. A reason never carries a secret or a URL's password.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .api_errors import error_response

_CREDENTIALS_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)
_REASON_LENGTH = 300


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _broker() -> None:
    from .celery import app

    timeout = settings.READYZ_TIMEOUT_SECONDS
    # The app's connection with our timeouts (its broker_connection_timeout would win over an argument), and one
    # attempt (max_retries=0): Connection.connect() tries twice, two seconds apart. Opening it pings Redis.
    configured = app.connection_for_write()
    options = {**configured.transport_options, "socket_timeout": timeout, "socket_connect_timeout": timeout}
    with configured, configured.clone(connect_timeout=timeout, transport_options=options) as broker:
        broker.ensure_connection(max_retries=0, timeout=timeout)


def _stripe() -> None:
    from . import stripe_client

    stripe_client.reachability_check(timeout=settings.READYZ_TIMEOUT_SECONDS)


CHECKS: dict[str, Callable[[], None]] = {"database": _database, "broker": _broker, "stripe": _stripe}


def _secrets() -> list[str]:
    found = [
        settings.SECRET_KEY,
        getattr(settings, "STRIPE_SECRET_KEY", ""),
        getattr(settings, "STRIPE_WEBHOOK_SECRET", ""),
    ]
    for database in settings.DATABASES.values():
        found.append(database.get("PASSWORD") or "")
    found.extend(re.findall(r"://[^:/@\s]*:([^@\s]+)@", settings.CELERY_BROKER_URL or ""))
    return [secret for secret in found if len(secret) >= 4]


def reason_of(error: BaseException) -> str:
    """A one-line reason fit for an unauthenticated answer: the error's class and first line, a URL's
    credentials and every configured secret replaced by ***."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = _CREDENTIALS_IN_URL.sub(r"\g<scheme>***@", text)
    for secret in _secrets():
        text = text.replace(secret, "***")
    reason = f"{error.__class__.__name__}: {text}" if text else error.__class__.__name__
    return reason[:_REASON_LENGTH]


def _run(check: Callable[[], None]) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as error:  # any failure means "not ready", said plainly
        return {"status": "down", "ms": _ms(started), "reason": reason_of(error)}
    return {"status": "ok", "ms": _ms(started)}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    names = request.GET.getlist("check") or list(CHECKS)
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        return error_response(400, f"Unknown check {unknown[0]!r}: the checks are {', '.join(CHECKS)}.", field="check")
    results = {name: _run(CHECKS[name]) for name in dict.fromkeys(names)}
    ready = all(result["status"] == "ok" for result in results.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": results}, status=200 if ready else 503)
