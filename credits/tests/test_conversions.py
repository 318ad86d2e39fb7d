"""Seat-to-credit conversion against the emulator: preview, confirm, bad input, crash and resume."""

import json
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from accounts.models import Account, AuditLogEntry
from credits.conversions import seat_conversion_confirm, seat_conversion_preview, seat_conversion_resume
from credits.models import CreditLedgerEntry, CreditPack, SeatConversion

pytestmark = pytest.mark.django_db


@pytest.fixture
def account(stripe_emulator):
    out = StringIO()
    call_command(
        "create_account", "--name", "Seats Inc", "--plan", "fin-standard", "--seats", "10", "--json", stdout=out
    )
    return Account.objects.get(pk=json.loads(out.getvalue())["account_id"])


def seat_quantity(account):
    from credits.conversions import _seat_item

    return _seat_item(account).quantity


def test_preview_shows_the_numbers_and_changes_nothing(account):
    preview = seat_conversion_preview(account=account, seats=4)
    assert (preview.seats_before, preview.seats_after) == (10, 6)
    assert preview.term_days in (28, 29, 30, 31) and 0 < preview.remaining_days <= preview.term_days
    value = 4 * 3900 * preview.remaining_days / preview.term_days
    assert abs(preview.value_minor - value) <= 0.5
    assert preview.credits == int(value // 90) and preview.expires_at == preview.term_end
    assert seat_quantity(account) == 10 and not CreditPack.objects.exists()


def test_confirm_lowers_seats_without_proration_and_grants_one_pack(account, stripe_emulator, manager):
    preview = seat_conversion_preview(account=account, seats=4)
    conversion = seat_conversion_confirm(account=account, seats=4, actor=manager)
    assert conversion.status == "done" and conversion.credits == preview.credits
    assert seat_quantity(account) == 6
    update = [r for r in stripe_emulator.requests.list() if r["path"].startswith("/v1/subscription_items/")][-1]
    assert update["params"]["proration_behavior"] == "none"
    pack = conversion.pack
    assert (pack.source, pack.granted, pack.expires_at) == ("seat_conversion", preview.credits, preview.term_end)
    (entry,) = AuditLogEntry.objects.filter(action="seat_conversion.confirm")
    assert entry.after["credits"] == preview.credits and entry.actor == manager


@pytest.mark.parametrize(("seats", "words"), [(11, "cannot convert 11"), (0, "at least one"), (-2, "at least one")])
def test_bad_seat_numbers_are_refused_and_change_nothing(account, seats, words):
    with pytest.raises(ValidationError, match=words):
        seat_conversion_confirm(account=account, seats=seats, actor="test")
    assert seat_quantity(account) == 10 and not SeatConversion.objects.exists() and not CreditPack.objects.exists()


def test_an_account_without_a_seat_subscription_is_refused(db, stripe_emulator):
    from tests.factories import AccountFactory

    with pytest.raises(ValidationError, match="no seat subscription"):
        seat_conversion_preview(account=AccountFactory(), seats=1)


def test_a_crash_between_the_steps_is_finished_by_a_retry_and_never_grants_twice(account, monkeypatch, manager):
    import credits.conversions as conversions

    def crash(**kwargs):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(conversions, "credit_pack_grant", crash)
    with pytest.raises(RuntimeError):
        seat_conversion_confirm(account=account, seats=3, actor=manager)
    conversion = SeatConversion.objects.get()
    assert conversion.status == "seats_reduced" and seat_quantity(account) == 7 and not CreditPack.objects.exists()
    with pytest.raises(ValidationError, match="in progress"):
        seat_conversion_confirm(account=account, seats=1, actor=manager)
    monkeypatch.undo()
    assert seat_conversion_resume(conversion=conversion).status == "done"
    assert seat_conversion_resume(conversion=conversion).status == "done"
    assert CreditPack.objects.count() == 1 and CreditLedgerEntry.objects.filter(kind="grant").count() == 1
    assert seat_quantity(account) == 7


def test_a_conversion_resumed_after_its_term_ended_still_grants_its_credits_once(account, monkeypatch, manager):
    """Found by the fault simulation (seed 86): a crash after Stripe removed the seats, near the term's end; the
    resume after the term ended was refused ("would already be expired") on every cycle: seats gone, no credits."""
    import datetime as dt

    import credits.conversions as conversions
    from billing_portal import clock
    from credits.services import credit_packs_expire

    def crash(**kwargs):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(conversions, "credit_pack_grant", crash)
    with pytest.raises(RuntimeError):
        seat_conversion_confirm(account=account, seats=2, actor=manager)
    monkeypatch.undo()
    conversion = SeatConversion.objects.get()
    assert conversion.status == "seats_reduced" and seat_quantity(account) == 8
    after_term = conversion.term_end + dt.timedelta(hours=1)
    with clock.frozen(after_term):
        assert conversions.seat_conversions_resume_stalled(now=after_term) == 1
        assert conversions.seat_conversions_resume_stalled(now=after_term) == 0
        credit_packs_expire(now=after_term)
    conversion.refresh_from_db()
    pack = CreditPack.objects.get()
    assert conversion.status == "done" and conversion.pack == pack and pack.granted == conversion.credits > 0
    assert (pack.expires_at, pack.status, pack.remaining, pack.written_off) == (
        conversion.term_end, "expired", 0, conversion.credits,
    )  # fmt: skip
    assert CreditLedgerEntry.objects.filter(kind="grant").count() == 1 and seat_quantity(account) == 8
    with clock.frozen(after_term), pytest.raises(ValidationError, match="already be expired"):  # others still refused
        from credits.services import credit_pack_grant

        credit_pack_grant(account=account, quantity=1, source="seat_conversion", actor="test", reason="x",
                          starts_at=conversion.created_at, expires_at=conversion.term_end)  # fmt: skip


@pytest.mark.parametrize("lost", ["500", "500_after_record"])
def test_a_seat_step_still_pending_when_its_term_ends_never_removes_seats_of_the_next_term(
    account, stripe_emulator, settings, manager, lost
):
    """A Stripe outage on the seat step that outlasts the term: resuming it then would remove seats of the next
    term (billed in advance, no proration) for credits that expire unused. If Stripe never took the change, the
    conversion fails and nothing changes; if only its answer was lost, the credits owed are granted, once."""
    import datetime as dt

    from billing_portal import clock
    from credits.conversions import seat_conversions_resume_stalled

    settings.STRIPE_MAX_RETRIES = 0
    stripe_emulator.add_fault(path_prefix="/v1/subscription_items/", method="POST", mode=lost, count=1)
    with pytest.raises(Exception, match="reduce seats"):
        seat_conversion_confirm(account=account, seats=2, actor=manager)
    conversion = SeatConversion.objects.get()
    assert conversion.status == "started"
    after_term = conversion.term_end + dt.timedelta(hours=1)

    def seat_updates():
        return [r for r in stripe_emulator.requests.list() if r["path"].startswith("/v1/subscription_items/")
                and r["method"] == "POST"]  # fmt: skip

    sent = len(seat_updates())
    with clock.frozen(after_term):
        seat_conversions_resume_stalled(now=after_term)
        seat_conversions_resume_stalled(now=after_term)
    conversion.refresh_from_db()
    assert len(seat_updates()) == sent  # the seat step is never sent again once the term is over
    if lost == "500":
        assert conversion.status == "failed" and "term ended" in conversion.error
        assert seat_quantity(account) == 10 and not CreditPack.objects.exists()
    else:
        assert conversion.status == "done" and seat_quantity(account) == 8
        assert CreditPack.objects.get().granted == conversion.credits
        assert CreditLedgerEntry.objects.filter(kind="grant").count() == 1


def test_a_stripe_outage_on_the_seat_step_is_resumed_later(account, stripe_emulator, settings, manager):
    settings.STRIPE_MAX_RETRIES = 0
    stripe_emulator.add_fault(path_prefix="/v1/subscription_items/", method="POST", mode="500_after_record", count=1)
    with pytest.raises(Exception, match="reduce seats"):
        seat_conversion_confirm(account=account, seats=2, actor=manager)
    conversion = SeatConversion.objects.get()
    assert conversion.status == "started" and seat_quantity(account) == 8  # Stripe did it; we did not hear
    assert seat_conversion_resume(conversion=conversion).status == "done"
    assert seat_quantity(account) == 8 and CreditPack.objects.count() == 1


def test_staff_api_preview_and_confirm(account, manager, api_client, other_account):
    account.account_manager = manager
    account.save()
    api_client.force_authenticate(manager)
    preview = api_client.post(
        f"/api/v1/staff/accounts/{account.pk}/seat-conversions/preview", {"seats": 2}, format="json"
    )
    assert preview.status_code == 200 and preview.json()["seats_after"] == 8
    assert not CreditPack.objects.exists()
    done = api_client.post(f"/api/v1/staff/accounts/{account.pk}/seat-conversions", {"seats": 2}, format="json")
    assert done.status_code == 201 and done.json()["status"] == "done"
    assert done.json()["credits"] == preview.json()["credits"]
    too_many = api_client.post(f"/api/v1/staff/accounts/{account.pk}/seat-conversions", {"seats": 99}, format="json")
    assert too_many.status_code == 400
    elsewhere = api_client.post(
        f"/api/v1/staff/accounts/{other_account.pk}/seat-conversions/preview", {"seats": 1}, format="json"
    )
    assert elsewhere.status_code == 404
