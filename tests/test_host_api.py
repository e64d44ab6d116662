"""The inventory's REST API: two representations (tenant member, operator), the shared filters,
operator writes through the services, one error shape, the schema, query counts and secrets."""

from __future__ import annotations

import base64
import json

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hosts.enrolment import host_enrolment_apply
from hosts.models import FleetSettings, Host, HostEnrolment, HostStateChange, TraitRule
from tests.conftest import api_client, run_manage
from tests.inventory import PASSWORD, make_fleet
from tests.test_api import _resolve as _resolve_refs

pytestmark = pytest.mark.django_db

# What a tenant member must never see, at any depth of a host's representation.
FORBIDDEN_FOR_TENANTS = {
    "bmc_address",
    "boot_mac",
    "mac",
    "serial",
    "consumer",
    "error_message",
    "notes",
    "labels",
    "tenant",
    "cluster",
    "namespace",
    "uid",
    "maintenance_reason",
    "cost_lines",
}
HEADER = "name,bmc_address,bmc_username,bmc_password,boot_mac,site,room,row,rack,key_erase\n"


@pytest.fixture
def fleet(db):
    """24 hosts: h00003 allocated to physics, h00011 to genomics (both gpu-a100, provisioned)."""
    return make_fleet(24, tenants={3: "physics", 11: "genomics"})


def _keys(node) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


def _names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [h["name"] for h in response.json()["results"]]


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    return body["error"]


# --------------------------------------------------------------------------- representations


def test_tenant_member_sees_the_tenant_representation_only(alice_api, fleet):
    body = alice_api.get("/api/v1/hosts/").json()
    assert body["count"] == 24
    for host in body["results"]:
        assert host["representation"] == "tenant"
        assert not _keys(host) & FORBIDDEN_FOR_TENANTS, _keys(host) & FORBIDDEN_FOR_TENANTS
    text = json.dumps(body)
    for host in fleet:
        assert host.boot_mac not in text
        assert not host.system_serial or host.system_serial not in text
    assert "redfish://" not in text
    first = body["results"][0]
    assert set(first["hardware"]) == {"cpu", "ram_gib", "disks", "nics", "accelerators"}
    assert set(first["hardware"]["nics"][0]) == {"speed_gbps"}
    assert set(first["hardware"]["disks"][0]) == {"type", "size_bytes", "rotational"}
    assert first["cost_unit"] == "units" and first["location"]["site"] == "lab"


def test_tenant_member_never_sees_allocations(alice_api, fleet):
    for response in (alice_api.get("/api/v1/hosts/"), alice_api.get("/api/v1/hosts/h00003/")):
        text = response.content.decode()
        assert response.status_code == 200
        assert "physics" not in text and "genomics" not in text
        assert "teapot.io/tenant" not in text and "teapot.io/cluster" not in text
        assert "h00003-m" not in text  # the consumer
    detail = alice_api.get("/api/v1/hosts/h00003/").json()
    assert detail["available"] is False and detail["state"] == "provisioned"


def test_tenant_member_cannot_filter_or_search_by_what_they_may_not_see(alice_api, fleet):
    error = _error(alice_api.get("/api/v1/hosts/", {"tenant": "physics"}), 400)
    assert "tenant" in error["details"]
    assert _names(alice_api.get("/api/v1/hosts/", {"q": fleet[0].boot_mac})) == []
    assert _names(alice_api.get("/api/v1/hosts/", {"q": "h0000"})) == [f"h0000{i}" for i in range(10)]


def test_operator_sees_everything_but_credentials(olga_api, fleet):
    host = olga_api.get("/api/v1/hosts/h00003/").json()
    assert host["representation"] == "operator"
    assert host["bmc_address"].startswith("redfish://") and host["boot_mac"] == fleet[3].boot_mac
    assert host["tenant"] == "physics" and host["cluster"] == "physics-c1"
    assert host["labels"]["teapot.io/tenant"] == "physics"
    assert host["consumer"] == "Metal3Machine/h00003-m"
    assert host["hardware"]["nics"][0]["mac"]
    assert host["cost_lines"] and {"text", "amount"} == set(host["cost_lines"][0])
    assert host["provisioning_state"] == "provisioned" and host["available"] is False
    assert host["metadata_clean_seconds"] == 600 and host["full_clean_seconds"] >= 600
    text = json.dumps(host).lower()
    assert "password" not in text and "credentials" not in text
    assert _keys(host) >= FORBIDDEN_FOR_TENANTS - {"mac"}


def test_available_means_free_now(olga_api, fleet):
    hosts = {h["name"]: h for h in olga_api.get("/api/v1/hosts/", {"limit": 100}).json()["results"]}
    assert hosts["h00000"]["available"] is True
    assert hosts["h00005"]["available"] is False  # inspecting
    Host.objects.filter(name="h00000").update(maintenance=True)
    assert olga_api.get("/api/v1/hosts/h00000/").json()["available"] is False


