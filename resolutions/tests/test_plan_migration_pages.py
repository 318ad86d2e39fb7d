"""Plan migration pages and staff API (issue 12): schedule (form → preview → confirm; a double submit is one
schedule), list, cancel, retry; admins only; bad input explained and nothing changed."""

from __future__ import annotations

import datetime as dt

import pytest

from accounts.models import AuditLogEntry, BillingPeriod, PlanMigration, PricePlan
from accounts.pricing import plan_version_spec_parse
from accounts.services import price_plan_version_create, price_plan_version_publish
from billing_portal import clock
from tests.test_api_robustness import assert_one_shape

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
PERIOD_END = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)


@pytest.fixture
def now():
    with clock.frozen(NOW):
        yield NOW


@pytest.fixture
def new_version(admin_user):
    spec = plan_version_spec_parse({
        "currency": "usd", "unit_amount_decimal": "79", "inactivity_window": "24:00:00", "seat_unit_amount": 3900,
        "seat_conversion_unit_amount_decimal": "90", "effective_from": "2026-01-01T00:00:00Z",
    })  # fmt: skip
    version = price_plan_version_create(plan=PricePlan.objects.get(slug="fin-standard"), spec=spec, actor=admin_user)
    return price_plan_version_publish(version=version, actor=admin_user)


@pytest.fixture
def periods(account, other_account):
    for a in (account, other_account):
        BillingPeriod.objects.create(account=a, start=dt.datetime(2026, 11, 5, tzinfo=dt.UTC), end=PERIOD_END,
                                     stripe_subscription_id=f"sub_{a.slug}")  # fmt: skip


def _form(new_version, **extra):
    return {"to_version": new_version.pk, "who": "accounts", "accounts": "acme globex", "idempotency_key": "form-1",
            "reason": "v3 launch", **extra}  # fmt: skip


def test_an_admin_previews_then_schedules_and_a_double_submit_schedules_once(
    client, admin_user, account, other_account, new_version, periods, now
):
    client.force_login(admin_user)
    page = client.get(f"/staff/pricing/migrations/new?version={new_version.pk}")
    assert page.status_code == 200 and f'value="{new_version.pk}" selected' in page.content.decode()
    preview = client.post("/staff/pricing/migrations/new", _form(new_version, step="preview"))
    html = preview.content.decode()
    assert preview.status_code == 200 and "2 of 2 account(s) can move" in html and "5 Dec 2026" in html
    assert not PlanMigration.objects.exists()  # a preview writes nothing
    for _ in range(2):
        done = client.post("/staff/pricing/migrations/new", _form(new_version, step="confirm"), follow=True)
        assert done.status_code == 200
    moves = PlanMigration.objects.all()
    assert {(m.account, m.effective_at, m.to_version) for m in moves} == {
        (account, PERIOD_END, new_version), (other_account, PERIOD_END, new_version)
    }  # fmt: skip
    assert AuditLogEntry.objects.filter(action="plan_migration.schedule").count() == 2
    listed = client.get("/staff/pricing/migrations/").content.decode()
    assert "Acme Support" in listed and "Globex Helpdesk" in listed and "Cancel" in listed


def test_bad_input_is_explained_and_schedules_nothing(client, admin_user, new_version, periods, now):
    client.force_login(admin_user)
    for form, message in [
        (_form(new_version, accounts="", step="confirm"), "Name at least one account"),
        (_form(new_version, accounts="acme nosuch 99999", step="confirm"), "nosuch"),
        (_form(new_version, to_version="999999", step="confirm"), "Choose one of the published versions"),
        (_form(new_version, who="version", step="confirm"), "Choose the version whose accounts move"),
        (_form(new_version, not_before="2026-13-45", step="confirm"), "Give a date"),
        (_form(new_version, not_before="2031-01-01", step="confirm"), "two years"),
        (_form(new_version, accounts="¹²³", step="confirm"), "¹²³"),
    ]:
        response = client.post("/staff/pricing/migrations/new", form)
        assert response.status_code == 400, (form, response.status_code)
        assert message in response.content.decode(), message
    assert not PlanMigration.objects.exists()


def test_cancel_and_retry_go_through_a_confirm_step(client, admin_user, account, new_version, periods, now):
    move = PlanMigration.objects.create(account=account, from_version=account.plan_version, to_version=new_version,
                                        effective_at=PERIOD_END, batch_key="k")  # fmt: skip
    client.force_login(admin_user)
    url = f"/staff/pricing/migrations/{move.pk}/cancel"
    assert "Cancel this move" in client.get(url).content.decode()
    client.post(url, {})  # no confirmation: nothing happens
    assert PlanMigration.objects.get().status == "scheduled"
    client.post(url, {"confirm": "yes"})
    assert PlanMigration.objects.get().status == "cancelled"
    again = client.post(url, {"confirm": "yes"}, follow=True).content.decode()
    assert "can no longer be cancelled" in again
    retry = client.post(f"/staff/pricing/migrations/{move.pk}/retry", {"confirm": "yes"}, follow=True)
    assert "only a failed move is retried" in retry.content.decode()


