"""Apply Stripe billing.meter.* events to the local meter row, newest event wins."""

from __future__ import annotations

import logging

from django.db import transaction

from ..models import BillingMeter

logger = logging.getLogger(__name__)


def billing_meter_event_apply(*, event: dict) -> BillingMeter | None:
    """Mirror a meter's status and its latest error report. Idempotent, and an event older than the one
    already applied changes nothing (Stripe does not promise delivery order)."""
    obj = (event.get("data") or {}).get("object") or {}
    event_type = event.get("type", "")
    created = int(event.get("created") or 0)
    meter_id = obj.get("id") if obj.get("object") == "billing.meter" else (obj.get("meter") or "")
    with transaction.atomic():
        meter = BillingMeter.objects.select_for_update().filter(stripe_id=meter_id).first()
        if meter is None:
            logger.info("Ignoring %s for unknown meter %r", event_type, meter_id)
            return None
        if created < meter.last_event_created:
            return meter
        if obj.get("object") == "billing.meter" and obj.get("status"):
            meter.status = obj["status"]
        if event_type == "billing.meter.error_report_triggered":
            meter.last_error_report = obj
        meter.last_event_created = created
        meter.save(update_fields=["status", "last_error_report", "last_event_created"])
    return meter
