"""pytest fixtures for the fake apiserver; register with ``pytest_plugins = ["tests.fakekube.fixtures"]``.

Function scope on purpose: every test gets an empty cluster, so no test depends on another's
objects, injected faults or denied verbs. Starting a server costs about a millisecond (the CRD
registry is parsed once per process and cached).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .server import FakeKubeServer


@pytest.fixture
def fake_kube() -> Iterator[FakeKubeServer]:
    """A running :class:`FakeKubeServer` with short bookmark/watch timings suited to tests."""
    with FakeKubeServer(bookmark_interval=0.2, watch_timeout=5.0) as server:
        yield server
    # A crash inside the fake is a bug in the fake, never a behaviour to test against.
    assert server.internal_errors == [], "\n".join(server.internal_errors)


@pytest.fixture
def kube_api_client(fake_kube: FakeKubeServer, tmp_path: Path) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` loaded from a kubeconfig written for ``fake_kube``.

    Going through a kubeconfig file exercises the same loading path production uses.
    """
    from kubernetes import config

    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "kubeconfig")
    client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield client
    finally:
        client.close()
