"""The two retries of the operations pages (issue 12), over the Stripe emulator: a price version whose Stripe sync
failed, queued again (and then synced by the task), and the webhook endpoint registered again outside any
transaction. Both audited; a refusal or a Stripe failure changes nothing."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse
from djstripe.models import WebhookEndpoint

from accounts.models import AuditLogEntry, PricePlan, PricePlanVersion, StripeSyncStatus
from accounts.pricing import plan_version_spec_parse
from accounts.services import price_plan_version_create
from accounts.services.stripe_catalog import price_plan_version_stripe_sync, price_plan_version_stripe_sync_retry
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_retry
from billing_portal import stripe_client
from billing_portal.stripe_client import StripeFailure


def _failed_version(stripe_emulator, settings) -> PricePlanVersion:
    """The default plan's version with a sync that Stripe refused (a 429 with no retries left)."""
    settings.STRIPE_MAX_RETRIES = 0
    version = PricePlan.objects.get(slug="fin-standard").current_version()
    stripe_emulator.add_fault(path_prefix="/v1/billing/meters", method="POST", mode="429", count=1)
    with pytest.raises(StripeFailure):
        price_plan_version_stripe_sync(version=version)
    version.refresh_from_db()
    assert version.stripe_sync_status == StripeSyncStatus.FAILED and version.stripe_sync_error
    return version


@pytest.mark.django_db
def test_a_failed_sync_retried_is_queued_once_and_the_task_then_creates_the_prices(
    stripe_emulator, settings, admin_user, django_capture_on_commit_callbacks
):
    version = _failed_version(stripe_emulator, settings)
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the queued task runs here, against the emulator

    with django_capture_on_commit_callbacks(execute=True) as queued:
        retried = price_plan_version_stripe_sync_retry(version=version, actor=admin_user)

    assert retried.stripe_sync_status == StripeSyncStatus.PENDING and len(queued) == 1
    version.refresh_from_db()
    assert version.stripe_sync_status == StripeSyncStatus.SYNCED and version.stripe_sync_error == ""
    price = stripe_client.call("get", lambda c, o: c.v1.prices.retrieve(version.stripe_price_id), idempotency_key=None)
    assert price.lookup_key == version.lookup_key
    (entry,) = AuditLogEntry.objects.filter(action="price_plan_version.stripe_sync_retry")
    assert entry.actor == admin_user and entry.object_id == str(version.pk)
    assert entry.before["stripe_sync_status"] == "failed" and entry.after == {"stripe_sync_status": "pending"}


@pytest.mark.django_db
def test_a_retry_while_one_is_pending_queues_nothing_more(
    stripe_emulator, settings, admin_user, django_capture_on_commit_callbacks
):
    version = _failed_version(stripe_emulator, settings)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        price_plan_version_stripe_sync_retry(version=version, actor=admin_user)
        price_plan_version_stripe_sync_retry(version=version, actor=admin_user)  # a double click
    assert len(queued) == 1
    assert AuditLogEntry.objects.filter(action="price_plan_version.stripe_sync_retry").count() == 1


@pytest.mark.django_db
def test_a_retry_of_a_synced_version_or_a_draft_is_refused_and_changes_nothing(
    stripe_emulator, admin_user, default_plan, django_capture_on_commit_callbacks
):
    version = price_plan_version_stripe_sync(version=default_plan.current_version())
    draft = price_plan_version_create(
        plan=default_plan, actor=admin_user,
        spec=plan_version_spec_parse({
            "currency": "usd", "unit_amount_decimal": "80", "inactivity_window": "24:00:00",
            "seat_unit_amount": 3900, "seat_conversion_unit_amount_decimal": "90",
            "effective_from": "2027-01-01T00:00:00Z",
        }),
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=False) as queued:
        with pytest.raises(ValidationError, match="has not failed"):
            price_plan_version_stripe_sync_retry(version=version, actor=admin_user)
        with pytest.raises(ValidationError, match="is a draft"):
            price_plan_version_stripe_sync_retry(version=draft, actor=admin_user)
    assert queued == []
    version.refresh_from_db()
    draft.refresh_from_db()
    assert version.stripe_sync_status == StripeSyncStatus.SYNCED and draft.stripe_sync_status == ""
    assert not AuditLogEntry.objects.filter(action="price_plan_version.stripe_sync_retry").exists()


# --- the webhook endpoint -----------------------------------------------------------------------------------------
def _endpoints_in_stripe() -> list[str]:
    listed = stripe_client.call("list", lambda c, o: c.v1.webhook_endpoints.list(options=o), idempotency_key=None)
    return [e.id for e in listed.data]


