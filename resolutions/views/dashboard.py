"""The customer's dashboard of the current Stripe billing period (issue 11): the period's resolutions and
spend, the next invoice (the portal's figure at once, Stripe's loaded into the card by htmx), a forecast
to the period's end, the daily chart of 90 days, the credit burn-down, alerts and meter reporting."""

from __future__ import annotations

import datetime as dt
import logging
import math
import zoneinfo

from django.http import Http404

from accounts.models import Role
from accounts.pages import customer_page, render_page
from accounts.selectors import api_key_list
from billing_portal import clock
from billing_portal.stripe_client import StripeFailure
from credits.models import CreditPack

from ..dashboard import (
    CHART_DAYS,
    PackState,
    billing_period_usage_get,
    credit_alerts_current,
    credit_burn_project,
    credit_packs_get,
    daily_rate_get,
    daily_usage_list,
    forecast_get,
    seats_get,
)
from ..selectors import evaluation_backlog, meter_reporting_status
from ..services.funding import _burn_per_day
from ..services.invoice_preview import invoice_preview_get

logger = logging.getLogger(__name__)

CHART_WIDTH, CHART_HEIGHT = 720, 180
AXIS_LEFT = 48  # room for the y-axis labels


def nice_ticks(peak: float, count: int = 4) -> list[int]:
    """Round y-axis ticks from 0 to at least `peak` (1, 2 or 5 times a power of ten apart)."""
    if peak <= 0:
        return [0, 1]
    raw = peak / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(int(step), 1)
    top = int(math.ceil(peak / step) * step)
    return list(range(0, top + 1, step))


def _daily_chart(days: list[dict], period_start_day: dt.date | None) -> dict:
    """Bar geometry for the server-rendered SVG of daily resolutions: one bar per day, labelled y ticks,
    a date label every two weeks, and a line where the current billing period starts."""
    ticks = nice_ticks(max(d["resolutions"] for d in days))
    top = ticks[-1]
    plot = CHART_WIDTH - AXIS_LEFT
    slot = plot / len(days)
    bars, labels, period_x = [], [], None
    for i, day in enumerate(days):
        height = round(CHART_HEIGHT * day["resolutions"] / top, 1)
        x = AXIS_LEFT + i * slot
        bars.append({"x": round(x + slot * 0.1, 2), "width": round(slot * 0.8, 2), "y": round(CHART_HEIGHT - height, 1),
                     "height": height, **day})  # fmt: skip
        if (len(days) - 1 - i) % 14 == 0:
            last = i == len(days) - 1
            labels.append({"x": round(x + slot if last else x + slot / 2, 1), "date": day["date_obj"],
                           "anchor": "end" if last else "middle"})  # fmt: skip
        if period_start_day is not None and day["date_obj"] == period_start_day:
            period_x = round(x, 1)
    return {
        "bars": bars, "labels": labels, "period_x": period_x, "width": CHART_WIDTH, "height": CHART_HEIGHT,
        "left": AXIS_LEFT, "ticks": [{"value": t, "y": round(CHART_HEIGHT - CHART_HEIGHT * t / top, 1)} for t in ticks],
        "peak": max(d["resolutions"] for d in days), "busiest": max(days, key=lambda d: d["resolutions"]),
    }  # fmt: skip


def _burn_chart(projection: dict, packs: list[PackState], now: dt.datetime, zone) -> dict | None:
    """Line geometry for the credit burn-down: remaining credits from now to the last expiry, with a marker
    at each pack's expiry and at the run-out date."""
    points = projection["points"]
    if len(points) < 2 or not points[0][1]:
        return None
    ticks = nice_ticks(max(r for _, r in points))
    top = ticks[-1]
    start, end = points[0][0], points[-1][0]
    span = (end - start).total_seconds() or 1
    plot = CHART_WIDTH - AXIS_LEFT

    def x(at):
        return round(AXIS_LEFT + plot * (at - start).total_seconds() / span, 1)

    def y(remaining):
        return round(CHART_HEIGHT - CHART_HEIGHT * remaining / top, 1)

    path = " ".join(f"{'L' if i else 'M'}{x(at)},{y(remaining)}" for i, (at, remaining) in enumerate(points))
    markers = [
        {"x": x(p.expires_at), "label": f"{p.remaining:,} expire", "date": p.expires_at}
        for p in packs
        if start < p.expires_at <= end
    ]
    runs_out = projection["runs_out"] if projection["runs_out"] and projection["runs_out"] <= end else None
    for marker in markers:  # a label over each expiry line, unless it would sit on the "run out" label
        marker["labelled"] = runs_out is None or abs(marker["x"] - x(runs_out)) > 220
    # Date ticks: a Monday each week for a span of up to two months, else the first of each month.
    months, first_day = [], start.astimezone(zone).date()
    if (end - start) <= dt.timedelta(days=62):
        day, label = first_day + dt.timedelta(days=(7 - first_day.weekday()) % 7 or 7), "j M"
        while (cursor := dt.datetime.combine(day, dt.time(), zone)) < end:
            months.append({"x": x(cursor), "date": cursor, "format": label})
            day += dt.timedelta(days=7)
    else:
        cursor = dt.datetime.combine(first_day.replace(day=1), dt.time(), zone)
        while cursor <= end:
            if cursor >= start:
                months.append({"x": x(cursor), "date": cursor, "format": "M"})
            cursor = (cursor + dt.timedelta(days=32)).replace(day=1)
    step = max(1, math.ceil(len(months) / 5))
    return {
        "path": path, "width": CHART_WIDTH, "height": CHART_HEIGHT, "left": AXIS_LEFT, "markers": markers,
        "ticks": [{"value": t, "y": y(t)} for t in ticks], "months": months[::step],
        "runs_out_x": x(runs_out) if runs_out else None,
    }  # fmt: skip


