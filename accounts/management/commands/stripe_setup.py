"""Create (idempotently) the meter, products and prices in Stripe, and the webhook endpoint."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.services.stripe_catalog import stripe_catalog_setup
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure, stripe_webhook_endpoint_local
from billing_portal.stripe_client import StripeFailure


class Command(BaseCommand):
    help = "Create the Stripe meter, products, one Price per published plan version, and the webhook endpoint."

    def add_arguments(self, parser):
        parser.add_argument(
            "--webhook",
            choices=["register", "cli", "none"],
            default="register",
            help="register: create the endpoint in Stripe (default; the emulator or a public URL); "
            "cli: only a local endpoint for `stripe listen` (needs STRIPE_WEBHOOK_SECRET); none: skip.",
        )
        parser.add_argument("--base-url", default=None, help="Public URL of this portal (default PORTAL_BASE_URL).")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        try:
            summary = stripe_catalog_setup()
            if options["webhook"] == "register":
                endpoint = stripe_webhook_endpoint_ensure(base_url=options["base_url"])
                summary["webhook_url"] = endpoint.url
            elif options["webhook"] == "cli":
                if not settings.STRIPE_WEBHOOK_SECRET:
                    raise CommandError(
                        "--webhook cli needs STRIPE_WEBHOOK_SECRET (the whsec_… `stripe listen` prints)."
                    )
                endpoint = stripe_webhook_endpoint_local()
                summary["webhook_url"] = endpoint.url
        except StripeFailure as exc:
            message = f"{exc} — run stripe_setup again when Stripe answers (nothing is created twice)."
            raise CommandError(message) from None
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        self.stdout.write(self.style.SUCCESS(f"Stripe ready at {settings.STRIPE_API_BASE}"))
        self.stdout.write(f"  meter {summary['meter']} (event {settings.STRIPE_METER_EVENT_NAME})")
        for row in summary["versions"]:
            self.stdout.write(f"  {row['version']}: price {row['price']}, seat price {row['seat_price']}")
        if "webhook_url" in summary:
            self.stdout.write(f"  webhooks to {summary['webhook_url']}")
