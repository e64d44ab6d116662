"""Email + password login, invitation-only accounts, password change and reset, logout."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import override_settings

from tests.conftest import DEMO_PASSWORD


@pytest.mark.django_db
def test_anonymous_dashboard_redirects_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_login_page_shows_demo_logins_in_demo_mode(client, settings):
    settings.TEAPOT_DEMO = True
    page = client.get("/accounts/login/").content.decode()
    assert "ops@teapot.example" in page and "teapot-demo" in page
    assert 'for="id_login"' in page and 'for="id_password"' in page  # labelled fields


@pytest.mark.django_db
def test_login_page_hides_demo_logins_outside_demo_mode(client, settings):
    settings.TEAPOT_DEMO = False
    assert "teapot-demo" not in client.get("/accounts/login/").content.decode()


def test_alice_logs_in_with_email_and_password_and_sees_dashboard(client, alice):
    response = client.post("/accounts/login/", {"login": "Alice@Physics.example", "password": DEMO_PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    page = client.get("/").content.decode()
    assert "Welcome, Alice" in page
    assert "alice@physics.example" in page


def test_wrong_password_is_a_clear_error(client, alice):
    response = client.post("/accounts/login/", {"login": "alice@physics.example", "password": "nope"})
    assert response.status_code == 200
    assert "not correct" in response.content.decode()


@pytest.mark.django_db
def test_self_signup_is_closed_by_default(client):
    response = client.post(
        "/accounts/signup/",
        {"email": "mallory@evil.example", "password1": "x-Very-long-1", "password2": "x-Very-long-1"},
    )
    assert "closed" in response.content.decode().lower()
    from tenants.models import User

    assert not User.objects.filter(email="mallory@evil.example").exists()


@pytest.mark.django_db
@override_settings(TEAPOT_ALLOW_SIGNUP=True)
def test_operators_can_open_signup(client):
    client.post(
        "/accounts/signup/",
        {"email": "dave@physics.example", "password1": "x-Very-long-1", "password2": "x-Very-long-1"},
    )
    from tenants.models import User

    assert User.objects.filter(email="dave@physics.example").exists()


def test_logout_is_a_post(alice_client):
    response = alice_client.post("/accounts/logout/")
    assert response.status_code == 302
    assert alice_client.get("/").status_code == 302


def test_password_change(alice_client, alice):
    response = alice_client.post(
        "/accounts/password/change/",
        {"oldpassword": DEMO_PASSWORD, "password1": "new-Pass-9876", "password2": "new-Pass-9876"},
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("new-Pass-9876")


def test_password_reset_sends_an_email_with_a_working_link(client, alice):
    response = client.post("/accounts/password/reset/", {"email": "alice@physics.example"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    link = re.search(r"http://[^\s]+/accounts/password/reset/key/[^\s]+", mail.outbox[0].body).group(0)
    path = link.split("testserver", 1)[1]
    form_page = client.get(path, follow=True)
    assert form_page.status_code == 200
    response = client.post(
        form_page.redirect_chain[-1][0] if form_page.redirect_chain else path,
        {"password1": "reset-Pass-4321", "password2": "reset-Pass-4321"},
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("reset-Pass-4321")


def test_operator_reaches_admin_and_tenant_user_does_not(client, olga, alice):
    client.force_login(olga)
    assert client.get("/admin/").status_code == 200
    client.force_login(alice)
    assert client.get("/admin/").status_code == 302


@pytest.mark.django_db
@override_settings(
    SOCIALACCOUNT_PROVIDERS={
        "openid_connect": {
            "APPS": [
                {
                    "provider_id": "corp",
                    "name": "Corp SSO",
                    "client_id": "teapot",
                    "secret": "not-shown",
                    "settings": {"server_url": "https://sso.example.org"},
                }
            ]
        }
    }
)
def test_configured_sso_shows_a_sign_in_button_without_leaking_the_secret(client):
    page = client.get("/accounts/login/").content.decode()
    assert "Sign in with Corp SSO" in page
    assert "/accounts/oidc/corp/login/" in page
    assert "not-shown" not in page
