"""The Host mirror and its sync, with the lab management cluster as the source (no mocks).

Hosts are enrolled into the lab and the simulated clock is moved through registration and
inspection (``Timings(jitter=0)``: phase lengths are exact). Syncs between ticks pass the
lab's simulated time as ``now``, so the recorded history can be asserted to the second.
The query-count tests build large fleets as synthetic BareMetalHost dicts instead: the
sync only sees HostRecords, and enrolling 1,000 hosts through the lab would take minutes.
"""

from __future__ import annotations

import copy
import threading
import time
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import ProtectedError
from django.test.utils import CaptureQueriesContext

from hosts import rules
from hosts.models import Host, HostStateChange, SyncCursor
from hosts.services import FOLLOW_CURSOR, host_sync_event, hosts_follow, hosts_resync, hosts_sync
from hosts.tasks import LOCK_FOLLOW, LOCK_RESYNC, hosts_follow_task, hosts_resync_task, single_run
from teapot_portal.gateway.base import HostRecord, Invalid, WatchEvent
from teapot_portal.gateway.builders import HostEnrolment
from teapot_portal.gateway.lab import faults, profiles, watchlog
from teapot_portal.gateway.lab.controllers import Timings, tick
from teapot_portal.gateway.lab.gateway import LabGateway
from teapot_portal.gateway.lab.models import LabClock

NS = "teapot"
T = Timings(jitter=0.0)
READY_AFTER = 60 + 300 + 30  # register + inspect + prepare
ACCELERATORS = "teapot.io/accelerators"


class Lab:
    def __init__(self, gateway: LabGateway, clock: LabClock):
        self.gw, self.clock = gateway, clock

    def run(self, seconds: float = 0) -> int:
        if seconds:
            self.clock.advance(seconds)
        return tick(timings=T, strict=True)

    def enrol(self, name: str, profile: str | None = None, **fields) -> HostRecord:
        if profile is not None:
            profiles.lab_host_profile_set(name, profile)
        index = sum(name.encode()) % 250
        return self.gw.enrol_host(
            HostEnrolment(
                name=name,
                bmc_address=f"redfish+https://10.0.3.{index}/redfish/v1/Systems/1",
                bmc_username="admin",
                bmc_password="s3cret-pw",
                boot_mac=f"52:54:00:AB:CD:{index:02X}",
                **fields,
            )
        )

    def ready(self, *names_and_profiles: tuple[str, str | None]) -> None:
        for name, profile in names_and_profiles:
            self.enrol(name, profile)
        self.run()
        self.run(READY_AFTER)
        self.run()  # available: the power starts to follow spec.online …
        self.run(20)  # … and lands: the hosts are settled

    def resync(self):
        return hosts_resync(gateway=self.gw, now=self.clock.now())

    def follow(self):
        return hosts_follow(gateway=self.gw, timeout_seconds=0, now=self.clock.now())


@pytest.fixture
def clock(db):
    return LabClock.get()


@pytest.fixture
def lab(clock):
    return Lab(LabGateway(NS, clock), clock)


def history(name: str, field: str = "provisioning_state") -> list[tuple[str, str]]:
    return [(c.old, c.new) for c in HostStateChange.objects.filter(host__name=name, field=field).order_by("at", "id")]


def counts(result) -> tuple[int, int, int, int, int]:
    return (result.created, result.updated, result.retired, result.unchanged, result.failed)


# --------------------------------------------------------------------------- new, changed, vanished


