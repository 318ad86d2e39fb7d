"""The customer's Resolutions page (filter, keyset pages, CSV export) and Invoices page (dj-stripe's invoices, the
upcoming invoice), through Django's test client. Invoices come from the Stripe emulator run through a period
end, its invoice.* events delivered signed to dj-stripe's webhook endpoint, as Stripe delivers them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
from io import StringIO

import pytest
import stripe  # tests sign webhook payloads the way Stripe does
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import PricePlan
from accounts.services.provisioning import account_provision
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure
from billing_portal import clock, stripe_client
from credits.models import CreditPack
from credits.purchases import credit_pack_purchase
from credits.services import credit_pack_grant
from resolutions.ingestion import events_parse
from resolutions.models import Resolution
from resolutions.services import conversation_events_ingest, resolution_void, resolutions_fund
from resolutions.services.invoice_preview import invoice_preview_get
from resolutions.services.metering import meter_reports_run
from resolutions.views import resolution_list as resolution_views
from tests.factories import AccountFactory, BillingAdminFactory, CustomerUserFactory

pytestmark = pytest.mark.django_db

PAGE = "/portal/resolutions/"
CSV_URL = "/portal/resolutions/export.csv"
INVOICES = "/portal/invoices/"
UPCOMING = "/portal/invoices/upcoming/"
T0 = dt.datetime(2026, 11, 2, 9, 30, 15, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def rows_of(account, instants, *, kind=Resolution.Kind.CONFIRMED, prefix="c", **fields) -> list[Resolution]:
    """Resolutions written plainly (a read page needs rows, not the rules that make them)."""
    return Resolution.objects.bulk_create(
        Resolution(account=account, conversation_id=f"{prefix}{n}", kind=kind, resolved_at=at,
                   plan_version=account.plan_version, **fields)
        for n, at in enumerate(instants)
    )  # fmt: skip


def resolve(account, instants, *, now):
    """Confirmed resolutions made through ingestion and funding, as real traffic makes them."""
    events = []
    for n, at in enumerate(instants):
        for kind, when in (("ai_answer", at - MINUTE), ("customer_confirmed", at)):
            events.append({"id": f"{kind}-{at:%s}-{n}", "conversation_id": f"conv-{at:%s}-{n}", "type": kind,
                           "occurred_at": when.isoformat()})  # fmt: skip
    with clock.frozen(now):
        parsed, errors = events_parse({"events": events}, now=now)
        assert errors == []
        conversation_events_ingest(account=account, events=parsed)
        resolutions_fund(now=now)


def read_csv(response) -> list[dict]:
    assert response.streaming
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


# --- Access -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [PAGE, CSV_URL, INVOICES, UPCOMING])
def test_pages_need_a_customer_login(client, manager, url):
    assert client.get(url).status_code == 302 and "/login/" in client.get(url)["Location"]
    client.force_login(manager)  # staff have no customer account: sent home
    assert client.get(url)["Location"] == "/"


def test_a_customer_never_sees_another_accounts_resolutions(viewer_client, account, other_account):
    at = dt.datetime(2026, 10, 5, 12, tzinfo=dt.UTC)
    rows_of(account, [at], prefix="ours-")
    rows_of(other_account, [at, at], prefix="theirs-")
    page = viewer_client.get(PAGE).content.decode()
    assert "ours-0" in page and "theirs-" not in page
    exported = read_csv(viewer_client.get(CSV_URL))
    assert [r["conversation_id"] for r in exported] == ["ours-0"]


# --- The list ---------------------------------------------------------------------------------------
def test_filters_apply_with_dates_in_the_accounts_timezone(viewer_client, account):
    account.timezone = "America/New_York"  # 5 Oct is 04:00 UTC on 5 Oct to 04:00 UTC on 6 Oct
    account.save()
    rows_of(account, [dt.datetime(2026, 10, 5, 3, 59, tzinfo=dt.UTC)], prefix="before-")
    inside = dt.datetime(2026, 10, 5, 4, 0, tzinfo=dt.UTC)
    rows_of(account, [inside], prefix="confirmed-")
    rows_of(account, [inside + MINUTE], prefix="assumed-", kind=Resolution.Kind.ASSUMED)
    rows_of(account, [inside + 2 * MINUTE], prefix="overage-", funding=Resolution.Funding.OVERAGE, amount_minor=99)
    rows_of(account, [inside + 3 * MINUTE], prefix="voided-", voided_at=inside + 4 * MINUTE, void_reason="Test chat")
    rows_of(account, [dt.datetime(2026, 10, 6, 4, 0, tzinfo=dt.UTC)], prefix="after-")

    def shown(**query):
        response = viewer_client.get(PAGE, {"from": "2026-10-05", "to": "2026-10-05", **query})
        assert response.status_code == 200
        return sorted(r.conversation_id for r in response.context["page"].rows)

    assert shown() == ["assumed-0", "confirmed-0", "overage-0", "voided-0"]
    assert shown(kind="assumed") == ["assumed-0"]
    assert shown(funding="overage") == ["overage-0"]
    assert shown(funding="unfunded", kind="confirmed") == ["confirmed-0", "voided-0"]
    assert shown(voided="yes") == ["voided-0"]
    assert shown(voided="no") == ["assumed-0", "confirmed-0", "overage-0"]
    page = viewer_client.get(PAGE, {"voided": "yes"}).content.decode()
    assert "Test chat" in page and "Voided" in page
    assert "$0.99" in viewer_client.get(PAGE, {"funding": "overage"}).content.decode()


@pytest.mark.parametrize(
    "query, message",
    [
        ({"from": "yesterday"}, "Enter the start date as a date"),
        ({"to": "2026-13-01"}, "Enter the end date as a date"),
        ({"from": "2026-10-05", "to": "2026-10-01"}, "The end date is before the start date"),
        ({"from": "0001-01-01"}, "Give a date between"),
        ({"kind": "escalated"}, "Pick a kind from the list"),
        ({"funding": "free"}, "Pick what paid for it"),
        ({"voided": "maybe"}, "Pick voided, not voided, or both"),
    ],
)
def test_bad_filter_values_get_a_plain_message_and_no_rows(viewer_client, account, query, message):
    rows_of(account, [dt.datetime(2026, 10, 5, 12, tzinfo=dt.UTC)])
    response = viewer_client.get(PAGE, query)
    assert response.status_code == 200
    body = response.content.decode()
    assert message in body and "Nothing shown: the filter needs a fix" in body
    assert response.context["page"] is None and "<code>c0</code>" not in body
    exported = viewer_client.get(CSV_URL, query)
    assert exported.status_code == 400 and message in exported.content.decode()


def test_pages_go_by_keyset_newest_first_without_counting_the_whole_list(viewer_client, account, monkeypatch):
    monkeypatch.setattr(resolution_views, "PAGE_SIZE", 50)
    base = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    same_instant = base + dt.timedelta(hours=50)  # ties on resolved_at are ordered by id
    rows = rows_of(account, [base + dt.timedelta(hours=n) for n in range(117)] + [same_instant] * 3)
    newest_first = sorted(rows, key=lambda r: (r.resolved_at, r.pk), reverse=True)

    seen, url, number = [], PAGE, 1
    while url:
        with CaptureQueriesContext(connection) as queries:
            response = viewer_client.get(url)
        assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)
        assert response.context["page_number"] == number
        assert f"page {number}" in response.content.decode()
        seen += [r.pk for r in response.context["page"].rows]
        url, number = response.context["older_url"], number + 1
    assert seen == [r.pk for r in newest_first] and number - 1 == 3

    back = viewer_client.get(response.context["newer_url"])  # from page 3 back to page 2
    assert [r.pk for r in back.context["page"].rows] == [r.pk for r in newest_first[50:100]]
    assert back.context["page_number"] == 2
    first = viewer_client.get(back.context["newer_url"])
    assert [r.pk for r in first.context["page"].rows] == [r.pk for r in newest_first[:50]]
    assert first.context["newer_url"] == "" and first.context["page_number"] == 1


def test_a_damaged_page_link_shows_the_first_page(viewer_client, account):
    rows_of(account, [dt.datetime(2026, 10, 5, 12, tzinfo=dt.UTC)])
    response = viewer_client.get(PAGE, {"older": "99999999999999999999_1x", "page": "7"})
    assert response.status_code == 200 and response.context["page_number"] == 1
    assert "That page link was damaged" in response.content.decode()


def test_htmx_gets_the_results_fragment_and_a_history_restore_the_whole_page(viewer_client, account):
    rows_of(account, [dt.datetime(2026, 10, 5, 12, tzinfo=dt.UTC)])
    fragment = viewer_client.get(PAGE, {"kind": "confirmed"}, HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert body.lstrip().startswith("{% load") is False and "<html" not in body
    assert 'id="resolution-results"' in body and "<code>c0</code>" in body
    assert "HX-Request" in fragment["Vary"]
    restore = viewer_client.get(PAGE, HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in restore.content.decode()
    full = viewer_client.get(PAGE).content.decode()  # without JavaScript: the whole page, the form a plain GET
    assert "<html" in full and 'method="get"' in full and 'hx-push-url="true"' in full


def test_empty_states_explain_themselves(viewer_client, account):
    body = viewer_client.get(PAGE).content.decode()
    assert "No resolutions yet" in body and "POST /api/v1/conversation-events" in body
    rows_of(account, [dt.datetime(2026, 10, 5, 12, tzinfo=dt.UTC)])
    body = viewer_client.get(PAGE, {"kind": "assumed"}).content.decode()
    assert "No resolutions match this filter" in body


# --- CSV export -------------------------------------------------------------------------------------
def test_csv_export_streams_every_matching_row_in_chunks(viewer_client, account, other_account, monkeypatch):
    monkeypatch.setattr(resolution_views, "EXPORT_CHUNK_ROWS", 1000)
    base = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    rows_of(account, [base + dt.timedelta(seconds=n) for n in range(2500)], funding=Resolution.Funding.OVERAGE,
            amount_minor=99)  # fmt: skip
    rows_of(account, [base + dt.timedelta(seconds=n) for n in range(30)], prefix="a", kind=Resolution.Kind.ASSUMED)
    rows_of(other_account, [base] * 10, funding=Resolution.Funding.OVERAGE, amount_minor=99)

    response = viewer_client.get(CSV_URL, {"kind": "confirmed", "from": "2026-10-01", "to": "2026-10-01"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="resolutions-acme-2026-10-01-to-2026-10-01-times-utc.csv"'
    )
    statements = []

    def seen(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(seen):  # every statement, whichever cursor runs it
        chunks = list(response.streaming_content)
    selects = [sql for sql in statements if "resolutions_resolution" in sql]
    assert len(selects) == 3 and all("LIMIT 1000" in sql for sql in selects)  # 1000 + 1000 + 500: no more
    assert len(chunks) == 3
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert len(rows) == 2500 and {r["kind"] for r in rows} == {"confirmed"}
    assert rows[0] == {
        "id": rows[0]["id"], "conversation_id": "c0", "kind": "confirmed", "resolved_at_utc": "2026-10-01T00:00:00Z",
        "funding": "overage", "pack_id": "", "amount": "0.99", "currency": "USD", "voided": "no", "voided_at_utc": "",
        "void_reason": "",
    }  # fmt: skip
    assert [r["resolved_at_utc"] for r in rows] == sorted(r["resolved_at_utc"] for r in rows)
    assert len({r["id"] for r in rows}) == 2500


def test_csv_matches_the_api_for_real_resolutions(viewer, api_client, account, admin_user, client):
    now = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)
    with clock.frozen(now - dt.timedelta(days=3)):
        pack = credit_pack_grant(
            account=account, quantity=2, source=CreditPack.Source.PROMOTIONAL, actor=admin_user,
            expires_at=now + dt.timedelta(days=30), starts_at=now - dt.timedelta(days=3), reason="Welcome",
        )  # fmt: skip
    resolve(account, [now - dt.timedelta(hours=h) for h in (30, 20, 10, 5)], now=now)
    with clock.frozen(now):
        resolution_void(
            resolution=Resolution.objects.filter(account=account, funding="overage").first(), actor=admin_user,
            reason="=HYPERLINK(\"x\") duplicate chat",
        )  # fmt: skip
        api_client.force_authenticate(viewer)
        api = api_client.get("/api/v1/resolutions", {"from": "2026-10-01", "to": "2026-11-02"}).json()["results"]
        client.force_login(viewer)
        exported = read_csv(client.get(CSV_URL, {"from": "2026-10-01", "to": "2026-11-02"}))
    assert len(api) == 4 and [int(r["id"]) for r in exported] == [r["id"] for r in api]
    for row, item in zip(exported, api, strict=True):
        assert row["conversation_id"] == item["conversation_id"] and row["kind"] == item["kind"]
        assert dt.datetime.fromisoformat(row["resolved_at_utc"]) == dt.datetime.fromisoformat(item["resolved_at"])
        assert row["funding"] == item["funding"]
        assert row["pack_id"] == (str(item["pack_id"]) if item["pack_id"] else "")
        assert round(float(row["amount"]) * 100) == item["amount_minor"]
        assert row["voided"] == ("yes" if item["voided"] else "no")
    assert [r["funding"] for r in exported] == ["credit", "credit", "overage", "overage"]
    assert {r["pack_id"] for r in exported[:2]} == {str(pack.pk)}
    voided = [r for r in exported if r["voided"] == "yes"]
    assert len(voided) == 1 and voided[0]["void_reason"].startswith("'=HYPERLINK")  # not run by a spreadsheet
    assert voided[0]["amount"] == "0.00"


def test_csv_of_everything_names_the_range_and_a_viewer_may_export(viewer_client, account):
    response = viewer_client.get(CSV_URL)
    assert response.status_code == 200
    assert 'filename="resolutions-acme-first-to-latest-times-utc.csv"' in response["Content-Disposition"]
    assert b"".join(response.streaming_content).decode().splitlines() == [
        "id,conversation_id,kind,resolved_at_utc,funding,pack_id,amount,currency,voided,voided_at_utc,void_reason"
    ]
    assert viewer_client.get(PAGE).context["export_url"] == CSV_URL


def test_the_page_links_the_export_of_its_filter(viewer_client, account):
    rows_of(account, [dt.datetime(2026, 10, 5, 12, tzinfo=dt.UTC)])
    response = viewer_client.get(PAGE, {"from": "2026-10-01", "kind": "confirmed", "voided": "no", "funding": ""})
    assert response.context["export_url"] == f"{CSV_URL}?from=2026-10-01&kind=confirmed&voided=no"


# --- Invoices ---------------------------------------------------------------------------------------
def _sign(payload: str, secret: str) -> str:
    at = int(time.time())
    return f"t={at},v1={stripe.WebhookSignature._compute_signature(f'{at}.{payload}', secret)}"


def deliver_invoice_events(client, endpoint) -> None:
    """Stripe's invoice.* events so far, oldest first, posted signed to dj-stripe's endpoint."""
    events = stripe_client.call("events", lambda c, o: c.v1.events.list(params={"limit": 100}), idempotency_key=None)
    for event in reversed([e.to_dict() for e in events.data]):
        if event["type"].startswith("invoice."):
            payload = json.dumps(event, default=str)
            response = client.post(
                f"/stripe/webhook/{endpoint.djstripe_uuid}/", data=payload, content_type="application/json",
                HTTP_STRIPE_SIGNATURE=_sign(payload, endpoint.secret),
            )  # fmt: skip
            assert response.status_code == 200, response.content


@pytest.fixture
def billed(stripe_emulator, settings, client, manager):
    """An account provisioned at T0 with 3 seats, a pack bought, two overage resolutions reported, and the
    emulator run past the period's end: Stripe made its invoices and dj-stripe mirrored them from webhooks."""
    settings.STRIPE_MAX_RETRIES = 1
    stripe_emulator.set_time(int(T0.timestamp()))
    with clock.frozen(T0):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
        endpoint = stripe_webhook_endpoint_ensure(base_url="http://testserver")
        provisioned = account_provision(
            name="Billed Co", plan=PricePlan.objects.get(slug="fin-standard"), seats=3, actor="test",
            account_manager=manager,
        )  # fmt: skip
    account = provisioned.account
    user = CustomerUserFactory(account=account, username="billed-viewer")
    at = T0 + dt.timedelta(hours=2)
    stripe_emulator.set_time(int(at.timestamp()))
    resolve(account, [at - 10 * MINUTE, at - 5 * MINUTE], now=at)
    reported = T0 + dt.timedelta(hours=4)
    stripe_emulator.set_time(int(reported.timestamp()))
    with clock.frozen(reported):
        meter_reports_run(now=reported, account_ids=[account.pk])
        pack = credit_pack_purchase(account=account, offer=account.plan_version.offers.first(), actor=user)
    return account, user, endpoint, provisioned, pack


