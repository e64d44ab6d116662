"""Personal API tokens: created on the profile page or by command, hashed at rest, revocable."""

from __future__ import annotations

import io
import logging
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tenants.models import ApiToken
from tenants.services import api_token_create


def _token_from(html: str) -> str:
    return re.search(r'value="(tpt_[^"]+)"', html).group(1)


def test_profile_page_lists_tokens(alice_client, alice):
    api_token_create(user=alice, name="laptop")
    page = alice_client.get("/account/profile/").content.decode()
    assert "laptop" in page and "API tokens" in page


def test_created_token_is_shown_once_and_stored_hashed(alice_client, alice):
    response = alice_client.post("/account/tokens/", {"name": "CI pipeline"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    plaintext = _token_from(response.content.decode())
    # Only the hash is stored: the plaintext appears nowhere in the table.
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM tenants_apitoken")
        rows = cursor.fetchall()
    assert plaintext not in repr(rows)
    # And it is never rendered again.
    assert plaintext not in alice_client.get("/account/profile/").content.decode()
    api = alice_client.__class__()
    me = api.get("/api/v1/me/", headers={"Authorization": f"Token {plaintext}"})
    assert me.status_code == 200
    assert me.json()["email"] == "alice@physics.example"


def test_token_creation_without_htmx_works_too(alice_client):
    response = alice_client.post("/account/tokens/", {"name": "no-js"})
    assert response.status_code == 200
    assert _token_from(response.content.decode()).startswith("tpt_")


def test_empty_or_duplicate_name_is_a_clear_error(alice_client, alice):
    api_token_create(user=alice, name="dup")
    response = alice_client.post("/account/tokens/", {"name": "dup"}, headers={"HX-Request": "true"})
    assert "already have an active token with this name" in response.content.decode()
    response = alice_client.post("/account/tokens/", {"name": "  "}, headers={"HX-Request": "true"})
    assert "This field is required" in response.content.decode() or "Give the token a name" in response.content.decode()
    assert ApiToken.objects.filter(user=alice).count() == 1


def test_revoked_token_is_refused(alice_client, alice, client):
    token, plaintext = api_token_create(user=alice, name="old")
    response = alice_client.post(f"/account/tokens/{token.pk}/revoke/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    fresh = client.__class__()
    response = fresh.get("/api/v1/me/", headers={"Authorization": f"Token {plaintext}"})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid, revoked or expired token."


def test_expired_token_is_refused(alice, client):
    token, plaintext = api_token_create(user=alice, name="short")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/v1/me/", headers={"Authorization": f"Token {plaintext}"}).status_code == 401


def test_carol_cannot_revoke_alices_token(alice, carol, client):
    token, _ = api_token_create(user=alice, name="mine")
    client.force_login(carol)
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_revoke_requires_post(alice_client, alice):
    token, _ = api_token_create(user=alice, name="get")
    assert alice_client.get(f"/account/tokens/{token.pk}/revoke/").status_code == 405


def test_create_api_token_command_prints_a_working_token(alice, client, capsys):
    call_command("create_api_token", "ALICE@physics.example", "--name", "batch")
    plaintext = capsys.readouterr().out.strip()
    assert plaintext.startswith("tpt_")
    assert client.get("/api/v1/me/", headers={"Authorization": f"Token {plaintext}"}).status_code == 200


@pytest.mark.django_db
def test_create_api_token_command_for_unknown_user_fails_clearly():
    with pytest.raises(CommandError, match="No user with email"):
        call_command("create_api_token", "nobody@nowhere.example")


def test_token_plaintext_never_reaches_the_logs(alice, client, caplog):
    caplog.set_level(logging.DEBUG)
    _, plaintext = api_token_create(user=alice, name="quiet")
    client.get("/api/v1/me/", headers={"Authorization": f"Token {plaintext}"})
    client.get("/api/v1/me/", headers={"Authorization": f"Token {plaintext}x"})
    assert plaintext not in caplog.text


def test_last_used_is_recorded_at_most_once_a_minute(alice, client, django_assert_max_num_queries):
    token, plaintext = api_token_create(user=alice, name="busy")
    client.get("/api/v1/me/", headers={"Authorization": f"Token {plaintext}"})
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    client.get("/api/v1/me/", headers={"Authorization": f"Token {plaintext}"})
    token.refresh_from_db()
    assert token.last_used_at == first


@pytest.mark.django_db
def test_a_member_scopes_a_token_to_one_tenant(client, world):
    client.force_login(world.alice)
    assert "Only for" in client.get(reverse("tenants:profile")).content.decode()
    response = client.post(reverse("tenants:token_create"), {"name": "physics CI", "tenant": "physics"})
    assert response.status_code == 200
    token = ApiToken.objects.get(name="physics CI")
    assert token.tenant == world.physics
    plaintext = re.search(r'value="(tpt_[^"]+)"', response.content.decode()).group(1)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    assert [t["slug"] for t in api.get("/api/v1/me/").json()["tenants"]] == ["physics"]
    # A tenant she does not belong to cannot be chosen.
    refused = client.post(reverse("tenants:token_create"), {"name": "sneaky", "tenant": "genomics"})
    assert refused.status_code == 400 and not ApiToken.objects.filter(name="sneaky").exists()


@pytest.mark.django_db
def test_the_command_creates_a_tenant_token(world):
    out = io.StringIO()
    call_command("create_api_token", "alice@physics.example", "--name", "ci", "--tenant", "physics", stdout=out)
    assert out.getvalue().startswith("tpt_")
    assert ApiToken.objects.get(name="ci").tenant == world.physics
    with pytest.raises(CommandError, match="No tenant"):
        call_command("create_api_token", "alice@physics.example", "--name", "ci2", "--tenant", "nope")
    with pytest.raises(CommandError, match="belong to"):
        call_command("create_api_token", "carol@genomics.example", "--name", "ci3", "--tenant", "physics")
