"""Operator pages that change the inventory: enrol, import, enrolment progress, classification
rules and fleet settings. Operators only; credentials never come back in a page."""

from __future__ import annotations

import base64
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from hosts.classify import hosts_classify
from hosts.importing import parse_inventory
from hosts.models import FleetSettings, Host, HostEnrolment, TraitRule
from teapot_portal.sealing import unseal
from tests.inventory import make_fleet

pytestmark = pytest.mark.django_db

PASSWORD = "Manage-Pa55-never-shown"
HTMX = {"HX-Request": "true"}
HEADER = "name,bmc_address,bmc_username,bmc_password,boot_mac,site,room,row,rack,key_erase\n"


def _enrol_data(**change) -> dict:
    data = {
        "name": "r1-node-1",
        "bmc_address": "redfish://10.1.0.1/redfish/v1/Systems/1",
        "bmc_username": "admin",
        "bmc_password": PASSWORD,
        "boot_mac": "52:54:00:10:00:01",
        "location_site": "ams",
        "location_room": "a",
        "location_row": "1",
        "location_rack": "r1",
        "key_erase_capable": "on",
        "root_device_name": "",
        "notes": "replaced PSU",
    }
    data.update(change)
    return data


def _assert_no_password(body: str, password: str = PASSWORD) -> None:
    assert password not in body
    assert base64.b64encode(password.encode()).decode() not in body


# --------------------------------------------------------------------------- permissions


@pytest.fixture
def rule():
    return TraitRule.objects.create(name="highmem", rule="ram_gib >= 512")


def _pages(rule) -> list[tuple[str, str]]:
    return [
        ("get", reverse("hosts:enrol")),
        ("get", reverse("hosts:import")),
        ("get", reverse("hosts:import-template") + "?format=csv"),
        ("get", reverse("hosts:enrolments")),
        ("get", reverse("hosts:rules")),
        ("get", reverse("hosts:rule-new")),
        ("get", reverse("hosts:rule-edit", args=[rule.pk])),
        ("get", reverse("hosts:rule-delete", args=[rule.pk])),
        ("post", reverse("hosts:rule-preview")),
        ("get", reverse("hosts:settings")),
        ("post", reverse("hosts:settings-preview")),
    ]


def test_anonymous_goes_to_login_on_every_page(client, rule):
    for method, url in _pages(rule):
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/"), url


def test_non_operator_is_refused_on_every_page(alice_client, rule):
    for method, url in _pages(rule):
        assert getattr(alice_client, method)(url).status_code == 403, url
    assert TraitRule.objects.filter(pk=rule.pk).exists()
    alice_client.post(reverse("hosts:rule-delete", args=[rule.pk]))
    assert TraitRule.objects.filter(pk=rule.pk).exists()


def test_operator_sees_every_page_with_the_sub_navigation(olga_client, rule):
    for method, url in _pages(rule):
        response = getattr(olga_client, method)(url)
        assert response.status_code == 200, url
    page = olga_client.get(reverse("hosts:rules")).content.decode()
    for label in ("Enrol", "Import", "Enrolments", "Rules", "Settings"):
        assert f">{label}</a>" in page


def test_wrong_method_is_405(olga_client):
    assert olga_client.get(reverse("hosts:rule-preview")).status_code == 405
    assert olga_client.post(reverse("hosts:enrolments")).status_code == 405


# --------------------------------------------------------------------------- enrol one host


def test_enrol_form_lists_topology_levels_and_bmc_schemes(olga_client):
    page = olga_client.get(reverse("hosts:enrol")).content.decode()
    for level in FleetSettings.load().topology_levels:
        assert f'name="location_{level}"' in page
    assert "idrac-virtualmedia" in page and "+https" in page
    assert 'type="password"' in page and "re-enter it after an error" in page


