"""Command line: ``python -m stripe_emulator --port N [--host H] [--state-file PATH]
[--webhook-url URL --webhook-secret whsec_...]``."""

from __future__ import annotations

import argparse
import signal
import sys

from .server import EmulatorServer
from .webhooks import DEFAULT_CLI_EVENTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stripe_emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state-file", help="persist state as JSON here (loaded at start)")
    parser.add_argument("--webhook-url", help="also deliver events to this URL")
    parser.add_argument("--webhook-secret", help="whsec_... used to sign deliveries to --webhook-url")
    parser.add_argument(
        "--webhook-events",
        default=",".join(DEFAULT_CLI_EVENTS),
        help="comma-separated event types for --webhook-url ('*' for all, 'invoice.*' prefixes)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every HTTP request")
    args = parser.parse_args(argv)
    if args.webhook_url and not args.webhook_secret:
        parser.error("--webhook-url requires --webhook-secret")
    server = EmulatorServer(
        port=args.port,
        host=args.host,
        state_file=args.state_file,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        webhook_events=[e.strip() for e in args.webhook_events.split(",") if e.strip()],
        verbose=args.verbose,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"stripe emulator listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.httpd.server_close()
        server.webhooks.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
