"""Olga, an operator, in headless Chromium: enrols a host, imports a fleet, writes a rule and
changes the cost model — fixing what the pages tell her is wrong."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from hosts.models import HostEnrolment, TraitRule
from tests.browser import shot
from tests.conftest import DEMO_PASSWORD
from tests.inventory import make_fleet

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "Browser-Pa55-never-shown"


def _sign_in(page, live_server, path: str) -> None:
    page.goto(f"{live_server.url}{path}")
    assert "/accounts/login/" in page.url
    page.get_by_label("Email").fill("olga@teapot.example")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}{path}")


def test_olga_enrols_a_host_after_fixing_its_mac(page, live_server, olga):
    _sign_in(page, live_server, "/hosts/manage/enrol/")
    shot(page, "manage-enrol")
    page.get_by_label(re.compile(r"^Name\b")).fill("r1-node-7")
    page.get_by_label("BMC address").fill("redfish://10.1.0.7/redfish/v1/Systems/1")
    page.get_by_label("BMC username").fill("admin")
    page.get_by_label("BMC password").fill(PASSWORD)
    page.get_by_label("Boot MAC").fill("52:54:00:10:00")
    page.get_by_label("Site").fill("ams")
    page.get_by_label("Room").fill("a")
    page.get_by_label("Notes").fill("rack 1, slot 7")
    page.get_by_role("button", name="Enrol host").click()

    mac = page.get_by_label("Boot MAC")
    expect(mac).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#id_boot_mac_error")).to_contain_text("is not valid")
    expect(page.get_by_label(re.compile(r"^Name\b"))).to_have_value("r1-node-7")  # kept
    expect(page.get_by_label("BMC password")).to_have_value("")  # never re-rendered
    assert PASSWORD not in page.content()
    shot(page, "manage-enrol-error")

    mac.fill("52:54:00:10:00:07")
    page.get_by_label("BMC password").fill(PASSWORD)
    page.get_by_role("button", name="Enrol host").click()
    page.wait_for_url(re.compile(r".*/hosts/manage/enrolments/\?ids=\d+$"))
    expect(page.get_by_text("Enrolment of r1-node-7 queued")).to_be_visible()
    expect(page.get_by_role("cell", name="r1-node-7")).to_be_visible()
    expect(page.locator("#enrolment-progress")).to_have_attribute("hx-trigger", "every 3s")
    assert PASSWORD not in page.content()
    shot(page, "manage-enrolments")
    assert HostEnrolment.objects.get().state == "pending"


def test_olga_pastes_a_csv_with_errors_and_sees_every_one(page, live_server, olga):
    _sign_in(page, live_server, "/hosts/manage/import/")
    text = (
        "name,bmc_address,bmc_username,bmc_password,boot_mac,site,room,row,rack\n"
        "n1,ipmi://10.0.0.1,u,pw,52:54:00:00:01:01,ams,a,1,r1\n"
        "n2,http://10.0.0.2,u,pw,52:54:00:00:01:02,ams,a,1,r1\n"
        "n3,ipmi://10.0.0.3,u,pw,52:54:00:00:01,ams,a,1,r2\n"
    )
    page.get_by_label("Or paste the inventory").fill(text)
    page.get_by_role("button", name="Import hosts").click()
    expect(page.get_by_role("heading", name="Nothing was imported")).to_be_visible()
    problems = page.locator("#import-problems tbody tr")
    expect(problems).to_have_count(2)
    expect(problems.nth(0)).to_contain_text("3")
    expect(problems.nth(0)).to_contain_text("bmc_address")
    expect(problems.nth(1)).to_contain_text("boot_mac")
    expect(page.get_by_label("Or paste the inventory")).to_have_value(re.compile("n3,ipmi://10.0.0.3"))
    shot(page, "manage-import-errors")
    assert not HostEnrolment.objects.exists()

    fixed = text.replace("http://10.0.0.2", "ipmi://10.0.0.2").replace("52:54:00:00:01,", "52:54:00:00:01:03,")
    page.get_by_label("Or paste the inventory").fill(fixed)
    page.get_by_role("button", name="Import hosts").click()
    page.wait_for_url(re.compile(r".*/hosts/manage/enrolments/\?ids=.*"))
    expect(page.get_by_text("3 hosts queued for enrolment.")).to_be_visible()
    assert HostEnrolment.objects.count() == 3


def test_olga_writes_a_rule_and_watches_the_preview(page, live_server, olga):
    make_fleet(16, rules=False)
    _sign_in(page, live_server, "/hosts/manage/rules/new/")
    preview = page.locator("#rule-preview")
    expect(preview).to_contain_text("Write a rule")
    page.get_by_label("Trait").fill("big-gpu")
    rule = page.get_by_label(re.compile(r"^Rule\b"))
    rule.press_sequentially('accelerator(tpye == "nvidia-a100")', delay=10)
    expect(preview).to_contain_text("did you mean 'type'?")
    expect(preview.locator("pre")).to_contain_text("^")
    shot(page, "manage-rule-preview-error")

    rule.fill("")
    rule.press_sequentially('accelerator(type == "nvidia-a100")', delay=10)
    expect(preview).to_contain_text(re.compile(r"Matches \d+ of \d+ inspected hosts"))
    shot(page, "manage-rule-preview-ok")
    page.get_by_role("button", name="Save rule").click()
    page.wait_for_url(f"{live_server.url}/hosts/manage/rules/")
    expect(page.get_by_text("Reclassifying the fleet; traits update within seconds.")).to_be_visible()
    expect(page.get_by_role("cell", name="big-gpu", exact=True)).to_be_visible()
    shot(page, "manage-rules")
    assert TraitRule.objects.filter(name="big-gpu").exists()


def test_olga_previews_a_new_cost_model(page, live_server, olga):
    make_fleet(48, rules=True)
    _sign_in(page, live_server, "/hosts/manage/settings/")
    chart = page.locator("#cost-preview")
    expect(chart.locator(".bar-row").first).to_be_visible()
    page.get_by_label("Per accelerator (by type)").fill("nvidia-a100 = 400")
    expect(chart.locator("td.change", has_text="+").first).to_be_visible()  # the A100 hosts cost more
    shot(page, "manage-settings-preview")
    page.get_by_label("Per core").fill("-2")
    expect(chart).to_contain_text("Fix the weights marked above")
    page.get_by_label("Per core").fill("1")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Fleet settings saved.")).to_be_visible()
    expect(page.get_by_label("Per accelerator (by type)")).to_have_value("nvidia-a100 = 400")
