import pytest

from accounts.models import AuditLogEntry, PricePlan, PricePlanVersion

pytestmark = pytest.mark.django_db

DRAFT_FORM = {
    "currency": "usd",
    "unit_amount_decimal": "",
    "tiers_mode": "graduated",
    "inactivity_window": "24:00:00",
    "seat_unit_amount": "3900",
    "seat_conversion_unit_amount_decimal": "90",
    "effective_from_0": "2027-01-01",
    "effective_from_1": "00:00:00",
    "tiers_json": '[{"up_to": 1000, "unit_amount_decimal": "99"}, {"up_to": "inf", "unit_amount_decimal": "89"}]',
    "offers_json": "[]",
    # inline management forms (read-only inlines still post them)
    "tiers-TOTAL_FORMS": "0", "tiers-INITIAL_FORMS": "0",
    "offers-TOTAL_FORMS": "0", "offers-INITIAL_FORMS": "0",
}  # fmt: skip


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_admin_creates_a_draft_through_the_service(admin_client, default_plan):
    response = admin_client.post("/admin/accounts/priceplanversion/add/", {**DRAFT_FORM, "plan": default_plan.pk})
    assert response.status_code == 302, response.content.decode()[:2000]
    version = PricePlanVersion.objects.get(plan=default_plan, number=2)
    assert version.status == "draft" and [t.up_to for t in version.tiers.all()] == [1000, None]
    assert AuditLogEntry.objects.filter(action="price_plan_version.create", object_id=str(version.pk)).exists()


def test_admin_form_shows_plan_errors_and_stores_nothing(admin_client, default_plan):
    bad = {**DRAFT_FORM, "plan": default_plan.pk, "tiers_json": '[{"up_to": 10, "unit_amount_decimal": "-1"}]'}
    response = admin_client.post("/admin/accounts/priceplanversion/add/", bad)
    page = response.content.decode()
    assert response.status_code == 200
    assert "A price cannot be negative." in page and "The last tier must be open-ended" in page
    assert PricePlanVersion.objects.filter(plan=default_plan).count() == 1

    broken_json = {**DRAFT_FORM, "plan": default_plan.pk, "tiers_json": "[{up_to: 1"}
    assert "Not valid JSON" in admin_client.post("/admin/accounts/priceplanversion/add/", broken_json).content.decode()


def test_published_version_is_read_only_in_admin(admin_client, default_plan):
    version = default_plan.current_version()
    page = admin_client.get(f"/admin/accounts/priceplanversion/{version.pk}/change/").content.decode()
    assert 'name="_save"' not in page  # view-only: no save button
    response = admin_client.post(
        f"/admin/accounts/priceplanversion/{version.pk}/change/", {**DRAFT_FORM, "plan": default_plan.pk}
    )
    assert response.status_code == 403
    version.refresh_from_db()
    assert version.tiers_mode == "" and version.tiers.count() == 0


def test_publish_action_publishes_drafts_and_refuses_published_ones(admin_client, default_plan):
    admin_client.post("/admin/accounts/priceplanversion/add/", {**DRAFT_FORM, "plan": default_plan.pk})
    draft = PricePlanVersion.objects.get(plan=default_plan, number=2)
    published = default_plan.current_version()
    response = admin_client.post(
        "/admin/accounts/priceplanversion/",
        {"action": "publish", "_selected_action": [draft.pk, published.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "Published fin-standard v2" in page
    assert "only a draft can be published" in page
    draft.refresh_from_db()
    assert draft.status == "published"


def test_audit_log_is_read_only_in_admin(admin_client, default_plan):
    admin_client.post("/admin/accounts/priceplanversion/add/", {**DRAFT_FORM, "plan": default_plan.pk})
    entry = AuditLogEntry.objects.first()
    assert admin_client.get("/admin/accounts/auditlogentry/").status_code == 200
    assert admin_client.get("/admin/accounts/auditlogentry/add/").status_code == 403
    assert admin_client.post(f"/admin/accounts/auditlogentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditLogEntry.objects.filter(pk=entry.pk).exists()


def test_admin_edit_of_an_account_is_audited(admin_client, account, manager):
    form = {
        "name": "Acme Support (EU)", "slug": "acme", "billing_email": "", "currency": "usd",
        "timezone": "Europe/Paris", "status": "active", "plan_version": account.plan_version_id,
        "account_manager": manager.pk, "low_credit_threshold_percent": 15,
    }  # fmt: skip
    response = admin_client.post(f"/admin/accounts/account/{account.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    entry = AuditLogEntry.objects.get(action="account.change_via_admin")
    assert entry.after["timezone"] == "Europe/Paris" and entry.before["timezone"] == "UTC"
    assert entry.after["low_credit_threshold_percent"] == "15"


def test_admin_rejects_an_unknown_timezone(admin_client, account):
    form = {
        "name": "Acme", "slug": "acme", "billing_email": "", "currency": "usd", "timezone": "Mars/Olympus",
        "status": "active", "plan_version": account.plan_version_id, "account_manager": "",
        "low_credit_threshold_percent": 20,
    }  # fmt: skip
    page = admin_client.post(f"/admin/accounts/account/{account.pk}/change/", form).content.decode()
    assert "not a known timezone" in page
    account.refresh_from_db()
    assert account.timezone == "UTC"


def test_every_model_has_an_admin(admin_client):
    from django.contrib import admin

    for model in [PricePlan, PricePlanVersion, AuditLogEntry]:
        assert model in admin.site._registry
    from django.apps import apps

    ours = [m for m in apps.get_models() if m._meta.app_label == "accounts"]
    missing = [
        m.__name__ for m in ours if m not in admin.site._registry and m.__name__ not in ("PriceTier", "CreditPackOffer")
    ]
    assert missing == []
