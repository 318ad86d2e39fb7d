"""Client `Idempotency-Key` on the API's creating POSTs (DESIGN §4), built once for every such view.

A successful answer is stored under (scope = principal + path, key hash) with a fingerprint of the request
(method, path, canonical body). The same key and body again gets that answer (status and body) and runs
nothing; the same key with another body is 409. Only answers below 500 that created something (2xx) are
kept: a 4xx changed nothing, so the client may fix its request and send it again with the same key (as
Stripe does for requests that fail validation), and a 5xx (Stripe down) is never kept, so a retry re-enters
the service, which continues where it stopped through its own key derived from (account, key).

The HTTP layer is a cache of answers, not the guard: two concurrent first requests may both run the view,
and each service takes the account lock and looks up its own key, so the second finds the first's object.
Rows are kept at least 24 hours; `idempotency_keys_expire` (called by the billing cycle) deletes older ones.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction

from billing_portal import clock

HEADER = "Idempotency-Key"
KEEP_FOR = dt.timedelta(hours=24)
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")


class IdempotencyKey(models.Model):
    """The first successful answer to a client's Idempotency-Key (see the module docstring)."""

    scope = models.CharField(max_length=400, help_text="Principal and path the key was used on.")
    key_hash = models.CharField(max_length=64, help_text="SHA-256 of the client's key.")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and canonical body.")
    status_code = models.PositiveSmallIntegerField()
    response_body = models.JSONField(help_text="Secret fields (a new API key) are never stored.")
    created_at = models.DateTimeField(default=clock.now, db_index=True)

    class Meta:
        app_label = "accounts"
        verbose_name = "idempotency key"
        constraints = [models.UniqueConstraint(fields=["scope", "key_hash"], name="idempotency_key_unique")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key_hash[:12]}… -> {self.status_code}"


def idempotency_key_validate(value: str) -> str:
    """The key as given, or a ValidationError: 1 to 255 printable ASCII characters."""
    if not isinstance(value, str) or not _VALID_KEY.fullmatch(value):
        raise ValidationError(
            {HEADER: f"{HEADER} must be 1 to 255 printable ASCII characters (letters, digits, punctuation, spaces)."}
        )
    return value


def idempotency_key_digest(value: str) -> str:
    return hashlib.sha256(value.encode("ascii")).hexdigest()


def idempotency_keys_expire(*, now: dt.datetime) -> int:
    """Forget the answers stored more than 24 hours before `now`; returns how many were deleted. The
    services' own keys (on packs, conversions, ledger entries) stay: a retry after a day still creates
    nothing new, it just runs the service again instead of replaying the stored answer."""
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=now - KEEP_FOR).delete()
    return deleted


def idempotency_key_parameter():
    """The header as drf-spectacular describes it on each view that takes it."""
    from drf_spectacular.utils import OpenApiParameter

    return OpenApiParameter(
        HEADER, str, OpenApiParameter.HEADER, required=False,
        description="Optional, 1-255 printable ASCII characters. The same key and body again within 24 hours "
        "returns the first answer and creates nothing; the same key with another body is 409.",
    )  # fmt: skip


def _principal(user) -> str:
    api_key = getattr(user, "api_key", None)
    if api_key is not None:
        return f"api_key:{api_key.pk}"
    return f"user:{user.pk}"


def _canonical_body(data) -> str:
    if hasattr(data, "lists"):  # a QueryDict (form or multipart body)
        data = {k: v for k, v in data.lists()}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _fingerprint(request) -> str:
    canonical = f"{request.method}\n{request.path}\n{_canonical_body(request.data)}"
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _conflict():
    from rest_framework.response import Response

    message = (
        f"This {HEADER} was already used with another request body. Send the same body to get the first answer "
        "again, or use a new key for a new request."
    )
    return Response({"errors": [{"index": None, "field": None, "message": message}]}, status=409)


def _replay(row: IdempotencyKey, fingerprint: str):
    from rest_framework.response import Response

    if row.fingerprint != fingerprint:
        return _conflict()
    response = Response(row.response_body, status=row.status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(view_method=None, *, secret_fields: tuple[str, ...] = ()):
    """Decorate a DRF APIView's `post` to honour the `Idempotency-Key` header. The view reads the validated
    key from `request.idempotency_key` (None without a header) and passes it to its service.

    `secret_fields` are left out of the stored answer; a replay of such a view runs the view again (its
    service is idempotent by the same key and re-derives the secret) and answers with the stored status."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, request, *args, **kwargs):
            raw = request.headers.get(HEADER)
            request.idempotency_key = None if raw is None else idempotency_key_validate(raw)
            if raw is None:
                return method(self, request, *args, **kwargs)
            scope = f"{_principal(request.user)} {request.path}"[:400]
            key_hash, fingerprint = idempotency_key_digest(raw), _fingerprint(request)
            row = IdempotencyKey.objects.filter(scope=scope, key_hash=key_hash).first()
            if row is not None and not (secret_fields and row.fingerprint == fingerprint):
                return _replay(row, fingerprint)
            try:
                response = method(self, request, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the view's own error answer, never stored
                return self.handle_exception(exc)
            if row is not None:  # a secret-bearing view, run again: same object, same status
                response.status_code = row.status_code
                response["Idempotent-Replayed"] = "true"
                return response
            if not 200 <= response.status_code < 300:
                return response
            from rest_framework.renderers import JSONRenderer  # DRF loads after the models that import this

            body = json.loads(JSONRenderer().render(response.data) or b"null")
            if isinstance(body, dict):
                body = {k: v for k, v in body.items() if k not in secret_fields}
            try:
                with transaction.atomic():
                    IdempotencyKey.objects.create(
                        scope=scope, key_hash=key_hash, fingerprint=fingerprint, status_code=response.status_code,
                        response_body=body, created_at=clock.now(),
                    )  # fmt: skip
            except IntegrityError:  # a concurrent first request stored its answer first: answer as it did
                row = IdempotencyKey.objects.get(scope=scope, key_hash=key_hash)
                if row.fingerprint != fingerprint:
                    return _conflict()
            return response

        return wrapper

    return decorate(view_method) if view_method is not None else decorate
