"""Price simulation pages and staff API (issue 12): start (a double submit or a retried POST is one simulation),
progress while it runs, the result (totals, largest movers first, the filter), bad input explained and nothing
started, admins only, the one error shape."""

from __future__ import annotations

import pytest

from resolutions.models import PriceSimulation
from resolutions.services.simulation import price_simulation_run
from resolutions.tests.test_price_simulation import acme, now, version  # noqa: F401 - fixtures and helpers
from tests.test_api_robustness import assert_one_shape

pytestmark = pytest.mark.django_db


@pytest.fixture
def draft(acme, admin_user):  # noqa: F811
    return version(admin_user, unit_amount_decimal="80.5")


def test_an_admin_starts_a_simulation_and_a_double_submit_starts_one(client, admin_user, draft):
    client.force_login(admin_user)
    form = client.get(f"/staff/pricing/simulations/new?version={draft.pk}").content.decode()
    assert f'<option value="{draft.pk}" selected>' in form
    body = {"version": draft.pk, "periods": 2, "filter_version": "", "idempotency_key": "form-1"}
    first = client.post("/staff/pricing/simulations/new", body)
    again = client.post("/staff/pricing/simulations/new", body)
    simulation = PriceSimulation.objects.get()
    assert first.status_code == again.status_code == 302
    assert first["Location"] == again["Location"] == f"/staff/pricing/simulations/{simulation.pk}/"
    assert (simulation.version, simulation.periods, simulation.created_by) == (draft, 2, admin_user)

    running = client.get(first["Location"]).content.decode()
    assert "<progress" in running and 'hx-trigger="every' in running  # polls while queued

    price_simulation_run(simulation_id=simulation.pk)
    done = client.get(first["Location"]).content.decode()
    assert 'hx-trigger="every' not in done  # the polling stops when it is done
    # acme over September and October (hand-computed in test_price_simulation): actual $11.88, simulated $9.67
    assert "$11.88" in done and "$9.67" in done and "−$2.21" in done.replace("-$2.21", "−$2.21")
    assert "Acme" in done and "-18.6" in done.replace("−", "-")
    listed = client.get("/staff/pricing/simulations/").content.decode()
    assert f"/staff/pricing/simulations/{simulation.pk}/" in listed


def test_bad_input_is_explained_and_starts_nothing(client, admin_user, draft):
    client.force_login(admin_user)
    for body, message in (
        ({"version": draft.pk, "periods": 0, "idempotency_key": "a"}, "At least 1 billing period."),
        ({"version": draft.pk, "periods": 25, "idempotency_key": "b"}, "At most 24 billing periods."),
        ({"version": draft.pk, "periods": "three", "idempotency_key": "c"}, "Give a whole number of billing periods."),
        ({"version": 999999, "periods": 2, "idempotency_key": "d"}, "Choose one of the versions listed."),
        ({"periods": 2, "idempotency_key": "e"}, "Choose the version to simulate."),
    ):
        response = client.post("/staff/pricing/simulations/new", body)
        assert response.status_code == 400, body
        assert message in response.content.decode(), body
    assert not PriceSimulation.objects.exists()


def test_a_missing_simulation_is_404_and_bad_filters_are_ignored(client, admin_user, draft):
    client.force_login(admin_user)
    assert client.get("/staff/pricing/simulations/424242/").status_code == 404
    body = {"version": draft.pk, "periods": 2, "idempotency_key": "f"}
    location = client.post("/staff/pricing/simulations/new", body)["Location"]
    price_simulation_run(simulation_id=PriceSimulation.objects.get().pk)
    for query in ("?plan_version=abc", "?page=-1", "?plan_version=99999999999999", "?page=zzz"):
        assert client.get(location + query).status_code == 200, query
    filtered = client.get(f"{location}?plan_version={draft.pk}").content.decode()  # nobody is on the draft
    assert "No account on this version had a closed billing period" in filtered
    assert 'id="simulation-rows"' not in filtered
    assert 'id="simulation-rows"' in client.get(location).content.decode()


def test_only_admins_reach_the_pages_and_the_api(client, api_client, manager, billing_admin, draft):
    for user in (manager, billing_admin):
        client.force_login(user)
        assert client.get("/staff/pricing/simulations/").status_code == 302
        assert client.post("/staff/pricing/simulations/new", {"version": draft.pk, "periods": 2}).status_code == 302
        api_client.force_authenticate(user)
        assert_one_shape(api_client.get("/api/v1/staff/price-simulations"), 403)
        assert_one_shape(api_client.post("/api/v1/staff/price-simulations", {"version_id": draft.pk}), 403)
    assert not PriceSimulation.objects.exists()


def test_api_starts_once_per_key_polls_and_reads_the_rows(api_client, admin_user, draft):
    api_client.force_authenticate(admin_user)
    body = {"version_id": draft.pk, "periods": 2}
    first = api_client.post("/api/v1/staff/price-simulations", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    second = api_client.post("/api/v1/staff/price-simulations", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"] and PriceSimulation.objects.count() == 1
    other = {**body, "periods": 1}
    assert_one_shape(
        api_client.post("/api/v1/staff/price-simulations", other, format="json", HTTP_IDEMPOTENCY_KEY="k1"), 409
    )
    simulation_id = first.json()["id"]
    polled = api_client.get(f"/api/v1/staff/price-simulations/{simulation_id}").json()
    assert polled["simulation"]["status"] == "queued" and polled["rows"] == []

    price_simulation_run(simulation_id=simulation_id)
    read = api_client.get(f"/api/v1/staff/price-simulations/{simulation_id}").json()
    assert read["simulation"]["status"] == "done"
    assert (read["simulation"]["actual_minor"], read["simulation"]["simulated_minor"]) == (1188, 967)
    assert read["simulation"]["difference_percent"] == "-18.6"
    assert [(r["account_name"], r["overage"], r["difference_minor"]) for r in read["rows"]] == [
        ("Acme Support", 12, -221)
    ]
    assert read["rows_count"] == 1 and read["next"] is None
    listed = api_client.get("/api/v1/staff/price-simulations").json()
    assert [s["id"] for s in listed] == [simulation_id]


def test_api_bad_input_is_400_in_the_one_shape_and_starts_nothing(api_client, admin_user, draft):
    api_client.force_authenticate(admin_user)
    for body, field in (
        ({"version_id": 999999}, "version_id"),
        ({"version_id": draft.pk, "periods": 0}, "periods"),
        ({"version_id": draft.pk, "periods": 99}, "periods"),
        ({"version_id": "x"}, "version_id"),
        ({"version_id": draft.pk, "filter_version_id": 999999}, "filter_version_id"),
        ({}, "version_id"),
    ):
        errors = assert_one_shape(api_client.post("/api/v1/staff/price-simulations", body, format="json"), 400)
        assert field in {e["field"] for e in errors}, (body, errors)
    assert not PriceSimulation.objects.exists()
    assert_one_shape(api_client.get("/api/v1/staff/price-simulations/424242"), 404)
    api_client.post("/api/v1/staff/price-simulations", {"version_id": draft.pk}, format="json")
    simulation_id = PriceSimulation.objects.get().pk
    for query in ("page_size=0", "page_size=5000", "page=abc", "plan_version_id=-1"):
        assert_one_shape(api_client.get(f"/api/v1/staff/price-simulations/{simulation_id}?{query}"), 400)