def test_resync_creates_hosts_with_hardware_and_accelerators(lab):
    lab.ready(("gpu-01", "gpu-a100"), ("gen-01", "general"), ("fpga-01", "fpga-u250"))
    result = lab.resync()
    assert counts(result) == (3, 0, 0, 0, 0)
    assert result.resource_version and result.seconds > 0

    gpu = Host.objects.get(name="gpu-01")
    assert (gpu.namespace, gpu.provisioning_state, gpu.operational_status, gpu.state_label) == (
        NS,
        "available",
        "OK",
        "available",
    )
    assert gpu.uid == lab.gw.get_host("gpu-01").uid and gpu.retired_at is None
    assert gpu.bmc_address.startswith("redfish+https://10.0.3.") and "s3cret" not in str(gpu.__dict__)
    assert gpu.boot_mac == gpu.boot_mac.lower() and gpu.boot_mac.startswith("52:54:00:ab:cd:")
    assert (gpu.architecture, gpu.online, gpu.automated_cleaning_mode) == ("x86_64", True, "metadata")
    assert (gpu.cpu_count, gpu.ram_mib, gpu.ram_gib, gpu.disk_count) == (128, 1024 * 1024, 1024, 6)
    assert gpu.disk_total_bytes == (2 * 1920 + 4 * 3840) * 10**9 and gpu.nic_max_speed_gbps == 200
    assert "avx512f" in gpu.cpu_flags and gpu.cpu_model.startswith("AMD EPYC 7763")
    assert gpu.accelerators == [{"type": "nvidia-a100", "count": 8}] and gpu.accelerator_count == 8
    assert gpu.accelerators_label == "8× nvidia-a100"
    assert gpu.disks[0]["type"] == "NVME" and gpu.nics[0]["mac"] == gpu.boot_mac
    assert (gpu.system_vendor, gpu.firmware["bios_version"]) == ("Supermicro", "2.19.1")
    assert gpu.hardware == lab.gw.get_host("gpu-01").hardware and gpu.hardware_warnings == []
    assert gpu.first_seen_at == gpu.last_synced_at == lab.clock.now()
    assert Host.objects.get(name="fpga-01").accelerators == [{"type": "xilinx-u250", "count": 2}]
    assert Host.objects.get(name="gen-01").accelerator_count == 0
    # Filterable columns: what host selection will ask for.
    assert set(
        Host.objects.filter(cpu_flags__contains=["avx512f"], ram_mib__gte=512 * 1024).values_list("name", flat=True)
    ) == {"gpu-01"}

    # The columns are what the classification rules (hosts.rules) read.
    facts = rules.facts_from_hardware(
        cpu_count=gpu.cpu_count,
        cpu_mhz=gpu.cpu_mhz,
        cpu_model=gpu.cpu_model,
        cpu_flags=gpu.cpu_flags,
        arch=gpu.architecture,
        ram_mib=gpu.ram_mib,
        disks=gpu.disks,
        nics=gpu.nics,
        accelerators=gpu.accelerators,
        vendor=gpu.system_vendor,
        product=gpu.system_product,
        key_erase=gpu.key_erase_capable,
    )
    for rule in ('accelerator(type == "nvidia-a100") >= 8', 'disk(type == "NVME" and model ~ "samsung") >= 6'):
        assert rules.compile_rule(rule).matches(facts), rule

    # A second resync with nothing new changes nothing and records nothing.
    before = HostStateChange.objects.count()
    assert counts(lab.resync()) == (0, 0, 0, 3, 0)
    assert HostStateChange.objects.count() == before


def test_state_changes_are_recorded_in_order_with_their_times(lab):
    lab.enrol("n1", "general")
    lab.resync()  # seen before the controllers ran: provisioning state ""
    start = lab.clock.now()
    steps = [(0, "registering"), (60, "inspecting"), (300, "preparing"), (30, "available")]
    for seconds, state in steps:
        lab.run(seconds)
        lab.resync()
        assert Host.objects.get(name="n1").provisioning_state == state
    changes = list(HostStateChange.objects.filter(host__name="n1", field="provisioning_state").order_by("at", "id"))
    assert [(c.old, c.new) for c in changes] == [
        ("", "registering"),
        ("registering", "inspecting"),
        ("inspecting", "preparing"),
        ("preparing", "available"),
    ]
    assert [(c.at - start).total_seconds() for c in changes] == [0, 60, 360, 390]
    # The BMH's status.lastUpdated of each change: when the controller made it.
    assert [c.reported_at for c in changes] == [c.at for c in changes]
    # Power follows the inspection ramdisk: on while inspecting, off again after.
    assert history("n1", "powered_on") == [("false", "true"), ("true", "false")]
    assert history("n1", "online") == [("false", "true")]  # a new host's "before" is the empty value


