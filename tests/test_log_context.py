"""JSON logs through the configured handler (settings.LOGGING's, not pytest's caplog): each record parses and
carries the id of the request or the task that wrote it."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
import subprocess
import sys
import time

import pytest
from celery import shared_task

from billing_portal.log_context import TextFormatter, current_request_id, logging_config, request_id_choose

UUID_HEX = re.compile(r"[0-9a-f]{32}")


@shared_task(name="tests.test_log_context.log_a_line")
def log_a_line(text: str) -> str:
    logging.getLogger("portal.test").warning("task says %s", text)
    return text


@pytest.fixture
def json_log(settings):
    """The portal's logging in JSON, its console handler writing to a buffer; returns the parsed records."""
    logging.config.dictConfig(logging_config(log_format="json", level="INFO", stripe_level="WARNING"))
    (handler,) = logging.getLogger().handlers
    buffer = io.StringIO()
    handler.setStream(buffer)

    def records() -> list[dict]:
        return [json.loads(line) for line in buffer.getvalue().splitlines()]  # every line is one JSON object

    yield records
    logging.config.dictConfig(settings.LOGGING)


def test_a_request_s_records_carry_its_new_id_which_the_response_echoes(client, db, json_log):
    response = client.get("/api/v1/no-such-endpoint")
    logging.getLogger("portal.test").info("after the request")
    assert response.status_code == 404
    request_id = response["X-Request-ID"]
    assert UUID_HEX.fullmatch(request_id)
    not_found, after = json_log()
    assert not_found["logger"] == "django.request" and not_found["level"] == "WARNING"
    assert not_found["message"] == "Not Found: /api/v1/no-such-endpoint"
    assert not_found["request_id"] == request_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", not_found["time"])
    assert after["message"] == "after the request" and "request_id" not in after  # the id ends with the request


def test_a_sane_incoming_request_id_is_kept(client, db, json_log):
    response = client.get("/api/v1/no-such-endpoint", HTTP_X_REQUEST_ID="lb-7f3a:01.2_x")
    assert response["X-Request-ID"] == "lb-7f3a:01.2_x"
    assert json_log()[0]["request_id"] == "lb-7f3a:01.2_x"


@pytest.mark.parametrize("incoming", ["", "has space", "x" * 129, "line\nbreak", "-leading", "é", '{"json":1}'])
def test_an_insane_incoming_request_id_is_replaced(client, db, json_log, incoming):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=incoming)
    assert UUID_HEX.fullmatch(response["X-Request-ID"])
    assert request_id_choose(incoming) != incoming


def test_records_do_not_carry_request_headers(client, db, json_log):
    client.get("/api/v1/no-such-endpoint", HTTP_AUTHORIZATION="Bearer rbp_secret_value", HTTP_COOKIE="sessionid=abc1")
    (record,) = json_log()
    text = json.dumps(record)
    assert "rbp_secret_value" not in text and "abc1" not in text


def test_a_task_s_records_carry_its_id_and_name(json_log):
    result = log_a_line.apply(args=["hello"], task_id="task-id-1")
    assert result.get() == "hello"
    said = [r for r in json_log() if r["logger"] == "portal.test"]
    assert said == [
        {
            "level": "WARNING",
            "logger": "portal.test",
            "message": "task says hello",
            "task_id": "task-id-1",
            "task_name": "tests.test_log_context.log_a_line",
            "time": said[0]["time"],
        }
    ]
    logging.getLogger("portal.test").warning("outside")
    assert "task_id" not in json_log()[-1]  # cleared when the task ended


@pytest.mark.django_db(transaction=True)
def test_a_task_queued_during_a_request_carries_the_request_s_id_on_a_worker(celery_worker_on_redis, json_log):
    token = current_request_id.set("req-queued-1")
    try:
        queued = log_a_line.delay("from a request")
    finally:
        current_request_id.reset(token)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not [r for r in json_log() if r["logger"] == "portal.test"]:
        time.sleep(0.1)
    (said,) = [r for r in json_log() if r["logger"] == "portal.test"]
    assert said["task_id"] == queued.id
    assert said["task_name"] == "tests.test_log_context.log_a_line"
    assert said["request_id"] == "req-queued-1"


def test_the_text_format_puts_the_ids_at_the_end_of_the_line():
    record = logging.LogRecord("portal.test", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.request_id = "r-1"
    line = TextFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line == "INFO portal.test: hello you [request_id=r-1]"


def _settings_in_a_process(**environment) -> subprocess.CompletedProcess:
    code = "import billing_portal.settings as s; print(s.LOG_FORMAT, s.LOGGING['handlers']['console']['formatter'])"
    return subprocess.run(
        [sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin", **environment}, capture_output=True, text=True
    )


def test_log_format_is_json_outside_debug_and_text_in_debug():
    assert _settings_in_a_process(DJANGO_DEBUG="true").stdout.split() == ["text", "text"]
    assert _settings_in_a_process(SECRET_KEY="k" * 40).stdout.split() == ["json", "json"]
    assert _settings_in_a_process(DJANGO_DEBUG="true", LOG_FORMAT="json").stdout.split() == ["json", "json"]


def test_log_format_must_be_json_or_text():
    completed = _settings_in_a_process(DJANGO_DEBUG="true", LOG_FORMAT="xml")
    assert completed.returncode != 0
    assert 'LOG_FORMAT must be "json" or "text", not \'xml\'' in completed.stderr
