"""Sign-in throttling on /login/ and /admin/login/ (accounts/services/login_throttle.py): failures per username
and per client address lock out, each further lockout lasts longer, the right password works afterwards."""

from __future__ import annotations

import logging
import re

import pytest
from django.test import RequestFactory

from accounts.services import login_throttle
from billing_portal.client_address import client_address
from conftest import PASSWORD

pytestmark = pytest.mark.django_db
INVALID = "Please enter a correct username and password"
CSRF_TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="[^"]*"|"X-CSRFToken": "[^"]*"')


class WallClock:
    """The throttle's wall clock, moved by the test (the cache's own expiry is only clean-up)."""

    def __init__(self):
        self.now = 1_800_000_000.0  # a bucket boundary of 60 s windows

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def wall_clock(monkeypatch):
    clock = WallClock()
    monkeypatch.setattr(login_throttle, "_now", lambda: clock.now)
    return clock


def sign_in(client, username, password, *, address="10.0.0.1", path="/login/", **extra):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address, **extra)


def page_text(response) -> str:
    return CSRF_TOKEN.sub("", response.content.decode())  # a fresh masked token in every page


def signed_in(response) -> bool:
    return response.status_code == 302 and "/login/" not in response["Location"]


def test_five_failures_lock_the_username_out_until_the_lockout_ends(client, viewer, wall_clock):
    for _ in range(4):
        response = sign_in(client, "acme-viewer", "wrong")
        assert response.status_code == 200 and INVALID in page_text(response)
    fifth = sign_in(client, "acme-viewer", "wrong")
    assert fifth.status_code == 200
    assert "Too many failed sign-ins. Try again in 1 minute." in page_text(fifth)

    wall_clock.advance(30)  # locked: the right password is not even checked, from another address too
    locked = sign_in(client, "acme-viewer", PASSWORD, address="10.9.9.9")
    assert locked.status_code == 200 and "Too many failed sign-ins. Try again in 1 minute." in page_text(locked)
    assert client.get("/").status_code == 302 and client.get("/")["Location"].startswith("/login/")

    wall_clock.advance(31)  # the minute has passed
    assert signed_in(sign_in(client, "acme-viewer", PASSWORD, address="10.9.9.9"))


def test_each_further_lockout_lasts_twice_as_long_up_to_the_cap(client, viewer, wall_clock, settings):
    settings.LOGIN_LOCKOUT_MAX_SECONDS = 180
    shown = []
    for _ in range(4):
        for attempt in range(5):
            response = sign_in(client, "acme-viewer", "wrong", address=f"10.0.{len(shown)}.{attempt}")
        shown.append(page_text(response).split("Try again in ")[1].split(".")[0])
        lockout = login_throttle.sign_in_lockout_get(username="acme-viewer", address=None)
        wall_clock.advance(lockout.until - wall_clock.now - 1)  # a second before its end: still locked
        assert "Too many failed sign-ins" in page_text(sign_in(client, "acme-viewer", PASSWORD, address="10.1.1.1"))
        wall_clock.advance(1)
    assert shown == ["1 minute", "2 minutes", "3 minutes", "3 minutes"]  # 60, 120, then capped at 180 s
    assert signed_in(sign_in(client, "acme-viewer", PASSWORD))


def test_an_unknown_username_is_locked_out_the_same_way(client, viewer, wall_clock):
    """No hint whether a user exists: the same answers, failure by failure, for a real and a made-up name."""
    real = [page_text(sign_in(client, "acme-viewer", "wrong", address=f"10.0.0.{i}")) for i in range(6)]
    made_up = [page_text(sign_in(client, "nobody-here", "wrong", address=f"10.0.1.{i}")) for i in range(6)]
    for mine, theirs in zip(real, made_up, strict=True):
        assert mine.replace("acme-viewer", "nobody-here") == theirs
    assert "Too many failed sign-ins. Try again in 1 minute." in made_up[-1]


