"""In-memory state of the emulated Stripe account, with optional JSON persistence."""

from __future__ import annotations

import copy
import json
import os
import secrets
import string
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

API_VERSION = "2026-08-26.dahlia"
KINDS = (
    "customer",
    "product",
    "price",
    "subscription",
    "subscription_item",
    "invoiceitem",
    "invoice",
    "billing.meter",
    "webhook_endpoint",
    "event",
)
_ALPHABET = string.ascii_letters + string.digits
ACCOUNT_ID = "acct_1EmuLat0rStr1pe0"


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


class Store:
    """All objects of the emulated account. Guard every access with ``store.lock``."""

    def __init__(self, state_file: str | os.PathLike | None = None) -> None:
        self.lock = threading.RLock()
        self.state_file = Path(state_file) if state_file else None
        self.frozen_time: int | None = None
        self.on_event: Callable[[dict], int] | None = None
        self._clear()
        if self.state_file and self.state_file.exists():
            self.load()

    # ------------------------------------------------------------------ lifecycle
    def _clear(self) -> None:
        self.data: dict[str, dict[str, dict]] = {kind: {} for kind in KINDS}
        self.meter_events: dict[str, dict] = {}  # identifier -> event
        self.idempotency: dict[str, dict] = {}
        self.invoice_numbers: dict[str, int] = {}

    def reset(self) -> None:
        with self.lock:
            self._clear()
            self.frozen_time = None
            self.save()

    def snapshot(self) -> dict:
        return {
            "version": 1,
            "frozen_time": self.frozen_time,
            "data": self.data,
            "meter_events": self.meter_events,
            "idempotency": self.idempotency,
            "invoice_numbers": self.invoice_numbers,
        }

    def save(self) -> None:
        if not self.state_file:
            return
        with self.lock:
            payload = json.dumps(self.snapshot(), separators=(",", ":"))
            directory = self.state_file.parent
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".stripe-emulator-", dir=directory)
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(payload)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.state_file)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise

    def load(self) -> None:
        assert self.state_file is not None
        raw = json.loads(self.state_file.read_text() or "{}")
        self._clear()
        for kind, objs in raw.get("data", {}).items():
            self.data.setdefault(kind, {}).update(objs)
        self.meter_events = raw.get("meter_events", {})
        self.idempotency = raw.get("idempotency", {})
        self.invoice_numbers = raw.get("invoice_numbers", {})
        self.frozen_time = raw.get("frozen_time")

    # ------------------------------------------------------------------ clock and ids
    def now(self) -> int:
        return int(self.frozen_time) if self.frozen_time is not None else int(time.time())

    @staticmethod
    def new_id(prefix: str, length: int = 24) -> str:
        return f"{prefix}_{random_token(length)}"

    # ------------------------------------------------------------------ objects
    def get(self, kind: str, obj_id: str) -> dict | None:
        return self.data[kind].get(obj_id) if isinstance(obj_id, str) else None

    def put(self, kind: str, obj: dict) -> dict:
        self.data[kind][obj["id"]] = obj
        return obj

    def all(self, kind: str, *, newest_first: bool = True) -> list[dict]:
        items = list(self.data[kind].values())
        return items[::-1] if newest_first else items

    # ------------------------------------------------------------------ events
    def record_event(
        self,
        event_type: str,
        obj: dict,
        *,
        previous_attributes: dict | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict:
        data: dict = {"object": copy.deepcopy(obj)}
        if previous_attributes:
            data["previous_attributes"] = copy.deepcopy(previous_attributes)
        event = {
            "id": self.new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 0,
            "request": {"id": request_id, "idempotency_key": idempotency_key},
            "type": event_type,
        }
        self.put("event", event)
        if self.on_event is not None:
            event["pending_webhooks"] = self.on_event(event)
        return event
