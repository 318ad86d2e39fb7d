"""Lets ``pytest stripe_emulator -p no:django`` run although the project's addopts name pytest-django options.

The emulator's tests need no Django. When pytest-django is disabled, the options of it that the project's
``addopts`` carries (``--reuse-db`` and friends) and its ini keys are registered here as no-ops; when
pytest-django is active it owns them and nothing is registered.
"""

from __future__ import annotations

_DJANGO_FLAGS = ("--reuse-db", "--create-db", "--nomigrations", "--no-migrations", "--migrations")
_DJANGO_INI = ("DJANGO_SETTINGS_MODULE", "DJANGO_CONFIGURATION")


def pytest_addoption(parser, pluginmanager):
    if pluginmanager.has_plugin("django"):
        return
    for flag in _DJANGO_FLAGS:
        parser.addoption(flag, action="store_true", default=False, help="ignored: pytest-django is disabled")
    for key in _DJANGO_INI:
        parser.addini(key, "ignored: pytest-django is disabled")