def test_no_invoices_yet_says_when_the_first_comes(client, billed):
    account, user, *_ = billed
    client.force_login(user)
    with clock.frozen(T0 + dt.timedelta(hours=5)):
        body = client.get(INVOICES).content.decode()
    assert "No invoices yet: the first invoice is made when the billing period ends on 2 December 2026" in body
    assert f'hx-get="{UPCOMING}"' in body and 'hx-trigger="load"' in body


def test_invoices_show_number_period_status_total_and_labelled_lines(client, billed, stripe_emulator, account):
    billed_account, user, endpoint, provisioned, pack = billed
    after = T0 + dt.timedelta(days=30, hours=3)  # the period ended 2 Dec 09:30; Stripe finalised an hour later
    stripe_emulator.set_time(int(after.timestamp()))
    with clock.frozen(after):
        deliver_invoice_events(client, endpoint)
        client.force_login(user)
        response = client.get(INVOICES)
    invoices = response.context["invoices"]
    by_reason = {i["billing_reason"]: i for i in invoices}
    assert set(by_reason) == {"subscription_create", "manual", "subscription_cycle"}
    cycle = by_reason["subscription_cycle"]
    assert cycle["status"] == "paid" and cycle["number"]
    assert cycle["period_start"] == T0 and cycle["period_end"] == T0 + dt.timedelta(days=30)
    assert {line["kind"]: (line["quantity"], line["amount_minor"]) for line in cycle["lines"]} == {
        "seats": (3, 11700),
        "overage": (2, 198),
    }
    assert cycle["total_minor"] == 11898
    pack_invoice = by_reason["manual"]
    assert [(line["kind"], line["pack"]) for line in pack_invoice["lines"]] == [("pack", pack)]
    assert pack_invoice["total_minor"] == 900000

    body = response.content.decode()
    assert f"Invoice {cycle['number']}" in body and "$118.98" in body and "$9,000.00" in body
    assert "Helpdesk seats" in body and "Overage resolutions" in body and f"pack #{pack.pk}" in body
    assert "Period 2 Nov 2026 to 2 Dec 2026" in body
    assert f'href="{cycle["hosted_invoice_url"]}" target="_blank" rel="noopener noreferrer"' in body
    assert "No invoices yet" not in body

    other_user = BillingAdminFactory(account=account, username="acme-other")  # another account: none of these
    client.force_login(other_user)
    other = client.get(INVOICES)
    assert other.context["invoices"] == [] and cycle["number"] not in other.content.decode()


