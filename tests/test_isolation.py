"""The isolation sweep: every URL pattern and API route that names a tenant, tried by the people
who must not get through (STYLE.md §3, §9).

* carol (owner of genomics) gets **404** on every physics URL, for every method — another
  tenant's objects look exactly like missing ones;
* bob (viewer in physics) gets **403** on every write, and on the two reads reserved to members
  (kubeconfig) and owners (the audit log);
* anonymous people are sent to sign in (pages) or refused (API);
* operator-only URLs refuse tenant members.

The URLs come from the resolver, not from a list: a new tenant URL fails
:func:`test_every_tenant_url_is_classified` until it is added to the tables below, so it is
covered the day it appears.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from reservations.services import reservation_create
from tenants.clusters import cluster_create, node_pool_create
from tenants.models import Membership, NodePool
from tests.conftest import api_client

pytestmark = pytest.mark.django_db

# url name -> the methods a viewer (bob) may use; every other method the URL answers is a
# write, or a read for members only (kubeconfig) or owners only (the audit log): 403 for him.
PAGES = {
    "tenant:dashboard": {"get"},
    "tenant:clusters": {"get"},
    "tenant:cluster_new": set(),
    "tenant:cluster": {"get"},
    "tenant:kubeconfig": set(),
    "tenant:cluster_delete": set(),
    "tenant:pool_new": set(),
    "tenant:pool_preview": set(),
    "tenant:pool_scale": set(),
    "tenant:pool_delete": set(),
    "tenant:members": {"get"},
    "tenant:member_role": set(),
    "tenant:member_remove": set(),
    "tenant:audit": set(),
    "reservations:calendar": {"get"},
    "reservations:events": {"get"},
    "reservations:availability": {"get"},
    "reservations:book": set(),
    "reservations:check": set(),
    "reservations:detail": {"get"},
    "reservations:cancel": set(),
    "reservations:release": set(),
    "reservations:extend": set(),
    "reservations:feed_create": set(),  # the feed's secret address: owners and members only
    "reservations:feed_rotate": set(),
}
API = {
    "api:tenant-detail": {"get"},
    "api:tenant-member-list": {"get"},
    "api:tenant-member-detail": {"get"},
    "api:tenant-quota-list": {"get"},
    "api:tenant-quota-detail": {"get"},
    "api:cluster-list": {"get"},
    "api:cluster-detail": {"get"},
    "api:cluster-kubeconfig": set(),
    "api:node-pool-list": {"get"},
    "api:node-pool-detail": {"get"},
    "api:node-pool-scale": set(),
    "api:tenant-audit-list": set(),
    "api:reservation-list": {"get"},
    "api:reservation-detail": {"get"},
    "api:reservation-check": set(),
    "api:reservation-cancel": set(),
    "api:reservation-extend": set(),
    "api:reservation-release": set(),
    "api:calendar-feed-list": set(),  # the feed's secret address: owners and members only
    "api:calendar-feed-rotate": set(),
}
# Tenant-named URLs for operators only: members of any tenant are refused.
OPERATOR_TENANT_URLS = {"tenant:operator_quota"}
OPERATOR_URLS = {
    "tenant:operator_tenants",
    "tenant:operator_tenant_new",
    "tenant:operator_capacity",
    "tenant:operator_audit",
    "reservations:operator_list",
    "reservations:operator_timeline",
    "reservations:operator_heatmap",
    "api:capacity",
    "api:audit-list",
}
ALL_METHODS = ("get", "post", "put", "patch", "delete")


def _patterns(patterns=None, namespace=""):
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(entry, URLResolver):
            inner = (
                f"{namespace}:{entry.namespace}" if namespace and entry.namespace else (entry.namespace or namespace)
            )
            yield from _patterns(entry.url_patterns, inner)
        elif isinstance(entry, URLPattern) and entry.name:
            yield (f"{namespace}:{entry.name}" if namespace else entry.name), entry


def tenant_url_names() -> set[str]:
    """Every named URL whose path carries a tenant slug."""
    return {name for name, entry in _patterns() if "slug" in entry.pattern.regex.groupindex}


def test_every_tenant_url_is_classified():
    unclassified = tenant_url_names() - set(PAGES) - set(API) - OPERATOR_TENANT_URLS
    assert not unclassified, f"new tenant URLs: add them to the sweep's tables: {sorted(unclassified)}"
    gone = (set(PAGES) | set(API) | OPERATOR_TENANT_URLS) - tenant_url_names()
    assert not gone, f"the sweep lists URLs that no longer exist: {sorted(gone)}"


@pytest.fixture
def physics(world):
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    node_pool_create(cluster=cluster, name="gpu", quota_class="gpu-a100", image=world.image, replicas=0)
    bob = Membership.objects.get(tenant=world.physics, user=world.bob)
    # A booking (refused: this world has no hosts) so reservation URLs have one to name.
    booking = reservation_create(
        tenant=world.physics,
        node_pool=NodePool.objects.get(cluster=cluster, name="gpu"),
        count=1,
        starts_at=timezone.now() + timedelta(days=1),
        duration=2,
        acting_user=world.alice,
    )
    kwargs = {
        "slug": "physics",
        "name": "vision",
        "cluster": "vision",
        "pool": "gpu",
        "pk": bob.pk,
        "id": bob.pk,
        "class_name": "general",
        "reservation": booking.pk,
        "reservation_id": booking.pk,
    }
    return world, kwargs


def _url(name: str, kwargs: dict) -> str:
    entry = dict(_patterns())[name]
    wanted = set(entry.pattern.regex.groupindex)
    if hasattr(entry.pattern, "converters"):
        wanted |= set(entry.pattern.converters)
    return reverse(name, kwargs={k: v for k, v in kwargs.items() if k in wanted})


def _call(client, method: str, url: str):
    if method == "get":
        return client.get(url)
    return getattr(client, method)(url, {}, content_type="application/json")


def _answered(client, name: str, kwargs: dict) -> dict[str, int]:
    """What each method gets on this URL for a tenant that does not exist: 404 where the URL
    answers the method, 405 where it does not. Another tenant's must look exactly the same."""
    ghost = {**kwargs, "slug": "no-such-tenant"}
    return {method: _call(client, method, _url(name, ghost)).status_code for method in ALL_METHODS}


