"""Olga in headless Chromium: the fleet overview, filtering and sorting the host list without a
reload, a host's page, maintenance on; and the same pages on a phone-sized screen."""

from __future__ import annotations

import re

import pytest

from hosts.models import Host
from tests.browser import shot
from tests.conftest import DEMO_PASSWORD
from tests.inventory import make_fleet

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def wait_for_query(page, fragment: str) -> None:
    """htmx pushed a URL (history API: no load event to wait for)."""
    page.wait_for_function("f => location.search.includes(f)", arg=fragment)


def sign_in(page, live_server, email="olga@teapot.example"):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def test_olga_filters_sorts_and_puts_a_host_in_maintenance(page, live_server, olga):
    make_fleet(60, tenants={3: "physics", 11: "genomics"})
    Host.objects.filter(name="h00009").update(operational_status="error", error_type="inspection error")
    sign_in(page, live_server)

    page.get_by_role("link", name="Fleet").click()
    page.wait_for_url(f"{live_server.url}/hosts/")
    assert page.get_by_role("heading", name="Racks").is_visible()
    assert page.locator(".live-indicator").get_attribute("data-live") == "true"  # inspecting hosts
    assert page.locator("a.cell").count() == 60
    shot(page, "fleet-overview")

    page.get_by_role("link", name="Host list", exact=True).click()
    page.wait_for_url(f"{live_server.url}/hosts/list/")
    assert page.locator("#host-count").inner_text().startswith("60 hosts")
    page.evaluate("window.__noReload = true")  # gone if the page reloads

    page.get_by_label("Trait").fill("gpu-a100")
    page.get_by_label("Trait").dispatch_event("change")
    wait_for_query(page, "trait=gpu-a100")
    assert "q=" not in page.url  # empty filters stay out of the URL
    page.locator("#host-count").get_by_text(re.compile(r"^\d+ hosts? match")).wait_for()
    gpu = Host.objects.filter(traits__contains=["gpu-a100"]).count()
    assert page.locator("#host-count").inner_text().startswith(f"{gpu} host")
    assert page.locator("table.host-table tbody tr").count() == gpu
    assert page.evaluate("window.__noReload") is True
    shot(page, "host-list-filtered")

    page.get_by_label("Search").press_sequentially("h0001")  # keyup: search as you type
    wait_for_query(page, "q=h0001")
    page.locator("table.host-table tbody tr").first.wait_for()
    page.wait_for_function("document.querySelectorAll('table.host-table tbody tr').length === 2")
    assert page.locator("table.host-table tbody th a").all_inner_texts() == ["h00011", "h00019"]
    assert page.evaluate("window.__noReload") is True

    page.get_by_role("link", name="Clear").click()
    page.wait_for_url(f"{live_server.url}/hosts/list/")
    cost_header = page.locator("th", has_text="Cost/hour").get_by_role("link")
    cost_header.click()
    wait_for_query(page, "ordering=cost")
    page.locator('th[aria-sort="ascending"]', has_text="Cost/hour").wait_for()
    cost_header.click()
    page.locator('th[aria-sort="descending"]', has_text="Cost/hour").wait_for()
    first = page.locator("table.host-table tbody th a").first.inner_text()
    top = Host.objects.order_by("-cost_per_hour", "pk").first()
    assert first == top.name
    shot(page, "host-list-sorted")

    page.get_by_role("link", name="Next ›").click()
    wait_for_query(page, "page=2")
    page.locator("#host-count").get_by_text("page 2 of 2").wait_for()
    assert "ordering=-cost" in page.url

    page.goto(f"{live_server.url}/hosts/list/?q=h00002")
    page.get_by_role("link", name="h00002").click()
    page.wait_for_url(f"{live_server.url}/hosts/h00002/")
    shot(page, "host-detail")
    page.get_by_label("Maintenance reason").fill("replacing PSU 2")
    page.get_by_role("button", name="Put in maintenance").click()
    page.get_by_text("In maintenance", exact=True).wait_for()
    assert "replacing PSU 2" in page.locator(".banner-maintenance").inner_text()
    assert page.get_by_role("status").filter(has_text="h00002 is in maintenance.").is_visible()
    assert page.get_by_role("button", name="End maintenance").is_visible()
    assert page.locator("#timeline").get_by_text("olga@teapot.example").first.is_visible()
    assert Host.objects.get(name="h00002").maintenance
    shot(page, "host-maintenance")

    # An impossible action is disabled and says why.
    power_off = page.get_by_role("button", name="Power off")
    assert power_off.is_disabled()
    assert "already powered off" in page.locator(".refused", has=power_off).get_attribute("title")

    # The edit form keeps what was typed when the service refuses it.
    page.get_by_text("Edit operator fields").click()
    page.get_by_label("Cost override per hour").fill("-5")
    page.get_by_label("Notes").fill("keep this text")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("a cost per hour ≥ 0").wait_for()
    assert page.get_by_label("Notes").input_value() == "keep this text"
    shot(page, "host-edit-error")


def test_pages_read_on_a_phone(page, live_server, olga):
    make_fleet(24, tenants={3: "physics"})
    Host.objects.filter(provisioning_state__in=("inspecting", "provisioning")).update(provisioning_state="available")
    sign_in(page, live_server)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/hosts/")
    assert page.locator(".live-indicator").get_attribute("data-live") == "false"
    shot(page, "fleet-overview-mobile")
    page.goto(f"{live_server.url}/hosts/list/")
    # The page itself does not scroll sideways; the table scrolls inside its wrapper.
    assert page.evaluate("document.documentElement.scrollWidth") <= 392
    assert page.evaluate("document.querySelector('.table-scroll').scrollWidth > 390")
    shot(page, "host-list-mobile")
    page.goto(f"{live_server.url}/hosts/h00003/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 392
    shot(page, "host-detail-mobile")


def test_the_overview_refreshes_itself_while_hosts_move(page, live_server, olga):
    make_fleet(8)  # h00004 provisioning, h00005 inspecting
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/hosts/")
    assert page.locator(".live-indicator").get_attribute("data-live") == "true"
    Host.objects.filter(provisioning_state__in=("inspecting", "provisioning")).update(provisioning_state="available")
    # The next poll (every 5 s) answers 286 with the settled fleet: polling stops, "Paused" shows.
    page.locator('.live-indicator[data-live="false"]').wait_for(timeout=12000)
    assert "Paused" in page.locator(".live-indicator").inner_text()
    shot(page, "fleet-overview-paused")
