"""The one module that talks to Stripe (dj-stripe aside). Nothing else in the portal imports `stripe`.

It owns the configured StripeClient (key, API base, pinned API version, timeout), retries 429, 5xx and
network errors with exponential backoff (never sooner than a `Retry-After` the answer carries; a
`Stripe-Should-Retry` header overrides the status), and always takes the idempotency key from its
caller, so that a retry of the same operation (now, or after a crash) can never create a second object
in Stripe.

No Stripe call is made inside a database transaction: every request, ours and dj-stripe's, goes through
one HTTP client that looks for an open atomic block first. With STRIPE_FORBID_CALLS_IN_TRANSACTION (the
test settings) it raises StripeCallInTransaction; otherwise it logs an error naming the operation and
goes on. dj-stripe's syncs read from Stripe inside their own transactions, so they run in `mirror`, which
does those reads first, outside any transaction.
"""

from __future__ import annotations

import contextvars
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import stripe
from django.conf import settings
from django.core.signals import setting_changed
from django.db import connections, transaction
from django.dispatch import receiver

logger = logging.getLogger(__name__)
T = TypeVar("T")

StripeObject = stripe.StripeObject


class StripeFailure(Exception):
    """A Stripe call did not succeed. `retryable` says whether trying again later may help;
    `retry_after` is the wait in seconds Stripe's last answer asked for (its Retry-After header), if any."""

    def __init__(
        self,
        operation: str,
        message: str,
        *,
        retryable: bool,
        code: str | None = None,
        status=None,
        retry_after: float | None = None,
    ):
        super().__init__(f"Stripe {operation} failed: {message}")
        self.operation = operation
        self.retryable = retryable
        self.code = code
        self.http_status = status
        self.retry_after = retry_after


class StripeUnavailable(StripeFailure):
    """429, 5xx or network trouble that outlasted every retry, or a Retry-After longer than we wait
    in-process: safe to retry later with the same key, and no sooner than `retry_after` seconds."""


class StripeRejected(StripeFailure):
    """Stripe refused the request (4xx): retrying the same request will not help."""


class StripeCallInTransaction(RuntimeError):
    """A Stripe HTTP call was about to be made inside a database transaction (raised in tests only)."""


# --- No Stripe call inside a database transaction ---------------------------------------------------
_operation: contextvars.ContextVar[str | None] = contextvars.ContextVar("stripe_operation", default=None)


@dataclass
class _Reads:
    """The Stripe reads of one `mirror` call, fetched outside its transaction: url -> raw response."""

    responses: dict[str, tuple[Any, int, Any]] = field(default_factory=dict)


_reads: contextvars.ContextVar[_Reads | None] = contextvars.ContextVar("stripe_mirror_reads", default=None)


class _ReadNeeded(BaseException):
    """Inside `mirror`'s transaction dj-stripe asked for a read not fetched yet. A BaseException, so no
    `except Exception` on the way can swallow it: the transaction rolls back and `mirror` fetches it."""

    def __init__(self, http_client: GuardedHTTPClient, url: str, headers):
        super().__init__(url)
        self.http_client = http_client
        self.url = url
        self.headers = headers


def open_transactions() -> list[str]:
    """The database aliases with an atomic block open, not counting the ones a test case wraps around
    each test (pytest-django's `db`, Django's TestCase): those stand for "no transaction" in the code."""
    return [
        conn.alias
        for conn in connections.all(initialized_only=True)
        if any(not block._from_testcase for block in conn.atomic_blocks)
    ]


def _transaction_check(method: str, url: str) -> None:
    aliases = open_transactions()
    if not aliases:
        return
    operation = _operation.get() or "dj-stripe"
    message = (
        f"Stripe call inside a database transaction ({', '.join(aliases)}): {operation}, "
        f"{method.upper()} {urlsplit(url).path}. Call Stripe before the transaction opens or after it commits; "
        "run dj-stripe syncs in stripe_client.mirror()"
    )
    if getattr(settings, "STRIPE_FORBID_CALLS_IN_TRANSACTION", False):  # True in settings_test
        raise StripeCallInTransaction(message)
    logger.error(message, stack_info=True)


