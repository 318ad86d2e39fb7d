"""python manage.py grant_credits --account ID --quantity N [--source promotional|adjustment]
[--starts ISO8601] [--expires ISO8601] --json (DESIGN §4)."""

from __future__ import annotations

import argparse
import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Account
from billing_portal import clock
from credits.selectors import credit_balance
from credits.services import credit_pack_grant


def _instant(value: str):
    try:
        return clock.parse_instant(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("the quantity must be at least 1")
    return number


class Command(BaseCommand):
    help = "Grant promotional or adjustment credits (resolutions) to an account."

    def add_arguments(self, parser):
        parser.add_argument("--account", required=True, type=int, help="Account id.")
        parser.add_argument("--quantity", required=True, type=_positive, help="Resolutions to grant.")
        parser.add_argument("--source", choices=["promotional", "adjustment"], default="promotional")
        parser.add_argument("--starts", type=_instant, default=None, help="Default: now.")
        parser.add_argument("--expires", type=_instant, default=None, help="Default: 365 days after the start.")
        parser.add_argument("--reason", default="granted with grant_credits")
        parser.add_argument("--json", action="store_true", help='Print {"pack_id", "remaining", "expires_at"}.')

    def handle(self, *args, **options):
        account = Account.objects.filter(pk=options["account"]).first()
        if account is None:
            raise CommandError(f"No account with id {options['account']}.")
        try:
            pack = credit_pack_grant(
                account=account, quantity=options["quantity"], source=options["source"],
                actor="command:grant_credits", starts_at=options["starts"], expires_at=options["expires"],
                reason=options["reason"],
            )  # fmt: skip
        except ValidationError as exc:
            raise CommandError(" ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        out = {
            "pack_id": pack.pk,
            "remaining": credit_balance(account=account),
            "expires_at": pack.expires_at.isoformat(),
        }
        if options["json"]:
            self.stdout.write(json.dumps(out))
        else:
            self.stdout.write(
                f"Granted {pack.granted:,} resolutions to {account.name} (pack {pack.pk}, expires "
                f"{out['expires_at']}); {credit_balance(account=account):,} remaining in all."
            )
