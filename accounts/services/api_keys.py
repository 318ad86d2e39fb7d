"""Account API keys: only a hash is stored; the key is shown once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from billing_portal import clock

from ..locks import account_lock
from ..models import Account, ApiKey, User
from .audit import Actor, audit_log_write

API_KEY_PREFIX = "rbp"


def _api_key_hash(raw_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough (as for GitHub tokens); no salt needed.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def _api_key_derived(*, account: Account, idempotency_key: str) -> tuple[str, str]:
    """The raw key of a create made with an Idempotency-Key: HMAC-SHA256(SECRET_KEY, account uid + key).

    Why: the key is shown once and only its hash is stored, yet a replay of the same request must show the
    same key. Deriving it lets the replay recompute it without storing it anywhere (the stored HTTP answer
    leaves it out). The trade-off: such a key is as secret as SECRET_KEY (with it, the account's uid and the
    client's Idempotency-Key, which is not a secret, one can recompute the key), where a random key depends
    on nothing; and rotating SECRET_KEY makes a later replay derive another key (it then creates a new key,
    the old one keeps working until revoked). Without an Idempotency-Key, keys stay purely random."""
    message = f"api-key:{account.uid}:{idempotency_key}".encode("utf-8", "surrogatepass")
    digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).digest()
    secret = base64.urlsafe_b64encode(digest[4:]).rstrip(b"=").decode()
    prefix = f"{API_KEY_PREFIX}_{digest[:4].hex()}"
    return prefix, f"{prefix}_{secret}"


def api_key_create(
    *, account: Account, name: str, actor: Actor, idempotency_key: str | None = None
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored. With an idempotency key, the secret
    is derived from (account, key) and a repeat returns the same key and secret, creating nothing."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError({"name": "Give the key a name of 1 to 100 characters."})
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 255:
            raise ValidationError({"idempotency_key": "An idempotency key is 1 to 255 characters."})
        prefix, raw_key = _api_key_derived(account=account, idempotency_key=idempotency_key)
    else:
        prefix = f"{API_KEY_PREFIX}_{secrets.token_hex(4)}"
        raw_key = f"{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        if idempotency_key is not None:
            account_lock(account.pk)  # two concurrent repeats: the second finds the first's key
            existing = ApiKey.objects.filter(key_hash=_api_key_hash(raw_key)).first()
            if existing is not None:
                if existing.account_id != account.pk or existing.name != name:
                    raise ValidationError({"idempotency_key": "This key was already used to create another API key."})
                return existing, raw_key
        api_key = ApiKey.objects.create(
            account=account,
            name=name,
            prefix=prefix,
            key_hash=_api_key_hash(raw_key),
            created_by=actor if isinstance(actor, User) else None,
            created_at=clock.now(),
        )
        audit_log_write(
            actor=actor, action="api_key.create", obj=api_key, account=account,
            after={"name": name, "prefix": prefix},
        )  # fmt: skip
    return api_key, raw_key


def api_key_revoke(*, api_key: ApiKey, actor: Actor, reason: str = "") -> ApiKey:
    with transaction.atomic():
        api_key = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if api_key.revoked_at is not None:
            raise ValidationError("This API key is already revoked.")
        api_key.revoked_at = clock.now()
        api_key.revoked_by = actor if isinstance(actor, User) else None
        api_key.save(update_fields=["revoked_at", "revoked_by"])
        audit_log_write(
            actor=actor, action="api_key.revoke", obj=api_key, account=api_key.account,
            before={"revoked_at": None}, after={"revoked_at": api_key.revoked_at}, reason=reason,
        )  # fmt: skip
    return api_key


LAST_USED_RESOLUTION_SECONDS = 60  # write last_used_at at most once a minute per key, not per request


_NO_KEY_HASH = _api_key_hash("rbp_00000000_no-such-key")  # compared against when the prefix matches no key


@sensitive_variables()  # no local in an error report (a 500 while authenticating): they hold the key
def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """The active key matching `raw_key`, or None. Records when it was last used (to the minute).

    The key's hash is compared in constant time (hmac.compare_digest), also when no key has its prefix, so
    that an unknown prefix and a wrong secret take the same steps and get the same answer."""
    parts = (raw_key or "").split("_", 2)  # rbp_<8 hex>_<secret>; the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[2]:
        return None
    api_key = ApiKey.objects.select_related("account").filter(prefix=f"{parts[0]}_{parts[1]}").first()
    matches = hmac.compare_digest(_NO_KEY_HASH if api_key is None else api_key.key_hash, _api_key_hash(raw_key))
    if api_key is None or not matches:
        return None
    if api_key.revoked_at is not None:
        return None
    now = clock.now()
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() >= LAST_USED_RESOLUTION_SECONDS:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key