class GuardedHTTPClient(stripe.RequestsClient):
    """stripe-python's requests client, refusing (or reporting) a call made inside a transaction. It
    serves both the StripeClient below and stripe-python's module-level configuration (dj-stripe)."""

    def request(self, method, url, headers, post_data=None):
        reads = _reads.get()
        if reads is not None and method.lower() == "get":
            if url in reads.responses:
                return reads.responses[url]
            if open_transactions():
                raise _ReadNeeded(self, url, headers)
        _transaction_check(method, url)
        return super().request(method, url, headers, post_data)

    def request_stream(self, method, url, headers, post_data=None):
        _transaction_check(method, url)
        return super().request_stream(method, url, headers, post_data)


def _read_now(needed: _ReadNeeded):
    """Make the read now, through the guard like any call: a mirror inside someone else's transaction
    gets no exemption."""
    token = _reads.set(None)
    try:
        return needed.http_client.request_with_retries(
            "get", needed.url, needed.headers, max_network_retries=stripe.max_network_retries
        )
    finally:
        _reads.reset(token)


def mirror(sync: Callable[[], T], *, max_reads: int = 50) -> T:
    """Run `sync` (dj-stripe's `sync_from_stripe_data`, event processing, …) in one transaction that makes
    no Stripe call. dj-stripe reads related objects from Stripe in the middle of its own transactions; here
    each read it asks for rolls the transaction back, is fetched outside any transaction, and the sync
    starts again with that answer at hand, until it needs nothing new (one attempt per distinct read).
    Only reads are replayed: a write inside the transaction is still refused. `sync` may run more than
    once, so it must change nothing but the database (queue work with transaction.on_commit)."""
    reads = _Reads()
    token = _reads.set(reads)
    try:
        for _attempt in range(max_reads + 1):
            try:
                with transaction.atomic():
                    return sync()
            except _ReadNeeded as needed:
                reads.responses[needed.url] = _read_now(needed)
        raise StripeFailure("mirror", f"dj-stripe asked for more than {max_reads} reads", retryable=False)
    finally:
        _reads.reset(token)


@dataclass(frozen=True)
class _Config:
    api_key: str
    api_base: str
    api_version: str
    timeout: float
    max_retries: int
    backoff_base: float
    backoff_cap: float
    retry_after_cap: float


def _config() -> _Config:
    return _Config(
        api_key=settings.STRIPE_SECRET_KEY,
        api_base=settings.STRIPE_API_BASE.rstrip("/"),
        api_version=settings.STRIPE_API_VERSION,
        timeout=settings.STRIPE_TIMEOUT_SECONDS,
        max_retries=settings.STRIPE_MAX_RETRIES,
        backoff_base=settings.STRIPE_BACKOFF_BASE_SECONDS,
        backoff_cap=settings.STRIPE_BACKOFF_CAP_SECONDS,
        retry_after_cap=settings.STRIPE_RETRY_AFTER_CAP_SECONDS,
    )


_client: stripe.StripeClient | None = None
_client_config: _Config | None = None


def client() -> stripe.StripeClient:
    """The configured StripeClient (rebuilt when settings change, e.g. in tests)."""
    global _client, _client_config
    config = _config()
    if _client is None or _client_config != config:
        _client = stripe.StripeClient(
            config.api_key,
            base_addresses={"api": config.api_base},
            stripe_version=config.api_version,
            max_network_retries=0,  # retries are ours: below, with backoff and logging
            http_client=GuardedHTTPClient(timeout=config.timeout),
        )
        _client_config = config
    return _client


def configure_globals() -> None:
    """dj-stripe calls Stripe through the module-level configuration: point it at the same place."""
    config = _config()
    stripe.api_base = config.api_base
    stripe.api_version = config.api_version
    stripe.default_http_client = GuardedHTTPClient(timeout=config.timeout)
    stripe.max_network_retries = 2


@receiver(setting_changed)
def _settings_changed(setting, **kwargs):
    if setting.startswith("STRIPE_"):
        configure_globals()


def _backoff(attempt: int, config: _Config) -> float:
    delay = min(config.backoff_cap, config.backoff_base * (2**attempt))
    return delay * (0.5 + random.random() / 2)  # jitter: retries of many callers do not line up


def _header(error: stripe.StripeError, name: str) -> str | None:
    return {k.lower(): v for k, v in (error.headers or {}).items()}.get(name)


