#!/usr/bin/env python3
"""The two commands of the README, needing only Python 3.11+:

    python3 dev.py demo   # virtualenv + install + migrate + demo data + serve on http://127.0.0.1:8000
    python3 dev.py test   # virtualenv + install + the whole test suite (pytest args may follow)
    python3 dev.py lint   # ruff check and ruff format --check
    python3 dev.py faults --seeds 1-500 [--steps 40]   # the seeded fault simulation, many seeds (PostgreSQL)

The virtualenv lives in .venv and is reinstalled only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed-pyproject-sha256"


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 a newcomer has
        sys.exit(f"Python 3.11 or newer is needed (this is {sys.version.split()[0]}).")
    if not PY.exists():
        say(f"Creating a virtualenv in {VENV.name}/")
        venv.create(VENV, with_pip=True)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    say("Installing dependencies (first run or pyproject.toml changed)")
    subprocess.run([PY, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([PY, "-m", "pip", "install", "-q", "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(digest)


def manage(*args: str, env: dict | None = None) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, check=True, env=env)


EMULATOR_PORT = 12111


def start_stripe_emulator(env: dict) -> subprocess.Popen:
    """The local Stripe emulator, with its state in var/ so that the demo survives a restart."""
    say(f"Starting the local Stripe emulator on http://127.0.0.1:{EMULATOR_PORT} (state: var/stripe-emulator.json)")
    (ROOT / "var").mkdir(exist_ok=True)
    log = open(ROOT / "var" / "stripe-emulator.log", "ab")  # noqa: SIM115 - lives as long as the emulator
    emulator = subprocess.Popen(
        [PY, "-m", "stripe_emulator", "--port", str(EMULATOR_PORT), "--state-file",
         str(ROOT / "var" / "stripe-emulator.json")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    env["STRIPE_API_BASE"] = f"http://127.0.0.1:{EMULATOR_PORT}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{env['STRIPE_API_BASE']}/_emulator/health", timeout=1).close()
            return emulator
        except OSError:
            if emulator.poll() is not None:
                sys.exit(
                    f"The Stripe emulator stopped at start (is port {EMULATOR_PORT} taken?): var/stripe-emulator.log"
                )
            time.sleep(0.1)
    sys.exit("The Stripe emulator did not answer in 10 s: see var/stripe-emulator.log")


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # so that `finally` stops the emulator and the worker too


def background(name: str, command: list, env: dict) -> subprocess.Popen:
    """A child process whose output goes to var/<name>.log."""
    (ROOT / "var").mkdir(exist_ok=True)
    log = open(ROOT / "var" / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_http(url: str, child: subprocess.Popen, what: str, log: str) -> None:
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if child.poll() is not None:
                sys.exit(f"{what} stopped at start: see {log}")
            time.sleep(0.1)
    sys.exit(f"{what} did not answer in 30 s: see {log}")


def demo(args: list[str]) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    ensure_venv()
    env = {**os.environ}
    env.setdefault("DJANGO_DEBUG", "true")
    port = env.get("PORT", "8000")
    env.setdefault("PORTAL_BASE_URL", f"http://127.0.0.1:{port}")
    children = []
    try:
        if "STRIPE_API_BASE" not in env:
            children.append(start_stripe_emulator(env))
        say("Migrating the database (SQLite in var/ unless DATABASE_URL is set)")
        manage("migrate", "--no-input", "-v", "0", env=env)
        # The portal serves before seeding, so the webhooks that seeding causes are received.
        server = background("portal", [PY, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}", *args], env)
        children.append(server)
        wait_for_http(f"http://127.0.0.1:{port}/login/", server, "The portal", "var/portal.log")
        say("Creating the Stripe meter, products and prices, and the webhook endpoint")
        # With STRIPE_WEBHOOK_SECRET (from `stripe listen`), webhooks come through the Stripe CLI.
        manage("stripe_setup", "--webhook", "cli" if env.get("STRIPE_WEBHOOK_SECRET") else "register", env=env)
        say("Seeding demo data")
        manage("seed_demo", env=env)
        say("Starting a Celery worker with beat (broker: a local folder unless CELERY_BROKER_URL is set)")
        beat_schedule = str(ROOT / "var" / "celerybeat-schedule")
        worker_command = [
            BIN / "celery",
            "-A",
            "billing_portal",
            "worker",
            "-B",
            "--concurrency",
            "1",
            "-s",
            beat_schedule,
        ]
        children.append(background("celery", worker_command, env))
        say(f"Portal on http://127.0.0.1:{port}/  (Ctrl-C stops everything; logs in var/*.log)")
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for child in reversed(children):
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


def test(args: list[str]) -> int:
    ensure_venv()
    return subprocess.run([PY, "-m", "pytest", *args], cwd=ROOT).returncode


def lint(args: list[str]) -> int:
    ensure_venv()
    checks = [[BIN / "ruff", "check", ".", *args], [BIN / "ruff", "format", "--check", "."]]
    return max(subprocess.run(check, cwd=ROOT).returncode for check in checks)


def faults(args: list[str]) -> int:
    """The fault simulation (tests/fault_simulation.py) over many seeds; a failing seed prints its step log and
    replays with --seeds N. Needs DATABASE_URL on PostgreSQL; other arguments go to pytest."""
    import argparse

    parser = argparse.ArgumentParser(prog="dev.py faults")
    parser.add_argument("--seeds", default="1-100", help="e.g. 7, 1-500 or 1,5,9-12 (default 1-100)")
    parser.add_argument("--steps", type=int, default=40, help="random steps per seed before quiescence (40)")
    known, rest = parser.parse_known_args(args)
    ensure_venv()
    env = {**os.environ, "FAULT_SEEDS": known.seeds, "FAULT_STEPS": str(known.steps)}
    command = [
        PY,
        "-m",
        "pytest",
        "tests/test_fault_simulation.py",
        "-k",
        "invariants",
        "-p",
        "no:cacheprovider",
        *rest,
    ]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def main() -> int:
    commands = {"demo": demo, "test": test, "lint": lint, "faults": faults}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
