"""Voids: a staff void of a disputed resolution, and what any void hands back (credit or overage)."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.locks import account_lock
from accounts.models import Account, User
from accounts.services import audit_log_write
from billing_portal import clock
from credits.locks import credit_packs_lock
from credits.models import CreditPack
from credits.services import credit_give_back

from ..models import Conversation, Resolution
from .funding import overage_periods_reprice, period_of
from .metering import WindowCounter
from .rollups import rollups_adjust


def resolution_void(*, resolution: Resolution, actor: User, reason: str) -> Resolution:
    """Void a disputed resolution (staff). The conversation is never billed again. Its credit goes back to
    its pack; its overage is marked for a meter correction and its period re-priced (see
    resolutions_unfund_voided). The returned resolution shows amount 0."""
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
        before_amount, resolution.amount_minor = resolution.amount_minor, 0
        audit_log_write(
            actor=actor, action="resolution.void", obj=resolution, account=account,
            before={"voided": False, "funding": resolution.funding, "amount_minor": before_amount},
            after={"voided": True, "amount_minor": 0}, reason=reason,
        )  # fmt: skip
    return resolution


def resolutions_unfund_voided(account: Account, resolutions: list[Resolution], now: dt.datetime) -> None:
    """Hand back what voided resolutions were funded with, under the account's lock (the caller's
    transaction), after the caller has marked them voided.

    - Credit: the credit goes back to its pack (its balance if the pack is active, else the pack's
      breakage: credits.services.credit_give_back). It was prepaid, never metered: nothing to reverse in
      Stripe.
    - Overage: the resolution's amount becomes 0, its reporting window's count goes down (the meter
      gets a negative correction in the same billing period once the window has closed: services/metering),
      and the remaining overage of its period is re-priced
      (funding.overage_periods_reprice), so that the period's shares and daily rollups still add up to
      what Stripe charges for its remaining count.

    The caller moves the daily rollups by the voided resolutions as they were (rollups_adjust with
    removed=...), before or after this call: the instances passed in are not changed."""
    overage_ids: list[int] = []
    windows = WindowCounter()
    periods: dict[tuple[dt.datetime, dt.datetime], int] = {}
    pack_ids = sorted({r.credit_pack_id for r in resolutions if r.funding == Resolution.Funding.CREDIT})
    if pack_ids:  # every pack given back to, locked at once in primary-key order (then re-read per credit)
        list(credit_packs_lock(CreditPack.objects.filter(pk__in=pack_ids)).values_list("pk", flat=True))
    for resolution in sorted(resolutions, key=lambda r: r.pk):
        if resolution.funding == Resolution.Funding.CREDIT:
            credit_give_back(
                account=account, pack_id=resolution.credit_pack_id, key=f"resolution:{resolution.pk}", now=now
            )
        elif resolution.funding == Resolution.Funding.OVERAGE:
            overage_ids.append(resolution.pk)
            periods[period_of(account, resolution.resolved_at)] = resolution.plan_version_id
            windows.add(account, resolution.resolved_at, -1)
    if overage_ids:
        Resolution.objects.filter(pk__in=overage_ids).update(amount_minor=0)
        overage_periods_reprice(account=account, periods=periods)
        windows.flush()  # the meter: a correction for each window, once it has closed
