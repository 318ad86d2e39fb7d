"""Credit alerts (DESIGN §3.3): remaining credits below the account's threshold (default 20 % of its
active packs), or a burn rate that would use them up before they expire. Each is told once per
crossing: by email to the customer's billing admins and the account manager, and on the dashboard."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max, Sum

from accounts.models import Account, User
from billing_portal import clock

from .models import CreditAlert, CreditPack

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CreditStanding:
    """What the alert rules look at, per account: its active packs' totals and its recent burn rate."""

    granted: int = 0
    remaining: int = 0
    last_expiry: dt.datetime | None = None
    burn_per_day: float = 0.0  # credited resolutions a day, recent average (from the usage rollups)


def credit_standings(*, account_ids: list[int], now: dt.datetime, burn_by_account: dict[int, float]) -> dict:
    """account id -> CreditStanding, from one aggregate query over the accounts' active packs."""
    standings = {pk: CreditStanding(burn_per_day=burn_by_account.get(pk, 0.0)) for pk in account_ids}
    totals = (
        CreditPack.objects.filter(account_id__in=account_ids, status=CreditPack.Status.ACTIVE, expires_at__gt=now)
        .values("account_id")
        .annotate(granted=Sum("granted"), remaining=Sum("remaining"), last=Max("expires_at"))
        .order_by()
    )
    for row in totals:
        pk = row["account_id"]
        burn = standings[pk].burn_per_day
        standings[pk] = CreditStanding(row["granted"] or 0, row["remaining"] or 0, row["last"], burn)
    return standings


def credit_alert_conditions(*, standing: CreditStanding, threshold_percent: int, now: dt.datetime) -> dict:
    """Each alert kind -> its message when the condition holds now, else None (a pure function)."""
    conditions: dict[str, str | None] = {CreditAlert.Kind.LOW_BALANCE: None, CreditAlert.Kind.BURN_RATE: None}
    granted, remaining = standing.granted, standing.remaining
    if not granted:
        return conditions
    if remaining * 100 < granted * threshold_percent:
        conditions[CreditAlert.Kind.LOW_BALANCE] = (
            f"{remaining:,} of {granted:,} prepaid resolutions left (below {threshold_percent} %). "
            "Resolutions beyond your credits are billed as overage."
        )
    burn = standing.burn_per_day
    if burn > 0 and remaining > 0:
        days_left = remaining / burn
        days_to_expiry = (standing.last_expiry - now).total_seconds() / 86400
        if days_left < days_to_expiry:
            runs_out = (now + dt.timedelta(days=days_left)).date()
            conditions[CreditAlert.Kind.BURN_RATE] = (
                f"At {burn:,.0f} resolutions a day, your credits run out around {runs_out:%d %b %Y}, "
                f"before they expire on {standing.last_expiry:%d %b %Y}."
            )
    return conditions


def credit_alerts_check(
    *, account_ids: list[int], burn_by_account: dict[int, float], now: dt.datetime | None = None
) -> list[CreditAlert]:
    """Raise alerts whose condition became true, clear those that stopped; returns the newly raised.
    Reads the accounts' standings and active alerts in three queries; only accounts with something to
    raise, update or clear are locked and written (one transaction each)."""
    now = now or clock.now()
    if not account_ids:
        return []
    standings = credit_standings(account_ids=account_ids, now=now, burn_by_account=burn_by_account)
    thresholds = dict(Account.objects.filter(pk__in=account_ids).values_list("pk", "low_credit_threshold_percent"))
    active: dict[int, dict[str, str]] = defaultdict(dict)
    for account_id, kind, message in CreditAlert.objects.filter(account_id__in=account_ids, active=True).values_list(
        "account_id", "kind", "message"
    ):
        active[account_id][kind] = message
    raised = []
    for pk in sorted(thresholds):
        conditions = credit_alert_conditions(standing=standings[pk], threshold_percent=thresholds[pk], now=now)
        if all(active[pk].get(kind) == message for kind, message in conditions.items()):
            continue  # nothing to raise, update or clear: the usual case, no rows locked or written
        raised += _alerts_apply(account_id=pk, conditions=conditions, now=now)
    return raised


def _alerts_apply(*, account_id: int, conditions: dict, now: dt.datetime) -> list[CreditAlert]:
    raised = []
    with transaction.atomic():
        for kind, message in conditions.items():
            alert, _ = CreditAlert.objects.select_for_update().get_or_create(account_id=account_id, kind=kind)
            if message and not alert.active:
                alert.active, alert.message, alert.raised_at = True, message, now
                alert.times_raised += 1
                alert.save()
                raised.append(alert)
                transaction.on_commit(lambda a=alert: _email(a))
            elif message and alert.active and alert.message != message:
                alert.message = message  # keep the banner's figures current; no second email
                alert.save(update_fields=["message"])
            elif not message and alert.active:
                alert.active, alert.cleared_at = False, now
                alert.save(update_fields=["active", "cleared_at"])
    return raised


def _email(alert: CreditAlert) -> None:
    account = alert.account
    to = list(
        User.objects.filter(account=account, customer_role=User.CustomerRole.BILLING_ADMIN, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    if account.account_manager and account.account_manager.email:
        to.append(account.account_manager.email)
    if not to:
        return
    try:
        send_mail(
            subject=f"{account.name}: {alert.get_kind_display()}",
            message=f"{alert.message}\n\nSee your credits and usage in the billing portal.",
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=to,
        )
    except OSError as exc:  # the alert stays active and visible on the dashboard either way
        logger.error("Credit alert email for account %s failed: %s", account.pk, exc)
