"""python manage.py grant_credits --account ID --quantity N [--source promotional|adjustment]
[--starts ISO8601] [--expires ISO8601] [--idempotency-key KEY] --json (DESIGN §4)."""

from __future__ import annotations

import argparse
import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.idempotency import idempotency_key_validate
from accounts.models import Account
from billing_portal.command_args import errors_on_one_line, instant, whole_number
from credits.selectors import credit_balance
from credits.services import credit_pack_grant


def _idempotency_key(value: str) -> str:
    try:
        return idempotency_key_validate(value)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(" ".join(exc.messages)) from None


class Command(BaseCommand):
    help = "Grant promotional or adjustment credits (resolutions) to an account."

    def add_arguments(self, parser):
        errors_on_one_line(parser)
        parser.add_argument("--account", required=True, type=int, help="Account id.")
        parser.add_argument("--quantity", required=True, type=whole_number(1), help="Resolutions to grant.")
        parser.add_argument("--source", choices=["promotional", "adjustment"], default="promotional")
        parser.add_argument("--starts", type=instant, default=None, help="Default: now.")
        parser.add_argument("--expires", type=instant, default=None, help="Default: 365 days after the start.")
        parser.add_argument("--reason", default="granted with grant_credits")
        parser.add_argument(
            "--idempotency-key", type=_idempotency_key, default=None,
            help="Run twice with the same key: one grant, the same pack_id printed (1-255 printable ASCII).",
        )  # fmt: skip
        parser.add_argument("--json", action="store_true", help='Print {"pack_id", "remaining", "expires_at"}.')

    def handle(self, *args, **options):
        account = Account.objects.filter(pk=options["account"]).first()
        if account is None:
            raise CommandError(f"No account with id {options['account']}.")
        try:
            pack = credit_pack_grant(
                account=account, quantity=options["quantity"], source=options["source"],
                actor="command:grant_credits", starts_at=options["starts"], expires_at=options["expires"],
                reason=options["reason"], idempotency_key=options["idempotency_key"],
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
