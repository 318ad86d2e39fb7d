from __future__ import annotations

from django.db.models import QuerySet, Sum

from accounts.models import Account

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
