"""The tenancy API, around the named people (STYLE.md §9): alice owns physics, dave is a member,
bob views it, carol owns genomics, olga operates.

Every tenant-scoped URL is in :data:`URLS` once, with who may use it; the access matrix
(carol 404, bob's writes 403, anonymous refused, operators-only 403) is parametrized over it,
so a new URL is covered the day it is added there. Then the happy paths, the services'
refusals as 400s, creating twice (409 with the existing object, Idempotency-Key replay and
mismatch), tenant-scoped tokens, the kubeconfig, the catalogue, the audit log, query counts
(on enough clusters and pools that an N+1 shows) and the schema.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import timedelta

import pytest
import yaml

from hosts.models import HostClaim
from teapot_portal.gateway.factory import get_gateway
from tenants.clusters import cluster_create, node_pool_create
from tenants.models import (
    AuditEntry,
    Cluster,
    IdempotencyKey,
    KubernetesVersion,
    Membership,
    NodePool,
    OsImage,
    PoolHost,
    QuotaClass,
    Role,
    Tenant,
)
from tenants.services import api_token_create
from tests.conftest import api_client, run_manage
from tests.inventory import make_fleet
from tests.tenancy import member, person
from tests.test_host_api import _resolve

pytestmark = pytest.mark.django_db

API = "/api/v1"
PHYSICS = f"{API}/tenants/physics"
ALPHA = f"{PHYSICS}/clusters/alpha"
WORKERS = f"{ALPHA}/node-pools/workers"
IMAGE = "ubuntu-24.04-k8s-1.31"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: physics-alpha
  cluster: {server: "https://192.0.2.10:6443"}
users:
- name: admin
  user: {token: s3cret-kubeconfig-token-0123456789}
"""


@pytest.fixture
def scene(world):
    """world + physics/alpha (by alice) with a pool "workers" of 2 general hosts (by dave)."""
    alpha = cluster_create(tenant=world.physics, name="alpha", actor=world.alice)
    workers = node_pool_create(
        cluster=alpha, name="workers", quota_class="general", image=IMAGE, replicas=2, actor=world.dave
    )
    world.alpha, world.workers = alpha, workers
    world.dave_membership = Membership.objects.get(tenant=world.physics, user=world.dave)
    return world


def _error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def _call(client, method: str, url: str, body=None, **kwargs):
    return getattr(client, method.lower())(url, body, format="json", **kwargs)


def _write_kubeconfig(object_name: str, text: str = KUBECONFIG) -> None:
    """What the control plane does once it is up (the lab's Cluster API writes the same Secret)."""
    get_gateway().apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{object_name}-kubeconfig"},
            "data": {"value": base64.b64encode(text.encode()).decode()},
        }
    )


# --------------------------------------------------------------------------- the access matrix

# (method, url, body, need): "read" any member, "write" owners and members, "manage" owners,
# "operator" operators. {member} is dave's membership id.
URLS = [
    ("GET", PHYSICS + "/", None, "read"),
    ("PATCH", PHYSICS + "/", {"description": "Particles"}, "operator"),
    ("GET", PHYSICS + "/members/", None, "read"),
    ("POST", PHYSICS + "/members/", {"email": "erin@physics.example", "role": "viewer"}, "manage"),
    ("PATCH", PHYSICS + "/members/{member}/", {"role": "viewer"}, "manage"),
    ("DELETE", PHYSICS + "/members/{member}/", None, "manage"),
    ("GET", PHYSICS + "/quota/", None, "read"),
    ("PUT", PHYSICS + "/quota/general/", {"guaranteed": 1, "maximum": 8}, "operator"),
    ("GET", PHYSICS + "/clusters/", None, "read"),
    ("POST", PHYSICS + "/clusters/", {"name": "beta"}, "write"),
    ("GET", ALPHA + "/", None, "read"),
    ("DELETE", ALPHA + "/", None, "write"),
    ("GET", ALPHA + "/kubeconfig/", None, "write"),
    ("GET", ALPHA + "/node-pools/", None, "read"),
    (
        "POST",
        ALPHA + "/node-pools/",
        {"name": "extra", "quota_class": "general", "image": IMAGE, "replicas": 1},
        "write",
    ),
    ("GET", WORKERS + "/", None, "read"),
    ("PATCH", WORKERS + "/", {"cleaning": "standard"}, "write"),
    ("DELETE", WORKERS + "/", None, "write"),
    ("POST", WORKERS + "/scale/", {"replicas": 1}, "write"),
    ("GET", PHYSICS + "/audit/", None, "manage"),
]
WRITES = [u for u in URLS if u[3] != "read"]
OPERATOR_ONLY = [u for u in URLS if u[3] == "operator"]
MANAGE = [u for u in URLS if u[3] == "manage"]


def _ids(urls):
    return [f"{method} {url.removeprefix(API)}" for method, url, *_ in urls]


def _url(url: str, scene) -> str:
    return url.format(member=scene.dave_membership.pk)


@pytest.mark.parametrize(("method", "url", "body", "need"), URLS, ids=_ids(URLS))
def test_carol_gets_404_on_every_physics_url(scene, method, url, body, need):
    error = _error(_call(api_client(scene.carol), method, _url(url, scene), body), 404, "not_found")
    assert "physics" not in error["message"].lower() or "no such" in error["message"].lower()


@pytest.mark.parametrize(("method", "url", "body", "need"), URLS, ids=_ids(URLS))
def test_anonymous_is_refused_everywhere(scene, method, url, body, need):
    response = _call(api_client(), method, _url(url, scene), body)
    assert response.status_code in (401, 403)
    assert _error(response, response.status_code)["code"] == "not_authenticated"


@pytest.mark.parametrize(("method", "url", "body", "need"), WRITES, ids=_ids(WRITES))
def test_viewer_bob_cannot_write(scene, method, url, body, need):
    error = _error(_call(api_client(scene.bob), method, _url(url, scene), body), 403, "permission_denied")
    assert error["message"]


