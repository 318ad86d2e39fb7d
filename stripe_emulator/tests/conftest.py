"""Fixtures for the emulator's own tests. They need no Django: run with ``-p no:django``."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import stripe

from stripe_emulator.server import EmulatorServer

HERE = Path(__file__).resolve().parent
SHARED_FIXTURES = HERE.parents[2] / "shared" / "stripe" / "fixtures3.json"
KEY = "sk_test_emulator"
CLI_SECRET = "whsec_cli_test_secret"


def load_fixtures() -> dict:
    """Stripe's fixture objects: shared/stripe/fixtures3.json when present, else the vendored subset."""
    path = SHARED_FIXTURES if SHARED_FIXTURES.exists() else HERE / "fixtures_subset.json"
    return json.loads(path.read_text())["resources"]


class Receiver:
    """A local webhook receiver recording every POST; answers with the queued statuses, then 200."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.received.append(
                        {
                            "body": body.decode(),
                            "headers": dict(self.headers),
                            "status": status,
                            "at": time.time(),
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks"

    def clear(self) -> None:
        with self.lock:
            self.received.clear()
            self.statuses.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        with self.lock:
            return list(self.received)


@pytest.fixture(scope="session")
def receiver():
    r = Receiver()
    yield r
    r.httpd.shutdown()


@pytest.fixture(scope="session")
def emulator(receiver):
    srv = EmulatorServer(port=0, webhook_url=receiver.url, webhook_secret=CLI_SECRET).start()
    srv.webhooks.backoff = (0.05, 0.05, 0.05)
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _reset(request, receiver):
    if "emulator" in request.fixturenames:
        emu = request.getfixturevalue("emulator")
        emu.reset()
        emu.webhooks.wait_idle(timeout=5)  # let a delivery that was in flight land before clearing
        emu.webhooks.backoff = (0.05, 0.05, 0.05)
    receiver.clear()
    yield


@pytest.fixture
def client(emulator) -> stripe.StripeClient:
    return stripe.StripeClient(KEY, base_addresses={"api": emulator.url}, max_network_retries=0)


class Raw:
    """Plain HTTP access to the emulator, for checking exact status codes, headers and JSON."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(
        self,
        method: str,
        path: str,
        data: dict | list | None = None,
        *,
        key: str | None = KEY,
        headers: dict | None = None,
        timeout: float = 10.0,
        json_body=None,
    ):
        from urllib.parse import urlencode

        body = None
        hdrs = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        elif data is not None:
            encoded = urlencode(data, doseq=False)
            if method == "GET":
                path = f"{path}?{encoded}"
            else:
                body = encoded.encode()
                hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if key:
            hdrs["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)

    def control(self, method: str, path: str, body: dict | None = None):
        return self.call(method, f"/_emulator/{path}", key=None, json_body=body if body is not None else {})


@pytest.fixture
def raw(emulator) -> Raw:
    return Raw(emulator.url)


@pytest.fixture
def now(emulator) -> int:
    """Freeze the emulator clock at a minute boundary a little in the past; returns it."""
    t = int(time.time()) // 3600 * 3600 - 7 * 86400
    emulator.set_time(t)
    return t


def make_metered(client, *, formula: str = "sum", event_name: str = "resolution", price: dict | None = None):
    """A meter, a product and a metered price on it (``price`` holds extra price params)."""
    meter = client.v1.billing.meters.create(
        {"display_name": event_name, "event_name": event_name, "default_aggregation": {"formula": formula}}
    )
    product = client.v1.products.create({"name": f"{event_name} product"})
    params = {
        "currency": "usd",
        "product": product.id,
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
    }
    params.update(price or {"unit_amount": 100})
    return meter, product, client.v1.prices.create(params)
