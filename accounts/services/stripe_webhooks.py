"""The portal's webhook endpoint in Stripe, registered for dj-stripe's per-endpoint URL."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.urls import reverse
from djstripe.models import WebhookEndpoint

from billing_portal import stripe_client
from billing_portal.stripe_client import StripeRejected

# What the portal listens to: dj-stripe syncs customers, subscriptions and invoices from these events;
# billing.* (meter error reports) reach the portal through dj-stripe's webhook_post_process signal.
ENABLED_EVENTS = ["customer.*", "customer.subscription.*", "invoice.*", "invoiceitem.*", "billing.*"]


def stripe_webhook_endpoint_ensure(*, base_url: str | None = None) -> WebhookEndpoint:
    """Register <base_url>/stripe/webhook/<uuid>/ in Stripe once, and keep its signing secret for
    dj-stripe. STRIPE_WEBHOOK_SECRET, when set (e.g. by `stripe listen`), is the secret to check."""
    base_url = (base_url or settings.PORTAL_BASE_URL).rstrip("/")
    for endpoint in WebhookEndpoint.objects.exclude(id__startswith="we_cli_"):
        if not endpoint.url.startswith(base_url + "/"):
            continue
        try:  # still registered? (a new Stripe account or a reset emulator has no such endpoint)
            stripe_client.call(
                "retrieve webhook endpoint", lambda c, o, i=endpoint.id: c.v1.webhook_endpoints.retrieve(i),
                idempotency_key=None,
            )  # fmt: skip
        except StripeRejected as exc:
            if exc.http_status != 404:
                raise
            endpoint.delete()
            continue
        if settings.STRIPE_WEBHOOK_SECRET and endpoint.secret != settings.STRIPE_WEBHOOK_SECRET:
            endpoint.secret = settings.STRIPE_WEBHOOK_SECRET
            endpoint.save(update_fields=["secret"])
        return endpoint
    _orphans_delete(base_url)
    endpoint_uuid = uuid.uuid4()
    url = base_url + reverse("djstripe:djstripe_webhook_by_uuid", kwargs={"uuid": endpoint_uuid})
    created = stripe_client.call(
        "create webhook endpoint",
        lambda c, o: c.v1.webhook_endpoints.create(
            params={
                "url": url,
                "enabled_events": ENABLED_EVENTS,
                "api_version": settings.STRIPE_API_VERSION,
                "metadata": {"djstripe_uuid": str(endpoint_uuid)},
            },
            options=o,
        ),
        idempotency_key=f"webhook-endpoint:{endpoint_uuid}",
    )

    def sync() -> WebhookEndpoint:  # in stripe_client.mirror: dj-stripe's reads of Stripe come first
        endpoint = WebhookEndpoint.sync_from_stripe_data(created, api_key=settings.STRIPE_SECRET_KEY)
        endpoint.djstripe_uuid = endpoint_uuid
        endpoint.secret = settings.STRIPE_WEBHOOK_SECRET or created.secret
        endpoint.save()
        return endpoint

    return stripe_client.mirror(sync)


def _orphans_delete(base_url: str) -> int:
    """Endpoints this portal registered in Stripe (dj-stripe's uuid in their metadata, a URL under base_url) that
    it does not know locally: a create whose answer was lost. Their signing secret was never seen, so their
    deliveries could not be checked; left in Stripe, every event would come twice. Deleted before a new one is
    made. Returns how many."""
    prefix = base_url + "/stripe/webhook/"
    known = set(WebhookEndpoint.objects.values_list("id", flat=True))
    listed = stripe_client.call(
        "list webhook endpoints", lambda c, o: c.v1.webhook_endpoints.list(params={"limit": 100}), idempotency_key=None
    )
    deleted = 0
    for found in listed.data:
        data = stripe_client.to_dict(found)
        if data["id"] in known or not data.get("url", "").startswith(prefix):
            continue
        if not (data.get("metadata") or {}).get("djstripe_uuid"):
            continue  # not one of ours
        stripe_client.call(
            "delete webhook endpoint", lambda c, o, i=data["id"]: c.v1.webhook_endpoints.delete(i),
            idempotency_key=None,
        )  # fmt: skip
        deleted += 1
    return deleted


def stripe_webhook_endpoint_local(*, base_url: str | None = None) -> WebhookEndpoint:
    """A local-only endpoint for `stripe listen --forward-to <url>`: the CLI signs with its own secret
    (STRIPE_WEBHOOK_SECRET), and there is nothing to register in Stripe."""
    base_url = (base_url or settings.PORTAL_BASE_URL).rstrip("/")
    endpoint = WebhookEndpoint.objects.filter(id__startswith="we_cli_").first()
    if endpoint is None:
        endpoint_uuid = uuid.uuid4()
        endpoint = WebhookEndpoint.objects.create(
            id=f"we_cli_{endpoint_uuid.hex[:24]}",
            livemode=settings.STRIPE_LIVE_MODE,
            djstripe_uuid=endpoint_uuid,
            url=base_url + reverse("djstripe:djstripe_webhook_by_uuid", kwargs={"uuid": endpoint_uuid}),
            enabled_events=ENABLED_EVENTS,
            api_version=settings.STRIPE_API_VERSION,
            status="enabled",
            metadata={"djstripe_uuid": str(endpoint_uuid)},
        )
    endpoint.secret = settings.STRIPE_WEBHOOK_SECRET
    endpoint.save(update_fields=["secret"])
    return endpoint


def stripe_webhook_endpoint_retry(*, actor) -> WebhookEndpoint:
    """An admin's "register again": the same find-or-create as `stripe_setup` (an endpoint still registered in
    Stripe is kept, a missing one is created), called outside any transaction (stripe_client refuses a call
    inside one); what it found is audited. A Stripe failure is raised (StripeFailure) and nothing is recorded."""
    from django.core.exceptions import ValidationError
    from django.db import transaction

    from billing_portal.session_locks import session_lock

    from .audit import audit_log_write

    # One registration at a time (a double click, two admins): the second finds the first's endpoint.
    with session_lock("stripe-webhook-endpoint") as acquired:
        if not acquired:
            raise ValidationError("Another registration of the webhook endpoint is running: look again in a moment.")
        before = list(WebhookEndpoint.objects.order_by("created").values_list("id", flat=True))
        endpoint = stripe_webhook_endpoint_ensure()
    with transaction.atomic():
        audit_log_write(
            actor=actor, action="stripe_webhook_endpoint.ensure", obj=endpoint, before={"endpoints": before},
            after={"id": endpoint.id, "url": endpoint.url, "enabled_events": endpoint.enabled_events,
                   "status": endpoint.status, "created": endpoint.id not in before},
        )  # fmt: skip
    return endpoint
