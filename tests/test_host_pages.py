"""The inventory's operator pages: fleet overview (live rack view), host list with the shared
filters, host detail and its actions. Operators only; query counts are part of the contract."""

from __future__ import annotations

import base64
import re

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from hosts.curation import host_update
from hosts.models import Host, HostStateChange
from tests.inventory import PASSWORD, make_fleet

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}
# Measured: fleet 6 and list 7 queries (session, user, settings, counts/rows, suggestions), the
# same at 10 and at 1,000 hosts. The contract is the ceiling.
FLEET_QUERIES = 8
LIST_QUERIES = 9


def text(response) -> str:
    return response.content.decode()


def rows(response) -> list[str]:
    """Host names in the list's table, in order."""
    return re.findall(r'<th scope="row"><a href="/hosts/([^/]+)/">', text(response))


def settle() -> None:
    """No host in a transitional state: the overview stops polling."""
    Host.objects.filter(provisioning_state__in=("inspecting", "provisioning", "registering", "preparing")).update(
        provisioning_state="available"
    )


# --------------------------------------------------------------------------- who may see them

PAGES = ["/hosts/", "/hosts/list/", "/hosts/h00000/"]


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_people_go_to_login(client, url):
    make_fleet(1)
    response = client.get(url)
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


@pytest.mark.parametrize("url", PAGES)
def test_tenant_members_are_refused(alice_client, url):
    make_fleet(1)
    assert alice_client.get(url).status_code == 403


@pytest.mark.parametrize("url", ["/hosts/h00000/maintenance/", "/hosts/h00000/action/power-on/", "/hosts/h00000/edit/"])
def test_tenant_members_cannot_act(alice_client, url):
    make_fleet(1)
    assert alice_client.post(url, {"maintenance": "on"}).status_code == 403
    assert not Host.objects.get(name="h00000").maintenance


@pytest.mark.parametrize("url", ["/hosts/h00000/maintenance/", "/hosts/h00000/action/power-on/"])
def test_actions_are_post_only(olga_client, url):
    make_fleet(1)
    assert olga_client.get(url).status_code == 405


def test_the_nav_links_to_the_fleet(olga_client):
    assert 'href="/hosts/"' in text(olga_client.get("/"))


# --------------------------------------------------------------------------- fleet overview


def test_fleet_overview_counts_by_state_trait_and_location(olga_client):
    make_fleet(16)
    host_update(Host.objects.get(name="h00001"), maintenance=True, maintenance_reason="PSU")
    page = text(olga_client.get("/hosts/"))
    assert '16</span><span class="stat-label">active hosts' in page
    # by state, each count a link to the list filtered the same way
    available = Host.objects.filter(provisioning_state="available", retired_at__isnull=True).count()
    assert re.search(rf'href="/hosts/list/\?state=available">.*?</a><span class="count">{available}<', page)
    assert 'href="/hosts/list/?state=maintenance"' in page
    # by trait (unnest in SQL)
    gpu = Host.objects.filter(traits__contains=["gpu-a100"]).count()
    assert re.search(rf'href="/hosts/list/\?trait=gpu-a100">.*?</a><span class="count">{gpu}<', page)
    # by location, with the rack view's buckets
    assert 'href="/hosts/list/?site=lab&amp;room=a"' in page
    assert "site lab / room a / row 1" in page
    # the rack view: a cell per host, coloured by state, maintenance marked, linking to the host
    assert page.count('class="cell tone-') == 16
    assert re.search(
        r'class="cell tone-maintenance" href="/hosts/h00001/" title="h00001: maintenance \(maintenance: PSU\)"', page
    )
    assert "Legend" in page and "in maintenance" in page
    # total cost per hour
    total = sum(h.cost_per_hour for h in Host.objects.all())
    assert f"{total:,.2f}" in page


def test_rack_columns_follow_the_deepest_level(olga_client):
    make_fleet(8)
    page = text(olga_client.get("/hosts/"))
    assert 'title="site lab / room a / row 1 / rack a1-1">rack a1-1</a>' in page
    assert 'title="site lab / room a / row 1 / rack a1-2">rack a1-2</a>' in page


def test_unplaced_hosts_are_shown_apart(olga_client):
    make_fleet(3)
    Host.objects.filter(name="h00002").update(location={})
    page = text(olga_client.get("/hosts/"))
    assert "Unplaced" in page and 'href="/hosts/h00002/"' in page


