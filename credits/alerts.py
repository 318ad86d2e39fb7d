"""Credit alerts (DESIGN §3.3): remaining credits below the account's threshold (default 20 % of its
active packs), or a burn rate that would use them up before they expire. Each is told once per
crossing: by email to the customer's billing admins and the account manager, and on the dashboard."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max, Sum

from accounts.locks import accounts_lock
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
    *,
    account_ids: list[int],
    burn_by_account: dict[int, float],
    now: dt.datetime | None = None,
    kinds: list[str] | None = None,
) -> list[CreditAlert]:
    """Raise alerts whose condition became true, clear those that stopped; returns the newly raised.
    Reads the accounts' standings and alerts in three queries. If anything is to raise, update or clear,
    one transaction locks those accounts (in id order, as funding does), decides again on the locked
    state, and writes every changed alert with one upsert; emails go once it has committed. `kinds`
    limits the check to those alerts (a changed threshold needs no burn rate: only the low balance)."""
    now = now or clock.now()
    if not account_ids:
        return []
    standings = credit_standings(account_ids=account_ids, now=now, burn_by_account=burn_by_account)
    thresholds = dict(Account.objects.filter(pk__in=account_ids).values_list("pk", "low_credit_threshold_percent"))
    conditions = {
        pk: {
            kind: message
            for kind, message in credit_alert_conditions(
                standing=standings[pk], threshold_percent=thresholds[pk], now=now
            ).items()
            if kinds is None or kind in kinds
        }
        for pk in thresholds
    }
    first = _alert_changes(conditions, _alerts_of(list(conditions)), now)
    if not first:
        return []  # nothing to raise, update or clear: the usual case, no rows locked or written
    changing = sorted({alert.account_id for alert, _ in first})
    with transaction.atomic():
        accounts_lock(changing)
        changes = _alert_changes({pk: conditions[pk] for pk in changing}, _alerts_of(changing), now)
        CreditAlert.objects.bulk_create(
            [alert for alert, _ in changes],
            update_conflicts=True,
            unique_fields=["account", "kind"],
            update_fields=["active", "message", "raised_at", "cleared_at", "times_raised"],
        )
        raised = [alert for alert, is_raised in changes if is_raised]
        for alert in raised:
            transaction.on_commit(lambda a=alert: _email(a))
    return raised


def _alerts_of(account_ids: list[int]) -> dict[tuple[int, str], CreditAlert]:
    alerts = CreditAlert.objects.filter(account_id__in=account_ids)
    return {(a.account_id, a.kind): a for a in alerts}


def _alert_changes(conditions: dict[int, dict], alerts: dict, now: dt.datetime) -> list[tuple[CreditAlert, bool]]:
    """(alert as it should be stored, whether it is newly raised) for each alert that changes."""
    changes = []
    for account_id, by_kind in conditions.items():
        for kind, message in by_kind.items():
            alert = alerts.get((account_id, kind)) or CreditAlert(account_id=account_id, kind=kind)
            if message and not alert.active:
                alert.active, alert.message, alert.raised_at = True, message, now
                alert.times_raised += 1
                changes.append((alert, True))
            elif message and alert.message != message:
                alert.message = message  # keep the banner's figures current; no second email
                changes.append((alert, False))
            elif not message and alert.active:
                alert.active, alert.cleared_at = False, now
                changes.append((alert, False))
    return changes


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
