"""Writes for the accounts app. Views, APIs, admin actions, commands and tasks call these; each keeps its
invariant and writes its audit entry in the same transaction as the change."""

from .accounts import account_assign_manager, account_create, user_create
from .api_keys import api_key_authenticate, api_key_create, api_key_revoke
from .audit import Actor, audit_log_write
from .plans import (
    PlanVersionConflict,
    price_plan_create,
    price_plan_version_create,
    price_plan_version_digest,
    price_plan_version_publish,
    price_plan_version_retire,
    price_plan_version_snapshot,
    price_plan_version_update,
    staff_groups_ensure,
)

__all__ = [
    "Actor", "PlanVersionConflict", "account_assign_manager", "account_create", "api_key_authenticate",
    "api_key_create", "api_key_revoke", "audit_log_write", "price_plan_create", "price_plan_version_create",
    "price_plan_version_digest",
    "price_plan_version_publish", "price_plan_version_retire", "price_plan_version_snapshot",
    "price_plan_version_update", "staff_groups_ensure", "user_create",
]  # fmt: skip
