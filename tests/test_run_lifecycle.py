"""`make run` from nothing: cold start, login, Ctrl-C leaves nothing behind, warm restart keeps
the data, a port in use is a clear message. Timings go to test-artifacts/run-timings.txt."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.processes import BASE_DIR, PYTHON, alive, child_env, descendants, free_port, start, stop, wait_for

pytestmark = pytest.mark.slow
VENV = str(Path(PYTHON).parent.parent)


@pytest.fixture
def var_dir():
    path = Path(tempfile.mkdtemp(prefix="tpr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(var_dir: Path, port: int) -> dict[str, str]:
    env = child_env(DEBUG="1", TEAPOT_DEMO="1", TEAPOT_VAR_DIR=str(var_dir), PORT=str(port), VENV=VENV)
    # Embedded servers, whatever the outer test run uses.
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    return env


def _log_in(base: str) -> str:
    session = requests.Session()
    login = session.get(f"{base}/accounts/login/", timeout=30)
    assert login.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
    response = session.post(
        f"{base}/accounts/login/",
        data={"login": "ops@teapot.example", "password": "teapot-demo", "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=30,
    )
    assert response.status_code == 200 and "Welcome, Olga" in response.text, response.text[:500]
    return response.text


def _run_until_ready(var_dir: Path, port: int, log: Path):
    started = time.monotonic()
    # `make run` in its own process group, as a terminal would run it.
    proc = start(["make", "--no-print-directory", "run"], _env(var_dir, port), log)
    wait_for(lambda: "Teapot is running" in log.read_text() or proc.poll() is not None, 240, 0.2, "the banner")
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc, time.monotonic() - started


def _ctrl_c(proc) -> int:
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    return proc.wait(timeout=60)


def test_make_run_cold_and_warm_leaves_nothing_behind(var_dir, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "run1.log"
    proc, cold = _run_until_ready(var_dir, port, log)
    try:
        page = _log_in(base)
        assert "ops@teapot.example" in page
        assert requests.get(f"{base}/readyz", timeout=10).json()["status"] == "ok"
        children = descendants(proc.pid)
        names = " ".join(" ".join(p.cmdline()) for p in alive(children))
        assert "runserver" in names and "worker" in names and "beat" in names
        servers = [psutil.Process(int((var_dir / "pgdata" / "postmaster.pid").read_text().split()[0])),
                   psutil.Process(int((var_dir / "redis" / "redis.pid").read_text().strip()))]  # fmt: skip
    finally:
        code = _ctrl_c(proc)
    # make re-raises the SIGINT once its child has finished; the supervisor itself exits 0.
    assert code in (0, -signal.SIGINT), log.read_text()[-3000:]
    assert "[teapot] stopped" in log.read_text()
    time.sleep(0.5)
    assert alive(children) == [], [p.cmdline() for p in alive(children)]
    assert alive(servers) == []
    assert not (var_dir / "pgdata" / "postmaster.pid").exists()
    assert not (var_dir / "redis" / "redis.sock").exists()
    assert not list(var_dir.glob("*.owner"))
    assert not list(BASE_DIR.glob("celerybeat.pid"))

    log2 = tmp_path / "run2.log"
    proc, warm = _run_until_ready(var_dir, port, log2)
    try:
        _log_in(base)  # the data (users) survived the restart
        assert "kept operator ops@teapot.example" in log2.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "[teapot] stopped" in log2.read_text()
    out = BASE_DIR / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "run-timings.txt").write_text(
        f"cold make run to first page: {cold:.1f}s\nwarm make run to first page: {warm:.1f}s\n"
    )
    assert warm < 60  # "starts in seconds": generous bound against a slow CI box, figures in the note


def test_port_in_use_is_a_clear_message(var_dir, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        log = tmp_path / "busy.log"
        proc = start([PYTHON, "-m", "teapot_portal.supervisor", "--port", str(port)], _env(var_dir, port), log)
        code = proc.wait(timeout=60)
        stop(proc)
    assert code == 2
    text = log.read_text()
    assert f"port {port} on 127.0.0.1 is already in use" in text
    assert f"PORT={port + 1} make run" in text
    assert not (var_dir / "pgdata").exists()  # refused before starting anything


def test_a_dying_child_stops_everything(var_dir, tmp_path):
    port = free_port()
    log = tmp_path / "die.log"
    proc, _ = _run_until_ready(var_dir, port, log)
    worker = next(p for p in alive(descendants(proc.pid)) if "worker" in " ".join(p.cmdline()))
    everything = descendants(proc.pid)
    worker.kill()
    code = proc.wait(timeout=60)
    assert code != 0
    assert "exited with code" in log.read_text()
    time.sleep(0.5)
    assert alive(everything) == []
    assert not (var_dir / "pgdata" / "postmaster.pid").exists()
