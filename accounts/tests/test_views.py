import pytest

pytestmark = pytest.mark.django_db


def test_login_page_is_plain_and_accessible(client):
    page = client.get("/login/").content.decode()
    assert '<label for="id_username">Username</label>' in page
    assert '<label for="id_password">Password</label>' in page
    assert 'lang="en"' in page and "Skip to content" in page


def test_wrong_password_is_explained_and_logs_nobody_in(client, viewer):
    response = client.post("/login/", {"username": "acme-viewer", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert client.get("/").status_code == 302 and client.get("/")["Location"].startswith("/login/")


@pytest.mark.parametrize(
    ("user_fixture", "landing", "expected_text"),
    [
        ("viewer", "/portal/", "Acme Support"),
        ("billing_admin", "/portal/", "API keys"),
        ("manager", "/staff/", "My accounts"),
        ("admin_user", "/staff/", "All accounts"),
    ],
)
def test_each_role_lands_on_its_page(request, client, user_fixture, landing, expected_text):
    user = request.getfixturevalue(user_fixture)
    response = client.post("/login/", {"username": user.username, "password": "correct horse battery staple"})
    assert response.status_code == 302
    home = client.get("/")
    assert home.status_code == 302 and home["Location"] == landing
    assert expected_text in client.get(landing).content.decode()


def test_viewer_does_not_see_api_keys(client, viewer):
    client.force_login(viewer)
    page = client.get("/portal/").content.decode()
    assert "$0.99" in page and "See the keys" in page  # a count and a link to the read-only keys page
    assert "Create or revoke keys" not in page


def test_customer_landing_shows_plan_terms_formatted_for_people(client, billing_admin):
    client.force_login(billing_admin)
    page = client.get("/portal/").content.decode()
    for text in ["$0.99", "24 hours", "$39.00", "$0.90 per credit", "10,000 resolutions", "$9,000.00"]:
        assert text in page, text


def test_staff_user_without_a_role_gets_a_plain_403(client, db):
    from tests.factories import UserFactory

    loner = UserFactory(username="loner", is_staff=True)
    client.force_login(loner)
    response = client.get("/")
    assert response.status_code == 403


def test_logout_is_a_post_and_ends_the_session(client, viewer):
    client.force_login(viewer)
    assert client.post("/logout/").status_code == 302
    assert client.get("/portal/")["Location"].startswith("/login/")


def test_api_docs_and_schema_work_offline(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/v1/api-keys" in schema.content and b"accountApiKey" in schema.content
    docs = client.get("/api/docs/").content.decode()
    assert "cdn" not in docs.lower() and "/static/drf_spectacular_sidecar/" in docs


def test_openapi_schema_validates_without_warnings(tmp_path):
    from django.core.management import call_command

    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    schema = target.read_text()
    for path in ["/api/v1/conversation-events", "/api/v1/usage", "/api/v1/resolutions", "/api/v1/api-keys"]:
        assert f"  {path}:" in schema


def test_pages_show_times_in_the_viewers_zone_and_name_it(client, viewer, manager, account):
    """A customer reads times in the account's zone unless they chose one; staff in their own (UTC if none)."""
    from django.utils import timezone

    account.timezone = "America/New_York"
    account.save()
    client.force_login(viewer)
    assert "times in America/New_York" in client.get("/portal/").content.decode()
    viewer.timezone = "Asia/Tokyo"
    viewer.save()
    assert "times in Asia/Tokyo" in client.get("/portal/").content.decode()
    client.force_login(manager)
    assert "times in UTC" in client.get("/staff/").content.decode()
    manager.timezone = "Europe/Lisbon"
    manager.save()
    assert "times in Europe/Lisbon" in client.get("/staff/").content.decode()
    assert timezone.get_current_timezone_name() == "UTC"  # the request's zone does not leak past it


def test_an_unknown_timezone_is_refused_on_the_user(manager):
    from django.core.exceptions import ValidationError

    manager.timezone = "Mars/Olympus"
    with pytest.raises(ValidationError):
        manager.full_clean()
