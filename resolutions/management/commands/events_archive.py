"""python manage.py events_archive --before DATE [--dry-run] [--batch-size N] [--now ISO8601] [--json]: move the raw
events of finished conversations whose last event is older than DATE to the archive table, in bounded batches
(resolutions/services/archive.py, docs/data-lifecycle.md). DATE is YYYY-MM-DD (midnight UTC) or an ISO 8601 instant,
at the latest 42 days (the 35-day late window and a week) before now. Safe to stop and to run again: each batch is
one transaction, and a second run moves nothing. Prints a progress bar (per account) unless --json."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from django.core.management.base import BaseCommand, CommandError

from billing_portal import clock
from billing_portal.command_args import whole_number
from resolutions.services.archive import ArchiveTooRecent, conversation_events_archive


def _cutoff(value: str) -> dt.datetime:
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
    except ValueError:
        return clock.instant_argument(value)  # an ISO 8601 instant, or argparse's one-line error


class Command(BaseCommand):
    help = (
        "Move the events of finished conversations older than --before (35 days + a week at the latest) to the "
        "archive table, in batches; --dry-run counts what would move."
    )

    def add_arguments(self, parser: argparse.ArgumentParser):
        clock.add_now_argument(parser)
        parser.add_argument("--before", type=_cutoff, required=True, help="YYYY-MM-DD (UTC) or ISO 8601 instant.")
        parser.add_argument("--dry-run", action="store_true", help="Count what would move; change nothing.")
        parser.add_argument("--batch-size", type=whole_number(1), default=2000, help="Conversations a transaction.")
        parser.add_argument("--json", action="store_true", help="Print the result as one JSON object.")

    def handle(self, *args, **options):
        with clock.frozen_for(options) as now:
            try:
                result = conversation_events_archive(
                    before=options["before"], batch_size=options["batch_size"], dry_run=options["dry_run"], now=now,
                    progress=None if options["json"] else self._progress,
                )  # fmt: skip
            except ArchiveTooRecent as exc:
                raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(vars(result)))
            return
        verb = "Would move" if result.dry_run else "Moved"
        self.stdout.write(
            f"\n{verb} {result.events:,} event(s) of {result.conversations:,} finished conversation(s) "
            f"({result.accounts:,} account(s) walked) to the archive."
        )

    def _progress(self, done: int, total: int) -> None:
        filled = round(30 * done / total)
        self.stdout.write(
            f"\r  Archiving events [{'#' * filled}{'.' * (30 - filled)}] account {done}/{total}", ending=""
        )
        self.stdout.flush()
