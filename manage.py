#!/usr/bin/env python
"""Django's command-line utility, plus the embedded servers.

With DATABASE_URL / CELERY_BROKER_URL unset, the embedded PostgreSQL and Redis under var/
are started for the command (or used, if `make run` already runs them) and stopped again
afterwards when this command started them.
"""

import os
import sys

# Commands that never touch the database or broker don't start anything.
NO_SERVICES = {"help", "version", "--help", "-h", "--version", "check", "collectstatic"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teapot_portal.settings")
    from django.core.management import execute_from_command_line

    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    owned: list[str] = []
    if command not in NO_SERVICES and os.environ.get("TEAPOT_EMBEDDED_AUTOSTART", "1") == "1":
        from teapot_portal import embedded

        try:
            embedded.ensure()
            owned = embedded.wanted()  # owned or used as a guest: release() stops or hands over
        except embedded.EmbeddedError as exc:
            sys.exit(f"error: {exc}")
    try:
        execute_from_command_line(sys.argv)
    finally:
        if owned:
            from django.db import connections

            connections.close_all()
            embedded.release(owned)


if __name__ == "__main__":
    main()
