"""Locks on credit packs: always after their accounts' (accounts.locks), in primary-key order."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import CreditPack


def credit_packs_lock(packs: QuerySet[CreditPack]) -> QuerySet[CreditPack]:
    """The packs of the queryset, locked FOR UPDATE in primary-key order (evaluate it to take the locks).
    The caller holds the locks of the packs' accounts already."""
    return packs.select_for_update(of=("self",)).order_by("pk")


def credit_pack_lock(pack_id: int, **filters) -> CreditPack:
    """One pack, locked (its account's lock is held by the caller)."""
    return credit_packs_lock(CreditPack.objects.filter(pk=pack_id, **filters)).get()
