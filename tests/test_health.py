"""/healthz answers without I/O; /readyz checks the database and the broker."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_python


def test_healthz_does_no_io(client, db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_database_and_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]


def test_healthz_rejects_post(client):
    assert client.post("/healthz").status_code == 405


READYZ = (
    "import django, os, json; os.environ.setdefault('DJANGO_SETTINGS_MODULE','teapot_portal.settings'); django.setup();"
    "from django.test import Client; r = Client(HTTP_HOST='localhost').get('/readyz');"
    "print(json.dumps({'status': r.status_code, 'body': r.json()}))"
)


@pytest.mark.parametrize(
    "env, failed",
    [
        ({"DATABASE_URL": "postgres://postgres@127.0.0.1:1/teapot"}, ["database"]),
        ({"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}, ["broker"]),
        (
            {
                "DATABASE_URL": "postgres://postgres@127.0.0.1:1/teapot",
                "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
            },
            ["database", "broker"],
        ),
    ],
    ids=["database-down", "broker-down", "both-down"],
)
@pytest.mark.django_db
def test_readyz_is_503_and_names_what_failed(env, failed):
    # A fresh process pointed at closed ports: real connection failures, nothing mocked.
    # What is not broken points at this run's real (test) database and broker.
    from django.conf import settings
    from django.db import connection

    from tests.processes import database_url

    working = {"DATABASE_URL": database_url(connection.settings_dict), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL}
    result = run_python(READYZ, env={"DEBUG": "1", **working, **env})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["status"] == 503
    assert out["body"]["status"] == "unavailable"
    assert out["body"]["failed"] == failed
    for name in failed:
        assert out["body"]["checks"][name]["ok"] is False
        assert out["body"]["checks"][name]["error"]
