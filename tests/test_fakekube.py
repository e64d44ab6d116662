# ruff: noqa: F811 - pytest fixtures imported by name below are parameters here, by design
"""The fake apiserver behaves like kube-apiserver for what Teapot's gateway uses.

Everything goes through the real ``kubernetes`` client over real HTTP: if these pass, a test that
uses ``fake_kube`` exercises the same URLs, content types, status codes and watch streams as
production does against a management cluster.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.fakekube import CrdRegistry, FakeKubeServer
from tests.fakekube.fixtures import fake_kube, kube_api_client  # noqa: F401
from tests.fakekube.server import DEFAULT_CRD_DIR

NS = "teapot"
BMH = ("metal3.io", "v1alpha1", NS, "baremetalhosts")
APPLY = "application/apply-patch+yaml"


@pytest.fixture(scope="session", autouse=True)
def _release_test_database() -> Iterator[None]:
    """Shadow the suite-wide autouse fixture of the same name: nothing here touches a database.

    The conftest one depends on pytest-django's ``django_db_setup``; overriding it for this module
    keeps these tests database-free and runnable with ``-p no:django``.
    """
    yield


@pytest.fixture
def custom(kube_api_client: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api_client)


@pytest.fixture
def core(kube_api_client: Any) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api_client)


def bmh(name: str = "node-1", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"online": True, "bootMACAddress": "52:54:00:12:34:56"}
    body.update(spec)
    return {
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": name, "labels": {"teapot.example/pool": "gpu"}},
        "spec": body,
    }


def status_of(error: ApiException) -> dict[str, Any]:
    return json.loads(error.body)


def causes(error: ApiException) -> list[str]:
    return [cause["field"] for cause in status_of(error)["details"]["causes"]]


def raw_get(server: FakeKubeServer, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=5) as response:  # noqa: S310 - our own loopback URL
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --------------------------------------------------------------------------------------------
# Discovery


def test_discovery_lists_groups_versions_and_resources(fake_kube: FakeKubeServer, kube_api_client: Any) -> None:
    assert client.VersionApi(kube_api_client).get_code().major == "1"
    assert client.CoreApi(kube_api_client).get_api_versions().versions == ["v1"]

    core_resources = {r.name: r for r in client.CoreV1Api(kube_api_client).get_api_resources().resources}
    assert core_resources["secrets"].namespaced is True
    assert "watch" in core_resources["secrets"].verbs
    assert core_resources["namespaces"].namespaced is False

    groups = {g.name: g for g in client.ApisApi(kube_api_client).get_api_versions().groups}
    assert groups["metal3.io"].preferred_version.group_version == "metal3.io/v1alpha1"
    assert groups["cluster.x-k8s.io"].preferred_version.version == "v1beta2"
    assert {v.version for v in groups["cluster.x-k8s.io"].versions} == {"v1beta1", "v1beta2"}
    assert groups["controlplane.cluster.x-k8s.io"].versions  # Kamaji (v1alpha2) and k0smotron
    assert "bootstrap.cluster.x-k8s.io" in groups

    resources = {
        r.name: r for r in client.CustomObjectsApi(kube_api_client).get_api_resources("metal3.io", "v1alpha1").resources
    }
    host = resources["baremetalhosts"]
    assert (host.kind, host.singular_name, host.namespaced) == ("BareMetalHost", "baremetalhost", True)
    assert set(host.verbs) == {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
    assert resources["baremetalhosts/status"].verbs == ["get", "patch", "update"]
    assert "hardwaredata" in resources and "hardwaredata/status" not in resources  # no status subresource

    code, group_doc = raw_get(fake_kube, "/apis/infrastructure.cluster.x-k8s.io")
    assert code == 200 and group_doc["kind"] == "APIGroup"
    assert group_doc["preferredVersion"]["version"] == "v1beta2"
    assert raw_get(fake_kube, "/apis/metal3.io/v1")[0] == 404
    assert raw_get(fake_kube, "/apis/nope.example.com")[1]["reason"] == "NotFound"


def test_kubeconfig_is_loadable_and_token_is_enforced(tmp_path: Any) -> None:
    from kubernetes import config

    with FakeKubeServer(token="s3cret") as server:
        good = config.new_client_from_config(config_file=str(server.write_kubeconfig(tmp_path / "good")))
        assert client.CoreV1Api(good).read_namespace("teapot").metadata.name == "teapot"
        bad = config.new_client_from_config(config_file=str(server.write_kubeconfig(tmp_path / "bad", token="wrong")))
        with pytest.raises(ApiException) as caught:
            client.CoreV1Api(bad).read_namespace("teapot")
        assert caught.value.status == 401 and status_of(caught.value)["reason"] == "Unauthorized"


# --------------------------------------------------------------------------------------------
# CRUD


def test_baremetalhost_create_get_list_replace_patch_delete(
    fake_kube: FakeKubeServer, custom: client.CustomObjectsApi
) -> None:
    created = custom.create_namespaced_custom_object(*BMH, bmh())
    meta = created["metadata"]
    assert meta["namespace"] == NS and meta["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert created["spec"]["automatedCleaningMode"] == "metadata"  # the CRD's default was applied

    got = custom.get_namespaced_custom_object(*BMH, "node-1")
    assert got["metadata"]["resourceVersion"] == meta["resourceVersion"]
    listing = custom.list_namespaced_custom_object(*BMH)
    assert listing["kind"] == "BareMetalHostList" and [i["metadata"]["name"] for i in listing["items"]] == ["node-1"]
    assert int(listing["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
    assert len(custom.list_cluster_custom_object("metal3.io", "v1alpha1", "baremetalhosts")["items"]) == 1

    got["spec"]["online"] = False
    replaced = custom.replace_namespaced_custom_object(*BMH, "node-1", got)
    assert replaced["spec"]["online"] is False
    assert int(replaced["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])

    merged = custom.patch_namespaced_custom_object(*BMH, "node-1", {"spec": {"bootMode": "UEFI"}})
    assert merged["spec"]["bootMode"] == "UEFI"
    patched = custom.patch_namespaced_custom_object(
        *BMH,
        "node-1",
        [{"op": "test", "path": "/spec/bootMode", "value": "UEFI"}, {"op": "remove", "path": "/spec/bootMode"}],
        _content_type="application/json-patch+json",
    )
    assert "bootMode" not in patched["spec"]

    deleted = custom.delete_namespaced_custom_object(*BMH, "node-1")
    assert deleted["metadata"]["name"] == "node-1"  # custom resources answer with the deleted object
    with pytest.raises(ApiException) as caught:
        custom.get_namespaced_custom_object(*BMH, "node-1")
    body = status_of(caught.value)
    assert caught.value.status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'baremetalhosts.metal3.io "node-1" not found'
    assert fake_kube.internal_errors == []


def test_secret_string_data_becomes_base64_data(fake_kube: FakeKubeServer, core: client.CoreV1Api) -> None:
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="node-1-bmc"), string_data={"username": "admin", "password": "pw"}
    )
    created = core.create_namespaced_secret(NS, secret)
    assert created.data == {
        "username": base64.b64encode(b"admin").decode(),
        "password": base64.b64encode(b"pw").decode(),
    }
    assert created.string_data is None and created.type == "Opaque"
    stored = fake_kube.get_object("Secret", NS, "node-1-bmc")
    assert stored is not None and "stringData" not in stored

    # CoreV1Api.patch_* sends a dict body as strategic merge patch, which core types accept.
    patched = core.patch_namespaced_secret("node-1-bmc", NS, {"stringData": {"password": "new"}})
    assert base64.b64decode(patched.data["password"]) == b"new"
    assert fake_kube.requests[-1].content_type == "application/strategic-merge-patch+json"

    assert [s.metadata.name for s in core.list_namespaced_secret(NS).items] == ["node-1-bmc"]
    status = core.delete_namespaced_secret("node-1-bmc", NS)  # this client version returns a plain dict here
    assert status["status"] == "Success" and status["details"]["name"] == "node-1-bmc"


def test_duplicate_create_and_stale_resource_version_are_409(custom: client.CustomObjectsApi) -> None:
    first = custom.create_namespaced_custom_object(*BMH, bmh())
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*BMH, bmh())
    assert caught.value.status == 409 and status_of(caught.value)["reason"] == "AlreadyExists"

    custom.patch_namespaced_custom_object(*BMH, "node-1", {"metadata": {"labels": {"x": "y"}}})
    with pytest.raises(ApiException) as caught:
        custom.replace_namespaced_custom_object(*BMH, "node-1", first)
    body = status_of(caught.value)
    assert caught.value.status == 409 and body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on baremetalhosts.metal3.io "node-1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    stale = {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}, "spec": {"online": False}}
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(*BMH, "node-1", stale)
    assert caught.value.status == 409


def test_replace_without_resource_version_is_invalid(custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(*BMH, bmh())
    with pytest.raises(ApiException) as caught:
        custom.replace_namespaced_custom_object(*BMH, "node-1", bmh(online=False))
    body = status_of(caught.value)
    assert caught.value.status == 422
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 0x0: must be specified for an update",
            "field": "metadata.resourceVersion",
        }
    ]


def test_finalizers_delay_deletion_until_emptied(fake_kube: FakeKubeServer, custom: client.CustomObjectsApi) -> None:
    body = bmh()
    body["metadata"]["finalizers"] = ["teapot.example/release"]
    custom.create_namespaced_custom_object(*BMH, body)
    marked = custom.delete_namespaced_custom_object(*BMH, "node-1")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(
            *BMH, "node-1", {"metadata": {"finalizers": ["a.example/b", "c.example/d"]}}
        )
    assert caught.value.status == 422  # no new finalizers once deleting
    custom.patch_namespaced_custom_object(*BMH, "node-1", {"metadata": {"finalizers": None}})
    assert fake_kube.get_object("BareMetalHost", NS, "node-1") is None


# --------------------------------------------------------------------------------------------
# Server-side apply, generation, status


def apply(custom: client.CustomObjectsApi, body: dict[str, Any], manager: str = "teapot", **kwargs: Any) -> Any:
    return custom.patch_namespaced_custom_object(
        *BMH, body["metadata"]["name"], body, field_manager=manager, _content_type=APPLY, **kwargs
    )


def test_apply_twice_writes_once(fake_kube: FakeKubeServer, custom: client.CustomObjectsApi) -> None:
    # An apply that creates answers 201 like the real apiserver; this client version only maps 200
    # for patch calls, so it returns None there: read the object back instead.
    assert apply(custom, bmh(bootMode="UEFI")) is None
    first = custom.get_namespaced_custom_object(*BMH, "node-1")
    writes = fake_kube.writes
    second = apply(custom, bmh(bootMode="UEFI"))
    assert fake_kube.writes == writes
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    (entry,) = second["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("teapot", "Apply")
    assert entry["fieldsV1"]["f:spec"]["f:bootMode"] == {}
    query = fake_kube.requests[-1].query
    assert fake_kube.requests[-1].content_type == APPLY and query["fieldManager"] == "teapot"


def test_apply_drops_fields_the_manager_stopped_applying(custom: client.CustomObjectsApi) -> None:
    apply(custom, bmh(bootMode="UEFI", hardwareProfile="libvirt"))
    custom.patch_namespaced_custom_object(*BMH, "node-1", {"spec": {"architecture": "x86_64"}})  # someone else's
    result = apply(custom, bmh(bootMode="UEFI"))
    assert "hardwareProfile" not in result["spec"]
    assert result["spec"]["architecture"] == "x86_64"  # not ours: left alone
    assert result["spec"]["bootMode"] == "UEFI"


def test_apply_conflicts_with_another_manager_unless_forced(custom: client.CustomObjectsApi) -> None:
    apply(custom, bmh(bootMode="UEFI"), manager="operator")
    with pytest.raises(ApiException) as caught:
        apply(custom, bmh(bootMode="legacy"))
    body = status_of(caught.value)
    assert caught.value.status == 409 and body["reason"] == "Conflict"
    assert body["details"]["causes"][0]["field"] == ".spec.bootMode"
    assert apply(custom, bmh(bootMode="legacy"), force=True)["spec"]["bootMode"] == "legacy"


def test_apply_requires_field_manager_and_strategic_merge_is_unsupported(custom: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(*BMH, "node-1", bmh(), _content_type=APPLY)
    assert caught.value.status == 422
    custom.create_namespaced_custom_object(*BMH, bmh())
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(
            *BMH, "node-1", {"spec": {"online": False}}, _content_type="application/strategic-merge-patch+json"
        )
    assert caught.value.status == 415 and status_of(caught.value)["reason"] == "UnsupportedMediaType"


def test_generation_bumps_only_on_spec_changes(fake_kube: FakeKubeServer, custom: client.CustomObjectsApi) -> None:
    created = custom.create_namespaced_custom_object(*BMH, bmh())
    labelled = custom.patch_namespaced_custom_object(*BMH, "node-1", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1
    assert labelled["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    respec = custom.patch_namespaced_custom_object(*BMH, "node-1", {"spec": {"online": False}})
    assert respec["metadata"]["generation"] == 2
    writes = fake_kube.writes
    same = custom.patch_namespaced_custom_object(*BMH, "node-1", {"spec": {"online": False}})
    assert fake_kube.writes == writes and same["metadata"]["resourceVersion"] == respec["metadata"]["resourceVersion"]


def test_status_subresource_is_separate_both_ways(fake_kube: FakeKubeServer, custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(*BMH, bmh())
    # A partial status, as a test might seed it: validation ratcheting lets later writes through as
    # long as they leave the invalid part alone, like kube-apiserver >= 1.30.
    fake_kube.set_status("metal3.io/v1alpha1", "BareMetalHost", NS, "node-1", {"operationalStatus": "OK"})
    writes = fake_kube.writes

    ignored = custom.patch_namespaced_custom_object(*BMH, "node-1", {"status": {"operationalStatus": "error"}})
    assert ignored["status"]["operationalStatus"] == "OK" and fake_kube.writes == writes
    assert ignored["status"]["errorCount"] == 0  # the schema default, applied like the apiserver does

    relabelled = custom.patch_namespaced_custom_object(*BMH, "node-1", {"metadata": {"labels": {"a": "b"}}})
    assert relabelled["status"]["operationalStatus"] == "OK"

    full_status = {
        "operationalStatus": "detached",
        "errorMessage": "",
        "poweredOn": True,
        "provisioning": {"ID": "8a4f", "state": "provisioned"},
    }
    result = custom.patch_namespaced_custom_object_status(
        *BMH, "node-1", {"spec": {"online": False}, "status": full_status}
    )
    assert result["status"]["operationalStatus"] == "detached"
    assert result["spec"]["online"] is True and result["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object_status(*BMH, "node-1", {"status": {"operationalStatus": "bogus"}})
    assert caught.value.status == 422 and causes(caught.value) == ["status.operationalStatus"]


# --------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda o: o["spec"].pop("online"), "spec.online", "FieldValueRequired"),
        (
            lambda o: o["spec"].update(automatedCleaningMode="sometimes"),
            "spec.automatedCleaningMode",
            "FieldValueNotSupported",
        ),
        (lambda o: o["spec"].update(bootMACAddress="not-a-mac"), "spec.bootMACAddress", "FieldValueInvalid"),
        (lambda o: o["spec"].update(colour="teal"), "spec.colour", "FieldValueInvalid"),
        (lambda o: o["metadata"].update(name="Node_1"), "metadata.name", "FieldValueInvalid"),
        (lambda o: o["metadata"]["labels"].update(pool="not ok!"), "metadata.labels", "FieldValueInvalid"),
        (lambda o: o["spec"].update(online="yes"), "spec.online", "FieldValueTypeInvalid"),
    ],
    ids=["required", "enum", "pattern", "unknown-field", "name", "label-value", "type"],
)
def test_invalid_baremetalhosts_are_422(custom: client.CustomObjectsApi, mutate: Any, field: str, reason: str) -> None:
    body = bmh()
    mutate(body)
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*BMH, body)
    status = status_of(caught.value)
    assert caught.value.status == 422 and status["reason"] == "Invalid" and status["kind"] == "Status"
    assert status["details"]["kind"] == "BareMetalHost" and status["details"]["group"] == "metal3.io"
    assert [(c["field"], c["reason"]) for c in status["details"]["causes"]] == [(field, reason)]
    assert status["message"].startswith(f'BareMetalHost.metal3.io "{body["metadata"]["name"]}" is invalid: {field}: ')


def test_invalid_messages_match_the_apiserver(custom: client.CustomObjectsApi) -> None:
    body = bmh(automatedCleaningMode="sometimes", colour="teal")
    del body["spec"]["online"]
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*BMH, body)
    assert status_of(caught.value)["message"] == (
        'BareMetalHost.metal3.io "node-1" is invalid: ['
        'spec.automatedCleaningMode: Unsupported value: "sometimes": supported values: "metadata", "disabled", '
        'spec.colour: unknown field "spec.colour", '
        "spec.online: Required value]"
    )


def test_secret_with_non_base64_data_is_422(core: client.CoreV1Api) -> None:
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="bmc"), data={"password": "not base64!"})
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_secret(NS, secret)
    assert caught.value.status == 422 and causes(caught.value) == ["data[password]"]


def test_metal3machinetemplate_v1beta2(custom: client.CustomObjectsApi) -> None:
    template = {
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
        "kind": "Metal3MachineTemplate",
        "metadata": {"name": "workers-v1"},
        "spec": {
            "template": {
                "spec": {
                    "automatedCleaningMode": "metadata",
                    "hostSelector": {
                        "matchLabels": {"teapot.example/pool": "gpu"},
                        "matchExpressions": [{"key": "rack", "operator": "In", "values": ["a", "b"]}],
                    },
                    "image": {
                        "url": "http://images.example/ubuntu-24.04.qcow2",
                        "checksum": "http://images.example/ubuntu-24.04.qcow2.sha256sum",
                        "checksumType": "sha256",
                        "diskFormat": "qcow2",
                    },
                }
            }
        },
    }
    args = ("infrastructure.cluster.x-k8s.io", "v1beta2", NS, "metal3machinetemplates")
    assert custom.create_namespaced_custom_object(*args, template)["metadata"]["generation"] == 1

    old_style = json.loads(json.dumps(template))
    old_style["metadata"]["name"] = "workers-old"
    image = old_style["spec"]["template"]["spec"]["image"]
    image["format"] = image.pop("diskFormat")  # the v1beta1 field name
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*args, old_style)
    assert causes(caught.value) == ["spec.template.spec.image.format"]

    duplicated = json.loads(json.dumps(template))
    duplicated["metadata"]["name"] = "workers-dup"
    duplicated["spec"]["template"]["spec"]["hostSelector"]["matchExpressions"][0]["values"] = ["a", "a"]
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*args, duplicated)
    assert causes(caught.value) == ["spec.template.spec.hostSelector.matchExpressions[0].values[1]"]


def test_cluster_v1beta2_refs_and_kamaji(custom: client.CustomObjectsApi) -> None:
    cluster = {
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {"name": "physics"},
        "spec": {
            "controlPlaneRef": {
                "apiGroup": "controlplane.cluster.x-k8s.io",
                "kind": "KamajiControlPlane",
                "name": "physics",
            },
            "infrastructureRef": {
                "apiGroup": "infrastructure.cluster.x-k8s.io",
                "kind": "Metal3Cluster",
                "name": "physics",
            },
        },
    }
    args = ("cluster.x-k8s.io", "v1beta2", NS, "clusters")
    custom.create_namespaced_custom_object(*args, cluster)
    old_style = json.loads(json.dumps(cluster))
    old_style["metadata"]["name"] = "old"
    old_style["spec"]["controlPlaneRef"]["apiVersion"] = "controlplane.cluster.x-k8s.io/v1alpha2"
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*args, old_style)
    assert causes(caught.value) == ["spec.controlPlaneRef.apiVersion"]

    kamaji = {
        "apiVersion": "controlplane.cluster.x-k8s.io/v1alpha2",
        "kind": "KamajiControlPlane",
        "metadata": {"name": "physics"},
        "spec": {"version": "v1.33.0"},
    }
    created = custom.create_namespaced_custom_object(
        "controlplane.cluster.x-k8s.io", "v1alpha2", NS, "kamajicontrolplanes", kamaji
    )
    assert created["spec"]["version"] == "v1.33.0"


def test_registry_validates_without_a_server() -> None:
    registry = CrdRegistry.load_cached(DEFAULT_CRD_DIR)
    assert registry.lookup("metal3.io", "v1alpha1", "baremetalhosts").status_subresource
    assert not registry.by_kind("metal3.io/v1alpha1", "HardwareData").status_subresource
    found = registry.validate(bmh(bmc={"address": "redfish://10.0.0.1"}))
    assert [(c.field, c.reason, c.message) for c in found] == [
        ("spec.bmc.credentialsName", "FieldValueRequired", "Required value")
    ]


# --------------------------------------------------------------------------------------------
# Selectors


def test_label_selectors_equality_and_set_based(custom: client.CustomObjectsApi) -> None:
    for name, pool, rack in (("a", "gpu", "r1"), ("b", "gpu", "r2"), ("c", "cpu", "r1")):
        body = bmh(name)
        body["metadata"]["labels"] = {"pool": pool, "rack": rack}
        custom.create_namespaced_custom_object(*BMH, body)
    custom.create_namespaced_custom_object(*BMH, {**bmh("d"), "metadata": {"name": "d"}})

    def names(selector: str) -> list[str]:
        items = custom.list_namespaced_custom_object(*BMH, label_selector=selector)["items"]
        return [item["metadata"]["name"] for item in items]

    assert names("pool=gpu") == ["a", "b"]
    assert names("pool==gpu,rack!=r2") == ["a"]
    assert names("rack in (r1, r3)") == ["a", "c"]
    assert names("pool notin (gpu)") == ["c", "d"]
    assert names("pool") == ["a", "b", "c"]
    assert names("!pool") == ["d"]
    assert [
        i["metadata"]["name"]
        for i in custom.list_namespaced_custom_object(*BMH, field_selector="metadata.name=c")["items"]
    ] == ["c"]
    page = custom.list_namespaced_custom_object(*BMH, limit=3)
    rest = custom.list_namespaced_custom_object(*BMH, limit=3, _continue=page["metadata"]["continue"])
    assert len(page["items"]) == 3 and [i["metadata"]["name"] for i in rest["items"]] == ["d"]
    with pytest.raises(ApiException) as caught:
        custom.list_namespaced_custom_object(*BMH, label_selector="pool in (gpu")
    assert caught.value.status == 400


# --------------------------------------------------------------------------------------------
# Watch


def test_watch_from_zero_then_live_events_and_bookmarks(custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(*BMH, bmh("existing"))
    seen: list[tuple[str, str | None]] = []
    stream = watch.Watch()

    def mutate() -> None:
        time.sleep(0.1)
        custom.create_namespaced_custom_object(*BMH, bmh("fresh"))
        custom.patch_namespaced_custom_object(*BMH, "fresh", {"spec": {"online": False}})
        custom.delete_namespaced_custom_object(*BMH, "fresh")

    worker = threading.Thread(target=mutate)
    for event in stream.stream(
        custom.list_namespaced_custom_object, *BMH, resource_version="0", allow_watch_bookmarks=True, timeout_seconds=3
    ):
        seen.append((event["type"], event["object"]["metadata"].get("name")))
        if len(seen) == 1:
            worker.start()
        if ("DELETED", "fresh") in seen and ("BOOKMARK", None) in seen:
            stream.stop()
    worker.join()
    assert seen[0] == ("ADDED", "existing")
    live = [item for item in seen if item[0] != "BOOKMARK"]
    assert live == [("ADDED", "existing"), ("ADDED", "fresh"), ("MODIFIED", "fresh"), ("DELETED", "fresh")]
    assert ("BOOKMARK", None) in seen
    assert stream.resource_version is not None  # bookmarks and events advance the client's cursor


def test_watch_with_label_selector_sees_objects_leave(custom: client.CustomObjectsApi) -> None:
    start = custom.list_namespaced_custom_object(*BMH)["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(*BMH, bmh("a"))
    custom.patch_namespaced_custom_object(*BMH, "a", {"metadata": {"labels": {"teapot.example/pool": "cpu"}}})
    events = [
        (e["type"], e["object"]["metadata"]["name"])
        for e in watch.Watch().stream(
            custom.list_namespaced_custom_object,
            *BMH,
            resource_version=start,
            label_selector="teapot.example/pool=gpu",
            timeout_seconds=1,
        )
    ]
    assert events == [("ADDED", "a"), ("DELETED", "a")]


def test_watch_too_old_resource_version_is_410(fake_kube: FakeKubeServer, custom: client.CustomObjectsApi) -> None:
    old = custom.create_namespaced_custom_object(*BMH, bmh())["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(*BMH, "node-1", {"spec": {"online": False}})
    fake_kube.compact()

    # With timeout_seconds the installed client does not retry: the ERROR event becomes ApiException(410).
    with pytest.raises(ApiException) as caught:
        list(watch.Watch().stream(custom.list_namespaced_custom_object, *BMH, resource_version=old, timeout_seconds=1))
    assert caught.value.status == 410 and caught.value.reason.startswith(f"Expired: too old resource version: {old} (")

    # Without it, the client retries once from the same resourceVersion, then raises.
    fake_kube.requests.clear()
    with pytest.raises(ApiException) as caught:
        list(watch.Watch().stream(custom.list_namespaced_custom_object, *BMH, resource_version=old))
    assert caught.value.status == 410
    assert [r.query.get("watch") for r in fake_kube.requests] == ["true", "true"]


# --------------------------------------------------------------------------------------------
# Fault injection, RBAC, missing CRDs


def test_injected_429_and_503(fake_kube: FakeKubeServer, custom: client.CustomObjectsApi) -> None:
    fake_kube.inject_errors(429, method="POST", retry_after=7)
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*BMH, bmh())
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "7"
    assert status_of(caught.value)["details"] == {"retryAfterSeconds": 7}

    fake_kube.inject_errors(503, path_contains="/baremetalhosts")
    with pytest.raises(ApiException) as caught:
        custom.list_namespaced_custom_object(*BMH)
    assert caught.value.status == 503 and status_of(caught.value)["reason"] == "ServiceUnavailable"

    # Worth knowing: urllib3 itself retries idempotent requests (GET, PUT, DELETE) answered with
    # 429/503 *and* a Retry-After header, sleeping as told, up to 3 times, before the client sees it.
    fake_kube.requests.clear()
    fake_kube.inject_errors(429, method="GET", retry_after=0)
    assert custom.list_namespaced_custom_object(*BMH)["kind"] == "BareMetalHostList"
    assert [r.method for r in fake_kube.requests] == ["GET", "GET"]


def test_deny_is_403_with_the_rbac_message(fake_kube: FakeKubeServer, custom: client.CustomObjectsApi) -> None:
    fake_kube.deny("list", "metal3.io", "baremetalhosts")
    with pytest.raises(ApiException) as caught:
        custom.list_namespaced_custom_object(*BMH)
    body = status_of(caught.value)
    assert caught.value.status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        'baremetalhosts.metal3.io is forbidden: User "system:serviceaccount:teapot:teapot" cannot list resource '
        '"baremetalhosts" in API group "metal3.io" in the namespace "teapot"'
    )
    custom.create_namespaced_custom_object(*BMH, bmh())  # other verbs still allowed


def test_removed_group_is_404_everywhere(fake_kube: FakeKubeServer, kube_api_client: Any) -> None:
    fake_kube.remove_group("metal3.io")
    groups = {g.name for g in client.ApisApi(kube_api_client).get_api_versions().groups}
    assert "metal3.io" not in groups and "cluster.x-k8s.io" in groups
    custom = client.CustomObjectsApi(kube_api_client)
    for call in (
        lambda: custom.get_api_resources("metal3.io", "v1alpha1"),
        lambda: custom.list_namespaced_custom_object(*BMH),
        lambda: custom.create_namespaced_custom_object(*BMH, bmh()),
    ):
        with pytest.raises(ApiException) as caught:
            call()
        assert caught.value.status == 404
    crds = client.ApiextensionsV1Api(kube_api_client).list_custom_resource_definition().items
    assert "baremetalhosts.metal3.io" not in {crd.metadata.name for crd in crds}
    assert "clusters.cluster.x-k8s.io" in {crd.metadata.name for crd in crds}


def test_seeding_bypasses_validation_but_emits_events(
    fake_kube: FakeKubeServer, custom: client.CustomObjectsApi
) -> None:
    before = fake_kube.resource_version
    seeded = fake_kube.put_object({**bmh(), "metadata": {"name": "seeded", "namespace": NS}, "status": {"x": 1}})
    assert int(seeded["metadata"]["resourceVersion"]) == before + 1
    assert custom.get_namespaced_custom_object(*BMH, "seeded")["status"]["x"] == 1
    assert [o["metadata"]["name"] for o in fake_kube.objects("BareMetalHost")] == ["seeded"]


def test_missing_namespace_generate_name_and_dry_run(tmp_path: Any) -> None:
    with FakeKubeServer(namespace_auto_create=False) as server, server.api_client() as api:
        custom = client.CustomObjectsApi(api)
        with pytest.raises(ApiException) as caught:
            custom.create_namespaced_custom_object(*BMH, bmh())
        assert caught.value.status == 404 and status_of(caught.value)["message"] == 'namespaces "teapot" not found'

        server.create_namespace(NS)
        body = bmh()
        body["metadata"] = {"generateName": "node-"}
        created = custom.create_namespaced_custom_object(*BMH, body)
        assert re.fullmatch(r"node-[a-z0-9]{5}", created["metadata"]["name"])

        writes = server.writes
        custom.create_namespaced_custom_object(*BMH, bmh("dry"), dry_run="All")
        assert server.writes == writes and server.get_object("BareMetalHost", NS, "dry") is None


def test_failed_json_patch_test_is_422_and_deletecollection(custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(*BMH, bmh("a"))
    custom.create_namespaced_custom_object(*BMH, {**bmh("b"), "metadata": {"name": "b", "labels": {"keep": "yes"}}})
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(
            *BMH,
            "a",
            [{"op": "test", "path": "/spec/online", "value": False}],
            _content_type="application/json-patch+json",
        )
    assert caught.value.status == 422
    custom.delete_collection_namespaced_custom_object(*BMH, label_selector="teapot.example/pool=gpu")
    assert [i["metadata"]["name"] for i in custom.list_namespaced_custom_object(*BMH)["items"]] == ["b"]


def test_immutable_secret(core: client.CoreV1Api) -> None:
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="kubeconfig"), string_data={"value": "x"}, immutable=True
    )
    core.create_namespaced_secret(NS, secret)
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_secret("kubeconfig", NS, {"stringData": {"value": "y"}})
    assert caught.value.status == 422 and causes(caught.value) == ["data"]


def test_expired_watch_on_the_wire_is_http_200_with_an_error_line(fake_kube: FakeKubeServer) -> None:
    fake_kube.put_object({**bmh(), "metadata": {"name": "node-1", "namespace": NS}})
    fake_kube.compact()
    path = f"/apis/metal3.io/v1alpha1/namespaces/{NS}/baremetalhosts?watch=true&resourceVersion=1"
    with urllib.request.urlopen(fake_kube.url + path, timeout=5) as response:  # noqa: S310 - loopback
        assert response.status == 200
        lines = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    assert lines == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: 1 ({fake_kube.resource_version})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]


def test_slow_watcher_expires_when_history_overflows() -> None:
    with FakeKubeServer(history_size=2) as server, server.api_client() as api:
        custom = client.CustomObjectsApi(api)
        start = custom.list_namespaced_custom_object(*BMH)["metadata"]["resourceVersion"]
        for name in ("a", "b", "c"):
            custom.create_namespaced_custom_object(*BMH, bmh(name))
        with pytest.raises(ApiException) as caught:
            list(
                watch.Watch().stream(
                    custom.list_namespaced_custom_object, *BMH, resource_version=start, timeout_seconds=1
                )
            )
        assert caught.value.status == 410
