"""The OpenAPI schema is complete (issue 13): every operation documents its error answers in the one error shape,
429 with Retry-After on every authenticated operation, and the limits of DESIGN §4 are stated in it."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from resolutions.ingestion import MAX_BATCH
from resolutions.selectors import MAX_USAGE_DAYS

ERRORS_REF = {"$ref": "#/components/schemas/Errors"}


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_the_error_shape_is_the_one_of_design_4(schema):
    errors = schema["components"]["schemas"]["Errors"]
    assert errors["required"] == ["errors"]
    item = errors["properties"]["errors"]["items"]
    assert set(item["properties"]) == set(item["required"]) == {"index", "field", "message"}
    assert item["properties"]["index"] == {"type": "integer", "nullable": True}
    assert item["properties"]["field"] == {"type": "string", "nullable": True}


def test_every_operation_documents_401_403_and_429_with_retry_after(schema):
    found = 0
    for method, path, operation in operations(schema):
        found += 1
        responses = operation["responses"]
        assert {"401", "403", "429"} <= set(responses), (method, path, sorted(responses))
        assert responses["429"]["headers"]["Retry-After"]["required"] is True, (method, path)
    assert found > 30


def test_every_error_answer_has_the_one_shape(schema):
    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert response["content"] == {"application/json": {"schema": ERRORS_REF}}, (method, path, status)
                assert response["description"], (method, path, status)


def test_bodies_parameters_and_ids_document_400_404_409_413_415_where_they_can_happen(schema):
    for method, path, operation in operations(schema):
        responses, parameters = set(operation["responses"]), operation.get("parameters", [])
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= responses, (method, path)
        if method in ("post", "put", "patch", "delete"):
            assert "413" in responses, (method, path)
        if any(p["in"] == "path" for p in parameters):
            assert "404" in responses, (method, path)
        if any(p["in"] == "query" for p in parameters):
            assert "400" in responses, (method, path)
        if any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in parameters):
            assert "409" in responses, (method, path)
    events = schema["paths"]["/api/v1/conversation-events"]["post"]["responses"]
    assert "409" in events  # same id with another payload


def test_operations_that_call_stripe_document_502_and_503(schema):
    for path in [
        "/api/v1/credit-purchases",
        "/api/v1/staff/accounts/{account_id}/credit-purchases",
        "/api/v1/staff/accounts/{account_id}/seat-conversions",
        "/api/v1/staff/accounts/{account_id}/seat-conversions/preview",
    ]:
        assert {"502", "503"} <= set(schema["paths"][path]["post"]["responses"]), path
    assert {"502", "503"} <= set(
        schema["paths"]["/api/v1/staff/accounts/{account_id}/invoice-preview"]["get"]["responses"]
    )


def test_the_resolutions_list_is_the_object_it_returns(schema):
    ok = schema["paths"]["/api/v1/resolutions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    page = schema["components"]["schemas"][ok["$ref"].rsplit("/", 1)[1]]
    assert page["type"] == "object" and set(page["required"]) == {"results", "next"}
    assert page["properties"]["results"]["type"] == "array"
    assert page["properties"]["next"] == {
        "type": "string", "format": "uri", "nullable": True, "description": page["properties"]["next"]["description"]
    }  # fmt: skip


def test_ingestion_takes_one_event_or_a_batch_of_1_to_1000(schema):
    body = schema["paths"]["/api/v1/conversation-events"]["post"]["requestBody"]["content"]["application/json"]
    forms = schema["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]["oneOf"]
    assert {"$ref": "#/components/schemas/Event"} in forms
    (batch_ref,) = [form for form in forms if form != {"$ref": "#/components/schemas/Event"}]
    batch = schema["components"]["schemas"][batch_ref["$ref"].rsplit("/", 1)[1]]
    events = batch["properties"]["events"]
    assert (events["minItems"], events["maxItems"]) == (1, MAX_BATCH) == (1, 1000)
    assert batch["required"] == ["events"]
    event = schema["components"]["schemas"]["Event"]
    assert set(event["required"]) == {"id", "conversation_id", "type", "occurred_at"}


def test_the_usage_range_limit_is_stated(schema):
    parameters = {p["name"]: p for p in schema["paths"]["/api/v1/usage"]["get"]["parameters"]}
    assert parameters["from"]["required"] and parameters["to"]["required"]
    assert f"at most {MAX_USAGE_DAYS} days" in parameters["to"]["description"] and MAX_USAGE_DAYS == 366


@pytest.mark.django_db
def test_a_usage_range_one_day_over_the_stated_limit_is_refused(api_client, billing_admin):
    """The limit the schema states is the one the API applies (366 days inclusive pass, 367 are a 400)."""
    api_client.force_authenticate(billing_admin)
    assert api_client.get("/api/v1/usage?from=2025-01-01&to=2026-01-01").status_code == 200  # 366 days
    refused = api_client.get("/api/v1/usage?from=2025-01-01&to=2026-01-02")
    assert refused.status_code == 400
    assert refused.json()["errors"] == [{"index": None, "field": "to", "message": "At most 366 days at a time."}]


def test_plan_slugs_in_paths_have_the_url_converters_pattern(schema):
    for method in ("get", "post"):
        (slug,) = [
            p
            for p in schema["paths"]["/api/v1/staff/price-plans/{slug}/versions"][method]["parameters"]
            if p["in"] == "path"
        ]
        assert slug["schema"]["pattern"] == r"^[-a-zA-Z0-9_]+$"


# --- Mismatches schemathesis found between the views and the schema (the views were wrong) --------------------


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["from=", "to=", "from=&to=", "from=2026-01-01&to="])
def test_an_empty_date_of_the_resolutions_list_is_refused_not_ignored(api_client, billing_admin, query):
    """The schema says `from`/`to` are dates; `?from=` was silently the whole history."""
    api_client.force_authenticate(billing_admin)
    refused = api_client.get(f"/api/v1/resolutions?{query}")
    assert refused.status_code == 400
    blank = {name for name in ("from", "to") if f"{name}=&" in f"{query}&"}
    assert {e["field"] for e in refused.json()["errors"]} == blank
    assert all(e["message"] == "Give a date as YYYY-MM-DD." for e in refused.json()["errors"])
    assert api_client.get("/api/v1/resolutions").status_code == 200  # left out, they are no filter
    assert api_client.get("/api/v1/resolutions?from=2026-01-01").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["status=", "account_id="])
def test_an_empty_filter_of_the_plan_migrations_list_is_refused_not_ignored(api_client, admin_user, query):
    """The schema says `status` is one of the states and `account_id` an integer; empty was "no filter"."""
    api_client.force_authenticate(admin_user)
    refused = api_client.get(f"/api/v1/staff/plan-migrations?{query}")
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == query[:-1]
    assert api_client.get("/api/v1/staff/plan-migrations").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["page=", "page_size=", "plan_version_id="])
def test_an_empty_number_of_a_price_simulation_is_refused_not_ignored(api_client, admin_user, default_plan, query):
    from resolutions.services.simulation import price_simulation_start

    simulation, _ = price_simulation_start(
        version=default_plan.current_version(), periods=1, actor=admin_user, idempotency_key="schema-test"
    )
    api_client.force_authenticate(admin_user)
    url = f"/api/v1/staff/price-simulations/{simulation.pk}"
    refused = api_client.get(f"{url}?{query}")
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == query[:-1]
    assert api_client.get(url).status_code == 200


def test_price_simulation_page_numbers_state_their_range(schema):
    parameters = {
        p["name"]: p["schema"]
        for p in schema["paths"]["/api/v1/staff/price-simulations/{simulation_id}"]["get"]["parameters"]
    }
    assert parameters["page"] == {"type": "integer", "minimum": 1, "maximum": 10**8}
    assert parameters["page_size"]["minimum"] == 1 and parameters["page_size"]["maximum"] == 1000


@pytest.mark.django_db
@pytest.mark.parametrize("limit", ["", "0", "abc", "1001", "-1", "1.5"])
def test_a_resolutions_page_size_outside_1_to_1000_is_refused_not_replaced(api_client, billing_admin, limit):
    """DRF answered limit=abc or 0 with 100 rows and 5000 with 1,000: a page of another size than asked."""
    api_client.force_authenticate(billing_admin)
    refused = api_client.get(f"/api/v1/resolutions?limit={limit}")
    assert refused.status_code == 400
    assert refused.json()["errors"] == [
        {"index": None, "field": "limit", "message": "limit is a whole number from 1 to 1,000."}
    ]
    for fine in ("1", "1000"):
        assert api_client.get(f"/api/v1/resolutions?limit={fine}").status_code == 200


def test_the_resolutions_page_size_states_its_range(schema):
    (limit,) = [p for p in schema["paths"]["/api/v1/resolutions"]["get"]["parameters"] if p["name"] == "limit"]
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000}


def as_json_schema(openapi: object) -> object:
    """OpenAPI 3.0's `nullable` in JSON Schema's terms (a type list with null)."""
    if isinstance(openapi, list):
        return [as_json_schema(item) for item in openapi]
    if not isinstance(openapi, dict):
        return openapi
    converted = {key: as_json_schema(value) for key, value in openapi.items() if key != "nullable"}
    if openapi.get("nullable"):
        converted["type"] = [openapi["type"], "null"]
    return converted


def test_a_throttled_answer_is_what_the_schema_documents_for_429(schema):
    """What DRF answers when a rate limit (issue 13's per-key limits) refuses a request: 429, the one shape, and
    Retry-After in whole seconds, as every operation's documented 429 says."""
    import jsonschema_rs
    from rest_framework.exceptions import Throttled

    from billing_portal.api_errors import api_exception_handler

    response = api_exception_handler(Throttled(wait=29.2), {})
    assert response.status_code == 429
    documented = schema["paths"]["/api/v1/usage"]["get"]["responses"]["429"]
    jsonschema_rs.validate(as_json_schema(schema["components"]["schemas"]["Errors"]), response.data)
    header = documented["headers"]["Retry-After"]["schema"]
    assert header["type"] == "integer" and int(response["Retry-After"]) == 30 >= header["minimum"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [{"name": 5}, {"name": -5.6e16}, {"name": True}, {"name": ["bot"]}],
)
def test_a_text_field_takes_only_json_text(api_client, billing_admin, body):
    """DRF's CharField took {"name": -5.6e16} as the name "-5.6e+16" (schemathesis: a schema-violating body
    accepted); the API's input text fields take strings only, and nothing is created."""
    from accounts.models import ApiKey

    api_client.force_authenticate(billing_admin)
    before = ApiKey.objects.count()
    refused = api_client.post("/api/v1/api-keys", body, format="json")
    assert refused.status_code == 400
    assert refused.json()["errors"] == [{"index": None, "field": "name", "message": "Not a valid string."}]
    assert ApiKey.objects.count() == before
    assert api_client.post("/api/v1/api-keys", {"name": "bot"}, format="json").status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("quantity", ["10", 10.0, "10.0", True])
def test_a_whole_number_field_takes_only_a_json_integer(api_client, admin_user, account, quantity):
    """DRF's IntegerField took "10", 10.0 and "10.0" for 10; the schema says integer."""
    from credits.models import CreditPack

    api_client.force_authenticate(admin_user)
    url = f"/api/v1/staff/accounts/{account.pk}/credit-grants"
    refused = api_client.post(url, {"quantity": quantity, "reason": "goodwill"}, format="json")
    assert refused.status_code == 400
    assert refused.json()["errors"] == [{"index": None, "field": "quantity", "message": "A valid integer is required."}]
    assert not CreditPack.objects.filter(account=account).exists()
    assert api_client.post(url, {"quantity": 10, "reason": "goodwill"}, format="json").status_code == 201
