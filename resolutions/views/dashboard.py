"""The customer's dashboard: plan, usage of the last 30 days (chart and table), API keys."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from django.shortcuts import render

from accounts.models import Role
from accounts.pages import customer_page
from accounts.selectors import api_key_list
from billing_portal import clock
from credits.models import CreditAlert
from credits.selectors import credit_balance

from ..selectors import billing_period_overage_get, evaluation_backlog, meter_reporting_status, usage_get

CHART_DAYS = 30
CHART_WIDTH, CHART_HEIGHT = 720, 160


def _chart(days: list[dict]) -> dict:
    """Bar geometry for a server-rendered SVG (no JavaScript, no CDN): one bar per day."""
    peak = max((d["resolutions"] for d in days), default=0) or 1
    slot = CHART_WIDTH / len(days)
    bars = []
    for i, day in enumerate(days):
        height = round(CHART_HEIGHT * day["resolutions"] / peak, 1)
        # Date labels a week apart, and on the last day when it is not crowded by the previous label.
        labelled = i % 7 == 0 or (i == len(days) - 1 and i % 7 >= 4)
        bars.append({
            "x": round(i * slot + slot * 0.15, 1), "width": round(slot * 0.7, 1),
            "y": round(CHART_HEIGHT - height, 1), "height": height, "labelled": labelled, **day,
        })  # fmt: skip
    return {"bars": bars, "peak": peak, "width": CHART_WIDTH, "height": CHART_HEIGHT}


@customer_page
def customer_home(request):
    account = request.account
    today = clock.now().astimezone(zoneinfo.ZoneInfo(account.timezone)).date()
    usage = usage_get(account=account, date_from=today - dt.timedelta(days=CHART_DAYS - 1), date_to=today)
    for day in usage["days"]:
        day["date_obj"] = dt.date.fromisoformat(day["date"])
    is_billing_admin = request.user.role == Role.CUSTOMER_BILLING_ADMIN
    context = {
        "account": account,
        "version": account.plan_version,
        "usage": usage,
        "chart": _chart(usage["days"]) if usage["totals"]["resolutions"] else None,
        "chart_days": CHART_DAYS,
        "is_billing_admin": is_billing_admin,
        "api_keys": api_key_list(account=account) if is_billing_admin else [],
        "alerts": CreditAlert.objects.filter(account=account, active=True),
        "credits_remaining": credit_balance(account=account),
        "backlog": evaluation_backlog(account=account),
        "billing_period": billing_period_overage_get(account=account, now=clock.now()),
        "metering": meter_reporting_status(account=account, now=clock.now()),
    }
    return render(request, "portal/dashboard.html", context)
