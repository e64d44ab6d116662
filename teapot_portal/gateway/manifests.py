"""What Teapot wants in the management cluster, as reviewable manifests (desired state only).

Today the desired state is read back from the gateway: every object labelled
``app.kubernetes.io/managed-by=teapot``, stripped of status and of the fields the API server
sets. Secrets are exported without their values (BMC passwords never leave Teapot): the
data is replaced by a ``stringData`` placeholder for a GitOps secret manager to fill.
"""

from __future__ import annotations

import copy

import yaml

from teapot_portal.gateway import builders, kinds
from teapot_portal.gateway.base import Gateway

SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")
SECRET_PLACEHOLDER = "<set by your secret manager>"  # noqa: S105 (a placeholder, not a secret)


def desired_state(obj: dict) -> dict:
    clean = copy.deepcopy(obj)
    clean.pop("status", None)
    meta = clean.get("metadata", {})
    for key in SERVER_FIELDS:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if not annotations:
        meta.pop("annotations", None)
    if clean.get("kind") == "Secret":
        keys = sorted({*(clean.pop("data", None) or {}), *(clean.pop("stringData", None) or {})})
        clean["stringData"] = dict.fromkeys(keys, SECRET_PLACEHOLDER)
    return clean


def collect(gateway: Gateway, *, tenant: str | None = None, cluster: str | None = None) -> list[dict]:
    selector = [f"{builders.LABEL_MANAGED}=teapot"]
    if tenant:
        selector.append(f"{builders.LABEL_TENANT}={tenant}")
    if cluster:
        selector.append(f"{builders.LABEL_CLUSTER}={cluster}")
    objects = []
    for kind in kinds.WRITTEN:
        for obj in gateway.list(kind, ",".join(selector)):
            objects.append(desired_state(obj))
    return sorted(objects, key=lambda o: (kinds.WRITTEN.index(kinds.kind_of(o)), o["metadata"]["name"]))


def to_yaml(objects: list[dict]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False) if objects else ""
