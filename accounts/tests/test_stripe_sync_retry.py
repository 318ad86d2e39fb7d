"""price_plan_version_stripe_sync_retry: an admin's retry of a version whose Stripe sync failed, and the
retire guard for versions accounts are scheduled to move to."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError

from accounts.models import AuditLogEntry, PlanMigration, PricePlanVersion
from accounts.pricing import plan_version_spec_parse
from accounts.services import price_plan_version_create, price_plan_version_publish, price_plan_version_retire
from accounts.services.stripe_catalog import price_plan_version_stripe_sync, price_plan_version_stripe_sync_retry
from billing_portal import clock
from billing_portal.stripe_client import StripeFailure

pytestmark = pytest.mark.django_db

TERMS = {
    "currency": "usd", "tiers_mode": "graduated",
    "tiers": [{"up_to": 1000, "unit_amount_decimal": "99"}, {"up_to": "inf", "unit_amount_decimal": "79"}],
    "inactivity_window": "24:00:00", "seat_unit_amount": 3900, "seat_conversion_unit_amount_decimal": "90",
    "effective_from": "2027-01-01T00:00:00Z",
}  # fmt: skip


@pytest.fixture
def draft(default_plan, admin_user):
    return price_plan_version_create(plan=default_plan, spec=plan_version_spec_parse(TERMS), actor=admin_user)


@pytest.fixture
def failed(draft, admin_user, stripe_emulator, settings):
    """A published version whose sync really failed: Stripe unreachable while it ran."""
    price_plan_version_publish(version=draft, actor=admin_user)
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    settings.STRIPE_MAX_RETRIES = 0
    with pytest.raises(StripeFailure):
        price_plan_version_stripe_sync(version=draft)
    settings.STRIPE_API_BASE = stripe_emulator.url
    draft.refresh_from_db()
    assert draft.stripe_sync_status == "failed" and draft.stripe_sync_error
    return draft


def test_retry_of_a_failed_sync_goes_back_to_pending_is_audited_and_the_queued_task_syncs_it(
    failed, admin_user, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        retried = price_plan_version_stripe_sync_retry(version=failed, actor=admin_user)
    assert retried.stripe_sync_status == "pending"
    assert PricePlanVersion.objects.get(pk=failed.pk).stripe_sync_status == "pending"
    entry = AuditLogEntry.objects.get(action="price_plan_version.stripe_sync_retry", object_id=str(failed.pk))
    assert entry.actor == admin_user
    assert entry.before["stripe_sync_status"] == "failed" and entry.before["stripe_sync_error"]
    assert entry.after == {"stripe_sync_status": "pending"}
    assert len(callbacks) == 1  # the task goes out only once the change is committed
    callbacks[0]()  # the commit happens: the (eager) task syncs against the emulator
    failed.refresh_from_db()
    assert failed.stripe_sync_status == "synced" and failed.stripe_price_id and failed.stripe_sync_error == ""


def test_retry_while_pending_is_a_no_op(failed, admin_user, django_capture_on_commit_callbacks):
    price_plan_version_stripe_sync_retry(version=failed, actor=admin_user)
    with django_capture_on_commit_callbacks() as callbacks:
        again = price_plan_version_stripe_sync_retry(version=failed, actor=admin_user)
    assert again.stripe_sync_status == "pending" and callbacks == []
    assert AuditLogEntry.objects.filter(action="price_plan_version.stripe_sync_retry").count() == 1


def test_a_draft_is_refused(draft, admin_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(ValidationError, match="is a draft"):
        price_plan_version_stripe_sync_retry(version=draft, actor=admin_user)
    assert callbacks == [] and not AuditLogEntry.objects.filter(action__endswith="stripe_sync_retry").exists()


def test_a_synced_version_is_refused_and_left_as_it_is(default_plan, admin_user, django_capture_on_commit_callbacks):
    version = default_plan.current_version()
    PricePlanVersion.objects.filter(pk=version.pk).update(stripe_sync_status="synced")
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(ValidationError, match="has not failed"):
        price_plan_version_stripe_sync_retry(version=version, actor=admin_user)
    assert callbacks == []
    assert PricePlanVersion.objects.get(pk=version.pk).stripe_sync_status == "synced"


def test_retire_is_refused_while_accounts_are_scheduled_to_move_to_the_version(draft, admin_user, account):
    version = price_plan_version_publish(version=draft, actor=admin_user)
    move = PlanMigration.objects.create(
        account=account, from_version=account.plan_version, to_version=version,
        effective_at=clock.now() + dt.timedelta(days=10), batch_key="t",
    )  # fmt: skip
    with pytest.raises(ValidationError, match="1 account\\(s\\) are scheduled to move to this version"):
        price_plan_version_retire(version=version, actor=admin_user)
    assert PricePlanVersion.objects.get(pk=version.pk).status == "published"
    PlanMigration.objects.filter(pk=move.pk).update(status=PlanMigration.Status.CANCELLED)
    assert price_plan_version_retire(version=version, actor=admin_user).status == "retired"
