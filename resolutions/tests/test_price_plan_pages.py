"""Price plan pages (issue 12): the plans list, a version's page, publish / retire / Stripe sync retry, and the
draft editor (rows, validation as you type with the services' parser, save refused with the same errors),
with the price curve checked against figures computed by hand."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from accounts.models import AuditLogEntry, PlanMigration, PricePlan, PricePlanVersion
from accounts.pricing import plan_version_spec_parse
from accounts.services import (
    price_plan_create,
    price_plan_version_create,
    price_plan_version_publish,
    price_plan_version_update,
)
from billing_portal import clock
from resolutions.models import MeterWindow

pytestmark = pytest.mark.django_db

TERMS = {
    "currency": "usd", "tiers_mode": "graduated", "unit_amount_decimal": "",
    "tiers": [{"up_to": "1000", "unit_amount_decimal": "99", "flat_amount": ""},
              {"up_to": "", "unit_amount_decimal": "79", "flat_amount": "500"}],
    "inactivity_window": "12:00:00", "seat_unit_amount": "3900", "seat_conversion_unit_amount_decimal": "90",
    "effective_from": "2027-01-01T00:00",
    "offers": [{"name": "Annual 50k", "resolutions": "50000", "validity_days": "365", "unit_amount_decimal": "80"}],
}  # fmt: skip


def form(terms=None, **extra) -> dict:
    """The editor's POST fields for `terms` (the form's own names: tier-0-up_to, offer_count, …)."""
    terms = {**TERMS, **(terms or {})}
    data = {k: v for k, v in terms.items() if k not in ("tiers", "offers")}
    data["tier_count"], data["offer_count"] = len(terms["tiers"]), len(terms["offers"])
    for prefix, key in (("tier", "tiers"), ("offer", "offers")):
        for i, row in enumerate(terms[key]):
            data.update({f"{prefix}-{i}-{name}": value for name, value in row.items()})
    return {**data, **extra}


@pytest.fixture
def plan():
    return PricePlan.objects.get(slug="fin-standard")


@pytest.fixture
def admin(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def draft(plan, admin_user):
    spec = plan_version_spec_parse({**TERMS, "effective_from": "2027-01-01T00:00:00Z"})
    return price_plan_version_create(plan=plan, spec=spec, actor=admin_user)


def amounts(html: str) -> dict[int, list[int]]:
    """The price curve's sample table: quantity -> the amounts (minor units) in its cells."""
    rows = re.findall(r'<tr data-quantity="(\d+)">(.*?)</tr>', html, re.S)
    return {int(q): [int(a) for a in re.findall(r'data-amount="(-?\d+)"', cells)] for q, cells in rows}


# --- the list and a version ----------------------------------------------------------------------------
def test_the_list_shows_each_version_what_it_charges_its_sync_and_its_accounts(admin, plan, draft, account):
    html = admin.get("/staff/pricing/plans/").content.decode()
    v1 = plan.versions.get(number=1)
    row = re.search(rf'<tr data-version="{v1.pk}">(.*?)</tr>', html, re.S).group(1)
    assert "$0.99 per resolution" in row and "$39.00 a month" in row and "24 hours" in row
    assert "Published" in row and "in force" in row and re.search(r'class="num">1\b', row)
    draft_row = re.search(rf'<tr data-version="{draft.pk}">(.*?)</tr>', html, re.S).group(1)
    assert "Graduated tiers" in draft_row and "1–1,000:" in draft_row and "$0.99 each" in draft_row
    assert "1,001 and above:" in draft_row and "$0.79 each + $5.00 flat" in draft_row
    assert "Not in Stripe (a draft)" in draft_row and "1 Jan 2027" in draft_row
    assert 'href="/staff/pricing/plans/"' in html and ">Pricing</a>" in html  # the nav entry


def test_a_plan_without_versions_says_so(admin, admin_user):
    price_plan_create(slug="fin-new", name="Fin New", actor=admin_user)
    html = admin.get("/staff/pricing/plans/").content.decode()
    assert "No versions yet" in html


def test_a_published_version_page_is_read_only_and_a_failed_sync_shows_stripes_message(admin, plan):
    v1 = plan.versions.get(number=1)
    PricePlanVersion.objects.filter(pk=v1.pk).update(stripe_sync_status="failed", stripe_sync_error="No such meter")
    html = admin.get(f"/staff/pricing/plans/versions/{v1.pk}/").content.decode()
    assert "Stripe sync failed" in html and "Stripe said: No such meter" in html
    assert f'action="/staff/pricing/plans/versions/{v1.pk}/stripe-sync-retry"' in html
    assert "/edit" not in html and "/publish" not in html and "never changes" in html


