"""Reads: usage from the daily rollups (never the ledger), resolutions with cursor pagination."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import F, Q, QuerySet, Sum
from django.http import Http404
from djstripe.models import Subscription

from accounts.models import Account, BillingPeriod, PricePlanVersion, User
from accounts.selectors import account_list_visible
from billing_portal.clock import INSTANT_MAX, INSTANT_MIN
from billing_portal.db import rows_fetch
from billing_portal.periods import PeriodCalendar, RecordedPeriod
from credits.budget import PeriodSpend

from .dashboard import BILLED_SUBSCRIPTION_STATES, billing_period_usage_get
from .models import DailyUsage, MeterReport, MeterWindow, PendingEvaluation, Resolution
from .rating import PriceTerms, price_quantity

METER_OPEN_STATES = (MeterReport.State.PENDING, MeterReport.State.SENT, MeterReport.State.REJECTED)
USAGE_KEYS = ("resolutions", "credited", "overage", "amount_minor")
MAX_USAGE_DAYS = 366
# The dates a read may ask for: those of the instants the portal takes (clock.parse_instant), so that the
# day after the last one, and its midnight in any timezone, are still dates Python can hold.
DATE_MIN = INSTANT_MIN.date()
DATE_MAX = INSTANT_MAX.date() - dt.timedelta(days=1)


def usage_get(*, account: Account, date_from: dt.date, date_to: dt.date) -> dict:
    """Every day of the range (days without resolutions count zero), and the totals."""
    rows = {
        row["date"]: row
        for row in DailyUsage.objects.filter(account=account, date__gte=date_from, date__lte=date_to).values(
            "date", *USAGE_KEYS
        )
    }
    days = []
    for offset in range((date_to - date_from).days + 1):  # never computes a day past date_to
        day = date_from + dt.timedelta(days=offset)
        row = rows.get(day)
        days.append({"date": day.isoformat(), **{k: (row[k] if row else 0) for k in USAGE_KEYS}})
    totals = {k: sum(d[k] for d in days) for k in USAGE_KEYS}
    return {"currency": account.currency, "days": days, "totals": totals}


def evaluation_backlog(*, account: Account) -> dict:
    """Events stored but not evaluated yet (EVENT_EVALUATION="deferred"): batches queued, conversations
    they touch, and since when. Usually empty: a worker evaluates each batch within seconds."""
    queued = PendingEvaluation.objects.filter(account=account)
    rows = list(queued.values_list("conversation_ids", "created_at"))
    return {
        "batches": len(rows),
        "conversations": len({cid for ids, _ in rows for cid in ids}),
        "oldest": min((at for _, at in rows), default=None),
    }


def resolution_list(*, account: Account, date_from: dt.date | None, date_to: dt.date | None) -> QuerySet[Resolution]:
    """The account's resolutions (voided ones included, marked), by resolved_at; dates in its timezone."""
    resolutions = Resolution.objects.filter(account=account)
    tz = zoneinfo.ZoneInfo(account.timezone)
    if date_from:
        resolutions = resolutions.filter(resolved_at__gte=dt.datetime.combine(date_from, dt.time(), tz))
    if date_to:
        resolutions = resolutions.filter(
            resolved_at__lt=dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), tz)
        )
    return resolutions


def resolution_get_visible(*, user: User, pk: int) -> Resolution:
    """For staff: the resolution if its account is visible to them, else 404."""
    resolution = (
        Resolution.objects.filter(pk=pk, account__in=account_list_visible(user=user)).select_related("account").first()
    )
    if resolution is None:
        raise Http404("No such resolution.")
    return resolution


def billing_period_overage_get(*, account, now) -> dict | None:
    """The account's current Stripe billing period (as Stripe shows it) and its overage so far: what the
    period's invoice will charge for resolutions, counted over exactly the resolutions funding priced in
    it (the first period includes what came before it). None when Stripe has no subscription for it.
    From the daily rollups and the period's two ragged edges (resolutions.dashboard), never a scan."""
    period = billing_period_usage_get(account=account, now=now)
    if period is None:
        return None
    return {
        "start": period["start"], "end": period["end"], "overage": period["overage"],
        "amount_minor": period["overage_minor"], "currency": account.currency,
    }  # fmt: skip


