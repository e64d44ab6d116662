"""A strict fake Kubernetes API server for tests: real HTTP, real client, upstream CRD schemas."""

from __future__ import annotations

from teapot_portal.gateway.crdschema import Cause, CrdRegistry, CrdVersion

from .server import DEFAULT_CRD_DIR, DEVIATIONS, ApiError, FakeKubeServer, RecordedRequest

__all__ = [
    "DEFAULT_CRD_DIR",
    "DEVIATIONS",
    "ApiError",
    "Cause",
    "CrdRegistry",
    "CrdVersion",
    "FakeKubeServer",
    "RecordedRequest",
]