def test_retry_puts_a_failed_sync_back_to_pending_and_is_refused_otherwise(admin, plan, admin_user):
    v1 = plan.versions.get(number=1)
    url = f"/staff/pricing/plans/versions/{v1.pk}/stripe-sync-retry"
    assert admin.get(url).status_code == 302  # a GET changes nothing
    PricePlanVersion.objects.filter(pk=v1.pk).update(stripe_sync_status="synced")
    page = admin.post(url, follow=True).content.decode()
    assert "has not failed" in page
    PricePlanVersion.objects.filter(pk=v1.pk).update(stripe_sync_status="failed", stripe_sync_error="boom")
    page = admin.post(url, follow=True).content.decode()
    assert "queued again" in page and "Waiting for Stripe" in page
    assert AuditLogEntry.objects.get(action="price_plan_version.stripe_sync_retry").actor == admin_user


# --- publish and retire ----------------------------------------------------------------------------------
def test_publish_asks_first_then_publishes_with_the_reason(admin, draft, admin_user):
    url = f"/staff/pricing/plans/versions/{draft.pk}/publish"
    confirm = admin.get(url).content.decode()
    assert "these terms never change" in confirm and 'name="reason"' in confirm
    assert admin.post(url, {"reason": "Q1"}).status_code == 302  # no confirm=yes: nothing happens
    assert PricePlanVersion.objects.get(pk=draft.pk).status == "draft"
    page = admin.post(url, {"confirm": "yes", "reason": "Q1 pricing"}, follow=True).content.decode()
    assert "is published" in page and "Waiting for Stripe" in page
    assert AuditLogEntry.objects.get(action="price_plan_version.publish").reason == "Q1 pricing"
    again = admin.post(url, {"confirm": "yes"})
    assert again.status_code == 409 and "only a draft can be published" in again.content.decode()


def test_retire_explains_in_plain_words_why_it_is_refused(admin, plan, draft, account, admin_user):
    v1 = plan.versions.get(number=1)
    refused = admin.post(f"/staff/pricing/plans/versions/{v1.pk}/retire", {"confirm": "yes"})
    assert refused.status_code == 409 and "1 account(s) are still on this version" in refused.content.decode()
    price_plan_version_publish(version=draft, actor=admin_user)
    move = PlanMigration.objects.create(account=account, from_version=v1, to_version=draft, batch_key="k",
                                        effective_at=clock.now() + dt.timedelta(days=5))  # fmt: skip
    url = f"/staff/pricing/plans/versions/{draft.pk}/retire"
    refused = admin.post(url, {"confirm": "yes"})
    assert refused.status_code == 409 and "scheduled to move to this version" in refused.content.decode()
    move.delete()
    page = admin.post(url, {"confirm": "yes", "reason": "superseded"}, follow=True).content.decode()
    assert "is retired" in page and PricePlanVersion.objects.get(pk=draft.pk).status == "retired"


# --- the editor ---------------------------------------------------------------------------------------
def test_a_new_draft_starts_as_a_copy_of_the_current_version(admin, plan):
    html = admin.get(f"/staff/pricing/plans/{plan.pk}/versions/new").content.decode()
    assert 'name="unit_amount_decimal" value="99"' in html and 'name="seat_unit_amount" value="3900"' in html
    assert 'name="inactivity_window" value="24:00:00"' in html and 'value="Annual 10,000 resolutions"' in html
    assert (
        'hx-trigger="input changed delay:400ms"' in html and f"/staff/pricing/plans/{plan.pk}/versions/validate" in html
    )


def test_validation_as_you_type_puts_each_error_beside_its_field_and_writes_nothing(admin, plan):
    before = PricePlanVersion.objects.count()
    bad = form({"tiers": [{"up_to": "1000", "unit_amount_decimal": "99", "flat_amount": ""},
                          {"up_to": "500", "unit_amount_decimal": "79", "flat_amount": ""},
                          {"up_to": "", "unit_amount_decimal": "x", "flat_amount": ""}]})  # fmt: skip
    response = admin.post(f"/staff/pricing/plans/{plan.pk}/versions/validate", bad, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'id="err-tier-1-up_to" hx-swap-oob="true">[^<]*500[^<]*above 1000', html), html[:3000]
    assert re.search(r'id="err-tier-2-unit_amount_decimal" hx-swap-oob="true">&#x27;x&#x27; is not a number', html)
    assert re.search(r'id="err-currency" hx-swap-oob="true"></p>', html)  # cleared where nothing is wrong
    assert "2 problems to fix" in html and "Fix the terms above to see this draft" in html
    assert PricePlanVersion.objects.count() == before


