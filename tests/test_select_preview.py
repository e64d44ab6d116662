""" "What would I get?": the selection preview in the API (POST /api/v1/hosts/select-preview/) and
on the page (/select/, live with htmx, and without JavaScript). Nothing is ever claimed.

The fleet is tests.test_selection's: eight a100 hosts (one not ready, one in maintenance) in
racks a1-a3 of room a and b1 of room b, two general hosts and a highmem one.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts.models import Flavour, HostClaim
from tests.conftest import api_client
from tests.inventory import make_fleet
from tests.test_host_api import _resolve
from tests.test_selection import gpu_fleet

pytestmark = pytest.mark.django_db

URL = "/api/v1/hosts/select-preview/"
A100 = "gpu:nvidia-a100>=8"
NOT_READY = "not ready yet (registering, inspecting or being provisioned)"


@pytest.fixture
def fleet(db):
    gpu_fleet()


def _keys(node) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


def _preview(client, **body):
    return client.post(URL, body, format="json")


# --------------------------------------------------------------------------- the API: answers


def test_the_answer_is_the_cheapest_feasible_set(alice_api, fleet):
    response = _preview(alice_api, requirement_text="cores>=64", count=2)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["feasible"] is True and body["explanation"] is None
    assert sorted(h["name"] for h in body["hosts"]) == ["n1", "n2"]  # general hosts are cheaper than a100s
    assert Decimal(body["cost_per_hour"]) == sum(Decimal(h["cost_per_hour"]) for h in body["hosts"])
    assert body["description"] == "≥ 64 cores" and body["requirement"] == {"min_cores": 64}
    assert {h["location"]["room"] for h in body["hosts"]} == {"a", "b"}
    assert HostClaim.objects.count() == 0  # a preview claims nothing


def test_matching_and_free_counts_with_the_reasons_for_the_rest(alice_api, fleet):
    body = _preview(alice_api, requirement={"accelerators": [{"type": "nvidia-a100", "count": 8}]}, count=3).json()
    assert body["feasible"] and len(body["hosts"]) == 3
    assert body["matching"] == 8 and body["free"] == 6
    assert body["unavailable"] == {"in maintenance": 1, NOT_READY: 1}
    assert body["requirement_text"] == A100


def test_a_flavour_stands_for_its_requirement(alice_api, fleet):
    Flavour.objects.create(name="a100x8", requirement={"accelerators": [{"type": "nvidia-a100", "count": 8}]})
    by_flavour = _preview(alice_api, flavour="a100x8", count=3).json()
    by_text = _preview(alice_api, requirement_text=A100, count=3).json()
    assert by_flavour == by_text


def test_nothing_matches_names_the_clause_no_host_meets(alice_api, fleet):
    body = _preview(alice_api, requirement_text="ram>=4Ti,cores>=64", count=1).json()
    assert body["feasible"] is False and body["hosts"] == []
    assert body["explanation"]["code"] == "none_match"
    assert body["explanation"]["message"] == "no host has ≥ 4 TiB RAM"
    assert body["matching"] == 0


def test_a_hard_spread_that_cannot_hold_is_explained(alice_api, fleet):
    spread = {"mode": "spread", "level": "rack", "hard": True}
    assert _preview(alice_api, requirement_text=A100, count=4, policy=spread).json()["feasible"]
    body = _preview(alice_api, requirement_text=A100, count=5, policy=spread).json()
    assert body["explanation"] == {
        "code": "spread",
        "message": "only 4 racks have a free nvidia-a100 host; spread across racks needs 5",
        "data": body["explanation"]["data"],
    }
    assert body["policy_description"] == "spread across racks (must)"


def test_not_enough_free_says_how_many_are_busy(alice_api, fleet):
    body = _preview(alice_api, requirement_text=A100, count=8).json()
    explanation = body["explanation"]
    assert explanation["code"] == "not_enough_free"
    assert "8 nvidia-a100 hosts exist" in explanation["message"]
    assert explanation["data"]["free"] == 6 and explanation["data"]["needed"] == 8


def test_tenant_members_never_see_ids_bmcs_or_allocations(alice_api, fleet):
    body = _preview(alice_api, requirement_text="", count=5).json()
    assert body["feasible"]
    keys = _keys(body)
    assert not keys & {"id", "bmc_address", "boot_mac", "consumer", "tenant", "cluster", "labels"}
    assert set(body["hosts"][0]) == {"name", "cost_per_hour", "handoff_seconds", "location"}


def test_operators_get_the_same_answer(olga, alice_api, fleet):
    body = {"requirement_text": A100, "count": 3}
    assert _preview(api_client(olga), **body).json() == _preview(alice_api, **body).json()


# --------------------------------------------------------------------------- the API: refusals


def test_a_bad_compact_requirement_says_where(alice_api, fleet):
    response = _preview(alice_api, requirement_text="nvme,cores>64", count=1)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["details"] == {
        "field": "requirement_text",
        "key": "min_cores",
        "message": "only minimums: use cores>=64",
        "position": 5,
        "pointer": "nvme,cores>64\n     ^",
    }


def test_a_bad_json_requirement_names_the_key(alice_api, fleet):
    response = _preview(alice_api, requirement={"min_cores": "many"}, count=1)
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert details["field"] == "requirement" and details["key"] == "min_cores" and details["position"] is None
    assert "whole number" in details["message"]


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"mode": "spread", "level": "cabinet"}, "unknown level 'cabinet'; the levels are site > room > row > rack"),
        ({"together_level": "shelf"}, "unknown level 'shelf'"),
        ({"mode": "sprinkle", "level": "rack"}, "mode 'sprinkle'"),
        ({"level": "rack"}, "say whether to spread or pack across each rack"),
        ({"colour": "red"}, "unknown field(s) colour"),
        ("spread", "a placement policy is an object"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_problem(alice_api, fleet, policy, words):
    response = _preview(alice_api, requirement_text="", count=1, policy=policy)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["details"]["field"] == "policy"
    assert words in error["message"]


@pytest.mark.parametrize("count", [0, -1, 1001, "two", None])
def test_count_must_be_between_one_and_a_thousand(alice_api, fleet, count):
    response = _preview(alice_api, requirement_text="", count=count)
    assert response.status_code == 400
    assert "count" in response.json()["error"]["details"]


def test_count_is_required(alice_api, fleet):
    response = _preview(alice_api, requirement_text="")
    assert response.json()["error"]["details"]["count"] == ["This field is required."]


def test_an_unknown_flavour_is_refused_naming_the_flavours(alice_api, fleet):
    Flavour.objects.create(name="small", requirement={"min_cores": 8})
    response = _preview(alice_api, flavour="huge", count=1)
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert details["field"] == "flavour"
    assert details["message"] == "no flavour named 'huge'; the flavours are small"


@pytest.mark.parametrize(
    "body",
    [
        {"count": 1},
        {"count": 1, "requirement_text": "", "flavour": "small"},
        {"count": 1, "requirement": {}, "requirement_text": ""},
    ],
)
def test_exactly_one_way_of_saying_the_requirement(alice_api, fleet, body):
    response = alice_api.post(URL, body, format="json")
    assert response.status_code == 400
    assert "exactly one of" in str(response.json()["error"]["details"])


def test_unknown_fields_are_refused_by_name(alice_api, fleet):
    response = _preview(alice_api, requirement_text="", count=1, cuont=2)
    assert response.status_code == 400
    assert "cuont" in response.json()["error"]["details"]


def test_anonymous_is_refused(client, fleet):
    response = client.post(URL, {"requirement_text": "", "count": 1}, content_type="application/json")
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] == "not_authenticated"


def test_only_post(alice_api, fleet):
    assert alice_api.get(URL).status_code == 405


# --------------------------------------------------------------------------- the API: schema


def test_preview_answers_match_the_schema(alice_api, fleet):
    import jsonschema

    schema = yaml.safe_load(alice_api.get("/api/v1/schema/").content)
    operation = schema["paths"][URL]["post"]
    assert operation["operationId"] == "hosts_select_preview"
    assert {"200", "400", "401"} <= set(operation["responses"]) or {"200", "400"} <= set(operation["responses"])
    components = schema["components"]["schemas"]
    selection = _resolve(components["Selection"], components)
    request = _resolve(components["SelectPreviewRequest"], components)
    jsonschema.validate({"requirement_text": "cores>=64", "count": 2}, request)
    jsonschema.validate(
        {"requirement": {"min_cores": 64, "disk_type": None}, "count": 2, "policy": {"mode": "spread"}}, request
    )
    for body in (
        {"requirement_text": "cores>=64", "count": 2},
        {"requirement_text": A100, "count": 5, "policy": {"mode": "spread", "level": "rack", "hard": True}},
        {"requirement_text": "ram>=4Ti", "count": 1},
    ):
        jsonschema.validate(_preview(alice_api, **body).json(), selection)
    error = _resolve(components["Error"], components)
    jsonschema.validate(_preview(alice_api, requirement_text="cores>64", count=1).json(), error)


# --------------------------------------------------------------------------- the page


PAGE = "/select/"
HTMX = {"HX-Request": "true"}


def _form(**values) -> dict:
    data = {"flavour": "", "flavour_applied": "", "requirement": "", "count": "1", "mode": "", "level": ""}
    data.update({"hard": "prefer", "max_per_bucket": "", "together_level": ""})
    data.update(values)
    return data


def test_the_page_is_for_every_signed_in_user_and_in_the_navigation(alice_client, fleet):
    response = alice_client.get(PAGE)
    assert response.status_code == 200
    page = response.content.decode()
    assert '<a href="/select/" aria-current="page">What would I get?</a>' in page
    assert 'hx-post="/select/preview/"' in page
    assert 'hx-trigger="input changed delay:400ms from:form, change from:form"' in page
    assert 'id="select-preview"' in page
    for term in ("cores&gt;=64", "ram&gt;=512Gi", "gpu:nvidia-a100&gt;=4", "disk:nvme&gt;=1.5T", "!fpga"):
        assert term in page
    for level in ("site", "room", "row", "rack"):
        assert f'<option value="{level}">{level}</option>' in page
    # The defaults already answer: any one host.
    assert "1 host of any kind" in page and 'id="select-feasible"' in page


def test_the_nav_item_is_on_every_page(alice_client, fleet):
    assert "What would I get?" in alice_client.get("/").content.decode()


def test_anonymous_goes_to_login(client, fleet):
    for method in ("get", "post"):
        response = getattr(client, method)(PAGE)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    response = client.post("/select/preview/", _form())
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_wrong_method_is_405(alice_client, fleet):
    assert alice_client.put(PAGE).status_code == 405
    assert alice_client.get("/select/preview/").status_code == 405


def test_htmx_gets_only_the_fragment_as_the_person_types(alice_client, fleet):
    response = alice_client.post(PAGE, _form(requirement="gpu:nvidia-a100>=8", count="3"), headers=HTMX)
    assert response.status_code == 200
    fragment = response.content.decode()
    assert "<html" not in fragment and fragment.lstrip().startswith("{#") is False
    assert 'id="select-preview"' in fragment
    assert "8× nvidia-a100" in fragment
    assert re.search(r'id="count-matching">8<', fragment) and re.search(r'id="count-free">6<', fragment)
    assert 'id="select-feasible"' in fragment and fragment.count("<tr><td><code>g") == 3
    assert "1 in maintenance" in fragment  # the availability chart's legend
    assert "HX-Request" in response["Vary"]
    same = alice_client.post("/select/preview/", _form(requirement="gpu:nvidia-a100>=8", count="3"))
    assert same.content.decode() == fragment


def test_the_explanation_appears_when_nothing_fits(alice_client, fleet):
    fragment = alice_client.post(
        "/select/preview/", _form(requirement="gpu:nvidia-a100>=8", count="5", mode="spread", level="rack", hard="must")
    ).content.decode()
    assert 'id="select-explanation"' in fragment
    assert "only 4 racks have a free nvidia-a100 host; spread across racks needs 5" in fragment
    assert 'id="select-feasible"' not in fragment


def test_a_parse_error_shows_the_caret_under_the_text(alice_client, fleet):
    fragment = alice_client.post("/select/preview/", _form(requirement="cores>=64,ram>=12G")).content.decode()
    assert "Not a valid requirement" in fragment and "(at character 11)" in fragment
    assert "did you mean &#x27;ram&gt;=12Gi&#x27;?" in fragment
    assert '<pre class="requirement-pointer">cores&gt;=64,ram&gt;=12G\n          ^</pre>' in fragment


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"count": "0"}, "How many hosts: Ensure this value is greater than or equal to 1."),
        ({"count": ""}, "How many hosts: This field is required."),
        ({"mode": "spread"}, "Placement: say at which level to spread, e.g. rack"),
        ({"max_per_bucket": "2"}, "Placement: a maximum per bucket needs a level"),
        ({"mode": "spread", "level": "room", "together_level": "rack"}, "must be finer than rack"),
        ({"mode": "pack", "level": "cabinet"}, "across each: Select a valid choice."),
    ],
)
def test_bad_count_or_placement_is_explained_in_the_preview(alice_client, fleet, values, words):
    fragment = alice_client.post("/select/preview/", _form(**values)).content.decode()
    assert 'id="select-errors"' in fragment
    assert words in fragment.replace("&#x27;", "'")


def test_without_javascript_a_post_renders_the_page_with_the_result(alice_client, fleet):
    response = alice_client.post(PAGE, _form(requirement="cores>=64", count="2"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "<html" in page and "What would I get?" in page
    assert ">cores&gt;=64</textarea>" in page  # the input is kept
    assert 'id="select-feasible"' in page and "<code>n1</code>" in page and "<code>n2</code>" in page


def test_a_link_can_prefill_the_form(alice_client, fleet):
    page = alice_client.get(PAGE, {"requirement": A100, "count": "3"}).content.decode()
    assert "8× nvidia-a100" in page and 'value="3"' in page


def test_a_newly_chosen_flavour_fills_the_requirement_once(alice_client, fleet):
    Flavour.objects.create(
        name="a100x8", description="eight A100s", requirement={"accelerators": [{"type": "nvidia-a100", "count": 8}]}
    )
    page = alice_client.get(PAGE).content.decode()
    assert '<option value="a100x8">a100x8 — eight A100s</option>' in page
    chosen = alice_client.post("/select/preview/", _form(flavour="a100x8", count="2"), headers=HTMX).content.decode()
    assert "8× nvidia-a100" in chosen
    # The requirement field comes back out of band, filled from the flavour.
    assert 'id="requirement-input" hx-swap-oob="true"' in chosen
    assert f">{A100.replace('>', '&gt;')}</textarea>" in chosen
    assert 'name="flavour_applied" value="a100x8"' in chosen
    # Edited afterwards, the text wins: the flavour was applied already.
    edited = alice_client.post(
        "/select/preview/",
        _form(flavour="a100x8", flavour_applied="a100x8", requirement="gpu:nvidia-a100>=8,cores>=64"),
    ).content.decode()
    assert "≥ 64 cores, 8× nvidia-a100" in edited and "hx-swap-oob" not in edited
    # Without JavaScript the same.
    page = alice_client.post(PAGE, _form(flavour="a100x8", count="2")).content.decode()
    assert f">{A100.replace('>', '&gt;')}</textarea>" in page and 'name="flavour_applied" value="a100x8"' in page


def test_a_flavour_that_is_gone_is_said_so(alice_client, fleet):
    fragment = alice_client.post("/select/preview/", _form(flavour="gone")).content.decode()
    assert "Flavour: no flavour named &#x27;gone&#x27;" in fragment


def test_many_hosts_are_summed_by_location_in_the_chart(alice_client, db):
    make_fleet(120)
    fragment = alice_client.post("/select/preview/", _form(count="40")).content.decode()
    assert "by location (hosts summed)" in fragment
    assert "… and 20 more hosts" in fragment


def _preview_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            "/select/preview/",
            _form(requirement="cores>=16", count="3", mode="spread", level="rack", hard="must"),
            headers=HTMX,
        )
    assert response.status_code == 200 and 'id="select-feasible"' in response.content.decode()
    return len(queries)


def test_the_preview_needs_few_queries_whatever_the_fleet_size(alice_client, db):
    make_fleet(10, prefix="a")
    small = _preview_queries(alice_client)
    make_fleet(490, prefix="b")
    large = _preview_queries(alice_client)
    # Measured: 8 — session, user, fleet settings, and the selection's five GROUP BY queries.
    assert small == large <= 20, (small, large)
