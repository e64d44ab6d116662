"""The audit log's one writer: ``audit_record`` inside the service's transaction.

Values are recorded as JSON; keys that name secrets (passwords, tokens, kubeconfigs, keys) are
replaced by "(hidden)", so the log can be shown to tenant owners."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import models

from tenants.models import AuditEntry, Tenant

SECRET_KEY = re.compile(r"(password|secret|token|kubeconfig|credential|private|key_hash|api_key)", re.I)
HIDDEN = "(hidden)"


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): (HIDDEN if SECRET_KEY.search(str(k)) else _clean(v)) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_clean(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, models.Model):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def actor_label(actor) -> str:
    if actor is None:
        return "system"
    return getattr(actor, "email", None) or str(actor)


def audit_record(
    *,
    actor,
    action: str,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    target_repr: str = "",
    tenant: Tenant | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Record one change. ``actor`` is a user or None (Teapot itself)."""
    user = actor if getattr(actor, "pk", None) and hasattr(actor, "email") else None
    return AuditEntry.objects.create(
        actor=user,
        actor_label=actor_label(actor),
        tenant=tenant,
        action=action,
        target_type=target_type or (target._meta.model_name if target is not None else ""),
        target_id=target_id or (str(target.pk) if target is not None and target.pk is not None else ""),
        target_repr=(target_repr or (str(target) if target is not None else ""))[:255],
        before=_clean(dict(before)) if before is not None else None,
        after=_clean(dict(after)) if after is not None else None,
    )


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(field, before, after) for each field that differs — what the audit pages show."""
    before, after = before or {}, after or {}
    return [
        (key, before.get(key), after.get(key))
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]
