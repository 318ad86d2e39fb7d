"""In-process profile of the ingestion endpoint, run by bench/ingest.py after its timed run.

It runs with the portal's environment (DATABASE_URL of the scratch database, SECRET_KEY, ...) and
BENCH_API_KEY, and posts each body of --bodies (one JSON batch per line) through Django's full request stack
(middleware, DRF, the view) with django.test.Client, one at a time. Two modes, printed as Markdown:

- phases: wall time per batch of the portal's steps, measured by wrapping them (no sampling, no profiler
  overhead), every SQL statement by the portal line that sent it, the COMMIT, and garbage-collector pauses;
- cprofile: cProfile's top functions (the fallback when py-spy is not installed). cProfile inflates
  CPU-bound Python against waits on PostgreSQL: read its shares with that in mind.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import importlib
import io
import os
import pstats
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_PATH = "/api/v1/conversation-events"
TABLE = re.compile(r'(?:FROM|INTO|UPDATE)\s+"?(\w+)', re.IGNORECASE)

# (module, attribute, label, depth): the steps timed in "phases" mode, outermost first. A missing one is reported.
PHASES = [
    ("rest_framework.parsers", "JSONParser.parse", "JSON parse of the body (DRF JSONParser)", 0),
    ("accounts.authentication", "api_key_authenticate", "API key authentication", 0),
    ("resolutions.apis", "events_parse", "events_parse (validation)", 0),
    ("resolutions.apis", "conversation_events_ingest", "conversation_events_ingest (the transaction)", 0),
    ("resolutions.sql", "events_store", "events_store (INSERT ... ON CONFLICT)", 1),
    ("resolutions.services.evaluation", "conversations_evaluate", "conversations_evaluate", 1),
    ("resolutions.services.evaluation", "conversation_evaluate", "conversation_evaluate (pure rules)", 2),
    ("resolutions.services.evaluation", "rollups_adjust", "rollups_adjust (daily usage)", 2),
]


def _portal_caller() -> str:
    """file:line of the innermost portal frame (not Django, not this file) on the stack."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(str(ROOT)) and "/.venv/" not in path and "/bench/" not in path:
            return f"{Path(path).relative_to(ROOT)}:{frame.f_lineno}"
        frame = frame.f_back
    return "(outside portal code)"


class Phases:
    def __init__(self):
        self.wall: dict[str, float] = defaultdict(float)
        self.sql: dict[str, list] = defaultdict(lambda: [0, 0.0])
        self.gc = [0.0, 0, 0]  # seconds, collections, generation-2 collections
        self._gc_started = 0.0
        self.missing: list[str] = []

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.wall[label] += time.perf_counter() - started

        setattr(owner, name, timed)

    def install(self, connection) -> None:
        for module_name, path, label, _ in PHASES:
            owner = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent, None)
            if owner is None or not hasattr(owner, name):
                self.missing.append(f"{module_name}.{path}")
            else:
                self.wrap(owner, name, label)
        self.wrap(connection, "commit", "COMMIT")
        connection.execute_wrappers.append(self.sql_timed)
        gc.callbacks.append(self.gc_timed)

    def sql_timed(self, execute, sql, params, many, context):
        table = TABLE.search(sql)
        key = f"{_portal_caller()} {sql.split(None, 1)[0].upper()} {table[1] if table else ''}"
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.sql[key][0] += 1
            self.sql[key][1] += time.perf_counter() - started

    def gc_timed(self, phase, info) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc[0] += time.perf_counter() - self._gc_started
            self.gc[1] += 1
            self.gc[2] += info.get("generation") == 2


def _client():
    from django.test import Client

    client = Client(headers={"authorization": f"Bearer {os.environ['BENCH_API_KEY']}", "host": "127.0.0.1"})
    warm = client.post(API_PATH, data=b'{"events": []}', content_type="application/json")
    if warm.status_code != 400:
        raise SystemExit(f"warm-up answered {warm.status_code}: {warm.content[:300]!r}")
    return client


