"""A customer never sees another account's data: 404, not 403. Account managers see only their accounts."""

import pytest

from accounts.models import ApiKey
from accounts.services import api_key_create
from tests.factories import BillingAdminFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_key(other_account):
    owner = BillingAdminFactory(account=other_account, username="globex-billing")
    api_key, _ = api_key_create(account=other_account, name="Globex bot", actor=owner)
    return api_key


def test_customer_gets_404_for_another_accounts_key(billing_admin, other_key, api_client):
    api_client.force_authenticate(billing_admin)
    assert api_client.get(f"/api/v1/api-keys/{other_key.pk}").status_code == 404
    response = api_client.post(f"/api/v1/api-keys/{other_key.pk}/revoke")
    assert response.status_code == 404
    assert response.json() == {"errors": [{"index": None, "field": None, "message": "No such API key."}]}
    assert ApiKey.objects.get(pk=other_key.pk).revoked_at is None
    assert [k["name"] for k in api_client.get("/api/v1/api-keys").json()] == []


def test_an_api_key_reads_only_its_own_account(account, other_account, billing_admin, api_client):
    _, raw_key = api_key_create(account=account, name="bot", actor=billing_admin)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert api_client.get("/api/v1/account").json()["id"] == account.pk
    assert api_client.get(f"/api/v1/staff/accounts/{other_account.pk}").status_code == 403


def test_customer_cannot_use_staff_api_or_pages(billing_admin, other_account, client, api_client):
    api_client.force_authenticate(billing_admin)
    assert api_client.get("/api/v1/staff/accounts").status_code == 403
    client.force_login(billing_admin)
    page = client.get(f"/staff/accounts/{other_account.pk}/")
    assert page.status_code == 302 and page["Location"] == "/"


def test_customer_is_kept_out_of_the_django_admin(billing_admin, other_account, client):
    client.force_login(billing_admin)
    response = client.get(f"/admin/accounts/account/{other_account.pk}/change/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert "Globex" not in client.get("/admin/", follow=True).content.decode()


def test_account_manager_sees_only_assigned_accounts(manager, account, other_account, client, api_client):
    account.account_manager = manager
    account.save()
    api_client.force_authenticate(manager)
    assert [a["slug"] for a in api_client.get("/api/v1/staff/accounts").json()] == ["acme"]
    assert api_client.get(f"/api/v1/staff/accounts/{account.pk}").status_code == 200
    assert api_client.get(f"/api/v1/staff/accounts/{other_account.pk}").status_code == 404

    client.force_login(manager)
    assert client.get(f"/staff/accounts/{other_account.pk}/").status_code == 404
    assert client.get(f"/staff/accounts/{account.pk}/").status_code == 200
    changelist = client.get("/admin/accounts/account/").content.decode()
    assert "Acme Support" in changelist and "Globex Helpdesk" not in changelist
    hidden = client.get(f"/admin/accounts/account/{other_account.pk}/change/", follow=True)
    assert "Globex Helpdesk" not in hidden.content.decode()


def test_admin_sees_every_account(admin_user, account, other_account, api_client):
    api_client.force_authenticate(admin_user)
    assert {a["slug"] for a in api_client.get("/api/v1/staff/accounts").json()} == {"acme", "globex"}


def test_unknown_api_path_answers_json_404(api_client, billing_admin):
    api_client.force_authenticate(billing_admin)
    response = api_client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"errors": [{"index": None, "field": None, "message": "Not found."}]}
