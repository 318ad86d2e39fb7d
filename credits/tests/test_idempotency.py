"""Grants and seat conversions keyed by their cause, never by the clock; Idempotency-Key on the creating POSTs;
closed accounts get nothing."""

import json
import threading
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts.models import Account, AuditLogEntry
from billing_portal import clock
from credits.models import CreditLedgerEntry, CreditPack, SeatConversion
from credits.services import credit_pack_grant
from resolutions.tests.conftest import NOW

pytestmark = pytest.mark.django_db


def grant(account, quantity=10, **kwargs):
    return credit_pack_grant(
        account=account, quantity=quantity, source="adjustment", actor="test", reason="t", **kwargs
    )


def test_two_grants_at_one_frozen_instant_are_two_packs(account):
    with clock.frozen(NOW):
        first, second = grant(account), grant(account)
    assert first.pk != second.pk and CreditPack.objects.count() == 2
    assert sorted(CreditLedgerEntry.objects.values_list("idempotency_key", flat=True)) == sorted(
        [f"grant:pack:{first.uid}", f"grant:pack:{second.uid}"]
    )


def test_a_caller_key_makes_a_repeat_return_the_first_pack_and_other_accounts_are_apart(account, other_account, now):
    first = grant(account, idempotency_key="order-17")
    assert grant(account, idempotency_key="order-17").pk == first.pk
    assert grant(other_account, idempotency_key="order-17").pk != first.pk  # keys are per account
    with pytest.raises(ValidationError, match="already used"):
        grant(account, quantity=11, idempotency_key="order-17")
    assert CreditPack.objects.filter(account=account).count() == 1
    assert AuditLogEntry.objects.filter(action="credit_pack.grant", account=account).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_repeats_of_one_key_grant_once_without_an_error(account):
    for attempt in range(3):
        barrier, results, errors = threading.Barrier(4), [], []

        def submit(key=f"double-{attempt}", barrier=barrier, results=results, errors=errors):
            try:
                barrier.wait()
                results.append(grant(account, idempotency_key=key).pk)
            except Exception as exc:  # noqa: BLE001 - the test reports any failure
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=submit) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert errors == [] and len(set(results)) == 1 and len(results) == 4
    assert CreditPack.objects.count() == 3 and CreditLedgerEntry.objects.count() == 3


def test_grant_credits_with_a_key_twice_grants_once_and_prints_the_same_pack(account, now):
    def run(*extra):
        out = StringIO()
        args = ["--account", str(account.pk), "--quantity", "250", "--idempotency-key", "ticket-4711", *extra]
        call_command("grant_credits", *args, "--json", stdout=out)
        return json.loads(out.getvalue())

    first, second = run(), run()
    assert first["pack_id"] == second["pack_id"] and second["remaining"] == 250
    assert CreditPack.objects.count() == 1
    with pytest.raises(CommandError, match="already used"):
        call_command(
            "grant_credits", "--account", str(account.pk), "--quantity", "9", "--idempotency-key", "ticket-4711",
            stdout=StringIO(),
        )  # fmt: skip
    with pytest.raises(CommandError):
        call_command(
            "grant_credits", "--account", str(account.pk), "--quantity", "9", "--idempotency-key", "bad\x07key",
            stdout=StringIO(),
        )  # fmt: skip
    assert CreditPack.objects.count() == 1


@pytest.fixture
def staff_grants(account, manager, api_client, now):
    account.account_manager = manager
    account.save()
    api_client.force_authenticate(manager)

    def post(body, key=None, account_id=account.pk):
        headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
        return api_client.post(f"/api/v1/staff/accounts/{account_id}/credit-grants", body, format="json", **headers)

    return post


def test_same_key_and_body_replays_the_first_answer_and_grants_once(staff_grants):
    first = staff_grants({"quantity": 100, "reason": "sorry"}, key="k-1")
    again = staff_grants({"reason": "sorry", "quantity": 100}, key="k-1")  # same body, other key order
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert CreditPack.objects.count() == 1
    other = staff_grants({"quantity": 100, "reason": "sorry"}, key="k-2")
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert staff_grants({"quantity": 100, "reason": "sorry"}).status_code == 201  # no key: a new grant each time
    assert CreditPack.objects.count() == 3


