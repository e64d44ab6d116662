from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tenants.models import User


@pytest.mark.django_db
def test_seed_demo_is_idempotent(settings):
    settings.TEAPOT_DEMO = True
    call_command("seed_demo")
    call_command("seed_demo")
    assert User.objects.filter(email="ops@teapot.example", is_staff=True).count() == 1
    alice = User.objects.get(email="alice@physics.example")
    assert alice.check_password("teapot-demo") and not alice.is_staff


@pytest.mark.django_db
def test_seed_demo_refuses_outside_demo_mode(settings):
    settings.TEAPOT_DEMO = False
    with pytest.raises(CommandError, match="TEAPOT_DEMO=1"):
        call_command("seed_demo")
    assert not User.objects.exists()


@pytest.mark.django_db
def test_seed_demo_enrols_the_demo_fleet_through_the_enrolment_service(settings):
    from hosts.demo import demo_hosts
    from hosts.enrolment import host_enrolment_apply
    from hosts.models import Host, HostEnrolment
    from teapot_portal.gateway.lab.gateway import LabGateway

    settings.TEAPOT_DEMO = True
    settings.TEAPOT_PROVISIONER = "lab"
    call_command("seed_demo")
    pending = HostEnrolment.objects.filter(state="pending")
    assert pending.count() == len(demo_hosts()) == 96
    call_command("seed_demo")  # idempotent
    assert HostEnrolment.objects.count() == 96
    gateway = LabGateway(settings.TEAPOT_NAMESPACE)
    for enrolment in pending.order_by("name")[:3]:
        assert host_enrolment_apply(enrolment_id=enrolment.pk, gateway=gateway) == "applied"
    hosts = Host.objects.order_by("name")
    assert hosts.count() == 3
    assert {h.location["site"] for h in hosts} == {"lab"} and all(h.location.get("rack") for h in hosts)
    profiles = {spec["profile"] for spec in demo_hosts()}
    assert profiles == {"general", "highmem", "gpu-a100", "gpu-l40s", "fpga-u250", "storage-dense"}
    assert sum(spec["key_erase"] for spec in demo_hosts()) == 48


@pytest.mark.django_db
def test_no_demo_fleet_on_a_real_management_cluster(settings):
    from hosts.models import HostEnrolment

    settings.TEAPOT_DEMO = True
    settings.TEAPOT_PROVISIONER = "kubernetes"
    call_command("seed_demo")
    assert not HostEnrolment.objects.exists()
