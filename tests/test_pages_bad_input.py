"""Inputs a review found answering 500 on the pages: each now gets a plain answer and changes nothing."""

import pytest

from credits.models import CreditPack

pytestmark = pytest.mark.django_db


def test_a_page_number_that_is_a_digit_to_python_but_not_a_number_shows_the_first_page(client, viewer, manager):
    client.force_login(viewer)
    response = client.get("/portal/resolutions/", {"page": "²"})
    assert response.status_code == 200 and "page 1" in response.content.decode().lower()
    client.force_login(manager)
    assert client.get("/staff/", {"page": "²"}).status_code == 200


def test_an_offer_id_that_is_not_a_number_is_a_plain_refusal(client, billing_admin):
    client.force_login(billing_admin)
    response = client.get("/portal/credits/buy", {"offer": "²"})
    assert response.status_code == 404
    assert "That pack is not on sale on your plan." in response.content.decode()


def test_a_grant_usable_through_the_last_day_of_the_calendar_is_refused_in_words(client, manager, account):
    account.account_manager = manager
    account.save(update_fields=["account_manager"])
    client.force_login(manager)
    response = client.post(
        f"/staff/accounts/{account.pk}/grant",
        {"quantity": "5", "reason": "x", "expires_on": "9999-12-31", "idempotency_key": "k-far-future"},
    )
    assert response.status_code in (200, 400)
    assert "Give a date before the year 9000." in response.content.decode()
    assert not CreditPack.objects.filter(account=account).exists()
