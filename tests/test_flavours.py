"""Flavours: named requirements operators offer (Nova-style) — in the API (read by everyone,
written by operators, the requirement as JSON or compact text) and in the admin."""

from __future__ import annotations

import pytest
import yaml

from hosts.models import Flavour
from tests.test_host_api import _resolve

pytestmark = pytest.mark.django_db

URL = "/api/v1/flavours/"
A100_JSON = {"min_cores": 64, "accelerators": [{"type": "nvidia-a100", "count": 4}]}
A100_TEXT = "cores>=64,gpu:nvidia-a100>=4"


@pytest.fixture
def flavour(db):
    return Flavour.objects.create(name="gpu-large", description="Four A100s", requirement=A100_JSON)


# --------------------------------------------------------------------------- reads


def test_everyone_signed_in_reads_flavours_in_every_form(alice_api, flavour):
    body = alice_api.get(URL).json()
    assert body["count"] == 1
    assert body["results"][0] | {"created_at": None, "updated_at": None} == {
        "name": "gpu-large",
        "description": "Four A100s",
        "requirement": A100_JSON,
        "requirement_text": A100_TEXT,
        "requirement_description": "≥ 64 cores, 4× nvidia-a100",
        "created_at": None,
        "updated_at": None,
    }
    assert alice_api.get(f"{URL}gpu-large/").json()["requirement_text"] == A100_TEXT


def test_anonymous_cannot_read(client, flavour):
    assert client.get(URL).status_code in (401, 403)


def test_a_missing_flavour_is_404(alice_api, db):
    response = alice_api.get(f"{URL}nope/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


# --------------------------------------------------------------------------- writes: operators only


def test_olga_creates_a_flavour_from_compact_text(olga_api):
    response = olga_api.post(URL, {"name": "gpu-large", "requirement_text": A100_TEXT}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["requirement"] == A100_JSON
    assert Flavour.objects.get().requirement == A100_JSON


def test_olga_creates_a_flavour_from_json(olga_api):
    body = {"name": "big-ram", "description": "RAM", "requirement": {"min_ram_gib": 2048}}
    response = olga_api.post(URL, body, format="json")
    assert response.status_code == 201
    assert response.json()["requirement_text"] == "ram>=2Ti"
    assert response.json()["requirement_description"] == "≥ 2 TiB RAM"


def test_empty_text_is_any_host(olga_api):
    response = olga_api.post(URL, {"name": "anything", "requirement_text": ""}, format="json")
    assert response.status_code == 201 and response.json()["requirement"] == {}


def test_olga_replaces_changes_and_deletes(olga_api, flavour):
    replaced = olga_api.put(
        f"{URL}gpu-large/", {"name": "gpu-large", "requirement_text": "gpu:nvidia-a100>=8"}, format="json"
    )
    assert replaced.status_code == 200, replaced.content
    assert replaced.json()["requirement"] == {"accelerators": [{"type": "nvidia-a100", "count": 8}]}
    assert replaced.json()["description"] == ""  # PUT replaces
    changed = olga_api.patch(f"{URL}gpu-large/", {"description": "Eight A100s"}, format="json")
    assert changed.json()["description"] == "Eight A100s"
    assert changed.json()["requirement_text"] == "gpu:nvidia-a100>=8"  # kept
    renamed = olga_api.patch(f"{URL}gpu-large/", {"name": "gpu-xl", "requirement": {"min_cores": 128}}, format="json")
    assert renamed.json()["name"] == "gpu-xl" and renamed.json()["requirement_text"] == "cores>=128"
    assert olga_api.delete(f"{URL}gpu-xl/").status_code == 204
    assert not Flavour.objects.exists()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", URL, {"name": "x", "requirement_text": "cores>=1"}),
        ("put", f"{URL}gpu-large/", {"name": "gpu-large", "requirement_text": "cores>=1"}),
        ("patch", f"{URL}gpu-large/", {"description": "mine"}),
        ("delete", f"{URL}gpu-large/", None),
    ],
)
def test_tenant_members_cannot_write(alice_api, flavour, method, path, body):
    response = getattr(alice_api, method)(path, body, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Only operators can do this."
    assert Flavour.objects.get().description == "Four A100s"


# --------------------------------------------------------------------------- refusals


def test_bad_compact_text_is_refused_with_its_position(olga_api):
    response = olga_api.post(URL, {"name": "x", "requirement_text": "cores>=64,ram>=12G"}, format="json")
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert details["field"] == "requirement_text" and details["position"] == 10 and details["key"] == "min_ram_gib"
    assert "did you mean 'ram>=12Gi'?" in details["message"]
    assert details["pointer"].endswith("\n          ^")


def test_bad_json_is_refused_naming_the_key(olga_api):
    response = olga_api.post(URL, {"name": "x", "requirement": {"min_cors": 64}}, format="json")
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert details["field"] == "requirement" and "did you mean 'min_cores'?" in details["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x"},
        {"name": "x", "requirement": {}, "requirement_text": ""},
    ],
)
def test_exactly_one_form_of_the_requirement(olga_api, body):
    response = olga_api.post(URL, body, format="json")
    assert response.status_code == 400
    assert "exactly one of" in response.json()["error"]["message"]