def meter_reporting_status(*, account: Account, now: dt.datetime) -> dict:
    """How far the account's overage is in Stripe, for its dashboard: `through`, the instant up to which
    every overage resolution is in Stripe's meter (the start of the earliest window not fully confirmed,
    else the end of the last closed window: a window is reported once it has closed); `waiting`, report
    rows not confirmed yet; `refused`, those Stripe refused (kept and retried; staff see why)."""
    size = settings.METER_WINDOW_SECONDS
    closed = dt.datetime.fromtimestamp(int(now.timestamp()) // size * size, dt.UTC)
    waiting_windows = MeterWindow.objects.filter(account_id=account.pk, end__lte=now).exclude(overage=F("reported"))
    open_rows = MeterReport.objects.filter(account_id=account.pk, state__in=METER_OPEN_STATES)
    starts = [
        waiting_windows.order_by("start").values_list("start", flat=True).first(),
        open_rows.order_by("window__start").values_list("window__start", flat=True).first(),
    ]
    return {
        "through": min([s for s in starts if s is not None] + [closed]),
        "waiting": open_rows.count(),
        "refused": open_rows.filter(state=MeterReport.State.REJECTED).count(),
        "window_minutes": size // 60,
    }


# --- The customer's resolution list and its CSV export ------------------------------------------------
RESOLUTION_VOIDED_CHOICES = ("all", "no", "yes")


def resolution_list_filtered(
    *,
    account: Account,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    kind: str = "",
    funding: str = "",
    voided: str = "all",
) -> QuerySet[Resolution]:
    """`resolution_list` (the API's selector: the same dates in the account's timezone, the same rows) narrowed
    by kind, funding and voided ("yes", "no" or "all"); empty values do not narrow."""
    resolutions = resolution_list(account=account, date_from=date_from, date_to=date_to)
    if kind:
        resolutions = resolutions.filter(kind=kind)
    if funding:
        resolutions = resolutions.filter(funding=funding)
    if voided == "yes":
        resolutions = resolutions.filter(voided_at__isnull=False)
    elif voided == "no":
        resolutions = resolutions.filter(voided_at__isnull=True)
    return resolutions


@dataclass(frozen=True)
class ResolutionPage:
    """One page of a keyset-paginated list, newest first: `newer`/`older` are the cursors of the pages beside
    it (None at either end). Nothing counts the whole list: an account may hold ten million resolutions."""

    rows: list[Resolution]
    newer: tuple[dt.datetime, int] | None
    older: tuple[dt.datetime, int] | None


def _after(resolutions: QuerySet[Resolution], position: tuple[dt.datetime, int]) -> QuerySet[Resolution]:
    """Rows after (resolved_at, id) in ascending order. The plain bound on resolved_at lets the index
    (account, resolved_at, id) start the scan at the position instead of filtering its way there."""
    at, pk = position
    return resolutions.filter(resolved_at__gte=at).filter(Q(resolved_at__gt=at) | Q(id__gt=pk))


def _before(resolutions: QuerySet[Resolution], position: tuple[dt.datetime, int]) -> QuerySet[Resolution]:
    at, pk = position
    return resolutions.filter(resolved_at__lte=at).filter(Q(resolved_at__lt=at) | Q(id__lt=pk))


def resolution_page_get(
    *,
    resolutions: QuerySet[Resolution],
    size: int,
    older_than: tuple[dt.datetime, int] | None = None,
    newer_than: tuple[dt.datetime, int] | None = None,
) -> ResolutionPage:
    """The page of `size` rows (newest first) just older than `older_than`, or just newer than `newer_than`,
    or the newest page. One query of size + 1 rows, on the (account, resolved_at, id) index."""
    resolutions = resolutions.select_related("credit_pack", "voided_by")
    if newer_than is not None:
        rows = list(_after(resolutions, newer_than).order_by("resolved_at", "id")[: size + 1])
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        if not rows:  # nothing newer any more: the newest page
            return resolution_page_get(resolutions=resolutions, size=size)
        return ResolutionPage(
            rows=rows,
            newer=(rows[0].resolved_at, rows[0].pk) if more_newer else None,
            older=(rows[-1].resolved_at, rows[-1].pk),
        )
    if older_than is not None:
        resolutions = _before(resolutions, older_than)
    rows = list(resolutions.order_by("-resolved_at", "-id")[: size + 1])
    more_older = len(rows) > size
    rows = rows[:size]
    return ResolutionPage(
        rows=rows,
        newer=(rows[0].resolved_at, rows[0].pk) if rows and older_than is not None else None,
        older=(rows[-1].resolved_at, rows[-1].pk) if more_older else None,
    )


def _rows_fetch(values: QuerySet) -> list[tuple]:
    """The rows of a values_list query. On PostgreSQL the ORM's own statement goes through billing_portal.db's
    binary cursor (psycopg's C loaders: about 15x faster than Django's per-value timestamp loader here), with
    the same values back (aware UTC datetimes); elsewhere through the ORM."""
    if connection.vendor != "postgresql":
        return list(values)
    sql, params = values.query.sql_with_params()
    return rows_fetch(sql, params)


RESOLUTION_EXPORT_FIELDS = (
    "resolved_at", "id", "conversation_id", "kind", "funding", "credit_pack_id", "amount_minor", "voided_at",
    "void_reason",
)  # fmt: skip


def resolution_export_chunks(*, resolutions: QuerySet[Resolution], chunk_size: int):
    """Every row of `resolutions`, oldest first, as tuples of RESOLUTION_EXPORT_FIELDS, `chunk_size` at a time:
    one keyset query per chunk (no OFFSET, no server-side cursor held across the response), so memory holds
    one chunk however many rows match."""
    ordered = resolutions.order_by("resolved_at", "id").values_list(*RESOLUTION_EXPORT_FIELDS)
    position = None
    while True:
        page = ordered if position is None else _after(ordered, position)
        chunk = _rows_fetch(page[:chunk_size])
        if not chunk:
            return
        yield chunk
        if len(chunk) < chunk_size:
            return
        position = (chunk[-1][0], chunk[-1][1])


# --- Invoices, from dj-stripe's mirror of Stripe ------------------------------------------------------
INVOICE_STATUS_WORDS = {
    "draft": "Draft (Stripe finalises it shortly)",
    "open": "Awaiting payment",
    "paid": "Paid",
    "void": "Void",
    "uncollectible": "Uncollectible",
}


def _instant(timestamp) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC) if timestamp else None


