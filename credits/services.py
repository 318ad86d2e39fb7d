"""Writes of the credits app: grants, draw-downs, give-backs and expiry, each an append-only ledger entry
with an idempotency key derived from its cause, and the pack's cached balance moved in the same
transaction."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from accounts.locks import account_lock
from accounts.models import Account, CreditPackOffer, User
from accounts.services import Actor, audit_log_write
from billing_portal import clock

from . import sql
from .locks import credit_pack_lock, credit_packs_lock
from .models import CreditLedgerEntry, CreditPack
from .selectors import Breakage

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
    term_over_ok: bool = False,
) -> CreditPack:
    """Create an active pack and its grant entry, keyed by its cause, never by the clock: without a caller key
    the entry's key is the new pack's (`grant:pack:<uid>`), so two grants are two packs even at one frozen
    instant; with one, it is derived from (account, key) and a repeat returns the first pack (a repeat with
    another quantity or source is refused). Closed accounts get nothing.

    `term_over_ok` (a seat conversion resumed after its term ended, e.g. after a crash between its Stripe step
    and its grant) grants a pack whose expiry has passed: its seats are already gone in Stripe, so refusing
    would leave seats removed without credits, retried for ever. The expiry sweep writes it off as breakage
    and late resolutions of its term still draw on it."""
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
    if expires_at <= now and not term_over_ok:
        raise ValidationError({"expires_at": "This pack would already be expired."})
    if source == CreditPack.Source.PROMOTIONAL and not reason.strip():
        raise ValidationError({"reason": "Say why promotional credit is granted (it is audited)."})
    with transaction.atomic():
        # The account's lock serialises repeats of one key: the second sees the first's entry, never a duplicate.
        # A seat conversion's pack is never refused: its seats are already gone in Stripe (the conversion
        # itself refuses closed accounts before it changes anything).
        closed = account_lock(account.pk).status == Account.Status.CLOSED
        if closed and source != CreditPack.Source.SEAT_CONVERSION:
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
    left: int  # an active pack's remaining; an expired pack's written-off credit (it can be reclaimed)
    expired: bool
    remaining: int
    written_off: int
    used: int = 0

    def balances(self) -> tuple[int, int, int]:
        """(pk, remaining, written_off) after the draws."""
        if self.expired:
            return self.pk, self.remaining, self.left
        return self.pk, self.left, self.written_off


def credits_draw(*, demands: list[Demand], now: dt.datetime) -> list[int | None]:
    """Fund each demand, in the order given, from its account's pack that covers its instant and expires
    soonest (ties: promotional first, then the oldest); returns the pack id per demand, None when no pack
    can (overage). A pack that has expired since still funds a late demand of its validity from its
    written-off credit (a reclaim entry +1 beside the draw-down -1; breakage shrinks by one): an expired
    pack covering the instant always expires soonest, so its write-off is used first. Only when no pack
    that covered the instant has credit left, active or written off, is a demand overage.

    Demands may span several accounts. Runs inside the caller's transaction, which must hold the accounts'
    locks; pack rows are locked in primary-key order. One query finds the drawable packs (active ones
    with credit, expired ones with breakage, via the cached `written_off`); the ledger entries are plain
    rows (COPYed on PostgreSQL) and each used pack's balances are written with one statement."""
    if not demands:
        return []
    account_ids = sorted({d.account_id for d in demands})
    earliest = min(d.at for d in demands)
    drawable: dict[int, list[_Drawable]] = {pk: [] for pk in account_ids}
    Status = CreditPack.Status
    candidates = CreditPack.objects.filter(
        Q(status=Status.ACTIVE, remaining__gt=0) | Q(status=Status.EXPIRED, written_off__gt=0),
        account_id__in=account_ids, status__in=[Status.ACTIVE, Status.EXPIRED], expires_at__gt=earliest,
    )  # fmt: skip
    for pk, account_id, source, status, starts_at, expires_at, created_at, remaining, written_off in credit_packs_lock(
        candidates
    ).values_list("pk", "account_id", "source", "status", "starts_at", "expires_at", "created_at", "remaining",
                  "written_off"):  # fmt: skip
        priority = (expires_at, _SOURCE_RANK.get(source, 1), created_at, pk)
        expired = status == Status.EXPIRED
        left = written_off if expired else remaining
        drawable[account_id].append(
            _Drawable(priority, pk, starts_at, expires_at, left, expired, remaining, written_off)
        )
    for packs in drawable.values():
        packs.sort(key=lambda p: p.priority)
    funded: list[int | None] = []
    entries: list[tuple] = []
    drawdown, reclaim = CreditLedgerEntry.Kind.DRAWDOWN.value, CreditLedgerEntry.Kind.RECLAIM.value
    for demand in demands:
        at = demand.at
        # Few packs per account: a scan is cheaper than an interval structure.
        pack = next((p for p in drawable[demand.account_id] if p.left and p.starts_at <= at < p.expires_at), None)
        if pack is None:
            funded.append(None)
            continue
        pack.left -= 1
        pack.used += 1
        funded.append(pack.pk)
        if pack.expired:
            entries.append((pack.pk, demand.account_id, reclaim, 1, f"reclaim:{demand.key}", now))
        entries.append((pack.pk, demand.account_id, drawdown, -1, f"drawdown:{demand.key}", now))
    if entries:
        sql.ledger_insert(entries)
        sql.pack_balances_write([p.balances() for packs in drawable.values() for p in packs if p.used])
    return funded