def test_patch_with_both_forms_is_refused(olga_api, flavour):
    response = olga_api.patch(f"{URL}gpu-large/", {"requirement": {}, "requirement_text": ""}, format="json")
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"name": "GPU Large", "requirement_text": ""}, "name", "Lowercase letters, digits and '-'"),
        ({"name": "gpu-large", "requirement_text": ""}, "name", "already exists"),
        ({"name": "y", "requirement_text": "", "requirement_description": "x"}, "requirement_description", "read-only"),
        ({"name": "y", "requirement_text": "", "colour": "red"}, "colour", "Unknown field"),
    ],
)
def test_bad_names_and_fields_are_refused_by_field(olga_api, flavour, body, field, words):
    response = olga_api.post(URL, body, format="json")
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert words in " ".join(details[field])


def test_flavour_answers_match_the_schema(alice_api, flavour):
    import jsonschema

    schema = yaml.safe_load(alice_api.get("/api/v1/schema/").content)
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {
        "flavours_list",
        "flavour_retrieve",
        "flavour_create",
        "flavour_replace",
        "flavour_update",
        "flavour_delete",
        "hosts_select_preview",
    } <= operations
    components = schema["components"]["schemas"]
    jsonschema.validate(alice_api.get(URL).json(), _resolve(components["PaginatedFlavourList"], components))
    jsonschema.validate(alice_api.get(f"{URL}gpu-large/").json(), _resolve(components["Flavour"], components))


# --------------------------------------------------------------------------- the admin


def test_the_admin_lists_flavours_with_their_requirement_in_words(olga_client, flavour):
    page = olga_client.get("/admin/hosts/flavour/").content.decode()
    assert "gpu-large" in page and "≥ 64 cores, 4× nvidia-a100" in page


def test_the_admin_edits_the_requirement_as_compact_text(olga_client, flavour):
    page = olga_client.get(f"/admin/hosts/flavour/{flavour.pk}/change/").content.decode()
    assert f"{A100_TEXT.replace('>', '&gt;')}</textarea>" in page
    response = olga_client.post(
        f"/admin/hosts/flavour/{flavour.pk}/change/",
        {"name": "gpu-large", "description": "Eight", "requirement_text": "gpu:nvidia-a100>=8, nvme"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    flavour.refresh_from_db()
    assert flavour.requirement == {"traits": ["nvme"], "accelerators": [{"type": "nvidia-a100", "count": 8}]}


def test_the_admin_adds_a_flavour(olga_client):
    response = olga_client.post("/admin/hosts/flavour/add/", {"name": "small", "requirement_text": "cores>=8"})
    assert response.status_code == 302
    assert Flavour.objects.get(name="small").requirement == {"min_cores": 8}


def test_the_admin_shows_a_bad_requirement_on_the_field_with_its_position(olga_client):
    response = olga_client.post("/admin/hosts/flavour/add/", {"name": "small", "requirement_text": "cores>=8,ram>=1T"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "(at character 10)" in page
    assert "cores&gt;=8,ram&gt;=1T\n         ^</pre>" in page
    assert not Flavour.objects.exists()


def test_tenant_members_have_no_admin(alice_client, flavour):
    response = alice_client.get("/admin/hosts/flavour/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
