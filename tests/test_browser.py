"""A person in headless Chromium: sign in, see the dashboard, create and revoke a token."""

from __future__ import annotations

import pytest

from tests.browser import shot
from tests.conftest import DEMO_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_alice_signs_in_and_manages_tokens(page, live_server, alice, settings):
    settings.TEAPOT_DEMO = True
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    shot(page, "login")
    page.get_by_label("Email").fill("alice@physics.example")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    assert page.get_by_role("heading", name="Welcome, Alice").is_visible()
    shot(page, "dashboard")

    page.get_by_text("alice@physics.example", exact=True).first.click()  # account menu
    page.get_by_role("link", name="Profile & API tokens").click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    token_box = page.get_by_label("New API token")
    token_box.wait_for()
    assert token_box.input_value().startswith("tpt_")
    assert page.url.endswith("/account/profile/")  # htmx swapped the fragment, no navigation
    shot(page, "token-created")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke").click()
    page.get_by_role("cell", name="revoked").wait_for()
    shot(page, "token-revoked")


def test_sign_out(page, live_server, alice):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill("alice@physics.example")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    page.get_by_text("alice@physics.example", exact=True).first.click()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/accounts/login/")
