"""After voids and late resolutions, a period's overage shares and its daily rollups still add up to what
Stripe charges for the period's remaining overage; a voided resolution shows 0."""

import datetime as dt

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Account, BillingPeriod
from accounts.pricing import plan_version_spec_parse
from accounts.services import price_plan_version_create
from billing_portal import clock
from billing_portal.periods import EARLIEST
from resolutions.models import DailyUsage, MeterWindow, Resolution
from resolutions.rating import PriceTerms, price_quantity
from resolutions.services import resolution_void, resolutions_fund
from resolutions.services.funding import period_of
from resolutions.tests.conftest import NOW, event

pytestmark = pytest.mark.django_db


def tiered_plan(account, mode: str, tiers: list[dict]):
    """Move the account to a draft version with these tiers (drafts price like any version)."""
    version = price_plan_version_create(
        plan=account.plan_version.plan, actor="test",
        spec=plan_version_spec_parse({
            "currency": "usd", "tiers_mode": mode, "inactivity_window": "24:00:00", "seat_unit_amount": 3900,
            "seat_conversion_unit_amount_decimal": "90", "effective_from": "2026-01-01T00:00:00Z", "tiers": tiers,
        }),
    )  # fmt: skip
    account.plan_version = version
    account.save(update_fields=["plan_version"])
    return PriceTerms.from_version(version)


def confirmed(cid: str, minutes_ago: float) -> list[dict]:
    """An AI answer and the customer's confirmation a minute later: a resolution at NOW - minutes_ago."""
    return [
        event(f"{cid}-a", cid, "ai_answer", minutes_ago + 1),
        event(f"{cid}-b", cid, "customer_confirmed", minutes_ago),
    ]


def overage_of_periods(account) -> dict[tuple, list[Resolution]]:
    periods: dict[tuple, list[Resolution]] = {}
    for r in Resolution.objects.filter(account=account, funding="overage").order_by("resolved_at", "id"):
        periods.setdefault(period_of(account, r.resolved_at), []).append(r)
    return periods


def money_agrees(account, terms: PriceTerms) -> None:
    """Per period: the shares of the non-voided overage sum to Stripe's charge for their count; voided show
    0; each day's rollup equals a recomputation from the resolutions; the rollups sum to the charges."""
    import zoneinfo

    charged = 0
    for resolutions in overage_of_periods(account).values():
        billable = [r for r in resolutions if r.voided_at is None]
        assert all(r.amount_minor == 0 for r in resolutions if r.voided_at is not None)
        expected = price_quantity(quantity=len(billable), terms=terms) if billable else 0
        assert sum(r.amount_minor for r in billable) == expected
        charged += expected
    tz = zoneinfo.ZoneInfo(account.timezone)
    days: dict = {}
    for r in Resolution.objects.filter(account=account, voided_at=None):
        row = days.setdefault(r.resolved_at.astimezone(tz).date(), [0, 0, 0, 0])
        row[0] += 1
        row[1] += r.funding == "credit"
        row[2] += r.funding == "overage"
        row[3] += r.amount_minor
    rollups = {
        d.date: [d.resolutions, d.credited, d.overage, d.amount_minor]
        for d in DailyUsage.objects.filter(account=account)
        if any((d.resolutions, d.credited, d.overage, d.amount_minor))
    }
    assert rollups == days
    assert sum(row[3] for row in rollups.values()) == charged


FREE_TWO_THEN_100 = [{"up_to": 2, "unit_amount_decimal": "0"}, {"up_to": "inf", "unit_amount_decimal": "100"}]


def test_a_staff_void_reprices_the_periods_other_overage(post_events, account, key_client, manager, now):
    terms = tiered_plan(account, "graduated", FREE_TWO_THEN_100)
    post_events(*[e for i in range(4) for e in confirmed(f"c{i}", 100 - i)])
    resolutions_fund(now=NOW)
    first, *rest = Resolution.objects.order_by("resolved_at", "id")
    assert [r.amount_minor for r in [first, *rest]] == [0, 0, 100, 100]
    voided = resolution_void(resolution=first, actor=manager, reason="dispute")
    assert voided.amount_minor == 0
    assert [r.amount_minor for r in Resolution.objects.order_by("resolved_at", "id")] == [0, 0, 0, 100]
    usage = key_client.get("/api/v1/usage?from=2026-11-02&to=2026-11-02").json()["totals"]
    assert usage == {"resolutions": 3, "credited": 0, "overage": 3, "amount_minor": 100}  # Stripe: 3 units = 100
    api = {r["conversation_id"]: r for r in key_client.get("/api/v1/resolutions").json()["results"]}
    assert api[first.conversation_id]["voided"] and api[first.conversation_id]["amount_minor"] == 0
    money_agrees(account, terms)


def test_a_superseded_overage_resolution_reprices_its_period_under_volume_tiers(post_events, account, now):
    terms = tiered_plan(
        account, "volume",
        [{"up_to": 2, "unit_amount_decimal": "50", "flat_amount": 10}, {"up_to": "inf", "unit_amount_decimal": "30"}],
    )  # fmt: skip
    post_events(*[e for i in range(3) for e in confirmed(f"c{i}", 100 - i)])
    resolutions_fund(now=NOW)
    assert sum(Resolution.objects.values_list("amount_minor", flat=True)) == 90  # 3 x 30
    post_events(event("h", "c1", "handoff", 99 + 0.5))  # arrives late, happened before c1's confirmation
    superseded = Resolution.objects.get(conversation_id="c1")
    assert superseded.voided_at is not None and superseded.amount_minor == 0
    assert MeterWindow.objects.get().overage == 2  # the meter is corrected too, once the window has closed
    assert sum(Resolution.objects.values_list("amount_minor", flat=True)) == 110  # 2 x 50 + 10
    money_agrees(account, terms)


