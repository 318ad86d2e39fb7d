"""Signed webhook delivery from a background thread, with retries, delay and duplication knobs."""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections import deque

from .store import Store

DEFAULT_CLI_EVENTS = ("customer.*", "invoice.*")


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value for ``payload``."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def matches(patterns, event_type: str) -> bool:
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


class WebhookDispatcher:
    def __init__(
        self,
        store: Store,
        *,
        url: str | None = None,
        secret: str | None = None,
        events=DEFAULT_CLI_EVENTS,
        timeout: float = 5.0,
        max_attempts: int = 4,
        backoff: tuple[float, ...] = (0.25, 0.5, 1.0),
    ) -> None:
        self.store = store
        self.cli_url, self.cli_secret, self.cli_events = url, secret, tuple(events)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.delay_seconds = 0.0
        self.duplicate = False
        self.log: deque[dict] = deque(maxlen=2000)
        self._heap: list = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._generation = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="stripe-emulator-webhooks", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- configuration
    def configure(self, options: dict) -> dict:
        if "delay_seconds" in options:
            self.delay_seconds = float(options["delay_seconds"] or 0)
        if "duplicate" in options:
            self.duplicate = bool(options["duplicate"])
        if "max_attempts" in options:
            self.max_attempts = max(1, int(options["max_attempts"]))
        return self.config()

    def config(self) -> dict:
        return {
            "delay_seconds": self.delay_seconds,
            "duplicate": self.duplicate,
            "max_attempts": self.max_attempts,
            "url": self.cli_url,
        }

    def reset(self) -> None:
        with self._cond:
            self._heap.clear()
            self._generation += 1
            self.log.clear()
            self.delay_seconds, self.duplicate = 0.0, False
            self._cond.notify_all()

    # ---------------------------------------------------------------- enqueue
    def targets(self, event: dict) -> list[tuple[str, str, str | None]]:
        found = []
        for endpoint in self.store.all("webhook_endpoint", newest_first=False):
            if endpoint["status"] == "enabled" and matches(endpoint["enabled_events"], event["type"]):
                found.append((endpoint["url"], endpoint["_secret"], endpoint["id"]))
        if self.cli_url and self.cli_secret and matches(self.cli_events, event["type"]):
            found.append((self.cli_url, self.cli_secret, None))
        return found

    def __call__(self, event: dict) -> int:
        """Store hook: schedule deliveries of ``event``; returns how many endpoints will receive it."""
        targets = self.targets(event)
        event["pending_webhooks"] = len(targets)
        if not targets:
            return 0
        payload = json.dumps(event, indent=2)
        due = time.monotonic() + self.delay_seconds
        with self._cond:
            for url, secret, endpoint_id in targets:
                for copy_no in range(2 if self.duplicate else 1):
                    delivery = {
                        "event": event["id"],
                        "type": event["type"],
                        "url": url,
                        "endpoint": endpoint_id,
                        "copy": copy_no,
                        "attempts": 0,
                        "status": None,
                        "error": None,
                        "delivered": False,
                        "_payload": payload,
                        "_secret": secret,
                        "_generation": self._generation,
                    }
                    self.log.append(delivery)
                    heapq.heappush(self._heap, (due, next(self._seq), delivery))
            self._cond.notify_all()
        return len(targets)

    # ---------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = None if not self._heap else max(0.0, self._heap[0][0] - time.monotonic())
                    self._cond.wait(wait)
                if self._stopping:
                    return
                _, _, delivery = heapq.heappop(self._heap)
                if delivery["_generation"] != self._generation:
                    continue
                self._in_flight += 1
            try:
                self._attempt(delivery)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _attempt(self, delivery: dict) -> None:
        delivery["attempts"] += 1
        body = delivery["_payload"].encode()
        request = urllib.request.Request(
            delivery["url"],
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "Stripe-Signature": sign(delivery["_payload"], delivery["_secret"]),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                delivery["status"] = response.status
                delivery["delivered"] = 200 <= response.status < 300
        except urllib.error.HTTPError as exc:
            delivery["status"], delivery["error"] = exc.code, f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            delivery["error"] = f"{type(exc).__name__}: {exc}"
        if delivery["delivered"] or delivery["attempts"] >= self.max_attempts:
            return
        pause = self.backoff[min(delivery["attempts"] - 1, len(self.backoff) - 1)]
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + pause, next(self._seq), delivery))
            self._cond.notify_all()

    # ---------------------------------------------------------------- helpers
    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued or in flight (tests)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def public_log(self) -> list[dict]:
        with self._cond:
            return [{k: v for k, v in d.items() if not k.startswith("_")} for d in self.log]

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=2)
