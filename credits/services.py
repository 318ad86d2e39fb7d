"""Writes of the credits app: grants, draw-downs, give-backs and expiry, each an append-only ledger entry
with an idempotency key derived from its cause, and the pack's cached balance moved in the same
transaction."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.locks import account_lock
from accounts.models import Account, CreditPackOffer, User
from accounts.services import Actor, audit_log_write
from billing_portal import clock

from . import sql
from .locks import credit_pack_lock, credit_packs_lock
from .models import CreditLedgerEntry, CreditPack

MAX_GRANT = 100_000_000
DEFAULT_VALIDITY = dt.timedelta(days=365)
# Among packs expiring at the same instant: promotional credit first (it was free), then the oldest.
_SOURCE_RANK = {CreditPack.Source.PROMOTIONAL: 0}


def _pack_snapshot(pack: CreditPack) -> dict:
    return {
        "source": pack.source, "granted": pack.granted, "remaining": pack.remaining, "status": pack.status,
        "starts_at": pack.starts_at, "expires_at": pack.expires_at, "unit_amount_decimal": pack.unit_amount_decimal,
    }  # fmt: skip


def credit_pack_grant(
    *,
    account: Account,
    quantity: int,
    source: str,
    actor: Actor,
    starts_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    unit_amount_decimal: Decimal = Decimal(0),
    reason: str = "",
    offer: CreditPackOffer | None = None,
    idempotency_key: str | None = None,
) -> CreditPack:
    """Create an active pack and its grant entry, keyed by its cause, never by the clock: without a caller key
    the entry's key is the new pack's (`grant:pack:<uid>`), so two grants are two packs even at one frozen
    instant; with one, it is derived from (account, key) and a repeat returns the first pack (a repeat with
    another quantity or source is refused). Closed accounts get nothing."""
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_GRANT:
        raise ValidationError({"quantity": f"Grant a whole number of resolutions from 1 to {MAX_GRANT:,}."})
    if source not in CreditPack.Source.values:
        raise ValidationError({"source": f"Unknown source '{source}'."})
    for name, instant in (("starts_at", starts_at), ("expires_at", expires_at)):
        if instant is not None and not clock.INSTANT_MIN <= instant < clock.INSTANT_MAX - DEFAULT_VALIDITY:
            raise ValidationError({name: "Give an instant between 1970 and 8998 (with its timezone)."})
    now = clock.now()
    starts_at = starts_at or now
    expires_at = expires_at or starts_at + DEFAULT_VALIDITY
    if expires_at <= starts_at:
        raise ValidationError({"expires_at": "A pack must expire after it starts."})
    if expires_at <= now:
        raise ValidationError({"expires_at": "This pack would already be expired."})
    if source == CreditPack.Source.PROMOTIONAL and not reason.strip():
        raise ValidationError({"reason": "Say why promotional credit is granted (it is audited)."})
    with transaction.atomic():
        # The account's lock serialises repeats of one key: the second sees the first's entry, never a duplicate.
        if account_lock(account.pk).status == Account.Status.CLOSED:
            raise ValidationError({"account": "This account is closed: it cannot receive credits."})
        if idempotency_key is not None:
            key = grant_idempotency_key(account=account, idempotency_key=idempotency_key)
            existing = CreditLedgerEntry.objects.filter(idempotency_key=key).select_related("pack").first()
            if existing is not None:
                pack = existing.pack
                if (pack.granted, pack.source) != (quantity, source):
                    raise ValidationError(
                        {"idempotency_key": f"This key was already used for another grant (pack {pack.pk}, "
                                            f"{pack.granted:,} {pack.source}); use a new key for a new grant."}
                    )  # fmt: skip
                return pack
        pack = CreditPack.objects.create(
            account=account, source=source, status=CreditPack.Status.ACTIVE, granted=quantity, remaining=quantity,
            starts_at=starts_at, expires_at=expires_at, currency=account.currency,
            unit_amount_decimal=unit_amount_decimal, offer=offer, reason=reason,
            created_by=actor if isinstance(actor, User) else None, created_at=now,
        )  # fmt: skip
        if idempotency_key is None:
            key = f"grant:pack:{pack.uid}"
        CreditLedgerEntry.objects.create(
            pack=pack, account=account, kind=CreditLedgerEntry.Kind.GRANT, quantity=quantity,
            idempotency_key=key, created_at=now,
        )  # fmt: skip
        audit_log_write(
            actor=actor, action="credit_pack.grant", obj=pack, account=account, after=_pack_snapshot(pack),
            reason=reason,
        )  # fmt: skip
    return pack


def grant_idempotency_key(*, account: Account, idempotency_key: str) -> str:
    """The grant entry's key for a caller's key: per account, hashed (a caller key may be 255 characters)."""
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise ValidationError({"idempotency_key": "An idempotency key is a non-empty string."})
    digest = hashlib.sha256(idempotency_key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"grant:account:{account.pk}:key:{digest}"


@dataclass(frozen=True, slots=True)
class Demand:
    """One resolution asking for one credit: the key names it in the ledger; `at` is when it happened."""

    account_id: int
    key: str
    at: dt.datetime


@dataclass(slots=True)
class _Drawable:
    priority: tuple
    pk: int
    starts_at: dt.datetime
    expires_at: dt.datetime
    remaining: int
    used: int = 0


def credits_draw(*, demands: list[Demand], now: dt.datetime) -> list[int | None]:
    """Fund each demand, in the order given, from its account's active pack that covers its instant and
    expires soonest; returns the pack id per demand, None when no pack can (overage). Demands may span
    several accounts. Runs inside the caller's transaction, which must hold the accounts' locks; pack rows
    are locked in primary-key order. Writes one ledger entry per credit (plain rows, COPYed on PostgreSQL)
    and each used pack's balance with one statement."""
    if not demands:
        return []
    account_ids = sorted({d.account_id for d in demands})
    earliest = min(d.at for d in demands)
    drawable: dict[int, list[_Drawable]] = {pk: [] for pk in account_ids}
    for pk, account_id, source, starts_at, expires_at, created_at, remaining in credit_packs_lock(
        CreditPack.objects.filter(
            account_id__in=account_ids, status=CreditPack.Status.ACTIVE, remaining__gt=0, expires_at__gt=earliest
        )
    ).values_list("pk", "account_id", "source", "starts_at", "expires_at", "created_at", "remaining"):
        priority = (expires_at, _SOURCE_RANK.get(source, 1), created_at, pk)
        drawable[account_id].append(_Drawable(priority, pk, starts_at, expires_at, remaining))
    for packs in drawable.values():
        packs.sort(key=lambda p: p.priority)
    funded: list[int | None] = []
    entries: list[tuple] = []
    drawdown = CreditLedgerEntry.Kind.DRAWDOWN.value
    for demand in demands:
        at = demand.at
        # Few packs per account: a scan is cheaper than an interval structure.
        pack = next((p for p in drawable[demand.account_id] if p.remaining and p.starts_at <= at < p.expires_at), None)
        if pack is None:
            funded.append(None)
            continue
        pack.remaining -= 1
        pack.used += 1
        funded.append(pack.pk)
        entries.append((pack.pk, demand.account_id, drawdown, -1, f"drawdown:{demand.key}", now))
    if entries:
        sql.ledger_insert(entries)
        sql.pack_balances_write([(p.pk, p.remaining) for packs in drawable.values() for p in packs if p.used])
    return funded


