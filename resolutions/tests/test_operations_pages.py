"""The operations pages (issue 12), through Django's test client: meter reports, reconciliation differences and
their resolution with a note, the Stripe sync of price versions and the webhook endpoint, the webhook log and the
audit log. Each list's filters, its empty state, a filter that cannot be read (a plain 400, nothing listed), and
that only admins get in."""

from __future__ import annotations

import datetime as dt
import json
import re
from html import unescape

import pytest
from django.db import transaction
from django.urls import reverse
from djstripe.models import Event, WebhookEndpoint, WebhookEventTrigger

from accounts.models import AuditLogEntry, PricePlan, PricePlanVersion, StripeSyncStatus
from accounts.services.audit import audit_log_write
from billing_portal import clock
from resolutions.models import MeterReconciliationDifference, MeterReport, MeterWindow
from tests.factories import AccountFactory

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
OPS_URLS = [
    "staff-ops", "staff-ops-meter-reports", "staff-ops-reconciliation", "staff-ops-stripe-sync", "staff-ops-webhooks",
    "staff-ops-audit",
]  # fmt: skip
State = MeterReport.State


@pytest.fixture
def admin_client(client, admin_user):
    admin_user.timezone = "UTC"
    admin_user.save(update_fields=["timezone"])
    client.force_login(admin_user)
    return client


