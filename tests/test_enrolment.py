"""Enrolling hosts: validation with clear errors, all-or-nothing imports, credentials sealed
and wiped, the gateway creating the Secret and the BMH, the host mirrored at once."""

from __future__ import annotations

import base64

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from hosts.enrolment import host_enrol, host_enrolment_apply, hosts_import
from hosts.models import Host, HostEnrolment
from teapot_portal.gateway import kinds
from teapot_portal.gateway.lab.gateway import LabGateway

PASSWORD = "Enrol-Pa55-never-in-clear"
HEADER = "name,bmc_address,bmc_username,bmc_password,boot_mac,site,room,row,rack,key_erase\n"

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(settings):
    settings.TEAPOT_PROVISIONER = "lab"
    return LabGateway(settings.TEAPOT_NAMESPACE)


def _all_text_in_database() -> str:
    chunks = []
    with connection.cursor() as cursor:
        for table in ("hosts_hostenrolment", "hosts_host", "lab_labobject", "lab_labevent"):
            cursor.execute(f"SELECT t::text FROM {table} t")  # noqa: S608 (fixed table names)
            chunks.extend(row[0] for row in cursor.fetchall())
    return "\n".join(chunks)


def test_enrol_one_host_end_to_end(lab, olga):
    enrolment = host_enrol(
        name="r1-node-1",
        bmc_address="redfish://10.1.0.1/redfish/v1/Systems/1",
        bmc_username="admin",
        bmc_password=PASSWORD,
        boot_mac="52:54:00:10:00:01",
        location={"site": "ams", "room": "a", "row": "1", "rack": "r1"},
        notes="replaced PSU 2026-10",
        key_erase_capable=True,
        acting_user=olga,
    )
    assert enrolment.state == "pending"
    assert PASSWORD not in _all_text_in_database()  # sealed while it waits for the worker
    assert host_enrolment_apply(enrolment_id=enrolment.pk, gateway=lab) == "applied"
    enrolment.refresh_from_db()
    assert enrolment.sealed_credentials == "" and enrolment.applied_at
    host = Host.objects.get(name="r1-node-1")
    assert host.location == {"site": "ams", "room": "a", "row": "1", "rack": "r1"}
    assert host.key_erase_capable and host.notes.startswith("replaced")
    assert host.bmc_address.startswith("redfish://")
    secret = lab.get(kinds.SECRET, "r1-node-1-bmc-secret")
    assert base64.b64decode(secret["data"]["password"]).decode() == PASSWORD
    assert PASSWORD not in _all_text_in_database()
    assert base64.b64encode(PASSWORD.encode()).decode() not in _all_text_in_database()
    # Applying again is a no-op.
    assert host_enrolment_apply(enrolment_id=enrolment.pk, gateway=lab) == "applied"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"bmc_address": "10.0.0.1"}, "bmc_address"),
        ({"bmc_address": "http://10.0.0.1"}, "bmc_address"),
        ({"boot_mac": "52:54:00:10:00"}, "boot_mac"),
        ({"name": "Node_1"}, "name"),
        ({"bmc_password": ""}, "bmc_password"),
        ({"location": {"rack": "r1"}}, "location"),
    ],
)
def test_bad_input_is_refused_by_field_and_nothing_is_saved(change, field):
    values = {
        "name": "node-1",
        "bmc_address": "ipmi://10.0.0.1",
        "bmc_username": "admin",
        "bmc_password": "pw",
        "boot_mac": "52:54:00:10:00:01",
    }
    with pytest.raises(ValidationError) as error:
        host_enrol(**{**values, **change})
    assert field in error.value.message_dict
    assert not HostEnrolment.objects.exists()


def test_duplicates_against_the_fleet_and_pending_enrolments(lab):
    first = host_enrol(
        name="n1", bmc_address="ipmi://10.0.0.1", bmc_username="u", bmc_password="p", boot_mac="52:54:00:00:00:01"
    )
    with pytest.raises(ValidationError) as error:
        host_enrol(
            name="n1", bmc_address="ipmi://10.0.0.2", bmc_username="u", bmc_password="p", boot_mac="52:54:00:00:00:02"
        )
    assert "already enrolled" in error.value.message_dict["name"][0]
    host_enrolment_apply(enrolment_id=first.pk, gateway=lab)
    with pytest.raises(ValidationError) as error:
        host_enrol(
            name="n2", bmc_address="ipmi://10.0.0.2", bmc_username="u", bmc_password="p", boot_mac="52:54:00:00:00:01"
        )
    assert "already another host's boot MAC" in error.value.message_dict["boot_mac"][0]


def test_import_is_all_or_nothing_with_every_problem_on_its_line(lab):
    host_enrol(
        name="taken", bmc_address="ipmi://10.0.0.9", bmc_username="u", bmc_password="p", boot_mac="52:54:00:00:00:09"
    )
    text = HEADER + (
        "n1,ipmi://10.0.0.1,u,p,52:54:00:00:01:01,ams,a,1,r1,true\n"
        "taken,ipmi://10.0.0.2,u,p,52:54:00:00:01:02,ams,a,1,r1,\n"
        "n3,ipmi://10.0.0.3,u,p,52:54:00:00:00:09,ams,a,1,r2,\n"
    )
    outcome = hosts_import(text=text, fmt="csv")
    assert not outcome.ok and outcome.enrolments == []
    assert [str(p) for p in outcome.problems] == [
        "line 3: name: a host named 'taken' is already enrolled",
        "line 4: boot_mac: 52:54:00:00:00:09 is already another host's boot MAC",
    ]
    assert HostEnrolment.objects.count() == 1  # only the earlier one


def test_import_of_many_hosts(lab):
    lines = [
        f"h{i:03d},ipmi://10.2.{i // 250}.{i % 250 + 1},u,pw-{i},52:54:00:02:{i // 256:02x}:{i % 256:02x},ams,a,1,r{i % 4},"
        for i in range(300)
    ]
    outcome = hosts_import(text=HEADER + "\n".join(lines) + "\n", fmt="csv")
    assert outcome.ok, outcome.problems[:3]
    assert HostEnrolment.objects.filter(state="pending").count() == 300
    assert "pw-7," not in _all_text_in_database()


def test_a_refused_enrolment_fails_with_the_gateways_words(lab):
    enrolment = host_enrol(
        name="n1", bmc_address="ipmi://10.0.0.1", bmc_username="u", bmc_password="p", boot_mac="52:54:00:00:00:01"
    )
    HostEnrolment.objects.filter(pk=enrolment.pk).update(bmc_address="bogus")  # as if validation had changed
    assert host_enrolment_apply(enrolment_id=enrolment.pk, gateway=lab) == "failed"
    enrolment.refresh_from_db()
    assert "no scheme" in enrolment.error and enrolment.sealed_credentials == ""
    assert host_enrolment_apply(enrolment_id=999999, gateway=lab) == "gone"