def credit_give_back(*, account: Account, pack_id: int, key: str, now: dt.datetime) -> bool:
    """Hand a voided resolution's credit back to its pack; a credit-funded resolution was never metered, so
    nothing is ever reversed in Stripe for it. An active pack gets it back in its balance (`void` +1; if the
    pack is past its expiry, the expiry sweep writes it off with the rest). An expired pack's credit joins
    its breakage: `void` +1 and `expiry` -1 (`expiry:<key>`), so the ledger still sums to its remaining (0)
    and `written_off` grows by one (a late resolution of its validity may still reclaim it).

    Returns True when the credit went back to the balance, False when it joined the breakage. Idempotent by
    `key`. Runs in the caller's transaction, which holds the account's lock."""
    pack = credit_pack_lock(pack_id, account=account)
    live = pack.status == CreditPack.Status.ACTIVE
    void_key = f"void:{key}"
    if CreditLedgerEntry.objects.filter(idempotency_key=void_key).exists():  # the pack's lock orders writers
        return live
    Kind = CreditLedgerEntry.Kind
    entries = [CreditLedgerEntry(pack=pack, account=account, kind=Kind.VOID, quantity=1, idempotency_key=void_key,
                                 created_at=now)]  # fmt: skip
    if live:
        pack.remaining += 1
    else:
        entries.append(CreditLedgerEntry(pack=pack, account=account, kind=Kind.EXPIRY, quantity=-1,
                                         idempotency_key=f"expiry:{key}", created_at=now))  # fmt: skip
        pack.written_off += 1
    CreditLedgerEntry.objects.bulk_create(entries)
    pack.save(update_fields=["remaining", "written_off"])
    return live


def credit_packs_expire(*, now: dt.datetime | None = None) -> list[Breakage]:
    """Write off what is left of packs past their expiry (one expiry entry each; `written_off` takes it) and
    report the breakage written off by this run (unused prepaid resolutions, at the price paid): what
    `credit_breakage_list` shows for the pack right after. Running it twice changes nothing the second time."""
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
            pack.remaining, pack.written_off, pack.status = 0, pack.written_off + left, CreditPack.Status.EXPIRED
            pack.save(update_fields=["remaining", "written_off", "status"])
            breakage.append(
                Breakage(pack.pk, account_id, left, round_minor(left * pack.unit_amount_decimal), pack.currency)
            )
    return breakage