def test_same_key_with_another_body_is_409_in_the_one_error_shape(staff_grants):
    assert staff_grants({"quantity": 100, "reason": "sorry"}, key="k-1").status_code == 201
    conflict = staff_grants({"quantity": 101, "reason": "sorry"}, key="k-1")
    assert conflict.status_code == 409
    (error,) = conflict.json()["errors"]
    assert error["index"] is None and error["field"] is None and "Idempotency-Key" in error["message"]
    assert CreditPack.objects.count() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_a_bad_idempotency_key_is_400_and_changes_nothing(staff_grants, key):
    response = staff_grants({"quantity": 100, "reason": "sorry"}, key=key)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert "Idempotency-Key" in error["message"]
    assert not CreditPack.objects.exists()


def test_a_255_character_key_is_accepted(staff_grants):
    assert staff_grants({"quantity": 1, "reason": "x"}, key="k" * 255).status_code == 201


def test_grants_for_a_closed_account_are_refused(account, now, staff_grants):
    Account.objects.filter(pk=account.pk).update(status=Account.Status.CLOSED)
    with pytest.raises(ValidationError, match="closed"):
        grant(account)
    response = staff_grants({"quantity": 100, "reason": "sorry"})
    assert response.status_code == 400 and "closed" in response.json()["errors"][0]["message"]
    assert not CreditPack.objects.exists()


# --- seat conversions: the confirm takes an Idempotency-Key ---------------------------------------------
@pytest.fixture
def seat_account(stripe_emulator, manager):
    out = StringIO()
    call_command(
        "create_account", "--name", "Seats Co", "--plan", "fin-standard", "--seats", "10", "--json", stdout=out
    )
    account = Account.objects.get(pk=json.loads(out.getvalue())["account_id"])
    account.account_manager = manager
    account.save()
    return account


def test_a_repeated_seat_conversion_with_one_key_converts_once(seat_account, manager, api_client):
    from credits.conversions import _seat_item

    api_client.force_authenticate(manager)
    url = f"/api/v1/staff/accounts/{seat_account.pk}/seat-conversions"
    first = api_client.post(url, {"seats": 3}, format="json", HTTP_IDEMPOTENCY_KEY="conv-1")
    again = api_client.post(url, {"seats": 3}, format="json", HTTP_IDEMPOTENCY_KEY="conv-1")
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert api_client.post(url, {"seats": 4}, format="json", HTTP_IDEMPOTENCY_KEY="conv-1").status_code == 409
    assert _seat_item(seat_account).quantity == 7
    assert SeatConversion.objects.count() == 1 and CreditPack.objects.count() == 1


def test_the_conversion_service_with_one_key_resumes_the_same_conversion(seat_account, manager, stripe_emulator):
    from credits.conversions import _seat_item, seat_conversion_confirm

    first = seat_conversion_confirm(account=seat_account, seats=2, actor=manager, idempotency_key="c-9")
    again = seat_conversion_confirm(account=seat_account, seats=2, actor=manager, idempotency_key="c-9")
    assert first.pk == again.pk and again.status == "done"
    with pytest.raises(ValidationError, match="already used"):
        seat_conversion_confirm(account=seat_account, seats=5, actor=manager, idempotency_key="c-9")
    assert _seat_item(seat_account).quantity == 8 and CreditPack.objects.count() == 1


def test_seat_conversions_of_a_closed_account_are_refused(seat_account, manager):
    from credits.conversions import _seat_item, seat_conversion_confirm

    Account.objects.filter(pk=seat_account.pk).update(status=Account.Status.CLOSED)
    seat_account.refresh_from_db()
    with pytest.raises(ValidationError, match="closed"):
        seat_conversion_confirm(account=seat_account, seats=2, actor=manager)
    assert _seat_item(seat_account).quantity == 10 and not SeatConversion.objects.exists()
