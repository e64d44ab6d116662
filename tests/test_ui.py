"""The base layout: navigation, htmx from static/ with CSRF on every request, messages."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders


def test_layout_has_navigation_htmx_and_csrf_header(alice_client):
    page = alice_client.get("/").content.decode()
    for item in ("Dashboard", "Clusters", "Reservations", "API docs", "Profile &amp; API tokens", "Sign out"):
        assert item in page
    assert "/static/vendor/htmx/htmx.min.js" in page
    assert "/static/vendor/pico/pico.min.css" in page
    assert 'hx-headers=\'{"X-CSRFToken": "' in page
    assert "Skip to content" in page


def test_fleet_and_admin_links_only_for_operators(client, alice, olga):
    client.force_login(alice)
    body = client.get("/").content.decode()
    assert 'href="/hosts/"' not in body and 'href="/admin/"' not in body
    client.force_login(olga)
    body = client.get("/").content.decode()
    assert 'href="/hosts/"' in body and 'href="/admin/"' in body


def test_vendored_assets_exist():
    for path in ("vendor/htmx/htmx.min.js", "vendor/pico/pico.min.css", "teapot/teapot.css"):
        assert finders.find(path), path


def test_htmx_post_without_csrf_token_is_refused(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/account/tokens/", {"name": "x"}, headers={"HX-Request": "true"})
    assert response.status_code == 403


def test_htmx_post_with_the_layout_csrf_header_is_accepted(alice):
    import re

    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    page = client.get("/account/profile/").content.decode()
    token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
    response = client.post("/account/tokens/", {"name": "x"}, headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 200


def test_messages_are_shown(alice_client, alice):
    from tenants.services import api_token_create

    token, _ = api_token_create(user=alice, name="msg")
    response = alice_client.post(f"/account/tokens/{token.pk}/revoke/", follow=True)
    assert "Token “msg” revoked." in response.content.decode()


@pytest.mark.django_db
def test_unknown_page_is_a_friendly_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
