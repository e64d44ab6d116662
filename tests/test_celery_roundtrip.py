"""A real task through the real broker to a real worker process, observed in the database.

The broker is whatever the settings name (the embedded Redis by default, RabbitMQ when CI's
second pass sets CELERY_BROKER_URL=amqp://…), and in every run also the machine's own Redis and
RabbitMQ on 127.0.0.1 when they answer, so redis://, redis+socket:// and amqp:// all stay proven.
"""

from __future__ import annotations

import socket
import uuid

import pytest
from django.conf import settings
from django.db import connection

from teapot_portal.models import WorkerHeartbeat
from teapot_portal.tasks import heartbeat
from tests.processes import PYTHON, child_env, database_url, start, stop, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


EXTERNAL_BROKERS = {
    "redis-tcp": ("redis://127.0.0.1:6379/15", 6379),
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", 5672),
}


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(params=["configured", *EXTERNAL_BROKERS])
def broker(request):
    if request.param == "configured":
        return settings.CELERY_BROKER_URL
    url, port = EXTERNAL_BROKERS[request.param]
    if not _answers(port):
        pytest.skip(f"no {request.param} broker on 127.0.0.1:{port}")
    return url


@pytest.fixture
def worker(tmp_path, broker):
    queue = f"teapot-test-{uuid.uuid4().hex[:8]}"
    env = child_env(
        DATABASE_URL=database_url(connection.settings_dict),
        CELERY_BROKER_URL=broker,
        TEAPOT_CELERY_QUEUE=queue,
        CELERY_TRACE_LOG_LEVEL="INFO",
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
        yield queue, log, broker
    finally:
        stop(proc)


def _send(broker: str, queue: str, **kwargs) -> None:
    from teapot_portal.celery import app

    with app.connection_for_write(broker) as conn:
        heartbeat.apply_async(kwargs=kwargs, queue=queue, connection=conn)


def test_task_runs_on_a_real_worker_and_writes_to_the_database(worker):
    queue, log, broker = worker
    source = f"test-{uuid.uuid4().hex[:8]}"
    _send(broker, queue, source=source)
    row = wait_for(
        lambda: WorkerHeartbeat.objects.filter(source=source).first(), 60, message=f"task effect; log:\n{log}"
    )
    assert row.seen_at is not None
    assert "succeeded" in log.read_text()


def test_bad_task_payload_is_logged_and_changes_nothing(worker):
    queue, log, broker = worker
    _send(broker, queue, source="")
    good = f"after-{uuid.uuid4().hex[:6]}"
    _send(broker, queue, source=good)
    wait_for(lambda: WorkerHeartbeat.objects.filter(source=good).exists(), 60, message="the next task")
    assert not WorkerHeartbeat.objects.filter(source="").exists()
    assert "heartbeat ignored: bad source" in log.read_text()