def test_upcoming_invoice_loads_from_its_own_view(client, billed):
    account, user, *_ = billed
    client.force_login(user)
    now = T0 + dt.timedelta(hours=5)
    with clock.frozen(now):
        fragment = client.get(UPCOMING, HTTP_HX_REQUEST="true")
        expected = invoice_preview_get(account=account, now=now)
        full = client.get(UPCOMING)
    body = fragment.content.decode()
    assert "<html" not in body and 'id="upcoming-invoice"' in body
    assert expected["portal"]["total_minor"] == 3 * 3900 + 2 * 99
    assert 'id="upcoming-total">$118.98<' in body and "2 December 2026" in body
    assert "Stripe's own preview of this invoice shows the same total" in body  # reported: they agree
    assert "<html" in full.content.decode() and 'id="upcoming-total"' in full.content.decode()
    assert "Past invoices" in full.content.decode()  # without JavaScript: the whole page, filled in


def test_upcoming_invoice_says_plainly_when_stripe_is_unreachable(client, billed, settings):
    account, user, *_ = billed
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    settings.STRIPE_MAX_RETRIES = 0
    client.force_login(user)
    with clock.frozen(T0 + dt.timedelta(hours=5)):
        response = client.get(UPCOMING, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Stripe could not be reached just now" in response.content.decode()


def test_without_a_subscription_there_is_no_upcoming_invoice(viewer_client, account):
    body = viewer_client.get(UPCOMING, HTTP_HX_REQUEST="true").content.decode()
    assert "No upcoming invoice: the account has no Stripe subscription yet." in body
    page = viewer_client.get(INVOICES).content.decode()
    assert "billing starts with your Stripe subscription" in page


def test_an_account_with_ids_beyond_the_first_customer_sees_only_its_own(client, billed, stripe_emulator):
    _, _, endpoint, *_ = billed
    stranger = AccountFactory(name="Stranger", slug="stranger")
    client.force_login(CustomerUserFactory(account=stranger, username="stranger-viewer"))
    with clock.frozen(T0 + dt.timedelta(hours=5)):
        deliver_invoice_events(client, endpoint)
        assert client.get(INVOICES).context["invoices"] == []


@pytest.mark.postgres
def test_the_exports_fast_fetch_returns_what_the_orm_returns(account, admin_user):
    from resolutions.selectors import RESOLUTION_EXPORT_FIELDS, _rows_fetch

    at = dt.datetime(2026, 10, 5, 12, 0, 0, 123456, tzinfo=dt.UTC)
    with clock.frozen(at):
        pack = credit_pack_grant(account=account, quantity=5, source=CreditPack.Source.ADJUSTMENT, actor=admin_user,
                                 starts_at=at - dt.timedelta(days=1))  # fmt: skip
    rows_of(account, [at, at + MINUTE], funding=Resolution.Funding.CREDIT, credit_pack=pack)
    rows_of(account, [at], prefix="v", funding=Resolution.Funding.OVERAGE, amount_minor=99, voided_at=at,
            void_reason="dispute")  # fmt: skip
    values = Resolution.objects.filter(account=account).order_by("resolved_at", "id")
    values = values.values_list(*RESOLUTION_EXPORT_FIELDS)
    fast = _rows_fetch(values)
    assert fast == list(values) and len(fast) == 3
    assert all(row[0].tzinfo is dt.UTC for row in fast)


@pytest.mark.parametrize(
    "amount, currency, text",
    [(99, "usd", "0.99"), (0, "usd", "0.00"), (-5, "usd", "-0.05"), (123456, "eur", "1234.56"), (1234, "jpy", "1234"),
     (1005, "kwd", "1.005"), (-1, "jpy", "-1")],
)  # fmt: skip
def test_csv_money_is_exact_major_units(amount, currency, text):
    from billing_portal.money import format_major

    assert format_major(amount, currency) == text


def test_the_invoice_list_says_when_older_invoices_are_not_shown(client, billed, monkeypatch):
    from resolutions.views import invoices as invoice_views

    account, user, endpoint, *_ = billed
    with clock.frozen(T0 + dt.timedelta(hours=5)):
        deliver_invoice_events(client, endpoint)  # the seats' first invoice and the pack's
        client.force_login(user)
        monkeypatch.setattr(invoice_views, "INVOICES_SHOWN", 1)
        response = client.get(INVOICES)
    assert len(response.context["invoices"]) == 1 and response.context["invoices_more"]
    assert "These are the 1 newest invoices" in response.content.decode()
