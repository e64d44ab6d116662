"""The production processes as documented: collectstatic, gunicorn with DEBUG off serving
static files through whitenoise, structured logs on stdout, and a worker that starts."""

from __future__ import annotations

import re

import pytest
import requests
from django.conf import settings
from django.db import connection

from tests.processes import PYTHON, child_env, database_url, free_port, start, stop, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def production_env(tmp_path):
    return child_env(
        DEBUG="0",
        TEAPOT_DEMO="0",
        SECRET_KEY="production-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        DATABASE_URL=database_url(connection.settings_dict),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        STATIC_ROOT=str(tmp_path / "static"),
        TEAPOT_EMBEDDED_AUTOSTART="0",
    )


def test_gunicorn_serves_pages_and_static_files_with_debug_off(production_env, tmp_path):
    import subprocess

    collected = subprocess.run(
        [PYTHON, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        env=production_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stderr
    port = free_port()
    log = tmp_path / "gunicorn.log"
    proc = start(
        [PYTHON, "-m", "gunicorn", "teapot_portal.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--access-logfile", "-"],
        production_env, log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/healthz") or proc.poll() is not None, 60, message="gunicorn")
        assert proc.poll() is None, log.read_text()
        login = requests.get(f"{base}/accounts/login/", timeout=10)
        assert login.status_code == 200
        assert "teapot-demo" not in login.text  # no demo logins outside demo mode
        css = re.search(r'href="(/static/vendor/pico/pico\.min\.[0-9a-f]+\.css)"', login.text)
        assert css, "static URLs carry content hashes (ManifestStaticFilesStorage)"
        response = requests.get(base + css.group(1), timeout=10)
        assert response.status_code == 200 and "max-age" in response.headers.get("Cache-Control", "")
        assert requests.get(f"{base}/readyz", timeout=10).json()["status"] == "ok"
        assert requests.get(f"{base}/nope", timeout=10).status_code == 404
    finally:
        stop(proc)
    text = log.read_text()
    assert "Booting worker" in text or "Listening at" in text


def test_worker_and_beat_start_with_production_settings(production_env, tmp_path):
    for name, cmd in {
        "worker": ["worker", "--pool=solo", "-l", "INFO", "--without-gossip", "--without-mingle"],
        "beat": ["beat", "-l", "INFO", "--pidfile=", "--schedule", str(tmp_path / "schedule")],
    }.items():
        log = tmp_path / f"{name}.log"
        proc = start([PYTHON, "-m", "celery", "-A", "teapot_portal", *cmd], production_env, log)
        try:
            marker = "ready." if name == "worker" else "beat: Starting"
            wait_for(lambda m=marker, f=log, p=proc: m in f.read_text() or p.poll() is not None, 60, message=name)
            assert proc.poll() is None, log.read_text()
        finally:
            stop(proc)
        lines = [line for line in log.read_text().splitlines() if line.startswith("ts=")]
        assert lines, f"{name} logs are logfmt lines"
        assert all(" level=" in line and " logger=" in line for line in lines)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