def text_of(response) -> str:
    """The page's text, tags dropped and spaces folded: what a person reads."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", response.content.decode(), flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def rows(response, attr: str) -> list[int]:
    return [int(pk) for pk in re.findall(rf'data-{attr}="(\d+)"', response.content.decode())]


def report(account, hour: int, state: str, *, quantity: int = 3, error: str = "", sequence: int = 0) -> MeterReport:
    start = NOW - dt.timedelta(hours=hour)
    window, _ = MeterWindow.objects.get_or_create(
        account=account, start=start,
        defaults={"end": start + dt.timedelta(hours=1), "period_start": NOW - dt.timedelta(days=5),
                  "period_end": NOW + dt.timedelta(days=25)},
    )  # fmt: skip
    return MeterReport.objects.create(
        account=account, window=window, sequence=sequence, quantity=quantity, state=state,
        timestamp=start + dt.timedelta(minutes=1), identifier=f"ops-{account.pk}-{hour}-{sequence}", last_error=error,
        attempts=1 if state != State.PENDING else 0, created_at=start + dt.timedelta(hours=1),
        adjustment_minor=quantity * 99 if state == State.ADJUSTMENT else None,
    )  # fmt: skip


def difference(account, *, days_ago: int = 10, portal: int = 5, stripe: int = 7, resolved: bool = False):
    start = NOW - dt.timedelta(days=days_ago)
    return MeterReconciliationDifference.objects.create(
        account=account, period_start=start, period_end=start + dt.timedelta(days=30), portal=portal, stripe=stripe,
        first_found_at=NOW, last_checked_at=NOW, resolved_at=NOW if resolved else None,
    )  # fmt: skip


# --- who may open them ------------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "billing_admin", "manager"])
def test_only_admins_open_the_operations_pages(client, role, viewer, billing_admin, manager, account):
    user = {"viewer": viewer, "billing_admin": billing_admin, "manager": manager}[role]
    row = difference(account)
    client.force_login(user)
    for name in OPS_URLS:
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"] == reverse("home"), name
    resolve = reverse("staff-ops-difference-resolve", args=[row.pk])
    assert client.post(resolve, {"note": "ok", "idempotency_key": "k", "portal": 5, "stripe": 7}).status_code == 302
    row.refresh_from_db()
    assert row.resolved_at is None and not AuditLogEntry.objects.filter(action="meter_difference.resolve").exists()


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(reverse("staff-ops-audit"))
    assert response.status_code == 302 and reverse("login") in response["Location"]


@pytest.mark.django_db
def test_the_nav_shows_operations_to_admins_only(client, admin_user, manager):
    client.force_login(manager)
    assert reverse("staff-ops") not in client.get(reverse("staff-home")).content.decode()
    client.force_login(admin_user)
    assert f'href="{reverse("staff-ops")}"' in client.get(reverse("staff-home")).content.decode()


# --- the index ----------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_index_counts_what_needs_attention_and_links_to_each_page(admin_client, account):
    report(account, 2, State.REJECTED, error="Stripe: no such customer")
    report(account, 3, State.PENDING)
    report(account, 4, State.CONFIRMED)
    difference(account)
    difference(account, days_ago=40, resolved=True)
    trigger("invoice.paid", processed=False, exception="boom", at=NOW - dt.timedelta(hours=3), event_id="evt_again")
    trigger("invoice.paid", processed=True, at=NOW - dt.timedelta(hours=2), event_id="evt_again")  # went through
    trigger("invoice.finalized", processed=False, exception="boom", at=NOW - dt.timedelta(hours=1))
    trigger("invoice.created", processed=False, exception="boom", at=NOW - dt.timedelta(days=31))  # too old
    with clock.frozen(NOW):
        response = admin_client.get(reverse("staff-ops"))
    page = text_of(response)
    assert response.status_code == 200
    assert "1 Webhook deliveries not processed and not delivered again since" in page
    assert "1 Meter reports waiting to reach Stripe" in page and "1 Meter reports rejected by Stripe" in page
    assert "1 Open reconciliation differences" in page and "0 Price versions whose Stripe sync failed" in page
    html = response.content.decode()
    for name in OPS_URLS[1:]:
        assert f'href="{reverse(name)}' in html, name
    assert f'href="{reverse("staff-ops-meter-reports")}?state=rejected"' in html


# --- meter reports --------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_meter_reports_are_listed_with_their_state_and_stripes_message_and_filtered(admin_client, account):
    other = AccountFactory(name="Globex Helpdesk", slug="globex")
    rejected = report(account, 2, State.REJECTED, error="No such customer: 'cus_gone'")
    pending = report(account, 3, State.PENDING)
    sent = report(other, 4, State.SENT)
    confirmed = report(other, 5, State.CONFIRMED)
    adjustment = report(account, 6, State.ADJUSTMENT, quantity=-2)
    url = reverse("staff-ops-meter-reports")

    everything = admin_client.get(url)
    assert everything.status_code == 200
    # what needs an admin first: rejected, then too late for the meter, then on their way, then done
    assert rows(everything, "report") == [rejected.pk, adjustment.pk, sent.pk, pending.pk, confirmed.pk]
    page = text_of(everything)
    assert "No such customer: 'cus_gone'" in page and "Rejected by Stripe" in page and "-$1.98" in page

    assert rows(admin_client.get(url, {"state": "rejected"}), "report") == [rejected.pk]
    assert rows(admin_client.get(url, {"state": "waiting"}), "report") == [sent.pk, pending.pk]
    assert rows(admin_client.get(url, {"account": "globex"}), "report") == [sent.pk, confirmed.pk]
    assert rows(admin_client.get(url, {"account": str(account.pk), "state": "pending"}), "report") == [pending.pk]
    none = admin_client.get(url, {"state": "confirmed", "account": str(account.pk)})
    assert (
        none.status_code == 200 and rows(none, "report") == [] and "No meter reports match this filter" in text_of(none)
    )


@pytest.mark.django_db
def test_no_meter_reports_yet_says_so(admin_client):
    response = admin_client.get(reverse("staff-ops-meter-reports"))
    assert response.status_code == 200 and "No meter reports yet" in text_of(response)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"state": "held"}, "Pick a state from the list."),
        ({"account": "no-such-account"}, "No account has the id or slug “no-such-account”."),
        ({"account": "99999999"}, "No account has the id or slug “99999999”."),
        ({"account": "x" * 500}, "Ensure this value has at most 200 characters"),
        ({"account": "１２"}, "No account has the id or slug “１２”."),  # full-width digits are not an id
    ],
)
def test_a_meter_report_filter_that_cannot_be_read_is_a_plain_400(admin_client, account, query, message):
    report(account, 2, State.REJECTED)
    response = admin_client.get(reverse("staff-ops-meter-reports"), query)
    assert response.status_code == 400
    assert message in text_of(response) and "Nothing shown: the filter needs a fix." in text_of(response)
    assert rows(response, "report") == []


@pytest.mark.django_db
def test_meter_reports_are_paginated_and_a_bad_page_number_is_the_first_page(admin_client, account):
    made = [report(account, hour, State.CONFIRMED) for hour in range(1, 53)]  # 52 rows, newest first
    url = reverse("staff-ops-meter-reports")
    first = admin_client.get(url, {"state": "confirmed"})
    assert len(rows(first, "report")) == 50 and "Page 1 of 2" in text_of(first)
    assert "?state=confirmed&amp;page=2" in first.content.decode()  # the filter is kept from page to page
    second = admin_client.get(url, {"state": "confirmed", "page": "2"})
    assert rows(second, "report") == [made[-2].pk, made[-1].pk]
    for bad in ("abc", "0", "-1", "²", "99"):
        response = admin_client.get(url, {"page": bad})
        assert response.status_code == 200 and len(rows(response, "report")) in (50, 2), bad


# --- reconciliation differences -------------------------------------------------------------------------------
@pytest.mark.django_db
def test_differences_show_both_figures_open_first_and_filter(admin_client, account, admin_user):
    other = AccountFactory(name="Globex Helpdesk", slug="globex")
    resolved = difference(account, days_ago=40, portal=10, stripe=12, resolved=True)
    mine = difference(account, portal=5, stripe=7)
    theirs = difference(other, days_ago=12, portal=9, stripe=4)
    url = reverse("staff-ops-reconciliation")

    response = admin_client.get(url)
    assert rows(response, "difference") == [mine.pk, theirs.pk, resolved.pk]
    page = text_of(response)
    assert "Acme Support" in page and "+2 Stripe counts more" in page and "-5 Stripe counts fewer" in page
    assert "the figures agreed" in page  # the resolved one was resolved by a run, not an admin
    assert f'href="{reverse("staff-ops-difference-resolve", args=[mine.pk])}"' in response.content.decode()
    assert reverse("staff-ops-difference-resolve", args=[resolved.pk]) not in response.content.decode()

    assert rows(admin_client.get(url, {"state": "open"}), "difference") == [mine.pk, theirs.pk]
    assert rows(admin_client.get(url, {"state": "resolved"}), "difference") == [resolved.pk]
    assert rows(admin_client.get(url, {"account": "globex", "state": "open"}), "difference") == [theirs.pk]
    bad = admin_client.get(url, {"state": "closed"})
    assert bad.status_code == 400 and "Pick open or resolved from the list." in text_of(bad)
    assert rows(bad, "difference") == []


@pytest.mark.django_db
def test_no_differences_says_every_period_agrees(admin_client):
    response = admin_client.get(reverse("staff-ops-reconciliation"))
    assert "every period reconciled so far agrees with Stripe" in text_of(response)


def _key(response) -> str:
    return re.search(r'name="idempotency_key" value="([^"]+)"', response.content.decode()).group(1)


@pytest.mark.django_db
def test_resolving_a_difference_with_a_note_is_kept_audited_and_a_double_submit_is_one_resolution(
    admin_client, account, admin_user
):
    row = difference(account)
    url = reverse("staff-ops-difference-resolve", args=[row.pk])
    form = admin_client.get(url)
    page = text_of(form)
    assert (
        form.status_code == 200
        and "Portal (confirmed meter events) 5" in page
        and "Stripe (meter event summary) 7" in page
    )
    key = _key(form)
    body = {"idempotency_key": key, "portal": "5", "stripe": "7", "note": "Credit note CN-0042 issued for the 2 extra."}

    with clock.frozen(NOW + dt.timedelta(hours=1)):
        done = admin_client.post(url, body)
        again = admin_client.post(url, body)  # the same form submitted twice

    assert done.status_code == 302 and done["Location"] == reverse("staff-ops-reconciliation")
    assert again.status_code == 302
    row.refresh_from_db()
    assert row.resolved_at == NOW + dt.timedelta(hours=1) and row.resolved_by == admin_user
    assert row.resolution_note == "Credit note CN-0042 issued for the 2 extra." and row.resolution_key == key
    (entry,) = AuditLogEntry.objects.filter(action="meter_difference.resolve")
    assert entry.actor == admin_user and entry.account == account and entry.reason == row.resolution_note
    assert entry.before["resolved_at"] is None and (entry.after["portal"], entry.after["stripe"]) == (5, 7)
    listed = text_of(admin_client.get(reverse("staff-ops-reconciliation")))
    assert "by finance-admin: “Credit note CN-0042 issued for the 2 extra.”" in listed
    assert "is resolved" in listed  # the message after the redirect


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"note": ""}, "Write a note saying why these figures are accepted."),
        ({"note": "   \n "}, "Write a note saying why these figures are accepted."),
        ({"note": "x" * 2001}, "Ensure this value has at most 2000 characters"),
        ({"idempotency_key": ""}, "This form is out of date: reload the page and resolve again."),
        ({"portal": "five"}, "This form is out of date: reload the page and resolve again."),
        ({"stripe": "8"}, "The figures changed since this page was opened: now portal 5, Stripe 7."),
    ],
)
def test_a_refused_resolution_explains_itself_and_changes_nothing(admin_client, account, change, message):
    row = difference(account)
    url = reverse("staff-ops-difference-resolve", args=[row.pk])
    body = {"idempotency_key": _key(admin_client.get(url)), "portal": "5", "stripe": "7", "note": "fine", **change}
    response = admin_client.post(url, body)
    assert response.status_code == 400 and message in text_of(response)
    row.refresh_from_db()
    assert (row.resolved_at, row.resolved_by, row.resolution_note, row.resolution_key) == (None, None, "", None)
    assert not AuditLogEntry.objects.filter(action="meter_difference.resolve").exists()


@pytest.mark.django_db
def test_a_difference_resolved_meanwhile_is_not_resolved_again_and_an_unknown_one_is_404(admin_client, account):
    row = difference(account)
    url = reverse("staff-ops-difference-resolve", args=[row.pk])
    first, second = admin_client.get(url), admin_client.get(url)  # two admins open the same form
    body = {"portal": "5", "stripe": "7", "note": "ok"}
    assert admin_client.post(url, {**body, "idempotency_key": _key(first)}).status_code == 302
    late = admin_client.post(url, {**body, "idempotency_key": _key(second), "note": "mine"})
    assert late.status_code == 400  # refused: the page says it is resolved, by whom, and offers no form
    assert "This difference was already resolved on" in text_of(late) and "by finance-admin: “ok”" in text_of(late)
    assert "<textarea" not in late.content.decode()
    row.refresh_from_db()
    assert row.resolution_note == "ok" and AuditLogEntry.objects.filter(action="meter_difference.resolve").count() == 1
    assert admin_client.get(reverse("staff-ops-difference-resolve", args=[row.pk + 999])).status_code == 404


# --- Stripe sync --------------------------------------------------------------------------------------------------
def _published(status: str, error: str = "") -> PricePlanVersion:
    version = PricePlan.objects.get(slug="fin-standard").current_version()
    PricePlanVersion.objects.filter(pk=version.pk).update(stripe_sync_status=status, stripe_sync_error=error)
    version.refresh_from_db()
    return version


@pytest.mark.django_db
def test_the_sync_page_shows_each_versions_status_and_error_and_retry_only_for_a_failed_one(
    admin_client, django_capture_on_commit_callbacks, admin_user
):
    version = _published(StripeSyncStatus.FAILED, "create price: Stripe answered 500 (retry later)")
    url = reverse("staff-ops-stripe-sync")
    response = admin_client.get(url)
    page, html = text_of(response), response.content.decode()
    assert response.status_code == 200 and rows(response, "version") == [version.pk]
    assert "Failed (will be retried)" in page and "Stripe said: create price: Stripe answered 500" in page
    retry = reverse("staff-ops-version-sync-retry", args=[version.pk])
    assert f'action="{retry}"' in html
    assert "No webhook endpoint is registered yet" in page

    with django_capture_on_commit_callbacks(execute=False) as queued:
        done = admin_client.post(retry)
    assert done.status_code == 302 and done["Location"] == url
    version.refresh_from_db()
    assert version.stripe_sync_status == StripeSyncStatus.PENDING and len(queued) == 1
    (entry,) = AuditLogEntry.objects.filter(action="price_plan_version.stripe_sync_retry")
    assert entry.actor == admin_user and entry.before["stripe_sync_status"] == "failed"
    after = admin_client.get(url)
    assert "is queued again" in text_of(after) and f'action="{retry}"' not in after.content.decode()

    with django_capture_on_commit_callbacks(execute=False) as queued:
        twice = admin_client.post(retry)  # a second click while it is pending: nothing more is queued
    assert twice.status_code == 302 and queued == []
    assert "already queued" in text_of(admin_client.get(url))
    assert AuditLogEntry.objects.filter(action="price_plan_version.stripe_sync_retry").count() == 1


@pytest.mark.django_db
def test_retrying_a_synced_version_is_refused_in_plain_words(admin_client, django_capture_on_commit_callbacks):
    version = _published(StripeSyncStatus.SYNCED)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = admin_client.post(reverse("staff-ops-version-sync-retry", args=[version.pk]), follow=True)
    assert "has not failed (in stripe): nothing to retry." in text_of(response) and queued == []
    version.refresh_from_db()
    assert version.stripe_sync_status == StripeSyncStatus.SYNCED
    assert admin_client.get(reverse("staff-ops-version-sync-retry", args=[version.pk])).status_code == 302
    assert admin_client.post(reverse("staff-ops-version-sync-retry", args=[version.pk + 999])).status_code == 404


# --- the webhook log ------------------------------------------------------------------------------------------------
def trigger(event_type: str, *, processed: bool, valid: bool = True, exception: str = "", at: dt.datetime = NOW,
            event_id: str | None = None) -> WebhookEventTrigger:  # fmt: skip
    """A delivery as billing_portal/stripe_webhook.py stores it: a processed one has its Event row; a failed one
    has none (rolled back with the processing), only the body."""
    event_id = event_id or f"evt_{event_type.replace('.', '_')}_{int(at.timestamp())}"
    body = json.dumps({"id": event_id, "object": "event", "type": event_type, "created": int(at.timestamp()),
                       "data": {"object": {"object": "invoice", "type": "not.this"}}})  # fmt: skip
    event = None
    if processed:
        event = Event.objects.filter(id=event_id).first() or Event.objects.create(
            id=event_id, type=event_type, created=at, livemode=False, data={"object": {}}, api_version="2025-03-31"
        )
    made = WebhookEventTrigger.objects.create(
        headers={}, body=body, remote_ip="127.0.0.1", valid=valid, processed=processed, exception=exception,
        traceback="Traceback (most recent call last):\n  ..." if exception else "", event=event,
    )  # fmt: skip
    WebhookEventTrigger.objects.filter(pk=made.pk).update(created=at)
    return made


@pytest.mark.django_db
def test_the_webhook_log_shows_each_delivery_with_its_type_and_processing_status_and_filters(admin_client):
    paid = trigger("invoice.paid", processed=True, at=NOW - dt.timedelta(hours=5))
    failed = trigger("invoice.finalized", processed=False, exception="IntegrityError: duplicate key",
                     at=NOW - dt.timedelta(hours=4), event_id="evt_retried")  # fmt: skip
    redelivered = trigger("invoice.finalized", processed=True, at=NOW - dt.timedelta(hours=3), event_id="evt_retried")
    forged = trigger("customer.updated", processed=False, valid=False, at=NOW - dt.timedelta(hours=2))
    url = reverse("staff-ops-webhooks")

    response = admin_client.get(url)
    assert rows(response, "trigger") == [forged.pk, redelivered.pk, failed.pk, paid.pk]
    page = text_of(response)
    assert "IntegrityError: duplicate key" in page and "a later delivery went through" in page
    assert "invoice.finalized evt_retried" in page  # a failed delivery's type and id come from its body

    assert rows(admin_client.get(url, {"status": "processed"}), "trigger") == [redelivered.pk, paid.pk]
    assert rows(admin_client.get(url, {"status": "failed"}), "trigger") == [forged.pk, failed.pk]
    assert rows(admin_client.get(url, {"status": "invalid"}), "trigger") == [forged.pk]
    assert rows(admin_client.get(url, {"type": "invoice.finalized"}), "trigger") == [redelivered.pk, failed.pk]
    assert rows(admin_client.get(url, {"type": "invoice."}), "trigger") == [redelivered.pk, failed.pk, paid.pk]
    assert rows(admin_client.get(url, {"type": "invoice.finalized", "status": "failed"}), "trigger") == [failed.pk]
    assert rows(admin_client.get(url, {"type": "not.this"}), "trigger") == []  # a nested "type" is not the event's
    assert rows(admin_client.get(url, {"type": "invoice"}), "trigger") == []  # exact unless it ends with a dot


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"status": "lost"}, "Pick a status from the list."),
        ({"type": "invoice.paid' OR 1=1 --"}, "An event type has only small letters, digits, dots and underscores"),
        ({"type": "x" * 300}, "Ensure this value has at most 250 characters"),
    ],
)
def test_a_webhook_filter_that_cannot_be_read_is_a_plain_400(admin_client, query, message):
    trigger("invoice.paid", processed=True)
    response = admin_client.get(reverse("staff-ops-webhooks"), query)
    assert response.status_code == 400 and message in text_of(response) and rows(response, "trigger") == []


@pytest.mark.django_db
def test_an_empty_webhook_log_says_so_and_is_paginated_when_long(admin_client):
    assert "No webhook deliveries yet" in text_of(admin_client.get(reverse("staff-ops-webhooks")))
    for n in range(51):
        trigger("customer.updated", processed=True, at=NOW - dt.timedelta(minutes=n), event_id=f"evt_{n}")
    second = admin_client.get(reverse("staff-ops-webhooks"), {"page": "2", "type": "customer.updated"})
    assert len(rows(second, "trigger")) == 1 and "Page 2 of 2" in text_of(second)


# --- the audit log ------------------------------------------------------------------------------------------------
@pytest.fixture
def audit_entries(account, admin_user, manager):
    """Three entries: a manager's grant on `account` late on 1 Nov in New York (2 Nov in UTC), an admin's price
    change on 3 Nov, a command's on 5 Nov."""
    other = AccountFactory(name="Globex Helpdesk", slug="globex")
    made = []
    for at, actor, action, acct, before, after in [
        (dt.datetime(2026, 11, 2, 3, 0, tzinfo=dt.UTC), manager, "credit_pack.grant", account, None,
         {"quantity": 500, "source": "promotional", "expires_at": dt.datetime(2027, 11, 2, 3, 0, tzinfo=dt.UTC)}),
        (dt.datetime(2026, 11, 3, 15, 0, tzinfo=dt.UTC), admin_user, "price_plan_version.update", None,
         {"unit_amount_decimal": "99", "currency": "usd"}, {"unit_amount_decimal": "89", "currency": "usd"}),
        (dt.datetime(2026, 11, 5, 9, 0, tzinfo=dt.UTC), "command:create_account", "account.create", other, None,
         {"name": "Globex Helpdesk", "tiers": [{"up_to": 10}]}),
    ]:  # fmt: skip
        with clock.frozen(at), transaction.atomic():
            made.append(audit_log_write(actor=actor, action=action, obj=acct or account, account=acct, before=before,
                                        after=after, reason="test"))  # fmt: skip
    return made


