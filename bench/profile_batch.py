"""cProfile of the ingestion endpoint in-process: the fallback of bench/ingest.py when py-spy is missing.

Run by ingest.py with the portal's environment (DATABASE_URL of the scratch database, SECRET_KEY, ...) and
BENCH_API_KEY; posts each body of --bodies (one JSON batch per line) through Django's full request stack
(middleware, DRF, the view) with django.test.Client, one at a time, and prints the top costs as Markdown.
cProfile counts CPU-bound Python more heavily than waits on PostgreSQL, so read shares with that in mind.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_PATH = "/api/v1/conversation-events"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", type=Path, required=True, help="one JSON body per line")
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_portal.settings")
    import django

    django.setup()
    from django.test import Client

    client = Client(headers={"authorization": f"Bearer {os.environ['BENCH_API_KEY']}", "host": "127.0.0.1"})
    warm = client.post(API_PATH, data=b'{"events": []}', content_type="application/json")
    if warm.status_code != 400:
        raise SystemExit(f"warm-up answered {warm.status_code}: {warm.content[:300]!r}")
    bodies = [line for line in args.bodies.read_bytes().splitlines() if line.strip()]
    profiler = cProfile.Profile()
    wall = 0.0
    for body in bodies:
        started = time.perf_counter()
        profiler.enable()
        response = client.post(API_PATH, data=body, content_type="application/json")
        profiler.disable()
        wall += time.perf_counter() - started
        if response.status_code != 202:
            raise SystemExit(f"answered {response.status_code}: {response.content[:300]!r}")

    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = max(stats.total_tt, 1e-9)
    batch_ms = wall / len(bodies) * 1000
    rows = []
    for (path, line, func), (_, calls, tottime, cumtime, _) in stats.stats.items():
        rows.append((cumtime, tottime, calls, path, line, func))

    def where(path: str, line: int, func: str) -> str:
        short = path.split("site-packages/", 1)[-1].replace(str(ROOT) + "/", "")
        return f"{func} ({short}:{line})"

    def portal(path: str) -> bool:
        return path.startswith(str(ROOT)) and "/.venv/" not in path and "/bench/" not in path

    print(
        f"Profile: cProfile in-process (django.test.Client, full middleware and DRF stack), {len(bodies)} batches "
        f"posted one at a time: {batch_ms:,.0f} ms per batch under the profiler (its overhead inflates Python)."
    )
    print("\n| portal function (cumulative) | share | ms/batch |\n| --- | ---: | ---: |")
    for cum, _, _, path, line, func in sorted((r for r in rows if portal(r[3])), reverse=True)[: args.top]:
        print(f"| {where(path, line, func)} | {cum / total:.1%} | {cum / total * batch_ms:,.0f} |")
    print("\n| function (self time) | share | ms/batch |\n| --- | ---: | ---: |")
    for _, tot, _, path, line, func in sorted(rows, key=lambda r: r[1], reverse=True)[:10]:
        print(f"| {where(path, line, func)} | {tot / total:.1%} | {tot / total * batch_ms:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