def _invoice_line(line: dict, *, packs: dict) -> dict:
    """One invoice line for a person: what it is (seats, overage, a credit pack, else Stripe's description),
    read from the keys the pinned API version has (`pricing.price_details`, `metadata`, `period`)."""
    from accounts.services.stripe_catalog import PRODUCTS

    product = (((line.get("pricing") or {}).get("price_details")) or {}).get("product")
    pack = packs.get((line.get("metadata") or {}).get("credit_pack_uid"))
    quantity = line.get("quantity")
    if pack is not None or product == PRODUCTS["credit_packs"][0]:
        kind, label = "pack", "Credit pack"
    elif product == PRODUCTS["seats"][0]:
        kind, label = "seats", "Helpdesk seats"
    elif product == PRODUCTS["resolutions"][0]:
        kind, label = "overage", "Overage resolutions"
    else:
        kind, label = "other", line.get("description") or "Other charge"
    period = line.get("period") or {}
    return {
        "kind": kind, "label": label, "description": line.get("description") or "", "quantity": quantity,
        "amount_minor": line.get("amount") or 0, "currency": line.get("currency") or "",
        "period_start": _instant(period.get("start")), "period_end": _instant(period.get("end")), "pack": pack,
    }  # fmt: skip


def _invoice_lines(invoice) -> list[dict]:
    """The invoice's lines as Stripe embedded them; Stripe embeds the first ten, so a longer invoice's lines
    come from dj-stripe's line items (which carry their invoice's id in their JSON)."""
    from djstripe.models import LineItem

    embedded = invoice.stripe_data.get("lines") or {}
    if not embedded.get("has_more"):
        return list(embedded.get("data") or [])
    items = LineItem.objects.filter(stripe_data__invoice=invoice.id).order_by("djstripe_id")
    return [item.stripe_data for item in items]


def invoice_list(*, account: Account, limit: int = 36) -> list[dict]:
    """The account's invoices in Stripe, newest first, as dj-stripe mirrors them (webhooks keep them current):
    number, period, status, total and labelled lines, and the hosted invoice page when Stripe has one."""
    from djstripe.models import Invoice

    from credits.models import CreditPack

    invoices = list(Invoice.objects.filter(customer__subscriber=account).order_by("-created", "-djstripe_id")[:limit])
    raw_lines = {invoice.id: _invoice_lines(invoice) for invoice in invoices}
    uids = {
        (line.get("metadata") or {}).get("credit_pack_uid")
        for lines in raw_lines.values() for line in lines
    } | {(invoice.stripe_data.get("metadata") or {}).get("credit_pack_uid") for invoice in invoices}  # fmt: skip
    uids = {uid for uid in uids if uid and _is_uuid(uid)}
    packs = {str(pack.uid): pack for pack in CreditPack.objects.filter(account=account, uid__in=uids)}
    result = []
    for invoice in invoices:
        data = invoice.stripe_data
        status = data.get("status") or ""
        starts, ends = _instant(data.get("period_start")), _instant(data.get("period_end"))
        result.append({
            "id": invoice.id, "number": data.get("number") or "", "status": status,
            "status_words": INVOICE_STATUS_WORDS.get(status, status.capitalize()),
            "created": _instant(data.get("created")) or invoice.created,
            "period_start": starts, "period_end": ends if ends != starts else None,
            "total_minor": data.get("total") or 0, "amount_due_minor": data.get("amount_due") or 0,
            "currency": data.get("currency") or account.currency,
            "hosted_invoice_url": _https(data.get("hosted_invoice_url")),
            "billing_reason": data.get("billing_reason") or "",
            "lines": [_invoice_line(line, packs=packs) for line in raw_lines[invoice.id]],
        })  # fmt: skip
    return result


