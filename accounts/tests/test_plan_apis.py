"""The staff JSON API for price plans and versions: admins only, one error shape, parser errors as field
errors with nothing changed, 409 for the wrong state, Idempotency-Key on the creating POSTs."""

import datetime as dt

import pytest

from accounts.models import AuditLogEntry, PlanMigration, PricePlan, PricePlanVersion
from accounts.pricing import plan_version_spec_parse
from billing_portal import clock

pytestmark = pytest.mark.django_db

PLANS = "/api/v1/staff/price-plans"
TERMS = {
    "currency": "usd", "tiers_mode": "graduated",
    "tiers": [{"up_to": 1000, "unit_amount_decimal": "99"},
              {"up_to": None, "unit_amount_decimal": "79", "flat_amount": 500}],
    "inactivity_window": "12:00:00", "seat_unit_amount": 3900, "seat_conversion_unit_amount_decimal": "90",
    "effective_from": "2027-01-01T00:00:00Z",
    "offers": [{"name": "Annual 50k", "resolutions": 50000, "unit_amount_decimal": "80"}],
}  # fmt: skip


def versions_url(slug="fin-standard"):
    return f"{PLANS}/{slug}/versions"


def version_url(pk, action=""):
    return f"/api/v1/staff/price-plan-versions/{pk}" + (f"/{action}" if action else "")


def errors_of(response, status):
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert set(body) == {"errors"} and body["errors"]
    assert all(set(e) == {"index", "field", "message"} for e in body["errors"])
    return {e["field"]: e["message"] for e in body["errors"]}


@pytest.fixture
def admin_api(api_client, admin_user):
    api_client.force_authenticate(admin_user)
    return api_client


