"""Locks held across Stripe calls, where no transaction may be open (so no row lock can be): "only one of
this at a time", for the billing cycle and for each customer's meter reporting.

`session_lock(name, number)` yields True while this process holds the lock, False (holding nothing) when
someone else does: callers skip their work rather than wait. On PostgreSQL it is a session-level advisory
lock (the two-int4 key space: the name's hash and the number) held on a connection of its own, so nothing
the block does to Django's connection (an error, a Celery task boundary) can drop or leak it; elsewhere
(SQLite, the zero-setup demo) a process lock plus a file lock in var/, one per database file, name and number.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

_process_locks: dict[tuple[str, int], threading.Lock] = {}
_process_locks_guard = threading.Lock()


def _name_key(name: str) -> int:
    """The name as a signed 32-bit number (pg_try_advisory_lock(int4, int4))."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


@contextlib.contextmanager
def session_lock(name: str, number: int = 0) -> Iterator[bool]:
    """Hold the lock `name`/`number` for the block; yields whether it was acquired (see the module)."""
    if not -(2**31) <= number < 2**31:
        raise ValueError(f"session_lock numbers are 32-bit: {number}")
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.vendor == "postgresql":
        with _advisory_lock(connection, _name_key(name), number) as acquired:
            yield acquired
    else:
        with _local_lock(connection.settings_dict.get("NAME"), name, number) as acquired:
            yield acquired


@contextlib.contextmanager
def _advisory_lock(connection, key: int, number: int) -> Iterator[bool]:
    lock_connection = connection.copy()
    try:
        with lock_connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [key, number])
            acquired = bool(cursor.fetchone()[0])
        try:
            yield acquired
        finally:
            if acquired:
                with lock_connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [key, number])
    finally:
        lock_connection.close()  # closing the session releases its advisory locks in any case


@contextlib.contextmanager
def _local_lock(database_name, name: str, number: int) -> Iterator[bool]:
    with _process_locks_guard:
        lock = _process_locks.setdefault((name, number), threading.Lock())
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        with _file_lock(database_name, name, number) as acquired:
            yield acquired
    finally:
        lock.release()


@contextlib.contextmanager
def _file_lock(database_name, name: str, number: int) -> Iterator[bool]:
    """Across processes on one machine (the demo's worker and a `billing_tick`). In-memory databases live
    in one process: the process lock is enough."""
    db = str(database_name or "")
    try:
        import fcntl
    except ImportError:  # not on POSIX: the process lock only
        fcntl = None
    if fcntl is None or not db or db == ":memory:" or "mode=memory" in db:
        yield True
        return
    var_dir = Path(settings.BASE_DIR) / "var" / "locks"
    var_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(str(Path(db).resolve()).encode()).hexdigest()[:12]
    with open(var_dir / f"{name}-{number}-{digest}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