def test_fleet_fragment_keeps_polling_while_a_host_is_transitional(olga_client):
    make_fleet(8)  # h00004 is provisioning, h00005 inspecting
    response = olga_client.get("/hosts/", headers=HX)
    assert response.status_code == 200
    body = text(response)
    assert "<html" not in body and 'id="fleet-live"' in body
    assert 'hx-trigger="every 5s"' in body and "Live" in body
    assert 'hx-swap-oob="innerHTML"' in body  # the screen reader summary
    assert "HX-Request" in response["Vary"]


def test_fleet_fragment_stops_polling_when_the_fleet_is_settled(olga_client):
    make_fleet(8)
    settle()
    response = olga_client.get("/hosts/", headers=HX)
    assert response.status_code == 286
    body = text(response)
    assert "every 5s" not in body and "Paused" in body and "Refresh now" in body


def test_full_fleet_page_says_live_or_paused(olga_client):
    make_fleet(8)
    page = text(olga_client.get("/hosts/"))
    assert "<html" in page and 'hx-trigger="every 5s"' in page and "Live" in page
    settle()
    response = olga_client.get("/hosts/")
    assert response.status_code == 200 and "Paused" in text(response) and "every 5s" not in text(response)


def test_a_deleting_host_keeps_the_overview_live(olga_client):
    make_fleet(3)
    Host.objects.filter(name="h00000").update(deleting=True)
    assert olga_client.get("/hosts/", headers=HX).status_code == 200


def test_fleet_page_with_no_hosts(olga_client):
    response = olga_client.get("/hosts/")
    assert response.status_code == 200 and "No active hosts." in text(response)


# --------------------------------------------------------------------------- host list


def test_list_shows_the_columns(olga_client):
    make_fleet(8, tenants={3: "physics"})
    Host.objects.filter(name="h00001").update(cost_override="12.5")
    host_update(Host.objects.get(name="h00002"), maintenance=True, maintenance_reason="fan")
    Host.objects.filter(name="h00006").update(key_erase_capable=True)
    page = text(olga_client.get("/hosts/list/"))
    assert "<strong>8 hosts</strong>" in page
    assert rows(olga_client.get("/hosts/list/")) == [f"h{i:05d}" for i in range(8)]
    gpu = Host.objects.get(name="h00003")
    assert '<span class="chip">gpu-a100</span>' in page
    assert gpu.accelerators_label in page
    assert 'title="site lab / room a / row 1 / rack a1-1">lab / a / 1 / a1-1</td>' in page
    assert "physics" in page
    assert 'title="Set by an operator">set</span>' in page
    assert page.count('title="Set by an operator">set</span>') == 1
    assert '1 min<br><span class="muted small">(key erase)</span>' in page
    assert '10 min<br><span class="muted small">(metadata)</span>' in page
    assert 'title="In maintenance: fan">M</span>' in page
    assert '<span class="badge tone-available">available</span>' in page
    assert f"{gpu.ram_mib // 1024}</td>" in page


@pytest.mark.parametrize(
    "query, expected",
    [
        ("state=provisioned", ["h00001", "h00003"]),
        ("state=provisioned&state=inspecting", ["h00001", "h00003", "h00005"]),
        ("trait=gpu-a100", ["h00003"]),
        ("trait=fpga", []),  # the FPGA host (h00005) is still inspecting: no hardware, no traits yet
        ("room=a&rack=a1-2", ["h00004", "h00005", "h00006", "h00007"]),
        ("location=rack%3Da1-1", ["h00000", "h00001", "h00002", "h00003"]),
        ("tenant=physics", ["h00001"]),
        ("tenant=none", ["h00000", "h00002", "h00003", "h00004", "h00005", "h00006", "h00007"]),
        ("maintenance=true", ["h00002"]),
        ("q=h0000", [f"h{i:05d}" for i in range(8)]),
        ("q=00006", ["h00006"]),
        ("ordering=-name", [f"h{i:05d}" for i in reversed(range(8))]),
    ],
)
def test_filters_through_the_page(olga_client, query, expected):
    make_fleet(8, tenants={1: "physics"})
    Host.objects.filter(name="h00001").update(provisioning_state="provisioned")
    host_update(Host.objects.get(name="h00002"), maintenance=True)
    response = olga_client.get(f"/hosts/list/?{query}")
    assert response.status_code == 200
    assert rows(response) == expected
    if not expected:
        assert "No host matches these filters." in text(response)


