"""python manage.py billing_tick [--now ISO8601]: the periodic billing work, synchronously and in order."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from accounts.services.provisioning import provisioning_cleanup
from billing_portal import clock
from credits.conversions import seat_conversions_resume_stalled
from credits.purchases import credit_packs_reconcile_pending
from credits.services import credit_packs_expire
from resolutions.services import conversations_evaluate_pending, resolution_windows_finalise, resolutions_fund


class Command(BaseCommand):
    help = (
        "Run what the periodic Celery tasks do, in order: evaluate conversations whose events are queued, "
        "finalise elapsed inactivity windows, draw down "
        "credits, expire packs, undo unfinished account provisionings. (Stripe meter reporting joins with its issue.)"
    )

    def add_arguments(self, parser):
        clock.add_now_argument(parser)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        with clock.frozen_for(options) as now:
            evaluated = conversations_evaluate_pending(now=now)  # events stored but not yet evaluated
            finalised = resolution_windows_finalise(now=now)
            activated = credit_packs_reconcile_pending(now=now)  # paid packs count before draw-down
            funding = resolutions_fund(now=now)  # before expiry: a pack still funds what happened before it expired
            breakage = credit_packs_expire(now=now)
            undone = provisioning_cleanup(now=now)
            conversions = seat_conversions_resume_stalled(now=now)
        summary = {
            "now": now.isoformat(),
            "evaluated_resolutions": evaluated,
            "assumed_resolutions": finalised,
            "packs_activated": activated,
            "credited": funding.credited,
            "overage": funding.overage,
            "packs_expired": len(breakage),
            "breakage_resolutions": sum(b.resolutions for b in breakage),
            "provisionings_undone": undone,
            "seat_conversions_finished": conversions,
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        self.stdout.write(
            f"{now.isoformat()}: {evaluated} resolution(s) from queued events; {finalised} assumed resolution(s); "
            f"funded {funding.credited} from credits and "
            f"{funding.overage} as overage; {len(breakage)} pack(s) expired "
            f"({summary['breakage_resolutions']} unused resolutions written off); {undone} provisioning(s) undone."
        )
