"""Buying a credit pack: a one-off Stripe invoice, as one resumable row.

The pack is the purchase. It waits as `pending` (pack status) while its `purchase_state` moves
pending -> invoice_created -> item_added -> finalized -> paid | void, each step recorded before the next Stripe
call, so a retry (same Idempotency-Key) or the billing cycle (`credit_purchases_resume`) continues the same
purchase and the same Stripe invoice instead of starting over. Every Stripe write carries a key derived from
the pack; because Stripe forgets keys after 24 hours, a resume first looks at what Stripe has (the customer's
invoices with our metadata, the invoice's lines) before creating anything again.

The pack becomes active only when Stripe reports the invoice paid (`invoice.paid`, or the cycle reading the
invoice), never before; a replayed webhook never grants twice (the grant's key is derived from the pack).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from djstripe.models import Customer

from accounts.locks import account_lock
from accounts.models import Account, AuditLogEntry, CreditPackOffer, PricePlanVersion, StripeSyncStatus, User
from accounts.services import Actor, audit_log_write
from accounts.services.stripe_catalog import price_plan_version_stripe_sync
from billing_portal import clock, stripe_client
from billing_portal.stripe_client import StripeFailure, StripeRejected, StripeUnavailable

from .locks import credit_pack_lock
from .models import CreditLedgerEntry, CreditPack

logger = logging.getLogger(__name__)
State = CreditPack.PurchaseState
IN_PROGRESS = (State.PENDING, State.INVOICE_CREATED, State.ITEM_ADDED)
OPEN = (*IN_PROGRESS, State.FINALIZED)
CLAIM_FOR = dt.timedelta(minutes=2)  # longer than one pass of every step with Stripe's retries
_LIST_PAGES = 10  # a customer with more than 1,000 invoices is not looked through further


class PurchaseMovedOn(Exception):
    """The purchase left the state this worker read (the webhook paid or voided it, or another worker took a
    step): this worker stops, and the purchase is returned as it stands."""


class CreditPurchaseInterrupted(StripeUnavailable):
    """Stripe could not be reached mid-purchase. The purchase is saved (`pack`) in the state it reached and
    is completed by a retry with the same Idempotency-Key or by the billing cycle. (A StripeUnavailable, so
    callers that handle Stripe outages in general handle this one too.)"""

    def __init__(self, pack: CreditPack, cause: StripeUnavailable):
        super().__init__(cause.operation, "", retryable=True, code=cause.code, status=cause.http_status)
        self.args = cause.args
        self.pack = pack


def credit_pack_purchase(
    *, account: Account, offer: CreditPackOffer, actor: Actor, idempotency_key: str | None = None
) -> CreditPack:
    """Save the purchase and run its Stripe steps; returns the pending pack (active once paid). With an
    idempotency key, a repeat continues (or returns) the first purchase of that key for the account; the same
    key for another offer is refused. Raises CreditPurchaseInterrupted when Stripe is unreachable."""
    if offer.version_id != account.plan_version_id:
        raise ValidationError({"offer": "This offer is not part of the account's price plan."})
    if idempotency_key is not None and not (isinstance(idempotency_key, str) and 0 < len(idempotency_key) <= 255):
        raise ValidationError({"idempotency_key": "An idempotency key is 1 to 255 characters."})
    now = clock.now()
    with transaction.atomic():
        locked = account_lock(account.pk)  # one purchase per key even when two requests race
        pack = None
        if idempotency_key is not None:
            pack = CreditPack.objects.filter(account=account, idempotency_key=idempotency_key).first()
            if pack is not None and (pack.offer_id != offer.pk or pack.source != CreditPack.Source.PURCHASE):
                raise ValidationError(
                    {"idempotency_key": f"This key was already used for another purchase (pack {pack.pk})."}
                )
        fresh = pack is None
        if fresh:
            if locked.status == Account.Status.CLOSED:
                raise ValidationError({"account": "This account is closed: it cannot buy credit packs."})
            if locked.status != Account.Status.ACTIVE:
                raise ValidationError({"account": "Only active accounts can buy credit packs."})
            if not Customer.objects.filter(subscriber=account).exists():
                raise ValidationError({"account": "This account has no Stripe customer yet."})
            pack = CreditPack.objects.create(
                account=account, source=CreditPack.Source.PURCHASE, status=CreditPack.Status.PENDING,
                purchase_state=State.PENDING, idempotency_key=idempotency_key or "",
                granted=offer.resolutions, remaining=0, starts_at=now,
                expires_at=now + dt.timedelta(days=offer.validity_days), currency=account.currency,
                unit_amount_decimal=offer.unit_amount_decimal, offer=offer,
                created_by=actor if isinstance(actor, User) else None, created_at=now,
            )  # fmt: skip
            audit_log_write(
                actor=actor, action="credit_pack.purchase", obj=pack, account=account,
                after={"offer": offer.name, "resolutions": offer.resolutions, "amount_minor": offer.amount_minor},
            )  # fmt: skip
    if pack.purchase_state not in IN_PROGRESS:
        return pack  # a repeat of a purchase whose invoice is finalised: nothing left to do here
    try:
        return credit_purchase_continue(pack=pack, fresh=fresh)
    except StripeUnavailable as exc:
        pack.refresh_from_db()
        raise CreditPurchaseInterrupted(pack, exc) from exc


def _claim(pack: CreditPack) -> bool:
    """Take the purchase for this worker (a short lease, so a crashed worker's claim lapses)."""
    now = clock.now()
    return bool(
        CreditPack.objects.filter(pk=pack.pk, purchase_state__in=IN_PROGRESS)
        .filter(Q(purchase_claimed_until__isnull=True) | Q(purchase_claimed_until__lte=now))
        .update(purchase_claimed_until=now + CLAIM_FOR)
    )


def _advance(pack: CreditPack, state: str, **fields) -> None:
    """Record a step (committed at once: no transaction is open around Stripe calls), only from the state
    this worker read: if the webhook (paid, void) or another worker moved the purchase meanwhile, its
    state stands and this one stops."""
    moved = CreditPack.objects.filter(pk=pack.pk, purchase_state=pack.purchase_state).update(
        purchase_state=state, **fields
    )
    if not moved:
        pack.refresh_from_db()
        raise PurchaseMovedOn(f"pack {pack.uid} is {pack.purchase_state} already")
    pack.purchase_state = state
    for name, value in fields.items():
        setattr(pack, name, value)


def _customer_id(pack: CreditPack) -> str:
    customer = Customer.objects.filter(subscriber_id=pack.account_id).first()
    if customer is None:
        raise ValidationError({"account": "This account has no Stripe customer yet."})
    return customer.id


def _invoice_in_stripe(customer_id: str, pack: CreditPack):
    """The pack's invoice if Stripe has one (found by our metadata), else None."""
    params = {"customer": customer_id, "limit": 100}
    for _ in range(_LIST_PAGES):
        page = stripe_client.call(
            "list invoices", lambda c, o, p=dict(params): c.v1.invoices.list(params=p), idempotency_key=None
        )
        for invoice in page.data:
            if (invoice.metadata or {}).get("credit_pack_uid") == str(pack.uid):
                return invoice
        if not page.has_more or not page.data:
            return None
        params["starting_after"] = page.data[-1].id
    return None


def _line_in_stripe(invoice_id: str, pack: CreditPack) -> bool:
    lines = stripe_client.call(
        "list invoice lines",
        lambda c, o: c.v1.invoices.line_items.list(invoice_id, params={"limit": 100}),
        idempotency_key=None,
    ).data
    return any((line.metadata or {}).get("credit_pack_uid") == str(pack.uid) for line in lines)


def credit_purchase_continue(*, pack: CreditPack, fresh: bool = False) -> CreditPack:
    """Run the purchase's steps not done yet, from the recorded state. `fresh` (the first pass, right after
    the row was saved) skips the look at what Stripe already has; every later pass looks first, because
    Stripe's idempotency keys last only 24 hours. Returns the pack as it now is; a purchase another worker
    is continuing is returned as it is. Raises StripeUnavailable (state kept) or StripeRejected (the
    purchase is marked failed and its pack cancelled: nothing was charged, the invoice was never final)."""
    if not _claim(pack):
        pack.refresh_from_db()
        return pack
    try:
        pack.refresh_from_db()
        offer = pack.offer
        customer_id = _customer_id(pack)
        version = offer.version
        if version.stripe_sync_status != StripeSyncStatus.SYNCED or not offer.stripe_price_id:
            price_plan_version_stripe_sync(version=PricePlanVersion.objects.get(pk=version.pk))
            offer.refresh_from_db()
        metadata = {"credit_pack_uid": str(pack.uid), "portal_account_uid": str(pack.account.uid)}
        try:
            if pack.purchase_state == State.PENDING:
                invoice = None if fresh else _invoice_in_stripe(customer_id, pack)
                if invoice is None:
                    invoice = stripe_client.call(
                        "create invoice",
                        lambda c, o: c.v1.invoices.create(
                            params={
                                "customer": customer_id, "collection_method": "charge_automatically",
                                "auto_advance": False, "pending_invoice_items_behavior": "exclude",
                                "metadata": metadata,
                                "description": f"{offer.name}: {offer.resolutions:,} resolutions for "
                                               f"{offer.validity_days} days",
                            },
                            options=o,
                        ),
                        idempotency_key=f"pack:{pack.uid}:invoice",
                    )  # fmt: skip
                _advance(pack, State.INVOICE_CREATED, stripe_invoice_id=invoice.id)
            invoice_id = pack.stripe_invoice_id
            if pack.purchase_state == State.INVOICE_CREATED:
                if fresh or not _line_in_stripe(invoice_id, pack):
                    stripe_client.call(
                        "create invoice item",
                        lambda c, o: c.v1.invoice_items.create(
                            params={
                                "customer": customer_id, "invoice": invoice_id,
                                "pricing": {"price": offer.stripe_price_id}, "quantity": offer.resolutions,
                                "metadata": metadata,
                            },
                            options=o,
                        ),
                        idempotency_key=f"pack:{pack.uid}:item",
                    )  # fmt: skip
                _advance(pack, State.ITEM_ADDED)
            if pack.purchase_state == State.ITEM_ADDED:
                invoice = None
                if not fresh:  # the finalise answer may have been lost after Stripe finalised it
                    invoice = stripe_client.call(
                        "retrieve invoice", lambda c, o: c.v1.invoices.retrieve(invoice_id), idempotency_key=None
                    )
                if invoice is None or invoice.status == "draft":
                    invoice = stripe_client.call(
                        "finalize invoice",
                        lambda c, o: c.v1.invoices.finalize_invoice(
                            invoice_id, params={"auto_advance": True}, options=o
                        ),
                        idempotency_key=f"pack:{pack.uid}:finalize",
                    )
                _advance(pack, State.FINALIZED)
                if invoice.status == "open":
                    _pay(pack, invoice_id)
        except StripeRejected as exc:
            _fail(pack, exc)
            raise
        except PurchaseMovedOn as moved:
            logger.info("Purchase step not recorded: %s", moved)
    finally:
        CreditPack.objects.filter(pk=pack.pk).update(purchase_claimed_until=None)
    pack.refresh_from_db()
    return pack


def _pay(pack: CreditPack, invoice_id: str) -> None:
    try:
        stripe_client.call(
            "pay invoice", lambda c, o: c.v1.invoices.pay(invoice_id, options=o),
            idempotency_key=f"pack:{pack.uid}:pay",
        )  # fmt: skip
    except StripeFailure as exc:  # e.g. no card on file: the customer pays the open invoice in Stripe
        logger.info("Invoice %s of pack %s not paid yet: %s", invoice_id, pack.uid, exc)


def _fail(pack: CreditPack, exc: StripeRejected) -> None:
    with transaction.atomic():
        account_lock(pack.account_id)
        locked = credit_pack_lock(pack.pk)
        if locked.purchase_state not in IN_PROGRESS:
            return
        locked.purchase_state, locked.status, locked.purchase_error = (
            State.FAILED,
            CreditPack.Status.CANCELLED,
            str(exc),
        )
        locked.save(update_fields=["purchase_state", "status", "purchase_error"])
        audit_log_write(
            actor="stripe:rejected", action="credit_pack.purchase_failed", obj=locked, account=locked.account,
            before={"status": "pending"}, after={"status": "cancelled"}, reason=str(exc),
        )  # fmt: skip


def credit_pack_invoice_event_apply(*, event: dict) -> CreditPack | None:
    """invoice.paid activates the pack it pays, once, even a pack cancelled earlier (the customer paid: it is
    activated and flagged for an admin); invoice.voided / marked_uncollectible cancel a pending pack. Other
    invoices (subscriptions) are not ours. Nothing is dropped silently: a payment for an unknown pack or a
    second invoice paid for one pack is logged at ERROR and recorded. Locks the account, then the pack."""
    invoice = (event.get("data") or {}).get("object") or {}
    uid = (invoice.get("metadata") or {}).get("credit_pack_uid")
    if not uid:
        return None
    event_type = event.get("type")
    invoice_id = invoice.get("id") or ""
    paid = event_type == "invoice.paid" and invoice.get("status") == "paid"
    with transaction.atomic():
        found = CreditPack.objects.filter(uid=uid).values_list("pk", "account_id").first() if _is_uuid(uid) else None
        if found is None:
            if paid:
                _record_unknown_pack_paid(invoice_id=invoice_id, uid=uid, event=event)
            else:
                logger.warning("%s for unknown credit pack %s (invoice %s)", event_type, uid, invoice_id)
            return None
        account_lock(found[1])
        pack = credit_pack_lock(found[0])
        if paid:
            _paid_apply(pack, invoice_id=invoice_id)
        elif (
            event_type in ("invoice.voided", "invoice.marked_uncollectible")
            and pack.status == CreditPack.Status.PENDING
        ):
            pack.status, pack.purchase_state = CreditPack.Status.CANCELLED, State.VOID
            pack.save(update_fields=["status", "purchase_state"])
            audit_log_write(
                actor=f"stripe:{event_type}", action="credit_pack.cancel", obj=pack, account=pack.account,
                before={"status": "pending"}, after={"status": "cancelled"},
            )  # fmt: skip
    return pack


def _is_uuid(value) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _record_unknown_pack_paid(*, invoice_id: str, uid: str, event: dict) -> None:
    logger.error("invoice.paid %s for unknown credit pack %s: money received for no pack", invoice_id, uid)
    AuditLogEntry.objects.create(
        created_at=clock.now(), actor_label="stripe:invoice.paid", action="credit_pack.invoice_paid_unknown_pack",
        object_type="stripe.invoice", object_id=invoice_id[:64], object_repr=f"invoice {invoice_id}"[:200],
        after={"credit_pack_uid": str(uid), "event": event.get("id")},
        reason="Stripe reported a paid invoice for a credit pack the portal does not know.",
    )  # fmt: skip


def _paid_apply(pack: CreditPack, *, invoice_id: str) -> None:
    """Activate the pack its invoice paid (locks held by the caller)."""
    if pack.status in (CreditPack.Status.ACTIVE, CreditPack.Status.EXPIRED):
        if invoice_id and pack.stripe_invoice_id and invoice_id != pack.stripe_invoice_id:
            logger.error(
                "Invoice %s paid for pack %s, already paid by %s", invoice_id, pack.uid, pack.stripe_invoice_id
            )
            _flag(
                pack,
                f"A second invoice ({invoice_id}) was paid for this pack, already paid by "
                f"{pack.stripe_invoice_id}: refund one of them.",
            )
        return  # replayed or late: granted once already
    before = pack.status
    try:
        with transaction.atomic():
            CreditLedgerEntry.objects.create(
                pack=pack, account_id=pack.account_id, kind=CreditLedgerEntry.Kind.GRANT,
                quantity=pack.granted, idempotency_key=f"grant:pack:{pack.uid}", created_at=clock.now(),
            )  # fmt: skip
    except IntegrityError:
        return
    pack.status, pack.remaining, pack.purchase_state = CreditPack.Status.ACTIVE, pack.granted, State.PAID
    pack.stripe_invoice_id = invoice_id or pack.stripe_invoice_id
    fields = ["status", "remaining", "stripe_invoice_id", "purchase_state"]
    action = "credit_pack.activate"
    if before == CreditPack.Status.CANCELLED:
        # The customer paid after all (an uncollectible invoice paid late): they get what they paid for.
        action = "credit_pack.activate_after_cancel"
        pack.needs_review = True
        pack.review_note = (
            f"Invoice {pack.stripe_invoice_id} was paid after the pack was cancelled (invoice voided or marked "
            "uncollectible): the pack was activated because the customer paid. Check the invoice's history."
        )
        fields += ["needs_review", "review_note"]
        logger.error("Credit pack %s was cancelled, then its invoice %s was paid: activated", pack.uid, invoice_id)
    pack.save(update_fields=fields)
    audit_log_write(
        actor="stripe:invoice.paid", action=action, obj=pack, account=pack.account,
        before={"status": before}, after={"status": "active", "remaining": pack.granted},
    )  # fmt: skip


def _flag(pack: CreditPack, note: str) -> None:
    if note in pack.review_note:
        return
    pack.needs_review = True
    pack.review_note = f"{pack.review_note}\n{note}".strip()
    pack.save(update_fields=["needs_review", "review_note"])
    audit_log_write(
        actor="stripe:invoice.paid", action="credit_pack.flag", obj=pack, account=pack.account, after={"note": note}
    )


@dataclass(frozen=True)
class PurchasesResumed:
    continued: int = 0  # purchases a cycle took a step further in Stripe
    activated: int = 0  # paid invoices that activated their pack
    cancelled: int = 0  # voided or uncollectible invoices
    failed: int = 0  # could not be continued this time (Stripe down or refusing): tried again next cycle


def credit_purchases_resume(*, now: dt.datetime, limit: int = 100) -> PurchasesResumed:
    """The billing cycle's step for purchases, at most `limit` of them per run, least recently checked first:
    continue those stuck in a middle state (a lost answer, Stripe down, a crash), then ask Stripe about
    finalised invoices still unpaid, in case a webhook was lost or is late (a paid invoice activates its
    pack through the same code as the webhook; a voided one cancels it)."""
    continued = activated = cancelled = failed = 0
    due = list(
        CreditPack.objects.filter(purchase_state__in=OPEN)
        .filter(Q(purchase_claimed_until__isnull=True) | Q(purchase_claimed_until__lte=now))
        .order_by(F("purchase_checked_at").asc(nulls_first=True), "pk")[:limit]
    )
    statuses = {"paid": "invoice.paid", "void": "invoice.voided", "uncollectible": "invoice.marked_uncollectible"}
    for pack in due:
        CreditPack.objects.filter(pk=pack.pk).update(purchase_checked_at=now)
        state = pack.purchase_state
        try:
            if state in IN_PROGRESS:
                pack = credit_purchase_continue(pack=pack)
                continued += pack.purchase_state != state
            if pack.purchase_state == State.FINALIZED and pack.stripe_invoice_id:
                invoice = stripe_client.call(
                    "retrieve invoice",
                    lambda c, o, i=pack.stripe_invoice_id: c.v1.invoices.retrieve(i),
                    idempotency_key=None,
                )
                if invoice.status == "draft":  # a purchase from before states were recorded: a person decides
                    _review_flag(
                        pack,
                        f"Invoice {pack.stripe_invoice_id} is still a draft in Stripe: finalise it "
                        "(the customer is charged) or delete it, then void or keep this pack.",
                    )
                    continue
                if invoice.status in statuses:
                    event = {"type": statuses[invoice.status], "data": {"object": stripe_client.to_dict(invoice)}}
                    updated = credit_pack_invoice_event_apply(event=event)
                    activated += bool(updated and updated.status == CreditPack.Status.ACTIVE)
                    cancelled += bool(updated and updated.status == CreditPack.Status.CANCELLED)
        except (StripeFailure, ValidationError) as exc:
            failed += 1
            logger.warning("Purchase of pack %s not continued (state %s): %s", pack.uid, state, exc)
    return PurchasesResumed(continued, activated, cancelled, failed)


def _review_flag(pack: CreditPack, note: str) -> None:
    """Stop working on a purchase that needs a person: flagged for admins, cancelled locally (nothing is
    charged by the portal from here), audited."""
    with transaction.atomic():
        account_lock(pack.account_id)
        locked = credit_pack_lock(pack.pk)
        if locked.purchase_state not in OPEN:
            return
        locked.purchase_state, locked.status = State.FAILED, CreditPack.Status.CANCELLED
        locked.needs_review, locked.review_note = True, note
        locked.save(update_fields=["purchase_state", "status", "needs_review", "review_note"])
        audit_log_write(
            actor="system:billing_cycle", action="credit_pack.purchase_review", obj=locked, account=locked.account,
            before={"purchase_state": pack.purchase_state}, after={"purchase_state": "failed", "status": "cancelled"},
            reason=note,
        )  # fmt: skip
        logger.error("Purchase of pack %s needs review: %s", locked.uid, note)
