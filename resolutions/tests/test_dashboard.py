"""The customer's dashboard of the current billing period (issue 11): exact period figures from the rollups
and the two ragged edges (against a brute-force count), the rollups' new counters, the page's figures
against the APIs, Stripe's preview loaded on its own route, empty states, alerts, roles and tenancy."""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import PricePlan
from accounts.services.provisioning import account_provision
from billing_portal import clock
from conftest import PASSWORD
from credits.models import CreditAlert
from credits.services import credit_pack_grant
from resolutions.dashboard import PackState, credit_burn_project, period_usage_sum
from resolutions.ingestion import events_parse
from resolutions.models import Conversation, ConversationTally, DailyUsage, Resolution
from resolutions.services import conversation_events_ingest, resolution_void, resolutions_fund
from resolutions.services.rollups import account_timezone_change
from tests.factories import AccountFactory, CustomerUserFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 11, 2, 9, 30, 15, tzinfo=dt.UTC)
HOUR, MINUTE, DAY = dt.timedelta(hours=1), dt.timedelta(minutes=1), dt.timedelta(days=1)


def ingest(account, conversations, *, now):
    """conversations: (conversation id, [(type, instant), ...]); stored and evaluated at `now`."""
    events = [
        {
            "id": f"{cid}-{kind}-{at.timestamp():.0f}",
            "conversation_id": cid,
            "type": kind,
            "occurred_at": at.isoformat(),
        }
        for cid, steps in conversations
        for kind, at in steps
    ]
    with clock.frozen(now):
        parsed, errors = events_parse({"events": events}, now=now)
        assert errors == []
        conversation_events_ingest(account=account, events=parsed)


