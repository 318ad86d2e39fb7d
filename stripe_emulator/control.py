"""Fault injection and the request log used by the ``/_emulator/`` control API."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass

MODES = ("429", "500", "500_after_record", "hang")


@dataclass
class Fault:
    path_prefix: str
    mode: str
    method: str | None = None
    count: int = 1
    hang_seconds: float = 10.0
    retry_after: float | None = 1  # a 429's Retry-After header, in seconds; None sends none
    should_retry: bool | None = None  # Stripe-Should-Retry header on the error answer; None sends none

    @classmethod
    def from_json(cls, raw: dict) -> Fault:
        mode = str(raw.get("mode", ""))
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        retry_after = raw.get("retry_after", 1)
        if retry_after is not None:
            retry_after = float(retry_after)
            if retry_after < 0:
                raise ValueError("retry_after must be a number of seconds >= 0, or null")
        should_retry = raw.get("should_retry")
        if should_retry is not None and not isinstance(should_retry, bool):
            raise ValueError("should_retry must be true, false or null")
        return cls(
            path_prefix=str(raw.get("path_prefix") or "/"),
            mode=mode,
            method=(str(raw["method"]).upper() if raw.get("method") else None),
            count=int(raw.get("count", 1)),
            hang_seconds=float(raw.get("hang_seconds", 10.0)),
            retry_after=retry_after,
            should_retry=should_retry,
        )

    def error_headers(self) -> dict[str, str]:
        """Headers of this fault's error answer (429 and 500 modes)."""
        headers = {}
        if self.mode == "429" and self.retry_after is not None:
            seconds = self.retry_after
            # HTTP's delta-seconds are whole; a fraction is kept as a convenience for quick tests.
            headers["Retry-After"] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
        if self.should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if self.should_retry else "false"
        return headers


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def take(self, method: str, path: str) -> Fault | None:
        """Consume one use of the first fault matching this request."""
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix) and fault.method in (None, method):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None


class RequestLog:
    def __init__(self, maxlen: int = 10000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict] = deque(maxlen=maxlen)

    def add(self, entry: dict) -> dict:
        with self._lock:
            self._entries.append(entry)
        return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def list(self) -> list[dict]:
        with self._lock:
            return [dict(e) for e in self._entries]
