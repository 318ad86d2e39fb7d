"""Credit alerts (DESIGN §3.3): remaining credits below the account's threshold (default 20 % of its
active packs), or a burn rate that would use them up before they expire. Each is told once per
crossing: by email to the customer's billing admins and the account manager, and on the dashboard."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max, Sum

from accounts.models import Account, User
from billing_portal import clock

from .models import CreditAlert, CreditPack

logger = logging.getLogger(__name__)


def credit_alert_conditions(*, account: Account, now: dt.datetime, burn_per_day: float) -> dict[str, str | None]:
    """Each alert kind -> its message when the condition holds now, else None. `burn_per_day` is the
    recent average of credited resolutions a day (the caller reads it from its usage rollups)."""
    packs = CreditPack.objects.filter(account=account, status=CreditPack.Status.ACTIVE, expires_at__gt=now)
    totals = packs.aggregate(granted=Sum("granted"), remaining=Sum("remaining"), last=Max("expires_at"))
    granted, remaining = totals["granted"] or 0, totals["remaining"] or 0
    conditions: dict[str, str | None] = {CreditAlert.Kind.LOW_BALANCE: None, CreditAlert.Kind.BURN_RATE: None}
    if not granted:
        return conditions
    threshold = account.low_credit_threshold_percent
    if remaining * 100 < granted * threshold:
        conditions[CreditAlert.Kind.LOW_BALANCE] = (
            f"{remaining:,} of {granted:,} prepaid resolutions left (below {threshold} %). "
            "Resolutions beyond your credits are billed as overage."
        )
    burn = burn_per_day
    if burn > 0 and remaining > 0:
        days_left = remaining / burn
        days_to_expiry = (totals["last"] - now).total_seconds() / 86400
        if days_left < days_to_expiry:
            runs_out = (now + dt.timedelta(days=days_left)).date()
            conditions[CreditAlert.Kind.BURN_RATE] = (
                f"At {burn:,.0f} resolutions a day, your credits run out around {runs_out:%d %b %Y}, "
                f"before they expire on {totals['last']:%d %b %Y}."
            )
    return conditions


def credit_alerts_check(*, account: Account, burn_per_day: float, now: dt.datetime | None = None) -> list[CreditAlert]:
    """Raise alerts whose condition became true, clear those that stopped; returns the newly raised."""
    now = now or clock.now()
    raised = []
    conditions = credit_alert_conditions(account=account, now=now, burn_per_day=burn_per_day)
    if not any(conditions.values()) and not CreditAlert.objects.filter(account=account, active=True).exists():
        return raised  # nothing to raise or clear: the usual case, no rows locked or written
    with transaction.atomic():
        for kind, message in conditions.items():
            alert, _ = CreditAlert.objects.select_for_update().get_or_create(account=account, kind=kind)
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