def _https(url) -> str:
    """Stripe's hosted page, linked only as an https URL (never a javascript: or relative one)."""
    return url if isinstance(url, str) and url.startswith("https://") else ""


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def billing_period_spend_list(*, account_ids: list[int], now: dt.datetime) -> dict[int, PeriodSpend]:
    """Per account (with a Stripe subscription), its current billing period's spend: the seats the period
    bills (the dj-stripe mirror's seat quantity x the seat price of the version that seat Price belongs to)
    plus its overage money so far (the period's overage count from the reporting windows, priced as Stripe
    prices it, which is exactly the sum of the resolutions' marginal shares). A fixed number of queries for
    any number of accounts, none over resolutions: the budget alert asks it for thousands each cycle."""
    if not account_ids:
        return {}
    accounts = Account.objects.filter(pk__in=account_ids).select_related("plan_version")
    accounts = {a.pk: a for a in accounts.prefetch_related("plan_version__tiers")}
    recorded: dict[int, list[RecordedPeriod]] = {}
    periods = BillingPeriod.objects.filter(account_id__in=list(accounts)).values_list(
        "account_id", "start", "end", "billing_cycle_anchor", "interval", "interval_count"
    )
    for account_id, *row in periods:
        recorded.setdefault(account_id, []).append(RecordedPeriod(*row))
    current = {
        pk: PeriodCalendar(rows).current(now) for pk, rows in recorded.items() if PeriodCalendar(rows).current(now)
    }
    overage = {
        (row["account_id"], row["period_start"], row["period_end"]): row["n"] or 0
        for row in MeterWindow.objects.filter(account_id__in=list(current), period_end__gt=now)
        .values("account_id", "period_start", "period_end")
        .annotate(n=Sum("overage"))
        .order_by()
    }
    seats = _seat_quantities(list(current))
    seat_prices = dict(
        PricePlanVersion.objects.filter(stripe_seat_price_id__in={p for q in seats.values() for p in q})
        .exclude(stripe_seat_price_id="")
        .values_list("stripe_seat_price_id", "seat_unit_amount")
    )
    spend = {}
    for pk, (start, end) in current.items():
        account = accounts[pk]
        count = overage.get((pk, start, end), 0)
        # Priced even at 0: a graduated plan's first tier may carry a flat fee, which the period bills anyway.
        amount = price_quantity(quantity=count, terms=PriceTerms.from_version(account.plan_version))
        seats_minor = sum(
            quantity * seat_prices.get(price_id, account.plan_version.seat_unit_amount)
            for price_id, quantity in seats.get(pk, {}).items()
        )
        spend[pk] = PeriodSpend(start, end, seats_minor, amount, account.currency)
    return spend


def _seat_quantities(account_ids: list[int]) -> dict[int, dict[str, int]]:
    """account id -> {seat Price id: quantity} of its billing subscriptions' licensed items (dj-stripe's
    mirror, kept by provisioning, the subscription webhooks and the cycle's period sync)."""
    quantities: dict[int, dict[str, int]] = {}
    mirrored = Subscription.objects.filter(customer__subscriber_id__in=account_ids).values_list(
        "customer__subscriber_id", "stripe_data"
    )
    for account_id, data in mirrored:
        if (data or {}).get("status") not in BILLED_SUBSCRIPTION_STATES:
            continue
        for item in ((data.get("items") or {}).get("data")) or []:
            price = item.get("price") or {}
            if ((price.get("recurring") or {}).get("usage_type")) != "licensed":
                continue
            by_price = quantities.setdefault(account_id, {})
            by_price[price.get("id") or ""] = by_price.get(price.get("id") or "", 0) + int(item.get("quantity") or 0)
    return quantities
