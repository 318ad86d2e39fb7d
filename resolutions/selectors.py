"""Reads: usage from the daily rollups (never the ledger), resolutions with cursor pagination."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from django.conf import settings
from django.db.models import F, QuerySet
from django.http import Http404

from accounts.models import Account, User
from accounts.selectors import account_list_visible
from billing_portal.clock import INSTANT_MAX, INSTANT_MIN

from .dashboard import billing_period_usage_get
from .models import DailyUsage, MeterReport, MeterWindow, PendingEvaluation, Resolution

METER_OPEN_STATES = (MeterReport.State.PENDING, MeterReport.State.SENT, MeterReport.State.REJECTED)
USAGE_KEYS = ("resolutions", "credited", "overage", "amount_minor")
MAX_USAGE_DAYS = 366
# The dates a read may ask for: those of the instants the portal takes (clock.parse_instant), so that the
# day after the last one, and its midnight in any timezone, are still dates Python can hold.
DATE_MIN = INSTANT_MIN.date()
DATE_MAX = INSTANT_MAX.date() - dt.timedelta(days=1)


def usage_get(*, account: Account, date_from: dt.date, date_to: dt.date) -> dict:
    """Every day of the range (days without resolutions count zero), and the totals."""
    rows = {
        row["date"]: row
        for row in DailyUsage.objects.filter(account=account, date__gte=date_from, date__lte=date_to).values(
            "date", *USAGE_KEYS
        )
    }
    days = []
    for offset in range((date_to - date_from).days + 1):  # never computes a day past date_to
        day = date_from + dt.timedelta(days=offset)
        row = rows.get(day)
        days.append({"date": day.isoformat(), **{k: (row[k] if row else 0) for k in USAGE_KEYS}})
    totals = {k: sum(d[k] for d in days) for k in USAGE_KEYS}
    return {"currency": account.currency, "days": days, "totals": totals}


def evaluation_backlog(*, account: Account) -> dict:
    """Events stored but not evaluated yet (EVENT_EVALUATION="deferred"): batches queued, conversations
    they touch, and since when. Usually empty: a worker evaluates each batch within seconds."""
    queued = PendingEvaluation.objects.filter(account=account)
    rows = list(queued.values_list("conversation_ids", "created_at"))
    return {
        "batches": len(rows),
        "conversations": len({cid for ids, _ in rows for cid in ids}),
        "oldest": min((at for _, at in rows), default=None),
    }


def resolution_list(*, account: Account, date_from: dt.date | None, date_to: dt.date | None) -> QuerySet[Resolution]:
    """The account's resolutions (voided ones included, marked), by resolved_at; dates in its timezone."""
    resolutions = Resolution.objects.filter(account=account)
    tz = zoneinfo.ZoneInfo(account.timezone)
    if date_from:
        resolutions = resolutions.filter(resolved_at__gte=dt.datetime.combine(date_from, dt.time(), tz))
    if date_to:
        resolutions = resolutions.filter(
            resolved_at__lt=dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), tz)
        )
    return resolutions


def resolution_get_visible(*, user: User, pk: int) -> Resolution:
    """For staff: the resolution if its account is visible to them, else 404."""
    resolution = (
        Resolution.objects.filter(pk=pk, account__in=account_list_visible(user=user)).select_related("account").first()
    )
    if resolution is None:
        raise Http404("No such resolution.")
    return resolution


def billing_period_overage_get(*, account, now) -> dict | None:
    """The account's current Stripe billing period (as Stripe shows it) and its overage so far: what the
    period's invoice will charge for resolutions, counted over exactly the resolutions funding priced in
    it (the first period includes what came before it). None when Stripe has no subscription for it.
    From the daily rollups and the period's two ragged edges (resolutions.dashboard), never a scan."""
    period = billing_period_usage_get(account=account, now=now)
    if period is None:
        return None
    return {
        "start": period["start"], "end": period["end"], "overage": period["overage"],
        "amount_minor": period["overage_minor"], "currency": account.currency,
    }  # fmt: skip


def meter_reporting_status(*, account: Account, now: dt.datetime) -> dict:
    """How far the account's overage is in Stripe, for its dashboard: `through`, the instant up to which
    every overage resolution is in Stripe's meter (the start of the earliest window not fully confirmed,
    else the end of the last closed window: a window is reported once it has closed); `waiting`, report
    rows not confirmed yet; `refused`, those Stripe refused (kept and retried; staff see why)."""
    size = settings.METER_WINDOW_SECONDS
    closed = dt.datetime.fromtimestamp(int(now.timestamp()) // size * size, dt.UTC)
    waiting_windows = MeterWindow.objects.filter(account_id=account.pk, end__lte=now).exclude(overage=F("reported"))
    open_rows = MeterReport.objects.filter(account_id=account.pk, state__in=METER_OPEN_STATES)
    starts = [
        waiting_windows.order_by("start").values_list("start", flat=True).first(),
        open_rows.order_by("window__start").values_list("window__start", flat=True).first(),
    ]
    return {
        "through": min([s for s in starts if s is not None] + [closed]),
        "waiting": open_rows.count(),
        "refused": open_rows.filter(state=MeterReport.State.REJECTED).count(),
        "window_minutes": size // 60,
    }