def test_a_changed_host_is_updated_and_its_change_recorded(lab):
    lab.ready(("n1", None), ("n2", None))
    lab.resync()
    recorded = HostStateChange.objects.filter(host__name="n2").count()
    lab.gw.set_host_online("n1", False)
    lab.gw.patch_host_metadata("n2", labels={"rack": "r7"})
    result = lab.resync()
    assert counts(result) == (0, 2, 0, 0, 0)
    n1, n2 = Host.objects.get(name="n1"), Host.objects.get(name="n2")
    assert not n1.online and history("n1", "online")[-1] == ("true", "false")
    assert n2.labels["rack"] == "r7"
    assert HostStateChange.objects.filter(host=n2).count() == recorded  # labels are not tracked state


def test_a_host_deleted_from_the_lab_is_retired_with_its_history_kept(lab):
    lab.ready(("n1", None), ("n2", None))
    lab.resync()
    kept = HostStateChange.objects.filter(host__name="n1").count()
    lab.gw.delete_host("n1")
    lab.run()
    lab.run(20 + 5)  # powering off, deregistering
    assert [h.name for h in lab.gw.list_hosts()[0]] == ["n2"]
    assert counts(lab.resync()) == (0, 0, 1, 1, 0)

    n1 = Host.objects.get(name="n1")
    assert n1.retired_at == lab.clock.now() and n1.state_label == "retired"
    assert history("n1", "retired") == [("false", "true")]
    assert HostStateChange.objects.filter(host=n1).count() == kept + 1
    assert Host.objects.get(name="n2").retired_at is None
    # Nothing deletes the history: not the ORM, not a cascade from the host.
    with pytest.raises(ProtectedError):
        n1.delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        HostStateChange.objects.filter(host=n1).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        HostStateChange.objects.filter(host=n1).update(new="x")

    # Enrolled again: the same inventory entry comes back, un-retired.
    lab.enrol("n1")
    assert counts(lab.resync()) == (0, 1, 0, 1, 0)
    n1.refresh_from_db()
    assert n1.retired_at is None and history("n1", "retired") == [("false", "true"), ("true", "false")]
    assert n1.provisioning_state == "" and n1.uid == lab.gw.get_host("n1").uid


def test_an_erroring_host_records_its_error_and_recovery(lab):
    faults.inject("inspection_error", host="n1", count=1)
    lab.enrol("n1")
    lab.run()
    lab.run(60)
    lab.resync()
    lab.run(300)  # inspection fails
    lab.resync()
    host = Host.objects.get(name="n1")
    assert (host.provisioning_state, host.operational_status, host.error_type) == (
        "inspecting",
        "error",
        "inspection error",
    )
    assert host.error_count == 1 and "Introspection failed" in host.error_message
    assert host.state_label == "error: inspection error"
    assert history("n1", "operational_status") == [("", "OK"), ("OK", "error")]
    assert history("n1", "error_type") == [("", "inspection error")]
    lab.run(10 + 300)  # backoff, then a successful inspection
    lab.resync()
    assert history("n1", "operational_status")[-1] == ("error", "OK")
    assert history("n1", "error_type")[-1] == ("inspection error", "")
    assert Host.objects.get(name="n1").provisioning_state == "preparing"


# --------------------------------------------------------------------------- failures stay per host


