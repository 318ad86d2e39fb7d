"""Log records that say which request or task wrote them (docs/operations.md, "Logs").

- `RequestIdMiddleware` takes a sane incoming `X-Request-ID` (a proxy's) or makes a uuid4, keeps it in a
  contextvar for the request and echoes it in the response.
- Celery's task_prerun/task_postrun signals keep the running task's id and name; a task queued during a
  request carries that request's id in a message header, so its records carry it too.
- `LogContextFilter` (on the console handler) copies them onto every record; `logging_config` builds
  LOGGING for `LOG_FORMAT=json` (python-json-logger: time, level, logger, message, the ids and any
  `extra=`) or `text`. Nothing here reads request headers beyond X-Request-ID: no Authorization, cookie or
  key ever reaches a record from this module.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from celery import signals
from django.core.signals import request_finished, request_started
from django.dispatch import receiver

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
current_task_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)
current_task_name: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_name", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_CONTEXT = {"request_id": current_request_id, "task_id": current_task_id, "task_name": current_task_name}


def request_id_choose(incoming: str | None) -> str:
    """The incoming id when it is sane (1-128 letters, digits, `.`, `_`, `:`, `-`), else a new uuid4."""
    if incoming and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = request_id_choose(request.headers.get(REQUEST_ID_HEADER))
        current_request_id.set(request.request_id)  # cleared at request_finished: Django logs a 4xx/5xx after us
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request.request_id
        return response


@receiver(request_started)
@receiver(request_finished)
def _request_id_clear(**kwargs):
    """A request never inherits the previous one's id on the same thread."""
    current_request_id.set(None)


class LogContextFilter(logging.Filter):
    """Adds request_id, task_id and task_name to a record, those that are set."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT.items():
            value = var.get()
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """The DEBUG format: one line a record, the ids at its end."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{name}={getattr(record, name)}" for name in _CONTEXT if getattr(record, name, None))
        if not ids:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{ids}]{newline}{rest}"


def logging_config(*, log_format: str, level: str, stripe_level: str) -> dict:
    """LOGGING for settings: one console handler on the root logger, in the given format."""
    formatters = {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",  # ISO 8601, UTC
        },
        "text": {"()": TextFormatter, "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"log_context": {"()": LogContextFilter}},
        "formatters": {log_format: formatters[log_format]},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["log_context"]}
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"stripe": {"level": stripe_level}},
    }


# --- Celery: the running task's id and name; the queuing request's id ------------------------------
_task_tokens: dict[str, list[tuple[contextvars.ContextVar, contextvars.Token]]] = {}


@signals.before_task_publish.connect
def _request_id_to_message(headers=None, **kwargs):
    queued_by = current_request_id.get()
    if queued_by is not None and headers is not None:
        headers.setdefault("request_id", queued_by)


@signals.task_prerun.connect
def _task_started(task_id=None, task=None, **kwargs):
    tokens = [(current_task_id, current_task_id.set(task_id)), (current_task_name, current_task_name.set(task.name))]
    queued_by = getattr(task.request, "request_id", None)
    if isinstance(queued_by, str) and _SANE_REQUEST_ID.fullmatch(queued_by):
        tokens.append((current_request_id, current_request_id.set(queued_by)))
    _task_tokens[task_id] = tokens


@signals.task_postrun.connect
def _task_finished(task_id=None, **kwargs):
    for var, token in reversed(_task_tokens.pop(task_id, [])):
        try:
            var.reset(token)
        except ValueError:  # set in another context (cannot happen in Celery's pools): clear it instead
            var.set(None)