def test_a_success_clears_the_usernames_failures(client, viewer, wall_clock):
    for i in range(4):
        sign_in(client, "acme-viewer", "wrong", address=f"10.0.0.{i}")
    assert signed_in(sign_in(client, "acme-viewer", PASSWORD, address="10.0.1.1"))
    client.logout()
    for i in range(4):  # without the clearing, these would be failures 5 to 8: a lockout
        response = sign_in(client, "acme-viewer", "wrong", address=f"10.0.2.{i}")
        assert INVALID in page_text(response) and "Too many" not in page_text(response)
    assert signed_in(sign_in(client, "acme-viewer", PASSWORD, address="10.0.3.1"))


def test_failures_two_windows_apart_do_not_add_up(client, viewer, wall_clock):
    for i in range(4):
        sign_in(client, "acme-viewer", "wrong", address=f"10.0.0.{i}")
    wall_clock.advance(120)
    for i in range(4):
        assert "Too many" not in page_text(sign_in(client, "acme-viewer", "wrong", address=f"10.0.1.{i}"))
    assert "Too many" in page_text(sign_in(client, "acme-viewer", "wrong", address="10.0.1.9"))  # 5 in the minute


def test_failures_either_side_of_a_bucket_boundary_count_together(client, viewer, wall_clock):
    """Five failures in 20 seconds lock out even though they fall in two fixed one-minute buckets."""
    wall_clock.advance(50)
    for i in range(3):
        sign_in(client, "acme-viewer", "wrong", address=f"10.0.0.{i}")
    wall_clock.advance(20)  # the next bucket: the previous one's three count for 5/6 of them (2.5, rounded up)
    assert "Too many" not in page_text(sign_in(client, "acme-viewer", "wrong", address="10.0.1.1"))
    assert "Too many" in page_text(sign_in(client, "acme-viewer", "wrong", address="10.0.1.9"))


def test_five_failures_just_across_a_boundary_lock_out(client, viewer, wall_clock):
    """Four failures in the last second of a minute and one just after it: five within two seconds."""
    wall_clock.advance(59)
    for i in range(4):
        assert "Too many" not in page_text(sign_in(client, "acme-viewer", "wrong", address=f"10.0.0.{i}"))
    wall_clock.advance(1.5)  # 0.5 s into the next bucket: the previous one's four still count as four
    assert "Too many" in page_text(sign_in(client, "acme-viewer", "wrong", address="10.0.1.9"))


def test_one_persons_typos_do_not_lock_out_the_others_behind_the_same_address(
    client, viewer, billing_admin, wall_clock
):
    for _ in range(5):
        sign_in(client, "acme-viewer", "wrong", address="10.6.6.6")
    assert "Too many failed sign-ins" in page_text(sign_in(client, "acme-viewer", PASSWORD, address="10.6.6.6"))
    assert signed_in(sign_in(client, "acme-billing", PASSWORD, address="10.6.6.6"))  # the address is not locked


def test_one_address_trying_many_usernames_is_locked_out_apart(client, viewer, billing_admin, wall_clock, settings):
    assert settings.LOGIN_ADDRESS_FAILURE_LIMIT == 20
    for i in range(19):
        assert INVALID in page_text(sign_in(client, f"guess-{i}", "wrong", address="10.6.6.6"))
    assert "Too many failed sign-ins" in page_text(sign_in(client, "guess-19", "wrong", address="10.6.6.6"))
    # That address now gets the lockout even with a real user's right password; other addresses do not.
    assert "Too many failed sign-ins" in page_text(sign_in(client, "acme-billing", PASSWORD, address="10.6.6.6"))
    assert signed_in(sign_in(client, "acme-billing", PASSWORD, address="10.7.7.7"))
    client.logout()
    wall_clock.advance(60)
    assert signed_in(sign_in(client, "acme-viewer", PASSWORD, address="10.6.6.6"))