def test_enrol_queues_a_sealed_enrolment_and_never_shows_the_password(olga_client, olga):
    response = olga_client.post(reverse("hosts:enrol"), _enrol_data(), follow=True)
    assert response.status_code == 200
    enrolment = HostEnrolment.objects.get()
    assert enrolment.state == "pending" and enrolment.requested_by == olga
    assert enrolment.location == {"site": "ams", "room": "a", "row": "1", "rack": "r1"}
    assert enrolment.key_erase_capable and enrolment.notes == "replaced PSU"
    assert PASSWORD not in enrolment.sealed_credentials
    assert json.loads(unseal(enrolment.sealed_credentials))["password"] == PASSWORD
    assert response.redirect_chain[-1][0] == f"{reverse('hosts:enrolments')}?ids={enrolment.pk}"
    body = response.content.decode()
    assert "Enrolment of r1-node-1 queued" in body and "r1-node-1" in body
    _assert_no_password(body)
    assert enrolment.sealed_credentials not in body


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"bmc_address": "http://10.0.0.1"}, "bmc_address", "is not supported"),
        ({"bmc_address": "10.0.0.1"}, "bmc_address", "has no scheme"),
        ({"boot_mac": "52:54:00:10:00"}, "boot_mac", "is not valid"),
        ({"name": "Node_1"}, "name", "must be lowercase"),
        ({"location_site": "", "location_room": ""}, "location_row", "is given but site is not"),
        ({"bmc_username": ""}, "bmc_username", "required"),
    ],
)
def test_enrol_errors_are_shown_by_field_and_the_other_values_kept(olga_client, change, field, words):
    response = olga_client.post(reverse("hosts:enrol"), _enrol_data(**change))
    assert response.status_code == 400
    body = response.content.decode()
    assert f'id="id_{field}_error"' in body and words in body
    widget = re.search(rf'<input[^>]*name="{field}"[^>]*>', body).group(0)
    assert 'aria-invalid="true"' in widget and re.search(rf'aria-describedby="[^"]*id_{field}_error', widget)
    assert 'value="admin"' in body or field == "bmc_username"
    assert "replaced PSU" in body  # the notes are kept
    _assert_no_password(body)
    assert not HostEnrolment.objects.exists()


def test_enrolling_a_duplicate_name_is_refused(olga_client):
    olga_client.post(reverse("hosts:enrol"), _enrol_data())
    response = olga_client.post(reverse("hosts:enrol"), _enrol_data(boot_mac="52:54:00:10:00:02"))
    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="id_name_error"' in body and "already enrolled" in body
    _assert_no_password(body)
    assert HostEnrolment.objects.count() == 1


# --------------------------------------------------------------------------- import


def test_import_of_a_pasted_csv_queues_every_host(olga_client, olga):
    text = HEADER + (
        f"n1,ipmi://10.0.0.1,u,{PASSWORD},52:54:00:00:01:01,ams,a,1,r1,true\n"
        f"n2,redfish://10.0.0.2/redfish/v1/Systems/1,u,{PASSWORD},52:54:00:00:01:02,ams,a,1,r2,\n"
    )
    response = olga_client.post(reverse("hosts:import"), {"text": text, "fmt": "auto"}, follow=True)
    assert response.status_code == 200
    ids = sorted(HostEnrolment.objects.values_list("pk", flat=True))
    assert len(ids) == 2 and HostEnrolment.objects.filter(state="pending", requested_by=olga).count() == 2
    path, _ = response.redirect_chain[-1]
    assert path.startswith(reverse("hosts:enrolments") + "?ids=") and set(path.split("=")[1].split(",")) == {
        str(i) for i in ids
    }
    body = response.content.decode()
    assert "2 hosts queued" in body and "n1" in body and "n2" in body
    _assert_no_password(body)


def test_import_of_an_uploaded_yaml_file(olga_client):
    text = (
        "hosts:\n"
        f"  - {{name: y1, bmc_address: 'ipmi://10.0.0.1', bmc_username: u, bmc_password: {PASSWORD}, boot_mac: '52:54:00:00:02:01', site: ams}}\n"
        f"  - {{name: y2, bmc_address: 'ipmi://10.0.0.2', bmc_username: u, bmc_password: {PASSWORD}, boot_mac: '52:54:00:00:02:02'}}\n"
    )
    upload = SimpleUploadedFile("fleet.yml", text.encode(), content_type="application/octet-stream")
    response = olga_client.post(reverse("hosts:import"), {"file": upload, "fmt": "auto"}, follow=True)
    assert response.status_code == 200
    assert sorted(HostEnrolment.objects.values_list("name", flat=True)) == ["y1", "y2"]
    assert "2 hosts queued" in response.content.decode()


