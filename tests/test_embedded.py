"""The embedded PostgreSQL and Redis: start, keep data, stop cleanly, respect ownership."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis

from teapot_portal import embedded

pytestmark = pytest.mark.slow


@pytest.fixture
def var_dir(monkeypatch):
    # Short path: unix socket paths are limited to ~100 characters.
    path = Path(tempfile.mkdtemp(prefix="tpe-", dir="/tmp"))
    monkeypatch.setenv("TEAPOT_VAR_DIR", str(path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    yield path
    embedded.release(["postgres", "redis"], owner=_owner_or_self("postgres"))
    embedded.release(["redis"], owner=_owner_or_self("redis"))
    shutil.rmtree(path, ignore_errors=True)


def _owner_or_self(name):
    return embedded._owner(name) or os.getpid()


def _pg():
    return psycopg.connect(f"host={embedded.pg_socket_dir()} user=postgres dbname={embedded.DB_NAME}", autocommit=True)


def test_start_stop_leaves_nothing_behind_and_keeps_data(var_dir):
    assert embedded.ensure() == ["postgres", "redis"]
    pg_pid, redis_pid = embedded.postgres_pid(), embedded.redis_pid()
    assert pg_pid and redis_pid
    with _pg() as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    redis.Redis(unix_socket_path=str(embedded.redis_socket())).set("kept", "yes")

    embedded.release(["postgres", "redis"])
    assert not embedded._pid_alive(pg_pid) and not embedded._pid_alive(redis_pid)
    assert not (var_dir / "pgdata" / "postmaster.pid").exists()
    assert not embedded.redis_socket().exists()
    assert not (var_dir / "redis" / "redis.pid").exists()
    assert not (var_dir / "postgres.owner").exists()

    # Second start: same data, no stale file in the way.
    assert embedded.ensure() == ["postgres", "redis"]
    with _pg() as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    assert redis.Redis(unix_socket_path=str(embedded.redis_socket())).get("kept") == b"yes"
    embedded.release(["postgres", "redis"])


def test_a_server_with_a_live_owner_is_used_but_not_stopped(var_dir):
    owner = subprocess.Popen(["sleep", "300"])
    try:
        assert embedded.ensure(owner=owner.pid) == ["postgres", "redis"]
        assert embedded.ensure() == []  # used as it is
        embedded.release(["postgres", "redis"])  # not ours: a no-op
        assert embedded.postgres_pid() and embedded.redis_pid()
    finally:
        owner.kill()
        owner.wait()
    # The owner died without cleaning up (kill -9): the next user adopts and may stop it.
    assert embedded.ensure() == ["postgres", "redis"]
    embedded.release(["postgres", "redis"])
    assert embedded.postgres_pid() is None and embedded.redis_pid() is None


def test_a_stale_socket_and_pid_file_do_not_break_the_next_start(var_dir):
    embedded.ensure(["redis"])
    pid = embedded.redis_pid()
    os.kill(pid, 9)
    embedded._wait_gone(pid, 5)
    assert embedded.redis_socket().exists()  # what a crash leaves
    assert embedded.ensure(["redis"]) == ["redis"]
    assert redis.Redis(unix_socket_path=str(embedded.redis_socket())).ping()
    embedded.release(["redis"])


def test_too_long_a_path_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TEAPOT_VAR_DIR", "/tmp/" + "x" * 120)
    with pytest.raises(embedded.EmbeddedError, match="too long for a unix socket"):
        embedded.database_settings()


def test_a_guest_keeps_the_server_when_its_owner_is_done(var_dir):
    """Two pytest sessions (or make test beside manage.py): the first to finish hands over."""
    owned = embedded.ensure(["redis"])
    assert owned == ["redis"]
    guest = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert embedded.ensure(["redis"], owner=guest.pid) == []  # used as it is, registered as a guest
        embedded.release(["redis"])  # the owner is done: the guest is still using it
        assert embedded.status()["redis"]["pid"] is not None
        assert embedded.status()["redis"]["owner"] == guest.pid
        embedded.release(["redis"], owner=guest.pid)  # the last user stops it
        assert embedded.status()["redis"]["pid"] is None
    finally:
        guest.kill()
        guest.wait()
