"""The account manager's book of accounts: per account this period's spend, credits, run-out date, open
alerts and last activity, searchable, sortable and paginated on the server.

Every figure is computed live, at one instant (`now`), from rollups kept in the same transactions as the
changes they count, never by scanning resolutions: the current period's overage from the reporting windows
(`MeterWindow.overage`, kept by funding and voids, each window tagged with its Stripe period), seats from
dj-stripe's mirror of the subscription's seat item, credits from the active packs' cached balances, the
burn rate from the daily rollups (the same two weeks the credit alerts use), last activity from the newest
resolution (one index probe per account) and the API key's last use (the ingestion's key, to the minute).
A column is computed for every matching account only when the page is sorted by it (one aggregate query
per column); the other columns are computed for the page's rows only. So a page costs a handful of
queries whatever the number of accounts, and its figures are exact as of `now` (shown on the page).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Count, IntegerField, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.fields.json import KT, KeyTextTransform
from django.db.models.functions import Cast
from djstripe.models import SubscriptionItem

from accounts.models import Account, BillingPeriod, PricePlanVersion, User
from accounts.selectors import account_list_visible
from billing_portal.periods import PeriodCalendar, RecordedPeriod
from credits.alerts import credit_standings
from credits.models import CreditAlert

from .dashboard import BILLED_SUBSCRIPTION_STATES
from .models import MeterWindow, Resolution
from .rating import PriceTerms, price_quantity
from .services.funding import _burn_per_day

PAGE_SIZE = 25
ROW_FIELDS = ("pk", "name", "slug", "currency", "status")  # BookRow's first fields, in order
# Subscription states whose seats are billed (as the invoice preview counts them).


class Sort:
    """The columns the book sorts by (GET `sort`), each a figure of BookRow."""

    NAME = "name"
    SPEND = "spend"
    CREDITS = "credits"
    RUN_OUT = "runout"
    ALERTS = "alerts"
    ACTIVITY = "activity"
    ALL = (NAME, SPEND, CREDITS, RUN_OUT, ALERTS, ACTIVITY)


@dataclass
class BookRow:
    """One account's figures as of the book's instant. Money in minor units of `currency`."""

    account_id: int
    name: str
    slug: str
    currency: str
    status: str
    period_start: dt.datetime | None = None
    period_end: dt.datetime | None = None
    seats: int | None = None  # None: no billed seat subscription mirrored from Stripe
    seats_minor: int = 0
    overage_resolutions: int = 0
    overage_minor: int = 0
    credits_remaining: int = 0
    credits_granted: int = 0
    burn_per_day: float = 0.0
    runs_out_on: dt.date | None = None  # at the current burn rate, before the credits expire
    credits_expire_on: dt.date | None = None  # the last active pack's expiry
    open_alerts: int = 0
    last_activity_at: dt.datetime | None = None

    @property
    def spend_minor(self) -> int:
        return self.seats_minor + self.overage_minor


@dataclass
class BookPage:
    rows: list[BookRow]
    now: dt.datetime
    query: str
    sort: str
    descending: bool
    page: int
    pages: int
    total: int  # accounts matching the search
    page_size: int = PAGE_SIZE
    columns: list[str] = field(default_factory=lambda: list(Sort.ALL))

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.page_size + 1 if self.total else 0

    @property
    def last_index(self) -> int:
        return min(self.page * self.page_size, self.total)


def account_book_get(
    *, user: User, now: dt.datetime, query: str = "", sort: str = Sort.NAME, descending: bool = False, page: int = 1
) -> BookPage:
    """One page of the accounts `user` may see (an admin all, a manager those assigned to them) matching
    `query` (name or slug), sorted by `sort` (ties by name, then id), with each row's figures as of `now`."""
    sort = sort if sort in Sort.ALL else Sort.NAME
    query = (query or "").strip()[:100]
    accounts = account_list_visible(user=user)
    if query:
        accounts = accounts.filter(Q(name__icontains=query) | Q(slug__icontains=query))
    total = accounts.count()
    pages = max(math.ceil(total / PAGE_SIZE), 1)
    page = min(max(page, 1), pages)
    window = slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE)

    if sort == Sort.NAME:
        ordered = accounts.order_by("-name" if descending else "name", "-pk" if descending else "pk")
        rows = [BookRow(*values) for values in ordered.values_list(*ROW_FIELDS)[window]]
    else:
        # Plain tuples, not model instances: thousands of rows are built per request when sorting by a figure.
        rows = [BookRow(*values) for values in accounts.order_by("name", "pk").values_list(*ROW_FIELDS)]
        _figures_fill(rows, {sort}, accounts, now)  # the sorted column, for every matching account
        rows = _sorted(rows, sort, descending)[window]
    done = {Sort.CREDITS, Sort.RUN_OUT} if sort in (Sort.CREDITS, Sort.RUN_OUT) else {sort}  # one query fills both
    _figures_fill(rows, set(Sort.ALL) - {Sort.NAME} - done, None, now)
    _periods_fill(rows, now)
    return BookPage(rows=rows, now=now, query=query, sort=sort, descending=descending, page=page, pages=pages,
                    total=total)  # fmt: skip


def _sort_key(sort: str):
    return {
        Sort.SPEND: lambda r: r.spend_minor,
        Sort.CREDITS: lambda r: r.credits_remaining,
        Sort.RUN_OUT: lambda r: r.runs_out_on,
        Sort.ALERTS: lambda r: r.open_alerts,
        Sort.ACTIVITY: lambda r: r.last_activity_at,
    }[sort]


