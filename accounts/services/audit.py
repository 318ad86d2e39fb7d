"""The audit log: who changed what, written in the same transaction as the change."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from billing_portal import clock

from ..models import Account, AuditLogEntry, User

Actor = User | str  # a person, or a label for the system ("command:create_account")


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "total_seconds"):
        return value.total_seconds()
    return value


def audit_log_write(
    *,
    actor: Actor,
    action: str,
    obj,
    account: Account | None = None,
    before=None,
    after=None,
    reason: str = "",
) -> AuditLogEntry:
    """Record a change. Must run inside the transaction that makes the change, so that the entry and the
    change are committed (or rolled back) together."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_log_write must be called inside the transaction of the change it records.")
    user = actor if isinstance(actor, User) else None
    return AuditLogEntry.objects.create(
        created_at=clock.now(),
        actor=user,
        actor_label=(user.get_username() if user else str(actor))[:200],
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        account=account,
        before=_json_safe(before),
        after=_json_safe(after),
        reason=reason,
    )
