"""API keys are compared in constant time and never logged, nor shown in Django's error reports."""

from __future__ import annotations

import hmac
import json
import logging

import pytest
from django.core import mail
from django.urls import path
from django.utils.log import AdminEmailHandler
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from accounts.services import api_key_create, api_keys
from billing_portal.error_reports import CredentialHidingReporterFilter
from billing_portal.urls import urlpatterns as portal_urlpatterns
from resolutions.tests.conftest import NOW

pytestmark = pytest.mark.django_db
CREDITS = "/api/v1/credits"
EVENTS = "/api/v1/conversation-events"
UNAUTHORIZED = {"errors": [{"index": None, "field": None, "message": "Unknown or revoked API key."}]}


class FailingApi(APIView):
    """A view with a bug: a 500 with the caller's key in the request."""

    def get(self, request):
        raise RuntimeError("a bug in a view")


class EchoApi(APIView):
    def get(self, request):
        return Response({"caller": str(request.user)})


urlpatterns = [
    path("api/v1/test-failing", FailingApi.as_view()),
    path("api/v1/test-echo", EchoApi.as_view()),
    *portal_urlpatterns,
]


@pytest.fixture
def now():
    from billing_portal import clock

    with clock.frozen(NOW):
        yield NOW


@pytest.fixture
def raw_key(account, billing_admin, now):
    return api_key_create(account=account, name="bot", actor=billing_admin)[1]


def key_client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    client.raise_request_exception = False  # a 500 is answered as in production
    return client


def test_a_wrong_secret_and_an_unknown_prefix_take_the_same_constant_time_compare(raw_key, monkeypatch):
    rbp, prefix_hex, secret = raw_key.split("_", 2)  # the secret may itself hold "_"
    prefix = f"{rbp}_{prefix_hex}"
    wrong_secret = f"{prefix}_{'A' * len(secret)}"
    unknown_prefix = f"rbp_{'ffffffff' if prefix != 'rbp_ffffffff' else '00000000'}_{secret}"
    compared = []
    real_compare = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", spy)
    answers = [key_client(key).get(CREDITS) for key in (wrong_secret, unknown_prefix)]
    assert [a.status_code for a in answers] == [401, 401]
    assert [json.loads(a.content) for a in answers] == [UNAUTHORIZED, UNAUTHORIZED]  # the same answer
    assert answers[0]["WWW-Authenticate"] == answers[1]["WWW-Authenticate"] == "Bearer"
    # Each went through compare_digest once, with two hashes of the same length (never a plain ==).
    assert len(compared) == 2 and all(len(a) == len(b) == 64 for a, b in compared)
    stored_hash = api_keys.ApiKey.objects.get(prefix=prefix).key_hash
    assert compared[0] == (stored_hash, api_keys._api_key_hash(wrong_secret))
    assert key_client(raw_key).get(CREDITS).status_code == 200


class Everything(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def every_log_record():
    """Every record of every logger at DEBUG (loggers that do not propagate included), formatted as a handler
    would write it, traceback included."""
    handler = Everything()
    loggers = [logging.getLogger()] + [
        logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if logger is logging.getLogger() or not logger.propagate:
            logger.addHandler(handler)
    yield handler
    for logger, level, disabled in saved:
        logger.setLevel(level)
        logger.disabled = disabled
        if handler in logger.handlers:
            logger.removeHandler(handler)


@pytest.fixture
def error_report_mail(settings):
    """Django's error report of each 4xx and 500, as the admins get it by email (text and HTML: local variables
    and request headers)."""
    settings.ADMINS = [("Ops", "ops@example.com")]
    handler = AdminEmailHandler(include_html=True)
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    yield mail.outbox
    logger.removeHandler(handler)


def test_no_log_record_and_no_error_report_holds_the_key(
    raw_key, every_log_record, error_report_mail, settings, monkeypatch
):
    settings.ROOT_URLCONF = __name__
    secret = raw_key.split("_", 2)[2]
    client = key_client(raw_key)
    assert client.get(CREDITS).status_code == 200
    assert client.get("/api/v1/test-echo").status_code == 200
    assert client.post(EVENTS, {"events": [{"id": "e1"}]}, format="json").status_code == 400
    assert key_client(raw_key[:-1] + ("A" if raw_key[-1] != "A" else "B")).get(CREDITS).status_code == 401
    assert client.get("/api/v1/test-failing").status_code == 500

    # A 500 while authenticating: the key is in the authenticator's and the lookup's local variables.
    def broken_hash(value):
        raise RuntimeError("hashing broke")

    monkeypatch.setattr(api_keys, "_api_key_hash", broken_hash)
    assert client.get(CREDITS).status_code == 500

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s")
    logged = [formatter.format(record) for record in every_log_record.records]
    assert any("a bug in a view" in text for text in logged)  # the capture works: the 500s were logged
    assert any("hashing broke" in text for text in logged)
    assert not [text for text in logged if secret[:-1] in text]

    # Django's own handler (text) and ours (HTML too) for each 500; ours also reports the 400 and the 401.
    subjects = sorted(report.subject.split(": ")[1] for report in error_report_mail)
    assert subjects == sorted(["Bad Request", "Unauthorized"] + ["Internal Server Error"] * 4)
    for report in error_report_mail:
        assert secret[:-1] not in report.body  # neither the key nor the wrong one that differs in a character
        if report.alternatives:
            html = report.alternatives[0][0]
            assert "HTTP_AUTHORIZATION" in html and secret[:-1] not in html
            assert "********************" in html  # the header's value, blanked


def test_the_error_report_filter_blanks_key_shaped_values_anywhere(rf, settings):
    settings.DEBUG = False
    key = "rbp_0a1b2c3d_" + "x" * 43
    request = rf.get("/api/v1/credits", HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_X_NOTE=f"see {key}")
    shown = CredentialHidingReporterFilter().get_safe_request_meta(request)
    assert shown["HTTP_AUTHORIZATION"] == CredentialHidingReporterFilter.cleansed_substitute
    assert shown["HTTP_X_NOTE"] == f"see {CredentialHidingReporterFilter.cleansed_substitute}"
    assert settings.DEFAULT_EXCEPTION_REPORTER_FILTER == "billing_portal.error_reports.CredentialHidingReporterFilter"
