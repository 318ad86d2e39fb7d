"""Credit alerts: once per crossing, by email to billing admins and the account manager, and on the page."""

import datetime as dt

import pytest

from credits.models import CreditAlert
from credits.services import credit_pack_grant
from resolutions.services import resolutions_fund
from resolutions.tests.conftest import NOW
from tests.factories import BillingAdminFactory

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


@pytest.fixture
def fund_some(post_events, django_capture_on_commit_callbacks):
    from resolutions.tests.conftest import event

    def fund(start, n):
        events = []
        for i in range(start, start + n):
            events += [event(f"a{i}", f"c{i}", "ai_answer", 100), event(f"b{i}", f"c{i}", "customer_confirmed", 90)]
        for at in range(0, len(events), 1000):
            post_events(*events[at : at + 1000])
        with django_capture_on_commit_callbacks(execute=True):  # emails go out after the commit
            return resolutions_fund(now=NOW)

    return fund


def test_low_balance_is_told_once_per_crossing(fund_some, account, manager, mailoutbox, now, client):
    account.account_manager = manager
    account.save()
    manager.email = "am@example.com"
    manager.save()
    BillingAdminFactory(account=account, email="billing@acme.example")
    credit_pack_grant(account=account, quantity=10, source="adjustment", actor="t", starts_at=NOW - 5 * DAY,
                      expires_at=NOW + 300 * DAY)  # fmt: skip
    fund_some(0, 7)  # 3 of 10 left: 30 %, above 20 % (the burn rate, though, already outruns expiry)
    assert not [m for m in mailoutbox if "running low" in m.subject]
    fund_some(7, 2)  # 1 left: 10 %
    (mail,) = [m for m in mailoutbox if "running low" in m.subject]
    assert "Credits running low" in mail.subject and {"am@example.com", "billing@acme.example"} <= set(mail.to)
    assert "1 of 10 prepaid resolutions left" in mail.body
    fund_some(9, 3)  # still low (now empty): no second email for the same crossing, but current figures
    assert len([m for m in mailoutbox if "running low" in m.subject]) == 1
    assert CreditAlert.objects.get(kind="low_balance").message.startswith("0 of 10 prepaid")

    credit_pack_grant(account=account, quantity=100, source="adjustment", actor="t", starts_at=NOW - 5 * DAY,
                      expires_at=NOW + 300 * DAY)  # fmt: skip
    resolutions_fund(now=NOW)  # the next cycle clears it
    assert CreditAlert.objects.get(kind="low_balance").active is False
    fund_some(12, 95)  # 5 of 110 left: a second crossing, a second email
    low = CreditAlert.objects.get(kind="low_balance")
    assert low.active and low.times_raised == 2
    client.force_login(BillingAdminFactory(account=account))
    assert "Credits running low" in client.get("/portal/").content.decode()
    fund_some(107, 5)  # the last 5: none left, and the banner says so rather than "running low"
    page = client.get("/portal/").content.decode()
    assert "Credits used up." in page and "Credits running low" not in page


def test_burn_rate_that_outruns_expiry_is_told(fund_some, account, mailoutbox, now):
    BillingAdminFactory(account=account, email="billing@acme.example")
    credit_pack_grant(account=account, quantity=1000, source="adjustment", actor="t", starts_at=NOW - 5 * DAY,
                      expires_at=NOW + 30 * DAY)  # fmt: skip
    fund_some(0, 280)  # 280 in the 14-day window = 20/day; 720 left = 36 days > 30 days: fine
    assert not CreditAlert.objects.filter(kind="burn_rate", active=True).exists()
    fund_some(280, 100)  # 27/day; 620 left = 23 days < 30 days to expiry
    alert = CreditAlert.objects.get(kind="burn_rate")
    assert alert.active and "run out around" in alert.message
    assert any("run out before they expire" in m.subject for m in mailoutbox)
