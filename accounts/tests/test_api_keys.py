import datetime as dt
import hashlib

import pytest

from accounts.models import ApiKey, AuditLogEntry
from accounts.services import api_key_authenticate, api_key_create, api_key_revoke
from billing_portal import clock

pytestmark = pytest.mark.django_db


def test_only_a_hash_is_stored_and_the_prefix_is_visible(account, billing_admin):
    api_key, raw_key = api_key_create(account=account, name="Helpdesk bot", actor=billing_admin)
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert raw_key.startswith(stored.prefix + "_")
    assert stored.key_hash == hashlib.sha256(raw_key.encode()).hexdigest()
    secret = raw_key.split("_", 2)[2]
    assert all(secret not in str(value) for value in ApiKey.objects.filter(pk=api_key.pk).values().get().values())
    assert AuditLogEntry.objects.filter(action="api_key.create", object_id=str(api_key.pk)).exists()


def test_a_key_works_until_revoked_then_never(account, billing_admin, api_client):
    api_key, raw_key = api_key_create(account=account, name="bot", actor=billing_admin)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    ok = api_client.get("/api/v1/account")
    assert ok.status_code == 200 and ok.json()["slug"] == "acme"

    api_key_revoke(api_key=api_key, actor=billing_admin, reason="leaked in a log")
    refused = api_client.get("/api/v1/account")
    assert refused.status_code == 401
    assert refused.json() == {"errors": [{"index": None, "field": None, "message": "Unknown or revoked API key."}]}
    assert api_key_authenticate(raw_key) is None
    entry = AuditLogEntry.objects.get(action="api_key.revoke")
    assert entry.reason == "leaked in a log" and entry.actor == billing_admin


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer nonsense",
        "Bearer rbp_00000000_notakey",
        "Token rbp_x_y",
        "Bearer rbp__",
        "Basic Zm9vOmJhcg==",
    ],
)
def test_missing_unknown_or_malformed_keys_get_401(header, api_client, account):
    if header:
        api_client.credentials(HTTP_AUTHORIZATION=header)
    response = api_client.get("/api/v1/account")
    assert response.status_code == 401


def test_a_right_prefix_with_a_wrong_secret_is_refused(account, billing_admin, api_client):
    _, raw_key = api_key_create(account=account, name="bot", actor=billing_admin)
    forged = raw_key[:-4] + ("AAAA" if not raw_key.endswith("AAAA") else "BBBB")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")
    assert api_client.get("/api/v1/account").status_code == 401


def test_last_used_is_recorded_at_most_once_a_minute(account, billing_admin):
    api_key, raw_key = api_key_create(account=account, name="bot", actor=billing_admin)
    start = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
    with clock.frozen(start):
        api_key_authenticate(raw_key)
    with clock.frozen(start + dt.timedelta(seconds=30)):
        api_key_authenticate(raw_key)
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == start
    with clock.frozen(start + dt.timedelta(seconds=61)):
        api_key_authenticate(raw_key)
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == start + dt.timedelta(seconds=61)


def test_billing_admin_manages_keys_through_the_api(billing_admin, api_client):
    api_client.force_authenticate(billing_admin)
    created = api_client.post("/api/v1/api-keys", {"name": "Zendesk sync"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith(body["prefix"]) and body["revoked_at"] is None

    listed = api_client.get("/api/v1/api-keys").json()
    assert [k["name"] for k in listed] == ["Zendesk sync"] and "key" not in listed[0]

    revoked = api_client.post(f"/api/v1/api-keys/{body['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    again = api_client.post(f"/api/v1/api-keys/{body['id']}/revoke")
    assert again.status_code == 400
    assert again.json() == {"errors": [{"index": None, "field": None, "message": "This API key is already revoked."}]}


def test_bad_key_name_is_a_clear_400_and_creates_nothing(billing_admin, api_client):
    api_client.force_authenticate(billing_admin)
    response = api_client.post("/api/v1/api-keys", {"name": ""}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "name"
    assert not ApiKey.objects.exists()


def test_viewers_and_api_keys_cannot_manage_keys(viewer, account, billing_admin, api_client):
    api_client.force_authenticate(viewer)
    assert api_client.post("/api/v1/api-keys", {"name": "x"}, format="json").status_code == 403
    api_client.force_authenticate(None)
    _, raw_key = api_key_create(account=account, name="bot", actor=billing_admin)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert api_client.post("/api/v1/api-keys", {"name": "x"}, format="json").status_code == 403
    assert ApiKey.objects.count() == 1
