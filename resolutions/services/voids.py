"""Voids: a staff void of a disputed resolution, and what any void hands back (credit or overage)."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.locks import account_lock
from accounts.models import Account, User
from accounts.services import audit_log_write
from billing_portal import clock
from credits.services import credit_give_back

from ..models import Conversation, Resolution
from .rollups import rollups_adjust


def resolution_void(*, resolution: Resolution, actor: User, reason: str) -> Resolution:
    """Void a disputed resolution (staff). The conversation is never billed again. Its credit or overage
    is handed back by the funding side (credit packs, meter corrections)."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the resolution is voided (the customer will see it)."})
    with transaction.atomic():
        account = account_lock(resolution.account_id)
        resolution = Resolution.objects.select_for_update().get(pk=resolution.pk)
        if resolution.voided_at is not None:
            raise ValidationError("This resolution is already voided.")
        now = clock.now()
        resolution.voided_at, resolution.voided_by, resolution.void_reason = now, actor, reason
        resolution.save(update_fields=["voided_at", "voided_by", "void_reason"])
        Conversation.objects.filter(account=account, conversation_id=resolution.conversation_id).update(
            voided_by_staff=True, updated_at=now
        )
        rollups_adjust(account, added=[], removed=[resolution])
        resolutions_unfund_voided(account, [resolution], now)
        audit_log_write(
            actor=actor, action="resolution.void", obj=resolution, account=account,
            before={"voided": False, "funding": resolution.funding}, after={"voided": True}, reason=reason,
        )  # fmt: skip
    return resolution


def resolutions_unfund_voided(account: Account, resolutions: list[Resolution], now: dt.datetime) -> None:
    """A voided resolution's credit goes back to its pack if that pack is still usable; otherwise (and for
    overage) it is marked for reversal toward Stripe, in the same billing period."""
    for resolution in resolutions:
        if resolution.funding == Resolution.Funding.CREDIT and credit_give_back(
            account=account, pack_id=resolution.credit_pack_id, key=f"resolution:{resolution.pk}", now=now
        ):
            continue
        if resolution.funding in (Resolution.Funding.CREDIT, Resolution.Funding.OVERAGE):
            Resolution.objects.filter(pk=resolution.pk).update(reversal=Resolution.Reversal.PENDING)
