"""python manage.py invoice_preview --account ID [--now ISO8601] --json (DESIGN §4): the account's next
invoice as the portal computes it beside Stripe's create_preview, the same object as the staff API's."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.http import Http404

from accounts.models import Account
from billing_portal import clock
from billing_portal.money import format_money
from billing_portal.stripe_client import StripeFailure
from resolutions.services.invoice_preview import invoice_preview_get


class Command(BaseCommand):
    help = (
        "Preview an account's next invoice: the portal's computation (seats for the next period, this period's "
        "overage by tier) beside Stripe's create_preview of its subscription. Stripe counts only overage already "
        "reported to its meter: compare after reporting (billing_tick)."
    )

    def add_arguments(self, parser):
        clock.add_now_argument(parser)
        parser.add_argument("--account", required=True, type=int, help="Account id.")
        parser.add_argument("--json", action="store_true", help="Print the staff invoice-preview API's object.")

    def handle(self, *args, **options):
        account = Account.objects.filter(pk=options["account"]).first()
        if account is None:
            raise CommandError(f"No account with id {options['account']}.")
        with clock.frozen_for(options) as now:
            try:
                preview = invoice_preview_get(account=account, now=now)
            except (Http404, StripeFailure) as exc:
                raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(preview))
            return
        portal, stripe, currency = preview["portal"], preview["stripe"], preview["currency"]
        self.stdout.write(
            f"Next invoice of {account.name} (period {preview['period_start']} to {preview['period_end']}):"
        )
        self.stdout.write(
            f"  portal  {format_money(portal['total_minor'], currency):>14}  = seats "
            f"{format_money(portal['seats_minor'], currency)} + {portal['overage_resolutions']:,} overage "
            f"resolution(s) {format_money(portal['overage_minor'], currency)}"
        )
        self.stdout.write(f"  stripe  {format_money(stripe['total_minor'], currency):>14}")
        if preview["agrees"]:
            self.stdout.write("  They agree to the cent.")
        else:
            difference = format_money(preview["difference_minor"], currency)
            self.stdout.write(f"  They differ by {difference} (Stripe's total minus the portal's).")
        self.stdout.write(f"  {preview['note']}")