def test_import_with_bad_lines_shows_every_error_and_imports_nothing(olga_client):
    text = HEADER + (
        f"n1,ipmi://10.0.0.1,u,{PASSWORD},52:54:00:00:01:01,ams,a,1,r1,true\n"
        f"n2,http://10.0.0.2,u,{PASSWORD},52:54:00:00:01:02,ams,a,1,r2,\n"
        f"n3,ipmi://10.0.0.3,u,{PASSWORD},52:54:00:00:01,ams,a,1,r2,maybe\n"
        f"n1,ipmi://10.0.0.4,u,{PASSWORD},52:54:00:00:01:04,,,,r2,\n"
    )
    response = olga_client.post(reverse("hosts:import"), {"text": text, "fmt": "csv"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Nothing was imported" in body and "your text is kept below" in body
    for line, column, words in (
        (3, "bmc_address", "is not supported"),
        (4, "boot_mac", "is not valid"),
        (4, "key_erase", "true or false"),
        (5, "location", "is given but"),
        (5, "name", "duplicate of line 2"),
    ):
        assert f"<tr><td>{line}</td><td><code>{column}</code></td><td>" in body, (line, column)
        assert words in body
    assert "n3,ipmi://10.0.0.3" in body  # the pasted text is kept in the textarea
    assert not HostEnrolment.objects.exists()


def test_import_errors_of_an_uploaded_file_ask_to_choose_it_again(olga_client):
    upload = SimpleUploadedFile("fleet.csv", (HEADER + "bad,,,,\n").encode())
    response = olga_client.post(reverse("hosts:import"), {"file": upload, "fmt": "auto"})
    body = response.content.decode()
    assert response.status_code == 400 and "choose the file again" in body
    assert not HostEnrolment.objects.exists()


def test_import_without_input_asks_for_a_file_or_text(olga_client):
    response = olga_client.post(reverse("hosts:import"), {"text": "  ", "fmt": "auto"})
    assert response.status_code == 400
    assert "Choose a file or paste the inventory." in response.content.decode()


@pytest.mark.parametrize("fmt", ["csv", "yaml"])
def test_import_templates_download_and_import_as_they_are(olga_client, fmt):
    response = olga_client.get(reverse("hosts:import-template") + f"?format={fmt}")
    assert response.status_code == 200
    assert f'filename="teapot-hosts.{fmt}"' in response["Content-Disposition"]
    text = response.content.decode()
    result = parse_inventory(text, fmt, levels=FleetSettings.load().topology_levels)
    assert result.ok, result.errors
    assert len(result.rows) == 2
    assert olga_client.get(reverse("hosts:import-template") + "?format=xml").status_code == 400


def test_import_page_documents_the_columns(olga_client):
    body = olga_client.get(reverse("hosts:import")).content.decode()
    for column in ("name", "bmc_address", "bmc_username", "bmc_password", "boot_mac", "key_erase", "rack"):
        assert f"<code>{column}</code>" in body
    assert "?format=csv" in body and "?format=yaml" in body


# --------------------------------------------------------------------------- enrolment progress


def _enrolment(name: str, state: str = "pending", **extra) -> HostEnrolment:
    index = HostEnrolment.objects.count() + 1
    return HostEnrolment.objects.create(
        name=name,
        bmc_address=f"ipmi://10.0.0.{index}",
        boot_mac=f"52:54:00:00:09:{index:02x}",
        state=state,
        sealed_credentials="SEALED-SECRET-BLOB" if state == "pending" else "",
        **extra,
    )


def test_enrolments_poll_while_pending_and_stop_with_286_when_settled(olga_client):
    pending = _enrolment("p1")
    _enrolment("f1", state="failed", error="BMC refused the credentials")
    page = olga_client.get(reverse("hosts:enrolments"))
    body = page.content.decode()
    assert page.status_code == 200 and 'hx-trigger="every 3s"' in body
    assert "1 of 2" in body and "BMC refused the credentials" in body
    assert "SEALED-SECRET-BLOB" not in body
    fragment = olga_client.get(reverse("hosts:enrolments"), headers=HTMX)
    assert fragment.status_code == 200 and "<html" not in fragment.content.decode()

    HostEnrolment.objects.filter(pk=pending.pk).update(state="applied", sealed_credentials="")
    make_fleet(1, prefix="p", rules=False)  # p00000: available
    HostEnrolment.objects.filter(pk=pending.pk).update(name="p00000")
    settled = olga_client.get(reverse("hosts:enrolments"), headers=HTMX)
    assert settled.status_code == 286
    assert 'hx-trigger="every 3s"' not in settled.content.decode()
    assert "available" in settled.content.decode()
    assert 'hx-trigger="every 3s"' not in olga_client.get(reverse("hosts:enrolments")).content.decode()


def test_enrolments_keep_polling_while_an_applied_host_is_inspecting(olga_client):
    hosts = make_fleet(6, prefix="q", rules=False)
    inspecting = next(h for h in hosts if h.provisioning_state == "inspecting")
    _enrolment(inspecting.name, state="applied")
    response = olga_client.get(reverse("hosts:enrolments"), headers=HTMX)
    assert response.status_code == 200
    assert "inspecting" in response.content.decode()


def test_enrolments_filter_by_batch_and_state(olga_client):
    a, b = _enrolment("alpha-1"), _enrolment("bravo-1", state="failed")
    _enrolment("charlie-1")
    body = olga_client.get(reverse("hosts:enrolments") + f"?ids={a.pk},{b.pk}").content.decode()
    assert "alpha-1" in body and "bravo-1" in body and "charlie-1" not in body and "in this batch" in body
    body = olga_client.get(reverse("hosts:enrolments") + "?state=failed").content.decode()
    assert "bravo-1" in body and "alpha-1" not in body


def test_enrolments_page_is_paginated_and_needs_few_queries(olga_client, django_assert_max_num_queries):
    HostEnrolment.objects.bulk_create(
        HostEnrolment(
            name=f"e{i:03d}", bmc_address="ipmi://10.0.0.1", boot_mac=f"52:54:00:01:00:{i:02x}", state="applied"
        )
        for i in range(120)
    )
    with django_assert_max_num_queries(8):
        body = olga_client.get(reverse("hosts:enrolments")).content.decode()
    assert "Page 1 of 3" in body and "e119" in body and "e000" not in body


# --------------------------------------------------------------------------- rules


def test_rules_list_counts_hosts_per_trait_in_one_query(olga_client, django_assert_max_num_queries):
    hosts = make_fleet(48)
    Host.objects.filter(pk=hosts[0].pk).update(manual_traits=["burn-in"])
    with django_assert_max_num_queries(7):
        body = olga_client.get(reverse("hosts:rules")).content.decode()
    expected = Host.objects.filter(traits__contains=["gpu-a100"]).count()
    assert expected > 0
    assert "gpu-a100" in body and f'<td class="num">{expected}</td>' in body
    assert "<code>burn-in</code>" in body
    assert "nic_speed_gbps" in body and "accelerator(…)" in body and "dense-hdd" in body  # reference + examples


def test_create_edit_and_delete_a_rule_reclassify_after_commit(olga_client, django_capture_on_commit_callbacks):
    hosts = make_fleet(16, rules=False)
    data = {"name": "big-ram", "rule": "ram_gib >= 512", "description": "memory-heavy", "enabled": "on"}
    with django_capture_on_commit_callbacks() as callbacks:
        response = olga_client.post(reverse("hosts:rule-new"), data, follow=True)
    assert len(callbacks) == 1  # the fleet's reclassification, queued after the commit
    assert "Reclassifying the fleet; traits update within seconds." in response.content.decode()
    rule = TraitRule.objects.get(name="big-ram")
    hosts_classify()  # what the queued task does in the worker
    carrying = set(Host.objects.filter(traits__contains=["big-ram"]).values_list("name", flat=True))
    assert carrying and carrying < {h.name for h in hosts}

    with django_capture_on_commit_callbacks() as callbacks:
        olga_client.post(reverse("hosts:rule-edit", args=[rule.pk]), {**data, "rule": "cores >= 1"})
    assert len(callbacks) == 1
    hosts_classify()
    inspected = Host.objects.filter(hardware__isnull=False).count()
    assert Host.objects.filter(traits__contains=["big-ram"]).count() == inspected

    confirm = olga_client.get(reverse("hosts:rule-delete", args=[rule.pk])).content.decode()
    assert "Delete the rule" in confirm and f"{inspected} hosts" in confirm
    with django_capture_on_commit_callbacks() as callbacks:
        olga_client.post(reverse("hosts:rule-delete", args=[rule.pk]))
    assert len(callbacks) == 1 and not TraitRule.objects.exists()
    hosts_classify()
    assert not Host.objects.filter(traits__contains=["big-ram"]).exists()


def test_a_bad_rule_is_refused_with_its_position_and_the_input_kept(olga_client):
    response = olga_client.post(
        reverse("hosts:rule-new"), {"name": "Bad Name", "rule": "ram_gb >= 512", "enabled": "on"}
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="id_rule_error"' in body and "did you mean &#x27;ram_gib&#x27;" in body
    assert 'id="id_name_error"' in body
    assert "ram_gb &gt;= 512" in body and 'value="Bad Name"' in body
    assert not TraitRule.objects.exists()


def test_rule_preview_points_at_the_error(olga_client):
    response = olga_client.post(reverse("hosts:rule-preview"), {"rule": 'arch >= "x86"'}, headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "needs a number" in body
    assert '<pre class="rule-pointer">arch &gt;= &quot;x86&quot;\n     ^</pre>' in body


def test_rule_preview_counts_the_matching_hosts(olga_client):
    make_fleet(16, rules=False)
    inspected = Host.objects.filter(hardware__isnull=False).count()
    matching = Host.objects.filter(hardware__isnull=False, accelerators__contains=[{"type": "nvidia-a100"}])
    response = olga_client.post(
        reverse("hosts:rule-preview"), {"rule": 'accelerator(type == "nvidia-a100")'}, headers=HTMX
    )
    body = response.content.decode()
    assert f"Matches <strong>{matching.count()}</strong> of {inspected} inspected hosts" in body
    assert matching.first().name in body
    empty = olga_client.post(reverse("hosts:rule-preview"), {"rule": ""}, headers=HTMX).content.decode()
    assert "Write a rule" in empty


# --------------------------------------------------------------------------- fleet settings


def _settings_data(**change) -> dict:
    data = {
        "topology_levels": "site > room > row > rack",
        "cost_unit": "EUR",
        "base": "0",
        "per_core": "1",
        "per_gib_ram": "1",
        "per_tb_disk": "0",
        "per_accelerator": "",
        "per_trait": "",
        "preemption_notice_seconds": "120",
        "minimum_cleaning": "key_erase",
        "provisioning_attempts": "3",
        "reservation_extend_window_hours": "48",
        "reservation_max_hours": "168",
        "reservation_horizon_days": "90",
        "reservation_reminder_minutes": "60",
    }
    data.update(change)
    return data


def test_settings_page_shows_the_maas_like_default(olga_client):
    body = olga_client.get(reverse("hosts:settings")).content.decode()
    assert "1 per core + 1 per GiB of RAM" in body
    assert 'value="site &gt; room &gt; row &gt; rack"' in body


def test_settings_change_is_saved_and_reclassifies(olga_client, olga, django_capture_on_commit_callbacks):
    data = _settings_data(
        topology_levels="site, room, row, rack, slot",
        cost_unit="EUR",
        per_core="0.5",
        per_accelerator="nvidia-a100 = 40\n# a comment\n\nxilinx-u250 = 12.5",
        per_trait="nvme = 4",
    )
    with django_capture_on_commit_callbacks() as callbacks:
        response = olga_client.post(reverse("hosts:settings"), data, follow=True)
    assert response.status_code == 200 and len(callbacks) == 1
    assert "Fleet settings saved" in response.content.decode()
    fleet = FleetSettings.load()
    assert fleet.topology_levels == ["site", "room", "row", "rack", "slot"]
    assert fleet.cost_unit == "EUR" and fleet.updated_by == olga.email
    model = fleet.get_cost_model()
    assert str(model.per_core) == "0.5" and str(model.per_accelerator["xilinx-u250"]) == "12.5"
    assert str(model.per_trait["nvme"]) == "4"
    body = response.content.decode()
    assert "nvidia-a100 = 40" in body and 'value="0.5"' in body


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"topology_levels": "Site > 1room"}, "topology_levels", "lowercase letters"),
        ({"topology_levels": "site > site"}, "topology_levels", "each level may appear once"),
        ({"topology_levels": " > , "}, "topology_levels", "at least one level"),
        ({"topology_levels": "site > state"}, "topology_levels", "reserved"),
        ({"per_core": "-1"}, "per_core", "greater than or equal to 0"),
        ({"per_gib_ram": "lots"}, "per_gib_ram", "Enter a number"),
        ({"per_accelerator": "nvidia-a100 40"}, "per_accelerator", "line 1"),
        ({"per_trait": "nvme = -3"}, "per_trait", "not a price"),
        ({"cost_unit": ""}, "cost_unit", "required"),
        ({"preemption_notice_seconds": "-5"}, "preemption_notice_seconds", "greater than or equal to 0"),
        ({"provisioning_attempts": "99"}, "provisioning_attempts", "less than or equal to 20"),
        ({"minimum_cleaning": "shred"}, "minimum_cleaning", "Select a valid choice"),
        ({"reservation_max_hours": "0"}, "reservation_max_hours", "greater than or equal to 1"),
        ({"reservation_horizon_days": "5000"}, "reservation_horizon_days", "less than or equal to 1095"),
        ({"reservation_extend_window_hours": "-1"}, "reservation_extend_window_hours", "greater than or equal to 0"),
        ({"reservation_reminder_minutes": "soon"}, "reservation_reminder_minutes", "Enter a whole number"),
    ],
)
def test_bad_settings_are_refused_by_field(olga_client, change, field, words):
    before = FleetSettings.load()
    response = olga_client.post(reverse("hosts:settings"), _settings_data(**change))
    assert response.status_code == 400
    body = response.content.decode()
    assert f'id="id_{field}_error"' in body and words in body
    after = FleetSettings.load()
    assert after.topology_levels == before.topology_levels and after.cost_model == before.cost_model