@pytest.mark.parametrize("name", sorted(PAGES))
def test_another_tenants_pages_look_missing(client, physics, name):
    world, kwargs = physics
    client.force_login(world.carol)
    missing = _answered(client, name, kwargs)
    assert 404 in missing.values(), f"{name} answers no method for a missing tenant with 404: {missing}"
    url = _url(name, kwargs)
    seen = {method: _call(client, method, url).status_code for method in ALL_METHODS}
    assert seen == missing, f"carol on {url}: {seen}, a missing tenant: {missing}"


@pytest.mark.parametrize("name", sorted(API))
def test_another_tenants_api_looks_missing(physics, name):
    world, kwargs = physics
    client = api_client(world.carol)
    missing = _answered(client, name, kwargs)
    assert missing["get"] == 404, f"{name}: {missing}"
    url = _url(name, kwargs)
    seen = {method: _call(client, method, url).status_code for method in ALL_METHODS}
    assert seen == missing, f"carol on {url}: {seen}, a missing tenant: {missing}"


def _viewer_sweep(client, name: str, kwargs: dict, allowed: set[str], answers: set[str] | None = None) -> None:
    if answers is None:
        answers = {m for m, code in _answered(client, name, kwargs).items() if code == 404}
    url = _url(name, kwargs)
    for method in sorted(answers):
        code = _call(client, method, url).status_code
        if method in allowed:
            assert code in (200, 302), f"bob {method.upper()} {url}: {code}"
        else:
            assert code == 403, f"bob {method.upper()} {url}: {code}"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_a_viewers_page_writes_are_403(client, physics, name):
    world, kwargs = physics
    client.force_login(world.bob)
    _viewer_sweep(client, name, kwargs, PAGES[name])


@pytest.mark.parametrize("name", sorted(API))
def test_a_viewers_api_writes_are_403(physics, name):
    world, kwargs = physics
    # The API resolves the tenant before the method: the methods a route answers are its Allow header.
    allow = api_client(world.alice).options(_url(name, kwargs))["Allow"]
    answers = {m.strip().lower() for m in allow.split(",")} & set(ALL_METHODS)
    assert answers, f"{name} answers nothing"
    _viewer_sweep(api_client(world.bob), name, kwargs, API[name], answers)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_anonymous_people_are_sent_to_sign_in(client, physics, name):
    _world, kwargs = physics
    url = _url(name, kwargs)
    response = client.get(url)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize("name", sorted(API))
def test_anonymous_api_calls_are_refused(physics, name):
    _world, kwargs = physics
    assert api_client().get(_url(name, kwargs)).status_code in (401, 403)


@pytest.mark.parametrize("name", sorted(OPERATOR_URLS | OPERATOR_TENANT_URLS))
def test_operator_urls_refuse_tenant_members(client, physics, name):
    world, kwargs = physics
    url = _url(name, kwargs)
    for person in (world.alice, world.bob):
        if name.startswith("api:"):
            response = api_client(person).get(url)
        else:
            client.force_login(person)
            response = client.get(url)
        assert response.status_code == 403, f"{person} GET {url}: {response.status_code}"


def test_a_tenant_token_sees_only_its_tenant(physics):
    """carol belongs to genomics only; even an operator's token scoped to genomics sees nothing of physics."""
    from tenants.services import api_token_create

    world, kwargs = physics
    token, plaintext = api_token_create(user=world.olga, name="genomics automation")
    token.tenant = world.genomics
    token.save(update_fields=["tenant"])
    client = api_client()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    for name in sorted(API):
        url = _url(name, kwargs)
        assert client.get(url).status_code == 404, url
    listed = client.get("/api/v1/tenants/").json()
    slugs = [t["slug"] for t in (listed["results"] if isinstance(listed, dict) else listed)]
    assert slugs == ["genomics"]


@pytest.mark.parametrize("word", ["operator", "switch", "new", "preview"])
def test_names_the_addresses_use_are_refused(world, word):
    from django.core.exceptions import ValidationError

    from tenants.services import tenant_create

    with pytest.raises(ValidationError, match="addresses use"):
        tenant_create(slug=word, name="X", actor=world.olga)
    with pytest.raises(ValidationError, match="addresses use"):
        cluster_create(tenant=world.physics, name=word, actor=world.alice)
