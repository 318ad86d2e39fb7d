"""Billing periods are Stripe's (DESIGN §3.5): an account's periods are its subscription's metered item's
current periods, recorded as BillingPeriod rows whenever the subscription is synced.

Recorded from three places, all through `billing_period_record`: provisioning (the new subscription),
`customer.subscription.*` webhooks (dj-stripe's mirror, re-read from Stripe), and the billing cycle's
`billing_periods_sync`, which asks Stripe again about accounts whose latest known period has ended (a
renewal), a bounded number per cycle. Recording only adds a period or moves a known period's end, so a
late or repeated event changes nothing. Reads go through `billing_period_calendar` (one query, then
`PeriodCalendar.containing` per instant: see billing_portal/periods.py for the rules).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Q, Subquery
from djstripe.models import Subscription

from billing_portal import clock, stripe_client
from billing_portal.periods import PeriodCalendar, RecordedPeriod
from billing_portal.stripe_client import StripeRejected

from ..locks import account_lock
from ..models import Account, BillingPeriod
from .audit import audit_log_write

logger = logging.getLogger(__name__)
SYNC_LIMIT = 50  # accounts asked about per cycle
RENEWAL_RECHECK = dt.timedelta(hours=1)  # an ended period Stripe did not renew (cancelled) is asked about hourly


def _instant(value) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return dt.datetime.fromtimestamp(int(value), dt.UTC)


def _metered_item(subscription: Mapping) -> Mapping | None:
    items = (subscription.get("items") or {}).get("data") or []
    for item in items:
        recurring = (item.get("price") or {}).get("recurring") or {}
        if recurring.get("usage_type") == "metered":
            return item
    return items[0] if items else None


def _period_of_subscription(subscription: Mapping) -> RecordedPeriod | None:
    """The metered item's current period (where API versions since 2025-03-31 keep it; older ones kept
    it on the subscription, which is the fallback)."""
    item = _metered_item(subscription) or {}
    start = _instant(item.get("current_period_start") or subscription.get("current_period_start"))
    end = _instant(item.get("current_period_end") or subscription.get("current_period_end"))
    if start is None or end is None or end <= start:
        return None
    recurring = (item.get("price") or {}).get("recurring") or {}
    return RecordedPeriod(
        start=start, end=end, billing_cycle_anchor=_instant(subscription.get("billing_cycle_anchor")),
        interval=recurring.get("interval") or "month", interval_count=int(recurring.get("interval_count") or 1),
    )  # fmt: skip


def _account_of(subscription: Mapping) -> Account | None:
    uid = (subscription.get("metadata") or {}).get("portal_account_uid")
    if uid:
        account = Account.objects.filter(uid=uid).first()
        if account is not None:
            return account
    customer = subscription.get("customer")
    customer_id = customer.get("id") if isinstance(customer, Mapping) else customer
    return Account.objects.filter(djstripe_customers__id=customer_id).first() if customer_id else None


def billing_period_record(*, subscription: Mapping, account: Account | None = None) -> BillingPeriod | None:
    """Record the current period of a Stripe subscription (a dict as Stripe sends it) for its account:
    a new period is added (audited), a known one (same start) gets Stripe's end. Returns the row, or
    None when the subscription has no period or no portal account. Never calls Stripe."""
    subscription = stripe_client.to_dict(subscription)
    period = _period_of_subscription(subscription)
    account = account or _account_of(subscription)
    if period is None or account is None:
        logger.info("No billing period recorded for subscription %s", subscription.get("id"))
        return None
    values = {
        "end": period.end, "stripe_subscription_id": subscription.get("id") or "",
        "billing_cycle_anchor": period.billing_cycle_anchor, "interval": period.interval,
        "interval_count": period.interval_count,
    }  # fmt: skip
    for attempt in range(2):  # SQLite has no row locks: a concurrent first insert is retried as an update
        try:
            with transaction.atomic():
                account_lock(account.pk)  # funding reads the periods under the same lock
                row = BillingPeriod.objects.filter(account_id=account.pk, start=period.start).first()
                if row is None:
                    row = BillingPeriod.objects.create(account_id=account.pk, start=period.start, **values)
                    audit_log_write(
                        actor="system:stripe", action="billing_period.record", obj=row, account=account,
                        after={"start": row.start.isoformat(), "end": row.end.isoformat(),
                               "stripe_subscription_id": row.stripe_subscription_id},
                    )  # fmt: skip
                elif any(getattr(row, k) != v for k, v in values.items()):
                    before = {"end": row.end.isoformat()}
                    for key, value in values.items():
                        setattr(row, key, value)
                    row.save(update_fields=list(values))
                    audit_log_write(
                        actor="system:stripe", action="billing_period.update", obj=row, account=account,
                        before=before, after={"end": row.end.isoformat()},
                    )  # fmt: skip
            return row
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def billing_period_record_from_event(*, event: Mapping) -> BillingPeriod | None:
    """A `customer.subscription.*` webhook: record from dj-stripe's mirror of the subscription (which
    dj-stripe has just re-read from Stripe), or from the event itself if there is no mirror."""
    obj = (event.get("data") or {}).get("object") or {}
    mirrored = Subscription.objects.filter(id=obj.get("id")).first() if obj.get("id") else None
    return billing_period_record(subscription=mirrored.stripe_data if mirrored is not None else obj)


def billing_period_calendar(*, account_id: int) -> PeriodCalendar:
    """The account's recorded periods, ready for many `containing(instant)` lookups (one query)."""
    rows = BillingPeriod.objects.filter(account_id=account_id).values_list(
        "start", "end", "billing_cycle_anchor", "interval", "interval_count"
    )
    return PeriodCalendar([RecordedPeriod(*row) for row in rows])