def test_tenancy_settings_are_saved(olga_client):
    data = _settings_data(preemption_notice_seconds="300", minimum_cleaning="standard", provisioning_attempts="5")
    response = olga_client.post(reverse("hosts:settings"), data, follow=True)
    assert response.status_code == 200 and "Fleet settings saved" in response.content.decode()
    fleet = FleetSettings.load()
    assert (fleet.preemption_notice_seconds, fleet.minimum_cleaning, fleet.provisioning_attempts) == (
        300,
        "standard",
        5,
    )
    assert 'value="300"' in olga_client.get(reverse("hosts:settings")).content.decode()


def test_reservation_settings_are_saved_and_shown(olga_client):
    data = _settings_data(
        reservation_extend_window_hours="24",
        reservation_max_hours="72",
        reservation_horizon_days="30",
        reservation_reminder_minutes="15",
    )
    response = olga_client.post(reverse("hosts:settings"), data, follow=True)
    assert response.status_code == 200 and "Fleet settings saved" in response.content.decode()
    fleet = FleetSettings.load()
    assert (
        fleet.reservation_extend_window_hours,
        fleet.reservation_max_hours,
        fleet.reservation_horizon_days,
        fleet.reservation_reminder_minutes,
    ) == (24, 72, 30, 15)
    body = olga_client.get(reverse("hosts:settings")).content.decode()
    assert "Reservations" in body and 'name="reservation_max_hours"' in body and 'value="72"' in body


