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


@pytest.mark.django_db
def test_seed_demo_creates_four_departments_through_the_services(settings):
    from tenants.models import AuditEntry, Cluster, Membership, NodePool, Quota, Tenant

    settings.TEAPOT_DEMO = True
    call_command("seed_demo")
    call_command("seed_demo")  # idempotent
    assert sorted(Tenant.objects.values_list("slug", flat=True)) == ["finance", "genomics", "ml-research", "physics"]
    roles = dict(Membership.objects.filter(tenant__slug="physics").values_list("user__email", "role"))
    assert roles == {"alice@physics.example": "owner", "bob@physics.example": "viewer"}
    assert Membership.objects.get(user__email="carol@genomics.example").role == "owner"
    assert User.objects.get(email="bob@physics.example").check_password("teapot-demo")
    assert Quota.objects.filter(tenant__slug="physics").count() == 2
    assert sorted(Cluster.objects.values_list("name", flat=True)) == ["risk", "seq", "train", "vision"]
    assert NodePool.objects.count() == 4
    assert NodePool.objects.get(name="gpu", cluster__name="train").autoscaled
    assert AuditEntry.objects.filter(action="cluster.create").count() == 4  # through the services
