"""Seed the demo world through the same services real traffic uses, then print every login.

Safe to run twice: what exists is kept. Accounts are provisioned in Stripe (the emulator by default)
with their seat subscriptions, then receive 90 days of conversation events through the ingestion
services (credit packs join with the credit-pack issue).
"""

from __future__ import annotations

import datetime as dt
import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Account, CreditPackOffer, PricePlan, Role, User
from accounts.services import user_create
from accounts.services.provisioning import ProvisioningFailed, ProvisioningStuck, account_provision
from accounts.services.stripe_catalog import stripe_catalog_setup
from billing_portal import clock
from billing_portal.money import format_money
from billing_portal.stripe_client import StripeFailure
from credits.purchases import credit_pack_purchase, credit_purchases_resume
from credits.services import credit_pack_grant
from resolutions.demo import DAYS, EmulatorClock, demo_traffic_ingest, invoices_against_portal

# Customers joined this many days before their traffic begins: so with 90 days of traffic today's billing
# period is about half-way through (joining 91 days back put its start at the moment of seeding, and the
# dashboard's "This billing period" showed nothing).
JOINED_BEFORE_TRAFFIC_DAYS = 16
DEMO_PASSWORD = "portal-demo"  # local demo only; printed below
ACTOR = "command:seed_demo"

DEMO_ACCOUNTS = [
    {"slug": "steady-retail", "name": "Steady Retail Co.", "timezone": "America/New_York", "seats": 25},
    {"slug": "seasonal-travel", "name": "Seasonal Travel Ltd", "timezone": "Europe/London", "seats": 40},
    {"slug": "newco-labs", "name": "NewCo Labs", "timezone": "Europe/Berlin", "seats": 3},
]
DEMO_STAFF = [("admin", Role.ADMIN, "UTC"), ("manager", Role.ACCOUNT_MANAGER, "Europe/Lisbon")]
DEMO_CUSTOMERS = [
    ("steady-billing", "steady-retail", Role.CUSTOMER_BILLING_ADMIN),
    ("steady-viewer", "steady-retail", Role.CUSTOMER_VIEWER),
    ("seasonal-billing", "seasonal-travel", Role.CUSTOMER_BILLING_ADMIN),
    ("newco-billing", "newco-labs", Role.CUSTOMER_BILLING_ADMIN),
]


