import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import AuditLogEntry, PricePlan, PricePlanVersion
from accounts.pricing import plan_version_spec_parse
from accounts.services import (
    audit_log_write,
    price_plan_create,
    price_plan_version_create,
    price_plan_version_publish,
    price_plan_version_retire,
    price_plan_version_snapshot,
    price_plan_version_update,
)

pytestmark = pytest.mark.django_db

TERMS = {
    "currency": "usd",
    "tiers_mode": "volume",
    "tiers": [{"up_to": 5000, "unit_amount_decimal": "99"}, {"up_to": "inf", "unit_amount_decimal": "85"}],
    "inactivity_window": "12:00:00",
    "seat_unit_amount": 3900,
    "seat_conversion_unit_amount_decimal": "90",
    "effective_from": "2027-01-01T00:00:00Z",
    "offers": [{"name": "Annual 50k", "resolutions": 50000, "validity_days": 365, "unit_amount_decimal": "80"}],
}


def test_migrate_creates_fin_standard_exactly_as_designed():
    version = PricePlan.objects.get(slug="fin-standard").current_version()
    assert version.number == 1 and version.status == "published"
    assert (version.currency, version.unit_amount_decimal, version.tiers_mode) == ("usd", Decimal("99"), "")
    assert version.inactivity_window == dt.timedelta(hours=24)
    assert version.seat_unit_amount == 3900
    assert version.seat_conversion_unit_amount_decimal == Decimal("90")
    (offer,) = version.offers.all()
    assert (offer.resolutions, offer.validity_days, offer.unit_amount_decimal) == (10_000, 365, Decimal("90"))
    assert offer.amount_minor == 900_000  # $9,000.00


@pytest.fixture
def plan(admin_user):
    return price_plan_create(slug="fin-volume", name="Fin Volume", actor=admin_user)


@pytest.fixture
def draft(plan, admin_user):
    return price_plan_version_create(plan=plan, spec=plan_version_spec_parse(TERMS), actor=admin_user)


def test_draft_is_created_with_its_tiers_offers_and_an_audit_entry(draft, admin_user):
    assert draft.number == 1 and draft.status == "draft"
    assert [(t.up_to, t.unit_amount_decimal) for t in draft.tiers.all()] == [
        (5000, Decimal("99")),
        (None, Decimal("85")),
    ]
    entry = AuditLogEntry.objects.get(action="price_plan_version.create", object_id=str(draft.pk))
    assert entry.actor == admin_user
    assert entry.after["tiers"][1] == {"up_to": None, "unit_amount_decimal": "85.000000000000", "flat_amount": None}


def test_versions_are_numbered_in_order(plan, draft, admin_user):
    second = price_plan_version_create(plan=plan, spec=plan_version_spec_parse(TERMS), actor=admin_user)
    assert second.number == 2


def test_a_draft_can_be_edited_and_the_audit_entry_has_before_and_after(draft, admin_user):
    price_plan_version_update(
        version=draft, spec=plan_version_spec_parse({**TERMS, "tiers_mode": "graduated"}), actor=admin_user
    )
    draft.refresh_from_db()
    assert draft.tiers_mode == "graduated"
    entry = AuditLogEntry.objects.get(action="price_plan_version.update")
    assert (entry.before["tiers_mode"], entry.after["tiers_mode"]) == ("volume", "graduated")


def test_a_published_version_can_never_change(draft, admin_user):
    price_plan_version_publish(version=draft, actor=admin_user)
    before = price_plan_version_snapshot(PricePlanVersion.objects.get(pk=draft.pk))
    audit_count = AuditLogEntry.objects.count()

    with pytest.raises(ValidationError, match="only a draft can be edited"):
        price_plan_version_update(
            version=draft, spec=plan_version_spec_parse({**TERMS, "currency": "eur"}), actor=admin_user
        )
    with pytest.raises(ValidationError, match="only a draft can be published"):
        price_plan_version_publish(version=draft, actor=admin_user)

    assert price_plan_version_snapshot(PricePlanVersion.objects.get(pk=draft.pk)) == before
    assert AuditLogEntry.objects.count() == audit_count


def test_publish_freezes_the_draft_and_is_audited(draft, admin_user, frozen_now):
    published = price_plan_version_publish(version=draft, actor=admin_user, reason="Q1 pricing")
    assert published.status == "published" and published.published_at == frozen_now
    entry = AuditLogEntry.objects.get(action="price_plan_version.publish")
    assert entry.before == {"status": "draft"} and entry.after["status"] == "published"
    assert entry.reason == "Q1 pricing" and entry.created_at == frozen_now


def test_a_stale_copy_of_a_published_version_cannot_be_edited(draft, admin_user):
    stale = PricePlanVersion.objects.get(pk=draft.pk)  # read while still a draft
    price_plan_version_publish(version=draft, actor=admin_user)
    with pytest.raises(ValidationError):
        price_plan_version_update(version=stale, spec=plan_version_spec_parse(TERMS), actor=admin_user)


def test_retire_only_published_versions_without_accounts(draft, admin_user, account):
    with pytest.raises(ValidationError, match="only a published version"):
        price_plan_version_retire(version=draft, actor=admin_user)
    price_plan_version_publish(version=draft, actor=admin_user)
    retired = price_plan_version_retire(version=draft, actor=admin_user, reason="superseded")
    assert retired.status == "retired" and retired.retired_at is not None
    with pytest.raises(ValidationError, match="still on this version"):
        price_plan_version_retire(version=account.plan_version, actor=admin_user)


def test_current_version_follows_effective_from(plan, draft, admin_user):
    price_plan_version_publish(version=draft, actor=admin_user)
    assert plan.current_version(at=dt.datetime(2026, 12, 31, tzinfo=dt.UTC)) is None
    assert plan.current_version(at=dt.datetime(2027, 1, 1, tzinfo=dt.UTC)) == draft


def test_duplicate_plan_slug_is_a_clear_error(plan, admin_user):
    with pytest.raises(ValidationError) as info:
        price_plan_create(slug="fin-volume", name="Again", actor=admin_user)
    assert "slug" in info.value.message_dict


def test_audit_entry_must_be_written_inside_the_change_transaction(admin_user, draft):
    with pytest.raises(RuntimeError, match="inside the transaction"):
        # pytest-django wraps tests in a transaction; leave it to prove the guard.
        conn = transaction.get_connection()
        saved, conn.in_atomic_block = conn.in_atomic_block, False
        try:
            audit_log_write(actor=admin_user, action="x", obj=draft)
        finally:
            conn.in_atomic_block = saved


def test_a_failure_after_the_change_rolls_back_change_and_audit_together(draft, admin_user, monkeypatch):
    import accounts.services.plans as plan_services

    def broken_audit(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plan_services, "audit_log_write", broken_audit)
    with pytest.raises(RuntimeError, match="disk full"):
        plan_services.price_plan_version_publish(version=draft, actor=admin_user)
    draft.refresh_from_db()
    assert draft.status == "draft" and draft.published_at is None
