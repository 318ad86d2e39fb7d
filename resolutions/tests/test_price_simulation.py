"""Price simulation (issue 12, DESIGN §3.2): the figures against hand-computed ones for flat, graduated and volume
terms; credits as used, voids excluded, the version in force per period, a period edge in a non-UTC timezone,
the filter; nothing live changes; and the task run twice, at once, or after a crash gives the same rows."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from accounts.models import AuditLogEntry, BillingPeriod, PlanMigration, PricePlan
from accounts.pricing import plan_version_spec_parse
from accounts.services import price_plan_version_create, price_plan_version_publish
from billing_portal import clock
from credits.models import CreditLedgerEntry, CreditPack
from credits.services import credit_pack_grant
from resolutions.models import DailyUsage, PriceSimulation, PriceSimulationRow, Resolution
from resolutions.services import simulation as simulation_service
from resolutions.services.rollups import rollups_adjust
from resolutions.services.simulation import (
    LEASE,
    SimulationBusy,
    price_simulation_rows,
    price_simulation_run,
    price_simulation_start,
)
from tests.factories import AccountFactory

pytestmark = pytest.mark.django_db

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 20, 12, tzinfo=UTC)
SEP, OCT, NOV, DEC = (dt.datetime(2026, m, 1, tzinfo=UTC) for m in (9, 10, 11, 12))
LA = "America/Los_Angeles"  # UTC-7 in October (PDT), UTC-8 from 1 November (PST)
_conversations = itertools.count()
BASE_SPEC = {"currency": "usd", "inactivity_window": "24:00:00", "seat_unit_amount": 3900,
             "seat_conversion_unit_amount_decimal": "90", "effective_from": "2026-01-01T00:00:00Z"}  # fmt: skip


@pytest.fixture
def now():
    with clock.frozen(NOW):
        yield NOW


def version(actor, publish=False, **terms):
    spec = plan_version_spec_parse({**BASE_SPEC, **terms})
    made = price_plan_version_create(plan=PricePlan.objects.get(slug="fin-standard"), spec=spec, actor=actor)
    return price_plan_version_publish(version=made, actor=actor) if publish else made


def periods(account, *bounds):
    for start, end in bounds:
        BillingPeriod.objects.create(account=account, start=start, end=end, stripe_subscription_id=f"sub_{account.pk}")


def resolve(account, *instants, funding="overage", pack=None, voided=False, plan_version=None):
    """Resolutions as evaluation and funding leave them, with the daily rollups moved by the real code."""
    rows = Resolution.objects.bulk_create([
        Resolution(account=account, conversation_id=f"c{next(_conversations)}", kind="confirmed", resolved_at=at,
                   plan_version=plan_version or account.plan_version, funding=funding, credit_pack=pack,
                   voided_at=at if voided else None)
        for at in instants
    ])  # fmt: skip
    if not voided:
        rollups_adjust(account, added=rows, removed=[])
    return rows


def at(month, day, hour=12):
    return dt.datetime(2026, month, day, hour, tzinfo=UTC)


@pytest.fixture
def acme(account, admin_user, now):
    """On fin-standard v1 ($0.99 a resolution, per unit). September and October closed, November current.
    October: 7 overage, 3 funded by a pack, 1 voided. September (the first period, which reaches back to what
    came before it): 4 overage in it and 1 on 20 August."""
    periods(account, (SEP, OCT), (OCT, NOV), (NOV, DEC))
    pack = credit_pack_grant(account=account, quantity=10, source=CreditPack.Source.PROMOTIONAL, actor=admin_user,
                             reason="a test pack", starts_at=SEP - dt.timedelta(days=30),
                             expires_at=NOW + dt.timedelta(days=300))  # fmt: skip
    resolve(account, at(8, 20), at(9, 2), at(9, 10), at(9, 20), at(9, 30))
    resolve(account, *(at(10, d) for d in range(1, 8)))
    resolve(account, at(10, 10), at(10, 11), at(10, 12), funding="credit", pack=pack)
    resolve(account, at(10, 20), voided=True)
    resolve(account, at(11, 5), at(11, 6))  # the current period: never simulated
    return account


def simulate(actor, simulated, *, n=2, key="k", filter_version=None):
    simulation, created = price_simulation_start(
        version=simulated, periods=n, actor=actor, idempotency_key=key, filter_version=filter_version
    )
    assert created
    return price_simulation_run(simulation_id=simulation.pk)


def figures(simulation):
    return {
        r.account.slug: (r.periods, r.billable, r.credited, r.overage, r.actual_minor, r.simulated_minor,
                         r.difference_minor, r.percent)
        for r in price_simulation_rows(simulation=simulation)
    }  # fmt: skip


def test_flat_price_over_two_periods_credits_as_used_and_voids_excluded(acme, admin_user):
    draft = version(admin_user, unit_amount_decimal="80.5")
    done = simulate(admin_user, draft)
    assert done.status == "done" and done.accounts_done == done.accounts_total == 1
    # September: 5 overage (the one of 20 August counts: the first period reaches back).
    #   actual 5 × 99 = 495; simulated 5 × 80.5 = 402.5 → 403 (half up, once per line)
    # October: 11 billable (the voided one is not), 3 credited, 7 overage.
    #   actual 7 × 99 = 693; simulated 7 × 80.5 = 563.5 → 564
    # Totals: actual 495 + 693 = 1188; simulated 403 + 564 = 967; difference -221; -221 / 1188 = -18.60 % → -18.6
    assert figures(done) == {"acme": (2, 15, 3, 12, 1188, 967, -221, Decimal("-18.6"))}
    assert (done.actual_minor, done.simulated_minor, done.difference_minor) == (1188, 967, -221)
    assert done.difference_percent == Decimal("-18.6")
    assert AuditLogEntry.objects.filter(action="price_simulation.start", object_id=str(done.pk)).count() == 1


def test_one_period_only_the_last_closed_one(acme, admin_user):
    done = simulate(admin_user, version(admin_user, unit_amount_decimal="80.5"), n=1)
    # October only: actual 7 × 99 = 693; simulated 563.5 → 564; -129 / 693 = -18.61 % → -18.6
    assert figures(done) == {"acme": (1, 10, 3, 7, 693, 564, -129, Decimal("-18.6"))}


def test_graduated_tiers(acme, admin_user):
    draft = version(
        admin_user,
        tiers_mode="graduated",
        tiers=[
            {"up_to": 5, "unit_amount_decimal": "100"},
            {"up_to": "inf", "unit_amount_decimal": "50", "flat_amount": 25},
        ],
    )
    done = simulate(admin_user, draft)
    # September, 5 overage: first tier only, 5 × 100 = 500 (the second tier is not reached: no flat fee)
    # October, 7 overage: 5 × 100 = 500, then 2 × 50 + 25 flat = 125 → 625
    # simulated 500 + 625 = 1125; actual 1188 (above); difference -63; -63 / 1188 = -5.30 % → -5.3
    assert figures(done) == {"acme": (2, 15, 3, 12, 1188, 1125, -63, Decimal("-5.3"))}


def test_volume_tiers(acme, admin_user):
    draft = version(
        admin_user,
        tiers_mode="volume",
        tiers=[{"up_to": 5, "unit_amount_decimal": "100"}, {"up_to": "inf", "unit_amount_decimal": "60"}],
    )
    done = simulate(admin_user, draft)
    # September, 5 overage: the tier up to 5 prices all, 5 × 100 = 500
    # October, 7 overage: the open tier prices all 7, 7 × 60 = 420
    # simulated 500 + 420 = 920; actual 1188; difference -268; -268 / 1188 = -22.56 % → -22.6
    assert figures(done) == {"acme": (2, 15, 3, 12, 1188, 920, -268, Decimal("-22.6"))}


def test_a_period_edge_in_a_non_utc_timezone(admin_user, now):
    """Periods start at a Stripe instant (midnight UTC) while days are Los Angeles days: 30 September and
    31 October (local) are each cut in two by a period edge."""
    west = AccountFactory(name="West Coast", slug="west", timezone=LA)
    periods(west, (SEP, OCT), (OCT, NOV), (NOV, DEC))
    resolve(west, at(9, 30, 23))  # 30 Sep 16:00 PDT: September's
    resolve(west, at(10, 1, 1))  # 30 Sep 18:00 PDT, same local day: October's
    resolve(west, at(10, 15), at(10, 31, 23))  # 31 Oct 16:00 PDT: October's
    resolve(west, at(11, 1, 1))  # 31 Oct 18:00 PDT, same local day: November's (open, not simulated)
    assert DailyUsage.objects.get(account=west, date=dt.date(2026, 10, 31)).resolutions == 2
    done = simulate(admin_user, version(admin_user, unit_amount_decimal="50"), n=1)
    # October: 3 overage; actual 3 × 99 = 297, simulated 3 × 50 = 150, difference -147, -49.49 % → -49.5
    assert figures(done) == {"west": (1, 3, 0, 3, 297, 150, -147, Decimal("-49.5"))}


def test_the_version_in_force_each_period_and_the_filter(acme, admin_user, now):
    """Globex moved to a dearer published version at 1 October: September is rated by v1, October by v2."""
    dearer = version(admin_user, publish=True, unit_amount_decimal="120")
    globex = AccountFactory(name="Globex", slug="globex2", plan_version=acme.plan_version)
    periods(globex, (SEP, OCT), (OCT, NOV))
    PlanMigration.objects.create(account=globex, from_version=globex.plan_version, to_version=dearer,
                                 effective_at=OCT, status=PlanMigration.Status.DONE, batch_key="m")  # fmt: skip
    resolve(globex, at(9, 5), at(9, 6))
    resolve(globex, at(10, 5), at(10, 6), at(10, 7), plan_version=dearer)
    globex.plan_version = dearer
    globex.save(update_fields=["plan_version"])
    draft = version(admin_user, unit_amount_decimal="100")
    done = simulate(admin_user, draft)
    # acme: actual 1188 (above); simulated 12 × 100 = 1200; +12; 12 / 1188 = 1.01 % → +1.0
    # globex: September 2 × 99 = 198, October 3 × 120 = 360: actual 558; simulated 5 × 100 = 500; -58; -10.39 % → -10.4
    assert figures(done) == {
        "globex2": (2, 5, 0, 5, 558, 500, -58, Decimal("-10.4")),
        "acme": (2, 15, 3, 12, 1188, 1200, 12, Decimal("1.0")),
    }
    assert list(figures(done)) == ["globex2", "acme"]  # the largest mover (58) first
    assert (done.actual_minor, done.simulated_minor) == (1188 + 558, 1200 + 500)
    only = simulate(admin_user, draft, key="only-v2", filter_version=dearer)
    assert figures(only) == {"globex2": (2, 5, 0, 5, 558, 500, -58, Decimal("-10.4"))}
    assert only.accounts_total == 1


def test_the_ledger_and_resolutions_are_untouched(acme, admin_user):
    def state():
        return (
            list(Resolution.objects.order_by("pk").values_list()),
            list(DailyUsage.objects.order_by("pk").values_list()),
            list(CreditLedgerEntry.objects.order_by("pk").values_list()),
            list(CreditPack.objects.order_by("pk").values_list()),
            list(BillingPeriod.objects.order_by("pk").values_list()),
        )

    before = state()
    simulate(admin_user, version(admin_user, unit_amount_decimal="10"))
    assert state() == before


def test_the_terms_are_frozen_when_the_simulation_starts(acme, admin_user):
    from accounts.services import price_plan_version_update

    draft = version(admin_user, unit_amount_decimal="80.5")
    simulation, _ = price_simulation_start(version=draft, periods=1, actor=admin_user, idempotency_key="frozen")
    price_plan_version_update(version=draft, spec=plan_version_spec_parse({**BASE_SPEC, "unit_amount_decimal": "1"}),
                              actor=admin_user)  # fmt: skip
    done = price_simulation_run(simulation_id=simulation.pk)
    assert figures(done)["acme"][5] == 564  # 7 × 80.5 = 563.5 → 564, not 7 × 1


def test_bad_input_is_refused_and_writes_nothing(acme, admin_user):
    draft = version(admin_user, unit_amount_decimal="80")
    for periods_asked in (0, 25, "3", True):
        with pytest.raises(ValidationError) as refused:
            price_simulation_start(version=draft, periods=periods_asked, actor=admin_user, idempotency_key="x")
        assert "periods" in refused.value.message_dict
    assert not PriceSimulation.objects.exists()


def test_the_same_key_is_one_simulation(acme, admin_user):
    draft = version(admin_user, unit_amount_decimal="80")
    first, created = price_simulation_start(version=draft, periods=2, actor=admin_user, idempotency_key="twice")
    again, created_again = price_simulation_start(version=draft, periods=2, actor=admin_user, idempotency_key="twice")
    assert (created, created_again, again.pk) == (True, False, first.pk)
    assert PriceSimulation.objects.count() == 1


def _accounts(n, admin_user):
    made = []
    for i in range(n):
        account = AccountFactory(name=f"Account {i}", slug=f"acct-{i}")
        periods(account, (SEP, OCT), (OCT, NOV))
        resolve(account, *(at(10, d + 1) for d in range(i + 1)))
        made.append(account)
    return made


def _rows(simulation):
    return sorted(
        PriceSimulationRow.objects.filter(simulation=simulation).values_list(
            "account_id", "periods", "billable", "overage", "actual_minor", "simulated_minor", "difference_minor"
        )
    )


def test_run_twice_gives_the_same_rows(admin_user, now):
    _accounts(3, admin_user)
    draft = version(admin_user, unit_amount_decimal="70")
    simulation, _ = price_simulation_start(version=draft, periods=2, actor=admin_user, idempotency_key="t")
    first = price_simulation_run(simulation_id=simulation.pk, batch_size=2)
    rows = _rows(simulation)
    second = price_simulation_run(simulation_id=simulation.pk, batch_size=2)
    assert first.status == second.status == "done" and len(rows) == 3 and _rows(simulation) == rows
    # account i has i + 1 overage in October: actual 99 (i + 1), simulated 70 (i + 1)
    assert [(r[3], r[4], r[5]) for r in rows] == [(1, 99, 70), (2, 198, 140), (3, 297, 210)]


def test_a_redelivery_after_a_crash_finishes_without_doubling_rows(admin_user, now, monkeypatch):
    _accounts(3, admin_user)
    draft = version(admin_user, unit_amount_decimal="70")
    clean, _ = price_simulation_start(version=draft, periods=2, actor=admin_user, idempotency_key="clean")
    price_simulation_run(simulation_id=clean.pk)
    simulation, _ = price_simulation_start(version=draft, periods=2, actor=admin_user, idempotency_key="crash")
    real, calls = simulation_service.accounts_price_simulate, []

    def dies_on_the_second_batch(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit("worker killed")  # not an error the run catches: it leaves the row running
        return real(**kwargs)

    monkeypatch.setattr(simulation_service, "accounts_price_simulate", dies_on_the_second_batch)
    with pytest.raises(SystemExit):
        price_simulation_run(simulation_id=simulation.pk, batch_size=1)
    monkeypatch.setattr(simulation_service, "accounts_price_simulate", real)
    crashed = PriceSimulation.objects.get(pk=simulation.pk)
    assert (crashed.status, crashed.accounts_done, crashed.rows.count()) == ("running", 1, 1)
    with pytest.raises(SimulationBusy):  # its run saved progress a moment ago: a second delivery waits
        price_simulation_run(simulation_id=simulation.pk, batch_size=1)
    with clock.frozen(NOW + LEASE + dt.timedelta(seconds=1)):  # the redelivery, once the lease ran out
        done = price_simulation_run(simulation_id=simulation.pk, batch_size=1)
    assert (done.status, done.accounts_done) == ("done", 3)
    assert [r[1:] for r in _rows(simulation)] == [r[1:] for r in _rows(clean)]
    assert (done.actual_minor, done.simulated_minor) == (99 * 6, 70 * 6)


def test_an_error_marks_it_failed_with_the_error(acme, admin_user, monkeypatch):
    def broken(**kwargs):
        raise ValueError("the rollups are unreadable")

    monkeypatch.setattr(simulation_service, "accounts_price_simulate", broken)
    done = simulate(admin_user, version(admin_user, unit_amount_decimal="70"))
    assert done.status == "failed" and "the rollups are unreadable" in done.error and done.finished_at == NOW
    assert not done.rows.exists()


@pytest.mark.django_db(transaction=True)
def test_two_deliveries_at_once_give_one_set_of_rows(admin_user):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    with clock.frozen(NOW):
        _accounts(4, admin_user)
        draft = version(admin_user, unit_amount_decimal="70")
        simulation, _ = price_simulation_start(version=draft, periods=2, actor=admin_user, idempotency_key="c")
    outcomes, barrier = [], threading.Barrier(2)

    def deliver():
        from django.db import connections

        try:
            barrier.wait()
            with clock.frozen(NOW):
                outcomes.append(price_simulation_run(simulation_id=simulation.pk, batch_size=1).status)
        except SimulationBusy:
            outcomes.append("busy")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) in (["busy", "done"], ["done", "done"])
    rows = _rows(simulation)
    assert len(rows) == 4 and len({r[0] for r in rows}) == 4
    assert [(r[3], r[4]) for r in rows] == [(1, 99), (2, 198), (3, 297), (4, 396)]


def test_the_billing_cycle_queues_again_what_was_never_delivered_or_went_quiet(
    admin_user, now, monkeypatch, django_capture_on_commit_callbacks
):
    """A start whose task was lost (broker down) and a run that crashed mid-way are queued again by the cycle's
    sweep once LEASE has passed, at most once per LEASE; the queued runs finish with the same rows."""
    from resolutions.billing_cycle import billing_cycle_run
    from resolutions.tasks import price_simulation_task

    _accounts(2, admin_user)
    draft = version(admin_user, unit_amount_decimal="70")
    sent: list[int] = []
    monkeypatch.setattr(price_simulation_task, "delay", lambda pk: sent.append(pk))
    lost, _ = price_simulation_start(version=draft, periods=2, actor=admin_user, idempotency_key="lost")
    crashed, _ = price_simulation_start(version=draft, periods=2, actor=admin_user, idempotency_key="crashed")
    sent.clear()  # as if the broker had lost both deliveries
    real, calls = simulation_service.accounts_price_simulate, []

    def dies_on_the_second_batch(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit("worker killed")
        return real(**kwargs)

    monkeypatch.setattr(simulation_service, "accounts_price_simulate", dies_on_the_second_batch)
    with pytest.raises(SystemExit):
        price_simulation_run(simulation_id=crashed.pk, batch_size=1)
    monkeypatch.setattr(simulation_service, "accounts_price_simulate", real)

    assert simulation_service.price_simulations_resume_stalled(now=NOW + dt.timedelta(minutes=1)) == 0  # too soon
    later = NOW + LEASE + dt.timedelta(seconds=1)
    with clock.frozen(later), django_capture_on_commit_callbacks(execute=True):
        result = billing_cycle_run(now=later)
    assert result.step("simulations").counts["price_simulations_requeued"] == 2 and sorted(sent) == sorted(
        [lost.pk, crashed.pk]
    )
    assert simulation_service.price_simulations_resume_stalled(now=later + dt.timedelta(minutes=1)) == 0  # once a LEASE
    with clock.frozen(later):
        for pk in sent:
            assert price_simulation_run(simulation_id=pk, batch_size=1).status == "done"
    assert [r[1:] for r in _rows(lost)] == [r[1:] for r in _rows(crashed)]
    assert [r[3] for r in _rows(lost)] == [1, 2]


def test_a_database_outage_leaves_it_running_for_the_sweep_and_an_unpriced_draft_is_refused(
    acme, admin_user, monkeypatch
):
    from django.db import OperationalError

    def outage(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    draft = version(admin_user, unit_amount_decimal="70")
    simulation, _ = price_simulation_start(version=draft, periods=2, actor=admin_user, idempotency_key="db")
    monkeypatch.setattr(simulation_service, "accounts_price_simulate", outage)
    with pytest.raises(OperationalError):
        price_simulation_run(simulation_id=simulation.pk)
    simulation.refresh_from_db()
    assert simulation.status == "running" and not simulation.error  # not failed: the sweep queues it again


def test_unfunded_resolutions_are_in_neither_figure(acme, admin_user):
    resolve(acme, at(10, 25), funding="unfunded")  # not drawn down yet: billed as nothing so far
    done = simulate(admin_user, version(admin_user, unit_amount_decimal="80.5"), n=1)
    # October: 11 billable, 3 credited, 7 overage (the unfunded one is billable but in neither money figure)
    assert figures(done) == {"acme": (1, 11, 3, 7, 693, 564, -129, Decimal("-18.6"))}
    assert AuditLogEntry.objects.filter(action="price_simulation.finish", object_id=str(done.pk)).count() == 1