def test_the_admin_login_is_throttled_with_the_same_counts(client, admin_user, wall_clock):
    admin_user.is_staff = True
    admin_user.save(update_fields=["is_staff"])
    for i in range(4):
        response = sign_in(client, "finance-admin", "wrong", address=f"10.0.0.{i}", path="/admin/login/")
        assert response.status_code == 200 and "Too many" not in page_text(response)
    fifth = sign_in(client, "finance-admin", "wrong", address="10.0.0.8", path="/admin/login/")
    assert fifth.status_code == 200 and "Too many failed sign-ins. Try again in 1 minute." in page_text(fifth)
    # The same username is locked on the portal's login too, and the right password does not get through.
    assert "Too many failed sign-ins" in page_text(sign_in(client, "finance-admin", PASSWORD, address="10.0.0.9"))
    locked = sign_in(client, "finance-admin", PASSWORD, address="10.0.0.9", path="/admin/login/")
    assert locked.status_code == 200 and "Too many failed sign-ins" in page_text(locked)
    wall_clock.advance(60)
    response = sign_in(client, "finance-admin", PASSWORD, address="10.0.0.9", path="/admin/login/?next=/admin/")
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_forwarded_for_header_is_ignored_unless_a_trusted_proxy_is_configured(client, viewer, wall_clock, settings):
    # With no trusted proxy, a client cannot escape its address's lockout by inventing X-Forwarded-For values.
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 5  # what is counted as the address matters here, not how many
    for i in range(5):
        sign_in(client, f"guess-{i}", "wrong", address="10.6.6.6", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
    locked = sign_in(client, "acme-viewer", PASSWORD, address="10.6.6.6", HTTP_X_FORWARDED_FOR="192.0.2.200")
    assert "Too many failed sign-ins" in page_text(locked)

    # Behind one proxy (REMOTE_ADDR is the proxy), the address the proxy appended is the client's.
    settings.TRUSTED_PROXY_COUNT = 1
    for i in range(5):
        sign_in(client, f"guess-{i}", "wrong", address="10.1.1.1", HTTP_X_FORWARDED_FOR=f"1.2.3.4, 198.51.100.{i}")
    assert signed_in(sign_in(client, "acme-viewer", PASSWORD, address="10.1.1.1", HTTP_X_FORWARDED_FOR="198.51.100.9"))


def test_client_address_takes_the_trusted_proxies_entry_and_nothing_left_of_it(settings):
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7, 10.0.0.1")
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_address(request) == "10.0.0.2"
    settings.TRUSTED_PROXY_COUNT = 2  # two proxies of ours: 10.0.0.1 (outer, appended by the inner) and REMOTE_ADDR
    assert client_address(request) == "203.0.113.7"
    settings.TRUSTED_PROXY_COUNT = 4  # fewer entries than proxies: it bypassed them, the peer is the client
    assert client_address(request) == "10.0.0.2"


def test_with_the_cache_down_sign_in_still_works_and_says_why_in_the_log(client, viewer, settings, caplog):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    with caplog.at_level(logging.ERROR, logger="accounts.services.login_throttle"):
        assert INVALID in page_text(sign_in(client, "acme-viewer", "wrong"))
        assert signed_in(sign_in(client, "acme-viewer", PASSWORD))
    assert any("cache is unavailable" in r.getMessage() for r in caplog.records)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_lockout_is_announced_in_the_browser(live_server, page, viewer, console_errors, screenshot):
    page.goto(f"{live_server.url}/login/")
    for _ in range(5):
        page.get_by_label("Username").fill("acme-viewer")
        page.get_by_label("Password").fill("wrong")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_load_state()
    alert = page.get_by_role("alert")
    assert alert.inner_text().strip() == "Too many failed sign-ins. Try again in 1 minute."
    assert page.get_by_label("Password").get_attribute("aria-invalid") == "true"
    screenshot("login-locked-out")
    page.get_by_label("Username").fill("acme-viewer")
    page.get_by_label("Password").fill(PASSWORD)  # the right password, still within the minute
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    assert "/login/" in page.url and "Too many failed sign-ins" in page.get_by_role("alert").inner_text()
    assert console_errors == []


def test_a_customer_with_the_right_password_at_the_admin_login_is_not_counted_as_a_failure(client, viewer, wall_clock):
    for _ in range(6):
        response = sign_in(client, "acme-viewer", PASSWORD, path="/admin/login/")
        assert response.status_code == 200 and "staff account" in page_text(response)
        assert "Too many" not in page_text(response)
    assert signed_in(sign_in(client, "acme-viewer", PASSWORD))  # neither the username nor the address is locked
