"""Celery tasks of the accounts app: thin callers of services, with retries declared here."""

from __future__ import annotations

from celery import shared_task

from billing_portal.stripe_client import StripeUnavailable

from .models import PricePlanVersion, StripeSyncStatus
from .services.stripe_catalog import price_plan_version_stripe_sync


@shared_task(
    autoretry_for=(StripeUnavailable,), retry_backoff=True, retry_backoff_max=600, max_retries=12, acks_late=True
)
def price_plan_version_stripe_sync_task(version_id: int) -> str:
    """Create the Stripe Prices of a just-published version."""
    return price_plan_version_stripe_sync(version=PricePlanVersion.objects.get(pk=version_id)).stripe_price_id


@shared_task(acks_late=True)
def stripe_catalog_retry_task() -> int:
    """Periodic: finish the Stripe sync of published versions whose Prices are missing or failed."""
    pending = PricePlanVersion.objects.exclude(status=PricePlanVersion.Status.DRAFT).exclude(
        stripe_sync_status=StripeSyncStatus.SYNCED
    )
    for version_id in pending.values_list("pk", flat=True):
        price_plan_version_stripe_sync_task.delay(version_id)
    return pending.count()


@shared_task(acks_late=True)
def provisioning_cleanup_task() -> int:
    """Periodic: undo account provisionings that never finished."""
    from .services.provisioning import provisioning_cleanup

    return provisioning_cleanup()
