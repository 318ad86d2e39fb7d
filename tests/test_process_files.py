"""The Procfile and the systemd units run what they say: each Procfile command is started as written (a free
port, a temporary schedule file) and must come up; the units pass `systemd-analyze verify` and start the same
programs with the same app paths."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
UNITS = ROOT / "deploy" / "systemd"


def procfile() -> dict[str, list[str]]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        entries[name.strip()] = shlex.split(command)
    return entries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    """The test database, as a URL for a child process."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def child_environment(**extra) -> dict[str, str]:
    from django.conf import settings

    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "SECRET_KEY": "process-file-test-key-0123456789abcdefghijklmnop",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_FORMAT": "json",
        "STRIPE_API_BASE": "http://127.0.0.1:9",  # nothing is called: nothing may reach a real service
        **extra,
    }


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    program = BIN / argv[0] if (BIN / argv[0]).exists() else argv[0]
    return subprocess.Popen(
        [str(program), *argv[1:]], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def json_records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def wait_for_line(process: subprocess.Popen, wanted: str, timeout: float = 60) -> list[str]:
    """Read the process's output until a line contains `wanted`; returns the lines read."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if wanted in line:
            return lines
    stop(process)
    raise AssertionError(f"{wanted!r} not seen; output:\n{''.join(lines)[-3000:]}")


def test_the_procfile_has_release_web_worker_and_beat():
    entries = procfile()
    assert set(entries) == {"release", "web", "worker", "beat"}
    assert entries["release"] == ["python", "manage.py", "migrate", "--no-input"]
    assert entries["worker"][:4] == ["celery", "-A", "billing_portal", "worker"]
    assert entries["beat"][:4] == ["celery", "-A", "billing_portal", "beat"]


@pytest.mark.django_db
def test_release_runs_migrate_and_no_migration_is_missing():
    _python, _manage, command, *arguments = procfile()["release"]
    assert command == "migrate" and "--no-input" in arguments  # never waits for an answer on a deploy
    # On a migrated database the release step has nothing left to apply ...
    plan = StringIO()
    call_command(command, *arguments, "--plan", stdout=plan)
    assert "No planned migration operations." in plan.getvalue(), plan.getvalue()
    # ... and no model change lacks its migration (the release would not apply it).
    changes = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=changes)
    assert "No changes detected" in changes.getvalue(), changes.getvalue()


@pytest.mark.django_db
def test_web_serves_healthz_through_gunicorn_with_its_config():
    port = free_port()
    web = start(procfile()["web"], child_environment(PORT=str(port), WEB_CONCURRENCY="1"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    status, body, request_id = answer.status, json.load(answer), answer.headers["X-Request-ID"]
                break
            except OSError:
                if web.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    finally:
        output = stop(web)
    assert (status, body) == (200, {"status": "ok"})
    access = [line for line in output.splitlines() if line.endswith(f"request_id={request_id}")]
    assert len(access) == 1 and '"GET /healthz" 200 ' in access[0], output[-2000:]
    assert "Booting worker" in output and "Control socket" not in output


@pytest.mark.django_db
def test_worker_starts_and_logs_json(tmp_path):
    worker = start([*procfile()["worker"], "--concurrency", "1"], child_environment())
    read = []
    try:
        read = wait_for_line(worker, " ready.")
    finally:
        output = "".join(read) + stop(worker)
    ready = [r for r in json_records(output) if r["message"].endswith(" ready.")]
    assert ready and ready[0]["logger"] == "celery.apps.worker" and ready[0]["level"] == "INFO"
    for queue in ("celery", "events", "stripe", "cycle", "simulations"):
        assert f".> {queue} " in output  # the banner: a worker without -Q consumes every queue


@pytest.mark.django_db
def test_beat_starts_and_logs_json(tmp_path):
    argv = procfile()["beat"]
    argv[argv.index("--schedule") + 1] = str(tmp_path / "celerybeat-schedule")
    beat = start(argv, child_environment())
    read = []
    try:
        read = wait_for_line(beat, "beat: Starting")
    finally:
        output = "".join(read) + stop(beat)
    (starting,) = [r for r in json_records(output) if r["message"].startswith("beat: Starting")]
    assert starting["logger"] == "celery.beat"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNITS / name)
    return parser


def test_the_units_start_the_procfile_s_programs():
    entries = procfile()
    web = shlex.split(unit("portal-web.service")["Service"]["ExecStart"])
    assert Path(web[0]).name == "gunicorn" and web[1:] == entries["web"][1:]
    worker = shlex.split(unit("portal-worker@.service")["Service"]["ExecStart"])
    assert Path(worker[0]).name == "celery" and worker[1:5] == entries["worker"][1:5] and "--queues" in worker
    beat = shlex.split(unit("portal-beat.service")["Service"]["ExecStart"])
    assert Path(beat[0]).name == "celery" and beat[1:4] == entries["beat"][1:4]
    for name in ("portal-web.service", "portal-worker@.service", "portal-beat.service"):
        assert unit(name)["Service"]["EnvironmentFile"] == "/etc/portal/portal.env"
    example = (UNITS / "portal.env.example").read_text()
    assert "SECRET_KEY=" in example and "DATABASE_URL=postgres://" in example


def test_the_env_example_shares_the_throttle_counters_and_names_its_proxy():
    """Several gunicorn workers behind a proxy: the sign-in and API counters must be shared (CACHE_URL on Redis),
    and the client address must come from X-Forwarded-For (TRUSTED_PROXY_COUNT), or every user signs in from the
    proxy's address and a few mistyped passwords lock everyone out."""
    example = dict(
        line.split("=", 1) for line in (UNITS / "portal.env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )  # fmt: skip
    assert example["CACHE_URL"].startswith("redis://") and example["CACHE_URL"] != example["CELERY_BROKER_URL"]
    if example.get("FORWARDED_ALLOW_IPS"):
        assert int(example["TRUSTED_PROXY_COUNT"]) >= 1


def test_the_units_pass_systemd_analyze(tmp_path):
    if not Path("/usr/bin/systemd-analyze").exists():
        pytest.skip("needs systemd-analyze (apt-get install systemd) to verify the unit files")
    # As installed, with the checkout standing in for /srv/portal (so the programs exist).
    names = {"portal-web.service": "portal-web.service", "portal-beat.service": "portal-beat.service",
             "portal-worker@.service": "portal-worker@events.service"}  # fmt: skip
    for source, target in names.items():
        (tmp_path / target).write_text((UNITS / source).read_text().replace("/srv/portal", str(ROOT)))
    completed = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / t) for t in names.values())],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    assert completed.returncode == 0 and not completed.stderr.strip(), completed.stderr
