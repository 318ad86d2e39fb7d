"""Stripe events the credits app acts on (through dj-stripe's webhook_post_process signal)."""

from django.dispatch import receiver
from djstripe.signals import webhook_post_process

from .purchases import credit_pack_invoice_event_apply


@receiver(webhook_post_process, dispatch_uid="credits.invoice_events")
def on_stripe_webhook(sender, instance, **kwargs):
    event = instance.json_body
    if str(event.get("type", "")).startswith("invoice."):
        credit_pack_invoice_event_apply(event=event)
