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

    @classmethod
    def from_json(cls, raw: dict) -> Fault:
        mode = str(raw.get("mode", ""))
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        return cls(
            path_prefix=str(raw.get("path_prefix") or "/"),
            mode=mode,
            method=(str(raw["method"]).upper() if raw.get("method") else None),
            count=int(raw.get("count", 1)),
            hang_seconds=float(raw.get("hang_seconds", 10.0)),
        )


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
