"""python manage.py reconcile [--now ISO8601] [--json]: compare, per account and billing period, what the portal
has reported to Stripe's meter with Stripe's meter event summaries (resolutions/services/reconciliation.py).

`--json` prints DESIGN §4's `{"checked", "differences": [{"account_id", "period_start", "period_end", "portal",
"stripe"}]}` (counts of resolutions), plus `in_flight` (periods skipped: a meter event on its way), `new`,
`resolved` and `failures` (periods Stripe could not be asked about, with why). Exit 0 when it ran, even with some
failures (the next run asks again); non-zero, with one line on stderr after the output, when there were periods
to compare and not one of them could be (Stripe unreachable, no meter), and on bad input."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from billing_portal import clock
from resolutions.services.reconciliation import meter_reconcile


class Command(BaseCommand):
    help = (
        "Compare the meter totals reported to Stripe with Stripe's meter event summaries, per account and billing "
        "period; store differences (shown to admins, e-mailed once) and resolve the ones that are gone."
    )

    def add_arguments(self, parser):
        clock.add_now_argument(parser)
        parser.add_argument("--json", action="store_true", help="Print the result as one JSON object.")

    def handle(self, *args, **options):
        with clock.frozen_for(options) as now:
            result = meter_reconcile(now=now)
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
        else:
            self._print(result, now)
        if result.nothing_checked:
            first = " ".join(result.failures[0]["error"].split())  # one line, whatever Stripe said
            raise CommandError(f"Nothing could be checked: {len(result.failures)} period(s) failed ({first}).")

    def _print(self, result, now):
        self.stdout.write(
            f"Reconciliation at {now.isoformat()}: {result.checked} period(s) checked, "
            f"{len(result.differences)} difference(s) ({result.new} new), {result.resolved} resolved, "
            f"{result.accepted} as an admin accepted them, {result.in_flight} with a meter event on its way."
        )
        for d in result.differences:
            self.stdout.write(
                f"  account {d.account_id}, period {d.period_start:%Y-%m-%d %H:%M} to {d.period_end:%Y-%m-%d %H:%M}: "
                f"portal {d.portal:,}, Stripe {d.stripe:,}"
            )
        for failure in result.failures:
            self.stdout.write(
                f"  account {failure['account_id']}, period from {failure['period_start']}: FAILED {failure['error']}"
            )
