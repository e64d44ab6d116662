"""Shared fixtures: real PostgreSQL and a real broker (embedded unless DATABASE_URL /
CELERY_BROKER_URL say otherwise), named people (STYLE.md §9), subprocess helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from teapot_portal import embedded

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_PASSWORD = "teapot-demo"
_owned: list[str] = []


def pytest_configure(config):
    # The named people's passwords are hashed cheaply in tests (production keeps Django's
    # PBKDF2): a fixture making five people would otherwise spend a second and a half hashing.
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The embedded servers are started once per session (the xdist controller starts them,
    # workers find them running) and stopped at the end if this session started them.
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        embedded.ensure()
        _owned.extend(embedded.wanted())  # owned or used: release() stops or hands over


def pytest_unconfigure(config):
    if _owned:
        from django.db import connections

        connections.close_all()
        embedded.release(_owned)


@pytest.fixture(scope="session", autouse=True)
def _release_test_database(django_db_setup, django_db_blocker):
    """Close what the live server's threads leave open, so the test database can be dropped."""
    yield
    with django_db_blocker.unblock():
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache (the host list caches its suggestion lists)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def olga(db):
    from tenants.services import user_ensure

    user, _ = user_ensure(email="olga@teapot.example", password=DEMO_PASSWORD, is_staff=True, first_name="Olga")
    return user


@pytest.fixture
def alice(db):
    from tenants.services import user_ensure

    user, _ = user_ensure(email="alice@physics.example", password=DEMO_PASSWORD, first_name="Alice")
    return user


@pytest.fixture
def carol(db):
    from tenants.services import user_ensure

    user, _ = user_ensure(email="carol@genomics.example", password=DEMO_PASSWORD, first_name="Carol")
    return user


@pytest.fixture
def world(db):
    """physics (alice owner, bob viewer, dave member), genomics (carol owner), olga operator;
    quota classes, versions, an image and quotas (tests/tenancy.py)."""
    from tests.tenancy import tenancy

    return tenancy()


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def api_client(user=None):
    """A DRF test client, authenticated as ``user`` when given (force_authenticate)."""
    from rest_framework.test import APIClient

    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def olga_api(olga):
    return api_client(olga)


@pytest.fixture
def alice_api(alice):
    return api_client(alice)


@pytest.fixture
def olga_client(client, olga):
    client.force_login(olga)
    return client


def run_python(code: str, *, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run Python code in a fresh interpreter with Teapot importable (settings tests, etc.)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def run_manage(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets fixtures see whether the test failed (browser tests save a screenshot then).
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


pytest_plugins = ["tests.browser"]