class Command(BaseCommand):
    help = "Create the demo accounts and one user per role (idempotent), and print the logins."

    def add_arguments(self, parser):
        clock.add_now_argument(parser)
        parser.add_argument("--plan", default="fin-standard", help="Plan slug for the demo accounts.")
        parser.add_argument("--json", action="store_true", help="Print the logins as JSON.")
        parser.add_argument(
            "--days", type=int, default=DAYS, choices=range(0, DAYS + 1), metavar=f"0..{DAYS}",
            help=f"Days of conversation history for new demo accounts (default {DAYS}).",
        )  # fmt: skip

    def handle(self, *args, **options):
        plan = PricePlan.objects.filter(slug=options["plan"]).first()
        if plan is None:
            raise CommandError(f"No plan '{options['plan']}'. Run `python manage.py migrate` first.")
        emulator_clock = EmulatorClock.for_settings()  # the local emulator follows the simulated days
        with clock.frozen_for(options) as now, emulator_clock.released_after(now, keep=bool(options.get("now"))):
            try:
                stripe_catalog_setup()
                with transaction.atomic():
                    staff = {name: self._user(name, role, timezone=zone) for name, role, zone in DEMO_STAFF}
                new_keys = {}
                new_accounts = []
                for spec in DEMO_ACCOUNTS:  # each account is provisioned (with Stripe) on its own
                    if Account.objects.filter(slug=spec["slug"]).exists():
                        continue
                    with clock.frozen(now - dt.timedelta(days=options["days"] + JOINED_BEFORE_TRAFFIC_DAYS)) as joined:
                        emulator_clock.set(joined)  # so the subscription's periods start when the portal's do
                        provisioned = account_provision(
                            name=spec["name"], slug=spec["slug"], plan=plan, seats=spec["seats"], actor=ACTOR,
                            timezone=spec["timezone"], billing_email=f"billing@{spec['slug']}.example",
                            account_manager=staff["manager"],
                        )  # fmt: skip
                        self._credit_packs(provisioned.account)
                    new_keys[spec["slug"]] = provisioned.raw_api_key
                    new_accounts.append(provisioned.account)
            except (StripeFailure, ProvisioningFailed, ProvisioningStuck) as exc:
                raise CommandError(f"{exc} Is the Stripe emulator running (STRIPE_API_BASE)?") from None
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
            with transaction.atomic():
                for name, slug, role in DEMO_CUSTOMERS:
                    self._user(name, role, account=Account.objects.get(slug=slug))
            if new_accounts and options["days"]:
                sent = demo_traffic_ingest(
                    accounts=new_accounts, end=now, days=options["days"],
                    progress=None if options["json"] else self._progress,
                )  # fmt: skip
                checks = [c for account in new_accounts for c in invoices_against_portal(account=account)]
                if not options["json"]:
                    self.stdout.write("")
                    for slug, count in sent.items():
                        self.stdout.write(f"  {slug}: {count:,} conversation events sent")
                    self._invoices(checks)
        logins = [{"username": n, "password": DEMO_PASSWORD, "role": r.label} for n, r, _ in DEMO_STAFF] + [
            {"username": n, "password": DEMO_PASSWORD, "role": r.label, "account": s} for n, s, r in DEMO_CUSTOMERS
        ]
        if options["json"]:
            self.stdout.write(json.dumps({"logins": logins, "api_keys": new_keys}))
            return
        self.stdout.write(self.style.SUCCESS(f"Demo data ready. Logins (password for all: {DEMO_PASSWORD}):"))
        for login in logins:
            where = f"  ({login['account']})" if "account" in login else ""
            self.stdout.write(f"  {login['username']:<18} {login['role']}{where}")
        for slug, key in new_keys.items():
            self.stdout.write(f"  API key for {slug}: {key}  (shown once)")

    def _invoices(self, checks) -> None:
        """What Stripe invoiced for the past periods' overage, beside the portal's figures."""
        if not checks:
            return
        agreeing = sum(c.agrees for c in checks)
        billed = sum(c.stripe_minor for c in checks)
        currency = Account.objects.get(slug=checks[0].account).currency
        line = f"  Stripe invoiced {len(checks)} past period(s), {format_money(billed, currency)} of overage"
        if agreeing == len(checks):
            self.stdout.write(self.style.SUCCESS(line + ": every invoice matches the portal to the cent."))
            return
        self.stdout.write(self.style.WARNING(line + f"; {len(checks) - agreeing} differ from the portal:"))
        for c in checks:
            if not c.agrees:
                self.stdout.write(
                    f"    {c.account} {c.invoice}: Stripe {c.stripe_minor}, portal {c.portal_minor} (minor units)"
                )

    def _credit_packs(self, account):
        """Steady buys the annual pack (a paid Stripe invoice); Seasonal got a promotional pack its campaign
        will exhaust into overage; NewCo has none."""
        if account.slug == "steady-retail":
            offer = CreditPackOffer.objects.filter(version=account.plan_version).order_by("resolutions").first()
            credit_pack_purchase(account=account, offer=offer, actor=ACTOR)
            credit_purchases_resume(now=clock.now())  # the webhook may not be in yet: ask Stripe, as the cycle does
        elif account.slug == "seasonal-travel":
            credit_pack_grant(
                account=account, quantity=2_500, source="promotional", actor=ACTOR, reason="Launch promotion"
            )

    def _progress(self, done: int, total: int) -> None:
        filled = round(30 * done / total)
        self.stdout.write(
            f"\r  Sending demo traffic [{'#' * filled}{'.' * (30 - filled)}] day {done}/{total}", ending=""
        )
        self.stdout.flush()

    def _user(self, username, role, account=None, timezone=""):
        user = User.objects.filter(username=username).first()
        if user is None:
            user = user_create(
                username=username, password=DEMO_PASSWORD, role=role, actor=ACTOR, account=account,
                email=f"{username}@example.com", timezone=timezone,
            )  # fmt: skip
        return user