@pytest.mark.parametrize(("method", "url", "body", "need"), MANAGE, ids=_ids(MANAGE))
def test_member_dave_cannot_manage(scene, method, url, body, need):
    _error(_call(api_client(scene.dave), method, _url(url, scene), body), 403, "permission_denied")


@pytest.mark.parametrize(("method", "url", "body", "need"), OPERATOR_ONLY, ids=_ids(OPERATOR_ONLY))
def test_owner_alice_cannot_do_what_only_operators_do(scene, method, url, body, need):
    _error(_call(api_client(scene.alice), method, _url(url, scene), body), 403, "permission_denied")


@pytest.mark.parametrize(("method", "url", "body", "need"), URLS, ids=_ids(URLS))
def test_olga_the_operator_may_use_every_url(scene, method, url, body, need):
    if url.endswith("/kubeconfig/"):
        _write_kubeconfig("physics-alpha")
    if method == "PUT":  # a maximum only: the empty fleet cannot carry a raised guarantee
        body = {"guaranteed": 2, "maximum": 9}
    response = _call(api_client(scene.olga), method, _url(url, scene), body)
    assert response.status_code in (200, 201, 202, 204), (response.status_code, response.content)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("PUT", PHYSICS + "/"),
        ("DELETE", PHYSICS + "/"),
        ("PUT", PHYSICS + "/members/{member}/"),
        ("POST", PHYSICS + "/quota/"),
        ("GET", PHYSICS + "/quota/general/"),
        ("DELETE", PHYSICS + "/quota/general/"),
        ("PUT", ALPHA + "/"),
        ("PATCH", ALPHA + "/"),
        ("POST", ALPHA + "/kubeconfig/"),
        ("PUT", WORKERS + "/"),
        ("GET", WORKERS + "/scale/"),
        ("POST", PHYSICS + "/audit/"),
        ("DELETE", API + "/tenants/"),
        ("POST", API + "/capacity/"),
    ],
)
def test_wrong_method_is_405(scene, method, url):
    client = api_client(scene.olga if url.endswith("/capacity/") else scene.alice)
    _error(_call(client, method, _url(url, scene), {}), 405, "method_not_allowed")


# --------------------------------------------------------------------------- tenants


def test_members_see_their_tenants_and_operators_all(world):
    body = api_client(world.alice).get(f"{API}/tenants/").json()
    assert [(t["slug"], t["role"]) for t in body["results"]] == [("physics", "owner")]
    body = api_client(world.bob).get(f"{API}/tenants/").json()
    assert [(t["slug"], t["role"]) for t in body["results"]] == [("physics", "viewer")]
    body = api_client(world.olga).get(f"{API}/tenants/").json()
    assert [(t["slug"], t["role"]) for t in body["results"]] == [("genomics", None), ("physics", None)]
    detail = api_client(world.alice).get(PHYSICS + "/").json()
    assert detail == {**detail, "slug": "physics", "name": "Physics", "priority": 10, "role": "owner"}