def _post(client, body: bytes) -> None:
    response = client.post(API_PATH, data=body, content_type="application/json")
    if response.status_code != 202:
        raise SystemExit(f"answered {response.status_code}: {response.content[:300]!r}")


def run_phases(bodies: list[bytes]) -> None:
    from django.db import connection

    client = _client()
    phases = Phases()
    phases.install(connection)
    wall = 0.0
    for body in bodies:
        started = time.perf_counter()
        _post(client, body)
        wall += time.perf_counter() - started
    n = len(bodies)

    def ms(seconds: float) -> str:
        return f"{seconds / n * 1000:,.1f}"

    print(
        f"In-process phases (django.test.Client, full middleware and DRF stack, no profiler), {n} more batches "
        f"posted one at a time: {wall / n * 1000:,.0f} ms per batch.\n"
    )
    print("| step (nested steps indented; times include what they call) | ms/batch | share |\n| --- | ---: | ---: |")
    for _, _, label, depth in PHASES:
        if label in phases.wall:
            print(f"| {'. . ' * depth}{label} | {ms(phases.wall[label])} | {phases.wall[label] / wall:.1%} |")
    commit = phases.wall["COMMIT"]
    print(f"| . . COMMIT (at the end of the transaction) | {ms(commit)} | {commit / wall:.1%} |")
    print(
        f"| garbage-collector pauses, anywhere ({phases.gc[1] / n:.1f} collections, {phases.gc[2] / n:.2f} full, "
        f"per batch) | {ms(phases.gc[0])} | {phases.gc[0] / wall:.1%} |"
    )
    print("\n| SQL statement, by the portal line that sent it (COPY not included) | calls/batch | ms/batch |")
    print("| --- | ---: | ---: |")
    for key, (calls, seconds) in sorted(phases.sql.items(), key=lambda kv: -kv[1][1]):
        print(f"| {key} | {calls / n:.1f} | {ms(seconds)} |")
    if phases.missing:
        print(f"\nNot timed (not found in the portal's code any more): {', '.join(phases.missing)}.")


def run_cprofile(bodies: list[bytes], top: int = 14) -> None:
    client = _client()
    profiler = cProfile.Profile()
    wall = 0.0
    for body in bodies:
        started = time.perf_counter()
        profiler.enable()
        _post(client, body)
        profiler.disable()
        wall += time.perf_counter() - started
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = max(stats.total_tt, 1e-9)
    batch_ms = wall / len(bodies) * 1000
    rows = [(cum, tot, path, line, func) for (path, line, func), (_, _, tot, cum, _) in stats.stats.items()]

    def where(path: str, line: int, func: str) -> str:
        return f"{func} ({path.split('site-packages/', 1)[-1].replace(str(ROOT) + '/', '')}:{line})"

    def portal(path: str) -> bool:
        return path.startswith(str(ROOT)) and "/.venv/" not in path and "/bench/" not in path

    print(
        f"Profile: cProfile in-process (django.test.Client, full middleware and DRF stack), {len(bodies)} batches "
        f"posted one at a time: {batch_ms:,.0f} ms per batch under the profiler (its overhead inflates Python)."
    )
    print("\n| portal function (cumulative) | share | ms/batch |\n| --- | ---: | ---: |")
    for cum, _, path, line, func in sorted((r for r in rows if portal(r[2])), reverse=True)[:top]:
        print(f"| {where(path, line, func)} | {cum / total:.1%} | {cum / total * batch_ms:,.0f} |")
    print("\n| function (self time) | share | ms/batch |\n| --- | ---: | ---: |")
    for _, tot, path, line, func in sorted(rows, key=lambda r: r[1], reverse=True)[:10]:
        print(f"| {where(path, line, func)} | {tot / total:.1%} | {tot / total * batch_ms:,.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", type=Path, required=True, help="one JSON body per line")
    parser.add_argument("--mode", choices=("phases", "cprofile"), default="phases")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_portal.settings")
    import django

    django.setup()
    bodies = [line for line in args.bodies.read_bytes().splitlines() if line.strip()]
    if args.mode == "phases":
        run_phases(bodies)
    else:
        run_cprofile(bodies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
