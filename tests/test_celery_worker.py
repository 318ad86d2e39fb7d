"""Celery for real: a worker consuming from the configured broker (Redis in CI), not eager mode."""

import time

import pytest

from accounts.models import PricePlanVersion
from accounts.pricing import plan_version_spec_parse
from accounts.services import price_plan_version_create, price_plan_version_publish

TERMS = {
    "currency": "usd", "unit_amount_decimal": "95", "inactivity_window": "12:00:00", "seat_unit_amount": 3900,
    "seat_conversion_unit_amount_decimal": "90", "effective_from": "2027-01-01T00:00:00Z",
}  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_publishing_queues_the_price_sync_and_a_worker_runs_it(
    stripe_emulator, admin_user, default_plan, celery_worker_on_redis
):
    draft = price_plan_version_create(plan=default_plan, spec=plan_version_spec_parse(TERMS), actor=admin_user)
    price_plan_version_publish(version=draft, actor=admin_user)  # commits; on_commit sends the task
    deadline = time.monotonic() + 30
    version = PricePlanVersion.objects.get(pk=draft.pk)
    while version.stripe_sync_status != "synced" and time.monotonic() < deadline:
        time.sleep(0.2)
        version.refresh_from_db()
    assert version.stripe_sync_status == "synced", version.stripe_sync_error
    assert version.stripe_price_id.startswith("price_")
    posts = [r for r in stripe_emulator.requests.list() if r["path"] == "/v1/prices" and r["method"] == "POST"]
    assert {p["params"]["lookup_key"] for p in posts} >= {"fin-standard-v2-resolution", "fin-standard-v2-seat"}


@pytest.mark.django_db(transaction=True)
def test_a_deferred_batch_is_evaluated_by_a_worker(settings, account, billing_admin, celery_worker_on_redis):
    """Ingestion commits, sends conversations_evaluate_task, and the worker turns the events into a resolution."""
    import datetime as dt

    from rest_framework.test import APIClient

    from accounts.services import api_key_create
    from resolutions.models import PendingEvaluation, Resolution

    settings.EVENT_EVALUATION = "deferred"
    _, raw_key = api_key_create(account=account, name="bot", actor=billing_admin)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    answered, confirmed = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=m) for m in (9, 8))
    batch = {
        "events": [
            {"id": "e1", "conversation_id": "c1", "type": "ai_answer", "occurred_at": answered.isoformat()},
            {"id": "e2", "conversation_id": "c1", "type": "customer_confirmed", "occurred_at": confirmed.isoformat()},
        ]
    }
    assert client.post("/api/v1/conversation-events", batch, format="json").status_code == 202
    deadline = time.monotonic() + 30
    while not Resolution.objects.filter(account=account).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert Resolution.objects.get(account=account).kind == "confirmed"
    assert not PendingEvaluation.objects.exists()
