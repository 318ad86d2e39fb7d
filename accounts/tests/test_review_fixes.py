"""Guards found in review: secrets out of the audit log, undo of provisioning, Stripe catalog drift,
admin limits, and audit writes that really share the change's transaction."""

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import Account, ApiKey, AuditLogEntry, PricePlanVersion
from accounts.pricing import plan_version_spec_parse
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure
from billing_portal import clock, stripe_client

pytestmark = pytest.mark.django_db


def stripe_customers():
    return stripe_client.call("l", lambda c, o: c.v1.customers.list(params={"limit": 100}), idempotency_key=None).data


def test_admin_add_user_never_writes_the_password_to_the_audit_log(client, admin_user, account):
    client.force_login(admin_user)
    response = client.post(
        "/admin/accounts/user/add/",
        {"username": "newbie", "password1": "S3cret-pass-word!", "password2": "S3cret-pass-word!",
         "usable_password": "true", "account": account.pk, "customer_role": "viewer"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:500]
    entry = AuditLogEntry.objects.get(action="user.add_via_admin")
    assert "S3cret" not in json.dumps(entry.after) and entry.after["password1"] == "(hidden)"


def test_admin_add_user_with_an_account_but_no_role_is_a_form_error(client, admin_user, account):
    client.force_login(admin_user)
    response = client.post(
        "/admin/accounts/user/add/",
        {"username": "half", "password1": "S3cret-pass-word!", "password2": "S3cret-pass-word!",
         "usable_password": "true", "account": account.pk, "customer_role": ""},
    )  # fmt: skip
    assert response.status_code == 200 and "A customer user needs a role" in response.content.decode()


def test_account_admin_cannot_add_delete_or_move_plans(client, admin_user, account):
    client.force_login(admin_user)
    assert client.get("/admin/accounts/account/add/").status_code == 403
    assert client.post(f"/admin/accounts/account/{account.pk}/delete/", {"post": "yes"}).status_code == 403
    page = client.get(f"/admin/accounts/account/{account.pk}/change/").content.decode()
    assert 'name="plan_version"' not in page and 'name="currency"' not in page
    assert Account.objects.filter(pk=account.pk).exists()


def test_a_lost_customer_create_is_found_again_and_undone(stripe_emulator, settings):
    settings.STRIPE_MAX_RETRIES = 2
    call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
    # Stripe creates the customer, and every answer (3 attempts) is lost; the undo's replay gets through.
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="POST", mode="500_after_record", count=3)
    with pytest.raises(CommandError, match="Nothing was kept"):
        call_command("create_account", "--name", "Lost Inc", "--plan", "fin-standard", "--json", stdout=StringIO())
    assert stripe_customers() == [] and not Account.objects.exists()


def test_an_undo_that_cannot_reach_stripe_is_finished_by_billing_tick(stripe_emulator, settings):
    settings.STRIPE_MAX_RETRIES = 1
    call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
    stripe_emulator.add_fault(path_prefix="/v1/subscriptions", method="POST", mode="500", count=100)
    stripe_emulator.add_fault(path_prefix="/v1/customers", method="DELETE", mode="500", count=100)
    start = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)
    with clock.frozen(start), pytest.raises(CommandError, match="stays 'provisioning'"):
        call_command("create_account", "--name", "Stuck Ltd", "--plan", "fin-standard", "--json", stdout=StringIO())
    assert Account.objects.get().status == "provisioning" and len(stripe_customers()) == 1
    stripe_emulator.faults.clear()
    out = StringIO()
    call_command("billing_tick", "--now", (start + dt.timedelta(minutes=16)).isoformat(), "--json", stdout=out)
    assert json.loads(out.getvalue())["provisionings_undone"] == 1
    assert not Account.objects.exists() and stripe_customers() == []


