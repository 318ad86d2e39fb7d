"""The staff actions on credits through the pages (Django's test client, Stripe's emulator over HTTP): the
seat-to-credit conversion wizard, the promotional grant and buying a pack for the customer. Each shows what it
will do before doing it, says what is wrong in plain words, and a double submit (same form, same key) is one
action."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from accounts.models import AuditLogEntry, CreditPackOffer
from credits.conversions import _seat_item
from credits.models import CreditPack, SeatConversion
from resolutions.tests import test_staff_pages as staff_pages
from resolutions.tests.test_staff_pages import START, text

pytestmark = pytest.mark.django_db
provision = staff_pages.provision  # an account provisioned in the emulator, managed by `manager`
HOUR = dt.timedelta(hours=1)


def key_of(response) -> str:
    return re.search(r'name="idempotency_key" value="([^"]+)"', response.content.decode()).group(1)


def url(account, action: str) -> str:
    return f"/staff/accounts/{account.pk}/{action}"


# --- Seat-to-credit conversion ------------------------------------------------------------------------------


def test_the_conversion_wizard_previews_then_converts_once_even_when_submitted_twice(provision, client, manager):
    world = provision(seats=10)
    account = world.account
    client.force_login(manager)
    with world.at(START + HOUR):
        form = client.get(url(account, "seat-conversion"), HTTP_HX_REQUEST="true")
        assert form.status_code == 200 and "<html" not in form.content.decode()
        preview = client.post(url(account, "seat-conversion"),
                              {"step": "preview", "seats": "4", "idempotency_key": key_of(form)},
                              HTTP_HX_REQUEST="true")  # fmt: skip
        page = text(preview)
        # 4 seats × $39 for the 29 whole days left of a 30-day term, at $0.90 a credit.
        value = 4 * 3900 * 29 / 30
        assert "Seats 10 → 6" in page and "29 of 30 days" in page
        assert f"Value moved ${value / 100:,.2f}" in page and f"Credits granted {int(value // 90):,}" in page
        assert not SeatConversion.objects.exists() and _seat_item(account).quantity == 10  # nothing changed yet

        confirm = {"step": "confirm", "seats": "4", "idempotency_key": key_of(preview)}
        first = client.post(url(account, "seat-conversion"), confirm, HTTP_HX_REQUEST="true")
        again = client.post(url(account, "seat-conversion"), confirm, HTTP_HX_REQUEST="true")  # double submit
        plain = client.post(url(account, "seat-conversion"), confirm)  # and without JavaScript
    credits = int(value // 90)
    for response in (first, again):
        assert response["HX-Trigger"] == "account-changed"
        assert f"Converted 4 seats into {credits:,} credits." in text(response)
        assert "Seats 10 → 6" in text(response)
    assert plain.status_code == 302 and plain["Location"] == f"/staff/accounts/{account.pk}/"
    (conversion,) = SeatConversion.objects.all()
    assert conversion.status == "done" and conversion.credits == credits
    assert CreditPack.objects.get().granted == credits and _seat_item(account).quantity == 6
    assert AuditLogEntry.objects.filter(action="seat_conversion.confirm").count() == 1
    with world.at(START + HOUR):
        page = text(client.get(f"/staff/accounts/{account.pk}/"))
    # Seats as Stripe has them now (the conversion's, ahead of the mirror), and the history sentence.
    assert re.search(r"Seats Seats 6 Per seat per month \$39\.00", page)
    assert f"manager converted 4 seats into {credits} credits" in page


@pytest.mark.parametrize(
    ("seats", "words"),
    [("11", "The account has 10 seat(s); it cannot convert 11."), ("0", "Convert at least one seat."),
     ("", "Say how many seats to convert."), ("two", "Give a whole number of seats.")],
)  # fmt: skip
def test_bad_seat_numbers_are_explained_and_change_nothing(provision, client, manager, seats, words):
    world = provision(seats=10)
    client.force_login(manager)
    with world.at(START + HOUR):
        response = client.post(url(world.account, "seat-conversion"),
                               {"step": "preview", "seats": seats, "idempotency_key": "k"})  # fmt: skip
    assert response.status_code == 200 and words in text(response)
    assert 'aria-invalid="true"' in response.content.decode()
    assert not SeatConversion.objects.exists() and _seat_item(world.account).quantity == 10


def test_an_account_without_seats_in_stripe_is_told_so(client, manager):
    from tests.factories import AccountFactory

    account = AccountFactory(account_manager=manager)
    client.force_login(manager)
    response = client.post(url(account, "seat-conversion"), {"step": "preview", "seats": "1", "idempotency_key": "k"})
    assert "This account has no seat subscription in Stripe." in text(response)


# --- Promotional grant ----------------------------------------------------------------------------------------


def test_a_grant_needs_a_reason_is_confirmed_and_a_double_submit_grants_once(client, manager):
    from tests.factories import AccountFactory

    account = AccountFactory(account_manager=manager, timezone="Europe/Paris")
    client.force_login(manager)
    form = client.get(url(account, "grant"))
    assert "<html" in form.content.decode()  # without htmx: a page of its own
    no_reason = client.post(url(account, "grant"), {"quantity": "500", "reason": "  ", "idempotency_key": key_of(form)})
    assert "Say why promotional credit is granted: it is audited." in text(no_reason)
    bad = client.post(url(account, "grant"), {"quantity": "-3", "reason": "x", "idempotency_key": key_of(form)})
    assert "Grant at least one credit." in text(bad)
    past = client.post(url(account, "grant"), {"quantity": "5", "reason": "x", "expires_on": "2020-01-01",
                                               "idempotency_key": key_of(form)})  # fmt: skip
    assert "That day is over: the pack would already be expired." in text(past)

    confirm = client.post(url(account, "grant"), {"quantity": "500", "reason": "launch campaign",
                                                  "expires_on": "2030-06-30", "idempotency_key": key_of(form)},
                          HTTP_HX_REQUEST="true")  # fmt: skip
    page = text(confirm)
    assert "Grant 500 promotional credits to" in page and "end of 30 Jun 2030 in Europe/Paris" in page
    assert not CreditPack.objects.exists()
    body = {"step": "confirm", "quantity": "500", "reason": "launch campaign", "expires_on": "2030-06-30",
            "idempotency_key": key_of(confirm)}  # fmt: skip
    first = client.post(url(account, "grant"), body, HTTP_HX_REQUEST="true")
    again = client.post(url(account, "grant"), body, HTTP_HX_REQUEST="true")
    assert "Granted 500 promotional credits." in text(first) and "Granted 500 promotional credits." in text(again)
    (pack,) = CreditPack.objects.all()
    assert (pack.source, pack.granted, pack.reason) == ("promotional", 500, "launch campaign")
    assert pack.expires_at.isoformat() == "2030-06-30T22:00:00+00:00"  # midnight after 30 June, Paris time
    history = text(client.get(f"/staff/accounts/{account.pk}/"))
    assert "manager granted 500 promotional credits: launch campaign (now 500 of 500 left" in history


# --- Buying a pack for the customer -----------------------------------------------------------------------------


def test_buying_a_pack_for_the_customer_confirms_waits_for_payment_and_buys_once(provision, client, manager):
    world = provision(seats=2)
    account = world.account
    offer = CreditPackOffer.objects.get(version=account.plan_version)
    client.force_login(manager)
    with world.at(START + HOUR):
        form = client.get(url(account, "purchase"), HTTP_HX_REQUEST="true")
        assert "10,000 resolutions for 365 days" in text(form)
        none = client.post(url(account, "purchase"), {"idempotency_key": key_of(form)}, HTTP_HX_REQUEST="true")
        assert "Choose a credit pack." in text(none)
        confirm = client.post(url(account, "purchase"), {"offer": offer.pk, "idempotency_key": key_of(form)},
                              HTTP_HX_REQUEST="true")  # fmt: skip
        assert "$0.90 each, $9,000.00 in all" in text(confirm) and not CreditPack.objects.exists()
        body = {"step": "confirm", "offer": offer.pk, "idempotency_key": key_of(confirm)}
        first = client.post(url(account, "purchase"), body, HTTP_HX_REQUEST="true")
        again = client.post(url(account, "purchase"), body, HTTP_HX_REQUEST="true")
    for response in (first, again):
        page = text(response)
        assert "Awaiting payment" in page and "usable when Stripe reports the invoice paid" in page
    (pack,) = CreditPack.objects.all()
    assert pack.status == "pending" and pack.purchase_state == "finalized" and pack.created_by == manager
    with world.at(START + HOUR):
        page = text(client.get(f"/staff/accounts/{account.pk}/"))
    assert re.search(rf"#{pack.pk} Purchased Awaiting payment Invoice finalised, awaiting payment 0 10,000", page)
    assert "manager bought a pack of 10,000 credits" in page and "now awaiting payment" in page


def test_an_offer_of_another_plan_is_refused(provision, client, manager, admin_user):
    from accounts.models import PricePlanVersion

    world = provision(seats=2)
    other_version = PricePlanVersion.objects.exclude(pk=world.account.plan_version_id).first()
    client.force_login(manager)
    if other_version is None:  # only the default plan: an id that is no offer of it at all
        foreign = CreditPackOffer.objects.order_by("-pk").first().pk + 1
    else:
        foreign = CreditPackOffer.objects.filter(version=other_version).first().pk
    response = client.post(url(world.account, "purchase"), {"offer": foreign, "idempotency_key": "k"})
    assert "Choose one of the plan's packs." in text(response)
    assert not CreditPack.objects.exists()