def test_only_admins_reach_the_pages_and_the_api(client, api_client, manager, billing_admin, new_version, now):
    for user in (manager, billing_admin):
        client.force_login(user)
        assert client.get("/staff/pricing/migrations/").status_code == 302
        api_client.force_authenticate(user)
        assert_one_shape(api_client.get("/api/v1/staff/plan-migrations"), 403)


def test_api_schedules_once_per_idempotency_key_and_refuses_what_the_state_forbids(
    api_client, admin_user, account, other_account, new_version, periods, now
):
    api_client.force_authenticate(admin_user)
    body = {"to_version_id": new_version.pk, "account_ids": [account.pk, other_account.pk], "reason": "launch"}
    first = api_client.post("/api/v1/staff/plan-migrations", body, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    second = api_client.post("/api/v1/staff/plan-migrations", body, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    assert first.status_code == second.status_code == 201 and first.json() == second.json()
    assert len(first.json()["scheduled"]) == 2 and PlanMigration.objects.count() == 2
    # Already open: skipped with the reason, not an error.
    third = api_client.post("/api/v1/staff/plan-migrations", body, format="json", HTTP_IDEMPOTENCY_KEY="other")
    assert third.status_code == 201 and {s["reason"] for s in third.json()["skipped"]} == {
        "a move to v2 is already scheduled (cancel it first)"
    }  # fmt: skip
    listed = api_client.get("/api/v1/staff/plan-migrations?status=scheduled").json()
    assert {m["account_id"] for m in listed} == {account.pk, other_account.pk}
    move_id = listed[0]["id"]
    assert api_client.post(f"/api/v1/staff/plan-migrations/{move_id}/cancel").json()["status"] == "cancelled"
    refused = api_client.post(f"/api/v1/staff/plan-migrations/{move_id}/cancel")
    assert_one_shape(refused, 409)
    for bad in [
        {},
        {"to_version_id": new_version.pk},
        {"to_version_id": new_version.pk, "account_ids": [], "from_version_id": 1},
        {"to_version_id": 999999, "account_ids": [account.pk]},
        {"to_version_id": new_version.pk, "account_ids": [999999]},
        {"to_version_id": "x", "account_ids": ["y"]},
        {"to_version_id": new_version.pk, "account_ids": [account.pk], "not_before": "soon"},
    ]:
        response = api_client.post("/api/v1/staff/plan-migrations", bad, format="json")
        assert_one_shape(response, 400)
    assert api_client.get("/api/v1/staff/plan-migrations?status=bogus").status_code == 400
    assert api_client.post("/api/v1/staff/plan-migrations/999999/cancel").status_code == 404
    assert PlanMigration.objects.count() == 2


def test_two_keys_sharing_a_long_prefix_or_two_admins_sharing_a_key_are_separate_schedules(
    api_client, admin_user, account, other_account, new_version, periods, now
):
    from tests.factories import AdminUserFactory

    api_client.force_authenticate(admin_user)
    prefix = "x" * 64
    for account_id, key in ((account.pk, f"{prefix}-1"), (other_account.pk, f"{prefix}-2")):
        body = {"to_version_id": new_version.pk, "account_ids": [account_id]}
        answer = api_client.post("/api/v1/staff/plan-migrations", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert answer.status_code == 201 and [m["account_id"] for m in answer.json()["scheduled"]] == [account_id]
    assert PlanMigration.objects.count() == 2
    PlanMigration.objects.all().delete()
    colleague = AdminUserFactory(username="second-admin")
    for user, account_id in ((admin_user, account.pk), (colleague, other_account.pk)):
        api_client.force_authenticate(user)
        body = {"to_version_id": new_version.pk, "account_ids": [account_id]}
        answer = api_client.post("/api/v1/staff/plan-migrations", body, format="json", HTTP_IDEMPOTENCY_KEY="same")
        assert [m["account_id"] for m in answer.json()["scheduled"]] == [account_id]
    assert set(PlanMigration.objects.values_list("account_id", flat=True)) == {account.pk, other_account.pk}


def test_a_failed_move_shows_a_cancel_link(client, admin_user, account, new_version, periods, now):
    move = PlanMigration.objects.create(account=account, from_version=account.plan_version, to_version=new_version,
                                        effective_at=PERIOD_END, status=PlanMigration.Status.FAILED, batch_key="f",
                                        last_error="Stripe refused the switch")  # fmt: skip
    client.force_login(admin_user)
    assert f"/staff/pricing/migrations/{move.pk}/cancel" in client.get("/staff/pricing/migrations/").content.decode()
    client.post(f"/staff/pricing/migrations/{move.pk}/cancel", {"confirm": "yes"})
    move.refresh_from_db()
    assert move.status == PlanMigration.Status.CANCELLED