def test_ordering_by_cost_marks_the_column(olga_client):
    make_fleet(8)
    response = olga_client.get("/hosts/list/?ordering=-cost")
    costs = [Host.objects.get(name=n).cost_per_hour for n in rows(response)]
    assert costs == sorted(costs, reverse=True)
    page = text(response)
    assert re.search(r'aria-sort="descending" class="num"><a href="\?ordering=cost"', page)
    assert "▼" in page
    # the other headers offer ascending order and keep the filters
    page = text(olga_client.get("/hosts/list/?trait=nvme&ordering=name"))
    assert 'aria-sort="ascending"><a href="?trait=nvme&amp;ordering=-name"' in page
    assert 'href="?trait=nvme&amp;ordering=cores"' in page


def test_a_bad_location_is_shown_next_to_the_field_not_a_500(olga_client):
    make_fleet(3)
    response = olga_client.get("/hosts/list/?location=floor%3D3")
    assert response.status_code == 200
    page = text(response)
    assert re.search(
        r'id="err-location" class="field-error">unknown level &#x27;floor&#x27;; the levels are site &gt; room', page
    )
    assert "left out until corrected" in page
    assert len(rows(response)) == 3


def test_a_bad_state_is_shown_not_a_500(olga_client):
    make_fleet(2)
    response = olga_client.get("/hosts/list/?state=melting&ordering=sideways")
    assert response.status_code == 200
    page = text(response)
    assert re.search(r'id="err-state" class="field-error">Select a valid choice', page)
    assert re.search(r'id="err-ordering" class="field-error">Select a valid choice', page)


def test_list_pages_keep_the_filters(olga_client):
    make_fleet(130)
    response = olga_client.get("/hosts/list/?room=a")
    page = text(response)
    assert "<strong>96 hosts</strong>" not in page
    count = Host.objects.filter(location__room="a").count()
    assert f"<strong>{count} hosts</strong>" in page
    assert len(rows(response)) == 50
    assert 'href="?room=a&amp;page=2"' in page and "page 1 of 2" in page
    second = olga_client.get("/hosts/list/?room=a&page=2")
    assert len(rows(second)) == count - 50
    assert set(rows(second)).isdisjoint(rows(response))
    # an impossible page number shows the last page rather than an error
    assert olga_client.get("/hosts/list/?room=a&page=99").status_code == 200


def test_list_fragment_for_htmx(olga_client):
    make_fleet(8)
    response = olga_client.get("/hosts/list/?trait=gpu-a100&ordering=-cost", headers=HX)
    body = text(response)
    assert response.status_code == 200
    assert "<html" not in body and "<form" not in body and "<table" in body
    assert 'id="host-count" hx-swap-oob="innerHTML"' in body and "<strong>1 host</strong>" in body
    assert 'name="ordering" id="filter-ordering" value="-cost" hx-swap-oob="true"' in body
    assert 'id="err-location" class="field-error" hx-swap-oob="true"' in body  # cleared
    assert "HX-Request" in response["Vary"]


def test_list_form_is_wired_for_htmx_and_plain_get(olga_client):
    page = text(olga_client.get("/hosts/list/"))
    assert 'method="get" action="/hosts/list/"' in page
    assert 'hx-trigger="submit, change, keyup changed delay:400ms from:input[name=q]"' in page
    assert 'hx-target="#host-results"' in page and 'hx-push-url="true"' in page
    for level in ("site", "room", "row", "rack"):
        assert f'name="{level}"' in page
    assert 'aria-live="polite"' in page


def test_retired_hosts_are_listed_on_request(olga_client):
    make_fleet(3)
    Host.objects.filter(name="h00001").update(retired_at="2026-10-01T00:00:00Z")
    assert rows(olga_client.get("/hosts/list/")) == ["h00000", "h00002"]
    assert rows(olga_client.get("/hosts/list/?lifecycle=retired")) == ["h00001"]
    assert rows(olga_client.get("/hosts/list/?state=retired")) == ["h00001"]


# --------------------------------------------------------------------------- query counts