# --------------------------------------------------------------------------- filters


def test_filter_by_state(alice_api, fleet):
    assert _names(alice_api.get("/api/v1/hosts/", {"state": "provisioned"})) == ["h00003", "h00011", "h00019"]
    both = _names(alice_api.get("/api/v1/hosts/?state=provisioned&state=inspecting"))
    assert both == ["h00003", "h00005", "h00011", "h00013", "h00019", "h00021"]
    error = _error(alice_api.get("/api/v1/hosts/", {"state": "sleeping"}), 400)
    assert "state" in error["details"]


def test_filter_by_one_and_several_traits(alice_api, fleet):
    assert _names(alice_api.get("/api/v1/hosts/", {"trait": "gpu-a100"})) == ["h00003", "h00011", "h00019"]
    nvme_a100 = {h.name for h in fleet if {"gpu-a100", "nvme"} <= set(h.traits)}
    assert set(_names(alice_api.get("/api/v1/hosts/?trait=gpu-a100&trait=nvme"))) == nvme_a100
    assert set(_names(alice_api.get("/api/v1/hosts/?trait=gpu-a100,nvme"))) == nvme_a100
    assert _names(alice_api.get("/api/v1/hosts/", {"trait": "no-such-trait"})) == []


def test_filter_by_location_string_and_per_level(alice_api, fleet):
    in_rack = [h.name for h in fleet if h.location["rack"] == "a1-2"]
    assert _names(alice_api.get("/api/v1/hosts/", {"location": "room=a,rack=a1-2"})) == in_rack
    assert _names(alice_api.get("/api/v1/hosts/", {"room": "a", "rack": "a1-2"})) == in_rack
    assert len(_names(alice_api.get("/api/v1/hosts/", {"row": "2"}))) == 8


@pytest.mark.parametrize("location", ["floor=3", "room", "room="])
def test_bad_location_is_400(alice_api, fleet, location):
    error = _error(alice_api.get("/api/v1/hosts/", {"location": location}), 400)
    assert "location" in error["details"]


def test_filter_by_tenant(olga_api, fleet):
    assert _names(olga_api.get("/api/v1/hosts/", {"tenant": "physics"})) == ["h00003"]
    unallocated = _names(olga_api.get("/api/v1/hosts/", {"tenant": "none", "limit": 100}))
    assert len(unallocated) == 22 and "h00003" not in unallocated and "h00011" not in unallocated


def test_filter_by_maintenance_accelerator_and_q(olga_api, fleet):
    Host.objects.filter(name__in=["h00001", "h00002"]).update(maintenance=True)
    assert _names(olga_api.get("/api/v1/hosts/", {"maintenance": "true"})) == ["h00001", "h00002"]
    assert len(_names(olga_api.get("/api/v1/hosts/", {"maintenance": "false", "limit": 100}))) == 22
    assert _names(olga_api.get("/api/v1/hosts/", {"accelerator": "nvidia-l40s"})) == ["h00004", "h00012", "h00020"]
    assert _names(olga_api.get("/api/v1/hosts/", {"q": "h0002"})) == ["h00020", "h00021", "h00022", "h00023"]
    assert _names(olga_api.get("/api/v1/hosts/", {"q": fleet[7].boot_mac.upper()})) == ["h00007"]


def test_filter_by_lifecycle(alice_api, fleet):
    Host.objects.filter(name="h00000").update(retired_at=timezone.now())
    assert "h00000" not in _names(alice_api.get("/api/v1/hosts/", {"limit": 100}))
    assert _names(alice_api.get("/api/v1/hosts/", {"lifecycle": "retired"})) == ["h00000"]
    assert len(_names(alice_api.get("/api/v1/hosts/", {"lifecycle": "all", "limit": 100}))) == 24
    assert _names(alice_api.get("/api/v1/hosts/", {"state": "retired"})) == ["h00000"]
    _error(alice_api.get("/api/v1/hosts/", {"lifecycle": "zombie"}), 400)


def test_ordering(alice_api, fleet):
    by_cost = alice_api.get("/api/v1/hosts/", {"ordering": "-cost", "limit": 100}).json()["results"]
    costs = [float(h["cost_per_hour"]) for h in by_cost]
    assert costs == sorted(costs, reverse=True)
    assert _names(alice_api.get("/api/v1/hosts/", {"ordering": "-name", "limit": 2})) == ["h00023", "h00022"]
    _error(alice_api.get("/api/v1/hosts/", {"ordering": "bmc_address"}), 400)


def test_pagination(alice_api, fleet):
    body = alice_api.get("/api/v1/hosts/", {"limit": 5, "offset": 5}).json()
    assert body["count"] == 24 and [h["name"] for h in body["results"]] == [f"h0000{i}" for i in range(5, 10)]
    assert "offset=10" in body["next"] and body["previous"]


# --------------------------------------------------------------------------- detail and history


