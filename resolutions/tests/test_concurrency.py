"""Concurrent ingestion on PostgreSQL: the account lock and the unique constraints keep it exact."""

import threading
from unittest import mock

import pytest
from django.db import connection

from accounts.services import api_key_create
from billing_portal import clock
from resolutions.models import ConversationEvent, DailyUsage, Resolution
from resolutions.tests.conftest import NOW, event

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_the_same_batch_posted_by_eight_threads_at_once_is_stored_once(account, billing_admin):
    from rest_framework.test import APIClient

    _, raw_key = api_key_create(account=account, name="bot", actor=billing_admin)
    batch = {"events": []}
    for i in range(200):
        batch["events"] += [event(f"a{i}", f"c{i}", "ai_answer", 60), event(f"b{i}", f"c{i}", "customer_confirmed", 30)]
    results, barrier = [], threading.Barrier(8)

    def post():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        barrier.wait()
        response = client.post("/api/v1/conversation-events", batch, format="json")
        results.append((response.status_code, response.json()))
        connection.close()

    with clock.frozen(NOW):
        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(r[0] for r in results) == [202] * 8
    assert sum(r[1]["accepted"] for r in results) == 400
    assert sum(r[1]["duplicates"] for r in results) == 400 * 7
    assert ConversationEvent.objects.count() == 400
    assert Resolution.objects.filter(voided_at=None).count() == 200
    assert sum(DailyUsage.objects.values_list("resolutions", flat=True)) == 200


def test_deferred_overlapping_batches_in_opposite_orders_store_each_event_once(account, billing_admin, settings):
    """Without the account lock, the unique index decides. Batches share ids but list them in opposite
    orders (rows are written in id order, so they wait for each other rather than deadlock); then one
    drain evaluates everything once."""
    from rest_framework.test import APIClient

    from resolutions.models import PendingEvaluation
    from resolutions.services import conversations_evaluate_pending

    settings.EVENT_EVALUATION = "deferred"
    _, raw_key = api_key_create(account=account, name="bot", actor=billing_admin)
    events = []
    for i in range(300):
        events += [event(f"a{i}", f"c{i}", "ai_answer", 60), event(f"b{i}", f"c{i}", "customer_confirmed", 30)]
    batches = [events[:400], list(reversed(events[:400])), events[200:], list(reversed(events[200:]))] * 2
    results, barrier = [], threading.Barrier(len(batches))

    def post(batch):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        barrier.wait()
        response = client.post("/api/v1/conversation-events", {"events": batch}, format="json")
        results.append((response.status_code, response.json()))
        connection.close()

    with clock.frozen(NOW), mock.patch("resolutions.services.ingestion._evaluation_request"):  # no broker needed here
        threads = [threading.Thread(target=post, args=(b,)) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [r[0] for r in results] == [202] * len(batches), results
    assert sum(r[1]["accepted"] for r in results) == 600
    assert sum(r[1]["duplicates"] for r in results) == sum(len(b) for b in batches) - 600
    assert ConversationEvent.objects.count() == 600 and not Resolution.objects.exists()
    assert conversations_evaluate_pending(now=NOW) == 300
    assert not PendingEvaluation.objects.exists()
    assert sum(DailyUsage.objects.values_list("resolutions", flat=True)) == 300


def test_deferred_ingestion_is_not_held_up_by_an_evaluator_holding_the_account_lock(account, billing_admin, settings):
    """The evaluator's account lock is FOR NO KEY UPDATE: the foreign-key checks of an ingested batch (FOR
    KEY SHARE on the account row) do not wait for it. A plain FOR UPDATE would make every batch wait."""
    from django.db import transaction
    from rest_framework.test import APIClient

    from accounts.models import Account

    settings.EVENT_EVALUATION = "deferred"
    _, raw_key = api_key_create(account=account, name="bot", actor=billing_admin)
    locked, release, answers = threading.Event(), threading.Event(), []

    def evaluator():
        with transaction.atomic():
            Account.objects.select_for_update(no_key=True, of=("self",)).select_related("plan_version").get(
                pk=account.pk
            )  # as conversations_evaluate_pending takes it
            locked.set()
            release.wait(30)
        connection.close()

    def post():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        batch = {"events": [event("a1", "c1", "ai_answer", 60)]}
        answers.append(client.post("/api/v1/conversation-events", batch, format="json").status_code)
        connection.close()

    holder = threading.Thread(target=evaluator)
    holder.start()
    assert locked.wait(10)
    with clock.frozen(NOW), mock.patch("resolutions.services.ingestion._evaluation_request"):
        poster = threading.Thread(target=post)
        poster.start()
        poster.join(10)
    finished_while_locked = not poster.is_alive()
    release.set()
    holder.join()
    poster.join()
    assert finished_while_locked and answers == [202]
    assert ConversationEvent.objects.count() == 1
