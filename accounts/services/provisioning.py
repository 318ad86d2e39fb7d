"""A new customer account with its Stripe customer and subscription (DESIGN §4 create_account).

The account row is written first (status `provisioning`); its uid names every Stripe object and every
idempotency key. Then, with no transaction open: the Stripe customer, then the subscription with a seat
item and a metered resolution item. Then dj-stripe mirrors the Stripe objects (stripe_client.mirror:
its reads of Stripe first, then one transaction), and one transaction makes the account active and
creates the first API key. No Stripe call is made while a transaction is open.

If a step fails for good, the provisioning is undone: the Stripe customer is found again by replaying
its create with the same idempotency key (so even a customer whose creation answer was lost is found),
deleted (which ends its subscription), and the local rows removed. If Stripe cannot be reached even for
that, the account stays `provisioning`, and `provisioning_cleanup` (beat, billing_tick) finishes the undo.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from djstripe.models import Customer, Subscription

from billing_portal import clock, stripe_client
from billing_portal.stripe_client import StripeFailure, StripeRejected

from ..locks import account_lock
from ..models import Account, ApiKey, PricePlan, StripeSyncStatus, User
from .accounts import account_create
from .api_keys import api_key_create
from .audit import Actor, audit_log_write
from .billing_periods import billing_period_record
from .stripe_catalog import price_plan_version_stripe_sync

logger = logging.getLogger(__name__)
MAX_SEATS = 100_000
STUCK_AFTER = dt.timedelta(minutes=15)


class ProvisioningFailed(Exception):
    """Provisioning failed and was undone: nothing is left, in Stripe or here. Safe to try again."""


class ProvisioningStuck(Exception):
    """Provisioning failed and Stripe could not be reached to undo it: the account stays `provisioning`
    until provisioning_cleanup finishes the undo."""


@dataclass(frozen=True)
class ProvisionedAccount:
    account: Account
    api_key: ApiKey
    raw_api_key: str
    stripe_customer_id: str
    stripe_subscription_id: str


def _customer_create(account: Account):
    params = {
        "name": account.name,
        "metadata": {"djstripe_subscriber": str(account.pk), "portal_account_uid": str(account.uid)},
    }
    if account.billing_email:
        params["email"] = account.billing_email
    return stripe_client.call(
        "create customer",
        lambda c, o: c.v1.customers.create(params=params, options=o),
        idempotency_key=f"account:{account.uid}:customer",
    )


def _djstripe_mirror(customer, subscription) -> Subscription:
    """dj-stripe's copies of the new customer and subscription (with its items). dj-stripe reads related
    objects from Stripe while it writes; stripe_client.mirror makes those reads first, outside any
    transaction, then writes everything in one."""

    def sync() -> Subscription:
        Customer.sync_from_stripe_data(customer, api_key=settings.STRIPE_SECRET_KEY)
        return Subscription.sync_from_stripe_data(subscription, api_key=settings.STRIPE_SECRET_KEY)

    return stripe_client.mirror(sync)


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
    try:
        version = account.plan_version
        if version.stripe_sync_status != StripeSyncStatus.SYNCED or not version.stripe_price_id:
            version = price_plan_version_stripe_sync(version=version)
        customer = _customer_create(account)
        subscription = stripe_client.call(
            "create subscription",
            lambda c, o: c.v1.subscriptions.create(
                params={
                    "customer": customer.id,
                    "items": [
                        {"price": version.stripe_seat_price_id, "quantity": seats},
                        {"price": version.stripe_price_id},
                    ],
                    "metadata": {"portal_account_uid": str(account.uid), "plan_version": str(version.pk)},
                },
                options=o,
            ),
            idempotency_key=f"account:{account.uid}:subscription",
        )
        _djstripe_mirror(customer, subscription)
        with transaction.atomic():
            account = account_lock(account.pk)
            account.status = Account.Status.ACTIVE
            account.save(update_fields=["status"])
            billing_period_record(subscription=subscription, account=account)  # periods are Stripe's
            key, raw_key = api_key_create(account=account, name="Default", actor=actor)
            audit_log_write(
                actor=actor, action="account.provision", obj=account, account=account,
                after={"stripe_customer_id": customer.id, "stripe_subscription_id": subscription.id, "seats": seats},
            )  # fmt: skip
    except BaseException as failure:
        if provisioning_undo(account=account, reason=str(failure)):
            raise ProvisioningFailed(f"{failure}. Nothing was kept; run the command again.") from failure
        raise ProvisioningStuck(
            f"{failure}. Stripe could not be reached to undo it: account {account.pk} stays 'provisioning' "
            "until billing_tick (or the periodic cleanup) removes it."
        ) from failure
    return ProvisionedAccount(account, key, raw_key, customer.id, subscription.id)


def provisioning_undo(*, account: Account, reason: str) -> bool:
    """Delete the account's Stripe customer (if any) and the local rows. True when done; False when
    Stripe could not be reached (the account stays `provisioning`, to be retried)."""
    try:
        customer = _customer_create(account)  # a replay: returns the customer if it was ever created
        try:
            stripe_client.call("delete customer", lambda c, o: c.v1.customers.delete(customer.id), idempotency_key=None)
        except StripeRejected as exc:
            if exc.http_status != 404:
                raise
    except StripeFailure as exc:
        logger.error("Undo of provisioning of account %s failed, will retry: %s", account.pk, exc)
        return False
    with transaction.atomic():
        Customer.objects.filter(subscriber_id=account.pk).delete()
        ApiKey.objects.filter(account_id=account.pk).delete()
        audit_log_write(
            actor="system:provisioning", action="account.provision_failed", obj=account,
            before={"status": "provisioning"}, after=None, reason=reason[:500],
        )  # fmt: skip
        Account.objects.filter(pk=account.pk, status=Account.Status.PROVISIONING).delete()
    return True


def provisioning_cleanup(*, now: dt.datetime | None = None) -> int:
    """Undo provisionings that never finished (a crash, or Stripe down during the undo)."""
    now = now or clock.now()
    undone = 0
    for account in Account.objects.filter(status=Account.Status.PROVISIONING, created_at__lte=now - STUCK_AFTER):
        undone += provisioning_undo(account=account, reason="provisioning did not finish")
    return undone