@pytest.mark.django_db
def test_the_audit_log_shows_before_and_after_readably_and_filters_by_actor_account_action(
    admin_client, audit_entries, account
):
    grant, update, create = audit_entries
    url = reverse("staff-ops-audit")
    response = admin_client.get(url)
    assert rows(response, "entry") == [create.pk, update.pk, grant.pk]
    page = text_of(response)
    # one row per recorded field: what it was, what it became, and whether it changed
    assert "unit amount decimal changed 99 89" in page and "currency usd usd" in page
    assert "quantity not recorded 500" in page and 'tiers not recorded [{"up_to": 10}]' in page
    assert "expires at not recorded 2 Nov 2027 03:00:00 UTC" in page  # an instant, in the viewer's zone

    assert rows(admin_client.get(url, {"actor": "MANAG"}), "entry") == [grant.pk]
    assert rows(admin_client.get(url, {"actor": "command:"}), "entry") == [create.pk]
    assert rows(admin_client.get(url, {"account": "acme"}), "entry") == [grant.pk]
    assert rows(admin_client.get(url, {"account": "globex", "actor": "manager"}), "entry") == []
    assert rows(admin_client.get(url, {"action": "price_plan_version.update"}), "entry") == [update.pk]
    assert "No audit entries match this filter" in text_of(admin_client.get(url, {"actor": "nobody"}))