def test_a_late_resolution_funded_after_others_keeps_the_period_exact_after_a_void(post_events, account, manager, now):
    terms = tiered_plan(account, "graduated", FREE_TWO_THEN_100)
    post_events(*[e for i in range(2) for e in confirmed(f"c{i}", 60 - i)])
    resolutions_fund(now=NOW)
    post_events(*confirmed("late", 300))  # resolved before the others, funded after them: the third share
    resolutions_fund(now=NOW)
    assert Resolution.objects.get(conversation_id="late").amount_minor == 100
    resolution_void(resolution=Resolution.objects.get(conversation_id="c1"), actor=manager, reason="dispute")
    money_agrees(account, terms)  # two left, both free
    assert sum(Resolution.objects.values_list("amount_minor", flat=True)) == 0


# --- the property ---------------------------------------------------------------------------------------
amounts = st.sampled_from(["0", "1", "7", "33.3", "50", "99.5", "100", "0.4"])


@st.composite
def price_terms(draw):
    mode = draw(st.sampled_from(["graduated", "volume"]))
    bounds = sorted(draw(st.sets(st.integers(1, 8), min_size=0, max_size=3)))
    tiers = []
    for up_to in [*bounds, "inf"]:
        tier = {"up_to": up_to, "unit_amount_decimal": draw(amounts)}
        if draw(st.booleans()):
            tier["flat_amount"] = draw(st.integers(0, 500))
        tiers.append(tier)
    return mode, tiers


# Each step: ("resolve", [minutes ago...]) posts resolutions; ("fund",) funds; ("void", k) voids the k-th
# billable resolution (staff); ("supersede", k) sends a late handoff that supersedes the k-th.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("resolve"), st.lists(st.integers(0, 5 * 24 * 60), min_size=1, max_size=5)),
        st.tuples(st.just("fund")),
        st.tuples(st.sampled_from(["void", "supersede"]), st.integers(0, 20)),
    ),
    min_size=1,
    max_size=10,
)


class _Rollback(Exception):
    pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(terms=price_terms(), plan=steps, timezone=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]))
def test_shares_and_rollups_sum_to_stripes_charge_after_voids_and_late_resolutions(
    post_events, account, manager, now, terms, plan, timezone
):
    checked: list[int] = []
    try:
        with transaction.atomic():
            checked.append(_run_plan(post_events, account, manager, terms, plan, timezone))
            raise _Rollback
    except _Rollback:
        pass
    assert checked and checked[0] <= 2  # at most the two billing periods the resolutions span were checked


def _run_plan(post_events, account, manager, terms_spec, plan, timezone):
    account.refresh_from_db()
    account.timezone = timezone
    account.save(update_fields=["timezone"])
    # Stripe's periods, as recorded from the subscription: one ends on 2026-10-30 06:00 UTC, inside the
    # span the resolutions cover.
    boundary = dt.datetime(2026, 10, 30, 6, 0, tzinfo=dt.UTC)
    for start, end in [(dt.datetime(2026, 9, 30, 6, 0, tzinfo=dt.UTC), boundary),
                       (boundary, dt.datetime(2026, 11, 30, 6, 0, tzinfo=dt.UTC))]:  # fmt: skip
        BillingPeriod.objects.create(account=account, start=start, end=end, stripe_subscription_id="sub_prop")
    account = Account.objects.get(pk=account.pk)  # no period calendar cached from before
    terms = tiered_plan(account, *terms_spec)
    # Resolutions up to 5 days back, posted out of order: some periods start inside that span.
    n = 0
    later = NOW + dt.timedelta(days=1)
    with clock.frozen(later):
        for step in [*plan, ("fund",)]:
            if step[0] == "resolve":
                events = []
                for minutes_ago in step[1]:
                    events += confirmed(f"r{n}", minutes_ago)
                    n += 1
                assert post_events(*events).status_code == 202
            elif step[0] == "fund":
                resolutions_fund(now=later)
            else:
                billable = list(Resolution.objects.filter(account=account, voided_at=None).order_by("id"))
                if not billable:
                    continue
                target = billable[step[1] % len(billable)]
                if step[0] == "void":
                    resolution_void(resolution=target, actor=manager, reason="dispute")
                else:
                    minutes_ago = (NOW - target.resolved_at).total_seconds() / 60
                    post_events(event(f"h{target.pk}", target.conversation_id, "handoff", minutes_ago + 0.5))
        assert not Resolution.objects.filter(account=account, funding="unfunded", voided_at=None).exists()
    periods = overage_of_periods(account)
    # The first recorded period also holds what came before it (its key starts at EARLIEST).
    assert set(periods) <= {(EARLIEST, boundary), (boundary, dt.datetime(2026, 11, 30, 6, 0, tzinfo=dt.UTC))}
    money_agrees(account, terms)  # (a volume price can fall as the count grows: a share may be negative)
    return len(periods)
