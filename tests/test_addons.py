"""The add-on ClusterResourceSets (deploy/addons/) agree with Teapot's code and with what they
install: the label the builders put on a Cluster is exactly what a CRS selects, every resource
a CRS lists is in the file, every object it would create is a Kubernetes object, images and the
KubeVirt release are pinned, and the Kata RuntimeClasses use handlers kata-deploy configures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from teapot_portal.gateway import builders, kinds
from teapot_portal.gateway.builders import ClusterSpec

ROOT = Path(__file__).resolve().parent.parent
ADDONS_DIR = ROOT / "deploy" / "addons"
FILES = ("kubevirt.yaml", "kata.yaml")
CRS_GROUP = "addons.cluster.x-k8s.io"
KUBEVIRT_RELEASE = re.compile(r"^https://github\.com/kubevirt/kubevirt/releases/download/(v\d+\.\d+\.\d+)/([\w.-]+)$")
KATA_NODE_LABEL = "katacontainers.io/kata-runtime"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ADDONS_DIR / name).read_text()) if d]


def _all_docs() -> list[tuple[str, dict]]:
    return [(name, doc) for name in FILES for doc in _docs(name)]


def _crs(docs) -> list[dict]:
    return [d for d in docs if d["kind"] == "ClusterResourceSet"]


def _payload(configmap: dict) -> list[dict]:
    """The objects a ConfigMap makes in the tenant cluster (every data value, every document)."""
    return [obj for value in configmap["data"].values() for obj in yaml.safe_load_all(value) if obj is not None]


def _tenant_objects(name: str) -> list[dict]:
    return [obj for d in _docs(name) if d["kind"] == "ConfigMap" for obj in _payload(d)]


def _one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_specs(objects: list[dict]) -> list[dict]:
    specs = []
    for obj in objects:
        if obj["kind"] == "Pod":
            specs.append(obj["spec"])
        elif obj["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
            specs.append(obj["spec"]["template"]["spec"])
        elif obj["kind"] == "CronJob":
            specs.append(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return specs


def _containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _teapot_namespace() -> str:
    """TEAPOT_NAMESPACE as the shipped deployment sets it (deploy/teapot.yaml)."""
    deployment = yaml.safe_load_all((ROOT / "deploy" / "teapot.yaml").read_text())
    (config,) = [d for d in deployment if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "teapot-config"]
    return config["data"]["TEAPOT_NAMESPACE"]


def _cluster_labels(addons: tuple[str, ...]) -> dict[str, str]:
    spec = ClusterSpec(
        tenant="physics",
        name="lab",
        kubernetes_version="1.33.1",
        endpoint_host="192.0.2.10",
        addons=addons,
    )
    (cluster,) = [o for o in builders.cluster_objects(spec, "teapot") if o["kind"] == "Cluster"]
    return cluster["metadata"]["labels"]


def _selects(crs: dict, labels: dict[str, str]) -> bool:
    selector = crs["spec"]["clusterSelector"]
    assert set(selector) == {"matchLabels"}, "the add-on CRSs select by matchLabels only"
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


# --------------------------------------------------------------------------- the contract with builders


def test_every_file_parses_and_holds_only_crs_and_configmaps():
    for name in FILES:
        docs = _docs(name)
        assert docs, name
        assert {d["kind"] for d in docs} == {"ClusterResourceSet", "ConfigMap"}, name
        assert len(_crs(docs)) == 1, f"{name}: one ClusterResourceSet per add-on"


@pytest.mark.parametrize("addon", builders.ADDONS)
def test_each_addon_has_one_crs_selecting_exactly_the_builders_label(addon):
    # The label comes from the builder itself, so a renamed prefix or value breaks this test.
    added = {k: v for k, v in _cluster_labels((addon,)).items() if k.startswith(builders.LABEL_ADDON_PREFIX)}
    assert added == {builders.LABEL_ADDON_PREFIX + addon: "enabled"}
    matching = [crs for _, crs in _all_docs() if crs["kind"] == "ClusterResourceSet" and _selects(crs, added)]
    assert len(matching) == 1, f"{addon}: {len(matching)} ClusterResourceSets select it"
    assert matching[0]["spec"]["clusterSelector"] == {"matchLabels": added}


def test_no_crs_selects_a_label_teapot_does_not_set():
    expected = {builders.LABEL_ADDON_PREFIX + addon for addon in builders.ADDONS}
    selected = {key for _, crs in _all_docs() if crs["kind"] == "ClusterResourceSet"
                for key in crs["spec"]["clusterSelector"]["matchLabels"]}  # fmt: skip
    assert selected == expected


def test_cluster_objects_label_the_cluster_for_both_addons():
    labels = _cluster_labels(("kubevirt", "kata"))
    assert labels[builders.LABEL_ADDON_PREFIX + "kubevirt"] == "enabled"
    assert labels[builders.LABEL_ADDON_PREFIX + "kata"] == "enabled"
    crs = {addon: _crs(_docs(f"{addon}.yaml"))[0] for addon in builders.ADDONS}
    assert all(_selects(c, labels) for c in crs.values())
    # Only what was asked for: no add-on, no CRS; one add-on, its CRS only.
    assert not any(_selects(c, _cluster_labels(())) for c in crs.values())
    kata_only = _cluster_labels(("kata",))
    assert _selects(crs["kata"], kata_only) and not _selects(crs["kubevirt"], kata_only)


def test_the_tenant_model_offers_exactly_the_builders_addons():
    from tenants.models import Cluster

    assert set(Cluster.Addon.values) == set(builders.ADDONS)


# --------------------------------------------------------------------------- ClusterResourceSets


@pytest.mark.parametrize("name", FILES)
def test_crs_shape(name):
    (crs,) = _crs(_docs(name))
    # The same API contract as the Cluster objects Teapot writes (CAPI v1.13: v1beta2).
    assert crs["apiVersion"] == f"{CRS_GROUP}/{kinds.CLUSTER.version}"
    spec = crs["spec"]
    # Spelled out: the field is immutable, and the defaulted value is easy to overlook.
    assert spec["strategy"] == "ApplyOnce"
    assert 1 <= len(spec["resources"]) <= 100  # the v1beta2 CRD's bounds
    for resource in spec["resources"]:
        assert resource["kind"] in ("ConfigMap", "Secret")
        assert resource["name"]


@pytest.mark.parametrize("name", FILES)
def test_everything_lives_in_teapot_namespace(name):
    # A CRS selects Clusters of its own namespace and reads ConfigMaps from the Cluster's.
    namespace = _teapot_namespace()
    for doc in _docs(name):
        assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]
    # The documented rewrite for another namespace touches exactly the top-level metadata lines.
    lines = (ADDONS_DIR / name).read_text().splitlines()
    assert sum(line == f"  namespace: {namespace}" for line in lines) == len(_docs(name))


@pytest.mark.parametrize("name", FILES)
def test_every_crs_resource_is_a_configmap_in_the_same_file_and_namespace(name):
    docs = _docs(name)
    (crs,) = _crs(docs)
    configmaps = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "ConfigMap"}
    listed = set()
    for resource in crs["spec"]["resources"]:
        assert resource["kind"] == "ConfigMap", "the add-ons hold no secrets"
        key = (crs["metadata"]["namespace"], resource["name"])
        assert key in configmaps, f"{name}: {resource['name']} is listed but not defined"
        listed.add(key)
    assert listed == configmaps, f"{name}: ConfigMaps no CRS applies: {configmaps - listed}"
    assert len(crs["spec"]["resources"]) == len(listed), "a resource is listed twice"


@pytest.mark.parametrize("name", FILES)
def test_configmap_data_are_kubernetes_objects(name):
    for configmap in (d for d in _docs(name) if d["kind"] == "ConfigMap"):
        assert configmap["data"], configmap["metadata"]["name"]
        for key, value in configmap["data"].items():
            assert isinstance(value, str), f"{key}: ConfigMap values are strings"
            objects = [o for o in yaml.safe_load_all(value) if o is not None]
            assert objects, f"{configmap['metadata']['name']}/{key} holds no object"
            for obj in objects:
                assert isinstance(obj, dict)
                assert isinstance(obj.get("apiVersion"), str) and obj["apiVersion"], key
                assert isinstance(obj.get("kind"), str) and obj["kind"], key
                assert isinstance(obj.get("metadata", {}).get("name"), str) and obj["metadata"]["name"], key


@pytest.mark.parametrize("name", FILES)
def test_images_are_pinned(name):
    images = [c["image"] for spec in _pod_specs(_tenant_objects(name)) for c in _containers(spec)]
    assert images, f"{name} runs no container?"
    for image in images:
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{image}: give a tag or a digest"
        assert tag != "latest", f"{image}: pin a version, not latest"


# --------------------------------------------------------------------------- KubeVirt installer


def test_kubevirt_installer_pins_the_release_and_applies_operator_then_cr():
    objects = _tenant_objects("kubevirt.yaml")
    job = _one(objects, "Job")
    spec = job["spec"]["template"]["spec"]
    steps = _containers(spec)
    urls = [(c["name"], arg.removeprefix("--filename=")) for c in steps for arg in c.get("args", [])
            if "github.com" in arg]  # fmt: skip
    releases = [(step, KUBEVIRT_RELEASE.match(url)) for step, url in urls]
    assert all(match for _, match in releases), f"unpinned or unexpected URL among {urls}"
    versions = {match.group(1) for _, match in releases}
    assert len(versions) == 1, f"the URLs mix releases: {versions}"
    (version,) = versions
    files = [match.group(2) for _, match in releases]
    assert files == ["kubevirt-operator.yaml", "kubevirt-cr.yaml"], "operator first, then the custom resource"
    # The CR step runs after the CRD is served, in a later container than the operator.
    names = [c["name"] for c in steps]
    assert names.index(releases[0][0]) < names.index(releases[1][0])
    assert any("crd/kubevirts.kubevirt.io" in c.get("args", []) for c in steps[: names.index(releases[1][0])])
    # The version is in the Job's name (a newer installer is a new Job) and its label.
    assert job["metadata"]["name"].endswith("-" + version.replace(".", "-"))
    assert job["metadata"]["labels"]["app.kubernetes.io/version"] == version
    assert all(arg != "latest" and "/latest/" not in arg for c in steps for arg in c.get("args", []))


def test_kubevirt_installer_retries_waits_for_workers_and_runs_on_unready_nodes():
    job = _one(_tenant_objects("kubevirt.yaml"), "Job")
    assert job["spec"]["backoffLimit"] >= 6
    # A cluster with zero workers keeps the pod Pending until the first one joins: a deadline
    # would fail the Job (and ApplyOnce would never create it again).
    assert "activeDeadlineSeconds" not in job["spec"]
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] in ("Never", "OnFailure")
    tolerated = {
        t["key"] for t in spec["tolerations"] if t["operator"] == "Exists" and t.get("effect") in (None, "NoSchedule")
    }
    assert {"node.kubernetes.io/not-ready", "node.kubernetes.io/network-unavailable"} <= tolerated
    # Before a CNI exists only the host network works.
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "Default"


def test_kubevirt_installer_rights_are_its_own_and_revoked_at_the_end():
    objects = _tenant_objects("kubevirt.yaml")
    job = _one(objects, "Job")
    spec = job["spec"]["template"]["spec"]
    account = _one(objects, "ServiceAccount", spec["serviceAccountName"])
    assert account["metadata"]["namespace"] == job["metadata"]["namespace"] == "kubevirt"
    _one(objects, "Namespace", "kubevirt")
    binding = _one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "kubevirt"}
    ]
    # The last step deletes the binding, after every apply step.
    last = spec["containers"][-1]
    assert "delete" in last["args"] and f"clusterrolebinding/{binding['metadata']['name']}" in last["args"]
    assert all("apply" not in c.get("args", []) for c in spec["containers"])


# --------------------------------------------------------------------------- Kata


def _kata_deploy() -> tuple[dict, dict]:
    daemonset = _one(_tenant_objects("kata.yaml"), "DaemonSet", "kata-deploy")
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    return daemonset, container


def test_kata_runtimeclass_handlers_are_the_ones_kata_deploy_configures():
    _, container = _kata_deploy()
    env = _env(container)
    shims = env["SHIMS"].split()
    # kata-deploy.sh registers one containerd/CRI-O runtime per shim, named kata-<shim>; there is
    # no handler called plain "kata" (its CREATE_DEFAULT_RUNTIMECLASS alias keeps the default
    # shim's handler).
    configured = {f"kata-{shim}" for shim in shims}
    assert env["DEFAULT_SHIM"] in shims
    classes = {o["metadata"]["name"]: o for o in _tenant_objects("kata.yaml") if o["kind"] == "RuntimeClass"}
    assert set(classes) == {"kata", "kata-qemu"}
    for name, runtime_class in classes.items():
        assert runtime_class["apiVersion"] == "node.k8s.io/v1"
        assert runtime_class["handler"] in configured, f"{name}: handler {runtime_class['handler']} is not configured"
        # The string "true", as kata-deploy sets it (an unquoted YAML true would be refused).
        assert runtime_class["scheduling"]["nodeSelector"] == {KATA_NODE_LABEL: "true"}
        assert set(runtime_class["overhead"]["podFixed"]) == {"cpu", "memory"}
    assert classes["kata-qemu"]["handler"] == "kata-qemu"
    assert classes["kata"]["handler"] == f"kata-{env['DEFAULT_SHIM']}"
    # The RuntimeClasses are ours: kata-deploy must not create (and on cleanup delete) them too.
    assert env["CREATE_RUNTIMECLASSES"] == "false" and env["CREATE_DEFAULT_RUNTIMECLASS"] == "false"


def test_kata_deploy_is_upstream_3_11_0():
    daemonset, container = _kata_deploy()
    spec = daemonset["spec"]["template"]["spec"]
    assert container["image"] == "quay.io/kata-containers/kata-deploy:3.11.0"
    assert daemonset["metadata"]["namespace"] == "kube-system"
    assert (
        daemonset["spec"]["selector"]["matchLabels"].items()
        <= daemonset["spec"]["template"]["metadata"]["labels"].items()
    )
    assert spec["hostPID"] is True and container["securityContext"]["privileged"] is True
    (node_name,) = [e for e in container["env"] if e["name"] == "NODE_NAME"]
    assert node_name["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["command"][-1].endswith("kata-deploy.sh install")
    assert container["lifecycle"]["preStop"]["exec"]["command"][-1].endswith("kata-deploy.sh cleanup")
    # The script unsets nothing: every variable it reads under `set -o nounset` is given.
    assert {
        "NODE_NAME",
        "DEBUG",
        "SHIMS",
        "DEFAULT_SHIM",
        "CREATE_RUNTIMECLASSES",
        "CREATE_DEFAULT_RUNTIMECLASS",
    } <= set(_env(container))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    assert mounts == {"crio-conf": "/etc/crio/", "containerd-conf": "/etc/containerd/", "host": "/host/"}
    assert volumes == {"crio-conf": "/etc/crio/", "containerd-conf": "/etc/containerd/", "host": "/"}


def test_kata_deploy_service_account_may_label_its_node():
    objects = _tenant_objects("kata.yaml")
    daemonset, _ = _kata_deploy()
    account = daemonset["spec"]["template"]["spec"]["serviceAccountName"]
    assert _one(objects, "ServiceAccount", account)["metadata"]["namespace"] == "kube-system"
    binding = _one(objects, "ClusterRoleBinding")
    assert {"kind": "ServiceAccount", "name": account, "namespace": "kube-system"} in binding["subjects"]
    role = _one(objects, "ClusterRole", binding["roleRef"]["name"])
    node_rules = [r for r in role["rules"] if "" in r["apiGroups"] and "nodes" in r["resources"]]
    assert node_rules and {"get", "patch"} <= set(node_rules[0]["verbs"])


def test_kata_crs_creates_rbac_before_the_daemonset():
    (crs,) = _crs(_docs("kata.yaml"))
    configmaps = {d["metadata"]["name"]: _payload(d) for d in _docs("kata.yaml") if d["kind"] == "ConfigMap"}
    order = [obj["kind"] for resource in crs["spec"]["resources"] for obj in configmaps[resource["name"]]]
    assert order.index("ServiceAccount") < order.index("DaemonSet")


# --------------------------------------------------------------------------- docs


def test_the_virtualisation_trait_suggested_in_the_docs_is_a_valid_rule():
    from hosts.rules import compile_rule, facts_from_hardware

    (line,) = [line for line in (ROOT / "docs" / "addons.md").read_text().splitlines() if line.startswith("virt ")]
    rule = compile_rule(line.removeprefix("virt").strip())

    def host(*flags):
        return facts_from_hardware(cpu_count=64, arch="x86_64", cpu_flags=flags)

    assert rule.matches(host("sse4_2", "vmx"))  # Intel VT-x
    assert rule.matches(host("sse4_2", "svm"))  # AMD-V
    assert not rule.matches(host("sse4_2", "avx2"))


def test_management_cluster_doc_links_the_addons_doc():
    assert "(addons.md)" in (ROOT / "docs" / "management-cluster.md").read_text()
