"""The monthly budget alert and the customer's alert settings.

A billing admin sets an amount (minor units of the account's currency, blank = off). When the current
Stripe billing period's spend (seats + overage money) passes it, the billing admins and the account manager
are e-mailed and the dashboard shows a banner: one `CreditAlert` of kind `budget` per account, so the
generic banner loop shows it. The e-mail goes once per (account, billing period): a later period can alert
again; lowering the spend under the budget (raising the budget, a void) clears the banner, and passing it
again in the same period shows the banner again without a second e-mail.

The spend is computed by the caller (`resolutions.selectors.billing_period_spend_list`: rollups and the
dj-stripe mirror, never a scan of resolutions), as the burn rate is for `credit_alerts_check`: credits
does not read resolutions. The billing cycle's funding step checks the accounts it funded, those with an
active alert and those `budget_alerts_to_check` adds (a changed budget, a new period).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from accounts.locks import account_lock, accounts_lock
from accounts.models import Account
from accounts.services import Actor, audit_log_write
from billing_portal import clock
from billing_portal.money import format_money

from .alerts import _email, credit_alerts_check
from .models import CreditAlert

Kind = CreditAlert.Kind
THRESHOLD_RANGE = (1, 99)
BUDGET_MAX_MINOR = 10**15  # a sanity bound (ten trillion dollars), far above any real budget


@dataclass(frozen=True, slots=True)
class PeriodSpend:
    """One account's spend in its current Stripe billing period, in minor units of `currency`."""

    period_start: dt.datetime
    period_end: dt.datetime
    seats_minor: int
    overage_minor: int
    currency: str
    split_known: bool = True  # False: a total remembered from the last check, without its seats/overage split

    @property
    def total_minor(self) -> int:
        return self.seats_minor + self.overage_minor


def budget_alert_message(*, spend: PeriodSpend, budget_minor: int) -> str | None:
    """The banner's text when the period's spend passes the budget, else None (a pure function)."""
    if spend.total_minor <= budget_minor:
        return None
    money = lambda amount: format_money(amount, spend.currency)  # noqa: E731
    split = f" (seats {money(spend.seats_minor)}, overage {money(spend.overage_minor)})" if spend.split_known else ""
    return (
        f"This billing period's spend is {money(spend.total_minor)}{split}, past your monthly budget of "
        f"{money(budget_minor)}. The period ends on {spend.period_end.day} {spend.period_end:%b %Y}."
    )


def _budget_decide(alert: CreditAlert, *, spend: PeriodSpend | None, budget_minor: int | None, now) -> bool | None:
    """Bring `alert` (unsaved) in line with the spend and budget. Returns None when nothing changed, else
    whether an e-mail is due (only the first raise of a billing period e-mails)."""
    before = (alert.active, alert.message, alert.period_start, alert.spend_minor, alert.budget_minor)
    message = budget_alert_message(spend=spend, budget_minor=budget_minor) if spend and budget_minor else None
    new_period = spend is not None and alert.period_start != spend.period_start
    if spend is not None:
        alert.period_start, alert.period_end, alert.spend_minor = (
            spend.period_start,
            spend.period_end,
            spend.total_minor,
        )
    alert.budget_minor = budget_minor
    alert.checked_at = now
    email = False
    if message and (not alert.active or new_period):
        already_told = alert.raised_at is not None and spend.period_start <= alert.raised_at < spend.period_end
        alert.active, alert.message = True, message
        if not already_told:  # once per period: a banner shown again in the same period sends nothing
            alert.raised_at = now
            alert.times_raised += 1
            email = True
    elif message:
        alert.message = message  # current figures on the banner
    elif alert.active:
        alert.active, alert.cleared_at = False, now
    after = (alert.active, alert.message, alert.period_start, alert.spend_minor, alert.budget_minor)
    return email if after != before or email else None


def budget_alerts_check(
    *, account_ids: list[int], spend_by_account: dict[int, PeriodSpend], now: dt.datetime | None = None
) -> list[CreditAlert]:
    """Raise, update or clear the budget alert of each account (an account missing from `spend_by_account`
    has no Stripe billing period: its alert clears). Decides on two unlocked reads first: the usual case
    changes nothing and locks and writes nothing. Otherwise one transaction locks the accounts that change
    (in id order, as funding does), decides again on the locked state and writes the alerts with one upsert;
    e-mails go once it has committed. Returns the alerts e-mailed."""
    now = now or clock.now()
    if not account_ids:
        return []
    budgets = dict(Account.objects.filter(pk__in=account_ids).values_list("pk", "monthly_budget_minor"))
    first = _budget_changes(budgets, _budget_alerts_of(list(budgets)), spend_by_account, now)
    if not first:
        return []
    with transaction.atomic():
        locked = accounts_lock(sorted({alert.account_id for alert, _ in first}))  # only the accounts that change
        budgets = {pk: account.monthly_budget_minor for pk, account in locked.items()}
        changes = _budget_changes(budgets, _budget_alerts_of(list(budgets)), spend_by_account, now)
        CreditAlert.objects.bulk_create(
            [alert for alert, _ in changes],
            update_conflicts=True,
            unique_fields=["account", "kind"],
            update_fields=[
                "active", "message", "raised_at", "cleared_at", "times_raised", "period_start", "period_end",
                "spend_minor", "budget_minor", "checked_at",
            ],
        )  # fmt: skip
        told = [alert for alert, email in changes if email]
        for alert in told:
            transaction.on_commit(lambda a=alert: _email(a))
    return told


