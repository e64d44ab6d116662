"""The `kubernetes` gateway's own behaviour over real HTTP: retries with backoff on 429/5xx,
clear errors otherwise, timeouts, the connection check, and manifests export."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from teapot_portal.gateway import Forbidden, NotFound, Unavailable, kinds
from teapot_portal.gateway.kube import KubernetesGateway
from tests.fakekube import CrdRegistry, FakeKubeServer
from tests.test_gateway_interface import CLUSTER, ENROLMENT, NS, POOL


class SleepRecorder:
    """Stands in for time.sleep so backoff is observable and the test does not wait."""

    def __init__(self):
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def server():
    with FakeKubeServer() as srv:
        yield srv


@pytest.fixture
def sleeps():
    return SleepRecorder()


@pytest.fixture
def gateway(server, sleeps):
    return KubernetesGateway(server.api_client(), NS, retries=3, backoff=0.5, sleep=sleeps)


def test_429_is_retried_honouring_retry_after(server, gateway, sleeps):
    server.inject_errors(429, count=2, retry_after=3, method="PATCH")
    gateway.enrol_host(ENROLMENT)
    assert sleeps.delays == [3.0, 3.0]
    assert gateway.get_host("node-1").name == "node-1"


def test_5xx_is_retried_with_exponential_backoff(server, gateway, sleeps):
    server.inject_errors(503, count=3, method="GET")
    with pytest.raises(NotFound):
        gateway.get_host("ghost")  # three 503s, then the real answer
    assert len(sleeps.delays) == 3
    assert 0.25 <= sleeps.delays[0] <= 0.5 and 1.0 <= sleeps.delays[2] <= 2.0  # 0.5·2^n with jitter


def test_persistent_5xx_becomes_unavailable(server, gateway, sleeps):
    server.inject_errors(500, count=10)
    with pytest.raises(Unavailable, match="answered 500"):
        gateway.list_hosts()
    assert len(sleeps.delays) == 3


def test_forbidden_is_not_retried(server, gateway, sleeps):
    server.deny("list", "metal3.io", "baremetalhosts")
    with pytest.raises(Forbidden, match="cannot list"):
        gateway.list_hosts()
    assert sleeps.delays == []


def test_unreachable_server_is_unavailable(sleeps):
    with FakeKubeServer() as srv:
        client = srv.api_client()
    gateway = KubernetesGateway(client, NS, retries=1, backoff=0.01, sleep=sleeps, timeout=(0.5, 0.5))
    with pytest.raises(Unavailable, match="unreachable"):
        gateway.list_hosts()


def test_every_call_has_a_timeout(server, sleeps):
    server.latency = 1.0
    gateway = KubernetesGateway(server.api_client(), NS, retries=0, sleep=sleeps, timeout=(1.0, 0.2))
    with pytest.raises(Unavailable):
        gateway.list_hosts()


def test_writes_are_server_side_apply_by_teapot(server, gateway):
    gateway.enrol_host(ENROLMENT)
    writes = server.writes
    gateway.enrol_host(ENROLMENT)
    assert server.writes == writes  # the second apply changed nothing on the server
    patches = [r for r in server.requests if r[0] == "PATCH"]
    assert patches and all(r[3] == "application/apply-patch+yaml" for r in patches)
    assert all(r[2].get("fieldManager") == "teapot" for r in patches)


def test_host_labels_are_merge_patches_not_owned_fields(server, gateway):
    gateway.enrol_host(ENROLMENT)
    gateway.patch_host_metadata("node-1", labels={"teapot.io/node-pool": "p"})
    assert server.requests[-1][3] == "application/merge-patch+json"


def test_status_written_by_controllers_is_read_back(server, gateway):
    gateway.enrol_host(ENROLMENT)
    server.set_status(
        "metal3.io/v1alpha1",
        "BareMetalHost",
        NS,
        "node-1",
        {
            "operationalStatus": "error",
            "errorType": "registration error",
            "errorMessage": "BMC unreachable",
            "errorCount": 2,
            "poweredOn": False,
            "provisioning": {"state": "registering", "ID": "", "image": {"url": ""}},
        },
    )
    host = gateway.get_host("node-1")
    assert (host.provisioning_state, host.operational_status, host.error_type) == (
        "registering",
        "error",
        "registration error",
    )
    assert host.error_message == "BMC unreachable" and host.error_count == 2


def test_check_reports_each_problem_clearly(server, gateway):
    results = {name: (ok, message) for name, ok, message in gateway.check()}
    assert results["reachable"][0]
    assert all(ok for ok, _ in results.values()), results
    server.remove_group("controlplane.cluster.x-k8s.io")
    server.deny("list", "infrastructure.cluster.x-k8s.io", "metal3machines")
    results = {name: (ok, message) for name, ok, message in gateway.check()}
    ok, message = results["crd kamajicontrolplanes.controlplane.cluster.x-k8s.io"]
    assert not ok and "install the provider" in message
    ok, message = results["rbac list metal3machines.infrastructure.cluster.x-k8s.io"]
    assert not ok and "deploy/rbac.yaml" in message


def test_check_management_cluster_command(server, tmp_path, settings):
    settings.TEAPOT_PROVISIONER = "kubernetes"
    settings.TEAPOT_KUBECONFIG = str(server.write_kubeconfig(tmp_path / "kubeconfig"))
    settings.TEAPOT_NAMESPACE = NS
    out = io.StringIO()
    call_command("check_management_cluster", stdout=out)
    assert "reachable" in out.getvalue() and "FAIL" not in out.getvalue()
    server.remove_group("metal3.io")
    with pytest.raises(CommandError, match="check\\(s\\) failed"):
        call_command("check_management_cluster", stdout=io.StringIO())


def test_check_without_kubeconfig_is_a_clear_error(tmp_path, settings):
    settings.TEAPOT_PROVISIONER = "kubernetes"
    settings.TEAPOT_KUBECONFIG = str(tmp_path / "missing")
    with pytest.raises(CommandError, match="cannot load the cluster configuration"):
        call_command("check_management_cluster")


def test_export_manifests_is_valid_desired_state_without_secrets(server, tmp_path, settings):
    settings.TEAPOT_PROVISIONER = "kubernetes"
    settings.TEAPOT_KUBECONFIG = str(server.write_kubeconfig(tmp_path / "kubeconfig"))
    settings.TEAPOT_NAMESPACE = NS
    gateway = KubernetesGateway.from_settings()
    gateway.enrol_host(ENROLMENT)
    gateway.apply_cluster(CLUSTER)
    gateway.apply_node_pool(POOL)
    out = io.StringIO()
    call_command("export_manifests", stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert "hunter2-bmc" not in text
    documents = list(yaml.safe_load_all(text))
    assert {d["kind"] for d in documents} == {k.kind for k in kinds.WRITTEN}
    registry = CrdRegistry.load(settings.TEAPOT_CRD_DIR)
    for document in documents:
        assert "status" not in document and "uid" not in document["metadata"]
        assert registry.validate(document) == [], document["metadata"]["name"]
    out = io.StringIO()
    call_command("export_manifests", "--tenant", "physics", "--cluster", "lab", stdout=out, stderr=io.StringIO())
    kinds_for_cluster = {d["kind"] for d in yaml.safe_load_all(out.getvalue())}
    assert "BareMetalHost" not in kinds_for_cluster and "Cluster" in kinds_for_cluster
    with pytest.raises(CommandError, match="--cluster needs --tenant"):
        call_command("export_manifests", "--cluster", "lab")


def test_a_host_in_use_is_not_re_enrolled(server, gateway):
    from dataclasses import replace

    from teapot_portal.gateway import Conflict

    gateway.enrol_host(ENROLMENT)
    consumer = {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "Metal3Machine", "name": "m-1"}
    gateway.custom.patch_namespaced_custom_object(
        "metal3.io", "v1alpha1", NS, "baremetalhosts", "node-1", {"spec": {"consumerRef": consumer, "online": False}}
    )
    with pytest.raises(Conflict, match="in use by Metal3Machine/m-1"):
        gateway.enrol_host(replace(ENROLMENT, automated_cleaning_mode="disabled"))
    host = gateway.get_host("node-1")
    assert host.online is False and host.automated_cleaning_mode == "metadata"  # CAPM3's values kept
