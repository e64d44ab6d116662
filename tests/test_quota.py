"""Quota: usage, pool sizing, and admission of guarantees as a bipartite flow (tenants.quota),
plus the operators' admin for tenancy (tenants.admin).

Fleets are synthetic BareMetalHosts written through the real sync and classified with the demo
rules (tests.inventory). With the classes of tests.tenancy: a ``general`` host serves general;
a ``highmem`` host serves general *and* highmem; a ``gpu-a100`` host serves gpu-a100 only.
The world's guarantees: general 2 (physics) + 2 (genomics), gpu-a100 1 (physics), highmem 0.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hosts.classify import hosts_classify
from hosts.models import Host, HostClaim
from hosts.requirements import Requirement
from hosts.services import hosts_sync
from teapot_portal.gateway.base import HostRecord
from tenants import quota
from tenants.clusters import cluster_create, node_pool_create, node_pool_delete, node_pool_scale
from tenants.models import AuditEntry, NodePool, PoolHost, Quota, QuotaClass, Tenant
from tests.inventory import bmh, ensure_rules, make_fleet

pytestmark = pytest.mark.django_db


def fleet(spec: list[tuple[str, str]], *, state: str = "available") -> dict[str, Host]:
    """(name, lab profile) each, synced and classified with the demo rules."""
    ensure_rules()
    hosts_sync(
        records=[HostRecord.from_object(bmh(n, profile=p, state=state, rv=i + 1)) for i, (n, p) in enumerate(spec)]
    )
    hosts_classify()
    return {h.name: h for h in Host.objects.filter(name__in=[n for n, _ in spec])}


def generals(n: int, prefix: str = "n") -> list[tuple[str, str]]:
    return [(f"{prefix}{i}", "general") for i in range(1, n + 1)]


def highmems(n: int) -> list[tuple[str, str]]:
    return [(f"m{i}", "highmem") for i in range(1, n + 1)]


def a100s(n: int) -> list[tuple[str, str]]:
    return [(f"g{i}", "gpu-a100") for i in range(1, n + 1)]


def hold(pool: NodePool, host: Host, *, guaranteed: bool = False, allocated_at=None, released_at=None) -> PoolHost:
    claim = HostClaim.objects.create(
        host=host, holder=pool.holder, tenant=pool.cluster.tenant.slug, released_at=released_at
    )
    return PoolHost.objects.create(
        pool=pool,
        host=host,
        claim=claim,
        guaranteed=guaranteed,
        allocated_at=allocated_at or timezone.now(),
        released_at=released_at,
        state=PoolHost.State.RELEASED if released_at else PoolHost.State.READY,
    )


def cluster(world, tenant=None, name: str = "c1"):
    tenant = tenant or world.physics
    actor = world.alice if tenant == world.physics else world.carol
    return cluster_create(tenant=tenant, name=name, actor=actor)


def pool(world, on, name: str, klass: str = "general", **size) -> NodePool:
    actor = world.alice if on.tenant_id == world.physics.pk else world.carol
    if "autoscale_min" in size:
        size.setdefault("replicas", None)  # an autoscaled pool has no fixed size
    return node_pool_create(
        cluster=on, name=name, quota_class=world.classes[klass], image=world.image, actor=actor, **size
    )


def naive_sum_of_counts(admission: quota.Admission) -> bool:
    """The check this module exists to avoid: each class alone against the hosts meeting it."""
    return all(c.hosts >= c.guaranteed_total for c in admission.classes)


# =============================================================================== admission


def test_admission_accepts_when_the_fleet_carries_every_guarantee(world):
    fleet(generals(3) + highmems(1) + a100s(1))
    admission = quota.guarantees_check()
    assert admission.ok and admission.shortfalls == [] and admission.short_by == 0
    by_name = {c.quota_class.name: c for c in admission.classes}
    assert [c.quota_class.name for c in admission.classes] == ["general", "gpu-a100", "highmem"]
    assert (by_name["general"].hosts, by_name["general"].guaranteed_total, by_name["general"].maximum_total) == (
        4,
        4,
        14,
    )
    assert (by_name["gpu-a100"].hosts, by_name["highmem"].hosts) == (1, 1)
    assert by_name["general"].free == 4


def test_a_class_short_on_its_own_is_named_with_its_numbers(world):
    fleet(generals(4) + a100s(1))
    admission = quota.guarantees_check({(world.physics.pk, world.classes["gpu-a100"].pk): 3})
    assert not admission.ok and admission.short_by == 2
    assert admission.shortfalls == [
        quota.Shortfall(
            quota_class_name="gpu-a100",
            demand=3,
            capacity=1,
            short_by=2,
            message="gpu-a100: guarantees total 3 but only 1 host can serve it",
        )
    ]
    none = quota.guarantees_check({(world.genomics.pk, world.classes["highmem"].pk): 2})
    assert none.messages == ["highmem: guarantees total 2 but no host can serve it"]


def test_classes_competing_for_the_same_hosts_are_refused_though_each_alone_fits(world):
    fleet(generals(2) + highmems(2) + a100s(1))
    overrides = {(world.genomics.pk, world.classes["highmem"].pk): 2}
    admission = quota.guarantees_check(overrides)
    by_name = {c.quota_class.name: c for c in admission.classes}
    # Each class alone fits: general 4 ≤ 4 hosts, highmem 2 ≤ 2 hosts — a sum of counts says yes.
    assert (by_name["general"].hosts, by_name["general"].guaranteed_total) == (4, 4)
    assert (by_name["highmem"].hosts, by_name["highmem"].guaranteed_total) == (2, 2)
    assert naive_sum_of_counts(admission)
    # But a highmem host serves one of them at a time: 6 guarantees, 4 hosts.
    assert not admission.ok and admission.short_by == 2
    message = (
        "general and highmem together guarantee 6, but the 4 hosts that can serve them cannot cover both (short by 2)"
    )
    assert admission.messages == [message]
    assert [(s.quota_class_name, s.demand, s.capacity, s.short_by) for s in admission.shortfalls] == [
        ("general", 4, 4, 2),
        ("highmem", 2, 2, 2),
    ]
    with pytest.raises(ValidationError) as refused:
        quota.quota_update(tenant=world.genomics, quota_class=world.classes["highmem"], guaranteed=2, maximum=2)
    assert refused.value.message_dict == {"guaranteed": [message]}
    assert Quota.objects.get(tenant=world.genomics, quota_class=world.classes["highmem"]).guaranteed == 0


def test_a_tangle_also_names_a_class_short_on_its_own(world):
    fleet(generals(2) + highmems(2) + a100s(1))
    admission = quota.guarantees_check({(world.genomics.pk, world.classes["highmem"].pk): 3})
    assert admission.messages == [
        "general and highmem together guarantee 7, but the 4 hosts that can serve them cannot cover both "
        "(short by 3); highmem alone guarantees 3 but only 2 hosts can serve it"
    ]


def test_separate_shortfalls_are_reported_separately(world):
    fleet(generals(2) + highmems(2))  # no a100 host: gpu-a100 is short on its own
    admission = quota.guarantees_check({(world.genomics.pk, world.classes["highmem"].pk): 1})
    assert admission.short_by == 2
    assert admission.messages == [
        "general and highmem together guarantee 5, but the 4 hosts that can serve them cannot cover both (short by 1)",
        "gpu-a100: guarantees total 1 but no host can serve it",
    ]


def test_only_an_unrelated_class_short_leaves_the_others_unblamed(world):
    fleet(generals(6) + highmems(1))  # general fits with room to spare; gpu-a100 has nothing
    admission = quota.guarantees_check()
    assert [s.quota_class_name for s in admission.shortfalls] == ["gpu-a100"]


@pytest.mark.parametrize(
    "spoil",
    [
        {"maintenance": True},
        {"retired_at": datetime(2026, 1, 1, tzinfo=UTC)},
        {"operational_status": "error"},
        {"hardware": None},  # never inspected: nothing is known to promise on
    ],
    ids=["maintenance", "retired", "error", "not-inspected"],
)
def test_hosts_that_cannot_serve_do_not_carry_guarantees(world, spoil):
    hosts = fleet(generals(4) + a100s(1))
    assert quota.guarantees_check().ok
    Host.objects.filter(pk=hosts["n1"].pk).update(**spoil)
    admission = quota.guarantees_check()
    assert admission.messages == ["general: guarantees total 4 but only 3 hosts can serve it"]
    assert {c.quota_class.name: c.hosts for c in admission.classes}["general"] == 3


def test_busy_hosts_still_carry_guarantees(world):
    fleet(generals(4) + a100s(1), state="provisioned")
    admission = quota.guarantees_check()
    assert admission.ok
    assert {c.quota_class.name: c.free for c in admission.classes}["general"] == 0


def test_matching_host_ids_checks_accelerator_counts_per_hardware_class(world):
    hosts = fleet(generals(2) + a100s(2))
    a100 = {hosts["g1"].pk, hosts["g2"].pk}
    assert quota.matching_host_ids(Requirement.parse("gpu:nvidia-a100>=8")) == a100
    assert quota.matching_host_ids(Requirement.parse("gpu:nvidia-a100>=9")) == set()
    narrowed = Host.objects.filter(name="g1")
    assert quota.matching_host_ids(Requirement.parse("gpu:nvidia-a100>=8"), narrowed) == {hosts["g1"].pk}
    # An unclassified host is judged on its own.
    Host.objects.filter(pk=hosts["g2"].pk).update(hardware_class="")
    assert quota.matching_host_ids(Requirement.parse("gpu:nvidia-a100>=8")) == a100
    assert quota.matching_host_ids(Requirement.ANY) == {h.pk for h in hosts.values()}


def test_fleet_capacity_counts_held_hosts_per_class(world):
    hosts = fleet(generals(4) + a100s(1))
    pool_ = pool(world, cluster(world), "p1", replicas=2)
    hold(pool_, hosts["n1"], guaranteed=True)
    hold(pool_, hosts["n2"])
    capacity = {c.quota_class.name: c for c in quota.fleet_capacity()}
    assert capacity["general"] == quota.ClassCapacity(
        quota_class=world.classes["general"], hosts=4, guaranteed_total=4, maximum_total=14, held_total=2, free=2
    )


def test_guarantees_check_queries_grow_with_classes_not_hosts(world, django_assert_max_num_queries):
    hosts = make_fleet(400)
    # classes, quotas, one query per class (two for gpu-a100: the per-hardware-class check), held, free
    with django_assert_max_num_queries(8):
        admission = quota.guarantees_check()
    assert admission.ok
    eligible = [h for h in hosts if h.hardware is not None and h.operational_status != "error"]
    capacity = {c.quota_class.name: c.hosts for c in admission.classes}
    # general: the general, highmem and storage-dense profiles (no gpu, no fpga); highmem: highmem only.
    assert capacity["general"] == sum(1 for h in eligible if not {"gpu", "fpga"} & set(h.traits))
    assert capacity["highmem"] == sum(1 for h in eligible if "highmem" in h.traits and "gpu" not in h.traits)
    assert capacity["gpu-a100"] == sum(1 for h in eligible if "gpu-a100" in h.traits)
    assert 0 < capacity["highmem"] < capacity["general"]


# ----------------------------------------------------------------------------------- quota_update


def test_lowering_a_guarantee_is_always_allowed(world):
    # No hosts at all: every guarantee is short, yet lowering one is fine.
    assert not quota.guarantees_check().ok
    row = quota.quota_update(
        tenant=world.physics, quota_class=world.classes["general"], guaranteed=1, maximum=8, actor=world.olga
    )
    assert (row.guaranteed, row.maximum) == (1, 8)
    entry = AuditEntry.objects.get(action="quota.update")
    assert entry.actor == world.olga and entry.tenant_id == world.physics.pk
    assert entry.before == {"class": "general", "guaranteed": 2, "maximum": 8}
    assert entry.after == {"class": "general", "guaranteed": 1, "maximum": 8}


def test_a_raise_the_fleet_carries_is_allowed_though_another_class_is_short(world):
    fleet(generals(5))  # gpu-a100 (1 guaranteed) has no host: the fleet is short already
    quota.quota_update(tenant=world.physics, quota_class=world.classes["general"], guaranteed=3, maximum=8)
    with pytest.raises(ValidationError) as refused:
        quota.quota_update(tenant=world.physics, quota_class=world.classes["general"], guaranteed=4, maximum=8)
    # The refusal is about general, not the old gpu-a100 shortfall.
    assert refused.value.message_dict == {"guaranteed": ["general: guarantees total 6 but only 5 hosts can serve it"]}


def test_quota_updates_see_each_other_under_the_advisory_lock(world):
    fleet(generals(5) + a100s(1))
    quota.quota_update(tenant=world.physics, quota_class=world.classes["general"], guaranteed=3, maximum=8)
    with connection.cursor() as cursor:  # held by this transaction until it ends
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
            "AND classid = 0 AND objid = %s",
            [quota.ADVISORY_LOCK_KEY],
        )
        assert cursor.fetchone()[0] == 1
    with pytest.raises(ValidationError) as refused:
        quota.quota_update(tenant=world.genomics, quota_class=world.classes["general"], guaranteed=3, maximum=6)
    assert refused.value.message_dict["guaranteed"] == ["general: guarantees total 6 but only 5 hosts can serve it"]


def test_a_new_quota_is_created_and_audited(world):
    fleet(generals(4) + a100s(2))
    row = quota.quota_update(
        tenant=world.genomics, quota_class=world.classes["gpu-a100"], guaranteed=1, maximum=2, actor=world.olga
    )
    assert row.pk and (row.guaranteed, row.maximum) == (1, 2)
    entry = AuditEntry.objects.get(action="quota.update", tenant=world.genomics)
    assert entry.before is None and entry.after == {"class": "gpu-a100", "guaranteed": 1, "maximum": 2}


@pytest.mark.parametrize(
    "guaranteed, maximum, field, message",
    [
        (5, 3, "guaranteed", "The guaranteed minimum (5) cannot exceed the maximum (3): raise the maximum too."),
        (-1, 3, "guaranteed", "The guaranteed minimum is a whole number of hosts, 0 or more."),
        (1, "x", "maximum", "The maximum is a whole number of hosts, 0 or more."),
        (1.5, 3, "guaranteed", "The guaranteed minimum is a whole number of hosts, 0 or more."),
        (0, 10**9, "maximum", "The maximum is at most 100,000 hosts."),
    ],
)
def test_quota_numbers_are_checked_with_messages(world, guaranteed, maximum, field, message):
    with pytest.raises(ValidationError) as refused:
        quota.quota_update(
            tenant=world.physics, quota_class=world.classes["general"], guaranteed=guaranteed, maximum=maximum
        )
    assert refused.value.message_dict == {field: [message]}


def test_a_maximum_below_what_is_held_is_allowed_and_pools_keep_their_hosts(world):
    hosts = fleet(generals(4) + a100s(1))
    pool_ = pool(world, cluster(world), "p1", replicas=3)
    for name in ("n1", "n2", "n3"):
        hold(pool_, hosts[name])
    quota.quota_update(tenant=world.physics, quota_class=world.classes["general"], guaranteed=1, maximum=1)
    assert PoolHost.objects.filter(pool=pool_, released_at__isnull=True).count() == 3
    assert quota.allocation_budget(
        tenant=world.physics, quota_class=world.classes["general"], workload_class="on_demand"
    ) == quota.Budget(0, 0)


def test_quota_delete_is_audited(world):
    row = Quota.objects.get(tenant=world.genomics, quota_class=world.classes["highmem"])
    quota.quota_delete(quota=row, actor=world.olga)
    assert not Quota.objects.filter(pk=row.pk).exists()
    assert AuditEntry.objects.get(action="quota.delete").before == {"class": "highmem", "guaranteed": 0, "maximum": 2}


# ----------------------------------------------------------------------------------- classes


def test_quota_class_save_creates_from_compact_text_and_audits(world):
    klass = quota.quota_class_save(name="gpu-l40s", requirement="gpu:nvidia-l40s", order=3, actor=world.olga)
    assert klass.requirement == {"accelerators": [{"type": "nvidia-l40s", "count": 1}]}
    entry = AuditEntry.objects.get(action="quota_class.create")
    assert entry.after["name"] == "gpu-l40s" and entry.tenant_id is None


@pytest.mark.parametrize(
    "name, requirement, field",
    [
        ("Bad Name", {}, "name"),
        ("general", {}, "name"),  # taken
        ("", {}, "name"),
        ("ok", "cores>64", "requirement"),
        ("ok", {"traits": "x"}, "requirement"),
    ],
)
def test_quota_class_save_refuses_with_field_errors(world, name, requirement, field):
    with pytest.raises(ValidationError) as refused:
        quota.quota_class_save(name=name, requirement=requirement)
    assert list(refused.value.message_dict) == [field]


def test_changing_a_class_requirement_is_refused_when_guarantees_break(world):
    fleet(generals(3) + highmems(1) + a100s(1))
    general = world.classes["general"]
    with pytest.raises(ValidationError) as refused:
        quota.quota_class_save(name="general", requirement="highmem,!gpu", instance=general)
    assert refused.value.message_dict["requirement"] == [
        "With this requirement the fleet cannot keep the guarantees:",
        "general: guarantees total 4 but only 1 host can serve it",
    ]
    general.refresh_from_db()
    assert general.requirement == {"forbidden": ["gpu", "fpga"]}  # as stored, untouched
    # A description change keeps the requirement: no check, saved and audited.
    quota.quota_class_save(
        name="general", requirement=general.requirement, description="CPU only", instance=general, actor=world.olga
    )
    entry = AuditEntry.objects.get(action="quota_class.update")
    assert entry.before["description"] == "Compute without accelerators" and entry.after["description"] == "CPU only"


# =============================================================================== pool sizing


def refusal(world, *, klass="general", workload="on_demand", size, ceiling=None, pool_=None, tenant=None):
    return quota.pool_size_refusal(
        tenant=tenant or world.physics,
        quota_class=world.classes[klass],
        workload_class=workload,
        size=size,
        ceiling=ceiling,
        pool=pool_,
    )


def test_pool_size_refusal_without_a_quota(world):
    assert refusal(world, klass="highmem", size=1) == "physics has no quota for highmem; ask an operator for one"
    assert refusal(world, klass="highmem", size=0) is None
    with pytest.raises(ValidationError) as refused:
        pool(world, cluster(world), "p1", klass="highmem", replicas=2)
    assert refused.value.message_dict == {"replicas": ["physics has no quota for highmem; ask an operator for one"]}


def test_pool_size_refusal_over_the_maximum(world):
    on = cluster(world)
    assert refusal(world, size=9) == "physics may hold at most 8 general hosts, so this pool can have at most 8"
    first = pool(world, on, "p1", replicas=6)
    assert refusal(world, size=3) == (
        "physics may hold at most 8 general hosts; its other pools ask for 6, so this pool can have at most 2"
    )
    assert refusal(world, size=2) is None
    # Resizing a pool does not count the pool itself.
    assert refusal(world, size=8, pool_=first) is None
    pool(world, on, "p2", replicas=2)
    assert refusal(world, size=1) == (
        "physics may hold at most 8 general hosts; its other pools ask for 8, so this pool can have none"
    )
    with pytest.raises(ValidationError) as refused:
        node_pool_scale(pool=first, autoscale_min=7, autoscale_max=20)
    assert "so this pool can have at most 6" in refused.value.message_dict["autoscale_max"][0]
    # The autoscale ceiling is never refused: 6 fits, the maximum of 20 is clamped later.
    node_pool_scale(pool=first, autoscale_min=6, autoscale_max=20)


def test_pool_size_refusal_with_a_zero_maximum(world):
    quota.quota_update(tenant=world.genomics, quota_class=world.classes["highmem"], guaranteed=0, maximum=0)
    assert refusal(world, klass="highmem", size=1, tenant=world.genomics) == (
        "genomics may hold no highmem hosts (its maximum is 0); ask an operator to raise it"
    )


def test_pool_size_refusal_for_guaranteed_pools(world):
    on = cluster(world)
    advice = "; choose on_demand to borrow beyond the guarantee (borrowed hosts can be reclaimed)"
    assert refusal(world, workload="guaranteed", size=3) == (
        f"a guaranteed pool must fit the guarantee: physics is guaranteed 2 general hosts, so this pool can have at most 2{advice}"
    )
    pool(world, on, "p1", workload_class="guaranteed", replicas=1)
    pool(world, on, "p2", workload_class="on_demand", replicas=5)  # on-demand pools do not use the guarantee
    assert refusal(world, workload="guaranteed", size=2) == (
        "a guaranteed pool must fit the guarantee: physics is guaranteed 2 general hosts and its other guaranteed "
        f"pools ask for 1, so this pool can have at most 1{advice}"
    )
    assert refusal(world, workload="guaranteed", size=1) is None
    assert refusal(world, klass="highmem", workload="guaranteed", size=1, tenant=world.genomics) == (
        f"genomics has no guaranteed highmem hosts, so a guaranteed pool cannot have any{advice}"
    )


def test_pools_being_deleted_no_longer_commit_their_size(world):
    on = cluster(world)
    first = pool(world, on, "p1", replicas=8)
    assert refusal(world, size=1) is not None
    node_pool_delete(pool=first)
    assert refusal(world, size=8) is None


def test_autoscaled_pools_commit_what_they_want_now(world):
    on = cluster(world)
    scaled = pool(world, on, "p1", autoscale_min=1, autoscale_max=8)
    NodePool.objects.filter(pk=scaled.pk).update(desired=5)
    assert refusal(world, size=4) == (
        "physics may hold at most 8 general hosts; its other pools ask for 5, so this pool can have at most 3"
    )


def test_autoscale_ceiling_is_clamped_by_the_quota_but_never_below_the_minimum(world):
    on = cluster(world)
    fixed = pool(world, on, "p1", replicas=5)
    scaled = pool(world, on, "p2", autoscale_min=1, autoscale_max=6)
    assert quota.autoscale_ceiling(scaled) == 3  # 8 − 5
    assert quota.autoscale_ceiling(fixed) == 5  # a fixed pool's ceiling is its size
    node_pool_scale(pool=fixed, replicas=1)
    assert quota.autoscale_ceiling(scaled) == 6  # its own maximum
    node_pool_scale(pool=fixed, replicas=5)
    quota.quota_update(tenant=world.physics, quota_class=world.classes["general"], guaranteed=2, maximum=5)
    assert quota.autoscale_ceiling(scaled) == 1  # nothing left: the minimum stays


def test_allocation_budget(world):
    hosts = fleet(a100s(2))
    gpu = world.classes["gpu-a100"]
    budget = quota.allocation_budget(tenant=world.physics, quota_class=gpu, workload_class="on_demand")
    assert budget == quota.Budget(room=4, guaranteed_room=1)
    spot = quota.allocation_budget(tenant=world.physics, quota_class=gpu, workload_class="preemptible")
    assert spot == quota.Budget(room=4, guaranteed_room=0)  # spot hosts never count as guaranteed
    hold(pool(world, cluster(world), "p1", klass="gpu-a100", replicas=2), hosts["g1"], guaranteed=True)
    budget = quota.allocation_budget(tenant=world.physics, quota_class=gpu, workload_class="guaranteed")
    assert budget == quota.Budget(room=3, guaranteed_room=0)
    none = quota.allocation_budget(tenant=world.genomics, quota_class=gpu, workload_class="on_demand")
    assert none == quota.Budget(room=0, guaranteed_room=0)


# =============================================================================== usage


def test_tenant_usage_in_a_constant_number_of_queries(world, django_assert_max_num_queries):
    hosts = fleet(generals(6) + highmems(2) + a100s(3))
    on, other = cluster(world), cluster(world, name="c2")
    general = pool(world, on, "p1", workload_class="guaranteed", replicas=2)
    burst = pool(world, other, "p2", autoscale_min=0, autoscale_max=6)
    NodePool.objects.filter(pk=burst.pk).update(desired=3)
    gpu = pool(world, on, "p3", klass="gpu-a100", replicas=2)
    pool(world, other, "p4", klass="highmem", replicas=0)  # no quota: size 0 is allowed, and it shows
    hold(general, hosts["n1"], guaranteed=True)
    hold(general, hosts["n2"], guaranteed=True)
    hold(burst, hosts["n3"])
    hold(gpu, hosts["g1"], guaranteed=True)
    hold(gpu, hosts["g2"])
    hold(gpu, hosts["g3"], released_at=timezone.now())  # released: not held
    with django_assert_max_num_queries(4):
        usage = quota.tenant_usage(world.physics)
    assert [
        (u.quota_class.name, u.guaranteed, u.maximum, u.held, u.held_guaranteed, u.borrowed, u.committed, u.room)
        for u in usage
    ] == [
        ("general", 2, 8, 3, 2, 1, 5, 3),
        ("gpu-a100", 1, 4, 2, 1, 1, 2, 2),
        ("highmem", 0, 0, 0, 0, 0, 0, 0),
    ]
    for index in range(5):  # more pools, same number of queries
        pool(world, other, f"x{index}", replicas=0)
    with django_assert_max_num_queries(4):
        assert len(quota.tenant_usage(world.physics)) == 3
    with django_assert_max_num_queries(5):
        everyone = quota.tenants_usage()
    assert set(everyone) == set(Tenant.objects.values_list("pk", flat=True))
    assert [(u.quota_class.name, u.committed) for u in everyone[world.genomics.pk]] == [("general", 0), ("highmem", 0)]
    assert everyone[world.physics.pk] == quota.tenant_usage(world.physics)


def test_usage_history_clips_intervals_to_days(world):
    hosts = fleet(generals(3) + a100s(1))
    on = cluster(world)
    general, gpu = pool(world, on, "p1", replicas=3), pool(world, on, "p2", klass="gpu-a100", replicas=1)
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    # Across midnight: 6 hours on the 8th, 6 on the 9th.
    hold(general, hosts["n1"], allocated_at=now - timedelta(hours=42), released_at=now - timedelta(hours=30))
    # From long before the window to half past midnight of its first day.
    hold(
        general,
        hosts["n2"],
        allocated_at=datetime(2026, 1, 1, tzinfo=UTC),
        released_at=datetime(2026, 3, 4, 0, 30, tzinfo=UTC),
    )
    # Ended before the window: not counted.
    hold(
        general,
        hosts["n3"],
        allocated_at=datetime(2026, 2, 1, tzinfo=UTC),
        released_at=datetime(2026, 2, 2, tzinfo=UTC),
    )
    # Still held: from 09:00 today until now.
    hold(gpu, hosts["g1"], allocated_at=now - timedelta(hours=3))
    history = quota.usage_history(world.physics, days=7, now=now)
    assert [entry["day"] for entry in history] == [date(2026, 3, d) for d in range(4, 11)]
    assert [entry["classes"] for entry in history] == [
        {"general": 0.5, "gpu-a100": 0.0},
        {"general": 0.0, "gpu-a100": 0.0},
        {"general": 0.0, "gpu-a100": 0.0},
        {"general": 0.0, "gpu-a100": 0.0},
        {"general": 6.0, "gpu-a100": 0.0},
        {"general": 6.0, "gpu-a100": 0.0},
        {"general": 0.0, "gpu-a100": 3.0},
    ]
    assert quota.usage_history(world.genomics, days=2, now=now) == [
        {"day": date(2026, 3, 9), "classes": {}},
        {"day": date(2026, 3, 10), "classes": {}},
    ]


# =============================================================================== the flow, by property


def brute_force(hosts: list[frozenset[int]], demand: dict[int, int]) -> bool:
    """Try every assignment of each host to one class it can serve (or none)."""
    wanted = {k: n for k, n in demand.items() if n}
    choices = [[None, *sorted(k for k in serves if k in wanted)] for serves in hosts]
    return any(all(assignment.count(k) >= n for k, n in wanted.items()) for assignment in itertools.product(*choices))


signatures = st.frozensets(st.integers(0, 2), max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    hosts=st.lists(signatures, max_size=6),
    demand=st.dictionaries(st.integers(0, 2), st.integers(0, 4), max_size=3),
)
def test_guarantee_flow_agrees_with_brute_force(hosts, demand):
    groups: dict[frozenset[int], int] = {}
    for signature in hosts:
        groups[signature] = groups.get(signature, 0) + 1
    flow, tangles = quota.guarantee_flow(demand, groups)
    feasible = brute_force(hosts, demand)
    assert (not tangles) == feasible
    total = sum(demand.values())
    assert sum(t.short_by for t in tangles) == total - flow
    for tangle in tangles:
        # A tangle's hosts are exactly those that can serve one of its classes, and they are too few.
        assert tangle.hosts == sum(1 for serves in hosts if serves & set(tangle.classes))
        assert tangle.demand == sum(demand[k] for k in tangle.classes) and tangle.short_by > 0


TRAITS = ("red", "blue", "green")
CLASS_REQUIREMENTS = {
    "c-red": {"traits": ["red"]},
    "c-blue": {"traits": ["blue"]},
    "c-any": {"any_of": [["blue", "green"]]},
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    hosts=st.lists(
        st.tuples(
            st.frozensets(st.sampled_from(TRAITS)), st.sampled_from(["ok", "ok", "ok", "maintenance", "retired"])
        ),
        max_size=6,
    ),
    guarantees=st.lists(st.integers(0, 3), min_size=6, max_size=6),
)
def test_guarantees_check_agrees_with_brute_force_on_real_rows(world, hosts, guarantees):
    Quota.objects.all().delete()
    Host.objects.all().delete()
    classes = [
        QuotaClass.objects.update_or_create(name=name, defaults={"requirement": requirement})[0]
        for name, requirement in CLASS_REQUIREMENTS.items()
    ]
    QuotaClass.objects.exclude(pk__in=[k.pk for k in classes]).delete()
    Host.objects.bulk_create(
        Host(
            name=f"h{i}",
            namespace="t",
            traits=sorted(traits),
            hardware={},
            hardware_class=f"hc{i}",
            maintenance=state == "maintenance",
            retired_at=timezone.now() if state == "retired" else None,
        )
        for i, (traits, state) in enumerate(hosts)
    )
    values = iter(guarantees)
    for tenant in (world.physics, world.genomics):
        for klass in classes:
            g = next(values)
            Quota.objects.create(tenant=tenant, quota_class=klass, guaranteed=g, maximum=g)
    # Brute force in Python, from the traits: which classes each usable host can serve.
    meets = {
        "c-red": lambda t: "red" in t,
        "c-blue": lambda t: "blue" in t,
        "c-any": lambda t: bool(t & {"blue", "green"}),
    }
    ids = {k.name: i for i, k in enumerate(classes)}
    usable = [frozenset(ids[name] for name, test in meets.items() if test(traits)) for traits, s in hosts if s == "ok"]
    demand = {i: guarantees[i] + guarantees[i + 3] for i in range(3)}
    assert quota.guarantees_check().ok == brute_force(usable, demand)


# =============================================================================== admin


def admin_data(response) -> dict:
    """The change form's current values, as the browser would post them (inlines included)."""
    data = {}

    def put(form):
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value

    put(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        put(formset.management_form)
        for form in formset.forms:
            put(form)
    return data


def test_olga_opens_every_tenancy_admin_page(world, client):
    hosts = fleet(generals(2))
    pool_ = pool(world, cluster(world), "p1", replicas=1)
    hold(pool_, hosts["n1"])
    client.force_login(world.olga)
    objects = {
        "tenant": world.physics,
        "quotaclass": world.classes["general"],
        "quota": Quota.objects.first(),
        "kubernetesversion": world.v131,
        "osimage": world.image,
        "cluster": pool_.cluster,
        "nodepool": pool_,
        "poolhost": PoolHost.objects.first(),
        "auditentry": AuditEntry.objects.first(),
    }
    for model, obj in objects.items():
        changelist = client.get(reverse(f"admin:tenants_{model}_changelist"))
        assert changelist.status_code == 200, model
        change = client.get(reverse(f"admin:tenants_{model}_change", args=[obj.pk]))
        assert change.status_code == 200, model
    for model in ("tenant", "quotaclass", "quota", "kubernetesversion", "osimage"):
        assert client.get(reverse(f"admin:tenants_{model}_add")).status_code == 200, model
    for model in ("cluster", "nodepool", "poolhost", "auditentry"):
        assert client.get(reverse(f"admin:tenants_{model}_add")).status_code == 403, model


def test_the_audit_log_cannot_be_changed_in_the_admin(world, client):
    quota.quota_update(tenant=world.physics, quota_class=world.classes["general"], guaranteed=1, maximum=8)
    entry = AuditEntry.objects.get(action="quota.update")
    client.force_login(world.olga)
    url = reverse("admin:tenants_auditentry_change", args=[entry.pk])
    page = client.get(url)
    assert b"guaranteed" in page.content and b'type="submit"' not in page.content.split(b"<form")[-1]
    assert client.post(url, {"action": "x"}).status_code == 403
    assert client.post(reverse("admin:tenants_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_admin_quota_that_breaks_guarantees_shows_the_error_and_saves_nothing(world, client):
    fleet(generals(4) + a100s(1))
    client.force_login(world.olga)
    row = Quota.objects.get(tenant=world.physics, quota_class=world.classes["gpu-a100"])
    url = reverse("admin:tenants_quota_change", args=[row.pk])
    response = client.post(url, {"guaranteed": 3, "maximum": 4})
    assert response.status_code == 200
    assert (
        "gpu-a100: guarantees total 3 but only 1 host can serve it"
        in response.context["adminform"].form.errors["guaranteed"]
    )
    row.refresh_from_db()
    assert (row.guaranteed, row.maximum) == (1, 4)
    assert not AuditEntry.objects.filter(action="quota.update").exists()
    # Within what the fleet carries: saved through the service, audited with olga's name.
    assert client.post(url, {"guaranteed": 0, "maximum": 2}).status_code == 302
    row.refresh_from_db()
    assert (row.guaranteed, row.maximum) == (0, 2)
    assert AuditEntry.objects.get(action="quota.update").actor == world.olga


def test_admin_adds_a_quota_through_the_service(world, client):
    fleet(generals(4) + a100s(2))
    client.force_login(world.olga)
    add = reverse("admin:tenants_quota_add")
    data = {"tenant": world.genomics.pk, "quota_class": world.classes["gpu-a100"].pk, "guaranteed": 2, "maximum": 2}
    refused = client.post(add, data)
    assert refused.status_code == 200 and refused.context["adminform"].form.errors["guaranteed"] == [
        "gpu-a100: guarantees total 3 but only 2 hosts can serve it"
    ]
    assert client.post(add, {**data, "guaranteed": 1}).status_code == 302
    assert Quota.objects.get(tenant=world.genomics, quota_class=world.classes["gpu-a100"]).guaranteed == 1


def test_admin_tenant_inline_quotas_are_admitted_together(world, client):
    fleet(generals(2) + highmems(2) + a100s(1))
    client.force_login(world.olga)
    url = reverse("admin:tenants_tenant_change", args=[world.genomics.pk])
    data = admin_data(client.get(url))
    forms = {data[k]: k.rsplit("-", 1)[0] for k in data if k.startswith("quotas-") and k.endswith("-quota_class")}
    highmem = forms[world.classes["highmem"].pk]
    refused = client.post(url, {**data, f"{highmem}-guaranteed": 2, f"{highmem}-maximum": 2})
    assert refused.status_code == 200
    errors = [form.errors for form in refused.context["inline_admin_formsets"][1].formset.forms]
    assert {
        "guaranteed": [
            "general and highmem together guarantee 6, but the 4 hosts that can serve them cannot cover both "
            "(short by 2)"
        ]
    } in errors
    assert Quota.objects.get(tenant=world.genomics, quota_class=world.classes["highmem"]).guaranteed == 0
    # Lowering general by 2 in the same form makes room: both are saved, the lowering first.
    general = forms[world.classes["general"].pk]
    saved = client.post(url, {**data, f"{highmem}-guaranteed": 2, f"{highmem}-maximum": 2, f"{general}-guaranteed": 0})
    assert saved.status_code == 302
    rows = dict(Quota.objects.filter(tenant=world.genomics).values_list("quota_class__name", "guaranteed"))
    assert rows == {"general": 0, "highmem": 2}
    assert AuditEntry.objects.filter(action="quota.update", tenant=world.genomics).count() == 2
    assert AuditEntry.objects.filter(action="tenant.update", tenant=world.genomics).count() == 1


def test_admin_tenant_saves_write_audit_entries(world, client):
    client.force_login(world.olga)
    add = client.get(reverse("admin:tenants_tenant_add"))
    data = admin_data(add)
    data.update({"slug": "chemistry", "name": "Chemistry", "priority": 3})
    data.update({"memberships-TOTAL_FORMS": 1, "memberships-0-user": world.carol.pk, "memberships-0-role": "owner"})
    assert client.post(reverse("admin:tenants_tenant_add"), data).status_code == 302
    chemistry = Tenant.objects.get(slug="chemistry")
    assert AuditEntry.objects.get(action="tenant.create").after["name"] == "Chemistry"
    assert AuditEntry.objects.get(action="membership.add", tenant=chemistry).after == {
        "email": "carol@genomics.example",
        "role": "owner",
    }
    url = reverse("admin:tenants_tenant_change", args=[chemistry.pk])
    data = admin_data(client.get(url))
    data.update({"priority": 7, "memberships-0-role": "viewer"})
    assert client.post(url, data).status_code == 302
    update = AuditEntry.objects.get(action="tenant.update")
    assert (update.before["priority"], update.after["priority"], update.actor) == (3, 7, world.olga)
    assert AuditEntry.objects.get(action="membership.role").before["role"] == "owner"


def test_admin_quota_class_change_that_breaks_guarantees_is_a_form_error(world, client):
    fleet(generals(3) + highmems(1) + a100s(1))
    client.force_login(world.olga)
    general = world.classes["general"]
    url = reverse("admin:tenants_quotaclass_change", args=[general.pk])
    data = {"name": "general", "description": "x", "order": 0, "requirement_text": "highmem,!gpu"}
    response = client.post(url, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["requirement_text"] == [
        "With this requirement the fleet cannot keep the guarantees:",
        "general: guarantees total 4 but only 1 host can serve it",
    ]
    general.refresh_from_db()
    assert general.requirement == {"forbidden": ["gpu", "fpga"]}  # as stored, untouched
    assert client.post(url, {**data, "requirement_text": "!gpu,!fpga"}).status_code == 302
    assert AuditEntry.objects.get(action="quota_class.update").after["description"] == "x"
    bad = client.post(reverse("admin:tenants_quotaclass_add"), {**data, "name": "new", "requirement_text": "cores>64"})
    assert "requirement_text" in bad.context["adminform"].form.errors
