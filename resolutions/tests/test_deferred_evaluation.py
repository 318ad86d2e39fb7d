"""EVENT_EVALUATION="deferred" (the default outside tests): a batch is stored and queued without the
account's lock, and its conversations are evaluated by a Celery task once it commits, or by billing_tick."""

import datetime as dt
import json
import logging
import random
from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command
from kombu.exceptions import OperationalError

from accounts.services import api_key_create
from resolutions.models import Conversation, ConversationEvent, PendingEvaluation, Resolution
from resolutions.services import conversations_evaluate_pending
from resolutions.tasks import conversations_evaluate_task
from resolutions.tests.conftest import NOW, event

pytestmark = pytest.mark.django_db


@pytest.fixture
def deferred(settings):
    settings.EVENT_EVALUATION = "deferred"


def test_a_batch_is_stored_and_queued_and_the_task_evaluates_it(
    deferred, post_events, account, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_events(event("e1", "c1", "ai_answer", 30), event("e2", "c1", "customer_confirmed", 20),
                               event("e3", "c2", "ai_answer", 10))  # fmt: skip
    assert response.status_code == 202 and response.json() == {"accepted": 3, "duplicates": 0}
    assert ConversationEvent.objects.count() == 3
    assert not Resolution.objects.exists() and not Conversation.objects.exists()  # not evaluated yet
    (queued,) = PendingEvaluation.objects.all()
    assert (queued.account_id, queued.conversation_ids) == (account.pk, ["c1", "c2"])
    assert len(callbacks) == 1  # the task is sent once the batch has committed

    assert conversations_evaluate_task(account.pk) == 1
    (resolution,) = Resolution.objects.all()
    assert (resolution.conversation_id, resolution.kind) == ("c1", "confirmed")
    assert Conversation.objects.get(conversation_id="c2").status == "awaiting"
    assert not PendingEvaluation.objects.exists()
    assert conversations_evaluate_task(account.pk) == 0  # a second task finds nothing to do
    assert Resolution.objects.count() == 1


def test_billing_tick_evaluates_what_is_still_queued(deferred, post_events, account, now):
    post_events(event("e1", "c1", "ai_answer", 30), event("e2", "c1", "customer_confirmed", 20))
    assert not Resolution.objects.exists()
    out = StringIO()
    call_command("billing_tick", "--now", NOW.isoformat(), "--json", stdout=out)
    assert json.loads(out.getvalue())["evaluated_resolutions"] == 1
    assert Resolution.objects.get().kind == "confirmed" and not PendingEvaluation.objects.exists()


def test_duplicates_and_conflicts_are_decided_at_store_time(deferred, post_events):
    post_events(event("e1", "c1", "ai_answer", 30))
    again = post_events(event("e1", "c1", "ai_answer", 30), event("e2", "c1", "customer_confirmed", 5))
    assert again.json() == {"accepted": 1, "duplicates": 1}
    conflict = post_events(event("e3", "c3", "ai_answer", 5), event("e1", "c1", "handoff", 30))
    assert conflict.status_code == 409 and conflict.json()["errors"][0]["index"] == 1
    assert ConversationEvent.objects.count() == 2  # the refused batch left nothing behind,
    queued = list(PendingEvaluation.objects.order_by("pk").values_list("conversation_ids", flat=True))
    assert queued == [["c1"], ["c1"]]  # not even a queue row


def test_an_unreachable_broker_still_answers_202_and_billing_tick_catches_up(
    deferred, post_events, account, django_capture_on_commit_callbacks, caplog
):
    with (
        mock.patch.object(conversations_evaluate_task, "delay", side_effect=OperationalError("connection refused")),
        django_capture_on_commit_callbacks(execute=True),
        caplog.at_level(logging.WARNING, logger="resolutions.services.ingestion"),
    ):
        response = post_events(event("e1", "c1", "ai_answer", 30), event("e2", "c1", "customer_confirmed", 20))
    assert response.status_code == 202
    assert "left to the next billing tick" in caplog.text
    assert PendingEvaluation.objects.count() == 1 and not Resolution.objects.exists()
    assert conversations_evaluate_pending(now=NOW) == 1


def test_the_task_refuses_a_malformed_account_id():
    with pytest.raises(TypeError):
        conversations_evaluate_task("7")


def test_deferred_evaluation_decides_what_inline_evaluation_decides(
    settings, account, other_account, billing_admin, api_client, now
):
    """The same stream, in batches, out of order and with repeats, to two accounts: evaluated in each
    request (inline) and queued then evaluated at the end (deferred) gives the same resolutions."""
    rng = random.Random(7)
    stream = []
    for c in range(60):
        kinds = rng.choice([["ai_answer", "customer_confirmed"], ["ai_answer"], ["ai_answer", "handoff"],
                            ["ai_answer", "customer_reply", "ai_answer", "customer_confirmed"],
                            ["ai_answer", "customer_reply"]])  # fmt: skip
        for i, kind in enumerate(kinds):
            stream.append(event(f"e{c}-{i}", f"c{c}", kind, 600 - 60 * i - c))
    rng.shuffle(stream)
    batches = [stream[i : i + 25] for i in range(0, len(stream), 25)]
    batches.insert(3, batches[1])  # a repeated batch: duplicates only

    def post_all(target, mode):
        settings.EVENT_EVALUATION = mode
        _, raw_key = api_key_create(account=target, name=mode, actor=billing_admin if target == account else "test")
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        for batch in batches:
            assert api_client.post("/api/v1/conversation-events", {"events": batch}, format="json").status_code == 202

    post_all(account, "inline")
    post_all(other_account, "deferred")
    assert not Resolution.objects.filter(account=other_account).exists()
    conversations_evaluate_pending(now=NOW)

    def outcome(target):
        resolutions = Resolution.objects.filter(account=target, voided_at=None)
        states = Conversation.objects.filter(account=target)
        return (
            sorted(resolutions.values_list("conversation_id", "kind", "resolved_at")),
            sorted(states.values_list("conversation_id", "status", "window_ends_at")),
        )

    inline, deferred_ = outcome(account), outcome(other_account)
    assert inline[0] and inline == deferred_


def test_a_drain_takes_at_most_a_bounded_number_of_conversations_per_transaction(deferred, post_events, monkeypatch):
    import resolutions.services.evaluation as services

    monkeypatch.setattr(services, "EVALUATE_CONVERSATIONS", 3)
    for b in range(4):
        post_events(*[event(f"e{b}-{i}", f"c{b}-{i}", "ai_answer", 30) for i in range(2)])
    transactions = []
    real_evaluate = services.conversations_evaluate

    def counting(**kwargs):
        transactions.append(len(kwargs["conversation_ids"]))
        return real_evaluate(**kwargs)

    monkeypatch.setattr(services, "conversations_evaluate", counting)
    conversations_evaluate_pending(now=NOW + dt.timedelta(hours=30))  # windows elapsed: 8 assumed resolutions
    assert transactions == [4, 4]  # two queue rows (2 + 2 conversations) reach the bound of 3, twice
    assert Resolution.objects.filter(kind="assumed").count() == 8 and not PendingEvaluation.objects.exists()


def test_a_caller_may_ask_for_inline_evaluation_whatever_the_setting(deferred, account, now):
    from resolutions.ingestion import events_parse
    from resolutions.services import conversation_events_ingest

    events, errors = events_parse(
        {"events": [event("e1", "c1", "ai_answer", 30), event("e2", "c1", "customer_confirmed", 20)]}, now=NOW
    )
    assert not errors
    with pytest.raises(ValueError, match="inline"):
        conversation_events_ingest(account=account, events=events, evaluation="later")
    assert not ConversationEvent.objects.exists()
    conversation_events_ingest(account=account, events=events, evaluation="inline")  # as the demo seeding does
    assert Resolution.objects.get().kind == "confirmed" and not PendingEvaluation.objects.exists()


def test_the_dashboard_says_when_received_events_are_still_being_evaluated(
    deferred, post_events, account, billing_admin, client, django_capture_on_commit_callbacks
):
    client.force_login(billing_admin)
    assert "Counting in progress" not in client.get("/portal/").content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        post_events(event("e1", "c1", "ai_answer", 30), event("e2", "c2", "ai_answer", 20))
    page = client.get("/portal/").content.decode()
    assert "Counting in progress" in page and "2 conversations from recently received events" in page
    conversations_evaluate_task(account.pk)
    assert "Counting in progress" not in client.get("/portal/").content.decode()
