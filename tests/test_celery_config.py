"""Celery's configuration as the worker and beat load it: one schedule, one queue per workload, every task
routed, and a worker started without -Q (dev.py demo, the tests) consuming every queue."""

from __future__ import annotations

import time

import pytest
from celery import shared_task
from django.conf import settings

from billing_portal.celery import app

PROJECT_TASK_PREFIXES = ("accounts.", "credits.", "resolutions.", "billing_portal.")
QUEUES = {queue.name for queue in settings.CELERY_TASK_QUEUES}
ran_on: list[str] = []


@shared_task(name="tests.test_celery_config.note_queue")
def note_queue(queue: str) -> str:
    ran_on.append(queue)
    return queue


@pytest.fixture(scope="module")
def project_tasks() -> set[str]:
    app.autodiscover_tasks(force=True)  # what the worker does at start: every installed app's tasks.py
    return {name for name in app.tasks if name.startswith(PROJECT_TASK_PREFIXES)}


def test_the_queues_are_the_workloads():
    assert QUEUES == {"celery", "events", "stripe", "cycle", "simulations"}
    assert app.conf.task_default_queue == "celery"
    assert set(app.amqp.queues) == QUEUES


def test_every_scheduled_task_is_a_registered_task(project_tasks):
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled <= project_tasks, scheduled - project_tasks
    assert "resolutions.tasks.billing_cycle_task" in scheduled


def test_nothing_schedules_beside_the_settings(project_tasks):
    """add_periodic_task (or a beat_schedule set anywhere else) would show in the app's own schedule."""
    app.finalize()
    assert app.conf.beat_schedule == settings.CELERY_BEAT_SCHEDULE


def test_every_project_task_is_routed_to_a_queue_of_its_workload(project_tasks):
    routes = settings.CELERY_TASK_ROUTES
    assert project_tasks == set(routes), "a new task needs a row in CELERY_TASK_ROUTES"
    for name in project_tasks:
        assert app.amqp.router.route({}, name)["queue"].name == routes[name]["queue"] in QUEUES
    assert routes["resolutions.tasks.conversations_evaluate_task"]["queue"] == "events"
    assert routes["resolutions.tasks.meter_report_task"]["queue"] == "stripe"
    assert routes["resolutions.tasks.billing_cycle_task"]["queue"] == "cycle"
    assert routes["resolutions.tasks.price_simulation_task"]["queue"] == "simulations"


@pytest.mark.django_db(transaction=True)
def test_a_worker_started_without_q_consumes_every_queue(celery_worker_on_redis):
    consumed = {queue.name for queue in celery_worker_on_redis.consumer.task_consumer.queues}
    assert consumed == QUEUES
    ran_on.clear()
    for queue in sorted(QUEUES):
        note_queue.apply_async(args=[queue], queue=queue)
    deadline = time.monotonic() + 30
    while set(ran_on) != QUEUES and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(ran_on) == sorted(QUEUES)
