"""The API's shape: token or session auth, one error format, an OpenAPI schema and local docs."""

from __future__ import annotations

import re

import pytest
import yaml

from tenants.services import api_token_create


@pytest.mark.django_db
def test_me_requires_authentication_with_the_error_shape(client):
    response = client.get("/api/v1/me/")
    assert response.status_code in (401, 403)
    error = response.json()["error"]
    assert error["code"] == "not_authenticated"
    assert "credentials" in error["message"].lower()


def test_me_with_session(alice_client):
    assert alice_client.get("/api/v1/me/").json() == {
        "email": "alice@physics.example",
        "name": "Alice",
        "is_operator": False,
        "tenants": [],
    }


def test_me_with_token_for_an_operator(olga, client):
    _, plaintext = api_token_create(user=olga, name="ops")
    body = client.get("/api/v1/me/", headers={"Authorization": f"Token {plaintext}"}).json()
    assert body["is_operator"] is True


def test_malformed_authorization_header_is_401(client, db):
    response = client.get("/api/v1/me/", headers={"Authorization": "Token a b"})
    assert response.status_code == 401


def test_me_is_read_only(alice_client):
    assert alice_client.post("/api/v1/me/", {}).status_code == 405


def test_openapi_schema_describes_me(alice_client):
    response = alice_client.get("/api/v1/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/me/" in schema["paths"]
    assert "Me" in schema["components"]["schemas"]


def test_me_response_matches_the_schema(alice_client):
    import jsonschema

    schema = yaml.safe_load(alice_client.get("/api/v1/schema/").content)
    components = schema["components"]["schemas"]
    me_schema = {**components["Me"], "components": {"schemas": components}}
    me_schema = _resolve(me_schema, components)
    jsonschema.validate(alice_client.get("/api/v1/me/").json(), me_schema)


def _resolve(node, components):
    if isinstance(node, dict):
        if "$ref" in node:
            return _resolve(components[node["$ref"].rsplit("/", 1)[1]], components)
        return {k: _resolve(v, components) for k, v in node.items() if k != "components"}
    if isinstance(node, list):
        return [_resolve(v, components) for v in node]
    return node


def test_interactive_docs_load_their_assets_locally(alice_client):
    page = alice_client.get("/api/v1/docs/").content.decode()
    assert "swagger-ui" in page
    assets = " ".join(re.findall(r'(?:src|href)="([^"]*)"', page)).lower()  # not the random CSRF token
    assert "cdn" not in assets and "https://" not in page
