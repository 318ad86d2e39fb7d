"""The staff pages through Django's test client: the book of accounts (figures, search, sort, server-side
pages, no per-account queries), the account page (figures, 404 for others' accounts, history as sentences,
the invoice preview loaded separately) and voiding a resolution found by its conversation id."""

from __future__ import annotations

import datetime as dt
import html as html_module
import re
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import PricePlan
from accounts.services.provisioning import account_provision
from billing_portal import clock
from credits.models import CreditAlert, CreditPack
from credits.services import credit_pack_grant
from resolutions.models import Resolution
from resolutions.selectors import billing_period_overage_get
from tests.emulator_world import EmulatorWorld, ts
from tests.factories import AccountFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

START = dt.datetime(2026, 11, 2, 9, 30, 15, tzinfo=dt.UTC)
MINUTE, HOUR, DAY = dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(days=1)


class World(EmulatorWorld):
    """An account provisioned in the emulator at START, managed by `manager`, that resolves conversations."""


@pytest.fixture
def provision(stripe_emulator, settings, api_client, manager):
    settings.STRIPE_MAX_RETRIES = 1
    stripe_emulator.set_time(ts(START))
    with clock.frozen(START):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())

    def make(name="Preview Co", seats=3, account_manager=manager):
        with clock.frozen(START):
            provisioned = account_provision(
                name=name, plan=PricePlan.objects.get(slug="fin-standard"), seats=seats, actor="test",
                account_manager=account_manager,
            )  # fmt: skip
        return World(provisioned, stripe_emulator, api_client)

    return make


def text(response) -> str:
    """The page's visible text, whitespace collapsed."""
    html = response.content.decode()
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", html_module.unescape(re.sub(r"<[^>]+>", " ", html))).replace("\xa0", " ")


def book_rows(response) -> list[str]:
    """The account names of the book's rows, in order."""
    body = response.content.decode().split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r'<a href="/staff/accounts/\d+/">([^<]+)</a>', body)


# --- The book of accounts -------------------------------------------------------------------------------


def test_the_book_shows_this_periods_spend_credits_run_out_and_alerts_exactly(provision, client, manager):
    world = provision(seats=3)
    world.resolve(START + 40 * MINUTE, START + 50 * MINUTE, START + 2 * HOUR)  # three overage resolutions
    now = START + 3 * HOUR
    with world.at(now):
        credit_pack_grant(account=world.account, quantity=10, source="promotional", actor=manager, reason="launch")
    world.resolve(*(now + i * MINUTE for i in range(1, 5)))  # four credited: 6 of 10 left
    now += HOUR
    client.force_login(manager)
    with world.at(now):
        response = client.get("/staff/")
        period = billing_period_overage_get(account=world.account, now=now)
    assert response.status_code == 200
    page = text(response)
    assert period["overage"] == 3 and period["amount_minor"] == 297
    # Seats 3 × $39 + 3 overage × $0.99, exactly as the invoice preview counts them.
    assert "$119.97" in page and "3 seats $117.00 + 3 overage $2.97" in page
    assert re.search(r"Preview Co .*\$119\.97 .* 6 of 10 ", page)
    # The burn rate (4 credited over the alerts' 14 days) runs the 6 out long before the pack's year ends.
    runs_out = (now + dt.timedelta(days=6 / (4 / 14))).date()
    assert f"{runs_out:%-d %b %Y}" in page
    assert "figures as of 2 Nov 2026 13:30:15 UTC" in page


def test_a_manager_sees_only_their_accounts_and_an_admin_sees_all(client, manager, admin_user):
    mine = AccountFactory(name="Mine Ltd", account_manager=manager)
    AccountFactory(name="Theirs Ltd", account_manager=StaffUserFactory(username="other-manager"))
    client.force_login(manager)
    assert book_rows(client.get("/staff/")) == ["Mine Ltd"]
    assert client.get(f"/staff/accounts/{mine.pk}/").status_code == 200
    client.force_login(admin_user)
    assert book_rows(client.get("/staff/")) == ["Mine Ltd", "Theirs Ltd"]