def _budget_alerts_of(account_ids: list[int]) -> dict[int, CreditAlert]:
    return {a.account_id: a for a in CreditAlert.objects.filter(account_id__in=account_ids, kind=Kind.BUDGET)}


def _budget_changes(budgets: dict, alerts: dict, spend_by_account: dict, now) -> list[tuple[CreditAlert, bool]]:
    """(alert as it should be stored, whether to e-mail) for each budget alert that changes; an account
    with no budget and no alert row needs none."""
    changes = []
    for pk, budget_minor in budgets.items():
        alert = alerts.get(pk)
        if alert is None:
            if budget_minor is None:
                continue
            alert = CreditAlert(account_id=pk, kind=Kind.BUDGET)
        outcome = _budget_decide(alert, spend=spend_by_account.get(pk), budget_minor=budget_minor, now=now)
        if outcome is not None or alert.pk is None:
            changes.append((alert, bool(outcome)))
    return changes


def budget_alerts_to_check(*, now: dt.datetime, changed: list[int], account_ids: list[int] | None = None) -> list[int]:
    """The accounts whose budget alert the cycle decides: those of `changed` (usage just funded, another
    alert active) that have a budget or an active budget alert, and those due even without new usage (a
    budget with no decision for it yet: just set or changed; a decision about a period that has ended, since
    a new period starts with its seats; an active alert whose budget was turned off). `account_ids` limits
    the due ones (a cycle for some accounts only). Two queries over the accounts table."""
    current = CreditAlert.objects.filter(
        account=OuterRef("pk"), kind=Kind.BUDGET, budget_minor=OuterRef("monthly_budget_minor"), period_end__gt=now
    )
    active = CreditAlert.objects.filter(account=OuterRef("pk"), kind=Kind.BUDGET, active=True)
    due = Account.objects.filter(
        Q(monthly_budget_minor__isnull=False, status=Account.Status.ACTIVE) & ~Exists(current)
        | Q(monthly_budget_minor__isnull=True) & Exists(active)
    )
    if account_ids is not None:
        due = due.filter(pk__in=account_ids)
    watched = Account.objects.filter(pk__in=changed).filter(Q(monthly_budget_minor__isnull=False) | Exists(active))
    return sorted(set(due.values_list("pk", flat=True)) | set(watched.values_list("pk", flat=True) if changed else []))


def account_alert_settings_update(
    *, account: Account, threshold_percent: int, budget_minor: int | None, actor: Actor
) -> Account:
    """Set the low-credit threshold (1-99 %) and the monthly budget (minor units, None = off), with one audit
    entry naming what changed. The alerts follow at once where the figures they need are known: the low-credit
    alert from the packs, the budget alert from the spend of its last check in the current period (the next
    billing cycle decides it again on fresh figures). Raises ValidationError in plain words, changing nothing."""
    low, high = THRESHOLD_RANGE
    if (
        isinstance(threshold_percent, bool)
        or not isinstance(threshold_percent, int)
        or not low <= threshold_percent <= high
    ):
        raise ValidationError({"threshold_percent": f"Choose a threshold from {low} to {high} %."})
    if budget_minor is not None and (
        isinstance(budget_minor, bool) or not isinstance(budget_minor, int) or not 0 < budget_minor <= BUDGET_MAX_MINOR
    ):
        raise ValidationError({"budget_minor": "A monthly budget is an amount above zero (or blank for no budget)."})
    now = clock.now()
    told = None
    with transaction.atomic():
        locked = account_lock(account.pk)
        before = {"low_credit_threshold_percent": locked.low_credit_threshold_percent,
                  "monthly_budget_minor": locked.monthly_budget_minor}  # fmt: skip
        after = {"low_credit_threshold_percent": threshold_percent, "monthly_budget_minor": budget_minor}
        if before == after:
            return locked
        Account.objects.filter(pk=locked.pk).update(**after)
        audit_log_write(
            actor=actor, action="account.alert_settings", obj=locked, account=locked,
            before={k: v for k, v in before.items() if after[k] != v},
            after={k: v for k, v in after.items() if before[k] != v},
        )  # fmt: skip
        alert = CreditAlert.objects.filter(account=locked, kind=Kind.BUDGET).first()
        if alert is not None and before["monthly_budget_minor"] != budget_minor:
            known = alert.period_end is not None and alert.period_end > now and alert.spend_minor is not None
            spend = (
                PeriodSpend(alert.period_start, alert.period_end, alert.spend_minor, 0, locked.currency, False)
                if known
                else None
            )
            if spend is not None or budget_minor is None:
                # The last check's figures, as one total (the banner's split waits for the next check).
                outcome = _budget_decide(alert, spend=spend, budget_minor=budget_minor, now=now)
                if outcome is not None:
                    alert.save()
                    told = alert if outcome else None
        if told is not None:
            transaction.on_commit(lambda: _email(told))
    if before["low_credit_threshold_percent"] != threshold_percent:
        credit_alerts_check(account_ids=[account.pk], burn_by_account={}, now=now, kinds=[Kind.LOW_BALANCE])
    account.refresh_from_db()
    return account


def budget_alert_get(*, account: Account) -> CreditAlert | None:
    """The account's budget alert row (its last decision), if it was ever checked."""
    return CreditAlert.objects.filter(account=account, kind=Kind.BUDGET).first()


__all__ = [
    "PeriodSpend", "account_alert_settings_update", "budget_alert_get", "budget_alert_message",
    "budget_alerts_check", "budget_alerts_to_check",
]  # fmt: skip
