"""The deployment manifests parse and say what the docs say: one beat, health probes, least privilege."""

from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def test_processes_are_deployments_with_one_beat_and_probes():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _docs("teapot.yaml")}
    beat = docs[("Deployment", "teapot-beat")]
    assert beat["spec"]["replicas"] == 1
    web = docs[("Deployment", "teapot-web")]["spec"]["template"]["spec"]["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    config = docs[("ConfigMap", "teapot-config")]["data"]
    assert config["DEBUG"] == "0" and config["TEAPOT_PROVISIONER"] == "kubernetes"
    for deployment in (d for d in docs.values() if d["kind"] == "Deployment"):
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "teapot"


def test_rbac_is_namespaced_and_covers_every_kind_teapot_uses():
    from teapot_portal.gateway import kinds

    docs = _docs("rbac.yaml")
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    granted = {(group, resource): set(rule["verbs"]) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"]}  # fmt: skip
    for kind in kinds.ALL:
        verbs = granted.get((kind.group, kind.plural))
        assert verbs and {"get", "list", "watch"} <= verbs, kind.resource
        if kind in kinds.WRITTEN:
            assert {"create", "patch", "delete"} <= verbs, kind.resource
        else:
            assert not verbs & {"create", "update", "patch", "delete"}, f"{kind.resource} is read-only"