@pytest.fixture
def draft(admin_api):
    response = admin_api.post(versions_url(), TERMS, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_list_shows_each_plan_with_its_versions_and_the_accounts_on_them(admin_api, account):
    body = admin_api.get(PLANS).json()
    (plan,) = [p for p in body if p["slug"] == "fin-standard"]
    (v1,) = plan["versions"]
    assert (v1["number"], v1["status"], v1["unit_amount_decimal"], v1["tiers_mode"]) == (1, "published", "99", "")
    assert v1["accounts"] == 1  # `account` is on it
    assert v1["offers"][0]["resolutions"] == 10_000 and v1["inactivity_window"] == "1 00:00:00"


def test_create_a_plan_then_a_draft_of_it(admin_api, admin_user):
    response = admin_api.post(PLANS, {"slug": "fin-volume", "name": "Fin Volume"}, format="json")
    assert response.status_code == 201 and response.json()["versions"] == []
    assert AuditLogEntry.objects.filter(action="price_plan.create", actor=admin_user).count() == 1
    created = admin_api.post(versions_url("fin-volume"), {**TERMS, "tiers_mode": "volume"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert (body["plan"], body["number"], body["status"], body["stripe_sync_status"]) == ("fin-volume", 1, "draft", "")
    assert body["tiers"] == [
        {"up_to": 1000, "unit_amount_decimal": "99", "flat_amount": None},
        {"up_to": None, "unit_amount_decimal": "79", "flat_amount": 500},
    ]
    assert admin_api.get(versions_url("fin-volume")).json()[0]["id"] == body["id"]


def test_a_duplicate_plan_slug_is_409_and_bad_plan_input_400(admin_api):
    assert errors_of(admin_api.post(PLANS, {"slug": "fin-standard", "name": "x"}, format="json"), 409)
    errors = errors_of(admin_api.post(PLANS, {"slug": "not a slug!", "name": ""}, format="json"), 400)
    assert set(errors) == {"slug", "name"}
    assert PricePlan.objects.count() == 1


def test_bad_terms_are_400_with_each_parser_error_on_its_field_and_nothing_is_created(admin_api):
    before = (PricePlanVersion.objects.count(), AuditLogEntry.objects.count())
    bad = {**TERMS, "currency": "usx", "tiers": [{"up_to": 1000, "unit_amount_decimal": "99"},
                                                 {"up_to": 500, "unit_amount_decimal": "-1"}]}  # fmt: skip
    errors = errors_of(admin_api.post(versions_url(), bad, format="json"), 400)
    assert "currency" in errors and "not a currency" in errors["currency"]
    assert "tiers[1].unit_amount_decimal" in errors and "negative" in errors["tiers[1].unit_amount_decimal"]
    assert "tiers[1].up_to" in errors
    assert (PricePlanVersion.objects.count(), AuditLogEntry.objects.count()) == before


@pytest.mark.parametrize("body", [[1, 2], "usd", {"currency": ["usd"]}])
def test_a_body_that_is_not_terms_is_a_plain_400(admin_api, body):
    errors = errors_of(admin_api.post(versions_url(), body, format="json"), 400)
    assert errors


def test_unknown_plan_and_version_are_404_in_the_one_shape(admin_api):
    before = PricePlanVersion.objects.count()
    for response in (
        admin_api.post(versions_url("nope"), TERMS, format="json"),
        admin_api.get(version_url(999_999)),
        admin_api.post(version_url(999_999, "publish"), {}, format="json"),
    ):
        errors = errors_of(response, 404)
        assert list(errors) == [None] and errors[None].strip(), errors  # one message about the whole request
    assert PricePlanVersion.objects.count() == before  # nothing was created


def test_idempotency_key_replays_the_first_draft_and_refuses_another_body(admin_api):
    first = admin_api.post(versions_url(), TERMS, format="json", HTTP_IDEMPOTENCY_KEY="draft-1")
    again = admin_api.post(versions_url(), TERMS, format="json", HTTP_IDEMPOTENCY_KEY="draft-1")
    assert first.status_code == again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = admin_api.post(versions_url(), {**TERMS, "seat_unit_amount": 4200}, format="json",
                           HTTP_IDEMPOTENCY_KEY="draft-1")  # fmt: skip
    assert "already used" in errors_of(other, 409)[None]
    assert PricePlanVersion.objects.filter(status="draft").count() == 1


def test_patch_replaces_only_the_fields_given_and_is_audited(admin_api, draft):
    response = admin_api.patch(version_url(draft["id"]), {"seat_unit_amount": 4200}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["seat_unit_amount"] == 4200 and body["tiers"] == draft["tiers"] and body["offers"][0]["name"]
    entry = AuditLogEntry.objects.get(action="price_plan_version.update")
    assert (entry.before["seat_unit_amount"], entry.after["seat_unit_amount"]) == (3900, 4200)
    per_unit = admin_api.patch(version_url(draft["id"]), {"tiers_mode": "", "unit_amount_decimal": "95"},
                               format="json").json()  # fmt: skip
    assert (per_unit["tiers_mode"], per_unit["unit_amount_decimal"], per_unit["tiers"]) == ("", "95", [])


def test_a_bad_patch_is_400_and_changes_nothing(admin_api, draft):
    errors = errors_of(admin_api.patch(version_url(draft["id"]), {"inactivity_window": "40 00:00:00"},
                                       format="json"), 400)  # fmt: skip
    assert "30 days" in errors["inactivity_window"]
    assert admin_api.get(version_url(draft["id"])).json() == draft


def test_publish_then_edit_publish_again_are_409_and_retire_works(admin_api, draft, admin_user):
    published = admin_api.post(version_url(draft["id"], "publish"), {"reason": "Q1 pricing"}, format="json")
    assert published.status_code == 200 and published.json()["status"] == "published"
    assert published.json()["stripe_sync_status"] == "pending"
    assert AuditLogEntry.objects.get(action="price_plan_version.publish").reason == "Q1 pricing"
    assert "only a draft" in errors_of(admin_api.patch(version_url(draft["id"]), {"seat_unit_amount": 1},
                                                       format="json"), 409)[None]  # fmt: skip
    assert (
        "only a draft" in errors_of(admin_api.post(version_url(draft["id"], "publish"), {}, format="json"), 409)[None]
    )
    retired = admin_api.post(version_url(draft["id"], "retire"), {}, format="json")
    assert retired.status_code == 200 and retired.json()["status"] == "retired"
    assert "only a published" in errors_of(admin_api.post(version_url(draft["id"], "retire"), {}, format="json"),
                                           409)[None]  # fmt: skip


def test_retire_is_409_while_accounts_are_on_the_version_or_moving_to_it(admin_api, account, draft):
    v1 = account.plan_version
    assert "still on this version" in errors_of(admin_api.post(version_url(v1.pk, "retire"), {}, format="json"),
                                                409)[None]  # fmt: skip
    admin_api.post(version_url(draft["id"], "publish"), {}, format="json")
    PlanMigration.objects.create(account=account, from_version=v1, to_version_id=draft["id"],
                                 effective_at=clock.now() + dt.timedelta(days=3), batch_key="k")  # fmt: skip
    assert "scheduled to move" in errors_of(admin_api.post(version_url(draft["id"], "retire"), {}, format="json"),
                                            409)[None]  # fmt: skip
    assert PricePlanVersion.objects.get(pk=draft["id"]).status == "published"


def test_stripe_sync_retry_is_409_unless_the_sync_failed(admin_api, draft):
    assert "draft" in errors_of(admin_api.post(version_url(draft["id"], "stripe-sync-retry")), 409)[None]
    admin_api.post(version_url(draft["id"], "publish"), {}, format="json")
    PricePlanVersion.objects.filter(pk=draft["id"]).update(stripe_sync_status="failed", stripe_sync_error="boom")
    retried = admin_api.post(version_url(draft["id"], "stripe-sync-retry"))
    assert retried.status_code == 200 and retried.json()["stripe_sync_status"] == "pending"
    PricePlanVersion.objects.filter(pk=draft["id"]).update(stripe_sync_status="synced")
    assert "has not failed" in errors_of(admin_api.post(version_url(draft["id"], "stripe-sync-retry")), 409)[None]


def test_a_reason_too_long_is_400(admin_api, draft):
    errors = errors_of(admin_api.post(version_url(draft["id"], "publish"), {"reason": "x" * 501}, format="json"), 400)
    assert "reason" in errors
    assert PricePlanVersion.objects.get(pk=draft["id"]).status == "draft"


@pytest.mark.parametrize("role", ["viewer", "billing_admin", "manager"])
def test_only_admins_may_use_it(api_client, role, viewer, billing_admin, manager, draft):
    api_client.force_authenticate({"viewer": viewer, "billing_admin": billing_admin, "manager": manager}[role])
    before = PricePlanVersion.objects.count()
    for method, url in [("get", PLANS), ("post", PLANS), ("get", versions_url()), ("post", versions_url()),
                        ("get", version_url(draft["id"])), ("patch", version_url(draft["id"])),
                        ("post", version_url(draft["id"], "publish")), ("post", version_url(draft["id"], "retire")),
                        ("post", version_url(draft["id"], "stripe-sync-retry"))]:  # fmt: skip
        assert "admins" in errors_of(getattr(api_client, method)(url, TERMS, format="json"), 403)[None]
    assert PricePlanVersion.objects.count() == before
    assert PricePlanVersion.objects.get(pk=draft["id"]).status == "draft"


def test_anonymous_is_401(api_client):
    before = PricePlanVersion.objects.count()
    for response in (api_client.get(PLANS), api_client.post(versions_url(), TERMS, format="json")):
        errors = errors_of(response, 401)
        assert list(errors) == [None] and errors[None].strip(), errors
    assert PricePlanVersion.objects.count() == before


# --- concurrent edits and what was reviewed (review of the draft code) ------------------------------------
def test_two_patches_of_different_fields_both_stay(admin_api, draft):
    assert admin_api.patch(version_url(draft["id"]), {"seat_unit_amount": 4200}, format="json").status_code == 200
    response = admin_api.patch(version_url(draft["id"]), {"inactivity_window": "06:00:00"}, format="json")
    assert response.status_code == 200
    version = PricePlanVersion.objects.get(pk=draft["id"])
    assert (version.seat_unit_amount, version.inactivity_window) == (4200, dt.timedelta(hours=6))


def test_the_patch_is_laid_over_the_terms_read_under_the_lock(admin_api, draft, admin_user):
    """The service builds the spec from the draft it locked: the terms the builder sees are the locked row's,
    so another admin's save just before it is kept."""
    from accounts.services import price_plan_version_update

    seen = []

    def build(locked):
        seen.append(locked.seat_unit_amount)
        return plan_version_spec_parse({**TERMS, "seat_unit_amount": locked.seat_unit_amount + 1})

    other = PricePlanVersion.objects.get(pk=draft["id"])
    PricePlanVersion.objects.filter(pk=draft["id"]).update(seat_unit_amount=5000)  # saved after `other` was read
    price_plan_version_update(version=other, actor=admin_user, build=build)
    assert seen == [5000] and PricePlanVersion.objects.get(pk=draft["id"]).seat_unit_amount == 5001


def test_a_parse_error_in_a_patch_is_still_a_400_and_changes_nothing(admin_api, draft):
    errors = errors_of(admin_api.patch(version_url(draft["id"]), {"seat_unit_amount": "lots"}, format="json"), 400)
    assert "seat_unit_amount" in errors
    assert PricePlanVersion.objects.get(pk=draft["id"]).seat_unit_amount == 3900


def test_the_service_keeps_the_key_with_the_draft_and_refuses_it_for_other_terms(admin_user):
    from django.core.exceptions import ValidationError

    from accounts.services import price_plan_version_create

    plan = PricePlan.objects.get(slug="fin-standard")
    spec = plan_version_spec_parse(TERMS)
    first = price_plan_version_create(plan=plan, spec=spec, actor=admin_user, idempotency_key="k-1")
    again = price_plan_version_create(plan=plan, spec=spec, actor=admin_user, idempotency_key="k-1")
    assert again.pk == first.pk and PricePlanVersion.objects.filter(plan=plan, status="draft").count() == 1
    with pytest.raises(ValidationError, match="other terms"):
        price_plan_version_create(
            plan=plan, spec=plan_version_spec_parse({**TERMS, "seat_unit_amount": 1}), actor=admin_user,
            idempotency_key="k-1",
        )  # fmt: skip
    assert PricePlanVersion.objects.filter(plan=plan, status="draft").count() == 1


def test_a_repeat_the_answer_cache_missed_with_other_terms_is_409(admin_api):
    """With the HTTP answer cache gone (as when two first requests overlap), the key kept with the draft still
    refuses other terms instead of answering with the first draft."""
    from accounts.idempotency import IdempotencyKey

    headers = {"HTTP_IDEMPOTENCY_KEY": "draft-9"}
    first = admin_api.post(versions_url(), TERMS, format="json", **headers)
    assert first.status_code == 201
    answers = IdempotencyKey.objects.exclude(scope__startswith="price_plan_version_create")
    answers.delete()
    same = admin_api.post(versions_url(), TERMS, format="json", **headers)
    assert same.status_code == 201 and same.json()["id"] == first.json()["id"]
    answers.delete()
    other = admin_api.post(versions_url(), {**TERMS, "seat_unit_amount": 1}, format="json", **headers)
    assert "other terms" in errors_of(other, 409)[None]
    assert PricePlanVersion.objects.filter(status="draft").count() == 1


def test_publish_with_the_digest_of_terms_that_changed_since_is_409(admin_api, draft):
    digest = admin_api.get(version_url(draft["id"])).json()["terms_digest"]
    assert digest == draft["terms_digest"] and len(digest) == 64
    assert admin_api.patch(version_url(draft["id"]), {"seat_unit_amount": 1}, format="json").status_code == 200
    stale = admin_api.post(version_url(draft["id"], "publish"), {"terms_digest": digest}, format="json")
    assert "changed since you opened" in errors_of(stale, 409)[None]
    assert PricePlanVersion.objects.get(pk=draft["id"]).status == "draft"
    fresh = admin_api.get(version_url(draft["id"])).json()["terms_digest"]
    assert fresh != digest
    published = admin_api.post(version_url(draft["id"], "publish"), {"terms_digest": fresh}, format="json")
    assert published.status_code == 200 and published.json()["status"] == "published"


def test_the_schema_documents_the_publish_digest():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert "terms_digest" in schema["components"]["schemas"]["PublishInput"]["properties"]
    assert "terms_digest" in schema["components"]["schemas"]["VersionOutput"]["properties"]
