"""A new customer account with its Stripe customer and subscription (DESIGN §4 create_account).

The account row is written first (status `provisioning`), so its id names every Stripe object and every
idempotency key. Then, with no transaction open: the Stripe customer, then the subscription with a seat
item and a metered resolution item. Then one transaction makes the account active, mirrors the Stripe
objects into dj-stripe and creates the first API key. If any step fails for good, the Stripe customer
is deleted and the account row removed: nothing half-made is left behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from djstripe.models import Customer, Subscription

from billing_portal import stripe_client
from billing_portal.stripe_client import StripeFailure

from ..models import Account, ApiKey, PricePlan, StripeSyncStatus, User
from .accounts import account_create
from .api_keys import api_key_create
from .audit import Actor, audit_log_write
from .stripe_catalog import price_plan_version_stripe_sync

logger = logging.getLogger(__name__)
MAX_SEATS = 100_000


@dataclass(frozen=True)
class ProvisionedAccount:
    account: Account
    api_key: ApiKey
    raw_api_key: str
    stripe_customer_id: str
    stripe_subscription_id: str


def _ensure_prices(version):
    if version.stripe_sync_status != StripeSyncStatus.SYNCED or not version.stripe_price_id:
        version = price_plan_version_stripe_sync(version=version)
    return version


def account_provision(
    *,
    name: str,
    plan: PricePlan,
    seats: int,
    actor: Actor,
    timezone: str = "UTC",
    billing_email: str = "",
    account_manager: User | None = None,
    slug: str | None = None,
) -> ProvisionedAccount:
    if isinstance(seats, bool) or not isinstance(seats, int) or seats < 0 or seats > MAX_SEATS:
        raise ValidationError({"seats": f"Seats must be a whole number from 0 to {MAX_SEATS:,}."})
    account = account_create(
        name=name, plan=plan, actor=actor, timezone=timezone, billing_email=billing_email,
        account_manager=account_manager, slug=slug, status=Account.Status.PROVISIONING,
    )  # fmt: skip
    customer = None
    try:
        version = _ensure_prices(account.plan_version)
        customer = stripe_client.call(
            "create customer",
            lambda c, o: c.v1.customers.create(
                params={
                    "name": account.name,
                    **({"email": account.billing_email} if account.billing_email else {}),
                    "metadata": {"djstripe_subscriber": str(account.pk), "portal_account_slug": account.slug},
                },
                options=o,
            ),
            idempotency_key=f"account:{account.pk}:customer",
        )
        subscription = stripe_client.call(
            "create subscription",
            lambda c, o: c.v1.subscriptions.create(
                params={
                    "customer": customer.id,
                    "items": [
                        {"price": version.stripe_seat_price_id, "quantity": seats},
                        {"price": version.stripe_price_id},
                    ],
                    "metadata": {"portal_account_id": str(account.pk), "plan_version": str(version.pk)},
                },
                options=o,
            ),
            idempotency_key=f"account:{account.pk}:subscription",
        )
        with transaction.atomic():
            account = Account.objects.select_for_update().get(pk=account.pk)
            account.status = Account.Status.ACTIVE
            account.save(update_fields=["status"])
            api_key = settings.STRIPE_SECRET_KEY
            Customer.sync_from_stripe_data(customer, api_key=api_key)
            Subscription.sync_from_stripe_data(subscription, api_key=api_key)
            key, raw_key = api_key_create(account=account, name="Default", actor=actor)
            audit_log_write(
                actor=actor, action="account.provision", obj=account, account=account,
                after={"stripe_customer_id": customer.id, "stripe_subscription_id": subscription.id, "seats": seats},
            )  # fmt: skip
    except BaseException as failure:
        _undo(account, customer, failure)
        raise
    return ProvisionedAccount(account, key, raw_key, customer.id, subscription.id)


def _undo(account: Account, customer, failure: BaseException) -> None:
    """Compensate a failed provisioning: remove the Stripe customer (which ends its subscriptions) and
    the local rows. If Stripe cannot be reached even for that, say so loudly: it needs a person."""
    if customer is not None:
        try:
            stripe_client.call("delete customer", lambda c, o: c.v1.customers.delete(customer.id), idempotency_key=None)
        except StripeFailure:
            logger.error(
                "Provisioning of account %s failed (%s) and its Stripe customer %s could not be deleted: "
                "delete it in Stripe.", account.pk, failure, customer.id,
            )  # fmt: skip
    with transaction.atomic():
        Customer.objects.filter(subscriber_id=account.pk).delete()
        ApiKey.objects.filter(account_id=account.pk).delete()
        audit_log_write(
            actor="system:provisioning", action="account.provision_failed", obj=account,
            before={"status": "provisioning"}, after=None, reason=str(failure)[:500],
        )  # fmt: skip
        Account.objects.filter(pk=account.pk).delete()
