"""Hot statements written twice: raw SQL for PostgreSQL beside the ORM version it replaces.

`@twin(orm_version)` on the SQL version makes one function that runs the SQL on PostgreSQL and the ORM
elsewhere (SQLite, the zero-setup demo); both stay reachable as `.sql` and `.orm`, so one parity test
per statement runs both on PostgreSQL against the same data and compares what they return and write.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.db import connection

TWINS: list[Callable] = []


def twin(orm: Callable) -> Callable[[Callable], Callable]:
    def decorate(sql: Callable) -> Callable:
        @functools.wraps(sql)
        def run(*args, **kwargs):
            return (sql if connection.vendor == "postgresql" else orm)(*args, **kwargs)

        run.sql, run.orm = sql, orm  # type: ignore[attr-defined]
        TWINS.append(run)
        return run

    return decorate