def test_stripe_setup_refuses_a_price_with_other_terms_under_our_lookup_key(stripe_emulator):
    from accounts.services.stripe_catalog import billing_meter_ensure, stripe_product_ensure

    meter = billing_meter_ensure()
    stripe_client.call(
        "p", lambda c, o: c.v1.prices.create(params={
            "currency": "usd", "product": stripe_product_ensure(key="resolutions"), "unit_amount_decimal": "150",
            "lookup_key": "fin-standard-v1-resolution",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.stripe_id}}, options=o),
        idempotency_key="test:foreign-price",
    )  # fmt: skip
    with pytest.raises(CommandError, match="other terms"):
        call_command("stripe_setup", "--webhook", "none", stdout=StringIO())
    assert PricePlanVersion.objects.get(number=1).stripe_price_id == ""


def test_two_offers_of_the_same_size_get_their_own_prices(stripe_emulator, admin_user, default_plan):
    from accounts.services import price_plan_version_create, price_plan_version_publish
    from accounts.services.stripe_catalog import price_plan_version_stripe_sync

    terms = {
        "currency": "usd", "unit_amount_decimal": "99", "inactivity_window": "24:00:00", "seat_unit_amount": 3900,
        "seat_conversion_unit_amount_decimal": "90", "effective_from": "2027-01-01T00:00:00Z",
        "offers": [{"name": "Annual", "resolutions": 10000, "unit_amount_decimal": "90"},
                   {"name": "Annual promo", "resolutions": 10000, "unit_amount_decimal": "50"}],
    }  # fmt: skip
    version = price_plan_version_create(plan=default_plan, spec=plan_version_spec_parse(terms), actor=admin_user)
    price_plan_version_publish(version=version, actor=admin_user)
    price_plan_version_stripe_sync(version=version)
    prices = {o.name: o.stripe_price_id for o in version.offers.all()}
    assert prices["Annual"] != prices["Annual promo"] and all(prices.values())


def test_webhook_endpoint_is_registered_again_when_stripe_forgot_it(stripe_emulator):
    first = stripe_webhook_endpoint_ensure(base_url="http://testserver")
    stripe_emulator.reset()
    second = stripe_webhook_endpoint_ensure(base_url="http://testserver")
    assert second.id != first.id
    remote = stripe_client.call("w", lambda c, o: c.v1.webhook_endpoints.list(), idempotency_key=None).data
    assert [w.id for w in remote] == [second.id]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("service", ["api_key_create", "api_key_revoke", "account_assign_manager", "publish"])
def test_a_failed_audit_write_rolls_the_change_back(service, monkeypatch, account, billing_admin, manager, admin_user):
    """Outside any test transaction: the service's own transaction must carry both writes."""
    import accounts.services.accounts as account_services
    import accounts.services.api_keys as key_services
    import accounts.services.plans as plan_services
    from accounts.services import api_key_create

    existing_key, _ = api_key_create(account=account, name="existing", actor=billing_admin)
    draft = plan_services.price_plan_version_create(
        plan=account.plan_version.plan,
        spec=plan_version_spec_parse({
            "currency": "usd", "unit_amount_decimal": "95", "inactivity_window": "24:00:00",
            "seat_unit_amount": 3900, "seat_conversion_unit_amount_decimal": "90",
            "effective_from": "2027-01-01T00:00:00Z"}),
        actor=admin_user,
    )  # fmt: skip

    def broken(**kwargs):
        raise RuntimeError("audit store down")

    for module in (account_services, key_services, plan_services):
        monkeypatch.setattr(module, "audit_log_write", broken)
    calls = {
        "api_key_create": lambda: key_services.api_key_create(account=account, name="new", actor=billing_admin),
        "api_key_revoke": lambda: key_services.api_key_revoke(api_key=existing_key, actor=billing_admin),
        "account_assign_manager": lambda: account_services.account_assign_manager(
            account=account, manager=manager, actor=admin_user
        ),
        "publish": lambda: plan_services.price_plan_version_publish(version=draft, actor=admin_user),
    }
    with pytest.raises(RuntimeError, match="audit store down"):
        calls[service]()
    assert ApiKey.objects.filter(account=account).count() == 1
    assert ApiKey.objects.get(pk=existing_key.pk).revoked_at is None
    assert Account.objects.get(pk=account.pk).account_manager is None
    assert PricePlanVersion.objects.get(pk=draft.pk).status == "draft"
