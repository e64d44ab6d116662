"""Encryption at rest for secret values Teapot's database must hold (Fernet, keyed by SECRET_KEY).

``seal``/``unseal`` protect a string; :class:`SealedDataJSONField` is a JSONField whose
top-level ``data`` mapping (a Kubernetes Secret's values) is sealed value by value on the way
into PostgreSQL and unsealed on the way out, so a database dump never holds a BMC password.
Keys derive from ``SECRET_KEY``; ``SECRET_KEY_FALLBACKS`` still decrypt after a rotation.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

PREFIX = "sealed:"


def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(f"teapot-sealing:{secret_key}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _keys() -> MultiFernet:
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([_fernet(key) for key in keys])


def seal(value: str) -> str:
    return PREFIX + _keys().encrypt(value.encode()).decode()


def unseal(value: str) -> str:
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return value  # written before sealing existed
    try:
        return _keys().decrypt(value[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise ValueError("a sealed value cannot be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS") from exc


class SealedDataJSONField(models.JSONField):
    """A JSONField that seals the values of its top-level ``data`` mapping."""

    def get_prep_value(self, value):
        if isinstance(value, dict) and isinstance(value.get("data"), dict):
            value = {**value, "data": {k: seal(v) if isinstance(v, str) else v for k, v in value["data"].items()}}
        return super().get_prep_value(value)

    def from_db_value(self, value, expression, connection):
        value = super().from_db_value(value, expression, connection)
        if isinstance(value, dict) and isinstance(value.get("data"), dict):
            value = {**value, "data": {k: unseal(v) for k, v in value["data"].items()}}
        return value
