"""Funding: draw down credits for unfunded resolutions; the rest is overage, priced at its marginal share
of its billing period's charge."""

from __future__ import annotations

import datetime as dt
import operator
from collections import defaultdict
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Sum

from accounts.locks import accounts_lock
from accounts.models import Account, PricePlanVersion
from accounts.services.billing_periods import billing_period_calendar
from billing_portal import clock
from billing_portal.money import round_minor
from credits.alerts import credit_alerts_check
from credits.budget import budget_alerts_check, budget_alerts_to_check
from credits.models import CreditAlert
from credits.services import Demand, credits_draw

from .. import sql
from ..models import DailyUsage, FundingProgress, Resolution
from ..rating import PriceTerms, price_quantity
from ..selectors import billing_period_spend_list
from .metering import WindowCounter
from .rollups import LocalDates, rollup_row, rollups_apply_many

FUND_BATCH = 5000  # resolutions per statement
FUND_CHUNK = 50_000  # resolutions read, put in order and funded per transaction (under their accounts' locks)


def period_of(account, instant: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The [start, end) billing period of the account that holds `instant`: the one place funding, voids
    and rollups ask. Periods are Stripe's (accounts.BillingPeriod, see billing_portal/periods.py): the
    first period's start reaches back to EARLIEST (what came before the subscription belongs to it), and
    an instant past the last recorded period gets the period Stripe's anchor arithmetic will make.

    The account's periods are loaded once per account object (one query) and cached on it: funding locks
    fresh account objects each transaction, so each funding transaction sees the periods as of its start
    (recording a period takes the same account lock)."""
    return period_calendar(account).containing(instant)


def period_calendar(account):
    """The account's billing periods (see period_of), loaded once per account object."""
    calendar = getattr(account, "_billing_period_calendar", None)
    if calendar is None:
        calendar = account._billing_period_calendar = billing_period_calendar(account_id=account.pk)
    return calendar


@dataclass(frozen=True)
class FundingResult:
    credited: int
    overage: int


def resolutions_fund(*, now: dt.datetime | None = None, account_ids: list[int] | None = None) -> FundingResult:
    """Draw down credits for unfunded resolutions; what no pack covers is overage, priced at its marginal
    share of its billing period's charge (so the shares of a period add up to exactly what Stripe will
    invoice for it). Running it twice changes nothing the second time.

    Each account's resolutions are read on from its FundingProgress mark, in id order (the order they were
    written), up to FUND_CHUNK per transaction; a chunk is funded in the order its resolutions were
    resolved (resolved_at, then id), FUND_BATCH per statement. Small accounts go several to a transaction
    (at most FUND_BATCH resolutions in all), their rows locked in id order. No index involves the funding
    columns, so PostgreSQL writes the funding as heap-only (HOT) updates where the page has room."""
    now = now or clock.now()
    sizes = sql.unfunded_counts(account_ids)
    credited = overage = 0
    for group in _account_groups(sizes, FUND_BATCH):
        read_through: dict[int, int] = {}  # per account, the last id read by this call (marks may lag behind)
        while True:
            with transaction.atomic():
                c, o, more = _FundingRun(group, now, read_through).chunk_fund()
            credited, overage = credited + c, overage + o
            if not more:
                break
    # Alerts: accounts just funded, and accounts with a raised alert (a new pack may have cleared it).
    raised = CreditAlert.objects.filter(active=True).values_list("account_id", flat=True)
    if account_ids is not None:
        raised = raised.filter(account_id__in=account_ids)
    to_check = sorted(set(sizes) | set(raised))
    credit_alerts_check(account_ids=to_check, burn_by_account=_burn_per_day(to_check, now), now=now)
    # The monthly budget: the same accounts, plus those whose budget or period changed since its last check.
    to_budget = budget_alerts_to_check(now=now, changed=to_check, account_ids=account_ids)
    budget_alerts_check(
        account_ids=to_budget, spend_by_account=billing_period_spend_list(account_ids=to_budget, now=now), now=now
    )
    return FundingResult(credited, overage)


def _account_groups(sizes: dict[int, int], limit: int) -> list[list[int]]:
    """Accounts (in id order) packed into groups of at most `limit` resolutions; a bigger account alone."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for account_id, n in sizes.items():
        if current and total + n > limit:
            groups.append(current)
            current, total = [], 0
        current.append(account_id)
        total += n
    if current:
        groups.append(current)
    return groups


BURN_WINDOW_DAYS = 14


def _burn_per_day(account_ids: list[int], now: dt.datetime) -> dict[int, float]:
    """Credited resolutions a day per account, averaged over the last two weeks of rollups (one query)."""
    since = (now - dt.timedelta(days=BURN_WINDOW_DAYS)).date()
    rows = (
        DailyUsage.objects.filter(account_id__in=account_ids, date__gte=since)
        .values("account_id")
        .annotate(n=Sum("credited"))
        .order_by()
        .values_list("account_id", "n")
    )
    return {account_id: (n or 0) / BURN_WINDOW_DAYS for account_id, n in rows}


@dataclass(slots=True)
class _FundingRow:
    pk: int
    account_id: int
    resolved_at: dt.datetime
    plan_version_id: int
    funding: str = Resolution.Funding.UNFUNDED.value
    credit_pack_id: int | None = None
    amount_minor: int = 0


class _FundingRun:
    """One transaction's funding of an account group: takes the accounts' locks (in id order), reads the
    next chunk of their unfunded resolutions from their marks, funds it, and moves the marks. Each
    billing period's overage count is read once and then carried as it grows (the locks keep others from
    changing it meanwhile).

    The marks rely on one rule: an account's resolutions are only written under the account's lock (see
    conversations_evaluate), so their ids grow in the order they are committed, and funding (which holds
    the same lock) never skips over one that is still to commit."""

    def __init__(self, group: list[int], now: dt.datetime, read_through: dict[int, int]):
        self.group, self.now, self.read_through = group, now, read_through
        self.accounts = accounts_lock(group)
        self.marks = {pk: 0 for pk in group} | dict(
            FundingProgress.objects.filter(account_id__in=group).values_list("account_id", "funded_through_id")
        )
        # Reads go on from where this call's previous chunk stopped, even when a mark stays behind a
        # resolution that is not due yet: so a chunk never reads the same rows again.
        self.read_from = {pk: max(self.marks[pk], read_through.get(pk, 0)) for pk in group}
        self.overage_counts: dict[tuple[int, dt.datetime, dt.datetime], int] = {}
        self.terms: dict[int, PriceTerms] = {}
        self.local_date = LocalDates()
        self.windows = WindowCounter()  # the overage per reporting window, for the meter

    def chunk_fund(self) -> tuple[int, int, bool]:
        """Fund the next chunk; returns (credited, overage, whether more may be waiting)."""
        rows = sql.resolutions_past_marks(self.read_from, FUND_CHUNK)
        now = self.now
        due: list[_FundingRow] = []
        marks: dict[int, int] = {}  # (account, id) order: a mark moves to the last id read, but stops
        # before the first unfunded resolution that is not due yet (here, or in an earlier chunk of this call).
        held = {pk for pk in self.group if self.marks[pk] < self.read_from[pk]}
        for pk, account_id, resolved_at, plan_version_id, unfunded in rows:
            if unfunded and resolved_at <= now:
                due.append(_FundingRow(pk, account_id, resolved_at, plan_version_id))
            if account_id in held:
                continue
            if unfunded and resolved_at > now:
                marks[account_id] = pk - 1
                held.add(account_id)
            else:
                marks[account_id] = pk
        due.sort(key=operator.attrgetter("account_id", "resolved_at", "pk"))
        credited = 0
        for start in range(0, len(due), FUND_BATCH):
            credited += self._batch_fund(due[start : start + FUND_BATCH])
        sql.funding_marks_write(marks)
        for pk, account_id, *_ in rows:
            self.read_through[account_id] = pk  # rows come in (account, id) order: the last one wins
        return credited, len(due) - credited, len(rows) == FUND_CHUNK

    def _batch_fund(self, batch: list[_FundingRow]) -> int:
        """Fund a batch in the order given; returns how many were credited (the rest is overage)."""
        packs = credits_draw(
            demands=[Demand(r.account_id, f"resolution:{r.pk}", r.resolved_at) for r in batch], now=self.now
        )
        delta: dict[tuple[int, dt.date], list[int]] = defaultdict(rollup_row)
        overage_by_period: dict[tuple, list[_FundingRow]] = defaultdict(list)
        credited = 0
        accounts, local_date = self.accounts, self.local_date
        credit, overage = Resolution.Funding.CREDIT.value, Resolution.Funding.OVERAGE.value
        period: tuple[int, dt.datetime, dt.datetime] | None = None
        for resolution, pack_id in zip(batch, packs, strict=True):
            account_id = resolution.account_id
            account = accounts[account_id]
            if pack_id is not None:
                resolution.funding, resolution.credit_pack_id = credit, pack_id
                delta[(account_id, local_date(account, resolution.resolved_at))][1] += 1
                credited += 1
                continue
            resolution.funding = overage
            # Rows come in resolved_at order per account: most share the previous row's period.
            if period is None or period[0] != account_id or not period[1] <= resolution.resolved_at < period[2]:
                period = (account_id, *period_of(account, resolution.resolved_at))
            overage_by_period[period].append(resolution)
        if overage_by_period:
            self._overage_price(overage_by_period, delta)
        sql.funding_write(batch)
        rollups_apply_many(delta)
        self.windows.flush()
        return credited

    def _overage_price(self, overage_by_period: dict[tuple, list[_FundingRow]], delta: dict) -> None:
        """Give each overage resolution its marginal share of its period's charge, after the overage the
        period already has (counted once per transaction, then carried)."""
        unknown = [key for key in overage_by_period if key not in self.overage_counts]
        self.overage_counts.update(sql.overage_counts(unknown))
        versions = {r.plan_version_id for rows in overage_by_period.values() for r in rows} - set(self.terms)
        if versions:
            for pk, version in PricePlanVersion.objects.prefetch_related("tiers").in_bulk(versions).items():
                self.terms[pk] = PriceTerms.from_version(version)
        for key, resolutions in overage_by_period.items():
            account_id = key[0]
            account = self.accounts[account_id]
            before = self.overage_counts[key]
            # A plan version holds for whole periods, so one period's resolutions share one version.
            terms = self.terms[resolutions[0].plan_version_id]
            _overage_price(resolutions, terms, before)
            self.overage_counts[key] = before + len(resolutions)
            windows = self.windows
            for resolution in resolutions:
                row = delta[(account_id, self.local_date(account, resolution.resolved_at))]
                row[2] += 1
                row[3] += resolution.amount_minor
                windows.add(account, resolution.resolved_at)


def _overage_price(resolutions: list[_FundingRow], terms: PriceTerms, before: int) -> None:
    """Give each resolution, in order, its marginal share of the period's charge after `before` earlier
    overage resolutions of the same period."""
    for resolution, share in zip(resolutions, overage_shares(terms, before, len(resolutions)), strict=True):
        resolution.amount_minor = share


def overage_shares(terms: PriceTerms, before: int, n: int) -> list[int]:
    """The marginal shares of overage units before+1 ... before+n of a period: unit k's share is
    price(k) - price(k-1), except that the first unit also carries what an empty period would cost (a
    first tier's flat amount), so the shares of units 1..k always sum to price(k) exactly."""
    charged = price_quantity(quantity=before, terms=terms) if before else 0
    unit = terms.unit_amount_decimal if not terms.tiers_mode else None  # per-unit: a plain product
    shares = []
    for position in range(before + 1, before + n + 1):
        total = round_minor(unit * position) if unit is not None else price_quantity(quantity=position, terms=terms)
        shares.append(total - charged)
        charged = total
    return shares


def overage_periods_reprice(*, account: Account, periods: dict[tuple[dt.datetime, dt.datetime], int]) -> int:
    """Give the non-voided overage resolutions of the account's given billing periods (period -> its plan
    version id) their marginal shares again, in (resolved_at, id) order, and move the daily rollups by the
    differences: afterwards the shares of each period sum exactly to what Stripe charges for its count (0
    for none). Called after a void (an overage resolution fewer); runs in the caller's transaction, under
    the account's lock.

    Funding later gives a late resolution the share after its period's count at that time, which keeps
    the sum exact too (shares telescope), so a period's shares may follow funding order rather than
    (resolved_at, id) until its next void. Writes only the rows whose amount changed; a per-unit price in
    whole minor units gives every unit the same share, so nothing is even read then. Returns the number of
    resolutions whose amount changed."""
    changed_rows = 0
    local_date = LocalDates()
    versions = PricePlanVersion.objects.prefetch_related("tiers").in_bulk(set(periods.values()))
    terms_by_version = {pk: PriceTerms.from_version(version) for pk, version in versions.items()}
    delta: dict[tuple[int, dt.date], list[int]] = defaultdict(rollup_row)
    for (starts, ends), version_id in sorted(periods.items()):
        # A plan version holds for whole periods (see _FundingRun._overage_price).
        terms = terms_by_version[version_id]
        if not terms.tiers_mode and terms.unit_amount_decimal == terms.unit_amount_decimal.to_integral_value():
            continue  # every share is the unit amount: a void changes no other share
        rows = sql.period_overage_rows(account.pk, starts, ends)
        changed = []
        for (pk, resolved_at, amount), share in zip(rows, overage_shares(terms, 0, len(rows)), strict=True):
            if share != amount:
                changed.append((pk, share))
                delta[(account.pk, local_date(account, resolved_at))][3] += share - amount
        if changed:
            sql.resolution_amounts_write(changed)
            changed_rows += len(changed)
    rollups_apply_many(delta)
    return changed_rows