@pytest.mark.parametrize("url", ["/hosts/list/", "/hosts/list/?room=a&ordering=-cost&page=2", "/hosts/"])
def test_pages_take_a_constant_number_of_queries(olga_client, django_assert_max_num_queries, url):
    ceiling = FLEET_QUERIES if url == "/hosts/" else LIST_QUERIES
    make_fleet(10)
    with CaptureQueriesContext(connection) as small:
        assert olga_client.get(url).status_code == 200
    make_fleet(990, prefix="k")
    cache.clear()  # measure both cold: the list caches its suggestion lists for a minute
    with django_assert_max_num_queries(ceiling), CaptureQueriesContext(connection) as large:
        response = olga_client.get(url)
        assert response.status_code == 200
    assert len(large) == len(small), [q["sql"][:120] for q in large.captured_queries]
    assert len(large) <= 15
    # no big JSON column is loaded for the rows
    for query in large.captured_queries:
        assert '"hosts_host"."hardware"' not in query["sql"]


def test_fleet_fragment_queries(olga_client, django_assert_max_num_queries):
    make_fleet(200)
    with django_assert_max_num_queries(FLEET_QUERIES):
        olga_client.get("/hosts/", headers=HX)


# --------------------------------------------------------------------------- host detail


def test_detail_shows_hardware_cost_handoff_and_use(olga_client):
    make_fleet(8, tenants={3: "physics"})
    host = Host.objects.get(name="h00003")
    response = olga_client.get("/hosts/h00003/")
    assert response.status_code == 200
    page = text(response)
    assert host.system_vendor in page and host.system_serial in page and host.cpu_model in page
    assert "<summary>" in page and "CPU flags</summary>" in page
    assert host.disks[0]["name"] in page and host.nics[0]["mac"] in page
    assert host.accelerators_label in page
    assert host.firmware["bios_version"] in page
    from hosts.classify import cost_lines

    for line, amount in cost_lines(host).lines:
        assert f"<td>{line}</td>" in page
        assert f"{amount:,.2f}" in page
    assert "per hour" in page
    # hand-off
    assert "Key erase capable</dt><dd>" in page and "Metadata cleaning</dt><dd>10 min" in page
    assert "Full cleaning</dt><dd>" in page
    # current use
    assert "Metal3Machine/h00003-m" in page and "physics-c1" in page
    assert 'href="/hosts/list/?tenant=physics"' in page
    # BareMetalHost, never credentials
    assert host.bmc_address in page and host.boot_mac in page
    assert "bmc-secret" not in page
    # location path links
    assert 'href="/hosts/list/?site=lab&amp;room=a"' in page
    # traits link to the list
    assert 'href="/hosts/list/?trait=gpu-a100"' in page


def test_free_host_and_manual_traits(olga_client):
    make_fleet(1)
    host_update(Host.objects.get(name="h00000"), manual_traits=["spare"])
    page = text(olga_client.get("/hosts/h00000/"))
    assert "<strong>Free</strong>" in page
    assert re.search(
        r'class="chip chip-manual" href="/hosts/list/\?trait=spare">spare</a>\s*<small class="muted">manual', page
    )


def test_overridden_cost_says_who_set_it(olga_client):
    make_fleet(1)
    host_update(Host.objects.get(name="h00000"), cost_override="7.25")
    page = text(olga_client.get("/hosts/h00000/"))
    assert "7.25 <small>units per hour</small>" in page
    assert "Set by an operator" in page


def test_unknown_host_is_404(olga_client):
    assert olga_client.get("/hosts/no-such-host/").status_code == 404


def test_retired_host_is_shown_with_a_banner(olga_client):
    make_fleet(1)
    Host.objects.filter(name="h00000").update(retired_at="2026-10-01T00:00:00Z")
    page = text(olga_client.get("/hosts/h00000/"))
    assert "<strong>Retired</strong>" in page
    assert 'disabled aria-describedby="why-power-on"' in page
    assert "Put in maintenance" not in page


def test_timeline_shows_changes_newest_first_with_actor(olga_client, olga):
    make_fleet(1)
    host = Host.objects.get(name="h00000")
    host = host_update(host, actor=olga, maintenance=True, maintenance_reason="replacing PSU")
    host_update(host, actor=olga, maintenance=False)
    page = text(olga_client.get("/hosts/h00000/"))
    timeline = page[page.index('id="timeline"') :]
    first = timeline.index("true → <strong>false</strong>")
    second = timeline.index("false → <strong>true</strong>")
    assert first < second  # newest first
    assert "olga@teapot.example" in timeline and "replacing PSU" in timeline


