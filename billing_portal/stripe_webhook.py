"""Stripe webhooks enter here: the signature is checked first, so a forged or unsigned request gets 400
and nothing at all is stored; then dj-stripe records, de-duplicates and processes the event."""

from __future__ import annotations

from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from djstripe.models import WebhookEndpoint
from djstripe.views import ProcessWebhookView

from . import stripe_client

_djstripe_view = ProcessWebhookView.as_view()


@csrf_exempt
@require_POST
def stripe_webhook(request, uuid):
    endpoint = get_object_or_404(WebhookEndpoint, djstripe_uuid=uuid)
    signature = request.headers.get("Stripe-Signature", "")
    if not stripe_client.webhook_signature_valid(
        request.body, signature, endpoint.secret, tolerance=endpoint.djstripe_tolerance
    ):
        return HttpResponseBadRequest("Missing or invalid Stripe-Signature.", content_type="text/plain")
    return _djstripe_view(request, uuid=uuid)