def busy_history(account, *, days=6, now):
    """Conversations over `days` days before `now`: confirmed, assumed, escalated and still waiting, every
    few hours (so each local day and each edge has some of each)."""
    rng = random.Random(7)
    conversations = []
    for n in range(days * 24 // 3):
        at = now - days * DAY + n * 3 * HOUR + rng.randrange(0, 170) * MINUTE
        outcome = n % 4
        steps = [("ai_answer", at)]
        if outcome == 0:
            steps.append(("customer_confirmed", at + 2 * MINUTE))
        elif outcome == 2:
            steps.append(("handoff", at + 3 * MINUTE))
        conversations.append((f"c{n}", steps))  # outcome 1 and 3: assumed after 24 h, or still waiting
    for start in range(0, len(conversations), 900):
        ingest(account, conversations[start : start + 900], now=now)
    conversations = dict(conversations)
    return conversations


def brute_force(account, starts, ends):
    rows = Resolution.objects.filter(account=account, voided_at=None, resolved_at__gte=starts, resolved_at__lt=ends)
    escalated = Conversation.objects.filter(account=account, escalated_at__gte=starts, escalated_at__lt=ends)
    return {
        "resolutions": rows.count(),
        "credited": rows.filter(funding=Resolution.Funding.CREDIT).count(),
        "overage": rows.filter(funding=Resolution.Funding.OVERAGE).count(),
        "amount_minor": sum(rows.values_list("amount_minor", flat=True)),
        "confirmed": rows.filter(kind=Resolution.Kind.CONFIRMED).count(),
        "escalated": escalated.count(),
    }


def rollup_counters_match(account):
    """Every DailyUsage counter equals a recount of the rows it counts, by local date."""
    zone = zoneinfo.ZoneInfo(account.timezone)
    expected: dict = {}
    for r in Resolution.objects.filter(account=account, voided_at=None):
        row = expected.setdefault(r.resolved_at.astimezone(zone).date(), [0, 0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += r.funding == "credit"
        row[2] += r.funding == "overage"
        row[3] += r.amount_minor
        row[4] += r.kind == "confirmed"
    for c in Conversation.objects.filter(account=account, escalated_at__isnull=False):
        expected.setdefault(c.escalated_at.astimezone(zone).date(), [0, 0, 0, 0, 0, 0])[5] += 1
    actual = {
        d.date: [d.resolutions, d.credited, d.overage, d.amount_minor, d.confirmed, d.escalated]
        for d in DailyUsage.objects.filter(account=account)
        if any([d.resolutions, d.credited, d.overage, d.amount_minor, d.confirmed, d.escalated])
    }
    return actual == expected


@pytest.mark.parametrize("timezone", ["UTC", "Asia/Kolkata", "America/New_York"])
def test_period_figures_are_exact_at_any_cut_of_a_day(timezone):
    account = AccountFactory(timezone=timezone)
    now = T0 + 8 * DAY
    with clock.frozen(T0):
        credit_pack_grant(account=account, quantity=9, source="promotional", expires_at=T0 + 300 * DAY,
                          actor="test", reason="test credit", starts_at=T0 - 30 * DAY)  # fmt: skip
    busy_history(account, now=now)
    resolutions_fund(now=now)
    with clock.frozen(now):
        resolution_void(resolution=Resolution.objects.filter(account=account).order_by("pk")[3],
                        actor=None, reason="disputed")  # fmt: skip
    assert (
        Resolution.objects.filter(funding="credit").exists() and Resolution.objects.filter(funding="overage").exists()
    )
    assert Conversation.objects.filter(account=account, escalated_at__isnull=False).count() > 5
    assert rollup_counters_match(account)
    rng = random.Random(11)
    cuts = [now - 7 * DAY + dt.timedelta(seconds=rng.randrange(0, 7 * 86400)) for _ in range(12)]
    zone = zoneinfo.ZoneInfo(timezone)
    midnight = dt.datetime.combine((now - 3 * DAY).astimezone(zone).date(), dt.time(), zone)
    cuts += [midnight, midnight + 11 * HOUR, midnight + 13 * HOUR]  # on a midnight, and either side of noon
    for starts in cuts:
        for ends in [starts + 5 * HOUR, starts + 2 * DAY + 7 * MINUTE, now + 20 * DAY]:
            assert period_usage_sum(account=account, starts=starts, ends=ends) == brute_force(account, starts, ends)


def test_rollups_follow_escalations_that_late_events_undo_and_the_waiting_tally():
    account = AccountFactory(timezone="Europe/Paris")
    now = T0 + 2 * DAY
    ingest(account, [("a", [("ai_answer", T0), ("handoff", T0 + HOUR)]), ("b", [("ai_answer", T0)]),
                     ("c", [("customer_reply", T0)])], now=T0 + 2 * HOUR)  # fmt: skip
    assert ConversationTally.objects.get(account=account).waiting == 2  # b awaits its window, c is open
    assert sum(DailyUsage.objects.filter(account=account).values_list("escalated", flat=True)) == 1
    # A confirmation that happened before the handoff arrives late: "a" was resolved, never escalated.
    ingest(account, [("a", [("customer_confirmed", T0 + 30 * MINUTE)])], now=now)
    assert Conversation.objects.get(conversation_id="a").escalated_at is None
    assert sum(DailyUsage.objects.filter(account=account).values_list("escalated", flat=True)) == 0
    assert sum(DailyUsage.objects.filter(account=account).values_list("confirmed", flat=True)) == 1
    ingest(account, [("c", [("ai_answer", T0 + HOUR), ("handoff", T0 + 2 * HOUR)])], now=now)
    assert ConversationTally.objects.get(account=account).waiting == Conversation.objects.filter(
        account=account, status__in=["open", "awaiting"]
    ).count() == 1  # fmt: skip
    assert rollup_counters_match(account)
    with clock.frozen(now):
        account_timezone_change(account=account, timezone="Asia/Tokyo", actor="test")
    account.refresh_from_db()
    assert rollup_counters_match(account)


def test_burn_down_draws_the_soonest_expiring_pack_first_and_finds_the_run_out_date():
    now = T0
    packs = [PackState(1, "promotional", 50, now - DAY, now + 3 * DAY),  # 30 drawn, 20 expire unused
             PackState(2, "purchase", 100, now - DAY, now + 100 * DAY)]  # fmt: skip
    projection = credit_burn_project(packs=packs, rate=10.0, now=now, until=now + 100 * DAY)
    assert projection["expired"] == 20
    assert projection["runs_out"] == now + 13 * DAY  # 3 days on pack 1, then 100 at 10 a day
    assert projection["drawn"] == 130
    assert projection["points"][0] == (now, 150)
    assert (now + 3 * DAY, 120) in projection["points"] and (now + 3 * DAY, 100) in projection["points"]
    idle = credit_burn_project(packs=packs, rate=0.0, now=now, until=now + 100 * DAY)
    assert idle["runs_out"] is None and idle["expired"] == 150


# --- The page -------------------------------------------------------------------------------------
START = T0  # the Stripe subscription starts mid-minute, mid-morning


@pytest.fixture
def provisioned(stripe_emulator, settings, manager):
    settings.STRIPE_MAX_RETRIES = 1
    stripe_emulator.set_time(int(START.timestamp()))
    with clock.frozen(START):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
        result = account_provision(name="Busy Co", plan=PricePlan.objects.get(slug="fin-standard"), seats=3,
                                   actor="test", account_manager=manager, timezone="America/New_York")  # fmt: skip
    return result.account


def log_in(client, user):
    assert client.login(username=user.username, password=PASSWORD)


def test_page_figures_match_the_apis_and_the_invoice_preview(client, provisioned, stripe_emulator, manager):
    account = provisioned
    now = START + 5 * DAY + 3 * HOUR
    stripe_emulator.set_time(int(now.timestamp()))
    with clock.frozen(START):
        credit_pack_grant(account=account, quantity=10, source="promotional", expires_at=START + 200 * DAY,
                          actor="test", reason="test credit", starts_at=START - 30 * DAY)  # fmt: skip
    busy_history(account, days=5, now=now)
    resolutions_fund(now=now)
    viewer = CustomerUserFactory(account=account, username="busy-viewer")
    log_in(client, viewer)
    with clock.frozen(now):
        page = client.get("/portal/")
        usage = client.get(f"/api/v1/usage?from={(now - 6 * DAY).date()}&to={now.date()}").json()
        credits = client.get("/api/v1/credits").json()
        resolutions, url = [], f"/api/v1/resolutions?from={(START - DAY).date()}&to={(now + DAY).date()}&limit=500"
        while url:
            answer = client.get(url).json()
            resolutions += answer["results"]
            url = answer["next"]
        client.force_login(manager)
        preview = client.get(f"/api/v1/staff/accounts/{account.pk}/invoice-preview").json()
        log_in(client, viewer)
    assert page.status_code == 200
    html = page.content.decode()
    in_period = [r for r in resolutions if START <= dt.datetime.fromisoformat(r["resolved_at"]) and not r["voided"]]
    assert f'id="period-resolutions">{len(in_period):,}<' in html
    confirmed = sum(r["kind"] == "confirmed" for r in in_period)
    assert f'id="period-confirmed">{confirmed:,}<' in html
    assert f'id="period-assumed">{len(in_period) - confirmed:,}<' in html
    assert f'id="period-credited">{sum(r["funding"] == "credit" for r in in_period):,}<' in html
    overage = preview["portal"]["overage_resolutions"]
    assert overage == sum(r["funding"] == "overage" for r in in_period) > 0
    assert f'id="period-overage">{overage:,}<' in html
    overage_money = f"${preview['portal']['overage_minor'] / 100:,.2f}"
    assert f'id="period-overage-minor">{overage_money}<' in html
    assert f'id="invoice-total">${preview["portal"]["total_minor"] / 100:,.2f}<' in html
    assert f'id="invoice-seats">${preview["portal"]["seats_minor"] / 100:,.2f}<' in html
    assert f'id="credits-remaining">{credits["remaining"]:,}<' in html
    escalated = Conversation.objects.filter(account=account, escalated_at__gte=START).count()
    assert f'id="period-escalated">{escalated:,}<' in html
    waiting = Conversation.objects.filter(account=account, status__in=["open", "awaiting"]).count()
    assert f'id="period-waiting">{waiting:,}<' in html
    assert usage["totals"]["resolutions"] == Resolution.objects.filter(account=account, voided_at=None).count()
    assert 'hx-get="/portal/next-invoice/stripe"' in html
    assert "forecast-resolutions" in html
    assert "<desc" in html and "daily-table" in html
    assert "Busy Co" in html
    # Stripe's preview on its own route: as an htmx fragment, and as a page without JavaScript.
    with clock.frozen(now):
        fragment = client.get("/portal/next-invoice/stripe", HTTP_HX_REQUEST="true")
        full = client.get("/portal/next-invoice/stripe")
    assert f"${preview['stripe']['total_minor'] / 100:,.2f}" in fragment.content.decode()
    assert "<html" not in fragment.content.decode() and "<html" in full.content.decode()


def test_stripe_unreachable_is_said_in_plain_words(client, provisioned, settings):
    viewer = CustomerUserFactory(account=provisioned, username="busy-viewer")
    log_in(client, viewer)
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    with clock.frozen(START + HOUR):
        page = client.get("/portal/")
        fragment = client.get("/portal/next-invoice/stripe", HTTP_HX_REQUEST="true")
    assert page.status_code == 200 and "invoice-total" in page.content.decode()  # the page never waits for Stripe
    assert fragment.status_code == 200
    assert "Stripe could not be reached just now" in fragment.content.decode()


def test_a_new_account_explains_its_empty_dashboard(client, account, viewer):
    log_in(client, viewer)
    page = client.get("/portal/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="no-period"' in html and "No Stripe subscription yet" in html
    assert 'id="no-packs"' in html and 'id="no-resolutions"' in html
    assert "No upcoming invoice" in html and "No forecast" in html
    fragment = client.get("/portal/next-invoice/stripe", HTTP_HX_REQUEST="true")
    assert "no Stripe subscription yet" in fragment.content.decode()


def test_alert_banners_show_current_conditions_and_any_other_kind(client, account, viewer):
    now = T0
    CreditAlert.objects.create(account=account, kind=CreditAlert.Kind.LOW_BALANCE, active=True,
                               message="9 of 100 prepaid resolutions left", raised_at=now)  # fmt: skip
    CreditAlert.objects.create(account=account, kind="budget", active=True, message="Spend passed $500.",
                               raised_at=now)  # fmt: skip
    log_in(client, viewer)
    with clock.frozen(now):
        html = client.get("/portal/").content.decode()
    assert "Spend passed $500." in html
    assert 'data-alert="budget"' in html
    assert 'data-alert="low_balance"' not in html  # no credits were ever granted: a stale alert is not shown
    with clock.frozen(now):
        credit_pack_grant(account=account, quantity=15, source="promotional", expires_at=now + 300 * DAY,
                          actor="test", reason="test credit", starts_at=now - DAY)  # fmt: skip
    busy_history(account, days=3, now=now + 3 * DAY)
    resolutions_fund(now=now + 3 * DAY)
    with clock.frozen(now + 3 * DAY):
        html = client.get("/portal/").content.decode()
    left = account.credit_packs.get().remaining
    assert left < 3
    assert 'data-alert="low_balance"' in html
    assert f"{left:,} of 15 prepaid resolutions left" in html  # the current figure, not the stored one


def test_roles_and_tenancy(client, account, other_account, viewer, billing_admin, manager):
    AccountFactory  # noqa: B018 (other_account exists: its name must never show)
    for user in (viewer, billing_admin):
        log_in(client, user)
        html = client.get("/portal/").content.decode()
        assert account.name in html and other_account.name not in html
    client.logout()
    assert client.get("/portal/").status_code == 302  # to the login page
    assert "/login/" in client.get("/portal/next-invoice/stripe")["Location"]
    client.force_login(manager)
    assert client.get("/portal/").status_code == 302  # staff have their own pages
    assert client.get("/portal/next-invoice/stripe").status_code == 302
