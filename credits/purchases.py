"""Buying a credit pack: a one-off Stripe invoice. The pack waits as `pending` and becomes active only
when Stripe reports the invoice paid (`invoice.paid` webhook); a voided invoice cancels it; a replayed
webhook never grants twice (the grant's ledger key is derived from the pack)."""

from __future__ import annotations

import datetime as dt
import logging

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from djstripe.models import Customer

from accounts.models import Account, CreditPackOffer, PricePlanVersion, StripeSyncStatus, User
from accounts.services import Actor, audit_log_write
from accounts.services.stripe_catalog import price_plan_version_stripe_sync
from billing_portal import clock, stripe_client
from billing_portal.stripe_client import StripeFailure

from .models import CreditLedgerEntry, CreditPack

logger = logging.getLogger(__name__)


def credit_pack_purchase(*, account: Account, offer: CreditPackOffer, actor: Actor) -> CreditPack:
    """Invoice the offer in Stripe and return the pending pack. Safe to call again for the same pack after a
    failure: every Stripe call carries a key derived from the pack (`credit_pack_purchase_retry`)."""
    if offer.version_id != account.plan_version_id:
        raise ValidationError({"offer": "This offer is not part of the account's price plan."})
    if account.status != Account.Status.ACTIVE:
        raise ValidationError({"account": "Only active accounts can buy credit packs."})
    customer = Customer.objects.filter(subscriber=account).first()
    if customer is None:
        raise ValidationError({"account": "This account has no Stripe customer yet."})
    now = clock.now()
    with transaction.atomic():
        pack = CreditPack.objects.create(
            account=account, source=CreditPack.Source.PURCHASE, status=CreditPack.Status.PENDING,
            granted=offer.resolutions, remaining=0, starts_at=now,
            expires_at=now + dt.timedelta(days=offer.validity_days), currency=account.currency,
            unit_amount_decimal=offer.unit_amount_decimal, offer=offer,
            created_by=actor if isinstance(actor, User) else None, created_at=now,
        )  # fmt: skip
        audit_log_write(
            actor=actor, action="credit_pack.purchase", obj=pack, account=account,
            after={"offer": offer.name, "resolutions": offer.resolutions, "amount_minor": offer.amount_minor},
        )  # fmt: skip
    return credit_pack_purchase_retry(pack=pack, customer_id=customer.id)


def credit_pack_purchase_retry(*, pack: CreditPack, customer_id: str) -> CreditPack:
    """Create, fill, finalise and try to pay the pack's invoice (each step idempotent)."""
    offer = pack.offer
    version = offer.version
    if version.stripe_sync_status != StripeSyncStatus.SYNCED or not offer.stripe_price_id:
        price_plan_version_stripe_sync(version=PricePlanVersion.objects.get(pk=version.pk))
        offer.refresh_from_db()
    metadata = {"credit_pack_uid": str(pack.uid), "portal_account_uid": str(pack.account.uid)}
    invoice = stripe_client.call(
        "create invoice",
        lambda c, o: c.v1.invoices.create(
            params={
                "customer": customer_id, "collection_method": "charge_automatically", "auto_advance": False,
                "pending_invoice_items_behavior": "exclude", "metadata": metadata,
                "description": f"{offer.name}: {offer.resolutions:,} resolutions for {offer.validity_days} days",
            },
            options=o,
        ),
        idempotency_key=f"pack:{pack.uid}:invoice",
    )  # fmt: skip
    CreditPack.objects.filter(pk=pack.pk).update(stripe_invoice_id=invoice.id)
    stripe_client.call(
        "create invoice item",
        lambda c, o: c.v1.invoice_items.create(
            params={
                "customer": customer_id, "invoice": invoice.id, "pricing": {"price": offer.stripe_price_id},
                "quantity": offer.resolutions, "metadata": metadata,
            },
            options=o,
        ),
        idempotency_key=f"pack:{pack.uid}:item",
    )  # fmt: skip
    invoice = stripe_client.call(
        "finalize invoice",
        lambda c, o: c.v1.invoices.finalize_invoice(invoice.id, params={"auto_advance": True}, options=o),
        idempotency_key=f"pack:{pack.uid}:finalize",
    )
    if invoice.status == "open":
        try:
            stripe_client.call(
                "pay invoice", lambda c, o: c.v1.invoices.pay(invoice.id, options=o),
                idempotency_key=f"pack:{pack.uid}:pay",
            )  # fmt: skip
        except StripeFailure as exc:  # e.g. no card on file: the customer pays the open invoice in Stripe
            logger.info("Invoice %s of pack %s not paid yet: %s", invoice.id, pack.uid, exc)
    pack.refresh_from_db()
    return pack