def test_a_bad_accelerator_annotation_on_one_host_does_not_stop_the_others(lab):
    lab.ready(("g1", "gpu-a100"), ("g2", "gpu-a100"), ("g3", "gpu-l40s"))
    lab.gw.patch_host_metadata("g2", annotations={ACCELERATORS: "eight A100s"})
    result = lab.resync()
    assert counts(result) == (3, 0, 0, 0, 0)
    g2 = Host.objects.get(name="g2")
    assert g2.accelerators == [] and g2.accelerator_count == 0
    assert g2.hardware_warnings == ["teapot.io/accelerators ignored: not valid JSON"]
    assert g2.cpu_count == 128 and g2.provisioning_state == "available"
    assert Host.objects.get(name="g1").accelerator_count == 8
    assert Host.objects.get(name="g3").accelerators == [{"type": "nvidia-l40s", "count": 4}]
    # Fixed by the operator: picked up at the next sync.
    lab.gw.patch_host_metadata("g2", annotations={ACCELERATORS: '[{"type":"nvidia-a100","count":8}]'})
    assert counts(lab.resync()) == (0, 1, 0, 2, 0)
    g2.refresh_from_db()
    assert g2.accelerator_count == 8 and g2.hardware_warnings == []


def bmh(name: str, *, state: str = "available", rv: int = 1, hardware: dict | None = None, **extra) -> dict:
    """A synthetic BareMetalHost as the API server would return it."""
    status = {
        "operationalStatus": "OK",
        "errorMessage": "",
        "errorCount": 0,
        "poweredOn": False,
        "provisioning": {"ID": "", "state": state},
        "lastUpdated": "2026-01-01T00:00:00Z",
    }
    if hardware is not False:
        status["hardware"] = hardware if hardware is not None else profiles.build("general", name)["hardware"]
    obj = {
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": str(rv)},
        "spec": {
            "online": True,
            "bmc": {"address": f"ipmi://10.1.0.1/{name}", "credentialsName": f"{name}-bmc-secret"},
            "bootMACAddress": "52:54:00:00:00:01",
        },
        "status": status,
    }
    for key, value in extra.items():
        obj["metadata"][key] = value
    return obj


def records(objs: list[dict]) -> list[HostRecord]:
    return [HostRecord.from_object(obj) for obj in objs]


@pytest.mark.django_db
def test_unreadable_hardware_fails_that_host_only_and_keeps_its_state():
    broken = profiles.build("general", "bad")["hardware"]
    broken["cpu"]["count"] = "many"
    result = hosts_sync(records=records([bmh("ok-1"), bmh("bad", hardware=broken), bmh("ok-2")]), complete=True)
    assert counts(result) == (2, 0, 0, 0, 1)
    bad = Host.objects.get(name="bad")
    assert bad.provisioning_state == "available" and bad.cpu_count == 0  # state mirrored, hardware not guessed
    assert bad.sync_error == "hardware not read: cpu.count: expected a whole number, got 'many'"
    assert Host.objects.get(name="ok-1").cpu_count == 64

    # Same broken data again: nothing new is written, but it still counts as failing.
    again = hosts_sync(records=records([bmh("ok-1"), bmh("bad", rv=2, hardware=broken), bmh("ok-2")]), complete=True)
    assert counts(again) == (0, 0, 0, 2, 1)
    assert HostStateChange.objects.filter(host__name="bad").count() == 3  # online, operational, state
    fixed = hosts_sync(records=records([bmh("ok-1"), bmh("bad", rv=3), bmh("ok-2")]), complete=True)
    assert counts(fixed) == (0, 1, 0, 2, 0)
    bad.refresh_from_db()
    assert bad.cpu_count == 64 and bad.sync_error == ""
    # Later the hardware breaks: the last good hardware stays.
    hosts_sync(records=records([bmh("bad", rv=4, hardware=broken, labels={"x": "y"})]))
    bad.refresh_from_db()
    assert bad.cpu_count == 64 and bad.labels == {"x": "y"} and bad.sync_error.startswith("hardware not read")


@pytest.mark.django_db
def test_a_host_the_database_refuses_does_not_stop_the_others():
    # PostgreSQL's jsonb cannot hold a NUL character: that host's write fails, the others land.
    poisoned = bmh("poisoned", labels={"note": "a\x00b"})
    result = hosts_sync(records=records([bmh("ok-1"), poisoned, bmh("ok-2")]), complete=True)
    assert counts(result) == (2, 0, 0, 0, 1)
    assert set(Host.objects.values_list("name", flat=True)) == {"ok-1", "ok-2"}
    assert HostStateChange.objects.filter(host__name="ok-1").exists()