def test_detail_by_name_and_404(alice_api, fleet):
    assert alice_api.get("/api/v1/hosts/h00007/").json()["name"] == "h00007"
    error = _error(alice_api.get("/api/v1/hosts/nope/"), 404)
    assert error["code"] == "not_found" and "nope" in error["message"]


def test_detail_of_a_retired_host(alice_api, fleet):
    Host.objects.filter(name="h00000").update(retired_at=timezone.now())
    assert alice_api.get("/api/v1/hosts/h00000/").json()["state"] == "retired"


def test_anonymous_is_refused_and_hosts_cannot_be_replaced_or_deleted(olga_api, fleet):
    assert api_client().get("/api/v1/hosts/").status_code in (401, 403)
    assert olga_api.put("/api/v1/hosts/h00000/", {}, format="json").status_code == 405
    assert olga_api.delete("/api/v1/hosts/h00000/").status_code == 405


def test_history_for_operators(olga, olga_api, alice_api, fleet):
    olga_api.patch("/api/v1/hosts/h00000/", {"maintenance": True, "maintenance_reason": "PSU"}, format="json")
    olga_api.patch("/api/v1/hosts/h00000/", {"maintenance": False}, format="json")
    body = olga_api.get("/api/v1/hosts/h00000/history/").json()
    maintenance = [c for c in body["results"] if c["field"] == "maintenance"]
    assert [(c["old"], c["new"]) for c in maintenance] == [("true", "false"), ("false", "true")]  # newest first
    assert maintenance[1]["actor"] == olga.email and maintenance[1]["reason"] == "PSU"
    assert set(maintenance[0]) == {"at", "field", "old", "new", "reported_at", "actor", "reason"}
    assert olga_api.get("/api/v1/hosts/h00000/history/", {"limit": 1}).json()["count"] == body["count"]
    _error(alice_api.get("/api/v1/hosts/h00000/history/"), 403)
    _error(olga_api.get("/api/v1/hosts/nope/history/"), 404)


# --------------------------------------------------------------------------- enrolment and import


def _enrolment(name: str = "r1-node-1", mac: str = "52:54:00:10:00:01", **extra) -> dict:
    return {
        "name": name,
        "bmc_address": "redfish://10.1.0.1/redfish/v1/Systems/1",
        "bmc_username": "admin",
        "bmc_password": PASSWORD,
        "boot_mac": mac,
        "location": {"site": "ams", "room": "a"},
        "key_erase_capable": True,
        "notes": "new rack",
        **extra,
    }


