"""Scratch PostgreSQL databases and the portal's environment for the benchmarks (shared by ingest.py and
funding.py and metering.py)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import psycopg
from psycopg import sql


def db_url_for(admin_url: str, db: str) -> str:
    return str(psycopg.conninfo.make_conninfo(admin_url, dbname=db))


def django_db_url(admin_url: str, db: str) -> str:
    """DATABASE_URL for django-environ (a URL, not a libpq keyword string)."""
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    user = info.get("user", "postgres")
    password = f":{info['password']}" if info.get("password") else ""
    return f"postgres://{user}{password}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{db}"


def db_recreate(admin_url: str, db: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))


def db_drop(admin_url: str, db: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def portal_env(database_url: str) -> dict[str, str]:
    """The portal's settings for a benchmark process: production-like (DEBUG off, a real key)."""
    env = {k: v for k, v in os.environ.items() if k not in ("BILLING_CLOCK_NOW", "DJANGO_SETTINGS_MODULE")}
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_DEBUG="false",
        SECURE_HTTPS="false",  # plain http on loopback (otherwise every request is redirected to https)
        ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="billing_portal.settings",
    )
    return env


def step(message: str) -> float:
    """Print a timestamped progress line; return a perf_counter start."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
    return time.perf_counter()


def scratch_db_arguments(parser, *, db: str) -> None:
    """The command-line options every benchmark shares: its scratch database, the admin connection, and where
    the results go."""
    parser.add_argument("--db", default=db, help="scratch database, dropped and recreated")
    parser.add_argument(
        "--pg",
        default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="admin connection (creates and drops the scratch database)",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database afterwards")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    parser.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
