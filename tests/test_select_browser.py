"""Alice, a tenant member, in headless Chromium: asks "What would I get?", watches the preview
follow her typing, makes a mistake and sees where, then asks for more hosts than fit."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from hosts.models import Flavour, HostClaim
from tests.browser import shot
from tests.conftest import DEMO_PASSWORD
from tests.test_selection import gpu_fleet

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _sign_in(page, live_server, path: str) -> None:
    page.goto(f"{live_server.url}{path}")
    assert "/accounts/login/" in page.url
    page.get_by_label("Email").fill("alice@physics.example")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}{path}")


def test_alice_sees_what_she_would_get_as_she_types(page, live_server, alice):
    gpu_fleet()
    Flavour.objects.create(
        name="gpu-a100-8",
        description="eight A100s",
        requirement={"accelerators": [{"type": "nvidia-a100", "count": 8}]},
    )
    _sign_in(page, live_server, "/select/")
    expect(page.get_by_role("link", name="What would I get?")).to_have_attribute("aria-current", "page")
    preview = page.locator("#select-preview")
    expect(preview).to_contain_text("1 host of any kind")
    shot(page, "select-start")

    requirement = page.get_by_label("Requirement", exact=True)
    requirement.press_sequentially("gpu:nvidia-a100>=8,cores>64", delay=10)
    expect(preview.locator("pre.requirement-pointer")).to_contain_text("^")
    expect(preview).to_contain_text("only minimums: use cores>=64")
    shot(page, "select-preview-error")

    requirement.fill("")
    requirement.press_sequentially("gpu:nvidia-a100>=8", delay=10)
    expect(preview).to_contain_text("8× nvidia-a100")
    expect(preview.locator("#count-matching")).to_have_text("8")
    expect(preview.locator("#count-free")).to_have_text("6")
    expect(preview.locator("#select-feasible")).to_contain_text("per hour")
    expect(preview.locator("table.select-hosts tbody tr")).to_have_count(1)
    count = page.get_by_label("How many hosts")
    count.fill("4")
    expect(preview.locator("table.select-hosts tbody tr")).to_have_count(4)
    expect(preview.locator(".cost-chart .bar-row")).to_have_count(4)
    shot(page, "select-preview")

    page.get_by_label("Spread or pack", exact=True).select_option("spread")
    page.get_by_label("across each").select_option("rack")
    page.get_by_label("must", exact=True).check()
    expect(preview).to_contain_text("spread across racks (must)")
    count.fill("5")
    explanation = preview.locator("#select-explanation")
    expect(explanation).to_contain_text("only 4 racks have a free nvidia-a100 host; spread across racks needs 5")
    shot(page, "select-preview-explanation")

    page.get_by_label("Spread or pack", exact=True).select_option("")
    count.fill("7")
    expect(preview.locator("#select-explanation")).to_contain_text(re.compile(r"8 nvidia-a100 hosts exist but"))
    shot(page, "select-preview-not-enough-free")

    # A flavour fills the requirement; the preview follows.
    requirement.fill("cores>=64")
    page.get_by_label(re.compile(r"^Flavour")).select_option("gpu-a100-8")
    expect(requirement).to_have_value("gpu:nvidia-a100>=8")
    count.fill("2")
    expect(preview.locator("#select-feasible")).to_be_visible()
    shot(page, "select-flavour")
    assert HostClaim.objects.count() == 0


def test_the_page_works_without_javascript(browser_without_js, live_server, alice):
    page = browser_without_js
    gpu_fleet()
    _sign_in(page, live_server, "/select/")
    page.get_by_label("Requirement", exact=True).fill("cores>=64")
    page.get_by_label("How many hosts").fill("2")
    page.get_by_role("button", name="Show what I would get").click()
    preview = page.locator("#select-preview")
    expect(preview.locator("#select-feasible")).to_be_visible()
    expect(preview.locator("table.select-hosts tbody tr")).to_have_count(2)
    shot(page, "select-no-js")


@pytest.fixture
def browser_without_js(page):
    """A second context of the same browser, with JavaScript switched off."""
    browser = page.context.browser
    context = browser.new_context(viewport={"width": 1280, "height": 860}, java_script_enabled=False)
    plain = context.new_page()
    plain.set_default_timeout(15000)
    yield plain
    context.close()


def test_alice_on_a_phone(page, live_server, alice):
    gpu_fleet()
    page.set_viewport_size({"width": 390, "height": 844})
    _sign_in(page, live_server, "/select/?requirement=gpu:nvidia-a100%3E%3D8&count=3")
    expect(page.locator("#select-feasible")).to_be_visible()
    shot(page, "select-mobile")