def _sorted(rows: list[BookRow], sort: str, descending: bool) -> list[BookRow]:
    """Rows by the column (accounts without a value for it last, either way), ties by name (as given)."""
    key = _sort_key(sort)
    known = [r for r in rows if key(r) is not None]
    unknown = [r for r in rows if key(r) is None]
    known.sort(key=key, reverse=descending)  # stable: ties keep name order
    return known + unknown


def _figures_fill(rows: list[BookRow], columns: set[str], accounts: QuerySet | None, now: dt.datetime) -> None:
    """Fill `columns` of `rows`: with `accounts` (a queryset of the same accounts), each query selects by a
    subquery instead of listing ids (the sorted column over thousands of accounts)."""
    if not rows or not columns:
        return
    ids = accounts.values("pk") if accounts is not None else [r.account_id for r in rows]
    by_id = {r.account_id: r for r in rows}
    if Sort.SPEND in columns:
        _spend_fill(by_id, ids, now)
    if Sort.CREDITS in columns or Sort.RUN_OUT in columns:
        _credits_fill(by_id, ids, now)
    if Sort.ALERTS in columns:
        alerts = (
            CreditAlert.objects.filter(account_id__in=ids, active=True)
            .values("account_id")
            .annotate(n=Count("id"))
            .order_by()
            .values_list("account_id", "n")
        )
        for account_id, n in alerts:
            by_id[account_id].open_alerts = n
    if Sort.ACTIVITY in columns:
        _activity_fill(by_id, ids)


def _spend_fill(by_id: dict[int, BookRow], ids, now: dt.datetime) -> None:
    """Seats (the billed seat item's quantity × the seat price of the version whose seat Price it bills) plus
    the current period's overage, priced by tier with the account's plan version (a version holds for whole
    periods) exactly as Stripe prices the period's total."""
    overage = (
        MeterWindow.objects.filter(account_id__in=ids, period_end__gt=now, period_start__lte=now)
        .values("account_id")
        .annotate(n=Sum("overage"))
        .order_by()
        .values_list("account_id", "n")
    )
    for account_id, n in overage:
        by_id[account_id].overage_resolutions = n or 0
    versions = dict(Account.objects.filter(pk__in=ids).values_list("pk", "plan_version_id"))
    terms = {
        v.pk: PriceTerms.from_version(v)
        for v in PricePlanVersion.objects.filter(pk__in=set(versions.values())).prefetch_related("tiers")
    }
    for account_id, book_row in by_id.items():
        book_row.overage_minor = price_quantity(
            quantity=book_row.overage_resolutions, terms=terms[versions[account_id]]
        )

    seat_prices = dict(
        PricePlanVersion.objects.exclude(stripe_seat_price_id="").values_list(
            "stripe_seat_price_id", "seat_unit_amount"
        )
    )
    items = (
        SubscriptionItem.objects.filter(subscription__customer__subscriber_id__in=ids, price__id__in=list(seat_prices))
        .annotate(
            quantity_n=Cast(KT("stripe_data__quantity"), IntegerField()),
            state=KeyTextTransform("status", "subscription__stripe_data"),
        )
        .values_list("subscription__customer__subscriber_id", "price__id", "quantity_n", "state")
    )
    for account_id, price_id, quantity, state in items:
        if state not in BILLED_SUBSCRIPTION_STATES:  # (SQLite cannot compare a JSON text with IN)
            continue
        book_row = by_id[account_id]
        book_row.seats = (book_row.seats or 0) + (quantity or 0)
        book_row.seats_minor += (quantity or 0) * seat_prices[price_id]


def _periods_fill(rows: list[BookRow], now: dt.datetime) -> None:
    """The current Stripe period of the page's accounts (as Stripe shows it), from their recorded periods."""
    if not rows:
        return
    recorded = defaultdict(list)
    for account_id, *period in BillingPeriod.objects.filter(account_id__in=[r.account_id for r in rows]).values_list(
        "account_id", "start", "end", "billing_cycle_anchor", "interval", "interval_count"
    ):
        recorded[account_id].append(RecordedPeriod(*period))
    for row in rows:
        shown = PeriodCalendar(recorded[row.account_id]).current(now)
        if shown is not None:
            row.period_start, row.period_end = shown


def _credits_fill(by_id: dict[int, BookRow], ids, now: dt.datetime) -> None:
    """Credits left in the active packs and the date they run out at the recent burn rate (the credit alerts'
    standing and rate); no date when they expire first or nothing is being used."""
    account_ids = list(by_id)
    standings = credit_standings(account_ids=account_ids, now=now, burn_by_account=_burn_per_day(account_ids, now))
    for account_id, standing in standings.items():
        row = by_id[account_id]
        row.credits_remaining, row.credits_granted = standing.remaining, standing.granted
        row.burn_per_day = standing.burn_per_day
        row.credits_expire_on = standing.last_expiry.date() if standing.last_expiry else None
        if standing.remaining > 0 and standing.burn_per_day > 0 and standing.last_expiry:
            runs_out = now + dt.timedelta(days=standing.remaining / standing.burn_per_day)
            if runs_out < standing.last_expiry:
                row.runs_out_on = runs_out.date()


def _activity_fill(by_id: dict[int, BookRow], ids) -> None:
    """The newest resolution (one probe of the account's time index) or API key use, whichever is later."""
    newest = Resolution.objects.filter(account_id=OuterRef("pk")).order_by("-resolved_at").values("resolved_at")[:1]
    latest = (
        Account.objects.filter(pk__in=ids)
        .annotate(resolved=Subquery(newest), key_used=Max("api_keys__last_used_at"))
        .values_list("pk", "resolved", "key_used")
    )
    for account_id, resolved, key_used in latest:
        at = [t for t in (resolved, key_used) if t is not None]
        by_id[account_id].last_activity_at = max(at) if at else None
