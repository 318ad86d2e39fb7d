"""What the browser tests share beyond conftest's fixtures (`page`, `console_errors`, `screenshot`)."""

from __future__ import annotations

from conftest import PASSWORD


def log_in(page, base_url: str, username: str) -> None:
    """Sign in through the login form, as a person would, and wait until the portal has sent the user on to
    the page of their role."""
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login/" not in url)
