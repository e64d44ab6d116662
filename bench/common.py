"""What both benchmarks need: Django on a throw-away database, and percentiles.

Importing this module makes the project importable and sets the benchmark environment
(quiet logs, embedded servers allowed). :func:`throwaway_database` starts the embedded servers
unless ``DATABASE_URL`` names one, creates and migrates ``<name>_<suffix>`` the way the test
suite does (never the tests' database, nor another benchmark's) and drops it afterwards.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teapot_portal.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("TEAPOT_EMBEDDED_AUTOSTART", "1")


@contextmanager
def throwaway_database(suffix: str) -> Iterator[int]:
    """Django set up on a fresh migrated database for the block; yields PostgreSQL's major version."""
    from teapot_portal import embedded

    owned = embedded.ensure() if not os.environ.get("DATABASE_URL") else []
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    settings.DEBUG = False
    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{old_name}_{suffix}"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield connection.pg_version // 10000
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        if owned:
            connection.close()
            embedded.release(owned)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