def test_search_sort_and_pages_are_done_on_the_server_and_htmx_gets_only_the_table(client, admin_user):
    accounts = [AccountFactory(name=f"Shop {n:02d}", slug=f"shop-{n:02d}") for n in range(30)]
    AccountFactory(name="Zebra Helpdesk", slug="zebra")
    now = clock.now()
    for n, account in enumerate(accounts[:3]):  # shops 00, 01, 02 with 5, 15, 25 credits
        credit_pack_grant(account=account, quantity=5 + 10 * n, source="promotional", actor=admin_user, reason="t")
    CreditAlert.objects.create(account=accounts[1], kind="low_balance", active=True, message="low", raised_at=now)
    client.force_login(admin_user)

    first = client.get("/staff/")
    assert len(book_rows(first)) == 25 and "1–25 of 31 accounts" in text(first) and "Page 1 of 2" in text(first)
    second = client.get("/staff/?page=2")
    assert book_rows(second) == [f"Shop {n:02d}" for n in range(25, 30)] + ["Zebra Helpdesk"]
    assert client.get("/staff/?page=99").status_code == 200  # past the end: the last page, not an error

    assert book_rows(client.get("/staff/?q=zeb"))[0] == "Zebra Helpdesk"
    assert book_rows(client.get("/staff/?q=SHOP-0"))[:3] == ["Shop 00", "Shop 01", "Shop 02"]
    empty = client.get("/staff/?q=nothing-like-this")
    assert "No account’s name or slug contains “nothing-like-this”" in text(empty)

    by_credits = book_rows(client.get("/staff/?sort=credits&dir=desc"))
    assert by_credits[:3] == ["Shop 02", "Shop 01", "Shop 00"]
    assert book_rows(client.get("/staff/?sort=alerts&dir=desc"))[0] == "Shop 01"
    assert book_rows(client.get("/staff/?sort=name&dir=desc"))[0] == "Zebra Helpdesk"
    assert book_rows(client.get("/staff/?sort=nonsense"))[0] == "Shop 00"  # unknown column: by name

    partial = client.get("/staff/?sort=credits&dir=desc", HTTP_HX_REQUEST="true")
    html = partial.content.decode()
    assert html.lstrip().startswith('<div id="book"') and "<html" not in html and "Price plans" not in html
    assert book_rows(partial)[:3] == ["Shop 02", "Shop 01", "Shop 00"]
    # The header links keep the search and flip the sorted column's direction.
    assert 'href="/staff/?sort=credits&amp;dir=asc&amp;page=1"' in html


def test_the_book_costs_the_same_queries_for_many_accounts_as_for_few(
    client, admin_user, django_assert_max_num_queries
):
    def queries(sort: str) -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            assert client.get(f"/staff/?sort={sort}&dir=desc").status_code == 200
        return len(captured)

    client.force_login(admin_user)
    for n in range(3):
        account = AccountFactory(name=f"Few {n}")
        credit_pack_grant(account=account, quantity=3, source="promotional", actor=admin_user, reason="t")
    few = {sort: queries(sort) for sort in ("name", "spend", "credits", "runout", "alerts", "activity")}
    for n in range(40):
        account = AccountFactory(name=f"Many {n}")
        credit_pack_grant(account=account, quantity=3, source="promotional", actor=admin_user, reason="t")
    many = {sort: queries(sort) for sort in few}
    assert many == few
    assert max(many.values()) <= 26  # session, user and role, the book's figures, the admin's panels


def test_customers_and_roleless_users_do_not_get_staff_pages(client, viewer, account):
    client.force_login(viewer)
    assert client.get("/staff/").status_code == 302
    assert client.get(f"/staff/accounts/{account.pk}/").status_code == 302
    assert (
        client.post(f"/staff/accounts/{account.pk}/void", {"step": "find", "conversation_id": "x"}).status_code == 302
    )


# --- The account page -------------------------------------------------------------------------------------


