"""Writes of the credits app: grants, draw-downs, give-backs and expiry, each an append-only ledger entry
with an idempotency key derived from its cause, and the pack's cached balance moved in the same
transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from accounts.models import Account, CreditPackOffer, User
from accounts.services import Actor, audit_log_write
from billing_portal import clock

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
    """Create an active pack and its grant entry. With an idempotency key, a repeat returns the first pack."""
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_GRANT:
        raise ValidationError({"quantity": f"Grant a whole number of resolutions from 1 to {MAX_GRANT:,}."})
    if source not in CreditPack.Source.values:
        raise ValidationError({"source": f"Unknown source '{source}'."})
    now = clock.now()
    starts_at = starts_at or now
    expires_at = expires_at or starts_at + DEFAULT_VALIDITY
    if expires_at <= starts_at:
        raise ValidationError({"expires_at": "A pack must expire after it starts."})
    if expires_at <= now:
        raise ValidationError({"expires_at": "This pack would already be expired."})
    if source == CreditPack.Source.PROMOTIONAL and not reason.strip():
        raise ValidationError({"reason": "Say why promotional credit is granted (it is audited)."})
    key = idempotency_key or f"grant:{source}:{account.pk}:{now.isoformat()}:{quantity}"
    with transaction.atomic():
        existing = CreditLedgerEntry.objects.filter(idempotency_key=key).select_related("pack").first()
        if existing is not None:
            return existing.pack
        pack = CreditPack.objects.create(
            account=account, source=source, status=CreditPack.Status.ACTIVE, granted=quantity, remaining=quantity,
            starts_at=starts_at, expires_at=expires_at, currency=account.currency,
            unit_amount_decimal=unit_amount_decimal, offer=offer, reason=reason,
            created_by=actor if isinstance(actor, User) else None, created_at=now,
        )  # fmt: skip
        CreditLedgerEntry.objects.create(
            pack=pack, account=account, kind=CreditLedgerEntry.Kind.GRANT, quantity=quantity,
            idempotency_key=key, created_at=now,
        )  # fmt: skip
        audit_log_write(
            actor=actor, action="credit_pack.grant", obj=pack, account=account, after=_pack_snapshot(pack),
            reason=reason,
        )  # fmt: skip
    return pack


@dataclass(frozen=True)
class Demand:
    """One resolution asking for one credit: the key names it in the ledger; `at` is when it happened."""

    key: str
    at: dt.datetime


def _priority(pack: CreditPack) -> tuple:
    return (pack.expires_at, _SOURCE_RANK.get(pack.source, 1), pack.created_at, pack.pk)


def credits_draw(*, account: Account, demands: list[Demand], now: dt.datetime) -> dict[str, CreditPack | None]:
    """Fund each demand, in the order given, from the active pack that covers its instant and expires
    soonest; None when no pack can (overage). Runs inside the caller's transaction, which must hold the
    account's lock; pack rows are locked in primary-key order. Writes one ledger entry per credit."""
    if not demands:
        return {}
    earliest = min(d.at for d in demands)
    packs = list(
        CreditPack.objects.select_for_update()
        .filter(account=account, status=CreditPack.Status.ACTIVE, remaining__gt=0, expires_at__gt=earliest)
        .order_by("pk")
    )
    packs.sort(key=_priority)
    funded: dict[str, CreditPack | None] = {}
    entries = []
    used: dict[int, int] = {}
    for demand in demands:
        pack = next(
            (p for p in packs if p.remaining > 0 and p.starts_at <= demand.at < p.expires_at), None
        )  # few packs per account: a scan is cheaper than an interval structure
        funded[demand.key] = pack
        if pack is None:
            continue
        pack.remaining -= 1
        used[pack.pk] = used.get(pack.pk, 0) + 1
        entries.append(
            CreditLedgerEntry(
                pack=pack,
                account=account,
                kind=CreditLedgerEntry.Kind.DRAWDOWN,
                quantity=-1,
                idempotency_key=f"drawdown:{demand.key}",
                created_at=now,
            )  # fmt: skip
        )
    if entries:
        _ledger_insert(entries)
        CreditPack.objects.bulk_update([p for p in packs if p.pk in used], ["remaining"], batch_size=500)
    return funded


def _ledger_insert(entries: list[CreditLedgerEntry]) -> None:
    """Append entries: COPY on PostgreSQL (one round trip, no per-row ORM cost), bulk_create elsewhere.
    The unique idempotency keys still hold: a duplicate aborts the whole transaction."""
    if connection.vendor != "postgresql":
        CreditLedgerEntry.objects.bulk_create(entries, batch_size=1000)
        return
    columns = "pack_id, account_id, kind, quantity, idempotency_key, created_at"
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {CreditLedgerEntry._meta.db_table} ({columns}) FROM STDIN") as copy,
    ):
        for e in entries:
            copy.write_row((e.pack_id, e.account_id, e.kind, e.quantity, e.idempotency_key, e.created_at))


def credit_give_back(*, account: Account, pack_id: int, key: str, now: dt.datetime) -> bool:
    """Return one credit to its pack if the pack is still usable; False when it is not (the caller then
    marks the resolution for reversal toward Stripe). Idempotent by `key`."""
    pack = CreditPack.objects.select_for_update().get(pk=pack_id, account=account)
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
            Account.objects.select_for_update().filter(pk=account_id).values_list("pk", flat=True).get()
            pack = CreditPack.objects.select_for_update().get(pk=pack_id)
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
