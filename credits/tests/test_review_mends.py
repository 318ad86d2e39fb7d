"""Defects a review of issue 9 found: an old draft purchase is never finalised by the cycle, a purchase step
never overwrites a state the webhook wrote, a seat conversion whose seats are gone still gets its pack on a
closed account, and an account with no recorded billing period gets its Stripe period back."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import Account, BillingPeriod, CreditPackOffer
from accounts.services.billing_periods import billing_periods_sync
from billing_portal import clock, stripe_client
from credits import purchases
from credits.models import CreditPack
from credits.services import credit_pack_grant

pytestmark = pytest.mark.django_db


@pytest.fixture
def provisioned(stripe_emulator, settings):
    out = StringIO()
    call_command("create_account", "--name", "Mend Co", "--plan", "fin-standard", "--seats", "2", "--json", stdout=out)
    settings.STRIPE_MAX_RETRIES = 0
    return Account.objects.get(pk=json.loads(out.getvalue())["account_id"])


def test_a_finalised_purchase_whose_invoice_is_a_draft_is_flagged_and_never_finalised(provisioned, stripe_emulator):
    offer = CreditPackOffer.objects.get(version=provisioned.plan_version)
    stripe_emulator.add_fault(path_prefix="/v1/invoices/", method="POST", mode="500", count=50)  # finalize fails
    with pytest.raises(stripe_client.StripeUnavailable):
        purchases.credit_pack_purchase(account=provisioned, offer=offer, actor="test")
    stripe_emulator.faults.clear()
    pack = CreditPack.objects.get(account=provisioned)
    assert pack.purchase_state == "item_added"
    CreditPack.objects.filter(pk=pack.pk).update(purchase_state="finalized")  # as the 0005 migration labels old rows
    purchases.credit_purchases_resume(now=clock.now())
    pack.refresh_from_db()
    assert (pack.purchase_state, pack.status, pack.needs_review) == ("failed", "cancelled", True)
    assert "draft" in pack.review_note
    invoice = stripe_client.call(
        "get", lambda c, o: c.v1.invoices.retrieve(pack.stripe_invoice_id), idempotency_key=None
    )
    assert invoice.status == "draft"  # the portal charged nobody for it
    purchases.credit_purchases_resume(now=clock.now())  # and stops asking
    assert CreditPack.objects.get(pk=pack.pk).purchase_state == "failed"


def test_a_step_never_overwrites_a_state_the_webhook_wrote_meanwhile(account):
    pack = CreditPack.objects.create(
        account=account, source="purchase", status="pending", granted=10, remaining=0, purchase_state="item_added",
        starts_at=clock.now(), expires_at=clock.now().replace(year=clock.now().year + 1),
    )  # fmt: skip
    CreditPack.objects.filter(pk=pack.pk).update(purchase_state="paid")  # invoice.paid landed meanwhile
    with pytest.raises(purchases.PurchaseMovedOn):
        purchases._advance(pack, "finalized")
    assert CreditPack.objects.get(pk=pack.pk).purchase_state == "paid"


def test_a_seat_conversion_pack_is_granted_to_a_closed_account_but_nothing_else_is(account):
    from django.core.exceptions import ValidationError

    Account.objects.filter(pk=account.pk).update(status=Account.Status.CLOSED)
    with pytest.raises(ValidationError):
        credit_pack_grant(account=account, quantity=5, source="promotional", actor="test", reason="gift")
    pack = credit_pack_grant(
        account=account, quantity=5, source="seat_conversion", actor="test", idempotency_key="conversion:x"
    )
    assert pack.remaining == 5  # its seats are already gone in Stripe: the credits must not be lost


def test_an_account_with_a_subscription_but_no_recorded_period_gets_it_from_stripe(provisioned):
    recorded = list(BillingPeriod.objects.filter(account=provisioned).values_list("start", "end"))
    assert recorded
    BillingPeriod.objects.filter(account=provisioned).delete()  # e.g. provisioned before periods were recorded
    result = billing_periods_sync(now=clock.now())
    assert result.checked == 1 and not result.failures
    assert list(BillingPeriod.objects.filter(account=provisioned).values_list("start", "end")) == recorded
    assert billing_periods_sync(now=clock.now()).checked == 0  # recorded: nothing to ask
