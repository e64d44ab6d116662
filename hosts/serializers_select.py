"""Flavours and the selection preview ("What would I get?") in the API: bodies and answers.

A requirement is accepted as JSON (``requirement``, :data:`hosts.requirements.REQUIREMENT_SCHEMA`)
or as compact text (``requirement_text``, e.g. ``cores>=64,ram>=512Gi,gpu:nvidia-a100>=4``);
the preview also takes a ``flavour`` by name. Exactly one of them. Reading it is
:func:`hosts.flavours.requirement_from_input`; these serializers only check the shape.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hosts.requirements import REQUIREMENT_SCHEMA, Requirement
from hosts.serializers import StrictSerializer

MAX_COUNT = 1000


def _oas30(node):
    """JSON Schema 2020-12 → OpenAPI 3.0 (what the schema is written in): null types as
    ``nullable``, the disk minimum's ``exclusiveMinimum`` as a ``minimum``."""
    if isinstance(node, list):
        return [_oas30(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _oas30(v) for k, v in node.items() if not k.startswith("$") and k != "title"}
    if isinstance(out.get("type"), list):
        types = [t for t in out["type"] if t != "null"]
        out["type"] = types[0]
        if len(types) < len(node["type"]):
            out["nullable"] = True
    if "enum" in out and None in out["enum"]:
        out["enum"] = [v for v in out["enum"] if v is not None] + [None]
        out["nullable"] = True
        out.setdefault("type", "string")
    if out.get("exclusiveMinimum") == 0:  # TB > 0 in whole GB: at least 0.001 (and the same in 3.0 and 3.1)
        del out["exclusiveMinimum"]
        out["minimum"] = 0.001
    return out


REQUIREMENT_OPENAPI = _oas30(REQUIREMENT_SCHEMA)
POLICY_OPENAPI = {
    "type": "object",
    "description": "Placement; every field optional. Levels are the fleet's topology levels (GET /fleet-settings/).",
    "additionalProperties": False,
    "properties": {
        "mode": {"type": "string", "enum": ["spread", "pack", None], "nullable": True},
        "level": {"type": "string", "nullable": True, "description": "The level to spread or pack across, e.g. rack."},
        "hard": {"type": "boolean", "description": "true: must; false (default): prefer."},
        "max_per_bucket": {
            "type": "integer",
            "minimum": 1,
            "nullable": True,
            "description": "At most this many per level.",
        },
        "together_level": {"type": "string", "nullable": True, "description": "All hosts in one bucket of this level."},
    },
}


@extend_schema_field(REQUIREMENT_OPENAPI)
class RequirementJSONField(serializers.JSONField):
    """A requirement as JSON; checked for meaning by the view (with its key and message)."""


@extend_schema_field(POLICY_OPENAPI)
class PolicyJSONField(serializers.JSONField):
    """A placement policy as JSON; checked against the fleet's levels by the view."""


# --------------------------------------------------------------------------- flavours


class FlavourSerializer(StrictSerializer):
    """A named requirement operators offer. Write the requirement as JSON or as text (one of them)."""

    read_only_names = frozenset({"requirement_description", "created_at", "updated_at"})

    name = serializers.CharField(max_length=57, help_text="Lowercase letters, digits and '-'.")
    description = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")
    requirement = RequirementJSONField(required=False, help_text="The requirement as JSON.")
    requirement_text = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="The requirement as compact text, e.g. cores>=64,ram>=512Gi,gpu:nvidia-a100>=4.",
    )
    requirement_description = serializers.CharField(read_only=True, help_text="The requirement in words.")
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, flavour):
        requirement = Requirement.from_json(flavour.requirement)
        return {
            "name": flavour.name,
            "description": flavour.description,
            "requirement": requirement.to_json(),
            "requirement_text": requirement.to_compact(),
            "requirement_description": requirement.describe(),
            "created_at": serializers.DateTimeField().to_representation(flavour.created_at),
            "updated_at": serializers.DateTimeField().to_representation(flavour.updated_at),
        }


# --------------------------------------------------------------------------- the selection preview


class SelectPreviewSerializer(StrictSerializer):
    """What would I get? Exactly one of requirement, requirement_text and flavour; nothing is claimed."""

    requirement = RequirementJSONField(required=False, help_text="The requirement as JSON.")
    requirement_text = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="The requirement as compact text, e.g. cores>=64,gpu:nvidia-a100>=4 (empty: any host).",
    )
    flavour = serializers.CharField(required=False, max_length=57, help_text="A flavour's name.")
    count = serializers.IntegerField(min_value=1, max_value=MAX_COUNT, help_text="How many hosts.")
    policy = PolicyJSONField(required=False, default=dict, help_text="Placement (hosts.allocator.Policy).")

    def validate(self, attrs):
        given = [name for name in ("requirement", "requirement_text", "flavour") if name in attrs]
        if len(given) != 1:
            message = "Give exactly one of requirement, requirement_text and flavour."
            raise serializers.ValidationError({(given[-1] if given else "requirement"): [message]})
        return attrs


class SelectedHostSerializer(serializers.Serializer):
    name = serializers.CharField()
    cost_per_hour = serializers.DecimalField(max_digits=12, decimal_places=4)
    handoff_seconds = serializers.IntegerField(help_text="Estimated time to hand the host over safely.")
    location = serializers.DictField(child=serializers.CharField(), help_text="Level → value, from the coarsest.")


class ExplanationSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=["none_match", "not_enough", "not_enough_free", "unplaced", "spread", "together"]
    )
    message = serializers.CharField(help_text="One sentence for people.")
    data = serializers.DictField(help_text="The numbers behind the message (needed, free, unavailable…).")


class PolicyOutSerializer(serializers.Serializer):
    mode = serializers.CharField(allow_null=True)
    level = serializers.CharField(allow_null=True)
    hard = serializers.BooleanField()
    max_per_bucket = serializers.IntegerField(allow_null=True)
    together_level = serializers.CharField(allow_null=True)


class SelectionSerializer(serializers.Serializer):
    """The cheapest feasible set now, or why there is none. Host ids, BMCs and allocations are never shown."""

    requirement = RequirementJSONField()
    requirement_text = serializers.CharField()
    description = serializers.CharField(help_text="The requirement in words.")
    count = serializers.IntegerField()
    policy = PolicyOutSerializer()
    policy_description = serializers.CharField()
    matching = serializers.IntegerField(help_text="Active hosts meeting the requirement, free or not.")
    free = serializers.IntegerField(help_text="Of which free now.")
    unavailable = serializers.DictField(
        child=serializers.IntegerField(), help_text="Matching hosts that are not free, by reason."
    )
    feasible = serializers.BooleanField()
    cost_per_hour = serializers.DecimalField(max_digits=14, decimal_places=4, help_text="Of the chosen hosts together.")
    cost_unit = serializers.CharField()
    handoff_seconds = serializers.IntegerField(help_text="Sum of the chosen hosts' hand-off estimates.")
    hosts = SelectedHostSerializer(many=True, help_text="The chosen hosts (none when infeasible).")
    explanation = ExplanationSerializer(allow_null=True, help_text="Why nothing fits (null when feasible).")
    groups = serializers.IntegerField(help_text="Groups of interchangeable free hosts the search looked at.")


def selection_data(selection, cost_unit: str) -> dict:
    """:meth:`hosts.selection.Selection.to_json` as the API and the pages show it: without host ids."""
    data = selection.to_json()
    data["hosts"] = [{k: v for k, v in host.items() if k != "id"} for host in data["hosts"]]
    data["cost_unit"] = cost_unit
    return data
