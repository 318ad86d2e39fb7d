"""Changing an account's timezone rebuilds its daily rollups in the same transaction (service and admin)."""

import datetime as dt
import zoneinfo

import pytest

from accounts.models import AuditLogEntry
from credits.services import credit_pack_grant
from resolutions.models import DailyUsage, Resolution
from resolutions.services import resolution_void, resolutions_fund
from resolutions.tests.conftest import NOW, event

pytestmark = pytest.mark.django_db


def rollups(account) -> dict:
    return {
        d.date.isoformat(): [d.resolutions, d.credited, d.overage, d.amount_minor]
        for d in DailyUsage.objects.filter(account=account)
        if any((d.resolutions, d.credited, d.overage, d.amount_minor))
    }


def recomputed(account) -> dict:
    tz = zoneinfo.ZoneInfo(account.timezone)
    days: dict = {}
    for r in Resolution.objects.filter(account=account, voided_at=None):
        row = days.setdefault(r.resolved_at.astimezone(tz).date().isoformat(), [0, 0, 0, 0])
        row[0] += 1
        row[1] += r.funding == "credit"
        row[2] += r.funding == "overage"
        row[3] += r.amount_minor
    return days


@pytest.fixture
def near_midnight(post_events, account, manager, now):
    """Resolutions on both sides of UTC midnight (NOW is 12:00 UTC on 2026-11-02): some credited, some
    overage, one voided, one left unfunded."""
    credit_pack_grant(
        account=account, quantity=2, source="adjustment", actor="test", starts_at=NOW - dt.timedelta(days=3)
    )
    minutes = [12 * 60 + 30, 12 * 60 + 10, 11 * 60 + 50, 11 * 60 + 40, 3 * 60]  # UTC 23:30, 23:50 | 00:10, 00:20, 09:00
    post_events(*[e for i, m in enumerate(minutes[:4]) for e in _confirmed(f"c{i}", m)])
    resolutions_fund(now=NOW)
    resolution_void(resolution=Resolution.objects.get(conversation_id="c3"), actor=manager, reason="dispute")
    post_events(*_confirmed("unfunded", minutes[4]))
    assert rollups(account) == recomputed(account)
    return account


def _confirmed(cid, minutes_ago):
    return [
        event(f"{cid}-a", cid, "ai_answer", minutes_ago + 1),
        event(f"{cid}-b", cid, "customer_confirmed", minutes_ago),
    ]


def test_changing_the_timezone_rebuilds_the_rollups_by_local_date(near_midnight, key_client, admin_user):
    from resolutions.services.rollups import account_timezone_change

    account = near_midnight
    before = key_client.get("/api/v1/usage?from=2026-11-01&to=2026-11-02").json()
    assert [d["resolutions"] for d in before["days"]] == [2, 2]  # two on the 1st (UTC), two on the 2nd
    account_timezone_change(account=account, timezone="Asia/Tokyo", actor=admin_user)
    account.refresh_from_db()
    assert account.timezone == "Asia/Tokyo"
    assert rollups(account) == recomputed(account)
    after = key_client.get("/api/v1/usage?from=2026-11-01&to=2026-11-03").json()
    assert [d["resolutions"] for d in after["days"]] == [0, 4, 0]  # all on the 2nd in Tokyo (UTC+9)
    assert after["totals"] == before["totals"]
    entry = AuditLogEntry.objects.get(action="account.timezone_change")
    assert (entry.before, entry.after["timezone"]) == ({"timezone": "UTC"}, "Asia/Tokyo")


def test_a_bad_timezone_is_refused_and_changes_nothing(near_midnight, admin_user):
    from django.core.exceptions import ValidationError

    from resolutions.services.rollups import account_timezone_change

    account = near_midnight
    kept = rollups(account)
    with pytest.raises(ValidationError):
        account_timezone_change(account=account, timezone="Mars/Olympus", actor=admin_user)
    account.refresh_from_db()
    assert account.timezone == "UTC" and rollups(account) == kept


def test_the_admin_change_form_rebuilds_the_rollups(near_midnight, client, admin_user):
    account = near_midnight
    client.force_login(admin_user)
    form = {
        "name": account.name, "slug": account.slug, "billing_email": account.billing_email, "currency": "usd",
        "timezone": "America/Los_Angeles", "status": "active", "plan_version": account.plan_version_id,
        "account_manager": "", "low_credit_threshold_percent": 20,
    }  # fmt: skip
    response = client.post(f"/admin/accounts/account/{account.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    account.refresh_from_db()
    assert account.timezone == "America/Los_Angeles"
    assert rollups(account) == recomputed(account)
    days = rollups(account)  # 15:30 ... 16:20 on the 1st in Los Angeles; the unfunded one at 01:00 on the 2nd
    assert set(days) == {"2026-11-01", "2026-11-02"} and days["2026-11-01"][0] == 3
