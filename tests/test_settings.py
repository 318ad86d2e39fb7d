"""Settings refuse to start a non-debug process without a real SECRET_KEY."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_django_setup(**env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DJANGO_DEBUG")}
    env.update({"DJANGO_SETTINGS_MODULE": "billing_portal.settings", **env_overrides})
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_refuses_to_start_without_secret_key_when_debug_is_off():
    result = run_django_setup()
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


@pytest.mark.parametrize("weak", ["short", "django-insecure-abcdefghijklmnopqrstuvwxyz0123456789"])
def test_refuses_a_weak_secret_key_when_debug_is_off(weak):
    result = run_django_setup(SECRET_KEY=weak)
    assert result.returncode != 0 and "SECRET_KEY is too weak" in result.stderr


def test_starts_with_a_real_key_and_debug_off():
    result = run_django_setup(SECRET_KEY="k" * 20 + "9f8a7s6d5f4g3h2j1k0l")
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


def test_debug_may_run_with_the_development_key():
    result = run_django_setup(DJANGO_DEBUG="true")
    assert result.returncode == 0, result.stderr


def test_stripe_api_version_is_pinned():
    from django.conf import settings

    assert settings.STRIPE_API_VERSION == "2026-08-26.dahlia"


def test_refuses_an_unknown_event_evaluation_mode():
    result = run_django_setup(DJANGO_DEBUG="true", EVENT_EVALUATION="later")
    assert result.returncode != 0 and 'EVENT_EVALUATION must be "deferred" or "inline"' in result.stderr
