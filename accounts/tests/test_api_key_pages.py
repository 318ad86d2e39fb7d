"""The API keys page through Django's test client: list for both roles, create (shown once, one key per
drawn form) and revoke (confirm step) for billing admins, 404 for another account's key, CSRF."""

import re

import pytest
from django.test import Client

from accounts.models import ApiKey, AuditLogEntry
from accounts.services import api_key_create

pytestmark = pytest.mark.django_db
PAGE = "/portal/api-keys/"


def form_key(html: str) -> str:
    return re.search(r'name="idempotency_key" value="([0-9a-f]{32})"', html).group(1)


def shown_key(html: str) -> str:
    return re.search(r'id="new-api-key" class="secret" value="(rbp_[^"]+)"', html).group(1)


def test_viewer_sees_the_keys_read_only(client, viewer, billing_admin):
    api_key_create(account=viewer.account, name="Ingestion", actor=billing_admin)
    client.force_login(viewer)
    page = client.get(PAGE).content.decode()
    assert "Ingestion" in page and "active" in page
    assert '<form method="post" action="/portal/api-keys' not in page
    assert "Create key" not in page and "Revoke…" not in page
    assert "Only your account's billing admins can create or revoke keys." in page


def test_viewer_cannot_create_or_revoke(client, viewer, billing_admin):
    api_key, _ = api_key_create(account=viewer.account, name="Ingestion", actor=billing_admin)
    client.force_login(viewer)
    assert client.post("/portal/api-keys/new", {"name": "x", "idempotency_key": "k" * 32}).status_code == 302
    assert client.post(f"/portal/api-keys/{api_key.pk}/revoke", {"idempotency_key": "k" * 32}).status_code == 302
    assert ApiKey.objects.count() == 1 and ApiKey.objects.get().revoked_at is None


def test_a_created_key_is_shown_once_works_and_is_not_stored(client, billing_admin, api_client):
    client.force_login(billing_admin)
    page = client.get(PAGE).content.decode()
    response = client.post("/portal/api-keys/new", {"name": "Production", "idempotency_key": form_key(page)})
    assert response.status_code == 200
    html = response.content.decode()
    raw = shown_key(html)
    assert "it will not be shown again" in html and 'data-copy-target="new-api-key"' in html
    assert 'aria-live="polite"' in html
    api_key = ApiKey.objects.get()
    assert raw.startswith(api_key.prefix + "_") and api_key.key_hash != raw
    stored = [str(v) for v in ApiKey.objects.values().get().values()]
    stored += [str(e.after) + str(e.before) for e in AuditLogEntry.objects.all()]
    assert not any(raw in text for text in stored)
    assert raw not in client.get(PAGE).content.decode()  # shown once: the list never shows it again

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get("/api/v1/credits").status_code == 200


def test_submitting_the_same_form_twice_creates_one_key(client, billing_admin):
    client.force_login(billing_admin)
    key = form_key(client.get(PAGE).content.decode())
    first = client.post("/portal/api-keys/new", {"name": "Production", "idempotency_key": key})
    second = client.post("/portal/api-keys/new", {"name": "Production", "idempotency_key": key})
    assert ApiKey.objects.count() == 1
    assert shown_key(first.content.decode()) == shown_key(second.content.decode())
    fresh = form_key(client.get(PAGE).content.decode())
    assert fresh != key  # each drawing of the form is a new action
    client.post("/portal/api-keys/new", {"name": "Staging", "idempotency_key": fresh})
    assert ApiKey.objects.count() == 2


def test_a_blank_name_is_explained_and_creates_nothing(client, billing_admin):
    client.force_login(billing_admin)
    key = form_key(client.get(PAGE).content.decode())
    response = client.post("/portal/api-keys/new", {"name": "  ", "idempotency_key": key})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Give the key a name." in html and 'aria-invalid="true"' in html
    assert not ApiKey.objects.exists()


def test_htmx_create_answers_the_panel_only(client, billing_admin):
    client.force_login(billing_admin)
    key = form_key(client.get(PAGE).content.decode())
    response = client.post("/portal/api-keys/new", {"name": "CI", "idempotency_key": key}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and html.strip().startswith('<div id="api-keys-panel">')
    assert shown_key(html)


def test_revoke_has_a_confirm_step_and_the_key_stays_listed_as_revoked(client, billing_admin, api_client):
    api_key, raw = api_key_create(account=billing_admin.account, name="Old", actor=billing_admin)
    client.force_login(billing_admin)
    confirm = client.get(f"/portal/api-keys/{api_key.pk}/revoke")
    html = confirm.content.decode()
    assert confirm.status_code == 200 and "Revoke “Old”?" in html and "stops working at once" in html
    api_key.refresh_from_db()
    assert api_key.revoked_at is None  # the GET changed nothing
    response = client.post(f"/portal/api-keys/{api_key.pk}/revoke", {"idempotency_key": form_key(html)})
    assert response.status_code == 302 and response["Location"] == PAGE
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None and api_key.revoked_by == billing_admin
    listed = client.get(PAGE).content.decode()
    assert "Old" in listed and "revoked" in listed and "is revoked: it no longer works" in listed
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get("/api/v1/credits").status_code == 401

    again = client.post(f"/portal/api-keys/{api_key.pk}/revoke", {"idempotency_key": form_key(html)}, follow=True)
    assert "already revoked" in again.content.decode()


def test_another_accounts_key_is_404(client, billing_admin, other_account):
    from tests.factories import BillingAdminFactory

    theirs, _ = api_key_create(account=other_account, name="Theirs", actor=BillingAdminFactory(account=other_account))
    client.force_login(billing_admin)
    assert client.get(f"/portal/api-keys/{theirs.pk}/revoke").status_code == 404
    assert client.post(f"/portal/api-keys/{theirs.pk}/revoke", {"idempotency_key": "a" * 32}).status_code == 404
    assert "Theirs" not in client.get(PAGE).content.decode()
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_posts_need_the_csrf_token(billing_admin):
    client = Client(enforce_csrf_checks=True)
    client.force_login(billing_admin)
    assert client.post("/portal/api-keys/new", {"name": "x", "idempotency_key": "a" * 32}).status_code == 403
    assert not ApiKey.objects.exists()


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(PAGE)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