def credit_pack_invoice_event_apply(*, event: dict) -> CreditPack | None:
    """invoice.paid activates the pack it pays (once); invoice.voided / marked_uncollectible cancel a
    pending pack. Other invoices (subscriptions) are not ours and are ignored."""
    invoice = (event.get("data") or {}).get("object") or {}
    uid = (invoice.get("metadata") or {}).get("credit_pack_uid")
    if not uid:
        return None
    event_type = event.get("type")
    with transaction.atomic():
        pack = CreditPack.objects.select_for_update().filter(uid=uid).first()
        if pack is None:
            logger.warning("%s for unknown credit pack %s", event_type, uid)
            return None
        if event_type == "invoice.paid" and invoice.get("status") == "paid":
            if pack.status != CreditPack.Status.PENDING:
                return pack  # replayed or late: granted once already (or cancelled: a person looks)
            try:
                with transaction.atomic():
                    CreditLedgerEntry.objects.create(
                        pack=pack, account_id=pack.account_id, kind=CreditLedgerEntry.Kind.GRANT,
                        quantity=pack.granted, idempotency_key=f"grant:pack:{pack.uid}", created_at=clock.now(),
                    )  # fmt: skip
            except IntegrityError:
                return pack
            pack.status, pack.remaining = CreditPack.Status.ACTIVE, pack.granted
            pack.stripe_invoice_id = invoice.get("id", pack.stripe_invoice_id)
            pack.save(update_fields=["status", "remaining", "stripe_invoice_id"])
            audit_log_write(
                actor="stripe:invoice.paid", action="credit_pack.activate", obj=pack, account=pack.account,
                before={"status": "pending"}, after={"status": "active", "remaining": pack.granted},
            )  # fmt: skip
        elif (
            event_type in ("invoice.voided", "invoice.marked_uncollectible")
            and pack.status == CreditPack.Status.PENDING
        ):
            pack.status = CreditPack.Status.CANCELLED
            pack.save(update_fields=["status"])
            audit_log_write(
                actor=f"stripe:{event_type}", action="credit_pack.cancel", obj=pack, account=pack.account,
                before={"status": "pending"}, after={"status": "cancelled"},
            )  # fmt: skip
    return pack


def credit_packs_reconcile_pending(*, now: dt.datetime | None = None) -> int:
    """Ask Stripe about packs still waiting for payment, in case a webhook was lost or is late: a paid
    invoice activates its pack (through the same code as the webhook), a voided one cancels it."""
    activated = 0
    for pack in CreditPack.objects.filter(status=CreditPack.Status.PENDING).exclude(stripe_invoice_id=""):
        try:
            invoice = stripe_client.call(
                "retrieve invoice",
                lambda c, o, i=pack.stripe_invoice_id: c.v1.invoices.retrieve(i),
                idempotency_key=None,
            )
        except StripeFailure as exc:
            logger.warning("Could not check invoice %s of pack %s: %s", pack.stripe_invoice_id, pack.uid, exc)
            continue
        event_type = {"paid": "invoice.paid", "void": "invoice.voided", "uncollectible": "invoice.marked_uncollectible"}
        if invoice.status in event_type:
            event = {"type": event_type[invoice.status], "data": {"object": stripe_client.to_dict(invoice)}}
            updated = credit_pack_invoice_event_apply(event=event)
            activated += bool(updated and updated.status == CreditPack.Status.ACTIVE)
    return activated
