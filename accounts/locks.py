"""The one place that takes row locks on accounts (Saleor's lock_objects idea).

Order, everywhere: accounts first, in primary-key order, then their credit packs in primary-key order
(`credits.locks.credit_packs_lock`). Accounts are locked `FOR NO KEY UPDATE` and only their own row
(never a joined plan version), so an ingested batch's foreign-key check on the account never waits for
an evaluator or a funder. Call inside the transaction that changes what the lock protects.
"""

from __future__ import annotations

from collections.abc import Iterable

from .models import Account


def accounts_lock(account_ids: Iterable[int]) -> dict[int, Account]:
    """Lock the accounts' rows (id order) and return them by id, with their plan version loaded (without
    locking it). Raises Account.DoesNotExist when one of them is gone."""
    ids = sorted(set(account_ids))
    locked = (
        Account.objects.select_for_update(no_key=True, of=("self",))
        .select_related("plan_version")
        .filter(pk__in=ids)
        .order_by("pk")
    )
    accounts = {account.pk: account for account in locked}
    if len(accounts) != len(ids):
        raise Account.DoesNotExist(f"account(s) {sorted(set(ids) - set(accounts))} do not exist")
    return accounts


def account_lock(account_id: int) -> Account:
    """Lock one account's row and return it (see accounts_lock)."""
    return accounts_lock([account_id])[account_id]
