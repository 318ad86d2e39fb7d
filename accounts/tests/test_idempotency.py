"""Idempotency-Key on POST /api/v1/api-keys (a replay shows the same raw key, which is never stored) and the
keys' retention."""

import datetime as dt
import hashlib

import pytest

from accounts.models import ApiKey, AuditLogEntry
from billing_portal import clock

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_for(api_client, billing_admin):
    api_client.force_authenticate(billing_admin)
    return api_client


def create_key(client, body, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post("/api/v1/api-keys", body, format="json", **headers)


def test_a_replayed_api_key_create_shows_the_same_key_once_stored_as_a_hash(admin_client_for, account):
    first = create_key(admin_client_for, {"name": "bot"}, key="setup-1")
    again = create_key(admin_client_for, {"name": "bot"}, key="setup-1")
    assert first.status_code == again.status_code == 201
    assert again.json()["key"] == first.json()["key"] and again.json()["id"] == first.json()["id"]
    assert ApiKey.objects.count() == 1 and AuditLogEntry.objects.filter(action="api_key.create").count() == 1
    raw_key = first.json()["key"]
    assert ApiKey.objects.get().key_hash == hashlib.sha256(raw_key.encode()).hexdigest()
    from accounts.models import IdempotencyKey

    secret = raw_key.split("_", 2)[2]
    assert IdempotencyKey.objects.count() == 1
    assert all(secret not in str(v) for row in IdempotencyKey.objects.values() for v in row.values())
    # the key works
    admin_client_for.force_authenticate(None)
    admin_client_for.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert admin_client_for.get("/api/v1/account").status_code == 200


def test_another_body_with_the_same_key_is_409_and_other_keys_make_other_api_keys(admin_client_for, account):
    first = create_key(admin_client_for, {"name": "bot"}, key="setup-1")
    conflict = create_key(admin_client_for, {"name": "other"}, key="setup-1")
    assert conflict.status_code == 409 and conflict.json()["errors"][0]["field"] is None
    second = create_key(admin_client_for, {"name": "bot"}, key="setup-2")
    assert second.status_code == 201 and second.json()["key"] != first.json()["key"]
    third = create_key(admin_client_for, {"name": "bot"})
    assert third.json()["key"] not in (first.json()["key"], second.json()["key"])
    assert ApiKey.objects.count() == 3


def test_the_same_key_from_another_principal_is_its_own_request(admin_client_for, account, billing_admin):
    from tests.factories import AccountFactory, BillingAdminFactory

    first = create_key(admin_client_for, {"name": "bot"}, key="setup-1")
    other_admin = BillingAdminFactory(account=AccountFactory(slug="initech"), username="initech-admin")
    admin_client_for.force_authenticate(other_admin)
    theirs = create_key(admin_client_for, {"name": "bot"}, key="setup-1")
    assert theirs.status_code == 201 and theirs.json()["key"] != first.json()["key"]
    assert ApiKey.objects.get(pk=theirs.json()["id"]).account == other_admin.account


def test_keys_are_kept_24_hours_then_expired_by_the_cleanup(admin_client_for, account):
    from accounts.idempotency import idempotency_keys_expire
    from accounts.models import IdempotencyKey

    start = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)
    with clock.frozen(start):
        create_key(admin_client_for, {"name": "old"}, key="a")
    with clock.frozen(start + dt.timedelta(hours=20)):
        create_key(admin_client_for, {"name": "new"}, key="b")
    assert idempotency_keys_expire(now=start + dt.timedelta(hours=23, minutes=59)) == 0
    assert idempotency_keys_expire(now=start + dt.timedelta(hours=24, minutes=1)) == 1
    assert list(IdempotencyKey.objects.values_list("created_at", flat=True)) == [start + dt.timedelta(hours=20)]
