"""python manage.py billing_tick [--now ISO8601] [--json]: one billing cycle (resolutions/billing_cycle.py),
synchronously, printing what each step did. Exit 0 even when a step failed (it is reported, and the
next cycle retries it); non-zero only when the cycle could not run (another cycle holds the lock)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from billing_portal import clock
from resolutions.billing_cycle import billing_cycle_run


class Command(BaseCommand):
    help = (
        "Run one billing cycle, as the minutely Celery task does: evaluate queued conversations, finalise "
        "elapsed inactivity windows, sync billing periods from Stripe, continue credit purchases, draw down "
        "credits, expire packs, report overage to Stripe's meter, undo unfinished provisionings, finish stalled "
        "seat conversions, reconcile with Stripe (hourly). Prints one line per step (failures with their reason)."
    )

    def add_arguments(self, parser):
        clock.add_now_argument(parser)
        parser.add_argument("--json", action="store_true", help="Print the cycle's result as one JSON object.")

    def handle(self, *args, **options):
        with clock.frozen_for(options) as now:
            result = billing_cycle_run(now=now)
        if result.skipped:
            raise CommandError(f"Billing cycle not run at {now.isoformat()}: {result.skipped}.")
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
            return
        self.stdout.write(f"Billing cycle at {now.isoformat()}:")
        for step in result.steps:
            if step.status == "ok":
                self.stdout.write(f"  {step.name:<13} ok      {step.summary}")
            else:
                self.stdout.write(f"  {step.name:<13} {step.status.upper():<7} {step.error}")
        if result.failed:
            self.stdout.write(f"{len(result.failed)} step(s) failed; the next cycle retries them.")