@pytest.mark.django_db
def test_audit_days_are_the_viewers_days(admin_client, admin_user, audit_entries):
    grant, update, create = audit_entries
    url = reverse("staff-ops-audit")
    assert rows(admin_client.get(url, {"from": "2026-11-02", "to": "2026-11-03"}), "entry") == [update.pk, grant.pk]
    admin_user.timezone = "America/New_York"  # the grant (03:00 UTC on 2 Nov) was 1 Nov, 23:00 there
    admin_user.save(update_fields=["timezone"])
    in_new_york = admin_client.get(url, {"from": "2026-11-02", "to": "2026-11-03"})
    assert rows(in_new_york, "entry") == [update.pk] and "are in America/New_York" in text_of(in_new_york)
    assert "2 Nov 2027 03:00:00" not in text_of(admin_client.get(url, {"to": "2026-11-01"}))
    assert "1 Nov 2027 23:00:00 EDT" in text_of(admin_client.get(url, {"to": "2026-11-01"}))
    assert rows(admin_client.get(url, {"to": "2026-11-01"}), "entry") == [grant.pk]
    assert rows(admin_client.get(url, {"from": "2026-11-05", "to": "2026-11-05"}), "entry") == [create.pk]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"from": "yesterday"}, "Give the start day as a date, for example 2026-11-01."),
        ({"to": "2026-02-30"}, "Give the end day as a date, for example 2026-11-30."),
        ({"from": "2026-11-05", "to": "2026-11-01"}, "The end day is before the start day"),
        ({"from": "1900-01-01"}, "Give a day between the years 2000 and 2100."),
        ({"action": "account.delete"}, "Pick an action from the list."),
        ({"account": "nope"}, "No account has the id or slug “nope”."),
        ({"actor": "a" * 201}, "Ensure this value has at most 200 characters"),
    ],
)
def test_an_audit_filter_that_cannot_be_read_is_a_plain_400(admin_client, audit_entries, query, message):
    response = admin_client.get(reverse("staff-ops-audit"), query)
    assert response.status_code == 400 and message in text_of(response) and rows(response, "entry") == []


