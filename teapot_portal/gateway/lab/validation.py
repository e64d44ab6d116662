"""Schema validation of what the lab stores, like a real API server's 422.

The validator itself (:mod:`teapot_portal.gateway.crdschema`) is shared with the fake API server
of the test suite. When ``TEAPOT_CRD_DIR`` is not a directory (an installation without the CRD
files), schema validation and CRD defaulting are skipped: the lab then only checks object
metadata (names, labels, annotations) itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from pathlib import Path

from django.conf import settings

from teapot_portal.gateway.base import Invalid
from teapot_portal.gateway.crdschema import CrdRegistry
from teapot_portal.gateway.lab.labels import metadata_causes

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _registry() -> CrdRegistry | None:
    """The CRD registry, loaded once per process; None when the CRD files are not installed."""
    crd_dir = Path(getattr(settings, "TEAPOT_CRD_DIR", "") or "")
    if not crd_dir.is_dir():
        log.warning("lab: TEAPOT_CRD_DIR %s is not a directory; objects are not schema-checked", crd_dir)
        return None
    return CrdRegistry.load_cached(crd_dir)


def schema_causes(obj: dict) -> list[dict] | None:
    """The upstream CRD schema's complaints about ``obj``; None when it cannot be checked."""
    registry = _registry()
    if registry is None:
        return None
    try:
        return [c.to_dict() for c in registry.validate(obj)]
    except LookupError:
        return None  # a kind the registry does not know: nothing to check it against


def _default(obj: dict) -> dict:
    """Apply the CRD's structural defaults in place, as the API server does before storing."""
    registry = _registry()
    if registry is not None and obj.get("apiVersion") != "v1":
        with contextlib.suppress(LookupError):  # a kind the registry does not know
            registry.default(obj)
    return obj


_QUOTED_VALUE = re.compile(r'Invalid value: "(?:[^"\\]|\\.)*"')


def _redacted(obj: dict, causes: list[dict]) -> list[dict]:
    """A Secret's values never reach an error message (messages end up in logs)."""
    if obj.get("kind") != "Secret":
        return causes
    return [
        {**c, "message": _QUOTED_VALUE.sub('Invalid value: "(redacted)"', c["message"])}
        if c["field"].startswith(("data", "stringData"))
        else c
        for c in causes
    ]


def _validate(obj: dict) -> None:
    """Raise :class:`Invalid` (a 422) when ``obj`` breaks the metadata rules or its CRD schema."""
    causes = schema_causes(obj)
    if causes is None:
        causes = metadata_causes(obj)
    causes = _redacted(obj, causes)
    if causes:
        meta = obj.get("metadata") or {}
        details = "; ".join(f"{c['field']}: {c['message']}" for c in causes[:5])
        raise Invalid(f'{obj.get("kind")} "{meta.get("name", "")}" is invalid: {details}', causes=causes)