@pytest.mark.django_db
def test_a_stale_list_neither_rolls_back_nor_retires_what_the_watch_saw():
    hosts_sync(records=records([bmh("n1", rv=10, state="provisioning")]), complete=True, resource_version="10")
    # The watch then sees n1 provisioned and a new host n2.
    hosts_sync(records=records([bmh("n1", rv=12, state="provisioned"), bmh("n2", rv=13)]))
    # A list taken at 11 (before both) arrives late.
    stale = hosts_sync(records=records([bmh("n1", rv=10, state="provisioning")]), complete=True, resource_version="11")
    assert counts(stale) == (0, 0, 0, 1, 0)
    assert Host.objects.get(name="n1").provisioning_state == "provisioned"
    assert Host.objects.get(name="n2").retired_at is None
    # A newer list without n2 does retire it.
    later = hosts_sync(records=records([bmh("n1", rv=12, state="provisioned")]), complete=True, resource_version="20")
    assert counts(later) == (0, 0, 1, 1, 0)


# --------------------------------------------------------------------------- follow (watch)


def test_follow_applies_a_relist_then_watch_events_and_resumes_from_its_cursor(lab):
    lab.enrol("n1", "gpu-l40s")
    first = lab.follow()  # no cursor: RELIST
    assert counts(first) == (1, 0, 0, 0, 0)
    cursor = SyncCursor.objects.get(key=FOLLOW_CURSOR).resource_version
    assert cursor == first.resource_version

    lab.run()
    start = lab.clock.now()
    lab.run(READY_AFTER)  # one tick, four transitions: the watch sees every one
    events = lab.follow()
    assert events.updated >= 4 and events.failed == 0
    assert history("n1") == [
        ("", "registering"),
        ("registering", "inspecting"),
        ("inspecting", "preparing"),
        ("preparing", "available"),
    ]
    reported = [
        c.reported_at
        for c in HostStateChange.objects.filter(host__name="n1", field="provisioning_state").order_by("at", "id")
    ]
    assert [(r - start).total_seconds() for r in reported] == [0, 60, 360, 390]
    host = Host.objects.get(name="n1")
    assert host.accelerators == [{"type": "nvidia-l40s", "count": 4}]
    assert int(SyncCursor.objects.get(key=FOLLOW_CURSOR).resource_version) > int(cursor)

    # Resumed from the cursor: nothing new, nothing written.
    before = HostStateChange.objects.count()
    assert counts(lab.follow()) == (0, 0, 0, 0, 0)
    assert HostStateChange.objects.count() == before

    # Deleted: the DELETED event retires it.
    lab.gw.delete_host("n1")
    lab.run()
    lab.run(25)
    assert lab.follow().retired == 1
    assert Host.objects.get(name="n1").retired_at is not None
    assert history("n1")[-2:] == [
        ("available", "powering off before delete"),
        ("powering off before delete", "deleting"),
    ]

    # The cursor fell out of the retained log: the follower relists (a complete sync) and goes on.
    lab.enrol("n2")
    watchlog.prune_all()
    relisted = lab.follow()
    assert counts(relisted) == (1, 0, 0, 0, 0)
    assert Host.objects.get(name="n2").retired_at is None


def test_an_unusable_cursor_is_forgotten_so_the_next_run_relists(lab):
    lab.enrol("n1")
    SyncCursor.objects.create(key=FOLLOW_CURSOR, resource_version="not-a-version")
    with pytest.raises(Invalid):
        lab.follow()
    assert not SyncCursor.objects.filter(key=FOLLOW_CURSOR).exists()
    assert lab.follow().created == 1


@pytest.mark.django_db
def test_a_deleted_event_for_an_unknown_host_records_it_retired():
    event = WatchEvent("DELETED", "5", HostRecord.from_object(bmh("ghost", rv=5)))
    assert host_sync_event(event=event).retired == 1
    ghost = Host.objects.get(name="ghost")
    assert ghost.retired_at is not None and ("false", "true") in history("ghost", "retired")
    assert host_sync_event(event=WatchEvent("BOOKMARK", "6")).resource_version == "6"