def _retry_after(error: stripe.StripeError) -> float | None:
    """The answer's Retry-After in seconds (None when absent or not a number of seconds: an HTTP-date
    form is not one Stripe sends, and it would be read against the wall clock)."""
    raw = _header(error, "retry-after")
    try:
        seconds = float(raw) if raw is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _should_retry(error: stripe.StripeError) -> bool:
    should = _header(error, "stripe-should-retry")
    if should is not None:
        return should == "true"
    if isinstance(error, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    return isinstance(error, stripe.APIError) and (error.http_status or 500) >= 500


def call(operation: str, request: Callable[[stripe.StripeClient, dict], T], *, idempotency_key: str | None) -> T:
    """Run `request(client, options)` with retries. `options` carries the caller's idempotency key, so
    every attempt is the same request to Stripe. Writes (POST) must pass a key; reads pass None.

    The wait before a retry is the exponential backoff with jitter, or the answer's Retry-After if that
    is longer. A Retry-After over STRIPE_RETRY_AFTER_CAP_SECONDS is not slept through: the call ends at
    once with StripeUnavailable(retry_after=…), for the caller to schedule its next attempt."""
    config = _config()
    options: dict[str, Any] = {"idempotency_key": idempotency_key} if idempotency_key else {}
    for attempt in range(config.max_retries + 1):
        token = _operation.set(operation)
        try:
            return request(client(), options)
        except stripe.StripeError as error:
            retry_after = _retry_after(error)
            if not _should_retry(error):
                raise StripeRejected(
                    operation,
                    error.user_message or str(error),
                    retryable=False,
                    code=getattr(error, "code", None),
                    status=error.http_status,
                    retry_after=retry_after,
                ) from error
            too_long = retry_after is not None and retry_after > config.retry_after_cap
            if attempt == config.max_retries or too_long:
                asked = f"; Stripe asks to wait {retry_after:g}s" if retry_after is not None else ""
                raise StripeUnavailable(
                    operation, f"{error.__class__.__name__} after {attempt + 1} attempts: {error}{asked}",
                    retryable=True, code=getattr(error, "code", None), status=error.http_status,
                    retry_after=retry_after,
                ) from error  # fmt: skip
            delay = max(_backoff(attempt, config), retry_after or 0.0)
            logger.warning("Stripe %s: %s; retry %d in %.2fs", operation, error.__class__.__name__, attempt + 1, delay)
            time.sleep(delay)
        finally:
            _operation.reset(token)
    raise AssertionError("unreachable")


_probe_clients: dict[tuple[_Config, float], stripe.StripeClient] = {}


def reachability_check(*, timeout: float) -> None:
    """One cheap authenticated read (list meters, limit 1) with a short timeout and no retries, for the
    readiness check: returns when Stripe answers, raises StripeFailure (StripeUnavailable for network trouble,
    429 and 5xx, StripeRejected e.g. for a refused key) otherwise. Unlike `call`, it never sleeps or retries:
    a probe must answer within its timeout."""
    config = _config()
    key = (config, timeout)
    probe_client = _probe_clients.get(key)
    if probe_client is None:
        _probe_clients.clear()  # settings changed (tests): keep one
        probe_client = _probe_clients[key] = stripe.StripeClient(
            config.api_key,
            base_addresses={"api": config.api_base},
            stripe_version=config.api_version,
            max_network_retries=0,
            http_client=GuardedHTTPClient(timeout=timeout),
        )
    token = _operation.set("reachability check")
    try:
        probe_client.v1.billing.meters.list(params={"limit": 1})
    except stripe.StripeError as error:
        kind = StripeUnavailable if _should_retry(error) else StripeRejected
        raise kind(
            "reachability check",
            f"{error.__class__.__name__}: {error.user_message or error}",
            retryable=kind is StripeUnavailable,
            code=getattr(error, "code", None),
            status=error.http_status,
        ) from error
    finally:
        _operation.reset(token)


def webhook_signature_valid(payload: bytes, signature_header: str, secret: str, tolerance: int = 300) -> bool:
    """Stripe's `Stripe-Signature: t=…,v1=…` check (HMAC-SHA256 of "t.payload" with the endpoint secret)."""
    if not signature_header or not secret:
        return False
    try:
        stripe.WebhookSignature.verify_header(payload.decode("utf-8"), signature_header, secret, tolerance)
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        return False
    return True


def to_dict(obj: Any) -> Any:
    """A plain dict/list copy of a Stripe object (for dj-stripe sync and for storing)."""
    if isinstance(obj, StripeObject):
        return obj.to_dict()
    return obj
