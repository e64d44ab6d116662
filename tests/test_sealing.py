"""Secret values at rest: sealed in PostgreSQL, readable through the gateway, rotatable."""

from __future__ import annotations

import base64

import pytest
from django.db import connection

from teapot_portal.gateway import kinds
from teapot_portal.gateway.builders import HostEnrolment
from teapot_portal.sealing import seal, unseal

PASSWORD = "bmc-Pa55word-at-rest"


def test_seal_round_trip_and_rotation(settings):
    sealed = seal("hello")
    assert sealed.startswith("sealed:") and "hello" not in sealed
    assert unseal(sealed) == "hello"
    old_key = settings.SECRET_KEY
    settings.SECRET_KEY = "a-new-key-" + "x" * 50
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert unseal(sealed) == "hello"  # still readable after a rotation
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(ValueError, match="cannot be decrypted"):
        unseal(sealed)


@pytest.mark.django_db
def test_lab_secrets_are_sealed_in_the_database_and_readable_through_the_gateway():
    from teapot_portal.gateway.lab.gateway import LabGateway

    gateway = LabGateway("teapot")
    gateway.enrol_host(HostEnrolment("sealed-1", "ipmi://10.8.0.1", "root", PASSWORD, "52:54:00:08:00:01"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT body::text FROM lab_labobject WHERE kind = 'Secret'")
        stored = " ".join(row[0] for row in cursor.fetchall())
    assert PASSWORD not in stored
    assert base64.b64encode(PASSWORD.encode()).decode() not in stored
    assert "sealed:" in stored
    secret = gateway.get(kinds.SECRET, "sealed-1-bmc-secret")
    assert base64.b64decode(secret["data"]["password"]).decode() == PASSWORD
