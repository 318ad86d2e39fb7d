"""Price plan drafts under concurrency on PostgreSQL: two PATCHes of different fields both stay, and two
first requests with the same Idempotency-Key make one draft."""

import threading
from unittest import mock

import pytest
from django.db import connection

from accounts import plan_apis
from accounts.models import PricePlan, PricePlanVersion
from accounts.tests.test_plan_apis import TERMS, version_url, versions_url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_patch_landing_while_another_is_being_applied_is_not_reverted(admin_user):
    """Admin A's patch is being parsed when admin B patches another field. B must wait for A's lock and lay
    its field over A's result (before the fix, A wrote terms read before B's save, reverting B)."""
    client = _client(admin_user)
    draft = client.post(versions_url(), TERMS, format="json").json()
    real_parse, started = plan_apis.plan_version_spec_parse, []

    def other_admin():
        response = _client(admin_user).patch(version_url(draft["id"]), {"inactivity_window": "06:00:00"},
                                             format="json")  # fmt: skip
        assert response.status_code == 200, response.content
        connection.close()

    other = threading.Thread(target=other_admin)

    def parse_while_the_other_admin_patches(terms):
        if not started:  # A's parse: B patches now, and gets 2 seconds to finish unless it has to wait
            started.append(True)
            other.start()
            other.join(timeout=2)
        return real_parse(terms)

    with mock.patch.object(plan_apis, "plan_version_spec_parse", parse_while_the_other_admin_patches):
        response = client.patch(version_url(draft["id"]), {"seat_unit_amount": 4200}, format="json")
        other.join()
    assert response.status_code == 200
    version = PricePlanVersion.objects.get(pk=draft["id"])
    assert version.seat_unit_amount == 4200
    assert str(version.inactivity_window) == "6:00:00"


def test_two_concurrent_first_requests_with_one_key_make_one_draft(admin_user):
    before = PricePlanVersion.objects.count()
    results, barrier = [], threading.Barrier(2)

    def post():
        client = _client(admin_user)
        barrier.wait()
        response = client.post(versions_url(), TERMS, format="json", HTTP_IDEMPOTENCY_KEY="same-key")
        results.append((response.status_code, response.json().get("id")))
        connection.close()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [201, 201]
    assert results[0][1] == results[1][1]
    plan = PricePlan.objects.get(slug="fin-standard")
    assert PricePlanVersion.objects.count() == before + 1 and plan.versions.filter(status="draft").count() == 1