@pytest.mark.django_db
def test_registering_the_endpoint_again_creates_it_once_keeps_it_and_replaces_one_stripe_lost(
    stripe_emulator, admin_user
):
    created = stripe_webhook_endpoint_retry(actor=admin_user)  # the test's own atomic block is not a transaction
    assert _endpoints_in_stripe() == [created.id] and WebhookEndpoint.objects.get().id == created.id
    kept = stripe_webhook_endpoint_retry(actor=admin_user)
    assert kept.id == created.id and _endpoints_in_stripe() == [created.id]

    stripe_emulator.reset()  # a new Stripe account (or a reset emulator): the endpoint is gone there
    replaced = stripe_webhook_endpoint_retry(actor=admin_user)
    assert replaced.id != created.id and _endpoints_in_stripe() == [replaced.id]
    assert list(WebhookEndpoint.objects.values_list("id", flat=True)) == [replaced.id]

    entries = list(AuditLogEntry.objects.filter(action="stripe_webhook_endpoint.ensure").order_by("pk"))
    assert [e.after["created"] for e in entries] == [True, False, True]
    assert entries[0].before == {"endpoints": []} and entries[2].before == {"endpoints": [created.id]}
    assert all(e.actor == admin_user for e in entries)


@pytest.mark.django_db
def test_a_stripe_failure_while_registering_records_nothing(stripe_emulator, settings, admin_user):
    settings.STRIPE_MAX_RETRIES = 0
    stripe_emulator.add_fault(path_prefix="/v1/webhook_endpoints", method="POST", mode="500", count=1)
    with pytest.raises(StripeFailure):
        stripe_webhook_endpoint_retry(actor=admin_user)
    assert not WebhookEndpoint.objects.exists()
    assert not AuditLogEntry.objects.filter(action="stripe_webhook_endpoint.ensure").exists()


@pytest.mark.django_db
def test_the_page_registers_the_endpoint_and_says_so_or_says_what_stripe_answered(
    stripe_emulator, settings, client, admin_user
):
    settings.STRIPE_MAX_RETRIES = 0
    client.force_login(admin_user)
    url = reverse("staff-ops-webhook-endpoint-retry")
    stripe_emulator.add_fault(path_prefix="/v1/webhook_endpoints", method="POST", mode="500", count=1)
    failed = client.post(url, follow=True)
    assert "Stripe did not answer as expected, nothing was changed" in failed.content.decode()
    assert not WebhookEndpoint.objects.exists()

    done = client.post(url, follow=True)
    endpoint = WebhookEndpoint.objects.get()
    assert f"The webhook endpoint {endpoint.id} is registered in Stripe" in done.content.decode()
    assert done.redirect_chain == [(reverse("staff-ops-stripe-sync"), 302)]
    assert f'data-endpoint="{endpoint.id}"' in done.content.decode()
    assert client.get(url).status_code == 302 and WebhookEndpoint.objects.count() == 1  # a GET changes nothing


@pytest.mark.django_db
def test_stripe_setup_and_the_page_find_the_same_endpoint(stripe_emulator, client, admin_user):
    call_command("stripe_setup", stdout=StringIO())
    endpoint = WebhookEndpoint.objects.get()
    client.force_login(admin_user)
    client.post(reverse("staff-ops-webhook-endpoint-retry"))
    assert list(WebhookEndpoint.objects.values_list("id", flat=True)) == [endpoint.id]


@pytest.mark.django_db
def test_a_registration_whose_answer_was_lost_leaves_one_endpoint_not_two(stripe_emulator, settings, admin_user):
    """Stripe creates the endpoint but its answer is lost (500 after record): the portal never learnt its
    secret. Registering again deletes that orphan before making a new one, so events are not delivered twice."""
    settings.STRIPE_MAX_RETRIES = 0
    stripe_emulator.add_fault(path_prefix="/v1/webhook_endpoints", method="POST", mode="500_after_record", count=1)
    with pytest.raises(StripeFailure):
        stripe_webhook_endpoint_retry(actor=admin_user)
    assert len(_endpoints_in_stripe()) == 1 and not WebhookEndpoint.objects.exists()  # the orphan
    again = stripe_webhook_endpoint_retry(actor=admin_user)
    assert _endpoints_in_stripe() == [again.id] and WebhookEndpoint.objects.get().id == again.id


@pytest.mark.django_db(transaction=True)
def test_two_registrations_at_once_make_one_endpoint(stripe_emulator, admin_user):
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("advisory locks need PostgreSQL")
    outcomes, barrier = [], threading.Barrier(2)

    def register():
        try:
            barrier.wait()
            outcomes.append(stripe_webhook_endpoint_retry(actor=admin_user).id)
        except ValidationError:
            outcomes.append("busy")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=register) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(_endpoints_in_stripe()) == 1 and WebhookEndpoint.objects.count() == 1
    assert set(outcomes) - {"busy"} == {WebhookEndpoint.objects.get().id}
