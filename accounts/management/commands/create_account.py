"""python manage.py create_account --name NAME --plan SLUG [--seats N] --json (DESIGN §4)."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import PricePlan, User
from accounts.services.provisioning import ProvisioningFailed, ProvisioningStuck, account_provision
from billing_portal import clock
from billing_portal.command_args import whole_number


class Command(BaseCommand):
    help = "Create a customer account with its Stripe customer and subscription, and print its first API key."

    def add_arguments(self, parser):
        clock.errors_on_one_line(parser)
        parser.add_argument("--name", required=True)
        parser.add_argument("--plan", required=True, help="Price plan slug, e.g. fin-standard.")
        parser.add_argument("--seats", type=whole_number(0), default=0, help="Helpdesk seats on the subscription.")
        parser.add_argument("--timezone", default="UTC")
        parser.add_argument("--email", default="", help="Billing email of the customer.")
        parser.add_argument("--manager", default=None, help="Username of the account manager.")
        parser.add_argument(
            "--json", action="store_true", help='Print {"account_id", "api_key", "stripe_customer_id"}.'
        )

    def handle(self, *args, **options):
        plan = PricePlan.objects.filter(slug=options["plan"]).first()
        if plan is None:
            known = ", ".join(PricePlan.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"No price plan '{options['plan']}' (known: {known}).")
        manager = None
        if options["manager"]:
            manager = User.objects.filter(username=options["manager"], is_staff=True).first()
            if manager is None:
                raise CommandError(f"No staff user '{options['manager']}'.")
        try:
            result = account_provision(
                name=options["name"], plan=plan, seats=options["seats"], actor="command:create_account",
                timezone=options["timezone"], billing_email=options["email"], account_manager=manager,
            )  # fmt: skip
        except ValidationError as exc:
            raise CommandError(" ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        except (ProvisioningFailed, ProvisioningStuck) as exc:
            raise CommandError(str(exc)) from None
        out = {
            "account_id": result.account.pk,
            "api_key": result.raw_api_key,
            "stripe_customer_id": result.stripe_customer_id,
        }
        if options["json"]:
            self.stdout.write(json.dumps(out))
        else:
            self.stdout.write(self.style.SUCCESS(f"Account {result.account.name} (id {result.account.pk}) created."))
            self.stdout.write(
                f"  Stripe customer {result.stripe_customer_id}, subscription {result.stripe_subscription_id}"
            )
            self.stdout.write(f"  API key (shown once): {result.raw_api_key}")
