"""``make run``: the whole portal in one foreground command.

1. Refuse early, with a clear message, when the web port is taken.
2. Start (or adopt) the embedded PostgreSQL and Redis unless DATABASE_URL /
   CELERY_BROKER_URL point elsewhere.
3. Migrate and load the demo data (``seed_demo`` is idempotent).
4. Start the web server, a Celery worker and Celery beat, each in its own process group.
5. Print the URL and the demo logins once the web server answers.
6. On Ctrl-C / SIGTERM — or when any child dies — stop every child's process group
   (SIGTERM, then SIGKILL after a grace period), then the embedded servers this run started.
   Nothing is left behind: no process, no socket, no pid file that breaks the next start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from teapot_portal import embedded

BASE_DIR = Path(__file__).resolve().parent.parent
GRACE_SECONDS = 10


def say(message: str) -> None:
    print(f"[teapot] {message}", flush=True)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class Supervisor:
    def __init__(self, host: str, port: int, web: str):
        self.host, self.port, self.web = host, port, web
        self.children: dict[str, subprocess.Popen] = {}
        self.owned: list[str] = []
        self.stopping = False

    # ------------------------------------------------------------------ children

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("DJANGO_SETTINGS_MODULE", "teapot_portal.settings")
        env["PYTHONUNBUFFERED"] = "1"
        # A demo wants to see hosts register, inspect and become available within a minute or
        # two, not fifteen: the lab runs 10x real time unless told otherwise (1 = real latencies).
        env.setdefault("TEAPOT_LAB_SPEED", "10")
        return env

    def _manage(self, *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self._env(), check=True)

    def _spawn(self, name: str, cmd: list[str]) -> None:
        # Own session = own process group: signals reach the child's children too
        # (runserver's autoreloader, Celery's pool processes).
        self.children[name] = subprocess.Popen(cmd, cwd=BASE_DIR, env=self._env(), start_new_session=True)

    def start_children(self) -> None:
        python = sys.executable
        bind = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self.web == "gunicorn":
            web = [
                python,
                "-m",
                "gunicorn",
                "teapot_portal.wsgi",
                "--bind",
                bind,
                "--workers",
                "2",
                "--access-logfile",
                "-",
                "--logger-class",  # masks secret paths (calendar feeds) in the access log
                "teapot_portal.logging.RedactingGunicornLogger",
            ]
        else:
            web = [python, "manage.py", "runserver", bind]
        self._spawn("web", web)
        self._spawn("worker", [python, "-m", "celery", "-A", "teapot_portal", "worker", "-l", "INFO",
                               "--concurrency", "2", "-n", f"teapot-{os.getpid()}@%h"])  # fmt: skip
        # --pidfile= : no celerybeat.pid to go stale and block the next start.
        self._spawn("beat", [python, "-m", "celery", "-A", "teapot_portal", "beat", "-l", "INFO", "--pidfile="])

    def wait_for_web(self, timeout: float = 120) -> bool:
        url = f"http://{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            if self.children["web"].poll() is not None:
                return False
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
            time.sleep(0.2)
        return False

    def stop_children(self) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for name, proc in self.children.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop within {GRACE_SECONDS}s; killing it")
            # Kill whatever is left of the group (children of a child that exited first).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    # ------------------------------------------------------------------ main loop

    def _on_signal(self, signum, frame) -> None:
        if not self.stopping:
            say(f"received {signal.Signals(signum).name}, stopping…")
        self.stopping = True

    def run(self) -> int:
        if port_in_use(self.host, self.port):
            say(
                f"error: port {self.port} on {self.host} is already in use "
                f"(is another `make run` running?). Stop it, or pick another port: PORT={self.port + 1} make run"
            )
            return 2
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        started = time.monotonic()
        exit_code = 0
        try:
            wanted = embedded.wanted()
            if wanted:
                say(f"starting embedded {' and '.join(wanted)} under {embedded.var_dir()}")
            embedded.ensure()
            self.owned = wanted  # owned or used as a guest: release() stops or hands over
            if not self.stopping:
                say("applying migrations")
                self._manage("migrate", "--noinput", "-v", "0")
            if not self.stopping and os.environ.get("TEAPOT_DEMO", os.environ.get("DEBUG", "0")) in {
                "1",
                "true",
                "yes",
                "on",
            }:
                self._manage("seed_demo")
            if not self.stopping:
                self.start_children()
                if self.wait_for_web():
                    self.banner(time.monotonic() - started)
            parent = os.getppid()
            while not self.stopping:
                if os.getppid() != parent:
                    # Orphaned (the terminal or `make` went away without signalling us).
                    say("parent process exited; stopping everything")
                    self.stopping = True
                    break
                for name, proc in self.children.items():
                    if proc.poll() is not None:
                        say(f"{name} exited with code {proc.returncode}; stopping everything")
                        self.stopping, exit_code = True, 1
                        break
                time.sleep(0.2)
        except embedded.EmbeddedError as exc:
            say(f"error: {exc}")
            exit_code = 1
        except subprocess.CalledProcessError as exc:
            say(f"error: {' '.join(map(str, exc.cmd[1:]))} failed with code {exc.returncode}")
            exit_code = 1
        finally:
            # Ignore further Ctrl-C while cleaning up, so cleanup always completes.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self.stop_children()
            if self.owned:
                embedded.release(self.owned)
            say("stopped")
        return exit_code

    def banner(self, seconds: float) -> None:
        host = "localhost" if self.host in {"127.0.0.1", "0.0.0.0", "::", "::1"} else self.host  # noqa: S104
        lines = [
            "",
            f"  Teapot is running at http://{host}:{self.port}/   (ready in {seconds:.1f}s)",
            f"  API docs: http://{host}:{self.port}/api/v1/docs/   admin: http://{host}:{self.port}/admin/",
        ]
        if os.environ.get("TEAPOT_DEMO", os.environ.get("DEBUG", "0")) in {"1", "true", "yes", "on"}:
            lines += [
                "  Demo logins (password teapot-demo):",
                "    operator     ops@teapot.example",
                "    tenant user  alice@physics.example",
            ]
        lines += ["  Press Ctrl-C to stop everything.", ""]
        print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m teapot_portal.supervisor", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--web", choices=["runserver", "gunicorn"], default=os.environ.get("TEAPOT_WEB", "runserver"))
    args = parser.parse_args(argv)
    return Supervisor(args.host, args.port, args.web).run()


if __name__ == "__main__":
    raise SystemExit(main())