@pytest.mark.django_db
def test_an_empty_audit_log_says_so(admin_client):
    AuditLogEntry.objects.all().delete()
    assert "No audit entries yet" in text_of(admin_client.get(reverse("staff-ops-audit")))


@pytest.mark.django_db
def test_the_webhook_endpoint_table_marks_this_portals_endpoint(admin_client, settings):
    base = settings.PORTAL_BASE_URL.rstrip("/")
    WebhookEndpoint.objects.create(
        id="we_elsewhere", url="https://old.example.com/stripe/webhook/x/", livemode=False, enabled_events=["*"],
        api_version="2025-03-31", status="enabled", secret="whsec_x", metadata={},
    )  # fmt: skip
    page = text_of(admin_client.get(reverse("staff-ops-stripe-sync")))
    assert "we_elsewhere" in page and "None of these endpoints is at this portal's address" in page
    WebhookEndpoint.objects.create(
        id="we_here", url=f"{base}/stripe/webhook/y/", livemode=False, enabled_events=["*"],
        api_version="2025-03-31", status="enabled", secret="whsec_y", metadata={},
    )  # fmt: skip
    page = text_of(admin_client.get(reverse("staff-ops-stripe-sync")))
    assert "we_here this portal" in page and "None of these endpoints" not in page


@pytest.mark.django_db
def test_the_sync_page_lists_every_price_of_a_version_offers_included(admin_client):
    version = _published(StripeSyncStatus.SYNCED)
    PricePlanVersion.objects.filter(pk=version.pk).update(
        stripe_price_id="price_metered1", stripe_seat_price_id="price_seat1"
    )
    offer = version.offers.get()  # fin-standard's 10,000 resolutions for 365 days
    offer.stripe_price_id = "price_offer1"
    offer.save(update_fields=["stripe_price_id"])
    page = text_of(admin_client.get(reverse("staff-ops-stripe-sync")))
    assert "price_metered1" in page and "price_seat1 seats" in page and f"price_offer1 {offer.name}" in page