def credit_give_back(*, account: Account, pack_id: int, key: str, now: dt.datetime) -> bool:
    """Return one credit to its pack if the pack is still usable; False when it is not (the caller then
    marks the resolution for reversal toward Stripe). Idempotent by `key`."""
    pack = credit_pack_lock(pack_id, account=account)
    if pack.status != CreditPack.Status.ACTIVE or pack.expires_at <= now:
        return False
    if CreditLedgerEntry.objects.filter(idempotency_key=f"void:{key}").exists():
        return True
    try:
        with transaction.atomic():
            CreditLedgerEntry.objects.create(
                pack=pack, account=account, kind=CreditLedgerEntry.Kind.VOID, quantity=1,
                idempotency_key=f"void:{key}", created_at=now,
            )  # fmt: skip
    except IntegrityError:
        return True
    pack.remaining += 1
    pack.save(update_fields=["remaining"])
    return True


@dataclass(frozen=True)
class Breakage:
    pack_id: int
    account_id: int
    resolutions: int
    amount_minor: int
    currency: str


def credit_packs_expire(*, now: dt.datetime | None = None) -> list[Breakage]:
    """Write off what is left of packs past their expiry (one expiry entry each) and report the breakage
    (unused prepaid resolutions, at the price paid). Running it twice changes nothing the second time."""
    from billing_portal.money import round_minor

    now = now or clock.now()
    breakage = []
    due = CreditPack.objects.filter(status=CreditPack.Status.ACTIVE, expires_at__lte=now).values_list(
        "pk", "account_id"
    )
    for pack_id, account_id in list(due):
        with transaction.atomic():
            account_lock(account_id)
            pack = credit_pack_lock(pack_id)
            if pack.status != CreditPack.Status.ACTIVE:
                continue
            left = pack.remaining
            if left:
                CreditLedgerEntry.objects.create(
                    pack=pack, account_id=account_id, kind=CreditLedgerEntry.Kind.EXPIRY, quantity=-left,
                    idempotency_key=f"expiry:pack:{pack.uid}", created_at=now,
                )  # fmt: skip
            pack.remaining, pack.status = 0, CreditPack.Status.EXPIRED
            pack.save(update_fields=["remaining", "status"])
            breakage.append(
                Breakage(pack.pk, account_id, left, round_minor(left * pack.unit_amount_decimal), pack.currency)
            )
    return breakage