# --------------------------------------------------------------------------- operator fields


def test_operator_fields_survive_a_sync(lab):
    lab.ready(("n1", "general"))
    lab.resync()
    Host.objects.filter(name="n1").update(
        maintenance=True,
        maintenance_reason="fan 3 noisy",
        notes="ticket OPS-12",
        location={"rack": "r1"},
        key_erase_capable=True,
        key_erase_seconds=60,
    )
    lab.gw.set_host_online("n1", False)
    lab.run()
    lab.run(20)
    lab.resync()
    host = Host.objects.get(name="n1")
    assert not host.online and not host.powered_on
    assert (host.maintenance, host.maintenance_reason, host.notes, host.location) == (
        True,
        "fan 3 noisy",
        "ticket OPS-12",
        {"rack": "r1"},
    )
    assert host.key_erase_capable and host.key_erase_seconds == 60 and host.state_label == "maintenance"
    assert host.handoff_estimate_seconds == 60
    Host.objects.filter(name="n1").update(key_erase_capable=False)
    assert Host.objects.get(name="n1").handoff_estimate_seconds == 600  # metadata cleaning, by default
    assert Host.objects.get(name="n1").full_clean_estimate_seconds > 600  # from its two NVMe disks

    # The key-erase annotation, when a host carries one, is what the cluster says.
    lab.gw.patch_host_metadata("n1", annotations={"teapot.io/key-erase": "false"})
    lab.resync()
    assert not Host.objects.get(name="n1").key_erase_capable
    lab.gw.patch_host_metadata("n1", annotations={"teapot.io/key-erase": "true"})
    assert lab.resync().updated == 1
    assert Host.objects.get(name="n1").key_erase_capable


# --------------------------------------------------------------------------- query counts


def fleet(size: int, rv: int, *, state: str = "available", drop: int = 0) -> list[HostRecord]:
    template = bmh("template", state=state, rv=rv)
    objs = []
    for index in range(size - drop):
        obj = copy.deepcopy(template)
        obj["metadata"].update(name=f"h{index:05d}", uid=f"uid-{index}", resourceVersion=str(rv * 100_000 + index))
        objs.append(obj)
    return records(objs)


