"""End to end in headless Chromium, with the lab provisioning for real: alice creates a cluster
with a GPU node pool, watches it become ready on the cluster page (which polls), scales it to
zero and back; carol, in another tenant, cannot see it.

The test drives the lab's clock and the reconciles itself (``tests.labfleet``) — the same code
the Celery worker runs — while the browser only reads pages, as a person would."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from hosts.models import Host
from tenants.models import NodePool
from tests.browser import shot
from tests.conftest import DEMO_PASSWORD
from tests.inventory import ensure_rules
from tests.labfleet import Lab, assert_every_host_accounted_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _reconciles_run_here(monkeypatch):
    """No broker messages: the test runs the reconciles itself, between the browser's looks."""
    monkeypatch.setattr("tenants.clusters.reconcile_cluster_after_commit", lambda pk: None)
    monkeypatch.setattr("tenants.clusters.reconcile_pool_after_commit", lambda pk: None)


@pytest.fixture
def lab(world):
    ensure_rules()
    lab = Lab()
    for i in range(3):
        lab.enrol(f"gpu-{i}", "gpu-a100", {"site": "lab", "room": "a", "row": "1", "rack": f"r{i}"})
    lab.run()
    lab.run(400)
    assert Host.objects.filter(provisioning_state="available").count() == 3
    return lab


def sign_in(page, live_server, email: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state("networkidle")


def scale(page, hosts: int) -> None:
    """The scale form: the new size, a review with the cost before and after, then confirm."""
    page.get_by_label("Hosts", exact=True).fill(str(hosts))
    page.get_by_role("button", name="Review the change").click()
    page.get_by_role("button", name="Confirm: scale gpu").click()


def drive(lab: Lab, pool_id: int, done, rounds: int = 40) -> None:
    for _ in range(rounds):
        lab.reconcile(1, 120)
        if done(NodePool.objects.get(pk=pool_id)):
            return
    raise AssertionError("the lab never got there")


def test_a_gpu_cluster_comes_up_scales_to_zero_and_back_and_stays_private(page, live_server, world, lab):
    sign_in(page, live_server, "alice@physics.example")
    page.goto(f"{live_server.url}/t/physics/clusters/new/")
    page.get_by_label("Name").fill("vision")
    page.get_by_role("button", name="Create cluster").click()
    page.wait_for_url(f"{live_server.url}/t/physics/clusters/vision/")

    page.get_by_role("link", name="Add node pool").first.click()
    page.get_by_label("Name").fill("gpu")
    page.locator("input[name=quota_class][value=gpu-a100]").check()
    page.get_by_label("Hosts", exact=True).fill("2")
    page.locator("#select-feasible").wait_for()
    page.get_by_role("button", name="Create node pool").click()
    page.wait_for_url(f"{live_server.url}/t/physics/clusters/vision/")
    pool = NodePool.objects.get(cluster__name="vision", name="gpu")

    # Provisioning takes ~15 simulated minutes; the page follows by itself (polling every 2 s).
    drive(lab, pool.pk, lambda p: p.phase == NodePool.Phase.READY)
    card = page.locator(".pool-card", has_text="gpu").first
    expect(card).to_contain_text(re.compile(r"2\s+of 2 ready"), timeout=15_000)
    expect(page.locator(".pool-hosts").first).to_contain_text("ready")
    expect(page.locator("#cluster-phase")).to_contain_text("Ready")  # the heading follows too
    shot(page, "flow-gpu-pool-ready")
    assert_every_host_accounted_for()

    # Scale to zero: the hosts are released, the control plane stays.
    page.goto(f"{live_server.url}/t/physics/clusters/vision/pools/gpu/scale/")
    scale(page, 0)
    page.wait_for_url(f"{live_server.url}/t/physics/clusters/vision/")
    drive(lab, pool.pk, lambda p: p.phase == NodePool.Phase.READY and not p.pool_hosts.filter(released_at=None))
    expect(page.get_by_text("Scaled to zero").first).to_be_visible(timeout=15_000)
    expect(page.locator("#cluster-phase")).to_contain_text("Ready")
    shot(page, "flow-scaled-to-zero")
    assert_every_host_accounted_for()

    # And back to one.
    page.goto(f"{live_server.url}/t/physics/clusters/vision/pools/gpu/scale/")
    scale(page, 1)
    page.wait_for_url(f"{live_server.url}/t/physics/clusters/vision/")
    drive(lab, pool.pk, lambda p: p.ready == 1 and p.phase == NodePool.Phase.READY)
    expect(card).to_contain_text(re.compile(r"1\s+of 1 ready"), timeout=15_000)
    shot(page, "flow-scaled-back")
    assert_every_host_accounted_for()

    # carol, of genomics, sees nothing of it.
    sign_in(page, live_server, "carol@genomics.example")
    assert page.goto(f"{live_server.url}/t/physics/clusters/vision/").status == 404
    page.goto(f"{live_server.url}/t/genomics/clusters/")
    assert page.get_by_text("vision", exact=True).count() == 0