def test_operator_creates_and_changes_a_tenant(world):
    olga = api_client(world.olga)
    response = olga.post(f"{API}/tenants/", {"slug": "Chemistry", "name": "Chemistry", "priority": 3}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["slug"] == "chemistry" and response["Location"].endswith("/api/v1/tenants/chemistry/")
    assert AuditEntry.objects.filter(action="tenant.create", tenant__slug="chemistry", actor=world.olga).exists()
    response = olga.patch(f"{API}/tenants/chemistry/", {"description": "Molecules", "priority": 4}, format="json")
    assert response.json()["description"] == "Molecules" and response.json()["priority"] == 4
    error = _error(olga.patch(f"{API}/tenants/chemistry/", {"slug": "chem"}, format="json"), 400, "invalid")
    assert error["details"] == {"slug": ["This field is read-only."]}


def test_only_operators_create_tenants(world):
    _error(api_client(world.alice).post(f"{API}/tenants/", {"slug": "x", "name": "X"}, format="json"), 403)
    assert not Tenant.objects.filter(slug="x").exists()


def test_invalid_tenant_slug_is_a_400_keyed_slug(world):
    error = _error(
        api_client(world.olga).post(f"{API}/tenants/", {"slug": "no_underscores", "name": "X"}, format="json"), 400
    )
    assert set(error["details"]) == {"slug"}


# --------------------------------------------------------------------------- creating twice


def test_creating_an_existing_tenant_is_409_with_the_tenant(world):
    error = _error(
        api_client(world.olga).post(f"{API}/tenants/", {"slug": "physics", "name": "Other"}, format="json"),
        409,
        "exists",
    )
    assert error["details"]["existing"]["slug"] == "physics"
    assert error["details"]["existing"]["name"] == "Physics"


def test_creating_an_existing_cluster_is_409_with_the_cluster(scene):
    error = _error(api_client(scene.dave).post(f"{PHYSICS}/clusters/", {"name": "Alpha"}, format="json"), 409, "exists")
    existing = error["details"]["existing"]
    assert existing["name"] == "alpha" and existing["created_by"] == "alice@physics.example"
    assert [p["name"] for p in existing["node_pools"]] == ["workers"]
    assert Cluster.objects.filter(tenant=scene.physics).count() == 1


def test_creating_an_existing_node_pool_is_409_with_the_pool(scene):
    body = {"name": "workers", "quota_class": "gpu-a100", "image": IMAGE, "replicas": 1}
    error = _error(api_client(scene.alice).post(f"{ALPHA}/node-pools/", body, format="json"), 409, "exists")
    assert error["details"]["existing"]["name"] == "workers"
    assert error["details"]["existing"]["quota_class"] == "general"


def test_a_cluster_of_the_same_name_in_another_tenant_is_no_conflict(scene):
    response = api_client(scene.carol).post(f"{API}/tenants/genomics/clusters/", {"name": "alpha"}, format="json")
    assert response.status_code == 201, response.content


def test_idempotency_key_replays_the_first_response(world):
    alice = api_client(world.alice)
    headers = {"Idempotency-Key": "3b2f0a9e-create-alpha"}
    first = alice.post(f"{PHYSICS}/clusters/", {"name": "alpha", "addons": ["kata"]}, format="json", headers=headers)
    assert first.status_code == 201, first.content
    again = alice.post(f"{PHYSICS}/clusters/", {"addons": ["kata"], "name": "alpha"}, format="json", headers=headers)
    assert again.status_code == 201 and again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Cluster.objects.filter(tenant=world.physics, name="alpha").count() == 1
    assert AuditEntry.objects.filter(action="cluster.create").count() == 1
    # Without the key the same request is the 409 with the existing cluster.
    _error(alice.post(f"{PHYSICS}/clusters/", {"name": "alpha", "addons": ["kata"]}, format="json"), 409, "exists")


def test_idempotency_key_with_another_body_is_422(world):
    alice = api_client(world.alice)
    headers = {"Idempotency-Key": "key-1"}
    assert alice.post(f"{PHYSICS}/clusters/", {"name": "alpha"}, format="json", headers=headers).status_code == 201
    response = alice.post(f"{PHYSICS}/clusters/", {"name": "beta"}, format="json", headers=headers)
    error = _error(response, 422, "idempotency_key_reused")
    assert "different request" in error["message"] and "new key" in error["message"]
    assert not Cluster.objects.filter(name="beta").exists()


def test_idempotency_key_on_another_endpoint_is_422(scene):
    alice = api_client(scene.alice)
    headers = {"Idempotency-Key": "shared"}
    body = {"name": "gpus", "quota_class": "gpu-a100", "image": IMAGE, "replicas": 1}
    assert alice.post(f"{ALPHA}/node-pools/", body, format="json", headers=headers).status_code == 201
    _error(alice.post(f"{PHYSICS}/clusters/", body, format="json", headers=headers), 422)


def test_idempotency_keys_belong_to_their_user(world):
    headers = {"Idempotency-Key": "same-key"}
    alice, dave = api_client(world.alice), api_client(world.dave)
    assert alice.post(f"{PHYSICS}/clusters/", {"name": "alpha"}, format="json", headers=headers).status_code == 201
    assert dave.post(f"{PHYSICS}/clusters/", {"name": "beta"}, format="json", headers=headers).status_code == 201


def test_a_refused_create_leaves_its_key_free(world):
    alice = api_client(world.alice)
    headers = {"Idempotency-Key": "retry-me"}
    body = {"name": "alpha", "kubernetes_version": "v9.9.9"}
    _error(alice.post(f"{PHYSICS}/clusters/", body, format="json", headers=headers), 400)
    assert not IdempotencyKey.objects.exists()
    body = {"name": "alpha", "kubernetes_version": "v1.31.4"}
    assert alice.post(f"{PHYSICS}/clusters/", body, format="json", headers=headers).status_code == 201


def test_an_expired_idempotency_key_may_be_reused(world):
    alice = api_client(world.alice)
    headers = {"Idempotency-Key": "daily"}
    assert alice.post(f"{PHYSICS}/clusters/", {"name": "alpha"}, format="json", headers=headers).status_code == 201
    IdempotencyKey.objects.update(created_at=IdempotencyKey.objects.get().created_at - timedelta(hours=25))
    response = alice.post(f"{PHYSICS}/clusters/", {"name": "beta"}, format="json", headers=headers)
    assert response.status_code == 201 and response.json()["name"] == "beta"
    assert IdempotencyKey.objects.get().path == f"{PHYSICS}/clusters/"


def test_tenant_create_with_an_idempotency_key(world):
    olga = api_client(world.olga)
    headers = {"Idempotency-Key": "t-1"}
    first = olga.post(f"{API}/tenants/", {"slug": "chem", "name": "Chemistry"}, format="json", headers=headers)
    again = olga.post(f"{API}/tenants/", {"slug": "chem", "name": "Chemistry"}, format="json", headers=headers)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert Tenant.objects.filter(slug="chem").count() == 1


def test_an_overlong_idempotency_key_is_400(world):
    response = api_client(world.alice).post(
        f"{PHYSICS}/clusters/", {"name": "alpha"}, format="json", headers={"Idempotency-Key": "k" * 256}
    )
    assert set(_error(response, 400)["details"]) == {"Idempotency-Key"}


# --------------------------------------------------------------------------- members


def test_owner_adds_changes_and_removes_a_member(world):
    alice = api_client(world.alice)
    response = alice.post(f"{PHYSICS}/members/", {"email": "Erin@Physics.example", "role": "viewer"}, format="json")
    assert response.status_code == 201, response.content
    erin = response.json()
    assert erin["email"] == "erin@physics.example" and erin["role"] == "viewer"
    response = alice.patch(f"{PHYSICS}/members/{erin['id']}/", {"role": "member"}, format="json")
    assert response.json()["role"] == "member"
    assert alice.delete(f"{PHYSICS}/members/{erin['id']}/").status_code == 204
    actions = list(AuditEntry.objects.filter(tenant=world.physics).values_list("action", flat=True))
    assert {"membership.add", "membership.role", "membership.remove"} <= set(actions)
    emails = [m["email"] for m in alice.get(f"{PHYSICS}/members/").json()["results"]]
    assert emails == ["alice@physics.example", "bob@physics.example", "dave@physics.example"]


def test_adding_someone_twice_is_a_400_keyed_email(world):
    error = _error(
        api_client(world.alice).post(f"{PHYSICS}/members/", {"email": "bob@physics.example"}, format="json"), 400
    )
    assert "already a viewer" in error["details"]["email"][0]


def test_the_last_owner_can_be_neither_demoted_nor_removed(world):
    alice = api_client(world.alice)
    mine = Membership.objects.get(tenant=world.physics, user=world.alice)
    error = _error(alice.patch(f"{PHYSICS}/members/{mine.pk}/", {"role": "member"}, format="json"), 400)
    assert "at least one owner" in error["details"]["role"][0]
    error = _error(alice.delete(f"{PHYSICS}/members/{mine.pk}/"), 400)
    assert "at least one owner" in error["details"]["non_field_errors"][0]
    assert Membership.objects.get(pk=mine.pk).role == Role.OWNER


def test_another_tenants_membership_is_404(world):
    carols = Membership.objects.get(tenant=world.genomics, user=world.carol)
    _error(api_client(world.alice).delete(f"{PHYSICS}/members/{carols.pk}/"), 404)
    assert Membership.objects.filter(pk=carols.pk).exists()


# --------------------------------------------------------------------------- quota


def test_members_read_their_quota_per_class(scene):
    rows = api_client(scene.bob).get(f"{PHYSICS}/quota/").json()
    general = next(r for r in rows if r["quota_class"] == "general")
    assert general == {
        **general,
        "guaranteed": 2,
        "maximum": 8,
        "held": 0,
        "borrowed": 0,
        "committed": 2,
        "room": 6,
    }
    assert {r["quota_class"] for r in rows} >= {"general", "gpu-a100"}


def test_operator_sets_a_quota(world):
    response = api_client(world.olga).put(f"{PHYSICS}/quota/general/", {"guaranteed": 1, "maximum": 12}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {**response.json(), "tenant": "physics", "guaranteed": 1, "maximum": 12}
    assert AuditEntry.objects.filter(action="quota.update", tenant=world.physics).exists()


def test_a_guarantee_the_fleet_cannot_carry_is_refused_with_the_shortfall(world):
    # The world has no hosts: every raised guarantee is short.
    response = api_client(world.olga).put(f"{PHYSICS}/quota/general/", {"guaranteed": 5, "maximum": 8}, format="json")
    error = _error(response, 400, "invalid")
    assert set(error["details"]) == {"guaranteed"}
    assert "general" in " ".join(error["details"]["guaranteed"])


def test_quota_of_an_unknown_class_is_404(world):
    _error(api_client(world.olga).put(f"{PHYSICS}/quota/nope/", {"guaranteed": 0, "maximum": 1}, format="json"), 404)


# --------------------------------------------------------------------------- clusters


def test_member_creates_a_cluster(world):
    response = api_client(world.dave).post(
        f"{PHYSICS}/clusters/",
        {"name": "beta", "kubernetes_version": "v1.30.8", "control_plane_replicas": 3, "addons": ["kubevirt"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body == {
        **body,
        "name": "beta",
        "tenant": "physics",
        "kubernetes_version": "v1.30.8",
        "control_plane_replicas": 3,
        "addons": ["kubevirt"],
        "phase": "pending",
        "node_pools": [],
        "created_by": "dave@physics.example",
    }
    assert body["endpoint"].startswith("https://192.0.2.") and response["Location"].endswith(
        "/tenants/physics/clusters/beta/"
    )
    entry = AuditEntry.objects.get(action="cluster.create")
    assert entry.actor == world.dave and entry.tenant == world.physics


def test_a_cluster_with_an_unoffered_version_is_a_400_keyed_version(world):
    error = _error(
        api_client(world.alice).post(
            f"{PHYSICS}/clusters/", {"name": "beta", "kubernetes_version": "v1.20.0"}, format="json"
        ),
        400,
    )
    assert "v1.31.4" in error["details"]["kubernetes_version"][0]


def test_unknown_fields_are_refused_by_name(world):
    error = _error(
        api_client(world.alice).post(f"{PHYSICS}/clusters/", {"name": "beta", "replica": 3}, format="json"), 400
    )
    assert "Unknown field" in error["details"]["replica"][0]


def test_cluster_detail_has_its_pools(scene):
    body = api_client(scene.bob).get(ALPHA + "/").json()
    assert body["name"] == "alpha" and body["phase"] == "pending" and body["created_by"] == "alice@physics.example"
    assert body["node_pools"] == [
        {
            "name": "workers",
            "quota_class": "general",
            "workload_class": "on_demand",
            "phase": "pending",
            "desired": 2,
            "ready": 0,
            "autoscale_min": None,
            "autoscale_max": None,
        }
    ]


def test_deleting_a_cluster_is_accepted_and_marks_it_deleting(scene):
    response = api_client(scene.dave).delete(ALPHA + "/")
    assert response.status_code == 202
    assert response.json()["phase"] == "deleting"
    assert NodePool.objects.get(pk=scene.workers.pk).phase == NodePool.Phase.DELETING
    assert AuditEntry.objects.filter(action="cluster.delete").exists()
    # A pool cannot be added to a cluster being deleted.
    body = {"name": "late", "quota_class": "general", "image": IMAGE, "replicas": 0}
    error = _error(api_client(scene.dave).post(f"{ALPHA}/node-pools/", body, format="json"), 400)
    assert "being deleted" in error["details"]["non_field_errors"][0]


def test_a_deleted_cluster_is_404(scene):
    Cluster.objects.filter(pk=scene.alpha.pk).update(deleted_at=scene.alpha.created_at, phase="deleted")
    _error(api_client(scene.alice).get(ALPHA + "/"), 404)
    _error(api_client(scene.alice).get(WORKERS + "/"), 404)


# --------------------------------------------------------------------------- kubeconfig


def test_kubeconfig_is_409_until_the_control_plane_wrote_it(scene):
    error = _error(api_client(scene.alice).get(ALPHA + "/kubeconfig/"), 409)
    assert "not available yet" in error["message"]
    assert not AuditEntry.objects.filter(action="cluster.kubeconfig").exists()


def test_member_downloads_the_kubeconfig_and_it_is_audited_never_logged(scene, caplog):
    _write_kubeconfig(scene.alpha.object_name)
    caplog.set_level(logging.DEBUG)
    response = api_client(scene.dave).get(ALPHA + "/kubeconfig/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    assert response["Content-Disposition"] == 'attachment; filename="physics-alpha-kubeconfig.yaml"'
    assert response["Cache-Control"] == "no-store"
    assert response.content.decode() == KUBECONFIG
    entry = AuditEntry.objects.get(action="cluster.kubeconfig")
    assert entry.actor == scene.dave and entry.tenant == scene.physics and entry.target_repr == "physics/alpha"
    secret = "s3cret-kubeconfig-token"
    assert secret not in caplog.text
    assert secret not in json.dumps([entry.before, entry.after])
    # …and in no other response.
    alice = api_client(scene.alice)
    for url in (ALPHA + "/", PHYSICS + "/clusters/", WORKERS + "/", PHYSICS + "/audit/", API + "/me/"):
        assert secret not in alice.get(url).content.decode(), url


def test_kubeconfig_answers_a_client_that_accepts_only_yaml(scene):
    _write_kubeconfig(scene.alpha.object_name)
    response = api_client(scene.alice).get(ALPHA + "/kubeconfig/", HTTP_ACCEPT="application/yaml")
    assert response.status_code == 200 and response.content.decode() == KUBECONFIG


def test_viewer_cannot_download_the_kubeconfig(scene):
    _write_kubeconfig(scene.alpha.object_name)
    response = api_client(scene.bob).get(ALPHA + "/kubeconfig/")
    _error(response, 403)
    assert b"s3cret" not in response.content


# --------------------------------------------------------------------------- node pools


def test_member_adds_a_pool_with_a_compact_requirement(scene):
    body = {
        "name": "fast",
        "quota_class": "general",
        "image": IMAGE,
        "requirement": "cores>=32,nvme",
        "policy": {"mode": "spread", "level": "rack"},
        "cleaning": "standard",
        "workload_class": "guaranteed",
        "replicas": 0,
    }
    response = api_client(scene.dave).post(f"{ALPHA}/node-pools/", body, format="json")
    assert response.status_code == 201, response.content
    pool = response.json()
    assert pool == {
        **pool,
        "name": "fast",
        "cluster": "alpha",
        "quota_class": "general",
        "image": IMAGE,
        "requirement": {"min_cores": 32, "traits": ["nvme"]},
        "requirement_text": "cores>=32,nvme",
        "workload_class": "guaranteed",
        "replicas": 0,
        "autoscale_min": None,
        "held": 0,
        "hosts": [],
        "created_by": "dave@physics.example",
    }
    assert pool["policy"]["mode"] == "spread"
    assert response["Location"].endswith("/clusters/alpha/node-pools/fast/")


def test_an_autoscaled_pool(scene):
    body = {"name": "auto", "quota_class": "general", "image": IMAGE, "autoscale_min": 1, "autoscale_max": 4}
    response = api_client(scene.alice).post(f"{ALPHA}/node-pools/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json() == {**response.json(), "replicas": None, "autoscale_min": 1, "autoscale_max": 4}


def test_a_pool_beyond_the_quota_is_refused_with_the_reason(scene):
    body = {"name": "big", "quota_class": "general", "image": IMAGE, "replicas": 7}
    error = _error(api_client(scene.alice).post(f"{ALPHA}/node-pools/", body, format="json"), 400)
    message = error["details"]["replicas"][0]
    assert "physics may hold at most 8 general hosts" in message and "can have at most 6" in message


def test_a_pool_with_both_sizes_is_refused(scene):
    body = {"name": "both", "quota_class": "general", "image": IMAGE, "replicas": 1, "autoscale_min": 0}
    error = _error(api_client(scene.alice).post(f"{ALPHA}/node-pools/", body, format="json"), 400)
    assert set(error["details"]) == {"autoscale_max"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"quota_class": "nope"}, "quota_class"),
        ({"image": "windows-95"}, "image"),
        ({"requirement": "cores>64"}, "requirement"),
        ({"requirement": [1, 2]}, "requirement"),
        ({"cleaning": "shred"}, "cleaning"),
        ({"name": "Not_A_Label"}, "name"),
    ],
)
def test_bad_pool_input_is_a_400_keyed_by_field(scene, change, field):
    body = {"name": "p", "quota_class": "general", "image": IMAGE, "replicas": 0, **change}
    error = _error(api_client(scene.alice).post(f"{ALPHA}/node-pools/", body, format="json"), 400)
    assert set(error["details"]) == {field}, error


def _hold(pool: NodePool, hosts, *, guaranteed: int = 0) -> None:
    """Allocate hosts to the pool as the allocator does (claim + PoolHost)."""
    for index, host in enumerate(hosts):
        claim = HostClaim.objects.create(host=host, holder=pool.holder, tenant=pool.cluster.tenant.slug)
        PoolHost.objects.create(
            pool=pool,
            host=host,
            claim=claim,
            state=PoolHost.State.READY,
            guaranteed=index < guaranteed,
            preempt_at=None if index < guaranteed else pool.created_at + timedelta(hours=1),
        )


def test_pool_detail_shows_the_hosts_it_holds(scene):
    hosts = make_fleet(3, prefix="px")
    _hold(scene.workers, hosts[:2], guaranteed=1)
    body = api_client(scene.bob).get(WORKERS + "/").json()
    assert body["held"] == 2 and body["desired"] == 2 and body["phase"] == "pending"
    assert [(h["name"], h["state"], h["guaranteed"], h["borrowed"]) for h in body["hosts"]] == [
        ("px00000", "ready", True, False),
        ("px00001", "ready", False, True),
    ]
    assert body["hosts"][0]["preempt_at"] is None and body["hosts"][1]["preempt_at"] is not None
    listed = api_client(scene.bob).get(ALPHA + "/node-pools/").json()["results"]
    assert [(p["name"], p["held"]) for p in listed] == [("workers", 2)]


def test_member_changes_a_pool(scene):
    response = api_client(scene.dave).patch(
        WORKERS + "/", {"requirement": {"min_cores": 16}, "policy": {"mode": "pack", "level": "rack"}}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["requirement_text"] == "cores>=16"
    assert AuditEntry.objects.filter(action="node_pool.update").exists()


def test_a_pools_class_and_size_cannot_be_patched(scene):
    error = _error(api_client(scene.alice).patch(WORKERS + "/", {"quota_class": "gpu-a100"}, format="json"), 400)
    assert error["details"] == {"quota_class": ["This field is read-only."]}
    error = _error(api_client(scene.alice).patch(WORKERS + "/", {"replicas": 3}, format="json"), 400)
    assert "replicas" in error["details"]


def test_member_scales_a_pool(scene):
    dave = api_client(scene.dave)
    response = dave.post(WORKERS + "/scale/", {"replicas": 5}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["replicas"] == 5 and response.json()["desired"] == 5
    response = dave.post(WORKERS + "/scale/", {"autoscale_min": 0, "autoscale_max": 6}, format="json")
    assert response.json() == {**response.json(), "replicas": None, "autoscale_min": 0, "autoscale_max": 6}
    assert AuditEntry.objects.filter(action="node_pool.scale").count() == 2


def test_scaling_beyond_the_quota_is_refused_with_the_reason(scene):
    error = _error(api_client(scene.dave).post(WORKERS + "/scale/", {"replicas": 9}, format="json"), 400)
    assert "at most 8 general hosts" in error["details"]["replicas"][0]
    assert NodePool.objects.get(pk=scene.workers.pk).replicas == 2


def test_deleting_a_pool_is_accepted(scene):
    response = api_client(scene.alice).delete(WORKERS + "/")
    assert response.status_code == 202 and response.json()["phase"] == "deleting"


# --------------------------------------------------------------------------- tenant-scoped tokens


def _token(user, tenant: Tenant | None) -> str:
    token, plaintext = api_token_create(user=user, name=f"ci-{tenant.slug if tenant else 'all'}")
    if tenant is not None:
        token.tenant = tenant
        token.save(update_fields=["tenant"])
    return plaintext


def _token_client(plaintext: str):
    client = api_client()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    return client


def test_a_tenant_token_sees_only_its_tenant(scene):
    member(scene.physics, scene.carol, Role.MEMBER)  # carol is in both tenants now
    scoped = _token_client(_token(scene.carol, scene.genomics))
    body = scoped.get(f"{API}/tenants/").json()
    assert [t["slug"] for t in body["results"]] == ["genomics"]
    for url in (PHYSICS + "/", PHYSICS + "/clusters/", ALPHA + "/", WORKERS + "/"):
        _error(scoped.get(url), 404)
    _error(scoped.post(f"{PHYSICS}/clusters/", {"name": "sneaky"}, format="json"), 404)
    assert scoped.post(f"{API}/tenants/genomics/clusters/", {"name": "ci"}, format="json").status_code == 201
    assert [t["slug"] for t in scoped.get(f"{API}/me/").json()["tenants"]] == ["genomics"]
    # Her unscoped token sees both.
    everything = _token_client(_token(scene.carol, None))
    assert [t["slug"] for t in everything.get(f"{API}/tenants/").json()["results"]] == ["genomics", "physics"]
    assert everything.get(ALPHA + "/").status_code == 200


def test_an_operators_tenant_token_has_no_fleet_powers(scene):
    scoped = _token_client(_token(scene.olga, scene.genomics))
    _error(scoped.get(PHYSICS + "/"), 404)
    _error(scoped.get(f"{API}/audit/"), 403)
    _error(scoped.get(f"{API}/capacity/"), 403)
    _error(scoped.post(f"{API}/tenants/", {"slug": "x", "name": "X"}, format="json"), 403)
    _error(scoped.put(f"{API}/tenants/genomics/quota/general/", {"guaranteed": 0, "maximum": 99}, format="json"), 403)
    assert scoped.get(f"{API}/tenants/genomics/clusters/").status_code == 200


def test_tokens_never_appear_in_responses(scene):
    plaintext = _token(scene.alice, scene.physics)
    client = _token_client(plaintext)
    for url in (f"{API}/tenants/", PHYSICS + "/", PHYSICS + "/members/", PHYSICS + "/audit/", f"{API}/me/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert plaintext not in response.content.decode() and plaintext[:12] not in response.content.decode()


# --------------------------------------------------------------------------- /me/


def test_me_lists_the_tenants_i_belong_to(world):
    body = api_client(world.alice).get(f"{API}/me/").json()
    assert body["tenants"] == [{"slug": "physics", "name": "Physics", "role": "owner"}]
    assert body["is_operator"] is False
    body = api_client(world.olga).get(f"{API}/me/").json()
    assert body["is_operator"] is True and body["tenants"] == []


# --------------------------------------------------------------------------- the catalogue


def test_everyone_reads_the_catalogue(world):
    bob = api_client(world.bob)
    classes = bob.get(f"{API}/quota-classes/").json()["results"]
    assert [c["name"] for c in classes] == ["general", "gpu-a100", "highmem"]
    assert classes[1]["requirement_text"] == "gpu:nvidia-a100"
    versions = bob.get(f"{API}/kubernetes-versions/").json()["results"]
    assert {(v["version"], v["is_default"]) for v in versions} == {("v1.31.4", True), ("v1.30.8", False)}
    image = bob.get(f"{API}/os-images/{IMAGE}/").json()
    assert image["kubernetes_version"] == "v1.31.4"
    assert bob.get(f"{API}/kubernetes-versions/v1.31.4/").json()["version"] == "v1.31.4"


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/quota-classes/", {"name": "x", "requirement_text": "cores>=8"}),
        ("PATCH", "/quota-classes/general/", {"order": 5}),
        ("DELETE", "/quota-classes/highmem/", None),
        ("POST", "/kubernetes-versions/", {"version": "v1.32.0"}),
        ("PATCH", "/kubernetes-versions/v1.30.8/", {"available": False}),
        ("DELETE", "/kubernetes-versions/v1.30.8/", None),
        ("POST", "/os-images/", {"name": "x", "url": "http://x/x.qcow2"}),
        ("PATCH", f"/os-images/{IMAGE}/", {"available": False}),
        ("DELETE", f"/os-images/{IMAGE}/", None),
        ("GET", "/capacity/", None),
        ("GET", "/audit/", None),
    ],
)
def test_only_operators_change_the_catalogue(world, method, url, body):
    _error(_call(api_client(world.alice), method, API + url, body), 403, "permission_denied")


def test_operator_maintains_quota_classes(world):
    olga = api_client(world.olga)
    response = olga.post(
        f"{API}/quota-classes/", {"name": "fat", "requirement_text": "ram>=1Ti", "order": 3}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["requirement"] == {"min_ram_gib": 1024}
    response = olga.patch(f"{API}/quota-classes/fat/", {"description": "A lot of RAM"}, format="json")
    assert response.json()["description"] == "A lot of RAM" and response.json()["requirement_text"] == "ram>=1Ti"
    error = _error(olga.patch(f"{API}/quota-classes/fat/", {"requirement_text": "ram<=1Ti"}, format="json"), 400)
    assert "requirement_text" in error["details"]
    assert olga.delete(f"{API}/quota-classes/fat/").status_code == 204
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"quota_class.create", "quota_class.update", "quota_class.delete"} <= actions


def test_a_quota_class_in_use_cannot_be_deleted(world):
    error = _error(api_client(world.olga).delete(f"{API}/quota-classes/general/"), 409)
    assert "in use" in error["message"]
    assert QuotaClass.objects.filter(name="general").exists()


def test_operator_offers_a_new_default_version_and_image(world):
    olga = api_client(world.olga)
    response = olga.post(f"{API}/kubernetes-versions/", {"version": "v1.32.0", "is_default": True}, format="json")
    assert response.status_code == 201, response.content
    assert list(KubernetesVersion.objects.filter(is_default=True).values_list("version", flat=True)) == ["v1.32.0"]
    response = olga.post(
        f"{API}/os-images/",
        {"name": "ubuntu-24.04-k8s-1.32", "url": "http://images/u.qcow2", "kubernetes_version": "v1.32.0"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert OsImage.objects.get(name="ubuntu-24.04-k8s-1.32").kubernetes_version.version == "v1.32.0"
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"kubernetes_version.create", "os_image.create"} <= actions


def test_an_image_in_use_cannot_be_deleted(scene):
    error = _error(api_client(scene.olga).delete(f"{API}/os-images/{IMAGE}/"), 409)
    assert "in use" in error["message"] and "unavailable" in error["message"]


def test_operator_reads_fleet_capacity(world):
    make_fleet(8, prefix="cap")
    rows = api_client(world.olga).get(f"{API}/capacity/").json()
    assert [r["quota_class"] for r in rows] == ["general", "gpu-a100", "highmem"]
    general = rows[0]
    assert general["guaranteed_total"] == 4 and general["maximum_total"] == 14 and general["hosts"] >= 1


# --------------------------------------------------------------------------- audit


def test_operator_reads_and_filters_the_audit_log(scene):
    cluster_create(tenant=scene.genomics, name="seq", actor=scene.carol)
    olga = api_client(scene.olga)
    everything = olga.get(f"{API}/audit/").json()
    assert everything["count"] == AuditEntry.objects.count() >= 3
    physics = olga.get(f"{API}/audit/", {"tenant": "physics"}).json()["results"]
    assert {e["tenant"] for e in physics} == {"physics"}
    creates = olga.get(f"{API}/audit/", {"action": "cluster.create"}).json()["results"]
    assert sorted(e["target_repr"] for e in creates) == ["genomics/seq", "physics/alpha"]
    family = olga.get(f"{API}/audit/", {"action": "node_pool."}).json()["results"]
    assert [e["action"] for e in family] == ["node_pool.create"]
    by_carol = olga.get(f"{API}/audit/", {"actor": "Carol@genomics.example"}).json()["results"]
    assert [e["action"] for e in by_carol] == ["cluster.create"]
    assert by_carol[0]["after"]["name"] == "seq"


def test_owner_reads_the_tenants_audit_log_only(scene):
    cluster_create(tenant=scene.genomics, name="seq", actor=scene.carol)
    entries = api_client(scene.alice).get(PHYSICS + "/audit/").json()["results"]
    assert {e["tenant"] for e in entries} == {"physics"}
    assert [e["action"] for e in entries] == ["node_pool.create", "cluster.create"]  # newest first
    _error(api_client(scene.alice).get(f"{API}/audit/"), 403)


# --------------------------------------------------------------------------- query counts


@pytest.fixture
def busy(world):
    """physics with 6 clusters of 2 pools each, every pool holding a host (an N+1 would show)."""
    hosts = iter(make_fleet(12, prefix="qc"))
    for index in range(6):
        cluster = cluster_create(tenant=world.physics, name=f"c{index}", actor=world.alice)
        for kind in ("a", "b"):
            pool = node_pool_create(
                cluster=cluster, name=f"p{kind}", quota_class="general", image=IMAGE, replicas=0, actor=world.alice
            )
            _hold(pool, [next(hosts)])
    for index in range(5):
        member(world.physics, person(f"m{index}@physics.example"), Role.VIEWER)
    return world


def test_cluster_list_queries(busy, django_assert_max_num_queries):
    client = api_client(busy.alice)
    # tenant + role, count, page, live pools (with their classes)
    with django_assert_max_num_queries(5):
        body = client.get(f"{PHYSICS}/clusters/").json()
    assert body["count"] == 6 and all(len(c["node_pools"]) == 2 for c in body["results"])


def test_node_pool_list_queries(busy, django_assert_max_num_queries):
    client = api_client(busy.alice)
    # tenant + role, cluster, count, page (classes, images, creators joined; held annotated)
    with django_assert_max_num_queries(5):
        body = client.get(f"{PHYSICS}/clusters/c0/node-pools/").json()
    assert [(p["name"], p["held"]) for p in body["results"]] == [("pa", 1), ("pb", 1)]


def test_node_pool_detail_queries(busy, django_assert_max_num_queries):
    client = api_client(busy.alice)
    # tenant + role, cluster, pool, its hosts
    with django_assert_max_num_queries(5):
        body = client.get(f"{PHYSICS}/clusters/c0/node-pools/pa/").json()
    assert len(body["hosts"]) == 1


def test_tenant_member_and_audit_list_queries(busy, django_assert_max_num_queries):
    olga = api_client(busy.olga)
    with django_assert_max_num_queries(2):  # count, page (the requester's role a subquery)
        assert olga.get(f"{API}/tenants/").json()["count"] == 2
    with django_assert_max_num_queries(4):  # tenant + role, count, page (users joined)
        assert olga.get(f"{PHYSICS}/members/").json()["count"] == 8
    with django_assert_max_num_queries(2):  # count, page (tenants joined)
        assert olga.get(f"{API}/audit/").json()["count"] >= 18
    with django_assert_max_num_queries(4):  # tenant + role, count, page
        assert api_client(busy.alice).get(f"{PHYSICS}/audit/").json()["count"] >= 18


def test_catalogue_list_queries(busy, django_assert_max_num_queries):
    bob = api_client(busy.bob)
    for url in ("/quota-classes/", "/kubernetes-versions/", "/os-images/"):
        with django_assert_max_num_queries(2):  # count, page
            assert bob.get(API + url).status_code == 200


# --------------------------------------------------------------------------- the schema


def test_schema_generates_without_warnings_and_names_every_operation(tmp_path):
    result = run_manage("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert result.returncode == 0, result.stderr
    schema = yaml.safe_load((tmp_path / "schema.yaml").read_text())
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {
        "tenants_list",
        "tenant_create",
        "tenant_retrieve",
        "tenant_update",
        "tenant_members_list",
        "tenant_member_add",
        "tenant_member_update",
        "tenant_member_remove",
        "tenant_quota_list",
        "tenant_quota_update",
        "clusters_list",
        "cluster_create",
        "cluster_retrieve",
        "cluster_delete",
        "cluster_kubeconfig",
        "node_pools_list",
        "node_pool_create",
        "node_pool_retrieve",
        "node_pool_update",
        "node_pool_delete",
        "node_pool_scale",
        "tenant_audit_list",
        "audit_list",
        "capacity",
        "quota_classes_list",
        "quota_class_create",
        "kubernetes_versions_list",
        "os_images_list",
    } <= operations
    create = schema["paths"]["/api/v1/tenants/{slug}/clusters/"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in create["parameters"]}
    assert {"201", "409", "422"} <= set(create["responses"])
    kubeconfig = schema["paths"]["/api/v1/tenants/{slug}/clusters/{cluster}/kubeconfig/"]["get"]
    assert "application/yaml" in kubeconfig["responses"]["200"]["content"]


def test_responses_match_the_schema(scene, alice_client):
    import jsonschema

    _hold(scene.workers, make_fleet(2, prefix="sx"), guaranteed=1)
    schema = yaml.safe_load(alice_client.get("/api/v1/schema/").content)
    components = schema["components"]["schemas"]
    alice, olga = api_client(scene.alice), api_client(scene.olga)
    checks = [
        (alice, f"{API}/tenants/", "PaginatedTenantList"),
        (alice, PHYSICS + "/", "Tenant"),
        (alice, PHYSICS + "/members/", "PaginatedMembershipList"),
        (alice, PHYSICS + "/clusters/", "PaginatedClusterList"),
        (alice, ALPHA + "/", "Cluster"),
        (alice, ALPHA + "/node-pools/", "PaginatedNodePoolList"),
        (alice, WORKERS + "/", "NodePoolDetail"),
        (alice, PHYSICS + "/audit/", "PaginatedAuditEntryList"),
        (alice, f"{API}/quota-classes/", "PaginatedQuotaClassList"),
        (alice, f"{API}/kubernetes-versions/", "PaginatedKubernetesVersionList"),
        (alice, f"{API}/os-images/", "PaginatedOsImageList"),
        (olga, f"{API}/audit/", "PaginatedAuditEntryList"),
    ]
    for client, url, component in checks:
        response = client.get(url)
        assert response.status_code == 200, url
        jsonschema.validate(response.json(), _resolve(components[component], components))
    usage = {"type": "array", "items": _resolve(components["ClassUsage"], components)}
    jsonschema.validate(alice.get(PHYSICS + "/quota/").json(), usage)
    capacity = {"type": "array", "items": _resolve(components["ClassCapacity"], components)}
    jsonschema.validate(olga.get(f"{API}/capacity/").json(), capacity)
    error = _resolve(components["Error"], components)
    jsonschema.validate(alice.post(f"{PHYSICS}/clusters/", {"name": "alpha"}, format="json").json(), error)


def test_expired_idempotency_keys_are_purged_every_hour(world):
    from datetime import timedelta

    from django.utils import timezone

    from tenants.models import IdempotencyKey
    from tenants.tasks import idempotency_keys_purge_task

    old = timezone.now() - timedelta(hours=25)
    for key, at in (("old", old), ("new", timezone.now())):
        IdempotencyKey.objects.create(
            user=world.alice, key=key, method="POST", path="/x", fingerprint="f", response_status=201, created_at=at
        )
    assert idempotency_keys_purge_task() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
