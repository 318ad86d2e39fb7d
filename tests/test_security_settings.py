"""Secure by default outside DEBUG: TLS assumed (Secure, HttpOnly cookies, HSTS, https redirect) unless
SECURE_HTTPS=false says otherwise; a proxy's X-Forwarded-Proto believed only when SECURE_PROXY_SSL_HEADER_TRUSTED
says so; `check --deploy` clean. Each case starts a process with its own environment, as production would."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "billing.example.com,testserver",
    "STRIPE_SECRET_KEY": "sk_live_0production0like0key0000000000",
    "STRIPE_API_BASE": "https://api.stripe.com",
    "STRIPE_WEBHOOK_SECRET": "whsec_0production0like",
}

# Requests through the whole middleware stack in a fresh process; prints what came back as JSON.
PROBE = """
import json, django
django.setup()
from django.conf import settings
# No collectstatic here: plain static storage instead of the manifest (what is probed is not about static files).
plain = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
settings.STORAGES = {**settings.STORAGES, "staticfiles": plain}
from django.test import Client

def seen(response):
    cookies = {name: {"secure": bool(c["secure"]), "httponly": bool(c["httponly"]), "samesite": c["samesite"]}
               for name, c in response.cookies.items()}
    return {"status": response.status_code, "headers": dict(response.headers), "cookies": cookies}

client = Client()
print(json.dumps({
    "http": seen(client.get("/login/")),
    "https": seen(client.get("/login/", secure=True)),
    "forwarded": seen(client.get("/login/", headers={"X-Forwarded-Proto": "https"})),
    "healthz": seen(client.get("/healthz")),
    "readyz": seen(client.get("/readyz")),
    "session_cookie": [
        settings.SESSION_COOKIE_SECURE, settings.SESSION_COOKIE_HTTPONLY, settings.SESSION_COOKIE_SAMESITE
    ],
}))
"""


def environment(**overrides) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_", "STRIPE_", "DJANGO_")) and k not in ("SECRET_KEY", "ALLOWED_HOSTS")
    }
    env.update({"DJANGO_SETTINGS_MODULE": "billing_portal.settings", **PRODUCTION, **overrides})
    return env


def probe(**overrides) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=environment(**overrides),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_deploy(**overrides) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=environment(**overrides), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_check_deploy_gives_no_warning_with_production_settings():
    result = check_deploy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_warns_when_tls_is_turned_off():
    # the way out is explicit, and the deploy check still says what it costs
    result = check_deploy(SECURE_HTTPS="false")
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr, result.stderr


def test_outside_debug_tls_is_the_default():
    seen = probe()
    assert seen["http"]["status"] == 301
    assert seen["http"]["headers"]["Location"] == "https://testserver/login/"
    https = seen["https"]
    assert https["status"] == 200
    assert https["headers"]["Strict-Transport-Security"] == "max-age=31536000"  # a year; no subdomains, no preload
    assert https["headers"]["X-Content-Type-Options"] == "nosniff"
    assert https["headers"]["Referrer-Policy"] == "same-origin"
    assert https["headers"]["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in https["headers"]["Content-Security-Policy"]
    assert https["cookies"]["csrftoken"] == {"secure": True, "httponly": True, "samesite": "Lax"}
    assert seen["session_cookie"] == [True, True, "Lax"]


def test_health_probes_are_not_redirected_to_https():
    seen = probe()
    assert seen["healthz"]["status"] != 301 and seen["readyz"]["status"] != 301
    assert seen["http"]["status"] == 301  # while a page is


def test_x_forwarded_proto_is_believed_only_when_the_proxy_is_trusted():
    assert probe()["forwarded"]["status"] == 301  # anyone can send the header: not believed by default
    trusted = probe(SECURE_PROXY_SSL_HEADER_TRUSTED="true")
    assert trusted["forwarded"]["status"] == 200
    assert trusted["http"]["status"] == 301  # plain http without the header is still redirected


def test_running_without_tls_takes_an_explicit_setting():
    seen = probe(SECURE_HTTPS="false")
    assert seen["http"]["status"] == 200
    assert "Strict-Transport-Security" not in seen["http"]["headers"]
    assert seen["http"]["cookies"]["csrftoken"]["secure"] is False
    assert seen["http"]["cookies"]["csrftoken"]["httponly"] is True  # the rest stays on
    assert "Content-Security-Policy" in seen["http"]["headers"]


def test_hsts_subdomains_and_preload_only_when_asked():
    seen = probe(SECURE_HSTS_INCLUDE_SUBDOMAINS="true", SECURE_HSTS_PRELOAD="true")
    assert seen["https"]["headers"]["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


def test_debug_serves_plain_http():
    seen = probe(DJANGO_DEBUG="true")
    assert seen["http"]["status"] == 200
    assert "Content-Security-Policy" in seen["http"]["headers"]  # the browser tests see violations in DEBUG too
