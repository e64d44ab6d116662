"""The tenant pages in headless Chromium: alice creates a cluster and a node pool with the live
preview; carol cannot see it; every page, on a desktop and (dashboard, cluster) on a phone, with a
screenshot under test-artifacts/screenshots/ and no horizontal overflow."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from hosts.models import Host, HostClaim, HostStateChange
from tenants.clusters import cluster_create, node_pool_create
from tenants.models import Cluster, NodePool, PoolHost
from tests.browser import ARTIFACTS, shot
from tests.conftest import DEMO_PASSWORD
from tests.inventory import make_fleet

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


@pytest.fixture(autouse=True)
def _no_reconciles(monkeypatch):
    """Provisioning is not under test here: the pages render the rows as they are."""
    monkeypatch.setattr("tenants.clusters.reconcile_cluster_after_commit", lambda pk: None)
    monkeypatch.setattr("tenants.clusters.reconcile_pool_after_commit", lambda pk: None)


def sign_in(page, live_server, email: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state("networkidle")


def sign_out(page) -> None:
    page.context.clear_cookies()


def no_horizontal_overflow(page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"{page.url} is {overflow}px wider than the screen"


def test_alice_creates_a_cluster_and_a_pool_and_carol_cannot_see_it(page, live_server, world):
    make_fleet(24)
    sign_in(page, live_server, "alice@physics.example")
    page.wait_for_url(f"{live_server.url}/t/physics/")
    assert page.get_by_role("heading", name="Physics", exact=True).is_visible()
    assert page.get_by_text("No clusters yet.").is_visible()
    shot(page, "tenant-dashboard-empty")

    page.get_by_role("link", name="New cluster").first.click()
    page.wait_for_url(f"{live_server.url}/t/physics/clusters/new/")
    assert page.get_by_text("Control plane hosted: costs no servers.").is_visible()
    page.get_by_label("Name").fill("ml")
    page.get_by_label("Kata Containers (sandboxed pods)").check()
    shot(page, "cluster-new")
    page.get_by_role("button", name="Create cluster").click()
    page.wait_for_url(f"{live_server.url}/t/physics/clusters/ml/")
    assert page.get_by_text("Cluster ml created").is_visible()
    assert page.locator(".live-indicator").get_attribute("data-live") == "true"  # pending control plane
    shot(page, "cluster-created")

    page.get_by_role("link", name="Add node pool").first.click()
    page.wait_for_url(f"{live_server.url}/t/physics/clusters/ml/pools/new/")
    page.evaluate("window.__noReload = true")
    page.get_by_label("Name").fill("workers")
    page.locator("input[name=quota_class][value=general]").check()
    page.get_by_label("Hosts", exact=True).fill("2")
    page.locator("#pool-preview .described").wait_for()
    page.get_by_label("Extra requirement").press_sequentially("cores>=9999")
    page.locator("#pool-preview").get_by_text("Nothing fits").wait_for()
    shot(page, "pool-form-nothing-fits")
    page.get_by_label("Extra requirement").fill("")
    page.get_by_label("Extra requirement").press_sequentially("cores>=8")
    page.locator("#select-feasible").wait_for()
    assert "≥ 8 cores" in page.locator("#pool-preview .described").inner_text()
    assert page.evaluate("window.__noReload") is True  # the preview came by htmx
    shot(page, "pool-form-preview")
    page.get_by_role("button", name="Create node pool").click()
    page.wait_for_url(f"{live_server.url}/t/physics/clusters/ml/")
    assert page.get_by_text("Node pool workers created").is_visible()
    assert page.get_by_role("heading", name="workers").is_visible()
    assert page.get_by_text("Teapot is choosing 2 from the fleet").is_visible()
    pool = NodePool.objects.get(cluster__name="ml", name="workers")
    assert pool.replicas == 2 and pool.requirement

    # The reconcile (someone else's) allocates; the page follows without a reload.
    page.evaluate("window.__noReload = true")
    hosts = [
        h
        for h in Host.objects.filter(provisioning_state="available", claims__isnull=True).order_by("name")
        if "gpu" not in h.traits and "fpga" not in h.traits
    ]
    for host in hosts[:2]:
        claim = HostClaim.objects.create(host=host, holder=pool.holder, tenant="physics")
        PoolHost.objects.create(pool=pool, host=host, claim=claim, state=PoolHost.State.PROVISIONING, guaranteed=True)
    page.locator(".pool-hosts").wait_for(timeout=10000)
    assert page.evaluate("window.__noReload") is True
    shot(page, "cluster-detail-provisioning")

    sign_out(page)
    sign_in(page, live_server, "carol@genomics.example")
    page.wait_for_url(f"{live_server.url}/t/genomics/")
    assert "physics" not in page.locator("header").inner_text().lower()
    response = page.goto(f"{live_server.url}/t/physics/clusters/ml/")
    assert response.status == 404
    page.goto(f"{live_server.url}/t/genomics/clusters/")
    assert page.get_by_text("ml", exact=True).count() == 0
    shot(page, "carol-clusters")


def _busy_physics(world) -> Cluster:
    """physics/batch with two pools in every state a page can show, a pre-emption notice running
    and 30 days of usage; genomics/seq waiting for the pre-empted host."""
    hosts = make_fleet(48)
    cluster = cluster_create(tenant=world.physics, name="batch", addons=["kubevirt"], actor=world.alice)
    Cluster.objects.filter(pk=cluster.pk).update(
        phase=Cluster.Phase.READY, control_plane_ready=True, message="Control plane ready (2 replicas)."
    )
    cpu = node_pool_create(
        cluster=cluster, name="cpu", quota_class="general", image=world.image.name, replicas=4, actor=world.alice
    )
    gpu = node_pool_create(
        cluster=cluster,
        name="gpu",
        quota_class="gpu-a100",
        image=world.image.name,
        autoscale_min=0,
        autoscale_max=2,
        replicas=None,
        actor=world.alice,
    )
    general = [h for h in hosts if "gpu" not in h.traits and "fpga" not in h.traits]
    now = timezone.now()
    states = [PoolHost.State.READY, PoolHost.State.READY, PoolHost.State.PROVISIONING, PoolHost.State.ALLOCATED]
    for i, (host, state) in enumerate(zip(general[:4], states, strict=True)):
        claim = HostClaim.objects.create(host=host, holder=cpu.holder, tenant="physics")
        PoolHost.objects.create(
            pool=cpu,
            host=host,
            claim=claim,
            state=state,
            guaranteed=i != 1,
            allocated_at=now - timedelta(minutes=40 - i * 5),
            ready_at=now - timedelta(minutes=20) if state == PoolHost.State.READY else None,
        )
        if state == PoolHost.State.PROVISIONING:
            HostStateChange.objects.create(host=host, field="provisioning_state", old="available", new="provisioning")
    NodePool.objects.filter(pk=cpu.pk).update(phase=NodePool.Phase.SCALING, ready=2, message="2 of 4 workers ready.")
    # Usage: a host every day for the last month, a gpu now and then.
    for day in range(1, 29):
        start = now - timedelta(days=day, hours=3)
        host = general[10 + day % 6]
        claim = HostClaim.objects.create(
            host=host,
            holder=cpu.holder,
            tenant="physics",
            claimed_at=start,
            released_at=start + timedelta(hours=8 + day % 9),
        )
        PoolHost.objects.create(
            pool=cpu if day % 4 else gpu,
            host=host,
            claim=claim,
            state=PoolHost.State.RELEASED,
            allocated_at=start,
            released_at=start + timedelta(hours=8 + day % 9),
        )
    seq = cluster_create(tenant=world.genomics, name="seq", actor=world.carol)
    taker = node_pool_create(cluster=seq, name="w", quota_class="general", image=world.image.name, replicas=1)
    # genomics needs a general host within its guarantee: cpu's borrowed ready host has notice.
    PoolHost.objects.filter(pool=cpu, state=PoolHost.State.READY, guaranteed=False).update(
        preempt_at=now + timedelta(seconds=105), preempted_for=taker
    )
    cluster_create(tenant=world.physics, name="empty-one", actor=world.alice)
    return cluster


def test_every_tenant_page_on_a_desktop_and_a_phone(page, live_server, world):
    _busy_physics(world)
    sign_in(page, live_server, "alice@physics.example")
    pages = {
        "tenant-dashboard": "/t/physics/",
        "cluster-list": "/t/physics/clusters/",
        "cluster-detail": "/t/physics/clusters/batch/",
        "pool-scale": "/t/physics/clusters/batch/pools/cpu/scale/",
        "pool-delete": "/t/physics/clusters/batch/pools/cpu/delete/",
        "cluster-delete": "/t/physics/clusters/batch/delete/",
        "members": "/t/physics/members/",
        "tenant-audit": "/t/physics/audit/",
    }
    for name, url in pages.items():
        response = page.goto(f"{live_server.url}{url}")
        assert response.status == 200, url
        no_horizontal_overflow(page)
        shot(page, name)
    page.goto(f"{live_server.url}/t/physics/clusters/batch/")
    assert page.locator(".preempt-notice").first.inner_text().startswith("leaves in 1:")
    assert "for genomics" in page.locator(".preempt-notice").first.inner_text()
    assert page.locator(".live-indicator").get_attribute("data-live") == "true"

    # Scaling: the estimate follows the size as it is typed; then a confirmation step.
    page.goto(f"{live_server.url}/t/physics/clusters/batch/pools/cpu/scale/")
    page.get_by_label("Hosts", exact=True).fill("0")
    page.get_by_text("Scaling to 0:").wait_for()
    page.get_by_role("button", name="Review the change").click()
    page.get_by_role("button", name="Confirm: scale cpu").wait_for()
    shot(page, "pool-scale-confirm")

    page.set_viewport_size(PHONE)
    for name in ("tenant-dashboard", "cluster-detail", "cluster-list", "members"):
        page.goto(f"{live_server.url}{pages[name]}")
        no_horizontal_overflow(page)
        shot(page, f"{name}-phone")
        page.screenshot(path=str(ARTIFACTS / f"{name}-phone-top.png"))  # what the phone shows first
        if name == "cluster-detail":
            page.locator(".pool-card").first.screenshot(path=str(ARTIFACTS / "pool-card-phone.png"))


def test_olga_operator_pages(page, live_server, world):
    _busy_physics(world)
    sign_in(page, live_server, "olga@teapot.example")
    page.wait_for_url(f"{live_server.url}/")
    shot(page, "operator-dashboard")
    for name, url in {
        "operator-tenants": "/t/operator/tenants/",
        "operator-tenant-new": "/t/operator/tenants/new/",
        "operator-quota": "/t/operator/tenants/physics/quota/",
        "operator-capacity": "/t/operator/capacity/",
        "operator-audit": "/t/operator/audit/",
    }.items():
        response = page.goto(f"{live_server.url}{url}")
        assert response.status == 200, url
        no_horizontal_overflow(page)
        shot(page, name)
    page.locator("#id_tenant").select_option("genomics")
    page.wait_for_function("location.search.includes('tenant=genomics')")
    page.locator("#audit-table").get_by_text("genomics/seq").first.wait_for()
    assert page.locator("#audit-table").get_by_text("physics/batch").count() == 0
    # The quota form: an admission refusal is shown on its row, nothing saved.
    page.goto(f"{live_server.url}/t/operator/tenants/physics/quota/")
    page.locator("input[name='gpu-a100-maximum']").fill("60")
    page.locator("input[name='gpu-a100-guaranteed']").fill("50")
    page.get_by_role("button", name="Save quotas").click()
    page.locator(".row-error").first.wait_for()
    shot(page, "operator-quota-refused")
    # The switcher: olga works in genomics.
    page.locator(".tenant-switcher summary").click()
    page.get_by_role("button", name="Genomics").click()
    page.wait_for_url(f"{live_server.url}/t/genomics/")
    assert page.locator(".tenant-switcher summary").inner_text().endswith("genomics")