def test_enrol_a_host(olga, olga_api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = olga_api.post("/api/v1/hosts/", _enrolment(), format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["name"] == "r1-node-1" and body["state"] == "pending" and body["requested_by"] == olga.email
    assert "bmc_password" not in body and PASSWORD not in response.content.decode()
    assert response["Location"].endswith(f"/api/v1/host-enrolments/{body['id']}/")
    assert len(callbacks) == 1
    enrolment = HostEnrolment.objects.get(pk=body["id"])
    assert enrolment.location == {"site": "ams", "room": "a"} and enrolment.key_erase_capable
    for field in HostEnrolment._meta.concrete_fields:
        value = str(getattr(enrolment, field.attname))
        assert PASSWORD not in value and base64.b64encode(PASSWORD.encode()).decode() not in value, field.name
    assert enrolment.sealed_credentials
    assert olga_api.get(response["Location"]).json()["id"] == body["id"]


def test_enrol_errors_are_per_field(olga_api):
    bad = _enrolment(name="Not_A_Name", mac="zz", location={"rack": "r1"})
    details = _error(olga_api.post("/api/v1/hosts/", bad, format="json"), 400)["details"]
    assert {"name", "boot_mac", "location"} <= set(details)
    missing = {k: v for k, v in _enrolment().items() if k != "bmc_password"}
    assert "bmc_password" in _error(olga_api.post("/api/v1/hosts/", missing, format="json"), 400)["details"]
    typo = _enrolment(key_erase="yes")
    assert "key_erase" in _error(olga_api.post("/api/v1/hosts/", typo, format="json"), 400)["details"]
    wrong_type = _enrolment(location=["a"], key_erase_capable="maybe")
    assert {"location", "key_erase_capable"} <= set(
        _error(olga_api.post("/api/v1/hosts/", wrong_type, format="json"), 400)["details"]
    )
    assert not HostEnrolment.objects.exists()


def test_enrol_a_host_twice_is_refused(olga_api):
    assert olga_api.post("/api/v1/hosts/", _enrolment(), format="json").status_code == 202
    again = _error(olga_api.post("/api/v1/hosts/", _enrolment(), format="json"), 400)
    assert {"name", "boot_mac"} <= set(again["details"])


def test_tenant_member_cannot_enrol_import_or_list_enrolments(alice_api):
    error = _error(alice_api.post("/api/v1/hosts/", _enrolment(), format="json"), 403)
    assert error["code"] == "permission_denied"
    _error(alice_api.post("/api/v1/hosts/import/", {"format": "csv", "text": HEADER}, format="json"), 403)
    _error(alice_api.get("/api/v1/host-enrolments/"), 403)
    assert not HostEnrolment.objects.exists()


def _csv(*rows: str) -> str:
    return HEADER + "".join(f"{row}\n" for row in rows)


def test_import_csv(olga_api):
    text = _csv(
        f"n-1,redfish://10.1.0.1/x,admin,{PASSWORD},52:54:00:20:00:01,ams,a,1,r1,true",
        f"n-2,redfish://10.1.0.2/x,admin,{PASSWORD},52:54:00:20:00:02,ams,a,1,r1,false",
    )
    response = olga_api.post("/api/v1/hosts/import/", {"format": "csv", "text": text}, format="json")
    assert response.status_code == 202, response.content
    assert [e["name"] for e in response.json()["enrolments"]] == ["n-1", "n-2"]
    assert PASSWORD not in response.content.decode()
    assert HostEnrolment.objects.count() == 2


def test_import_yaml_as_an_uploaded_file(olga_api):
    text = yaml.safe_dump(
        {
            "hosts": [
                {
                    "name": "y-1",
                    "bmc_address": "ipmi://10.1.0.9",
                    "bmc_username": "admin",
                    "bmc_password": PASSWORD,
                    "boot_mac": "52:54:00:20:00:09",
                    "site": "ams",
                }
            ]
        }
    )
    upload = SimpleUploadedFile("fleet.yaml", text.encode(), content_type="application/yaml")
    response = olga_api.post("/api/v1/hosts/import/", {"file": upload}, format="multipart")
    assert response.status_code == 202, response.content
    assert HostEnrolment.objects.get().location == {"site": "ams"}


def test_import_is_all_or_nothing_with_line_numbers(olga_api):
    text = _csv(
        f"n-1,redfish://10.1.0.1/x,admin,{PASSWORD},52:54:00:20:00:01,ams,a,1,r1,true",
        f"n-2,redfish://10.1.0.2/x,admin,{PASSWORD},not-a-mac,ams,a,1,r1,false",
        f"n-1,redfish://10.1.0.3/x,admin,{PASSWORD},52:54:00:20:00:03,ams,,1,r1,false",
    )
    response = olga_api.post("/api/v1/hosts/import/", {"format": "csv", "text": text}, format="json")
    problems = _error(response, 400)["details"]["problems"]
    assert {(p["line"], p["field"]) for p in problems} >= {(3, "boot_mac"), (4, "name"), (4, "location")}
    assert all(isinstance(p["line"], int) for p in problems)
    assert PASSWORD not in response.content.decode()
    assert not HostEnrolment.objects.exists()


def test_import_needs_text_or_file_and_a_format(olga_api):
    assert "format" in _error(olga_api.post("/api/v1/hosts/import/", {"text": HEADER}, format="json"), 400)["details"]
    assert "text" in _error(olga_api.post("/api/v1/hosts/import/", {"format": "csv"}, format="json"), 400)["details"]
    bad = {"format": "xml", "text": "<hosts/>"}
    assert "format" in _error(olga_api.post("/api/v1/hosts/import/", bad, format="json"), 400)["details"]
    empty = _error(olga_api.post("/api/v1/hosts/import/", {"format": "csv", "text": HEADER}, format="json"), 400)
    assert empty["details"]["problems"][0]["message"] == "the file has no hosts"


def test_enrolments_list_filter_and_detail(olga_api):
    olga_api.post("/api/v1/hosts/", _enrolment(), format="json")
    olga_api.post("/api/v1/hosts/", _enrolment("r1-node-2", "52:54:00:10:00:02"), format="json")
    HostEnrolment.objects.filter(name="r1-node-2").update(state="failed", error="BMC unreachable")
    assert olga_api.get("/api/v1/host-enrolments/").json()["count"] == 2
    failed = olga_api.get("/api/v1/host-enrolments/", {"state": "failed"}).json()["results"]
    assert [(e["name"], e["error"]) for e in failed] == [("r1-node-2", "BMC unreachable")]
    _error(olga_api.get("/api/v1/host-enrolments/", {"state": "lost"}), 400)
    _error(olga_api.get("/api/v1/host-enrolments/999999/"), 404)


# --------------------------------------------------------------------------- curation


def test_operator_curates_a_host(olga, olga_api, fleet):
    response = olga_api.patch(
        "/api/v1/hosts/h00000/",
        {
            "maintenance": True,
            "maintenance_reason": "fan",
            "notes": "loud",
            "location": {"site": "lab", "room": "b"},
            "manual_traits": ["Quiet"],
            "cost_override": "2.5",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["maintenance"] is True and body["notes"] == "loud" and body["location"] == {"site": "lab", "room": "b"}
    assert body["manual_traits"] == ["quiet"] and "quiet" in body["traits"]
    assert body["cost_override"] == "2.5000" and body["cost_per_hour"] == "2.5000"
    change = HostStateChange.objects.get(host__name="h00000", field="maintenance")
    assert (change.actor, change.new, change.reason) == (olga.email, "true", "fan")
    cleared = olga_api.patch("/api/v1/hosts/h00000/", {"cost_override": None}, format="json").json()
    assert cleared["cost_override"] is None


def test_curation_errors(olga_api, alice_api, fleet):
    bad_location = _error(olga_api.patch("/api/v1/hosts/h00000/", {"location": {"rack": "r1"}}, format="json"), 400)
    assert "location" in bad_location["details"]
    read_only = _error(
        olga_api.patch("/api/v1/hosts/h00000/", {"bmc_address": "x", "traits": ["a"]}, format="json"), 400
    )
    assert read_only["details"] == {"bmc_address": ["This field is read-only."], "traits": ["This field is read-only."]}
    unknown = _error(olga_api.patch("/api/v1/hosts/h00000/", {"maintainance": True}, format="json"), 400)
    assert "maintainance" in unknown["details"]
    assert (
        "manual_traits"
        in _error(olga_api.patch("/api/v1/hosts/h00000/", {"manual_traits": ["Not OK!"]}, format="json"), 400)[
            "details"
        ]
    )
    assert (
        "cost_override"
        in _error(olga_api.patch("/api/v1/hosts/h00000/", {"cost_override": -1}, format="json"), 400)["details"]
    )
    assert (
        "maintenance"
        in _error(olga_api.patch("/api/v1/hosts/h00000/", {"maintenance": "perhaps"}, format="json"), 400)["details"]
    )
    bad_json = olga_api.patch("/api/v1/hosts/h00000/", "{not json", content_type="application/json")
    assert _error(bad_json, 400)["code"] == "parse_error"
    _error(olga_api.patch("/api/v1/hosts/h00000/", [1, 2], format="json"), 400)
    _error(alice_api.patch("/api/v1/hosts/h00000/", {"notes": "mine"}, format="json"), 403)
    _error(olga_api.patch("/api/v1/hosts/nope/", {"notes": "x"}, format="json"), 404)
    assert Host.objects.get(name="h00000").notes == ""
    assert not HostStateChange.objects.filter(field="maintenance").exists()


def test_an_action_is_queued_after_the_commit(olga_api, fleet, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = olga_api.post("/api/v1/hosts/h00000/actions/", {"action": "power-on"}, format="json")
    assert response.status_code == 202 and response.json() == {"queued": "power-on"}
    assert len(callbacks) == 1


def test_retiring_puts_the_host_in_maintenance(olga_api, fleet, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        body = {"action": "retire", "reason": "end of life"}
        assert olga_api.post("/api/v1/hosts/h00001/actions/", body, format="json").status_code == 202
    assert callbacks
    host = Host.objects.get(name="h00001")
    assert host.maintenance and host.maintenance_reason == "end of life"


def test_refused_actions(olga_api, alice_api, fleet, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        in_use = _error(olga_api.post("/api/v1/hosts/h00003/actions/", {"action": "power-off"}, format="json"), 409)
        assert in_use["code"] == "conflict" and "in use by Metal3Machine/h00003-m" in in_use["message"]
        inspecting = _error(olga_api.post("/api/v1/hosts/h00005/actions/", {"action": "inspect"}, format="json"), 409)
        assert "inspecting" in inspecting["message"]
        unknown = _error(olga_api.post("/api/v1/hosts/h00000/actions/", {"action": "reboot"}, format="json"), 400)
        assert "action" in unknown["details"]
        _error(alice_api.post("/api/v1/hosts/h00000/actions/", {"action": "power-on"}, format="json"), 403)
    assert callbacks == []


# --------------------------------------------------------------------------- trait rules


def test_trait_rules_crud(olga_api, alice_api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        created = olga_api.post("/api/v1/trait-rules/", {"name": "big", "rule": "ram_gib >= 512"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["enabled"] is True and len(callbacks) == 1  # the fleet is reclassified after the commit
    assert [r["name"] for r in alice_api.get("/api/v1/trait-rules/").json()["results"]] == ["big"]
    assert alice_api.get("/api/v1/trait-rules/big/").json()["rule"] == "ram_gib >= 512"

    patched = olga_api.patch("/api/v1/trait-rules/big/", {"enabled": False}, format="json").json()
    assert patched["enabled"] is False and patched["rule"] == "ram_gib >= 512"
    replaced = olga_api.put(
        "/api/v1/trait-rules/big/", {"name": "bigger", "rule": "ram_gib >= 1024", "description": "x"}, format="json"
    ).json()
    assert (replaced["name"], replaced["enabled"], replaced["description"]) == ("bigger", True, "x")
    assert olga_api.delete("/api/v1/trait-rules/bigger/").status_code == 204
    assert not TraitRule.objects.exists()
    _error(olga_api.get("/api/v1/trait-rules/bigger/"), 404)


def test_trait_rule_errors(olga_api, alice_api):
    _error(alice_api.post("/api/v1/trait-rules/", {"name": "big", "rule": "ram_gib >= 512"}, format="json"), 403)
    bad = _error(olga_api.post("/api/v1/trait-rules/", {"name": "Big Box", "rule": "ram_gib >="}, format="json"), 400)
    assert {"name", "rule"} <= set(bad["details"]) and "at character" in bad["details"]["rule"][0]
    olga_api.post("/api/v1/trait-rules/", {"name": "big", "rule": "ram_gib >= 512"}, format="json")
    clash = _error(olga_api.post("/api/v1/trait-rules/", {"name": "big", "rule": "cores > 1"}, format="json"), 400)
    assert "exists already" in clash["details"]["name"][0]
    _error(alice_api.delete("/api/v1/trait-rules/big/"), 403)
    read_only = _error(olga_api.patch("/api/v1/trait-rules/big/", {"created_at": "now"}, format="json"), 400)
    assert "created_at" in read_only["details"]


def test_trait_rule_preview(olga_api, alice_api, fleet):
    body = olga_api.post("/api/v1/trait-rules/preview/", {"rule": 'accelerator(type == "nvidia-a100")'}, format="json")
    assert body.json() == {"matches": 3, "inspected": 21, "sample": ["h00003", "h00011", "h00019"]}
    error = _error(olga_api.post("/api/v1/trait-rules/preview/", {"rule": "ram_gib >= "}, format="json"), 400)
    assert error["details"]["rule"] and error["details"]["position"] == 10
    _error(alice_api.post("/api/v1/trait-rules/preview/", {"rule": "ram_gib > 1"}, format="json"), 403)


# --------------------------------------------------------------------------- fleet settings


def test_fleet_settings_read_by_everyone_changed_by_operators(olga, olga_api, alice_api, fleet):
    settings = alice_api.get("/api/v1/fleet-settings/").json()
    assert settings["topology_levels"] == ["site", "room", "row", "rack"] and settings["cost_unit"] == "units"
    assert settings["cost_model"]["per_core"] == "1"
    _error(alice_api.patch("/api/v1/fleet-settings/", {"cost_unit": "EUR"}, format="json"), 403)
    changed = olga_api.patch(
        "/api/v1/fleet-settings/", {"cost_unit": "EUR", "cost_model": {"per_core": "2"}}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["cost_unit"] == "EUR"
    tenancy = olga_api.patch(
        "/api/v1/fleet-settings/", {"preemption_notice_seconds": 60, "minimum_cleaning": "standard"}, format="json"
    )
    assert tenancy.status_code == 200 and tenancy.json()["preemption_notice_seconds"] == 60
    assert tenancy.json()["minimum_cleaning"] == "standard" and tenancy.json()["provisioning_attempts"] == 3
    _error(olga_api.patch("/api/v1/fleet-settings/", {"minimum_cleaning": "shred"}, format="json"), 400)
    assert FleetSettings.load().updated_by == olga.email
    assert alice_api.get("/api/v1/hosts/h00000/").json()["cost_unit"] == "EUR"


def test_reservation_settings_are_read_and_changed_through_the_api(olga_api, alice_api, fleet):
    settings = alice_api.get("/api/v1/fleet-settings/").json()
    assert (settings["reservation_max_hours"], settings["reservation_reminder_minutes"]) == (168, 60)
    changed = olga_api.patch(
        "/api/v1/fleet-settings/",
        {"reservation_max_hours": 24, "reservation_horizon_days": 14, "reservation_extend_window_hours": 6},
        format="json",
    )
    assert changed.status_code == 200
    body = changed.json()
    assert (body["reservation_max_hours"], body["reservation_horizon_days"]) == (24, 14)
    assert body["reservation_extend_window_hours"] == 6 and body["reservation_reminder_minutes"] == 60
    _error(olga_api.patch("/api/v1/fleet-settings/", {"reservation_max_hours": 0}, format="json"), 400)
    _error(alice_api.patch("/api/v1/fleet-settings/", {"reservation_max_hours": 48}, format="json"), 403)
    assert FleetSettings.load().reservation_max_hours == 24


def test_fleet_settings_refusals(olga_api, fleet):
    fewer = _error(olga_api.patch("/api/v1/fleet-settings/", {"topology_levels": ["site", "room"]}, format="json"), 400)
    assert "h00000" in fewer["details"]["topology_levels"][0]
    reserved = _error(
        olga_api.patch("/api/v1/fleet-settings/", {"topology_levels": ["site", "state"]}, format="json"), 400
    )
    assert "reserved" in reserved["details"]["topology_levels"][0]
    weights = _error(olga_api.patch("/api/v1/fleet-settings/", {"cost_model": {"per_gpu": 1}}, format="json"), 400)
    assert "per_gpu" in weights["details"]["cost_model"][0]
    unknown = _error(olga_api.patch("/api/v1/fleet-settings/", {"updated_at": "x", "levels": []}, format="json"), 400)
    assert set(unknown["details"]) == {"updated_at", "levels"}
    assert FleetSettings.load().topology_levels == ["site", "room", "row", "rack"]


# --------------------------------------------------------------------------- query counts


def _list_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/hosts/", {"trait": "nvme", "ordering": "-cost", "limit": 100})
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize("who", ["alice", "olga"])
def test_host_list_queries_do_not_grow_with_the_fleet(who, request):
    client = api_client(request.getfixturevalue(who))
    make_fleet(10, prefix="a")
    at_10 = _list_queries(client)
    make_fleet(990, prefix="b")
    assert Host.objects.count() == 1000
    at_1000 = _list_queries(client)
    assert at_10 == at_1000 <= 15  # measured: 3 (fleet settings, count, page)


def test_host_detail_queries(olga_api, fleet):
    with CaptureQueriesContext(connection) as queries:
        assert olga_api.get("/api/v1/hosts/h00003/").status_code == 200
    assert len(queries) <= 3  # the host, the fleet settings


# --------------------------------------------------------------------------- secrets


@pytest.fixture
def lab(settings):
    from teapot_portal.gateway.lab.gateway import LabGateway

    settings.TEAPOT_PROVISIONER = "lab"
    return LabGateway(settings.TEAPOT_NAMESPACE)


def test_the_bmc_password_is_in_no_response(olga_api, alice_api, lab):
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    responses = []
    enrolled = olga_api.post("/api/v1/hosts/", _enrolment(), format="json")
    responses.append(enrolled)
    responses.append(olga_api.post("/api/v1/hosts/", _enrolment(mac="bad"), format="json"))  # an error
    responses.append(olga_api.post("/api/v1/hosts/", _enrolment(), format="json"))  # a duplicate
    responses.append(olga_api.get("/api/v1/host-enrolments/"))
    responses.append(olga_api.get(enrolled["Location"]))
    assert host_enrolment_apply(enrolment_id=enrolled.json()["id"], gateway=lab) == "applied"
    responses.append(olga_api.get(enrolled["Location"]))
    olga_api.patch("/api/v1/hosts/r1-node-1/", {"maintenance": True}, format="json")
    for client in (olga_api, alice_api):
        responses.append(client.get("/api/v1/hosts/"))
        responses.append(client.get("/api/v1/hosts/r1-node-1/"))
    responses.append(olga_api.get("/api/v1/hosts/r1-node-1/history/"))
    good = _csv(f"n-1,redfish://10.1.0.1/x,admin,{PASSWORD},52:54:00:20:00:01,ams,a,1,r1,true")
    responses.append(olga_api.post("/api/v1/hosts/import/", {"format": "csv", "text": good}, format="json"))
    bad = _csv(f"n-2,redfish://10.1.0.1/x,admin,{PASSWORD},52:54:00:20:00:01,ams,a,1,r1,maybe")
    responses.append(olga_api.post("/api/v1/hosts/import/", {"format": "csv", "text": bad}, format="json"))
    yaml_bad = f"- name: n-3\n  bmc_password: {PASSWORD}\n  : [\n"
    responses.append(olga_api.post("/api/v1/hosts/import/", {"format": "yaml", "text": yaml_bad}, format="json"))

    assert [r.status_code for r in responses] == [202, 400, 400, 200, 200, 200, 200, 200, 200, 200, 200, 202, 400, 400]
    for response in responses:
        text = response.content.decode() + json.dumps(dict(response.headers))
        assert PASSWORD not in text and encoded not in text, response.request["PATH_INFO"]


# --------------------------------------------------------------------------- the schema


def test_schema_generates_without_warnings(tmp_path):
    result = run_manage("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert result.returncode == 0, result.stderr
    schema = yaml.safe_load((tmp_path / "schema.yaml").read_text())
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {
        "hosts_list",
        "host_retrieve",
        "host_enrol",
        "hosts_import",
        "host_update",
        "host_action",
        "host_history",
        "host_enrolments_list",
        "host_enrolment_retrieve",
        "trait_rules_list",
        "trait_rule_create",
        "trait_rule_preview",
        "fleet_settings_retrieve",
        "fleet_settings_update",
    } <= operations
    enrol = schema["components"]["schemas"]["HostEnrolRequest"]["properties"]
    assert enrol["bmc_password"]["writeOnly"] is True
    assert "bmc_password" not in schema["components"]["schemas"]["HostEnrolment"]["properties"]


def _resolve(node, components):
    """A component as JSON Schema: references resolved, OpenAPI 3.0's ``nullable`` as a null type."""
    return _nullable(_resolve_refs(node, components))


def _nullable(node):
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


def test_host_responses_match_the_schema(alice_client, olga, fleet):
    import jsonschema

    schema = yaml.safe_load(alice_client.get("/api/v1/schema/").content)
    components = schema["components"]["schemas"]
    paginated = _resolve(components["PaginatedHostList"], components)
    jsonschema.validate(alice_client.get("/api/v1/hosts/").json(), paginated)
    operator = api_client(olga)
    jsonschema.validate(operator.get("/api/v1/hosts/").json(), paginated)
    jsonschema.validate(operator.get("/api/v1/hosts/h00003/").json(), _resolve(components["HostOperator"], components))
    history = _resolve(components["PaginatedHostStateChangeList"], components)
    operator.patch("/api/v1/hosts/h00003/", {"maintenance": True}, format="json")
    jsonschema.validate(operator.get("/api/v1/hosts/h00003/history/").json(), history)
    fleet_settings = _resolve(components["FleetSettings"], components)
    jsonschema.validate(alice_client.get("/api/v1/fleet-settings/").json(), fleet_settings)


# --------------------------------------------------------------------------- bad input is never a 500


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("get", "/api/v1/hosts/?q=%00", None),
        ("get", "/api/v1/hosts/?room=%00&rack=%00", None),
        ("get", "/api/v1/hosts/?ordering=name,,-,", None),
        ("get", "/api/v1/hosts/%00/", None),
        ("get", "/api/v1/trait-rules/%00/", None),
        ("get", "/api/v1/host-enrolments/abc/", None),
        ("patch", "/api/v1/hosts/h00000/", {"notes": "a\u0000b"}),
        ("patch", "/api/v1/hosts/h00000/", {"location": {"site": {"nested": 1}}}),
        ("patch", "/api/v1/hosts/h00000/", {"cost_override": "NaN"}),
        ("patch", "/api/v1/hosts/h00000/", {"manual_traits": "gpu"}),
        ("post", "/api/v1/hosts/", "just a string"),
        ("post", "/api/v1/hosts/", {"name": ["x"], "location": "room=a"}),
        ("post", "/api/v1/hosts/h00000/actions/", {"action": None}),
        ("post", "/api/v1/hosts/import/", {"format": "yaml", "text": "hosts: {a: [1, 2"}),
        ("post", "/api/v1/hosts/import/", {"format": "yaml", "text": "- 1\n- [2]\n"}),
        ("post", "/api/v1/hosts/import/", {"format": "csv", "text": "name\n\u0000"}),
        ("post", "/api/v1/trait-rules/", {"name": 7, "rule": ["ram_gib > 1"]}),
        ("post", "/api/v1/trait-rules/preview/", {"rule": "(((("}),
        ("patch", "/api/v1/fleet-settings/", {"cost_model": {"per_accelerator": [1]}, "topology_levels": "rack"}),
        ("patch", "/api/v1/fleet-settings/", {"cost_model": {"per_core": {"a": 1}}, "cost_unit": ""}),
    ],
)
def test_bad_input_is_a_400_or_404_with_the_error_shape(olga_api, fleet, method, url, body):
    response = (
        getattr(olga_api, method)(url, body, format="json") if body is not None else getattr(olga_api, method)(url)
    )
    assert response.status_code in (400, 404), response.content
    if "%00/" not in url and "/abc/" not in url:  # a URL no route matches: Django's own 404
        assert set(response.json()) == {"error"}


def test_paging_and_an_empty_patch_are_lenient(olga_api, fleet):
    assert olga_api.get("/api/v1/hosts/?limit=abc&offset=-4").json()["count"] == 24  # DRF's defaults
    assert olga_api.patch("/api/v1/hosts/h00000/").json()["name"] == "h00000"  # nothing to change


def test_bad_upload_is_a_400(olga_api):
    binary = SimpleUploadedFile("fleet.csv", b"\xff\xfe\x00\x01", content_type="text/csv")
    assert (
        "file" in _error(olga_api.post("/api/v1/hosts/import/", {"file": binary}, format="multipart"), 400)["details"]
    )
    nul = SimpleUploadedFile("fleet.csv", HEADER.encode() + b"a\x00b\n", content_type="text/csv")
    assert "file" in _error(olga_api.post("/api/v1/hosts/import/", {"file": nul}, format="multipart"), 400)["details"]
    unnamed = SimpleUploadedFile("fleet", HEADER.encode(), content_type="text/plain")
    assert (
        "format"
        in _error(olga_api.post("/api/v1/hosts/import/", {"file": unnamed}, format="multipart"), 400)["details"]
    )


@pytest.mark.parametrize(
    "url", ["/api/v1/hosts/", "/api/v1/hosts/h00000/", "/api/v1/trait-rules/", "/api/v1/fleet-settings/"]
)
def test_options_describe_the_endpoints(olga_api, alice_api, fleet, url):
    for client in (olga_api, alice_api):
        assert client.options(url).status_code == 200