def test_timeline_is_paginated_at_100(olga_client):
    make_fleet(1)
    host = Host.objects.get(name="h00000")
    HostStateChange.objects.bulk_create(
        HostStateChange(host=host, field="online", old=str(i % 2 == 0).lower(), new=str(i % 2 == 1).lower())
        for i in range(130)
    )
    page = text(olga_client.get("/hosts/h00000/"))
    assert page.count("<time datetime=") <= 101  # 100 changes + last synced
    assert "?changes=2#timeline" in page and "Older changes" in page
    older = text(olga_client.get("/hosts/h00000/?changes=2"))
    assert "Newer changes" in older


# --------------------------------------------------------------------------- actions


def test_maintenance_on_and_off_is_recorded_with_the_actor(olga_client):
    make_fleet(1)
    response = olga_client.post("/hosts/h00000/maintenance/", {"maintenance": "on", "reason": "replacing PSU"})
    assert response.status_code == 302 and response.url == "/hosts/h00000/"
    page = text(olga_client.get(response.url))
    assert "h00000 is in maintenance." in page  # the message, shown after the redirect
    assert "<strong>In maintenance</strong>: replacing PSU" in page
    host = Host.objects.get(name="h00000")
    assert host.maintenance and host.maintenance_reason == "replacing PSU"
    change = HostStateChange.objects.get(host=host, field="maintenance")
    assert (change.old, change.new, change.actor, change.reason) == (
        "false",
        "true",
        "olga@teapot.example",
        "replacing PSU",
    )
    response = olga_client.post("/hosts/h00000/maintenance/", {"maintenance": "off"}, headers=HX)
    assert response.status_code == 200
    body = text(response)
    assert "<html" not in body and 'id="host-detail"' in body
    assert "h00000 is out of maintenance." in body and "In maintenance</strong>" not in body
    assert response["HX-Retarget"] == "#host-detail"
    assert list(HostStateChange.objects.filter(host=host, field="maintenance").values_list("new", "actor")) == [
        ("true", "olga@teapot.example"),
        ("false", "olga@teapot.example"),
    ]


def test_a_too_long_maintenance_reason_is_refused_and_kept(olga_client):
    make_fleet(1)
    reason = "x" * 300
    response = olga_client.post("/hosts/h00000/maintenance/", {"maintenance": "on", "reason": reason}, headers=HX)
    assert response.status_code == 200
    body = text(response)
    assert "at most 255 characters" in body and f'value="{reason}"' in body
    assert not Host.objects.get(name="h00000").maintenance


def test_power_off_queues_the_action(olga_client, django_capture_on_commit_callbacks):
    make_fleet(4)  # h00003 is provisioned and online, without consumer
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = olga_client.post("/hosts/h00003/action/power-off/", headers=HX)
    assert response.status_code == 200
    assert "Power off of h00003 requested" in text(response)
    assert len(callbacks) == 1


def test_a_refused_action_says_why(olga_client, django_capture_on_commit_callbacks):
    make_fleet(1)  # available, powered off
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = olga_client.post("/hosts/h00000/action/power-off/", headers=HX)
    assert response.status_code == 200
    assert "Power off refused: the host is already powered off." in text(response)
    assert callbacks == []
    response = olga_client.post("/hosts/h00000/action/power-off/")
    assert response.status_code == 400 and "the host is already powered off" in text(response)


def test_impossible_actions_are_disabled_with_the_reason(olga_client):
    make_fleet(4, tenants={3: "physics"})
    page = text(olga_client.get("/hosts/h00003/"))
    assert re.search(
        r'title="The host is in use by Metal3Machine/h00003-m: release it first"><button[^>]*disabled', page
    )
    page = text(olga_client.get("/hosts/h00000/"))
    assert re.search(r'title="The host is already powered off"><button[^>]*disabled', page)
    assert re.search(r'hx-confirm="Retire h00000\?', page)


def test_unknown_action_is_404(olga_client):
    make_fleet(1)
    assert olga_client.post("/hosts/h00000/action/explode/").status_code == 404


