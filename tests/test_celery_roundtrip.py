"""A real task through the real broker to a real worker process, observed in the database.

The broker is whatever the settings name: the embedded Redis by default, RabbitMQ when
CELERY_BROKER_URL=amqp://… (CI runs the suite both ways).
"""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from django.db import connection

from teapot_portal.models import WorkerHeartbeat
from teapot_portal.tasks import heartbeat
from tests.processes import PYTHON, child_env, database_url, start, stop, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(tmp_path):
    queue = f"teapot-test-{uuid.uuid4().hex[:8]}"
    env = child_env(
        DATABASE_URL=database_url(connection.settings_dict),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        TEAPOT_CELERY_QUEUE=queue,
    )
    log = tmp_path / "worker.log"
    proc = start(
        [PYTHON, "-m", "celery", "-A", "teapot_portal", "worker", "--pool=solo", "-l", "INFO",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{queue}@%h"],
        env, log,
    )  # fmt: skip
    try:
        wait_for(lambda: b"ready." in log.read_bytes() or proc.poll() is not None, 60, message="worker ready")
        assert proc.poll() is None, log.read_text()
        yield queue, log
    finally:
        stop(proc)


def test_task_runs_on_a_real_worker_and_writes_to_the_database(worker):
    queue, log = worker
    source = f"test-{uuid.uuid4().hex[:8]}"
    heartbeat.apply_async(kwargs={"source": source}, queue=queue)
    row = wait_for(
        lambda: WorkerHeartbeat.objects.filter(source=source).first(), 60, message=f"task effect; log:\n{log}"
    )
    assert row.seen_at is not None
    assert "succeeded" in log.read_text()


def test_bad_task_payload_is_logged_and_changes_nothing(worker):
    queue, log = worker
    heartbeat.apply_async(kwargs={"source": ""}, queue=queue)
    good = f"after-{uuid.uuid4().hex[:6]}"
    heartbeat.apply_async(kwargs={"source": good}, queue=queue)
    wait_for(lambda: WorkerHeartbeat.objects.filter(source=good).exists(), 60, message="the next task")
    assert not WorkerHeartbeat.objects.filter(source="").exists()
    assert "heartbeat ignored: bad source" in log.read_text()