def test_removing_a_level_in_use_is_refused(olga_client):
    make_fleet(4, rules=False)  # located down to the rack
    response = olga_client.post(reverse("hosts:settings"), _settings_data(topology_levels="site > room > row"))
    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="id_topology_levels_error"' in body and "change their locations first" in body
    assert FleetSettings.load().topology_levels == ["site", "room", "row", "rack"]


def test_cost_preview_compares_now_and_new_weights(olga_client, django_assert_max_num_queries):
    make_fleet(48, rules=False)
    with django_assert_max_num_queries(6):
        response = olga_client.post(
            reverse("hosts:settings-preview"), _settings_data(per_core="2", per_gib_ram="0"), headers=HTMX
        )
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert body.count('class="bar-row"') <= 8 and body.count('class="bar-row"') >= 2
    cheapest = Host.objects.filter(hardware__isnull=False).order_by("cost_per_hour", "name").first()
    assert cheapest.name in body
    # Cores × 2 instead of cores + GiB: every inspected host gets cheaper here.
    assert '<td class="num change">+' not in body and '<td class="num change">-' in body
    assert 'style="width: 100.0%"' in body
    bad = olga_client.post(reverse("hosts:settings-preview"), _settings_data(per_core="x"), headers=HTMX)
    assert "Fix the weights marked above" in bad.content.decode()
