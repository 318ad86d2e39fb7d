"""Stripe webhooks enter here: the signature is checked first, so a forged or unsigned request gets 400
and nothing at all is stored; then the event is recorded, de-duplicated and processed by dj-stripe.

dj-stripe's own view (WebhookEventTrigger.from_request) processes the event in a transaction and, in
there, re-reads the object from Stripe (and whatever it refers to). Here the same steps run in
stripe_client.mirror instead: those reads are made first, outside any transaction, and the processing,
the portal's webhook_post_process receivers included, is one transaction with no Stripe call in it. As
in dj-stripe, the trigger row is kept (with the exception) when processing fails, and the failure is a 500.
"""

from __future__ import annotations

from traceback import format_exc

from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from djstripe import signals
from djstripe.models import WebhookEndpoint, WebhookEventTrigger
from djstripe.models.webhooks import get_remote_ip
from djstripe.settings import djstripe_settings

from . import stripe_client


@csrf_exempt
@require_POST
def stripe_webhook(request, uuid):
    endpoint = get_object_or_404(WebhookEndpoint, djstripe_uuid=uuid)
    signature = request.headers.get("Stripe-Signature", "")
    if not stripe_client.webhook_signature_valid(
        request.body, signature, endpoint.secret, tolerance=endpoint.djstripe_tolerance
    ):
        return HttpResponseBadRequest("Missing or invalid Stripe-Signature.", content_type="text/plain")
    trigger = webhook_event_trigger_process(request=request, endpoint=endpoint)
    if not trigger.valid:
        return HttpResponseBadRequest("The event did not validate.", content_type="text/plain")
    return HttpResponse(str(trigger.id))


def webhook_event_trigger_process(*, request, endpoint: WebhookEndpoint) -> WebhookEventTrigger:
    """dj-stripe's WebhookEventTrigger.from_request (same signals, same rows), with the processing in
    stripe_client.mirror. Raises what processing raised, after saving the trigger with it."""
    try:
        body = request.body.decode(request.encoding or "utf-8")
    except (UnicodeDecodeError, LookupError):
        body = "(error decoding body)"
    owner = endpoint.djstripe_owner_account
    trigger = WebhookEventTrigger.objects.create(
        headers=dict(request.headers), body=body, remote_ip=get_remote_ip(request),
        stripe_trigger_account=owner, webhook_endpoint=endpoint,
    )  # fmt: skip
    api_key = (owner.default_api_key if owner else None) or djstripe_settings.get_default_api_key(endpoint.livemode)

    def process() -> None:  # may run more than once (each read dj-stripe asks for rolls it back)
        trigger.event, trigger.processed, trigger.exception, trigger.traceback = None, False, "", ""
        signals.webhook_pre_validate.send(sender=WebhookEventTrigger, instance=trigger)
        trigger.valid = trigger.validate(secret=endpoint.secret, api_key=api_key)
        signals.webhook_post_validate.send(sender=WebhookEventTrigger, instance=trigger, valid=trigger.valid)
        if not trigger.valid:
            return
        signals.webhook_pre_process.send(sender=WebhookEventTrigger, instance=trigger)
        if djstripe_settings.WEBHOOK_EVENT_CALLBACK:
            djstripe_settings.WEBHOOK_EVENT_CALLBACK(trigger, api_key=api_key)
        else:
            trigger.process(save=False, api_key=api_key)
        signals.webhook_post_process.send(sender=WebhookEventTrigger, instance=trigger, api_key=api_key)
        trigger.save()

    try:
        stripe_client.mirror(process)
    except Exception as exc:
        trigger.event, trigger.processed = None, False  # rolled back with the processing
        trigger.exception = str(exc)[: WebhookEventTrigger._meta.get_field("exception").max_length]
        trigger.traceback = format_exc()
        signals.webhook_processing_error.send(
            sender=WebhookEventTrigger, instance=trigger, api_key=api_key, exception=exc,
            data=getattr(exc, "http_body", ""),
        )  # fmt: skip
        trigger.save()
        raise
    return trigger
