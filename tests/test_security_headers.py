"""Headers on every response: the Content-Security-Policy (nothing inline, nothing from elsewhere), and nothing
with account data kept by a cache (`no-store` on every /api/ response, `private, no-store` on a logged-in page)."""

import json
import re

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def directives(header: str) -> dict[str, str]:
    return {part.split(" ", 1)[0]: part.split(" ", 1)[1] for part in header.split("; ")}


def test_every_kind_of_response_has_the_policy(client, billing_admin, api_client):
    anonymous_page = client.get("/login/")
    client.force_login(billing_admin)
    page = client.get("/portal/")
    api_client.force_authenticate(billing_admin)
    api = api_client.get("/api/v1/usage")
    error = api_client.get("/api/v1/no-such-thing")
    for response in (anonymous_page, page, api, error):
        assert directives(response["Content-Security-Policy"]) == directives(POLICY), response.request["PATH_INFO"]
        assert "unsafe" not in response["Content-Security-Policy"]


@override_settings(DEBUG=True)
def test_the_policy_is_on_in_debug_too(client):
    # (settings are read per response): DEBUG pages carry it, so the browser tests see any violation
    assert "Content-Security-Policy" in client.get("/login/")


def test_every_api_response_is_no_store(api_client, billing_admin, settings):
    assert api_client.get("/api/v1/usage")["Cache-Control"] == "no-store"  # 401
    assert api_client.get("/api/v1/no-such-thing")["Cache-Control"] == "no-store"  # 404
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    too_big = api_client.generic("POST", "/api/v1/conversation-events", b" " * 101, content_type="application/json")
    assert too_big.status_code == 413 and too_big["Cache-Control"] == "no-store"  # the guard's own refusal
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
    api_client.force_authenticate(billing_admin)
    ok = api_client.get("/api/v1/resolutions")
    assert ok.status_code == 200 and ok["Cache-Control"] == "no-store"
    bad = api_client.get("/api/v1/usage", {"from": "not a date"})
    assert bad.status_code == 400 and bad["Cache-Control"] == "no-store"
    assert bad.json()["errors"]  # still the one error shape


def test_pages_with_account_data_are_not_stored(client, billing_admin):
    client.force_login(billing_admin)
    for url in ("/portal/", "/portal/resolutions/", "/portal/resolutions/export.csv"):
        response = client.get(url)
        assert response.status_code == 200, url
        cache_control = {d.strip() for d in response["Cache-Control"].split(",")}
        assert {"private", "no-store"} <= cache_control, url


def test_static_files_stay_cacheable(client, billing_admin):
    client.force_login(billing_admin)
    response = client.get("/static/portal/portal.css")
    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")


def test_api_docs_page_has_no_inline_script_or_style(client, billing_admin):
    client.force_login(billing_admin)
    html = client.get("/api/docs/").content.decode()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts), scripts
    assert "<style" not in html and " style=" not in html
    init = client.get("/api/docs/?script=")
    assert init["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in init.content.decode()


def test_htmx_injects_no_indicator_style(client, billing_admin):
    client.force_login(billing_admin)
    html = client.get("/portal/").content.decode()
    config = json.loads(re.search(r'<meta name="htmx-config" content=\'([^\']*)\'>', html).group(1))
    assert config["includeIndicatorStyles"] is False and "style" not in config["attributesToSettle"]
    assert " style=" not in html and "<style" not in html
