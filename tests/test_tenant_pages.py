"""Tenant self-service pages (/t/<slug>/…) and the tenancy operator pages (/t/operator/…), around
the named people of tests/tenancy.py: alice owns physics, bob views it, dave is a member, carol
owns genomics, olga operates.

Every tenant URL is listed once (``TENANT_URLS``) and the access rules are parametrized over it:
anonymous → login, carol → 404, bob's writes → 403; a new URL is covered the day it is listed."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hosts.models import Host, HostClaim, HostStateChange
from tenants import progress
from tenants.access import SESSION_KEY
from tenants.clusters import cluster_create, node_pool_create
from tenants.models import AuditEntry, Cluster, Membership, NodePool, PoolHost, Quota, Role
from tests.inventory import make_fleet

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}
KUBECONFIG = "apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n    token: sekrit-kubeconfig-token-4711\n"

# Query ceilings (STYLE.md §11), measured with several clusters, pools and hosts (see the tests).
LIST_QUERIES = 9
DASHBOARD_QUERIES = 13
DETAIL_FRAGMENT_QUERIES = 15
DETAIL_PAGE_QUERIES = 16
POOL_FORM_QUERIES = 18
MEMBERS_QUERIES = 6
AUDIT_QUERIES = 7
OPERATOR_TENANTS_QUERIES = 8


# ----------------------------------------------------------------------------------- data


def hold(pool: NodePool, hosts, *, state=PoolHost.State.READY, guaranteed=True, **fields) -> list[PoolHost]:
    """``hosts`` held by ``pool`` (a claim each, as the provisioning reconcile makes them)."""
    rows = []
    for host in hosts:
        claim = HostClaim.objects.create(host=host, holder=pool.holder, tenant=pool.cluster.tenant.slug)
        rows.append(
            PoolHost.objects.create(pool=pool, host=host, claim=claim, state=state, guaranteed=guaranteed, **fields)
        )
    return rows


def settle(cluster: Cluster, *pools: NodePool) -> None:
    """Everything as the reconciles leave it once done: cluster ready, pools at their size."""
    Cluster.objects.filter(pk=cluster.pk).update(phase=Cluster.Phase.READY, control_plane_ready=True)
    for pool in pools:
        NodePool.objects.filter(pk=pool.pk).update(phase=NodePool.Phase.READY, ready=pool.desired)


@pytest.fixture
def physics(world):
    """physics/batch with a pool 'cpu' of 2 ready general hosts; everything settled."""
    cluster = cluster_create(tenant=world.physics, name="batch", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster, name="cpu", quota_class="general", image=world.image.name, replicas=2, actor=world.alice
    )
    hosts = make_fleet(8)
    general = [h for h in hosts if "gpu" not in h.traits and "fpga" not in h.traits][:2]
    hold(pool, general)
    settle(cluster, pool)
    cluster.refresh_from_db()
    pool.refresh_from_db()
    return {"world": world, "cluster": cluster, "pool": pool, "hosts": hosts}


def grow(world, clusters: int, pools: int, hosts_per_pool: int, *, prefix: str, into: Cluster | None = None) -> None:
    """More clusters (and more pools in ``into``), each pool with provisioning hosts, one of them
    under a pre-emption notice: so an N+1 shows in the query counts."""
    fleet = make_fleet((clusters + 1) * pools * hosts_per_pool, prefix=prefix)
    Quota.objects.filter(tenant=world.physics, quota_class=world.classes["general"]).update(maximum=1000)
    free = iter(fleet)
    targets = [into] if into is not None else []
    targets += [cluster_create(tenant=world.physics, name=f"{prefix}c{c}", actor=world.alice) for c in range(clusters)]
    for cluster in targets:
        for p in range(pools):
            pool = node_pool_create(
                cluster=cluster,
                name=f"{prefix}p{p}",
                quota_class="general",
                image=world.image.name,
                replicas=hosts_per_pool,
                actor=world.alice,
            )
            held = hold(pool, [next(free) for _ in range(hosts_per_pool)], state=PoolHost.State.PROVISIONING)
            PoolHost.objects.filter(pk=held[0].pk).update(preempt_at=timezone.now() + timedelta(minutes=2))
            for h in held:
                HostStateChange.objects.create(
                    host_id=h.host_id, field="provisioning_state", old="available", new="provisioning"
                )


# ----------------------------------------------------------------------------------- access rules


def tenant_urls(slug="physics", cluster="batch", pool="cpu", member_pk=0) -> dict[str, list[tuple[str, str]]]:
    """Every tenant-scoped URL: (method, url) for reads and for writes."""
    base = f"/t/{slug}"
    c = f"{base}/clusters/{cluster}"
    p = f"{c}/pools/{pool}"
    return {
        "read": [
            ("get", f"{base}/"),
            ("get", f"{base}/clusters/"),
            ("get", f"{c}/"),
            ("get", f"{base}/members/"),
        ],
        "write": [
            ("get", f"{base}/clusters/new/"),
            ("post", f"{base}/clusters/new/"),
            ("post", f"{c}/kubeconfig/"),
            ("get", f"{c}/delete/"),
            ("post", f"{c}/delete/"),
            ("get", f"{c}/pools/new/"),
            ("post", f"{c}/pools/new/"),
            ("post", f"{c}/pools/preview/"),
            ("get", f"{p}/scale/"),
            ("post", f"{p}/scale/"),
            ("get", f"{p}/delete/"),
            ("post", f"{p}/delete/"),
        ],
        "manage": [
            ("get", f"{base}/audit/"),
            ("post", f"{base}/members/"),
            ("post", f"{base}/members/{member_pk}/role/"),
            ("post", f"{base}/members/{member_pk}/remove/"),
        ],
    }


def every_url(**kw):
    urls = tenant_urls(**kw)
    return urls["read"] + urls["write"] + urls["manage"]


OPERATOR_URLS = [
    ("get", "/t/operator/tenants/"),
    ("get", "/t/operator/tenants/new/"),
    ("post", "/t/operator/tenants/new/"),
    ("get", "/t/operator/tenants/physics/quota/"),
    ("post", "/t/operator/tenants/physics/quota/"),
    ("get", "/t/operator/capacity/"),
    ("get", "/t/operator/audit/"),
]


def _bob_pk(world) -> int:
    return Membership.objects.get(tenant=world.physics, user=world.bob).pk


def test_anonymous_people_go_to_the_login_page(client, physics):
    for method, url in [*every_url(member_pk=_bob_pk(physics["world"])), *OPERATOR_URLS, ("get", "/t/")]:
        response = getattr(client, method)(url)
        assert response.status_code == 302, (method, url)
        assert response["Location"].startswith("/accounts/login/"), (method, url)


def test_carol_gets_404_on_every_physics_url(client, physics):
    world = physics["world"]
    client.force_login(world.carol)
    for method, url in every_url(member_pk=_bob_pk(world)):
        assert getattr(client, method)(url).status_code == 404, (method, url)
    # A pool or member of hers under physics' address is no way in either.
    assert client.post("/t/switch/", {"tenant": "physics"}).status_code == 404


def test_bob_the_viewer_reads_but_every_write_is_403(client, physics):
    world = physics["world"]
    client.force_login(world.bob)
    urls = tenant_urls(member_pk=_bob_pk(world))
    for method, url in urls["read"]:
        assert getattr(client, method)(url).status_code == 200, (method, url)
    for method, url in urls["write"] + urls["manage"]:
        assert getattr(client, method)(url).status_code == 403, (method, url)
    assert Cluster.objects.live().count() == 1 and AuditEntry.objects.filter(actor=world.bob).count() == 0


def test_dave_the_member_writes_but_does_not_manage_members_or_read_the_audit_log(client, physics):
    world = physics["world"]
    client.force_login(world.dave)
    assert client.get("/t/physics/clusters/new/").status_code == 200
    for method, url in tenant_urls(member_pk=_bob_pk(world))["manage"]:
        assert getattr(client, method)(url).status_code == 403, (method, url)


def test_operator_pages_are_403_for_alice(client, physics):
    client.force_login(physics["world"].alice)
    for method, url in OPERATOR_URLS:
        assert getattr(client, method)(url).status_code == 403, (method, url)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/t/physics/clusters/batch/kubeconfig/"),
        ("get", "/t/switch/"),
        ("get", "/t/physics/clusters/batch/pools/preview/"),
        ("post", "/t/physics/"),
        ("post", "/t/physics/clusters/"),
        ("post", "/t/physics/audit/"),
        ("delete", "/t/physics/clusters/batch/"),
    ],
)
def test_the_wrong_method_is_405(client, physics, method, url):
    client.force_login(physics["world"].alice)
    assert getattr(client, method)(url).status_code == 405


def test_olga_sees_every_tenant_without_being_a_member(client, physics):
    world = physics["world"]
    client.force_login(world.olga)
    for _method, url in tenant_urls()["read"]:
        assert client.get(url).status_code == 200, url
    assert client.get("/t/genomics/").status_code == 200


# ----------------------------------------------------------------------------------- navigation


def test_the_dashboard_sends_a_member_to_their_tenant(client, world):
    client.force_login(world.alice)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/t/physics/"


def test_the_navigation_links_clusters_and_switches_tenants(client, world):
    Membership.objects.create(tenant=world.genomics, user=world.alice, role=Role.VIEWER)
    client.force_login(world.alice)
    page = client.get("/t/physics/").content.decode()
    assert 'href="/t/physics/clusters/"' in page
    assert 'name="tenant" value="genomics"' in page and 'name="tenant" value="physics"' in page
    assert 'href="/t/operator/tenants/"' not in page
    response = client.post("/t/switch/", {"tenant": "genomics"})
    assert response.status_code == 302 and response["Location"] == "/t/genomics/"
    assert client.session[SESSION_KEY] == "genomics"
    assert client.get("/")["Location"] == "/t/genomics/"
    assert 'href="/t/genomics/clusters/"' in client.get("/t/genomics/").content.decode()


def test_operators_get_the_fleet_dashboard_with_a_tenants_summary(client, physics):
    world = physics["world"]
    client.force_login(world.olga)
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "active hosts" in page and "Physics" in page and "Genomics" in page
    assert 'href="/t/operator/tenants/"' in page and 'href="/t/operator/capacity/"' in page
    nav = page.split("<main", 1)[0]
    assert ">Tenants</a>" in nav and ">Capacity</a>" in nav
    client.force_login(world.alice)
    nav = client.get("/t/physics/").content.decode().split("<main", 1)[0]
    assert ">Tenants</a>" not in nav and ">Capacity</a>" not in nav


def test_someone_in_no_tenant_keeps_the_welcome_page(client, alice):
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 200
    assert "You are not in a tenant yet" in response.content.decode()
    assert client.get("/t/")["Location"] == "/"


# ----------------------------------------------------------------------------------- dashboard


def test_the_tenant_dashboard_shows_clusters_quota_and_usage(client, physics):
    world = physics["world"]
    # Yesterday a gpu host was held for 10 hours, then released.
    gpu_pool = node_pool_create(
        cluster=physics["cluster"], name="gpu", quota_class="gpu-a100", image=world.image.name, replicas=0
    )
    gpu_host = next(h for h in physics["hosts"] if "gpu-a100" in h.traits)
    start = timezone.now() - timedelta(days=1, hours=12)
    hold(gpu_pool, [gpu_host], allocated_at=start, released_at=start + timedelta(hours=10), state="released")
    client.force_login(world.alice)
    response = client.get("/t/physics/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'href="/t/physics/clusters/batch/"' in page
    assert "2 / 2" in page  # workers ready / desired
    assert "general" in page and "gpu-a100" in page  # quota bars
    assert 'class="quota-bar"' in page and "2 in use" in page.replace("<strong>", "").replace("</strong>", "")
    assert "<svg" in page and "host-hours" in page  # the usage chart
    assert "<table" in page and "The same as a table" in page
    assert page.count('class="series-') >= 2


# ----------------------------------------------------------------------------------- clusters


def test_the_cluster_list_filters_by_phase_and_answers_htmx_with_the_table(client, physics):
    world = physics["world"]
    cluster_create(tenant=world.physics, name="pending-one", actor=world.alice)
    client.force_login(world.alice)
    page = client.get("/t/physics/clusters/").content.decode()
    assert "batch" in page and "pending-one" in page
    page = client.get("/t/physics/clusters/?phase=ready").content.decode()
    assert "/clusters/batch/" in page and "/clusters/pending-one/" not in page
    fragment = client.get("/t/physics/clusters/?phase=pending", headers=HX)
    body = fragment.content.decode()
    assert "<html" not in body
    assert 'id="cluster-table"' in body and "/clusters/pending-one/" in body and "/clusters/batch/" not in body
    assert "HX-Request" in fragment["Vary"]


def test_alice_creates_a_cluster_and_lands_on_its_page(client, world):
    client.force_login(world.alice)
    page = client.get("/t/physics/clusters/new/").content.decode()
    assert "Control plane hosted: costs no servers" in page
    assert 'value="kubevirt"' in page and 'value="kata"' in page and "v1.31.4" in page
    response = client.post(
        "/t/physics/clusters/new/",
        {"name": "ml", "kubernetes_version": "v1.30.8", "control_plane_replicas": "3", "addons": ["kata"]},
    )
    assert response.status_code == 302 and response["Location"] == "/t/physics/clusters/ml/"
    cluster = Cluster.objects.get(tenant=world.physics, name="ml")
    assert (str(cluster.kubernetes_version), cluster.control_plane_replicas, cluster.addons) == ("v1.30.8", 3, ["kata"])
    assert AuditEntry.objects.filter(action="cluster.create", actor=world.alice).exists()
    page = client.get(response["Location"]).content.decode()
    assert "Cluster ml created" in page and "No node pools" in page


def test_a_refused_cluster_name_is_shown_next_to_the_field(client, physics):
    client.force_login(physics["world"].alice)
    response = client.post(
        "/t/physics/clusters/new/", {"name": "batch", "kubernetes_version": "v1.31.4", "control_plane_replicas": "2"}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "physics already has a cluster named batch" in page and 'id="id_name_error"' in page
    response = client.post(
        "/t/physics/clusters/new/", {"name": "Bad_Name", "kubernetes_version": "v1.31.4", "control_plane_replicas": "9"}
    )
    assert response.status_code == 400 and 'aria-invalid="true"' in response.content.decode()
    assert Cluster.objects.live().count() == 1


def test_the_cluster_page_shows_pools_hosts_and_events(client, physics):
    world = physics["world"]
    client.force_login(world.alice)
    page = client.get("/t/physics/clusters/batch/").content.decode()
    assert "cpu" in page and "2</strong> of 2 ready" in page
    for h in PoolHost.objects.filter(pool=physics["pool"]).select_related("host"):
        assert h.host.name in page
    assert "guaranteed" in page and "Download kubeconfig" in page
    assert "node_pool.create" in page and "cluster.create" in page  # events
    assert 'hx-trigger="every 2s"' not in page  # settled: no polling
    # A host's history before the pool took it is someone else's business.
    assert "new → available" not in page
    host = PoolHost.objects.filter(pool=physics["pool"]).first().host
    HostStateChange.objects.create(host=host, field="provisioning_state", old="available", new="provisioning")
    assert "available → provisioning" in client.get("/t/physics/clusters/batch/").content.decode()


def test_the_live_fragment_polls_while_hosts_provision_and_stops_when_settled(client, physics):
    world = physics["world"]
    client.force_login(world.alice)
    pool = physics["pool"]
    response = client.get("/t/physics/clusters/batch/", headers=HX)
    assert response.status_code == 286  # settled: htmx stops polling
    body = response.content.decode()
    assert "<html" not in body and 'id="cluster-live"' in body and 'hx-swap-oob="innerHTML"' in body
    # Scale up by one: a host is provisioning, the pool is short.
    NodePool.objects.filter(pk=pool.pk).update(desired=3, replicas=3, phase=NodePool.Phase.SCALING)
    extra = next(h for h in physics["hosts"] if "gpu" not in h.traits and not h.pool_hosts.exists())
    hold(pool, [extra], state=PoolHost.State.PROVISIONING, guaranteed=False)
    response = client.get("/t/physics/clusters/batch/", headers=HX)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'hx-trigger="every 2s"' in body and "to go" in body and "borrowed" in body
    assert "typical provisioning time" in body or "median" in body
    # Ready again: settled.
    PoolHost.objects.filter(host=extra).update(state=PoolHost.State.READY, ready_at=timezone.now())
    NodePool.objects.filter(pk=pool.pk).update(ready=3, phase=NodePool.Phase.READY)
    assert client.get("/t/physics/clusters/batch/", headers=HX).status_code == 286


def test_a_preemption_notice_counts_down_on_both_sides(client, physics):
    world = physics["world"]
    pool = physics["pool"]
    genomics = cluster_create(tenant=world.genomics, name="seq", actor=world.carol)
    taker = node_pool_create(cluster=genomics, name="w", quota_class="general", image=world.image.name, replicas=1)
    victim = PoolHost.objects.filter(pool=pool).first()
    PoolHost.objects.filter(pk=victim.pk).update(
        guaranteed=False, preempt_at=timezone.now() + timedelta(seconds=105), preempted_for=taker
    )
    client.force_login(world.alice)
    response = client.get("/t/physics/clusters/batch/", headers=HX)
    assert response.status_code == 200  # a notice is running: keep polling
    body = response.content.decode()
    assert (
        "leaves in" in body and "for genomics" in body and "genomics/seq" not in body and ">seq<" not in body
    )  # theirs
    assert "1:4" in body  # 1:45 or 1:44
    client.force_login(world.carol)
    body = client.get("/t/genomics/clusters/seq/").content.decode()
    assert "1 host coming from pre-emption" in body and victim.host.name not in body


def test_a_failed_pool_says_why_and_stops_polling(client, physics):
    pool = physics["pool"]
    NodePool.objects.filter(pk=pool.pk).update(
        phase=NodePool.Phase.FAILED, desired=3, message="3 hosts failed to provision: BMC unreachable"
    )
    client.force_login(physics["world"].alice)
    response = client.get("/t/physics/clusters/batch/", headers=HX)
    assert response.status_code == 286
    assert "3 hosts failed to provision: BMC unreachable" in response.content.decode()


# ----------------------------------------------------------------------------------- kubeconfig


@pytest.fixture
def management_cluster(tmp_path, settings):
    """The strict fake API server, reached through the real kubernetes client (the gateway the
    views get from settings)."""
    from tests.fakekube import FakeKubeServer

    with FakeKubeServer() as server:
        settings.TEAPOT_PROVISIONER = "kubernetes"
        settings.TEAPOT_KUBECONFIG = str(server.write_kubeconfig(tmp_path / "kubeconfig"))
        settings.TEAPOT_NAMESPACE = "teapot"
        yield server


def kubeconfig_secret(server, cluster: str, content: str) -> None:
    """What Cluster API writes: Secret ``<cluster>-kubeconfig`` with the config under ``value``."""
    import base64

    server.put_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{cluster}-kubeconfig", "namespace": "teapot"},
            "data": {"value": base64.b64encode(content.encode()).decode()},
        }
    )


def test_alice_downloads_the_kubeconfig_and_it_is_audited_but_never_shown(client, physics, management_cluster):
    kubeconfig_secret(management_cluster, "physics-batch", KUBECONFIG)
    world = physics["world"]
    client.force_login(world.alice)
    response = client.post("/t/physics/clusters/batch/kubeconfig/")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="physics-batch.kubeconfig"'
    assert response["Cache-Control"] == "no-store"
    assert response.content.decode() == KUBECONFIG
    entry = AuditEntry.objects.get(action="cluster.kubeconfig")
    assert entry.actor == world.alice and "sekrit" not in str(entry.before) + str(entry.after)
    for url in ("/t/physics/clusters/batch/", "/t/physics/audit/", "/t/physics/"):
        assert "sekrit-kubeconfig-token" not in client.get(url).content.decode(), url
    assert "sekrit-kubeconfig-token" not in client.get("/t/physics/clusters/batch/", headers=HX).content.decode()


def test_a_kubeconfig_not_there_yet_sends_alice_back_with_a_message(client, physics, management_cluster):
    client.force_login(physics["world"].alice)
    response = client.post("/t/physics/clusters/batch/kubeconfig/", follow=True)
    assert response.redirect_chain[-1][0] == "/t/physics/clusters/batch/"
    assert "not available yet" in response.content.decode()
    assert not AuditEntry.objects.filter(action="cluster.kubeconfig").exists()


# ----------------------------------------------------------------------------------- cluster delete


def test_deleting_a_cluster_needs_its_name_typed(client, physics):
    client.force_login(physics["world"].alice)
    page = client.get("/t/physics/clusters/batch/delete/").content.decode()
    assert "cpu" in page and "cleaned" in page and "Type" in page
    response = client.post("/t/physics/clusters/batch/delete/", {"confirm_name": "nope"})
    assert response.status_code == 400 and "Type batch exactly" in response.content.decode()
    assert Cluster.objects.get(pk=physics["cluster"].pk).phase == Cluster.Phase.READY
    response = client.post("/t/physics/clusters/batch/delete/", {"confirm_name": "batch"})
    assert response.status_code == 302 and response["Location"] == "/t/physics/clusters/"
    assert Cluster.objects.get(pk=physics["cluster"].pk).phase == Cluster.Phase.DELETING
    assert NodePool.objects.get(pk=physics["pool"].pk).phase == NodePool.Phase.DELETING


# ----------------------------------------------------------------------------------- node pools


POOL_FORM = {
    "name": "gpu",
    "quota_class": "gpu-a100",
    "requirement": "",
    "mode": "",
    "level": "",
    "hard": "prefer",
    "max_per_bucket": "",
    "image": "ubuntu-24.04-k8s-1.31",
    "cleaning": "standard",
    "workload_class": "on_demand",
    "sizing": "fixed",
    "replicas": "1",
}


def test_the_pool_form_shows_each_class_room_and_a_preview(client, physics):
    client.force_login(physics["world"].alice)
    response = client.get("/t/physics/clusters/batch/pools/new/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "room for 6 more hosts" in page  # general: max 8, the cpu pool asks for 2
    assert "room for 4 more hosts" in page  # gpu-a100: max 4
    assert "no quota in this class" in page  # highmem
    assert 'id="select-preview"' in page and "What you would get" in page
    for label in ("Guaranteed (within", "Pre-emptible", "Key erase", "spread", "rack"):
        assert label in page, label


def test_the_preview_follows_the_requirement_as_typed(client, physics):
    client.force_login(physics["world"].alice)
    url = "/t/physics/clusters/batch/pools/preview/"
    body = client.post(url, {**POOL_FORM, "quota_class": "general"}, headers=HX).content.decode()
    assert "<html" not in body and 'id="pool-preview"' in body and "per hour" in body
    assert "without gpu" in body or "no gpu" in body, body  # the class's requirement is part of it
    body = client.post(url, POOL_FORM, headers=HX).content.decode()
    assert "1× nvidia-a100" in body and "Nothing fits" in body  # the one A100 host is busy
    body = client.post(url, {**POOL_FORM, "requirement": "cores>=", "replicas": "1"}, headers=HX).content.decode()
    assert "Not a valid requirement" in body
    body = client.post(url, {**POOL_FORM, "requirement": "ram>=64Ti"}, headers=HX).content.decode()
    assert "Nothing fits" in body
    body = client.post(url, {**POOL_FORM, "replicas": "9"}, headers=HX).content.decode()
    assert "room for 4 more hosts" in body and "would be refused" in body
    body = client.post(url, {**POOL_FORM, "replicas": "0"}, headers=HX).content.decode()
    assert "control plane stays up" in body.lower()


def test_alice_creates_a_node_pool(client, physics):
    client.force_login(physics["world"].alice)
    form = {**POOL_FORM, "requirement": "cores>=8", "mode": "spread", "level": "rack", "workload_class": "guaranteed"}
    response = client.post("/t/physics/clusters/batch/pools/new/", form)
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert response["Location"] == "/t/physics/clusters/batch/"
    pool = NodePool.objects.get(cluster=physics["cluster"], name="gpu")
    assert pool.quota_class.name == "gpu-a100" and pool.replicas == 1 and pool.workload_class == "guaranteed"
    assert pool.policy["mode"] == "spread" and pool.policy["level"] == "rack"
    assert pool.requirement  # the extra requirement, stored as JSON


def test_an_autoscaled_pool_takes_min_and_max(client, physics):
    client.force_login(physics["world"].alice)
    form = {
        **POOL_FORM,
        "name": "auto",
        "sizing": "autoscale",
        "replicas": "",
        "autoscale_min": "0",
        "autoscale_max": "3",
    }
    assert client.post("/t/physics/clusters/batch/pools/new/", form).status_code == 302
    pool = NodePool.objects.get(name="auto")
    assert (pool.autoscale_min, pool.autoscale_max) == (0, 3)


def test_quota_refusals_are_shown_next_to_the_size(client, physics):
    client.force_login(physics["world"].alice)
    response = client.post("/t/physics/clusters/batch/pools/new/", {**POOL_FORM, "replicas": "9"})
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="replicas-error"' in page and "at most 4" in page
    response = client.post(
        "/t/physics/clusters/batch/pools/new/", {**POOL_FORM, "quota_class": "highmem", "name": "mem"}
    )
    assert "no quota for highmem" in response.content.decode()
    response = client.post("/t/physics/clusters/batch/pools/new/", {**POOL_FORM, "name": "cpu"})
    assert "already has a node pool named cpu" in response.content.decode()
    response = client.post("/t/physics/clusters/batch/pools/new/", {**POOL_FORM, "mode": "spread"})
    assert "say at which level to spread" in response.content.decode()
    assert NodePool.objects.count() == 1


def test_scaling_shows_the_cost_change_and_asks_for_confirmation(client, physics):
    pool = physics["pool"]
    client.force_login(physics["world"].alice)
    url = "/t/physics/clusters/batch/pools/cpu/scale/"
    page = client.get(url).content.decode()
    assert 'value="2"' in page and "Review the change" in page
    estimate = client.post(url, {"sizing": "fixed", "replicas": "4"}, headers=HX)
    body = estimate.content.decode()
    assert estimate.status_code == 200 and "<html" not in body and "Cost per hour" in body and "→" in body
    before = sum(Host.objects.filter(pool_hosts__pool=pool).values_list("cost_per_hour", flat=True), Decimal(0))
    assert f"{before:,.2f}" in body
    assert NodePool.objects.get(pk=pool.pk).replicas == 2  # htmx only estimates
    step2 = client.post(url, {"sizing": "fixed", "replicas": "4"})
    assert step2.status_code == 200 and 'name="confirm" value="yes"' in step2.content.decode()
    assert NodePool.objects.get(pk=pool.pk).replicas == 2
    done = client.post(url, {"sizing": "fixed", "replicas": "4", "confirm": "yes"})
    assert done.status_code == 302 and done["Location"] == "/t/physics/clusters/batch/"
    assert NodePool.objects.get(pk=pool.pk).replicas == 4


def test_scaling_to_zero_says_the_control_plane_stays_up(client, physics):
    client.force_login(physics["world"].alice)
    url = "/t/physics/clusters/batch/pools/cpu/scale/"
    body = client.post(url, {"sizing": "fixed", "replicas": "0"}, headers=HX).content.decode()
    assert "the control plane stays up, the hosts are released" in body
    response = client.post(url, {"sizing": "fixed", "replicas": "0", "confirm": "yes"}, follow=True)
    assert "The control plane stays up; the hosts are released." in response.content.decode()
    assert NodePool.objects.get(pk=physics["pool"].pk).desired == 0


def test_scaling_beyond_the_quota_is_refused_next_to_the_field(client, physics):
    client.force_login(physics["world"].alice)
    url = "/t/physics/clusters/batch/pools/cpu/scale/"
    response = client.post(url, {"sizing": "fixed", "replicas": "20", "confirm": "yes"})
    assert response.status_code == 400 and "at most 8" in response.content.decode()
    response = client.post(url, {"sizing": "autoscale", "autoscale_min": "3", "autoscale_max": "1"})
    assert response.status_code == 400 and "at least the minimum" in response.content.decode()


def test_deleting_a_pool_asks_first(client, physics):
    client.force_login(physics["world"].alice)
    page = client.get("/t/physics/clusters/batch/pools/cpu/delete/").content.decode()
    assert "2 hosts leave the cluster" in page and "scale it to 0" in page
    response = client.post("/t/physics/clusters/batch/pools/cpu/delete/")
    assert response.status_code == 302 and response["Location"] == "/t/physics/clusters/batch/"
    assert NodePool.objects.get(pk=physics["pool"].pk).phase == NodePool.Phase.DELETING


# ----------------------------------------------------------------------------------- members


def test_everyone_in_the_tenant_sees_the_members(client, world):
    client.force_login(world.bob)
    page = client.get("/t/physics/members/").content.decode()
    for email in ("alice@physics.example", "bob@physics.example", "dave@physics.example"):
        assert email in page
    assert "carol@genomics.example" not in page
    assert "Add someone" not in page and "<select" not in page  # bob only reads


def test_alice_adds_changes_and_removes_members(client, world):
    client.force_login(world.alice)
    response = client.post("/t/physics/members/", {"email": "erin@physics.example", "role": "member"})
    assert response.status_code == 302 and response["Location"] == "/t/physics/members/"
    erin = Membership.objects.get(tenant=world.physics, user__email="erin@physics.example")
    assert erin.role == "member"
    body = client.post(f"/t/physics/members/{erin.pk}/role/", {"role": "viewer"}, headers=HX).content.decode()
    assert "<html" not in body and 'id="members-body"' in body and "is now viewer" in body
    assert Membership.objects.get(pk=erin.pk).role == "viewer"
    response = client.post(f"/t/physics/members/{erin.pk}/remove/")
    assert response.status_code == 302 and not Membership.objects.filter(pk=erin.pk).exists()
    response = client.post("/t/physics/members/", {"email": "bob@physics.example", "role": "member"})
    assert response.status_code == 400 and "already a viewer of physics" in response.content.decode()


def test_the_last_owner_cannot_leave_or_step_down(client, world):
    client.force_login(world.alice)
    alice = Membership.objects.get(tenant=world.physics, user=world.alice)
    response = client.post(f"/t/physics/members/{alice.pk}/role/", {"role": "member"})
    assert response.status_code == 400 and "keeps at least one owner" in response.content.decode()
    body = client.post(f"/t/physics/members/{alice.pk}/remove/", headers=HX).content.decode()
    assert "keeps at least one owner" in body and 'id="member-error-' in body
    assert Membership.objects.get(pk=alice.pk).role == "owner"


def test_a_member_of_another_tenant_is_404(client, world):
    client.force_login(world.alice)
    carols = Membership.objects.get(tenant=world.genomics, user=world.carol)
    assert client.post(f"/t/physics/members/{carols.pk}/remove/").status_code == 404


# ----------------------------------------------------------------------------------- audit


def test_the_audit_log_shows_before_and_after(client, physics):
    client.force_login(physics["world"].alice)
    client.post("/t/physics/clusters/batch/pools/cpu/scale/", {"sizing": "fixed", "replicas": "3", "confirm": "yes"})
    page = client.get("/t/physics/audit/").content.decode()
    assert "node_pool.scale" in page and "<del>2</del> → <ins>3</ins>" in page
    assert "alice@physics.example" in page
    client.force_login(physics["world"].carol)
    assert "node_pool.scale" not in client.get("/t/genomics/audit/").content.decode()


# ----------------------------------------------------------------------------------- operators


def test_olga_sees_every_tenant_with_usage(client, physics):
    client.force_login(physics["world"].olga)
    page = client.get("/t/operator/tenants/").content.decode()
    assert "Physics" in page and "Genomics" in page and 'class="quota-bar"' in page
    assert 'href="/t/operator/tenants/physics/quota/"' in page


def test_olga_creates_a_tenant_with_a_first_owner(client, world):
    client.force_login(world.olga)
    form = {"slug": "chem", "name": "Chemistry", "priority": "3", "owner_email": "ann@chem.example"}
    response = client.post("/t/operator/tenants/new/", form)
    assert response.status_code == 302 and response["Location"] == "/t/operator/tenants/chem/quota/"
    assert Membership.objects.get(tenant__slug="chem", user__email="ann@chem.example").role == "owner"
    response = client.post("/t/operator/tenants/new/", {**form, "slug": "operator"})
    assert response.status_code == 400 and "reserved" in response.content.decode()
    response = client.post("/t/operator/tenants/new/", form)
    assert response.status_code == 400 and "A tenant named chem exists" in response.content.decode()


def test_olga_sets_quotas_and_admission_refusals_are_shown(client, world):
    make_fleet(8)
    client.force_login(world.olga)
    page = client.get("/t/operator/tenants/physics/quota/").content.decode()
    assert 'name="general-guaranteed"' in page and 'value="2"' in page
    data = {
        "general-guaranteed": "3",
        "general-maximum": "8",
        "gpu-a100-guaranteed": "1",
        "gpu-a100-maximum": "4",
        "highmem-guaranteed": "0",
        "highmem-maximum": "1",
    }
    response = client.post("/t/operator/tenants/physics/quota/", data)
    assert response.status_code == 302
    quotas = {q.quota_class.name: (q.guaranteed, q.maximum) for q in Quota.objects.filter(tenant=world.physics)}
    assert quotas == {"general": (3, 8), "gpu-a100": (1, 4), "highmem": (0, 1)}
    response = client.post(
        "/t/operator/tenants/physics/quota/",
        {**data, "gpu-a100-guaranteed": "4", "highmem-maximum": "2", "gpu-a100-maximum": "50"},
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="id_gpu-a100-guaranteed_error"' in page and "gpu-a100" in page
    quotas = {q.quota_class.name: (q.guaranteed, q.maximum) for q in Quota.objects.filter(tenant=world.physics)}
    assert quotas["gpu-a100"] == (1, 4) and quotas["highmem"] == (0, 1)  # nothing saved


def test_the_capacity_page_highlights_classes_short_of_hosts(client, world):
    make_fleet(8)
    client.force_login(world.olga)
    response = client.get("/t/operator/capacity/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<svg" in page and "general" in page and "gpu-a100" in page
    assert "guarantees exceed the hosts" in page
    # highmem: genomics guaranteed 0; the world promises 1 gpu-a100 host: make highmem short.
    Quota.objects.filter(tenant=world.genomics, quota_class=world.classes["highmem"]).update(guaranteed=2, maximum=2)
    page = client.get("/t/operator/capacity/").content.decode()
    assert "cannot keep every guarantee" in page and 'class="row-short"' in page


def test_the_operator_audit_log_filters_by_tenant_and_action(client, physics):
    world = physics["world"]
    cluster_create(tenant=world.genomics, name="seq", actor=world.carol)
    client.force_login(world.olga)
    page = client.get("/t/operator/audit/").content.decode()
    assert "physics/batch" in page and "genomics/seq" in page
    body = client.get("/t/operator/audit/?tenant=genomics&action=cluster.create", headers=HX).content.decode()
    assert "<html" not in body and "genomics/seq" in body and "physics/batch" not in body


# ----------------------------------------------------------------------------------- ETA


def _provisioned(host, started, seconds):
    HostStateChange.objects.create(
        host=host, field="provisioning_state", old="available", new="provisioning", at=started
    )
    HostStateChange.objects.create(
        host=host,
        field="provisioning_state",
        old="provisioning",
        new="provisioned",
        at=started + timedelta(seconds=seconds),
    )


def test_eta_uses_the_class_median_then_the_fleet_then_15_minutes(world):
    hosts = make_fleet(16)
    now = timezone.now()
    klass = hosts[0].hardware_class
    same = [h for h in hosts if h.hardware_class == klass]
    other = next(h for h in hosts if h.hardware_class != klass)
    assert progress.pool_eta([progress.Remaining(klass, None)], unallocated=0).seconds == 15 * 60
    cache.clear()
    for i, host in enumerate(same[:2]):
        _provisioned(host, now - timedelta(hours=2 + i), [600, 800][i])
    _provisioned(other, now - timedelta(hours=5), 2000)
    known = progress.latencies()
    assert known.by_class[klass] == 700 and known.fleet == 800
    eta = progress.pool_eta([progress.Remaining(klass, now - timedelta(seconds=100))], unallocated=0, now=now)
    assert eta.seconds == 600 and "this hardware" in eta.basis
    eta = progress.pool_eta([], unallocated=2, known=known, now=now)
    assert eta.seconds == 800 and "fleet median" in eta.basis
    eta = progress.pool_eta([progress.Remaining(klass, now - timedelta(seconds=900))], unallocated=0, now=now)
    assert eta.seconds == 0 and eta.overdue
    assert progress.pool_eta([], unallocated=0) is None


# ----------------------------------------------------------------------------------- query counts


def _measure(client, url, headers=None):
    cache.clear()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, headers=headers or {})
        assert response.status_code in (200, 286), (url, response.status_code)
    return len(queries)


@pytest.mark.parametrize(
    ("url", "headers", "ceiling"),
    [
        ("/t/physics/", None, DASHBOARD_QUERIES),
        ("/t/physics/clusters/", None, LIST_QUERIES),
        ("/t/physics/clusters/batch/", HX, DETAIL_FRAGMENT_QUERIES),
        ("/t/physics/clusters/batch/", None, DETAIL_PAGE_QUERIES),
        ("/t/physics/clusters/batch/pools/new/", None, POOL_FORM_QUERIES),
        ("/t/physics/members/", None, MEMBERS_QUERIES),
        ("/t/physics/audit/", None, AUDIT_QUERIES),
    ],
)
def test_tenant_pages_take_a_constant_number_of_queries(
    client, physics, django_assert_max_num_queries, url, headers, ceiling
):
    world, cluster = physics["world"], physics["cluster"]
    client.force_login(world.alice)
    client.get("/t/physics/")  # the session knows the tenant
    grow(world, clusters=1, pools=1, hosts_per_pool=1, prefix="s", into=cluster)
    small = _measure(client, url, headers)
    grow(world, clusters=4, pools=3, hosts_per_pool=3, prefix="k", into=cluster)
    User = world.alice.__class__
    for i in range(5):
        Membership.objects.create(tenant=world.physics, user=User.objects.create_user(f"m{i}@physics.example"))
    cache.clear()
    with django_assert_max_num_queries(ceiling):
        response = client.get(url, headers=headers or {})
    assert response.status_code in (200, 286)
    assert _measure(client, url, headers) == small


def test_operator_tenants_list_takes_a_constant_number_of_queries(client, physics, django_assert_max_num_queries):
    world = physics["world"]
    client.force_login(world.olga)
    small = _measure(client, "/t/operator/tenants/")
    from tenants.services import tenant_create

    for i in range(5):
        tenant_create(slug=f"t{i}", name=f"T{i}")
    grow(world, clusters=2, pools=2, hosts_per_pool=2, prefix="q")
    with django_assert_max_num_queries(OPERATOR_TENANTS_QUERIES):
        client.get("/t/operator/tenants/")
    assert _measure(client, "/t/operator/tenants/") == small
