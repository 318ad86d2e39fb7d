"""Every /api/ answer is well-formed for hostile input (issue 9): one error shape, 400 for bad input, never a 500."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import Account, ApiKey
from accounts.services import api_key_create
from resolutions.models import ConversationEvent, Resolution
from resolutions.tests.conftest import NOW, event

pytestmark = pytest.mark.django_db
EVENTS = "/api/v1/conversation-events"
ROOT = Path(__file__).resolve().parent.parent


def assert_one_shape(response, status: int) -> list[dict]:
    """The one error shape of DESIGN §4, as JSON, with nothing else in the body."""
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert set(body) == {"errors"} and body["errors"], body
    for error in body["errors"]:
        assert set(error) == {"index", "field", "message"} and error["message"], error
    return body["errors"]


@pytest.fixture
def now():
    from billing_portal import clock

    with clock.frozen(NOW):
        yield NOW


@pytest.fixture
def raw_key(account, billing_admin, now):
    return api_key_create(account=account, name="bot", actor=billing_admin)[1]


@pytest.fixture
def key_client(api_client, raw_key):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return api_client


def post_raw(client, text: str, path: str = EVENTS):
    """Post JSON text exactly as written (escapes such as \\u0000 stay escapes)."""
    return client.generic("POST", path, text.encode("utf-8"), content_type="application/json")


# --- 1. One error shape ---------------------------------------------------------------------------------


def test_a_missing_key_is_401_in_the_one_shape_and_keeps_www_authenticate(api_client, now):
    response = api_client.post(EVENTS, event("e1", "c1", "ai_answer", 1), format="json")
    (error,) = assert_one_shape(response, 401)
    assert "credentials" in error["message"].lower() and response["WWW-Authenticate"] == "Bearer"


def test_an_unknown_key_is_401_in_the_one_shape(api_client, now):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer rbp_deadbeef_nope")
    (error,) = assert_one_shape(api_client.get("/api/v1/account"), 401)
    assert error == {"index": None, "field": None, "message": "Unknown or revoked API key."}


def test_permission_denied_is_403_in_the_one_shape(api_client, billing_admin):
    api_client.force_authenticate(billing_admin)
    (error,) = assert_one_shape(api_client.get("/api/v1/staff/accounts"), 403)
    assert "account managers and admins" in error["message"]


def test_not_found_is_404_in_the_one_shape(api_client, billing_admin, other_account):
    api_client.force_authenticate(billing_admin)
    from tests.factories import BillingAdminFactory

    owner = BillingAdminFactory(account=other_account, username="globex-billing")
    other_key, _ = api_key_create(account=other_account, name="Globex bot", actor=owner)
    (error,) = assert_one_shape(api_client.post(f"/api/v1/api-keys/{other_key.pk}/revoke"), 404)
    assert error["message"] == "No such API key."
    (error,) = assert_one_shape(api_client.get("/api/v1/no-such-thing"), 404)
    assert "not found" in error["message"].lower()


def test_a_page_404_stays_an_html_page(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_an_invalid_cursor_is_404_in_the_one_shape(key_client):
    (error,) = assert_one_shape(key_client.get("/api/v1/resolutions", {"cursor": "not-a-cursor"}), 404)
    assert "cursor" in error["message"].lower()


@pytest.mark.parametrize("position", ["garbage", "9999-12-31T23:59:59-05:00", "2026-11-02 11:00:00"])
def test_a_forged_cursor_position_is_404_not_a_crash(key_client, position):
    forged = base64.b64encode(f"o=0&r=0&p={position}".encode()).decode()
    (error,) = assert_one_shape(key_client.get("/api/v1/resolutions", {"cursor": forged}), 404)
    assert "cursor" in error["message"].lower()


def test_a_wrong_method_is_405_in_the_one_shape(key_client):
    (error,) = assert_one_shape(key_client.get(EVENTS), 405)
    assert "GET" in error["message"]


def test_an_unsupported_media_type_is_415_in_the_one_shape(key_client):
    response = key_client.generic("POST", EVENTS, b"id=e1", content_type="application/x-www-form-urlencoded")
    assert_one_shape(response, 415)


def test_throttled_is_429_in_the_one_shape_with_retry_after(rf):
    from rest_framework.response import Response
    from rest_framework.throttling import BaseThrottle
    from rest_framework.views import APIView

    class Refuse(BaseThrottle):
        def allow_request(self, request, view):
            return False

        def wait(self):
            return 30

    class Throttled(APIView):
        authentication_classes, permission_classes, throttle_classes = [], [], [Refuse]

        def get(self, request):
            return Response({})

    response = Throttled.as_view()(rf.get("/api/v1/anything"))
    response.render()
    (error,) = assert_one_shape(response, 429)
    assert response["Retry-After"] == "30" and "30 seconds" in error["message"]


def test_a_session_post_without_csrf_token_is_403_in_the_one_shape(billing_admin):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(billing_admin)
    (error,) = assert_one_shape(client.post("/api/v1/api-keys", {"name": "bot"}, format="json"), 403)
    assert "CSRF" in error["message"]
    assert not ApiKey.objects.exists()


def test_the_csrf_failure_view_answers_json_for_the_api_and_the_page_elsewhere(rf):
    from django.middleware.csrf import _get_failure_view

    failure = _get_failure_view()
    (error,) = assert_one_shape(failure(rf.post("/api/v1/anything"), reason="CSRF token missing."), 403)
    assert "CSRF" in error["message"]
    page = failure(rf.post("/login/"), reason="CSRF token missing.")
    assert page.status_code == 403 and page["Content-Type"].startswith("text/html")


def test_a_page_post_without_csrf_token_keeps_the_html_page(billing_admin):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/login/", {"username": "x", "password": "y"})
    assert response.status_code == 403 and response["Content-Type"].startswith("text/html")


def test_an_unexpected_error_is_a_json_500_for_the_api(key_client, monkeypatch):
    from resolutions import apis

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(apis, "usage_get", broken)
    key_client.raise_request_exception = False
    (error,) = assert_one_shape(key_client.get("/api/v1/usage", {"from": "2026-11-01", "to": "2026-11-02"}), 500)
    assert "boom" not in error["message"]


@pytest.mark.parametrize("code", [400, 403, 404, 500])
def test_djangos_error_views_answer_json_for_the_api_and_pages_elsewhere(rf, code):
    from django.core.exceptions import PermissionDenied, SuspiciousOperation
    from django.http import Http404
    from django.urls import get_resolver

    handler = get_resolver().resolve_error_handler(code)
    exception = {400: SuspiciousOperation("x"), 403: PermissionDenied("x"), 404: Http404("x"), 500: None}[code]
    args = () if code == 500 else (exception,)
    assert_one_shape(handler(rf.get("/api/v1/account"), *args), code)
    page = handler(rf.get("/portal/"), *args)
    assert page.status_code == code and page["Content-Type"].startswith("text/html")


def test_a_bad_host_is_a_json_400_for_the_api(api_client):
    (error,) = assert_one_shape(api_client.get("/api/v1/account", HTTP_HOST="evil.example"), 400)


# --- 2. Bad input is a 400, never a 500 -----------------------------------------------------------------


def batch_text(*events) -> str:
    return json.dumps({"events": list(events)})  # ensure_ascii: NUL and surrogates travel as \\uXXXX escapes


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("id", "e\x002", "NUL"),
        ("conversation_id", "c\x00", "NUL"),
        ("id", "\ud800", "surrogate"),
        ("conversation_id", "x\udfffy", "surrogate"),
        ("type", "ai_answer\x00", "NUL"),
    ],
)
def test_nul_and_lone_surrogates_are_400_at_their_index_and_field(key_client, field, value, words):
    text = batch_text(event("ok", "c1", "ai_answer", 10), {**event("e2", "c2", "ai_answer", 10), field: value})
    (error,) = assert_one_shape(post_raw(key_client, text), 400)
    assert (error["index"], error["field"]) == (1, field) and words in error["message"]
    assert not ConversationEvent.objects.exists()


def test_a_nul_in_a_key_is_400_at_its_event(key_client):
    text = batch_text(event("ok", "c1", "ai_answer", 10), {**event("e2", "c2", "ai_answer", 10), "i\x00d": "x"})
    (error,) = assert_one_shape(post_raw(key_client, text), 400)
    assert error["index"] == 1 and "NUL" in error["message"]


def test_a_single_event_with_a_nul_is_400_at_index_0(key_client):
    (error,) = assert_one_shape(post_raw(key_client, json.dumps(event("e\x00", "c1", "ai_answer", 1))), 400)
    assert (error["index"], error["field"]) == (0, "id")


def test_a_valid_surrogate_pair_is_one_character(key_client):
    emoji = "\U0001f600"
    response = post_raw(key_client, batch_text(event(emoji * 255, emoji * 255, "ai_answer", 1)))
    assert response.status_code == 202 and ConversationEvent.objects.get().event_id == emoji * 255


def test_nul_and_surrogates_are_refused_by_every_json_api(api_client, billing_admin):
    api_client.force_authenticate(billing_admin)
    (error,) = assert_one_shape(post_raw(api_client, '{"name": "bot\\u0000"}', "/api/v1/api-keys"), 400)
    assert error["field"] == "name" and "NUL" in error["message"]
    (error,) = assert_one_shape(post_raw(api_client, '{"name": "\\udc00"}', "/api/v1/api-keys"), 400)
    assert error["field"] == "name" and "surrogate" in error["message"]
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("value", [["ai_answer"], {"a": 1}, ["x", "y"], 3.5, True])
@pytest.mark.parametrize("field", ["id", "conversation_id", "type", "occurred_at"])
def test_a_list_or_object_where_a_string_belongs_is_400(key_client, field, value):
    text = batch_text(event("ok", "c1", "ai_answer", 10), {**event("e2", "c2", "ai_answer", 10), field: value})
    errors = assert_one_shape(post_raw(key_client, text), 400)
    assert [(e["index"], e["field"]) for e in errors] == [(1, field)]


@pytest.mark.parametrize("instant", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59Z"])
def test_instants_out_of_range_are_400(key_client, instant):
    text = batch_text({**event("e1", "c1", "ai_answer", 10), "occurred_at": instant})
    (error,) = assert_one_shape(post_raw(key_client, text), 400)
    assert (error["index"], error["field"]) == (0, "occurred_at")


@pytest.mark.parametrize("depth", [40, 5_000, 100_000])
def test_json_nested_deep_is_400(key_client, depth):
    for text in ("[" * depth + "]" * depth, '{"events": ' + "[" * depth + "]" * depth + "}"):
        (error,) = assert_one_shape(post_raw(key_client, text), 400)
        assert "nested" in error["message"]


def test_nesting_within_the_limit_is_an_ordinary_validation_error(key_client):
    text = '{"events": [' + "[" * 20 + "]" * 20 + "]}"
    (error,) = assert_one_shape(post_raw(key_client, text), 400)
    assert (error["index"], error["message"]) == (0, "Each event must be a JSON object.")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/usage", {"from": "9999-12-30", "to": "9999-12-31"}),
        ("/api/v1/usage", {"from": "0001-01-01", "to": "0001-01-02"}),
        ("/api/v1/resolutions", {"to": "9999-12-31"}),
        ("/api/v1/resolutions", {"from": "0001-01-01"}),
        ("/api/v1/resolutions", {"from": "9999-12-31", "to": "9999-12-31"}),
    ],
)
def test_far_dates_are_400(key_client, path, params):
    errors = assert_one_shape(key_client.get(path, params), 400)
    assert {e["field"] for e in errors} <= {"from", "to"} and all("between" in e["message"] for e in errors)


def test_dates_far_but_in_range_work(key_client):
    assert key_client.get("/api/v1/usage", {"from": "8999-12-01", "to": "8999-12-31"}).status_code == 200
    assert key_client.get("/api/v1/resolutions", {"from": "1970-01-01", "to": "8999-12-31"}).status_code == 200


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-11-01\x00", "to": "2026-11-02"}, "from"),
        ({"cursor": "\x00"}, "cursor"),
        ({"limit": "1\x00"}, "limit"),
    ],
)
def test_a_nul_in_a_query_parameter_is_400_naming_it(key_client, params, field):
    (error,) = assert_one_shape(key_client.get("/api/v1/resolutions", params), 400)
    assert error["field"] == field and "NUL" in error["message"]


def test_grant_credits_refuses_an_expiry_that_overflows(account):
    with pytest.raises(CommandError, match="(?i)out of range"):
        call_command("grant_credits", "--account", str(account.pk), "--quantity", "5",
                     "--expires", "9999-12-31T23:59:59-05:00")  # fmt: skip
    with pytest.raises(CommandError, match="(?i)out of range"):
        call_command(
            "grant_credits", "--account", str(account.pk), "--quantity", "5", "--starts", "0001-01-01T00:00+01:00"
        )


def test_grant_credits_bad_instant_prints_one_line_and_exits_non_zero():
    env = {**os.environ, "DJANGO_DEBUG": "true", "DJANGO_SETTINGS_MODULE": "billing_portal.settings"}
    done = subprocess.run(
        [sys.executable, "manage.py", "grant_credits", "--account", "1", "--quantity", "5",
         "--expires", "9999-12-31T23:59:59-05:00"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--expires" in lines[0] and "out of range" in lines[0].lower(), done.stderr


# --- 3. Body size ---------------------------------------------------------------------------------------


def test_a_maximal_batch_of_escaped_four_byte_ids_is_accepted(key_client, settings):
    # 255 characters outside the BMP travel as surrogate pairs: 12 bytes per character when escaped.
    def long_id(i: int, base: int) -> str:
        return "".join(chr(base + (i * 7 + k) % 1000) for k in range(255))

    events = [
        {"id": long_id(i, 0x1F300), "conversation_id": long_id(i, 0x20000), "type": "customer_confirmed",
         "occurred_at": (NOW - dt.timedelta(minutes=1)).isoformat()}
        for i in range(1000)
    ]  # fmt: skip
    text = json.dumps({"events": events})
    response = post_raw(key_client, text)
    assert response.status_code == 202 and response.json() == {"accepted": 1000, "duplicates": 0}
    assert 6_000_000 < len(text) <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert ConversationEvent.objects.filter(event_id=events[999]["id"]).exists()


def test_a_body_larger_than_the_limit_is_a_json_413_before_it_is_read(key_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    text = batch_text(*(event(f"e{i}", f"c{i}", "ai_answer", 1) for i in range(40)))
    (error,) = assert_one_shape(post_raw(key_client, text), 413)
    assert "2,000 bytes" in error["message"]
    assert not ConversationEvent.objects.exists()


def test_a_body_found_too_big_while_reading_is_a_json_413(rf):
    from django.core.exceptions import RequestDataTooBig
    from rest_framework.views import APIView

    class ReadsTooMuch(APIView):
        authentication_classes, permission_classes = [], []

        def post(self, request):
            raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")

    response = ReadsTooMuch.as_view()(rf.post("/api/v1/anything", b"{}", content_type="application/json"))
    response.render()
    assert_one_shape(response, 413)


# --- 4. Closed accounts ---------------------------------------------------------------------------------


def test_a_closed_account_cannot_post_events_and_nothing_is_stored(key_client, account):
    Account.objects.filter(pk=account.pk).update(status=Account.Status.CLOSED)
    (error,) = assert_one_shape(key_client.post(EVENTS, event("e1", "c1", "ai_answer", 1), format="json"), 403)
    assert "closed" in error["message"]
    assert not ConversationEvent.objects.exists()


# --- 5. Resolutions carry their id ----------------------------------------------------------------------


def test_resolutions_carry_their_id_first(key_client):
    key_client.post(EVENTS, {"events": [event("a", "c1", "ai_answer", 20), event("b", "c1", "customer_confirmed", 10)]},
                    format="json")  # fmt: skip
    (result,) = key_client.get("/api/v1/resolutions").json()["results"]
    assert next(iter(result)) == "id" and result["id"] == Resolution.objects.get().pk


@pytest.mark.parametrize("field", ["starts_at", "expires_at"])
def test_a_far_instant_on_a_staff_grant_is_a_400_and_grants_nothing(manager, account, api_client, field):
    from credits.models import CreditPack

    account.account_manager = manager
    account.save(update_fields=["account_manager"])
    api_client.force_authenticate(manager)
    body = {"quantity": 5, "source": "adjustment", "reason": "probe", field: "9999-12-31T23:59:59-05:00"}
    answer = api_client.post(f"/api/v1/staff/accounts/{account.pk}/credit-grants", body, format="json")
    assert answer.status_code == 400, answer.content
    assert answer.json()["errors"][0]["field"] == field
    assert not CreditPack.objects.filter(account=account).exists()