@dataclass
class PeriodSyncResult:
    checked: int = 0
    renewed: int = 0
    failures: list[str] = field(default_factory=list)


def billing_periods_sync(*, now: dt.datetime | None = None, limit: int = SYNC_LIMIT) -> PeriodSyncResult:
    """Ask Stripe again about active accounts whose latest known period has ended (oldest first, at most
    `limit`, each at most hourly when Stripe has nothing new), mirror the subscription into dj-stripe and
    record its current period. No transaction is open during a Stripe call. StripeUnavailable (Stripe
    down) ends the step: the rest waits for the next cycle. A subscription Stripe rejects is reported."""
    now = now or clock.now()
    latest = BillingPeriod.objects.filter(account=OuterRef("pk")).order_by("-start")
    due = (
        Account.objects.filter(status=Account.Status.ACTIVE)
        .annotate(
            period_id=Subquery(latest.values("pk")[:1]),
            period_end=Subquery(latest.values("end")[:1]),
            checked_at=Subquery(latest.values("renewal_checked_at")[:1]),
            subscription_id=Subquery(latest.values("stripe_subscription_id")[:1]),
        )
        .filter(period_end__lte=now)
        .filter(Q(checked_at__isnull=True) | Q(checked_at__lte=now - RENEWAL_RECHECK))
        .order_by("period_end", "pk")
        .values_list("pk", "period_id", "period_end", "subscription_id")[:limit]
    )
    result = PeriodSyncResult()
    _unrecorded_periods_sync(now=now, limit=limit, result=result)
    for account_id, period_id, period_end, subscription_id in list(due):
        subscription = _subscription_read(account_id, subscription_id, result)
        if subscription is None:
            BillingPeriod.objects.filter(pk=period_id).update(renewal_checked_at=now)
            continue
        row = billing_period_record(subscription=subscription, account=Account.objects.get(pk=account_id))
        if row is not None and row.start >= period_end:
            result.renewed += 1
        else:  # not renewed (yet): ask again in an hour, not every minute
            BillingPeriod.objects.filter(pk=period_id).update(renewal_checked_at=now)
    return result


def _unrecorded_periods_sync(*, now: dt.datetime, limit: int, result: PeriodSyncResult) -> None:
    """Active accounts that have a Stripe subscription mirrored by dj-stripe but no recorded period (made
    before periods were recorded, or whose first record failed): read the subscription from Stripe and
    record its current period, so their overage is priced per Stripe period from then on."""
    recorded = BillingPeriod.objects.values("account_id")
    subscriptions = (
        Subscription.objects.filter(customer__subscriber__status=Account.Status.ACTIVE)
        .exclude(customer__subscriber__in=recorded)
        .order_by("customer__subscriber_id", "-created")
        .values_list("customer__subscriber_id", "id")
    )
    seen: set[int] = set()
    for account_id, subscription_id in subscriptions[: limit * 2]:
        if account_id in seen or len(seen) >= limit:
            continue
        seen.add(account_id)
        subscription = _subscription_read(account_id, subscription_id, result)
        if subscription is not None:
            billing_period_record(subscription=subscription, account=Account.objects.get(pk=account_id))


def _subscription_read(account_id: int, subscription_id: str, result: PeriodSyncResult):
    """The subscription as Stripe has it now, mirrored into dj-stripe (its reads outside any transaction);
    None when Stripe rejects the request (reported in `result`). StripeUnavailable propagates: the cycle's
    step ends and the next cycle goes on."""
    result.checked += 1
    try:
        subscription = stripe_client.call(
            "retrieve subscription", lambda c, o: c.v1.subscriptions.retrieve(subscription_id), idempotency_key=None
        )
    except StripeRejected as exc:
        logger.warning("Billing period sync of account %s: %s", account_id, exc)
        result.failures.append(f"account {account_id}: {exc}")
        return None
    stripe_client.mirror(lambda: Subscription.sync_from_stripe_data(subscription, api_key=settings.STRIPE_SECRET_KEY))
    return subscription
