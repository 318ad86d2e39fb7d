"""Stripe events the accounts app acts on. dj-stripe itself mirrors customers, subscriptions and invoices
(re-reading each object from Stripe, so late or repeated events never roll its state back). billing.*
events have no dj-stripe model: they reach us through dj-stripe's webhook_post_process signal."""

from __future__ import annotations

import logging

from django.dispatch import receiver
from djstripe.signals import webhook_post_process

from .services.billing_periods import billing_period_record_from_event
from .services.stripe_events import billing_meter_event_apply

logger = logging.getLogger(__name__)


@receiver(webhook_post_process, dispatch_uid="accounts.billing_meter_events")
def on_stripe_webhook(sender, instance, **kwargs):
    event = instance.json_body
    if str(event.get("type", "")).startswith("billing.meter."):
        billing_meter_event_apply(event=event)
    elif str(event.get("type", "")).startswith("customer.subscription."):
        billing_period_record_from_event(event=event)  # a renewal or a change: the period is Stripe's
