from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, QuerySet, Sum

from accounts.models import Account
from billing_portal.money import round_minor

from .models import CreditLedgerEntry, CreditPack


def credit_pack_list(*, account: Account) -> QuerySet[CreditPack]:
    return CreditPack.objects.filter(account=account).order_by("expires_at", "pk")


def credit_balance(*, account: Account) -> int:
    """Resolutions left in the account's active packs."""
    return (
        CreditPack.objects.filter(account=account, status=CreditPack.Status.ACTIVE).aggregate(n=Sum("remaining"))["n"]
        or 0
    )


def credit_ledger_sum(*, pack: CreditPack) -> int:
    return CreditLedgerEntry.objects.filter(pack=pack).aggregate(n=Sum("quantity"))["n"] or 0


@dataclass(frozen=True)
class Breakage:
    """Prepaid resolutions a pack lost to expiry: written off, and not taken back by late resolutions."""

    pack_id: int
    account_id: int
    resolutions: int
    amount_minor: int  # at the unit price paid for the pack
    currency: str


def credit_breakage_list(*, account: Account | None = None) -> list[Breakage]:
    """Each pack's breakage as its ledger tells it: resolutions written off (expiry entries, at expiry or
    for a credit voided after it) minus those reclaimed by late resolutions of its validity. Packs without
    breakage are left out. The cached `CreditPack.written_off` holds the same figure (tests check it)."""
    Kind = CreditLedgerEntry.Kind
    entries = CreditLedgerEntry.objects.filter(kind__in=[Kind.EXPIRY, Kind.RECLAIM])
    if account is not None:
        entries = entries.filter(account=account)
    per_pack = (
        entries.values("pack_id")
        .annotate(
            written_off=Sum("quantity", filter=Q(kind=Kind.EXPIRY), default=0),
            reclaimed=Sum("quantity", filter=Q(kind=Kind.RECLAIM), default=0),
        )
        .order_by("pack_id")
    )
    left = {row["pack_id"]: -row["written_off"] - row["reclaimed"] for row in per_pack}
    packs = CreditPack.objects.in_bulk([pk for pk, n in left.items() if n])
    return [
        Breakage(pk, packs[pk].account_id, left[pk], round_minor(left[pk] * packs[pk].unit_amount_decimal),
                 packs[pk].currency)
        for pk in sorted(packs)
    ]  # fmt: skip
