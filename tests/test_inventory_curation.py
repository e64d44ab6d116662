"""Classification, costs, trait labels on the BareMetalHosts, operator actions and fleet settings.

Hosts come from the lab management cluster through the real sync (``tests.test_host_sync.Lab``)
or from synthetic BareMetalHosts (``tests.inventory``); the trait labels are also written through
the real kubernetes client to the strict fake API server and checked against the BMH CRD.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from hosts import curation
from hosts.classify import Classifier, cost_lines, hosts_classify, trait_labels_wanted
from hosts.models import FleetSettings, Host, HostStateChange, TraitRule
from hosts.services import hosts_sync
from hosts.tasks import host_action_task
from teapot_portal.gateway.base import HostRecord
from teapot_portal.gateway.kube import KubernetesGateway
from teapot_portal.gateway.lab.gateway import LabGateway
from teapot_portal.gateway.lab.models import LabClock
from tests.fakekube import CrdRegistry, FakeKubeServer
from tests.fakekube.server import DEFAULT_CRD_DIR
from tests.inventory import bmh, make_fleet
from tests.test_host_sync import NS, Lab

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(db):
    clock = LabClock.get()
    return Lab(LabGateway(NS, clock), clock)


def traits(name: str) -> list[str]:
    return Host.objects.get(name=name).traits


# --------------------------------------------------------------------------- classification


def test_every_sync_classifies_and_a_rule_change_reclassifies_the_fleet(lab):
    TraitRule.objects.create(name="gpu-a100", rule='accelerator(type == "nvidia-a100")')
    TraitRule.objects.create(name="highmem", rule="ram_gib >= 512")
    lab.ready(("g1", "gpu-a100"), ("m1", "highmem"), ("n1", "general"))
    lab.resync()
    assert traits("g1") == ["gpu-a100", "highmem"]
    assert traits("m1") == ["highmem"]
    assert traits("n1") == []

    # The operator tightens highmem: every host is reclassified, not just new ones.
    curation.trait_rule_save(name="highmem", rule="ram_gib >= 2048", instance=TraitRule.objects.get(name="highmem"))
    assert hosts_classify() == 2
    assert (traits("g1"), traits("m1")) == (["gpu-a100"], [])
    curation.trait_rule_save(name="avx512", rule='flag("avx512f")')
    hosts_classify()
    assert all("avx512" in traits(n) for n in ("g1", "m1", "n1"))
    curation.trait_rule_delete(TraitRule.objects.get(name="avx512"))
    hosts_classify()
    assert not any("avx512" in traits(n) for n in ("g1", "m1", "n1"))
    assert hosts_classify() == 0  # nothing left to change: level-triggered


def test_a_host_not_yet_inspected_has_no_traits_and_gets_them_when_inspected():
    TraitRule.objects.create(name="any", rule="cores >= 0")
    hosts_sync(records=[HostRecord.from_object(bmh("x1", state="inspecting", rv=1))])
    assert traits("x1") == []
    hosts_sync(records=[HostRecord.from_object(bmh("x1", state="available", rv=2))])
    assert traits("x1") == ["any"]


def test_a_disabled_or_broken_stored_rule_is_skipped_not_fatal(caplog):
    make_fleet(4, rules=False)
    TraitRule.objects.create(name="off", rule="cores >= 0", enabled=False)
    TraitRule.objects.create(name="broken", rule="cores >>= 1")  # written around the service
    TraitRule.objects.create(name="all", rule="cores >= 0")
    hosts_classify()
    assert all(h.traits == ["all"] for h in Host.objects.all())
    assert "trait rule broken cannot be used" in caplog.text


def test_manual_traits_add_to_rule_traits_and_are_recorded():
    host = make_fleet(1)[0]
    assert host.traits == ["avx512", "nvme"]
    host = curation.host_update(host, actor="ops@teapot.example", manual_traits=["Infiniband", "infiniband", "lab"])
    assert host.manual_traits == ["infiniband", "lab"]
    assert host.traits == ["avx512", "infiniband", "lab", "nvme"]
    change = HostStateChange.objects.get(host=host, field="traits")
    assert (change.old, change.new, change.actor) == ("", "infiniband,lab", "ops@teapot.example")
    with pytest.raises(ValidationError) as err:
        curation.host_update(host, manual_traits=["no spaces"])
    assert "manual_traits" in err.value.message_dict


def test_trait_rule_save_refuses_bad_names_rules_and_duplicates():
    with pytest.raises(ValidationError) as err:
        curation.trait_rule_save(name="GPU!", rule="ram_gib >= ")
    assert set(err.value.message_dict) == {"name", "rule"}
    assert "at character" in err.value.message_dict["rule"][0]
    curation.trait_rule_save(name="big", rule="ram_gib >= 512")
    with pytest.raises(ValidationError, match="exists already"):
        curation.trait_rule_save(name="big", rule="ram_gib >= 1024")


def test_rule_preview_counts_matches_without_saving():
    make_fleet(16)
    preview = curation.trait_rule_preview('accelerator(type == "nvidia-a100")')
    assert preview["matches"] == 2 and preview["sample"] == ["h00003", "h00011"]
    assert preview["inspected"] == 14  # two of the 16 are still inspecting
    assert not TraitRule.objects.filter(rule__contains="a100", name="preview").exists()


# --------------------------------------------------------------------------- costs


def test_cost_follows_the_model_the_override_and_trait_premiums():
    host = make_fleet(4)[3]  # a gpu-a100 host: 128 threads, 1 TiB
    assert host.cost_per_hour == Decimal(128 + 1024)  # MAAS-like default: cores + GiB
    curation.fleet_settings_update(
        cost_model={
            "per_core": "0.5",
            "per_gib_ram": "0.1",
            "per_accelerator": {"nvidia-a100": "10"},
            "per_trait": {"highmem": "3"},
        },
        actor="ops@teapot.example",
    )
    hosts_classify()
    host.refresh_from_db()
    assert host.cost_per_hour == Decimal("64") + Decimal("102.4") + Decimal("80") + Decimal("3")
    lines = [text for text, _ in cost_lines(host).lines]
    assert lines == ["128 cores × 0.5", "1024 GiB RAM × 0.1", "8× nvidia-a100 × 10", "trait highmem"]
    host = curation.host_update(host, cost_override="42.5")
    assert host.cost_per_hour == Decimal("42.5") and cost_lines(host).overridden
    host = curation.host_update(host, cost_override=None)
    assert host.cost_per_hour == Decimal("249.4")
    with pytest.raises(ValidationError, match="cost per hour"):
        curation.host_update(host, cost_override="-1")


def test_fleet_settings_refuse_bad_weights_levels_and_levels_in_use():
    make_fleet(2)
    with pytest.raises(ValidationError) as err:
        curation.fleet_settings_update(cost_model={"per_core": "cheap"})
    assert "per_core" in err.value.message_dict["cost_model"][0]
    with pytest.raises(ValidationError, match="reserved"):
        curation.fleet_settings_update(topology_levels=["site", "state"])
    with pytest.raises(ValidationError, match="2 host"):
        curation.fleet_settings_update(topology_levels=["site", "room", "rack"])  # rows are in use
    with pytest.raises(ValidationError, match="lowercase"):
        curation.fleet_settings_update(topology_levels=["Site!"])
    settings = curation.fleet_settings_update(
        topology_levels=["site", "room", "row", "rack", "chassis"], cost_unit="EUR"
    )
    assert settings.topology_levels[-1] == "chassis" and FleetSettings.load().cost_unit == "EUR"


def test_location_is_checked_against_the_levels():
    host = make_fleet(1)[0]
    with pytest.raises(ValidationError, match="path from site"):
        curation.host_update(host, location={"rack": "r1"})
    host = curation.host_update(host, location={"site": "lab", "room": "c"})
    assert host.location == {"site": "lab", "room": "c"}


# --------------------------------------------------------------------------- labels on the BMHs


def test_trait_labels_are_written_to_the_lab_bmhs_and_follow_rule_changes(lab):
    TraitRule.objects.create(name="gpu-l40s", rule='accelerator(type == "nvidia-l40s")')
    lab.ready(("l1", "gpu-l40s"), ("n1", "general"))
    lab.resync()
    assert curation.trait_labels_apply(gateway=lab.gw) == {"written": 1, "failed": 0, "left": 0}
    assert lab.gw.get_host("l1").labels["teapot.io/trait-gpu-l40s"] == "true"
    assert Host.objects.get(name="l1").labels["teapot.io/trait-gpu-l40s"] == "true"  # mirrored at once
    assert curation.trait_labels_apply(gateway=lab.gw)["written"] == 0  # level-triggered

    curation.trait_rule_delete(TraitRule.objects.get(name="gpu-l40s"))
    hosts_classify()
    curation.trait_labels_apply(gateway=lab.gw)
    assert "teapot.io/trait-gpu-l40s" not in lab.gw.get_host("l1").labels


def test_trait_labels_through_the_kubernetes_client_are_valid_bmh_patches():
    registry = CrdRegistry.load_cached(DEFAULT_CRD_DIR)
    with FakeKubeServer() as server:
        server.put_object(bmh("k1", profile="gpu-a100"))
        gateway = KubernetesGateway(server.api_client(), NS, retries=1, backoff=0)
        records, _ = gateway.list_hosts()
        TraitRule.objects.create(name="gpu-a100", rule='accelerator(type == "nvidia-a100")')
        hosts_sync(records=records, complete=True)
        assert curation.trait_labels_apply(gateway=gateway)["written"] == 1
        stored = server.get_object("BareMetalHost", NS, "k1")
        assert stored["metadata"]["labels"] == {"teapot.io/trait-gpu-a100": "true"}
        assert registry.validate(stored) == []
        writes = server.writes
        assert curation.trait_labels_apply(gateway=gateway)["written"] == 0
        assert server.writes == writes


def test_trait_labels_wanted_is_the_exact_difference():
    labels = {"teapot.io/trait-old": "true", "teapot.io/trait-keep": "true", "other": "x"}
    assert trait_labels_wanted(["keep", "new"], labels) == {"teapot.io/trait-new": "true", "teapot.io/trait-old": None}


# --------------------------------------------------------------------------- actions


def test_power_inspect_and_retire_go_through_the_gateway_and_come_back_through_the_sync(lab):
    lab.ready(("p1", "general"))
    lab.resync()
    host = Host.objects.get(name="p1")
    assert host.online and curation.action_refusal(host, "power-on") == "the host is already powered on"
    assert curation.host_action_apply(name="p1", namespace=NS, action="power-off", gateway=lab.gw) == "done"
    assert not Host.objects.get(name="p1").online
    assert curation.host_action_apply(name="p1", namespace=NS, action="inspect", gateway=lab.gw) == "done"
    assert "inspect.metal3.io" in lab.gw.get_host("p1").annotations
    assert curation.host_action_apply(name="p1", namespace=NS, action="retire", gateway=lab.gw) == "retiring"
    for _ in range(6):
        lab.run(30)
    lab.resync()
    host = Host.objects.get(name="p1")
    assert host.retired_at is not None and host.state_label == "retired"
    assert curation.action_refusal(host, "power-on") == "the host is retired"


def test_actions_are_refused_with_reasons_and_queued_after_commit(django_capture_on_commit_callbacks):
    hosts = make_fleet(4, tenants={1: "physics"})
    in_use, free = hosts[1], hosts[0]
    with pytest.raises(ValidationError, match="in use by Metal3Machine/h00001-m"):
        curation.host_action(in_use, "retire")
    with pytest.raises(ValidationError, match="unknown action"):
        curation.host_action(free, "explode")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        curation.host_action(free, "retire", actor="ops@teapot.example")
    assert len(callbacks) == 1
    free.refresh_from_db()
    assert free.maintenance and free.maintenance_reason == "retiring"
    queued, refused = curation.hosts_action([free, in_use], "power-off")
    assert queued == 0 and len(refused) == 2


def test_the_action_task_ignores_bad_payloads():
    assert host_action_task.apply(args=[1, None, "power-on"]).get() == "invalid"
    assert host_action_task.apply(args=["nope", NS, "power-on"]).get() == "gone"


def test_maintenance_in_bulk_is_recorded_once_per_host():
    hosts = make_fleet(3)
    assert curation.hosts_set_maintenance(hosts, on=True, reason="PDU swap", actor="ops@teapot.example") == 3
    assert curation.hosts_set_maintenance(hosts, on=True, reason="again") == 0
    changes = HostStateChange.objects.filter(field="maintenance")
    assert changes.count() == 3 and {c.reason for c in changes} == {"PDU swap"}
    assert all(h.state_label == "maintenance" for h in Host.objects.all())


# --------------------------------------------------------------------------- admin


def test_admin_bulk_actions_report_what_was_refused(olga_client):
    make_fleet(3, tenants={2: "physics"})
    url = reverse("admin:hosts_host_changelist")
    ids = [str(pk) for pk in Host.objects.values_list("pk", flat=True)]
    response = olga_client.post(url, {"action": "maintenance_on", "_selected_action": ids}, follow=True)
    assert "In maintenance: 3 host(s)." in response.content.decode()
    response = olga_client.post(url, {"action": "action_retire", "_selected_action": ids}, follow=True)
    body = response.content.decode()
    assert "Retire queued: 2 host(s)." in body and "h00002: the host is in use" in body
    response = olga_client.post(url, {"action": "maintenance_off", "_selected_action": ids}, follow=True)
    assert "Out of maintenance: 3 host(s)." in response.content.decode()
    assert HostStateChange.objects.filter(field="maintenance", actor="olga@teapot.example").count() >= 3


def test_admin_host_edit_goes_through_the_service(olga_client, olga):
    host = make_fleet(1)[0]
    url = reverse("admin:hosts_host_change", args=[host.pk])
    page = olga_client.get(url)
    assert page.status_code == 200 and "cost explained" in page.content.decode().lower()
    data = {
        "maintenance": "on",
        "maintenance_reason": "disk 2",
        "notes": "",
        "location": '{"site": "lab", "room": "a"}',
        "manual_traits": "ib",
        "cost_override": "",
    }
    response = olga_client.post(url, data, follow=True)
    assert response.status_code == 200
    host.refresh_from_db()
    assert (
        host.maintenance and host.traits == ["avx512", "ib", "nvme"] and host.location == {"site": "lab", "room": "a"}
    )
    assert HostStateChange.objects.filter(host=host, field="maintenance", actor=olga.email).exists()


def test_admin_rules_and_settings(olga_client):
    make_fleet(2)
    response = olga_client.post(
        reverse("admin:hosts_traitrule_add"), {"name": "bad", "rule": "ram_gib >=", "description": "", "enabled": "on"}
    )
    assert response.status_code == 200 and "at character" in response.content.decode()
    response = olga_client.post(
        reverse("admin:hosts_traitrule_add"), {"name": "ok", "rule": "ram_gib > 1", "description": "", "enabled": "on"}
    )
    assert response.status_code == 302 and TraitRule.objects.filter(name="ok").exists()
    url = reverse("admin:hosts_fleetsettings_change", args=[1])
    tenancy = {
        "preemption_notice_seconds": "90",
        "minimum_cleaning": "key_erase",
        "provisioning_attempts": "2",
        "reservation_extend_window_hours": "12",
        "reservation_max_hours": "100",
        "reservation_horizon_days": "60",
        "reservation_reminder_minutes": "30",
    }
    response = olga_client.post(
        url, {"topology_levels": "site,rack", "cost_unit": "EUR", "cost_model": "{}", **tenancy}
    )
    assert response.status_code == 200 and "cannot hold" in response.content.decode()
    response = olga_client.post(
        url, {"topology_levels": "site,room,row,rack", "cost_unit": "EUR", "cost_model": "{}", **tenancy}
    )
    assert response.status_code == 302 and FleetSettings.load().cost_unit == "EUR"
    assert FleetSettings.load().preemption_notice_seconds == 90
    assert FleetSettings.load().reservation_max_hours == 100
    response = olga_client.post(
        url,
        {
            "topology_levels": "site,room,row,rack",
            "cost_unit": "EUR",
            "cost_model": "{}",
            **tenancy,
            "reservation_horizon_days": "4000",
        },
    )
    assert response.status_code == 200 and "between 1 and 1,095" in response.content.decode()
    assert FleetSettings.load().reservation_horizon_days == 60


def test_reservation_settings_service_checks_each_limit(olga):
    fleet = curation.fleet_settings_update(
        reservation_reminder_minutes=0, reservation_extend_window_hours=0, actor=olga
    )
    assert (fleet.reservation_reminder_minutes, fleet.reservation_extend_window_hours) == (0, 0)
    with pytest.raises(ValidationError) as caught:
        curation.fleet_settings_update(reservation_max_hours=0, reservation_reminder_minutes=20_000, actor=olga)
    assert set(caught.value.message_dict) == {"reservation_max_hours", "reservation_reminder_minutes"}
    assert FleetSettings.load().reservation_max_hours == 168


def test_classifier_uses_the_default_model_when_the_stored_one_is_unusable(caplog):
    FleetSettings.objects.filter(pk=1).update(cost_model={"per_core": "x"})
    assert Classifier.current().cost_model.per_core == 1
    assert "cost model cannot be used" in caplog.text