def test_save_is_refused_with_the_same_errors_beside_the_fields(admin, plan):
    before = PricePlanVersion.objects.count()
    bad = form({"currency": "usx", "seat_unit_amount": "-1"})
    response = admin.post(f"/staff/pricing/plans/{plan.pk}/versions/new", {**bad, "action": "save"})
    html = response.content.decode()
    assert response.status_code == 400
    assert 'aria-describedby="err-currency hint-currency" aria-invalid="true"' in html
    assert re.search(r'id="err-currency">&#x27;usx&#x27; is not a currency', html)
    assert re.search(r'id="err-seat_unit_amount">Must be at least 0', html)
    assert 'name="currency" value="usx"' in html  # what was typed stays
    assert PricePlanVersion.objects.count() == before


def test_a_valid_draft_is_saved_and_edited(admin, plan, admin_user):
    response = admin.post(f"/staff/pricing/plans/{plan.pk}/versions/new", {**form(), "action": "save"})
    assert response.status_code == 302
    draft = PricePlanVersion.objects.get(plan=plan, status="draft")
    assert [(t.up_to, t.unit_amount_decimal, t.flat_amount) for t in draft.tiers.all()] == [
        (1000, 99, None), (None, 79, 500),
    ]  # fmt: skip
    assert draft.effective_from == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)  # the admin's zone: UTC
    assert draft.inactivity_window == dt.timedelta(hours=12) and draft.offers.get().resolutions == 50_000
    edited = admin.post(f"/staff/pricing/plans/versions/{draft.pk}/edit",
                        {**form({"tiers_mode": "", "unit_amount_decimal": "85"}), "action": "save"})  # fmt: skip
    assert edited.status_code == 302
    draft.refresh_from_db()
    assert (draft.tiers_mode, draft.unit_amount_decimal, draft.tiers.count()) == ("", 85, 0)
    assert AuditLogEntry.objects.filter(action="price_plan_version.update", actor=admin_user).count() == 1


def test_effective_from_is_read_in_the_admins_zone(admin, plan, admin_user):
    admin_user.timezone = "America/New_York"
    admin_user.save()
    admin.post(f"/staff/pricing/plans/{plan.pk}/versions/new", {**form(), "action": "save"})
    draft = PricePlanVersion.objects.get(plan=plan, status="draft")
    assert draft.effective_from == dt.datetime(2027, 1, 1, 5, tzinfo=dt.UTC)


def test_rows_are_added_and_removed_without_javascript_and_nothing_is_saved(admin, plan):
    url = f"/staff/pricing/plans/{plan.pk}/versions/new"
    added = admin.post(url, {**form(), "action": "add_tier"}).content.decode()
    assert 'name="tier-2-up_to"' in added and 'name="tier_count" value="3"' in added
    assert 'name="tier-0-up_to" value="1000"' in added  # what was typed stays
    removed = admin.post(url, {**form(), "action": "remove_tier:0"}).content.decode()
    assert 'name="tier_count" value="1"' in removed and 'name="tier-0-unit_amount_decimal" value="79"' in removed
    offers = admin.post(url, {**form(), "action": "add_offer"}).content.decode()
    assert 'name="offer_count" value="2"' in offers
    assert not PricePlanVersion.objects.filter(status="draft").exists()


def test_with_htmx_a_row_button_answers_only_the_form(admin, plan):
    response = admin.post(f"/staff/pricing/plans/{plan.pk}/versions/new", {**form(), "action": "add_tier"},
                          HTTP_HX_REQUEST="true")  # fmt: skip
    html = response.content.decode()
    assert html.lstrip().startswith('<form id="version-editor"') and "<html" not in html
    assert 'id="id_tier-2-up_to"' in html and "autofocus" in html