@customer_page
def customer_home(request):
    account = request.account
    now = clock.now()
    zone = zoneinfo.ZoneInfo(account.timezone)
    today = now.astimezone(zone).date()
    period = billing_period_usage_get(account=account, now=now)
    usage = daily_usage_list(account=account, date_from=today - dt.timedelta(days=CHART_DAYS - 1), date_to=today)
    rate = daily_rate_get(account=account, today=today)
    packs = credit_packs_get(account=account, now=now)
    live = [
        PackState(p.pk, p.source, p.remaining, p.starts_at, p.expires_at)
        for p in packs
        if p.status == CreditPack.Status.ACTIVE and p.expires_at > now and p.remaining > 0
    ]
    last_expiry = max((p.expires_at for p in live), default=now)
    projection = credit_burn_project(packs=live, rate=rate.mean, now=now, until=max(last_expiry, now))
    # The chart ends a little after the credits run out (or the first pack expires), not at the last expiry.
    chart_end = max(projection["runs_out"] or now, min((p.expires_at for p in live), default=now))
    chart_end = min(last_expiry, chart_end + max((chart_end - now) / 5, dt.timedelta(days=7)))
    chart_projection = credit_burn_project(packs=live, rate=rate.mean, now=now, until=max(chart_end, now))
    seats = seats_get(account=account, now=now) if period else None
    next_invoice = None
    if period:
        seats_minor = seats["next_amount_minor"] if seats else 0
        next_invoice = {"seats_minor": seats_minor, "total_minor": seats_minor + period["overage_minor"]}
    period_day = period["start"].astimezone(zone).date() if period else None
    context = {
        "account": account,
        "version": account.plan_version,
        "period": period,
        "seats": seats,
        "next_invoice": next_invoice,
        "forecast": forecast_get(period=period, rate=rate, packs=live, now=now) if period else None,
        "rate": rate,
        "usage": usage,
        "chart": _daily_chart(usage["days"], period_day) if usage["totals"]["resolutions"] else None,
        "chart_days": CHART_DAYS,
        "packs": packs,
        "credits_remaining": sum(p.remaining for p in live),
        "pending_packs": [p for p in packs if p.status == CreditPack.Status.PENDING],
        "projection": projection,
        "burn_chart": _burn_chart(chart_projection, live, now, zone) if live else None,
        "alerts": credit_alerts_current(
            account=account,
            now=now,
            burn_per_day=_burn_per_day([account.pk], now).get(account.pk, 0.0),
            runs_out=projection["runs_out"],
            rate=rate.mean,
        ),
        "backlog": evaluation_backlog(account=account),
        "metering": meter_reporting_status(account=account, now=now),
        "now": now,
        "today": today,
        "is_billing_admin": request.user.role == Role.CUSTOMER_BILLING_ADMIN,
        "active_keys": api_key_list(account=account).filter(revoked_at__isnull=True).count(),
    }
    return render_page(request, "portal/dashboard.html", context)


@customer_page
def next_invoice_stripe(request):
    """Stripe's own preview of the next invoice (`create_preview`), loaded into the dashboard's card by
    htmx after the page has rendered: the page never waits for Stripe. Without htmx, a page of its own."""
    account = request.account
    context = {"account": account, "stripe_preview": None, "stripe_error": None}
    try:
        preview = context["stripe_preview"] = invoice_preview_get(account=account, now=clock.now())
        context["stripe_difference_abs"] = abs(preview["difference_minor"])
    except Http404:
        context["stripe_error"] = "This account has no Stripe subscription yet, so Stripe has no upcoming invoice."
    except StripeFailure as exc:
        logger.warning("Invoice preview for account %s: Stripe did not answer: %s", account.pk, exc)
        context["stripe_error"] = (
            "Stripe could not be reached just now, so its own figure is not shown. The portal's figure above "
            "is computed from your usage; reload the page to ask Stripe again."
        )
    return render_page(
        request, "portal/dashboard_next_invoice.html", context, partial="portal/_dashboard_next_invoice_stripe.html"
    )