def measure(size: int) -> tuple[list[int], list[float]]:
    """Queries and seconds of each kind of resync on a fleet of ``size`` hosts."""
    phases = [
        {"rv": 1},  # all new
        {"rv": 1},  # nothing changed (same resourceVersions)
        {"rv": 2, "state": "provisioning"},  # every host changed state
        {"rv": 3, "state": "provisioning"},  # new resourceVersions, nothing we mirror changed
        {"rv": 3, "state": "provisioning", "drop": size // 2},  # half the fleet vanished
    ]
    queries, seconds = [], []
    for phase in phases:
        batch = fleet(size, **phase)
        with CaptureQueriesContext(connection) as captured:
            result = hosts_sync(records=batch, complete=True, resource_version=str(phase["rv"] * 100_000 + size))
        assert result.failed == 0
        queries.append(len(captured.captured_queries))
        seconds.append(round(result.seconds, 3))
    return queries, seconds


@pytest.mark.django_db
def test_resync_query_count_does_not_grow_with_the_fleet(django_assert_max_num_queries):
    with transaction.atomic():
        small, _ = measure(10)
        transaction.set_rollback(True)
    assert not Host.objects.exists()
    with django_assert_max_num_queries(5 * 14):
        large, seconds = measure(1000)
    assert small == large, (small, large)
    # 8 for the sync itself, 4 more when hardware arrives: the rules, the cost model, the hosts
    # to classify and one UPDATE of their traits and costs.
    assert max(large) <= 12, large
    assert Host.objects.filter(retired_at__isnull=True).count() == 500
    assert HostStateChange.objects.filter(field="provisioning_state", new="provisioning").count() == 1000
    print(f"\nresync of 1,000 synthetic hosts: queries per phase {large}, seconds {seconds}")


def test_resync_through_the_lab_costs_the_same_for_more_hosts(lab):
    def resync_queries(size: int) -> list[int]:
        with transaction.atomic():  # each size from an empty inventory: rolled back after
            lab.ready(*((f"n{i}", None) for i in range(size)))
            measured = []
            for _ in range(2):  # all new, then nothing changed
                with CaptureQueriesContext(connection) as captured:
                    lab.resync()
                measured.append(len(captured.captured_queries))
            transaction.set_rollback(True)
        return measured

    assert resync_queries(2) == resync_queries(8)


# --------------------------------------------------------------------------- tasks and the admin


def _lock_held(lock_id: int) -> bool:
    from hosts.services import LOCK_CLASS

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s AND granted",
            [LOCK_CLASS, lock_id],
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_a_second_concurrent_task_run_returns_at_once(settings):
    settings.TEAPOT_PROVISIONER = "lab"
    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def follow_for_a_while() -> None:
        try:
            results["first"] = hosts_follow_task(timeout_seconds=2)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    first = threading.Thread(target=follow_for_a_while)
    first.start()
    deadline = time.monotonic() + 10
    while not _lock_held(LOCK_FOLLOW) and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    assert hosts_follow_task(timeout_seconds=0) == {"skipped": True}
    assert time.monotonic() - started < 0.5
    first.join()
    assert not errors, errors
    assert results["first"]["resource_version"] and "skipped" not in results["first"]
    assert hosts_follow_task(timeout_seconds=0).get("skipped") is None  # free again

    holder_ready, release = threading.Event(), threading.Event()

    def hold_resync_lock() -> None:
        try:
            with single_run(LOCK_RESYNC) as mine:
                assert mine
                holder_ready.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_resync_lock)
    holder.start()
    assert holder_ready.wait(10)
    assert hosts_resync_task() == {"skipped": True}
    release.set()
    holder.join()
    assert "created" in hosts_resync_task()


def test_the_admin_lists_hosts_and_keeps_history_read_only(lab, olga_client, django_assert_max_num_queries):
    lab.ready(*((f"n{i}", "gpu-a100" if i % 2 else None) for i in range(6)))
    lab.resync()
    # Session, user, two counts, the page of hosts, one DISTINCT per choice filter, the trait
    # filter's rule names and manual traits: none per host.
    with django_assert_max_num_queries(12):
        page = olga_client.get("/admin/hosts/host/?lifecycle=active")
    assert page.status_code == 200 and "8× nvidia-a100" in page.content.decode()
    host = Host.objects.get(name="n1")
    detail = olga_client.get(f"/admin/hosts/host/{host.pk}/change/")
    assert (
        detail.status_code == 200
        and "available" in detail.content.decode()
        and "all changes" in detail.content.decode()
    )
    assert olga_client.get(f"/admin/hosts/host/{host.pk}/delete/").status_code == 403
    assert olga_client.get("/admin/hosts/host/add/").status_code == 403
    changes = olga_client.get(f"/admin/hosts/hoststatechange/?host__id__exact={host.pk}")
    assert changes.status_code == 200
    change = HostStateChange.objects.filter(host=host).first()
    assert olga_client.post(f"/admin/hosts/hoststatechange/{change.pk}/delete/").status_code == 403
    # Operators edit their fields only; the mirror is not in the form.
    saved = olga_client.post(
        f"/admin/hosts/host/{host.pk}/change/",
        {"maintenance": "on", "maintenance_reason": "PSU", "notes": "", "location": "{}", "provisioning_state": "x"},
    )
    assert saved.status_code == 302
    host.refresh_from_db()
    assert host.maintenance and host.maintenance_reason == "PSU" and host.provisioning_state == "available"


def test_state_times_use_the_given_clock(lab):
    lab.enrol("n1")
    later = lab.clock.now() + timedelta(hours=1)
    hosts_resync(gateway=lab.gw, now=later)
    assert HostStateChange.objects.filter(host__name="n1").first().at == later