def test_retire_asks_the_service(olga_client, django_capture_on_commit_callbacks):
    make_fleet(1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = olga_client.post("/hosts/h00000/action/retire/")
    assert response.status_code == 302
    assert len(callbacks) == 1
    assert Host.objects.get(name="h00000").maintenance  # retiring puts it in maintenance first


def test_edit_saves_operator_fields(olga_client, django_capture_on_commit_callbacks):
    make_fleet(1)
    data = {
        "notes": "replaced PSU",
        "manual_traits": "spare, Fast-Net",
        "cost_override": "3.5",
        "key_erase_capable": "on",
        "location_site": "lab",
        "location_room": "b",
        "location_row": "",
        "location_rack": "",
    }
    with django_capture_on_commit_callbacks(execute=False):
        response = olga_client.post("/hosts/h00000/edit/", data, headers=HX)
    assert response.status_code == 200 and "h00000 saved." in text(response)
    host = Host.objects.get(name="h00000")
    assert host.notes == "replaced PSU" and host.manual_traits == ["fast-net", "spare"]
    assert str(host.cost_override) == "3.5000" and host.key_erase_capable
    assert host.location == {"site": "lab", "room": "b"}
    assert "fast-net" in host.traits
    assert HostStateChange.objects.filter(host=host, field="traits", actor="olga@teapot.example").exists()


def test_edit_errors_are_shown_per_field_and_nothing_is_lost(olga_client):
    make_fleet(1)
    data = {
        "notes": "keep me",
        "manual_traits": "ok, Bad_Trait!",
        "cost_override": "-3",
        "location_site": "",
        "location_room": "",
        "location_row": "",
        "location_rack": "r9",
    }
    response = olga_client.post("/hosts/h00000/edit/", data, headers=HX)
    assert response.status_code == 200
    body = text(response)
    assert body.lstrip().startswith("{# Operator") is False and 'id="host-edit"' in body
    assert "a cost per hour ≥ 0" in body and "bad_trait!" in body
    assert "rack &#x27;r9&#x27; is given but site is not" in body
    assert "keep me" in body and 'value="ok, Bad_Trait!"' in body and 'value="-3"' in body and 'value="r9"' in body
    host = Host.objects.get(name="h00000")
    assert host.notes == "" and host.cost_override is None
    # without htmx: the whole page, 400, same errors
    response = olga_client.post("/hosts/h00000/edit/", data)
    assert response.status_code == 400 and "a cost per hour ≥ 0" in text(response)


def test_detail_fragment_for_htmx(olga_client):
    make_fleet(1)
    body = text(olga_client.get("/hosts/h00000/", headers=HX))
    assert "<html" not in body and "{#" not in body and 'id="host-detail"' in body


# --------------------------------------------------------------------------- secrets


def test_no_page_shows_a_bmc_password(olga_client, olga, settings):
    from hosts.enrolment import host_enrol, host_enrolment_apply
    from teapot_portal.gateway.lab.gateway import LabGateway

    settings.TEAPOT_PROVISIONER = "lab"
    lab = LabGateway(settings.TEAPOT_NAMESPACE)
    make_fleet(3)
    enrolment = host_enrol(
        name="secret-node-1",
        bmc_address="redfish://10.1.0.1/redfish/v1/Systems/1",
        bmc_username="admin",
        bmc_password=PASSWORD,
        boot_mac="52:54:00:10:00:99",
        location={"site": "lab", "room": "a", "row": "1", "rack": "a1-9"},
        acting_user=olga,
    )
    assert host_enrolment_apply(enrolment_id=enrolment.pk, gateway=lab) == "applied"
    assert Host.objects.filter(name="secret-node-1").exists()
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    urls = [
        "/hosts/",
        "/hosts/list/",
        "/hosts/list/?q=secret",
        "/hosts/secret-node-1/",
        "/hosts/h00000/",
    ]
    for url in urls:
        for headers in ({}, HX):
            body = text(olga_client.get(url, headers=headers))
            assert PASSWORD not in body, url
            assert encoded not in body, url
    assert "secret-node-1" in text(olga_client.get("/hosts/list/?q=secret"))
    for response in (
        olga_client.post("/hosts/secret-node-1/maintenance/", {"maintenance": "on", "reason": "x"}, headers=HX),
        olga_client.post("/hosts/secret-node-1/edit/", {"notes": "n", "cost_override": "-1"}, headers=HX),
    ):
        assert PASSWORD not in text(response) and encoded not in text(response)


def test_detail_url_does_not_shadow_other_hosts_pages():
    assert reverse("hosts:detail", args=["r1-node-07"]) == "/hosts/r1-node-07/"
    assert reverse("hosts:list") == "/hosts/list/"
