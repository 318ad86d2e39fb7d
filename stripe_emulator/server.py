"""HTTP front end of the Stripe emulator (standard library only).

from stripe_emulator.server import EmulatorServer
srv = EmulatorServer(port=0).start()   # serves from a background thread
srv.url                                 # e.g. http://127.0.0.1:54321
srv.reset(); srv.stop()
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from . import errors, lifecycle
from .control import Fault, Faults, RequestLog
from .core import ROUTES, Ctx, expand
from .params import parse_pairs, validate
from .resources import load_all
from .store import API_VERSION, Store, random_token
from .webhooks import DEFAULT_CLI_EVENTS, WebhookDispatcher

load_all()
ROUTES.sort(key=lambda r: r.regex.groups)  # literal paths (e.g. create_preview) before /{id}
IDEMPOTENCY_TTL = 24 * 3600


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class EmulatorServer:
    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        state_file: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_events=DEFAULT_CLI_EVENTS,
        verbose: bool = False,
    ) -> None:
        self.store = Store(state_file)
        self.webhooks = WebhookDispatcher(
            self.store, url=webhook_url, secret=webhook_secret, events=webhook_events
        )
        self.store.on_event = self.webhooks
        self.faults = Faults()
        self.requests = RequestLog()
        self.verbose = verbose
        handler = type("Handler", (_Handler,), {"emulator": self})
        self.httpd = _HTTPServer((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="stripe-emulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.webhooks.stop()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ control helpers
    def reset(self) -> None:
        self.faults.clear()
        self.requests.clear()
        self.webhooks.reset()
        self.store.reset()

    def set_time(self, frozen_time: int | None) -> None:
        with self.store.lock:
            self.store.frozen_time = None if frozen_time is None else int(frozen_time)
            lifecycle.advance(Ctx(self.store))
            self.store.save()

    def add_fault(self, **raw) -> None:
        self.faults.add(Fault.from_json(raw))


class _Handler(BaseHTTPRequestHandler):
    emulator: EmulatorServer
    protocol_version = "HTTP/1.1"
    server_version = "stripe-emulator"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature fixed by the base class
        if self.emulator.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body, indent=2).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-cache, no-store")
            self.send_header("Access-Control-Allow-Origin", "*")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        body = self._read_body()
        if parts.path.startswith("/_emulator/") or parts.path == "/_emulator":
            self._control(method, parts.path, body)
            return
        self._api(method, parts.path, parts.query, body)

    # ------------------------------------------------------------------ /v1
    def _auth_error(self) -> errors.StripeError | None:
        header = self.headers.get("Authorization") or ""
        key = ""
        if header.startswith("Bearer "):
            key = header[7:].strip()
        elif header.startswith("Basic "):
            try:
                key = base64.b64decode(header[6:]).decode().split(":", 1)[0]
            except ValueError:
                key = ""
        if not key:
            return errors.auth_error(
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                "https://stripe.com/docs/api#authentication for details, or we can help at "
                "https://support.stripe.com/."
            )
        if not key.startswith(("sk_test_", "rk_test_")):
            return errors.auth_error(f"Invalid API Key provided: {key[:8]}{'*' * 12}{key[-4:]}")
        return None

    def _api(self, method: str, path: str, query: str, body: bytes) -> None:
        emu = self.emulator
        request_id = "req_" + random_token(14)
        idem_key = self.headers.get("Idempotency-Key")
        headers = {
            "Request-Id": request_id,
            "Stripe-Version": self.headers.get("Stripe-Version") or API_VERSION,
        }
        if idem_key:
            headers["Idempotency-Key"] = idem_key
        pairs = parse_qsl(query, keep_blank_values=True) + parse_qsl(
            body.decode("utf-8", "replace"), keep_blank_values=True
        )
        raw_params = parse_pairs(pairs)
        entry = emu.requests.add(
            {
                "id": request_id,
                "time": time.time(),
                "method": method,
                "path": path,
                "params": raw_params,
                "idempotency_key": idem_key,
                "stripe_version": self.headers.get("Stripe-Version"),
                "status": None,
                "fault": None,
            }
        )
        status, payload = self._api_inner(method, path, raw_params, request_id, idem_key, headers, entry)
        entry["status"] = status
        self._send(status, payload, headers)

    def _api_inner(self, method, path, raw_params, request_id, idem_key, headers, entry):
        emu = self.emulator
        auth = self._auth_error()
        if auth is not None:
            headers.update(auth.headers)
            return auth.status, auth.body()
        fault = emu.faults.take(method, path)
        if fault is not None:
            entry["fault"] = fault.mode
            if fault.mode == "429":
                headers.update(fault.error_headers())
                return 429, errors.rate_limited().body(request_id)
            if fault.mode == "500":
                headers.update(fault.error_headers())
                return 500, errors.api_error().body(request_id)
            if fault.mode == "hang":
                time.sleep(fault.hang_seconds)
        route, groups = self._match(method, path)
        if route is None:
            err = errors.unrecognized_url(method, path)
            return err.status, err.body(request_id)
        try:
            params = validate(route.endpoint, raw_params)
        except errors.StripeError as err:
            headers.update(err.headers)
            return err.status, err.body(request_id)
        status, payload = self._execute(route, groups, params, method, path, request_id, idem_key, headers)
        if fault is not None and fault.mode == "500_after_record":
            headers.update(fault.error_headers())
            return 500, errors.api_error().body(request_id)
        return status, payload

    @staticmethod
    def _match(method: str, path: str):
        for route in ROUTES:
            if route.method == method:
                m = route.regex.match(path)
                if m:
                    return route, m.groupdict()
        return None, None

    def _execute(self, route, groups, params, method, path, request_id, idem_key, headers):
        store = self.emulator.store
        with store.lock:
            ctx = Ctx(store, request_id=request_id, idempotency_key=idem_key if method == "POST" else None)
            lifecycle.advance(ctx)
            use_idem = bool(idem_key) and method == "POST"
            if use_idem:
                now = store.now()
                store.idempotency = {
                    k: v for k, v in store.idempotency.items() if v["created"] > now - IDEMPOTENCY_TTL
                }
                saved = store.idempotency.get(idem_key)
                if saved is not None:
                    if saved["method"] != method or saved["path"] != path or saved["params"] != params:
                        err = errors.idempotency_mismatch(idem_key)
                        return err.status, err.body(request_id)
                    headers["Idempotent-Replayed"] = "true"
                    headers["Request-Id"] = saved["request_id"]
                    headers.update(saved.get("headers") or {})
                    return saved["status"], saved["body"]
            extra: dict = {}
            try:
                body = route.handler(ctx, params, **groups)
                status = 200
                expand(store, body, params.get("expand"))
            except errors.StripeError as err:
                status, body, extra = err.status, err.body(request_id), err.headers
            headers.update(extra)
            if use_idem:
                store.idempotency[idem_key] = {
                    "method": method,
                    "path": path,
                    "params": params,
                    "status": status,
                    "body": body,
                    "request_id": request_id,
                    "created": store.now(),
                    "headers": extra,
                }
            if route.mutating or use_idem or ctx.events:  # GETs can roll periods over too
                store.save()
            return status, body

    # ------------------------------------------------------------------ /_emulator
    def _control(self, method: str, path: str, body: bytes) -> None:
        emu = self.emulator
        try:
            data = json.loads(body or b"{}") if body.strip() else {}
        except ValueError:
            self._send(400, {"error": "body must be JSON"})
            return
        key = (method, path.rstrip("/"))
        try:
            if key == ("GET", "/_emulator/health"):
                out = {"ok": True, "url": emu.url, "now": emu.store.now()}
            elif key == ("POST", "/_emulator/reset"):
                emu.reset()
                out = {"ok": True}
            elif key == ("POST", "/_emulator/faults"):
                emu.faults.add(Fault.from_json(data))
                out = {"faults": emu.faults.list()}
            elif key == ("GET", "/_emulator/faults"):
                out = {"faults": emu.faults.list()}
            elif key == ("DELETE", "/_emulator/faults"):
                emu.faults.clear()
                out = {"faults": []}
            elif key == ("POST", "/_emulator/webhooks"):
                out = {"config": emu.webhooks.configure(data)}
            elif key == ("GET", "/_emulator/webhooks"):
                out = {"config": emu.webhooks.config(), "deliveries": emu.webhooks.public_log()}
            elif key == ("GET", "/_emulator/requests"):
                out = {"requests": emu.requests.list()}
            elif key == ("DELETE", "/_emulator/requests"):
                emu.requests.clear()
                out = {"requests": []}
            elif key == ("POST", "/_emulator/clock"):
                frozen = data.get("frozen_time", emu.store.frozen_time)
                if data.get("advance_seconds"):
                    frozen = emu.store.now() + int(data["advance_seconds"])
                emu.set_time(frozen)
                out = {"now": emu.store.now(), "frozen_time": emu.store.frozen_time}
            elif key == ("GET", "/_emulator/clock"):
                out = {"now": emu.store.now(), "frozen_time": emu.store.frozen_time}
            else:
                self._send(404, {"error": f"unknown control endpoint {method} {path}"})
                return
        except (ValueError, TypeError) as exc:
            self._send(400, {"error": str(exc)})
            return
        self._send(200, out)