def test_a_published_version_cannot_be_opened_in_the_editor(admin, plan):
    v1 = plan.versions.get(number=1)
    response = admin.post(f"/staff/pricing/plans/versions/{v1.pk}/edit", {**form(), "action": "save"}, follow=True)
    assert "only a draft can be edited" in response.content.decode()
    assert PricePlanVersion.objects.get(pk=v1.pk).tiers_mode == ""


def test_hostile_row_counts_and_fields_are_refused_plainly(admin, plan):
    response = admin.post(f"/staff/pricing/plans/{plan.pk}/versions/validate",
                          {**form(), "tier_count": "99999999", "effective_from": "2027-02-30T00:00"})  # fmt: skip
    html = response.content.decode()
    assert response.status_code == 200 and "At most 250" in html
    assert "not a date that exists" in html or "ISO 8601" in html


# --- the price curve, against figures computed by hand ---------------------------------------------------
@pytest.fixture
def largest_period(account):
    """The largest account's period overage is 2,000: the curve runs to 10,000 (3 × 2,000 rounded up)."""
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    for hour, n in ((0, 1500), (1, 500)):
        MeterWindow.objects.create(account=account, start=start + dt.timedelta(hours=hour),
                                   end=start + dt.timedelta(hours=hour + 1), period_start=start,
                                   period_end=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), overage=n)  # fmt: skip