def test_an_account_not_assigned_to_the_manager_is_404_on_every_staff_url(client, manager):
    theirs = AccountFactory(name="Theirs", account_manager=StaffUserFactory(username="someone-else"))
    client.force_login(manager)
    for url in ("/", "/invoice-preview", "/void", "/seat-conversion", "/grant", "/purchase"):
        assert client.get(f"/staff/accounts/{theirs.pk}{url}").status_code == 404, url
    assert client.post(f"/staff/accounts/{theirs.pk}/grant", {"quantity": 5, "reason": "x"}).status_code == 404
    assert client.get("/staff/accounts/999999/").status_code == 404


def test_the_account_page_shows_period_seats_packs_reporting_and_history(provision, client, manager):
    world = provision(seats=4)
    world.resolve(START + 40 * MINUTE, START + 2 * HOUR)
    with world.at(START + 3 * HOUR):
        pack = credit_pack_grant(account=world.account, quantity=500, source="promotional", actor=manager,
                                 reason="launch campaign")  # fmt: skip
    world.resolve(START + 3 * HOUR + MINUTE)  # takes one credit from the pack
    client.force_login(manager)
    with world.at(START + 4 * HOUR):
        response = client.get(f"/staff/accounts/{world.account.pk}/")
    assert response.status_code == 200
    page = text(response)
    assert "This billing period" in page and "2 Nov 2026 09:30 UTC to 2 Dec 2026 09:30 UTC" in page
    # Spend: 4 seats × $39 + 2 overage × $0.99.
    assert "Spend so far $157.98" in page and "Overage $1.98 2 resolutions" in page
    assert re.search(r"Seats 4 Per seat per month \$39\.00", page)
    assert re.search(rf"#{pack.pk} Promotional launch campaign Active 499 500", page)
    assert "Credits left 499" in page
    assert "Reporting to Stripe" in page and "Nothing held or refused" in page
    # History as sentences, with the pack's figures as they are now (499 left, not 500 at the grant).
    assert "manager granted 500 promotional credits: launch campaign (now 499 of 500 left" in page
    assert "Stripe started a billing period" in page
    assert f'hx-get="/staff/accounts/{world.account.pk}/invoice-preview"' in response.content.decode()
    # htmx refreshes only the figures after an action.
    with world.at(START + 4 * HOUR):
        partial = client.get(f"/staff/accounts/{world.account.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert partial.startswith('\n<div id="account-figures"') or partial.lstrip().startswith('<div id="account-figures"')
    assert "<html" not in partial and "Actions" not in partial


def test_an_account_without_stripe_explains_its_empty_sections(client, manager):
    account = AccountFactory(name="New Co", account_manager=manager)
    client.force_login(manager)
    page = text(client.get(f"/staff/accounts/{account.pk}/"))
    assert "Stripe has no subscription for this account yet" in page
    assert "No billed seat subscription in Stripe" in page
    assert "No credit packs: every resolution is billed as overage" in page
    assert "No resolutions in the last 14 days" in page


def test_the_invoice_preview_is_loaded_after_the_page_and_compares_with_stripe(provision, client, manager):
    world = provision(seats=3)
    world.resolve(START + 40 * MINUTE)
    client.force_login(manager)
    with world.at(START + 2 * HOUR):
        partial = client.get(f"/staff/accounts/{world.account.pk}/invoice-preview", HTTP_HX_REQUEST="true")
        full = client.get(f"/staff/accounts/{world.account.pk}/invoice-preview")
    page = text(partial)
    assert "<html" not in partial.content.decode()
    assert "Seats (3 × $39.00) $117.00" in page and "Portal’s total $117.99" in page
    assert "Stripe’s preview $117.00" in page and "differs by -$0.99" in page  # not reported yet
    assert "<html" in full.content.decode() and "Invoice preview" in text(full)


def test_the_invoice_preview_of_an_account_without_stripe_says_why(client, manager):
    account = AccountFactory(name="No Stripe", account_manager=manager)
    client.force_login(manager)
    page = text(client.get(f"/staff/accounts/{account.pk}/invoice-preview", HTTP_HX_REQUEST="true"))
    assert "no Stripe subscription" in page


# --- Voiding a resolution found by its conversation id ------------------------------------------------------


def void_url(account) -> str:
    return f"/staff/accounts/{account.pk}/void"


def key_of(response) -> str:
    return re.search(r'name="idempotency_key" value="([^"]+)"', response.content.decode()).group(1)


def test_void_finds_the_conversation_confirms_and_a_double_submit_voids_once(provision, client, manager):
    world = provision(seats=3)
    (conversation,) = world.resolve(START + 40 * MINUTE, prefix="c-")
    client.force_login(manager)
    with world.at(START + HOUR):
        found = client.post(void_url(world.account), {"step": "find", "conversation_id": f"  {conversation} "})
        page = text(found)
        assert "Confirmed by the customer Overage $0.99 no" in page
        resolution = Resolution.objects.get(conversation_id=conversation)
        missing = client.post(void_url(world.account), {
            "step": "confirm", "conversation_id": conversation, "resolution": resolution.pk, "reason": " ",
            "idempotency_key": key_of(found)})  # fmt: skip
        assert "Say why the resolution is voided: the customer sees the reason." in text(missing)
        confirm = client.post(void_url(world.account), {
            "step": "confirm", "conversation_id": conversation, "resolution": resolution.pk,
            "reason": "customer dispute", "idempotency_key": key_of(found)})  # fmt: skip
        assert "overage of $0.99 (taken back from Stripe’s meter)" in text(confirm)
        assert Resolution.objects.get(pk=resolution.pk).voided_at is None  # nothing done before the confirm
        body = {"step": "void", "conversation_id": conversation, "resolution": resolution.pk,
                "reason": "customer dispute", "idempotency_key": key_of(confirm)}  # fmt: skip
        first = client.post(void_url(world.account), body, HTTP_HX_REQUEST="true")
        again = client.post(void_url(world.account), body, HTTP_HX_REQUEST="true")  # the double submit
        plain = client.post(void_url(world.account), body)  # and once more without JavaScript
    for response in (first, again):
        assert response.status_code == 200 and response["HX-Trigger"] == "account-changed"
        assert f"Voided the resolution of conversation {conversation}" in text(response)
    assert plain.status_code == 302 and plain["Location"] == f"/staff/accounts/{world.account.pk}/"
    voided = Resolution.objects.get(pk=resolution.pk)
    assert voided.voided_at is not None and voided.void_reason == "customer dispute" and voided.amount_minor == 0
    from accounts.models import AuditLogEntry

    assert AuditLogEntry.objects.filter(action="resolution.void").count() == 1
    with world.at(START + HOUR):
        history = text(client.get(f"/staff/accounts/{world.account.pk}/"))
    assert f"manager voided the resolution of conversation {conversation}: customer dispute" in history
    # Looked up again, the conversation shows its voided resolution and offers nothing to void.
    again_found = text(client.post(void_url(world.account), {"step": "find", "conversation_id": conversation}))
    assert "already voided" in again_found


def test_void_never_reaches_another_accounts_resolution(provision, client, manager):
    world = provision(name="Mine", seats=1)
    other = provision(name="Other", seats=1, account_manager=None)
    (theirs,) = other.resolve(START + 40 * MINUTE, prefix="shared-")
    client.force_login(manager)
    found = text(client.post(void_url(world.account), {"step": "find", "conversation_id": theirs}))
    assert "No resolution of this account has that conversation id" in found
    resolution = Resolution.objects.get(conversation_id=theirs)
    response = client.post(void_url(world.account), {
        "step": "void", "conversation_id": theirs, "resolution": resolution.pk, "reason": "x",
        "idempotency_key": "k1"})  # fmt: skip
    assert response.status_code == 404 and Resolution.objects.get(pk=resolution.pk).voided_at is None


def test_an_empty_conversation_id_is_asked_for_in_plain_words(client, manager):
    account = AccountFactory(account_manager=manager)
    client.force_login(manager)
    page = text(client.post(void_url(account), {"step": "find", "conversation_id": "  "}))
    assert "Type the conversation id the customer disputes." in page
    assert not CreditPack.objects.exists()
