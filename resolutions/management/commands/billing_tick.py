"""python manage.py billing_tick [--now ISO8601]: the periodic billing work, synchronously and in order."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from accounts.services.provisioning import provisioning_cleanup
from billing_portal import clock
from resolutions.services import resolution_windows_finalise


class Command(BaseCommand):
    help = (
        "Run what the periodic Celery tasks do, in order: finalise elapsed inactivity windows "
        "and undo unfinished account provisionings (draw-down, expiry and Stripe reporting join as they are built)."
    )

    def add_arguments(self, parser):
        clock.add_now_argument(parser)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        with clock.frozen_for(options) as now:
            finalised = resolution_windows_finalise(now=now)
            undone = provisioning_cleanup(now=now)
        summary = {"now": now.isoformat(), "assumed_resolutions": finalised, "provisionings_undone": undone}
        if options["json"]:
            self.stdout.write(json.dumps(summary))
        else:
            self.stdout.write(f"{now.isoformat()}: {finalised} assumed resolution(s) from elapsed windows.")