def test_graduated_draft_curve_beside_the_current_version(admin, plan, largest_period):
    response = admin.post(f"/staff/pricing/plans/{plan.pk}/versions/validate", form(), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    # Graduated: 1,000 × 99 + (N − 1,000) × 79 + 500 flat once past 1,000; v1: 99 per resolution.
    assert amounts(html) == {
        0: [0, 0],
        2000: [99_000 + 79_000 + 500, 198_000],
        2500: [99_000 + 118_500 + 500, 247_500],
        5000: [99_000 + 316_000 + 500, 495_000],
        7500: [99_000 + 513_500 + 500, 742_500],
        10000: [99_000 + 711_000 + 500, 990_000],
    }
    assert 'data-difference="-19500"' in html
    assert "<title" in html and "<desc" in html and "This draft" in html and "v1 (published)" in html
    assert "0 to 10,000" in html and 'data-series="draft"' in html and 'data-series="current"' in html


def test_volume_draft_curve(admin, plan, largest_period):
    terms = {"tiers_mode": "volume", "tiers": [
        {"up_to": "1000", "unit_amount_decimal": "99", "flat_amount": ""},
        {"up_to": "", "unit_amount_decimal": "79.5", "flat_amount": "500"}]}  # fmt: skip
    html = admin.post(f"/staff/pricing/plans/{plan.pk}/versions/validate", form(terms)).content.decode()
    # Volume: every resolution at the price of the tier the total falls in (79.5 past 1,000, + 500 flat).
    got = amounts(html)
    assert [row[0] for row in got.values()] == [0, 159_500, 199_250, 398_000, 596_750, 795_500]
    assert got[1000 * 10][1] == 990_000  # v1 beside it, 99 each


def test_without_any_usage_the_curve_runs_to_10000(admin, plan):
    html = admin.get(f"/staff/pricing/plans/{plan.pk}/versions/new").content.decode()
    assert sorted(amounts(html)) == [0, 2500, 5000, 7500, 10000]


def test_a_double_submit_of_a_new_draft_makes_one_draft(admin, plan):
    page = admin.get(f"/staff/pricing/plans/{plan.pk}/versions/new").content.decode()
    key = re.search(r'name="idempotency_key" value="([0-9a-f]{32})"', page).group(1)
    url = f"/staff/pricing/plans/{plan.pk}/versions/new"
    first = admin.post(url, {**form(), "action": "save", "idempotency_key": key})
    second = admin.post(url, {**form(), "action": "save", "idempotency_key": key})
    assert first.status_code == second.status_code == 302 and first["Location"] == second["Location"]
    assert PricePlanVersion.objects.filter(plan=plan, status="draft").count() == 1
    admin.post(url, {**form(), "action": "save", "idempotency_key": "f" * 32})  # another form: another draft
    assert PricePlanVersion.objects.filter(plan=plan, status="draft").count() == 2


def test_the_form_carries_the_curve_range_so_validating_does_not_measure_it_again(admin, plan, largest_period):
    page = admin.get(f"/staff/pricing/plans/{plan.pk}/versions/new").content.decode()
    assert 'name="largest_overage" value="2000"' in page
    url = f"/staff/pricing/plans/{plan.pk}/versions/validate"
    carried = admin.post(url, {**form(), "largest_overage": "40000"}).content.decode()
    assert max(amounts(carried)) == 200_000  # 3 × 40,000 = 120,000, drawn to 200,000 (the next round number)
    forged = admin.post(url, {**form(), "largest_overage": "9" * 40}).content.decode()
    assert max(amounts(forged)) == 10_000  # not believed: measured again (2,000 → 10,000)


def test_the_confirm_step_offers_no_button_when_the_state_does_not_allow_it(admin, plan, draft):
    v1 = plan.versions.get(number=1)
    publish = admin.get(f"/staff/pricing/plans/versions/{v1.pk}/publish").content.decode()
    assert "only a draft can be published" in publish and "Publish v1</button>" not in publish
    retire = admin.get(f"/staff/pricing/plans/versions/{draft.pk}/retire").content.decode()
    assert "only a published version can be retired" in retire and "Retire v" not in retire.split("</h1>")[1]


# --- what the admin reviewed (review of the draft code) ------------------------------------------------------
def _digest(html: str) -> str:
    return re.search(r'name="terms_digest" value="([0-9a-f]{64})"', html).group(1)


def test_publish_is_refused_when_the_draft_changed_since_the_confirm_page_was_opened(admin, draft, admin_user):
    url = f"/staff/pricing/plans/versions/{draft.pk}/publish"
    digest = _digest(admin.get(url).content.decode())
    spec = plan_version_spec_parse({**TERMS, "seat_unit_amount": "1", "effective_from": "2027-01-01T00:00:00Z"})
    price_plan_version_update(version=draft, spec=spec, actor=admin_user)  # another admin, meanwhile
    refused = admin.post(url, {"confirm": "yes", "terms_digest": digest})
    assert refused.status_code == 409
    page = refused.content.decode()
    assert "This draft changed since you opened this page: look at it again." in page
    assert PricePlanVersion.objects.get(pk=draft.pk).status == "draft"
    published = admin.post(url, {"confirm": "yes", "terms_digest": _digest(page)})  # the terms now shown
    assert published.status_code == 302 and PricePlanVersion.objects.get(pk=draft.pk).status == "published"


def test_saving_a_draft_opened_before_another_tab_saved_it_is_refused(admin, draft, admin_user):
    url = f"/staff/pricing/plans/versions/{draft.pk}/edit"
    digest = _digest(admin.get(url).content.decode())
    spec = plan_version_spec_parse({**TERMS, "seat_unit_amount": "1", "effective_from": "2027-01-01T00:00:00Z"})
    price_plan_version_update(version=draft, spec=spec, actor=admin_user)  # the other tab
    stale = admin.post(url, {**form({"seat_unit_amount": "2"}), "action": "save", "terms_digest": digest})
    assert stale.status_code == 400 and "changed since you opened this page" in stale.content.decode()
    assert PricePlanVersion.objects.get(pk=draft.pk).seat_unit_amount == 1
    fresh = _digest(admin.get(url).content.decode())
    saved = admin.post(url, {**form({"seat_unit_amount": "2"}), "action": "save", "terms_digest": fresh})
    assert saved.status_code == 302 and PricePlanVersion.objects.get(pk=draft.pk).seat_unit_amount == 2


def test_the_editor_keeps_the_digest_it_was_opened_with_through_row_changes(admin, draft):
    url = f"/staff/pricing/plans/versions/{draft.pk}/edit"
    digest = _digest(admin.get(url).content.decode())
    page = admin.post(url, {**form(), "action": "add_offer", "terms_digest": digest}).content.decode()
    assert _digest(page) == digest


def test_a_resubmitted_new_draft_form_with_other_terms_is_refused_plainly(admin, plan):
    url = f"/staff/pricing/plans/{plan.pk}/versions/new"
    key = re.search(r'name="idempotency_key" value="([0-9a-f]{32})"', admin.get(url).content.decode()).group(1)
    assert admin.post(url, {**form(), "action": "save", "idempotency_key": key}).status_code == 302
    other = admin.post(url, {**form({"seat_unit_amount": "1"}), "action": "save", "idempotency_key": key})
    assert other.status_code == 400 and "already used to create a draft with other terms" in other.content.decode()
    assert PricePlanVersion.objects.filter(plan=plan, status="draft").count() == 1
