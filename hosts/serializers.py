"""The inventory API's representations and request bodies (hosts.api).

Two representations of a host, chosen by who asks:

* :class:`HostTenantSerializer` — what a tenant member may see: the hardware summary (no MACs,
  no serials), traits, location, cost, the hand-off estimate and whether it is free. Nothing
  about the BMC, nor about who uses a host (allocations are scoped per tenant by a later issue;
  until then tenant members see no allocation at all).
* :class:`HostOperatorSerializer` — everything an operator curates and troubleshoots with,
  never BMC credentials (Teapot does not hold them: they live in the cluster's Secrets).

Both carry ``representation`` ("tenant" / "operator"), the discriminator of the OpenAPI schema's
``Host`` so a client (and the schema test) knows which one it got.

Request bodies refuse unknown keys by name and read-only keys as read-only
(:class:`StrictSerializer`): a typo such as ``maintainance`` must not be silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hosts import handoff
from hosts.classify import cost_lines
from hosts.curation import ACTIONS
from hosts.filters import CLUSTER_LABEL, TENANT_LABEL
from hosts.models import FleetSettings, Host, HostEnrolment, HostStateChange

# --------------------------------------------------------------------------- plumbing


class StrictSerializer(serializers.Serializer):
    # Refuses keys it does not write: read-only ones (``read_only_names``) and unknown ones, by
    # name. (A comment, not a docstring: the schema would give it to every request body.)

    read_only_names: frozenset[str] = frozenset()

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            errors = {}
            for key in data:
                if key in writable:
                    continue
                if key in self.read_only_names or key in self.fields:
                    errors[key] = ["This field is read-only."]
                else:
                    errors[key] = [f"Unknown field; the fields are {', '.join(sorted(writable))}."]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


# --------------------------------------------------------------------------- hosts: read


class CpuSerializer(serializers.Serializer):
    model = serializers.CharField(source="cpu_model")
    count = serializers.IntegerField(source="cpu_count", help_text="Logical CPUs (threads).")
    mhz = serializers.FloatField(source="cpu_mhz")


class DiskSerializer(serializers.Serializer):
    type = serializers.CharField(default="", help_text="HDD, SSD or NVME.")
    size_bytes = serializers.IntegerField(default=0)
    rotational = serializers.BooleanField(default=False)


class DiskOperatorSerializer(DiskSerializer):
    name = serializers.CharField(default="")
    model = serializers.CharField(default="")


class NicSerializer(serializers.Serializer):
    speed_gbps = serializers.IntegerField(default=0)


class NicOperatorSerializer(NicSerializer):
    name = serializers.CharField(default="")
    mac = serializers.CharField(default="")


class AcceleratorSerializer(serializers.Serializer):
    type = serializers.CharField(default="")
    count = serializers.IntegerField(default=0)


class HardwareTenantSerializer(serializers.Serializer):
    cpu = CpuSerializer(source="*")
    ram_gib = serializers.IntegerField()
    disks = DiskSerializer(many=True)
    nics = NicSerializer(many=True)
    accelerators = AcceleratorSerializer(many=True)


class HardwareOperatorSerializer(HardwareTenantSerializer):
    ram_mib = serializers.IntegerField()
    disks = DiskOperatorSerializer(many=True)
    nics = NicOperatorSerializer(many=True)
    vendor = serializers.CharField(source="system_vendor")
    product = serializers.CharField(source="system_product")
    warnings = serializers.ListField(source="hardware_warnings", child=serializers.CharField())


def _fleet(context) -> FleetSettings:
    """The request's fleet settings (the view loads them once per request, lazily)."""
    fleet = context.get("fleet")
    return fleet if fleet is not None else FleetSettings.load()


class HostTenantSerializer(serializers.Serializer):
    """A host as a tenant member sees it."""

    representation = serializers.SerializerMethodField()
    name = serializers.CharField()
    state = serializers.CharField(source="state_label", help_text="What matters most about the host now.")
    architecture = serializers.CharField()
    hardware = HardwareTenantSerializer(source="*")
    traits = serializers.ListField(child=serializers.CharField())
    location = serializers.DictField(child=serializers.CharField(), help_text="Level → value, from the coarsest.")
    cost_per_hour = serializers.DecimalField(max_digits=12, decimal_places=4)
    cost_unit = serializers.SerializerMethodField()
    key_erase_capable = serializers.BooleanField()
    handoff_seconds = serializers.IntegerField(
        source="handoff_estimate_seconds", help_text="Estimated time to hand the host over safely."
    )
    maintenance = serializers.BooleanField()
    available = serializers.SerializerMethodField(help_text="Active, available, not in maintenance, not in use.")

    @extend_schema_field({"type": "string", "enum": ["tenant"]})
    def get_representation(self, host: Host) -> str:
        return "tenant"

    def get_cost_unit(self, host: Host) -> str:
        return _fleet(self.context).cost_unit

    def get_available(self, host: Host) -> bool:
        return (
            host.provisioning_state == "available"
            and not host.maintenance
            and not host.consumer
            and host.retired_at is None
            and not host.deleting
        )


class CostLineSerializer(serializers.Serializer):
    text = serializers.CharField()
    amount = serializers.DecimalField(max_digits=None, decimal_places=4)


class HostOperatorSerializer(HostTenantSerializer):
    """A host as an operator sees it (the BMC's address, never its credentials)."""

    namespace = serializers.CharField()
    uid = serializers.CharField()
    bmc_address = serializers.CharField()
    boot_mac = serializers.CharField()
    serial = serializers.CharField(source="system_serial")
    firmware = serializers.DictField(help_text="{bios_vendor, bios_version, bios_date}")
    hardware = HardwareOperatorSerializer(source="*")
    provisioning_state = serializers.CharField()
    operational_status = serializers.CharField()
    error_type = serializers.CharField()
    error_message = serializers.CharField()
    error_count = serializers.IntegerField()
    online = serializers.BooleanField(help_text="Desired power.")
    powered_on = serializers.BooleanField(help_text="Actual power.")
    paused = serializers.BooleanField()
    detached = serializers.BooleanField()
    deleting = serializers.BooleanField()
    consumer = serializers.CharField(help_text="The consumerRef as <kind>/<name> (empty: free).")
    labels = serializers.DictField(child=serializers.CharField(), help_text="The BareMetalHost's labels.")
    tenant = serializers.SerializerMethodField(help_text="The tenant the host is allocated to.")
    cluster = serializers.SerializerMethodField(help_text="The cluster the host is allocated to.")
    notes = serializers.CharField()
    maintenance_reason = serializers.CharField()
    manual_traits = serializers.ListField(child=serializers.CharField())
    rule_traits = serializers.ListField(child=serializers.CharField())
    cost_override = serializers.DecimalField(max_digits=12, decimal_places=4, allow_null=True)
    cost_lines = serializers.SerializerMethodField()
    key_erase_seconds = serializers.SerializerMethodField(help_text="Estimated key-erase hand-off (null: not capable).")
    metadata_clean_seconds = serializers.SerializerMethodField(help_text="Estimated metadata-cleaning hand-off.")
    full_clean_seconds = serializers.IntegerField(
        source="full_clean_estimate_seconds", help_text="Estimated full-disk cleaning."
    )
    sync_error = serializers.CharField()
    first_seen_at = serializers.DateTimeField()
    last_synced_at = serializers.DateTimeField(allow_null=True)
    retired_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field({"type": "string", "enum": ["operator"]})
    def get_representation(self, host: Host) -> str:
        return "operator"

    def get_tenant(self, host: Host) -> str | None:
        return (host.labels or {}).get(TENANT_LABEL)

    def get_cluster(self, host: Host) -> str | None:
        return (host.labels or {}).get(CLUSTER_LABEL)

    @extend_schema_field(CostLineSerializer(many=True))
    def get_cost_lines(self, host: Host) -> list:
        cost = cost_lines(host, self.context.get("cost_model"))
        # Plain dicts (amounts already quantized to 4 places): a serializer per host costs more
        # than the rest of the row in a list of 100.
        return [{"text": text, "amount": str(amount)} for text, amount in cost.lines]

    def get_key_erase_seconds(self, host: Host) -> int | None:
        if not host.key_erase_capable:
            return None
        return host.key_erase_seconds if host.key_erase_seconds is not None else handoff.KEY_ERASE_SECONDS

    def get_metadata_clean_seconds(self, host: Host) -> int:
        return host.metadata_clean_seconds if host.metadata_clean_seconds is not None else handoff.METADATA_SECONDS


class HostStateChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = HostStateChange
        fields = ["at", "field", "old", "new", "reported_at", "actor", "reason"]
        read_only_fields = fields


# --------------------------------------------------------------------------- hosts: write


class HostUpdateSerializer(StrictSerializer):
    """The operator's own fields of a host (PATCH): only those given change."""

    read_only_names = frozenset(HostOperatorSerializer._declared_fields) | {"traits", "cost_per_hour"}

    maintenance = serializers.BooleanField(required=False)
    maintenance_reason = serializers.CharField(required=False, allow_blank=True, max_length=255)
    notes = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    location = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        allow_null=True,
        help_text="Level → value along the fleet's topology levels; {} or null clears.",
    )
    manual_traits = serializers.ListField(child=serializers.CharField(max_length=57), required=False)
    cost_override = serializers.DecimalField(
        max_digits=12,
        decimal_places=4,
        min_value=Decimal("0"),
        required=False,
        allow_null=True,
        help_text="Cost per hour instead of the cost model's (null clears).",
    )
    key_erase_capable = serializers.BooleanField(required=False)


class HostActionSerializer(StrictSerializer):
    """An action on the BareMetalHost; retiring puts the host in maintenance with the reason."""

    action = serializers.ChoiceField(choices=list(ACTIONS))
    reason = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")


class HostActionQueuedSerializer(serializers.Serializer):
    queued = serializers.CharField(help_text="The action queued.")


class HostEnrolSerializer(StrictSerializer):
    """One host to enrol. The BMC password is write-only: no response ever carries it."""

    name = serializers.CharField(max_length=242)
    bmc_address = serializers.CharField(max_length=2048)
    bmc_username = serializers.CharField(max_length=255)
    bmc_password = serializers.CharField(
        write_only=True, trim_whitespace=False, max_length=1024, style={"input_type": "password"}
    )
    boot_mac = serializers.CharField(max_length=17)
    location = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)
    key_erase_capable = serializers.BooleanField(required=False, default=False)
    root_device_name = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class HostEnrolmentSerializer(serializers.ModelSerializer):
    """An enrolment's progress (never its credentials)."""

    requested_by = serializers.CharField(source="requested_by.email", allow_null=True, read_only=True)

    class Meta:
        model = HostEnrolment
        fields = [
            "id",
            "name",
            "state",
            "error",
            "attempts",
            "bmc_address",
            "boot_mac",
            "location",
            "notes",
            "key_erase_capable",
            "root_device_name",
            "requested_by",
            "created_at",
            "applied_at",
        ]
        read_only_fields = fields


class HostImportSerializer(StrictSerializer):
    """A CSV or YAML inventory, as ``text`` (JSON) or as an uploaded ``file`` (multipart)."""

    format = serializers.ChoiceField(
        choices=["csv", "yaml"], required=False, help_text="Required with text; taken from the file name otherwise."
    )
    text = serializers.CharField(required=False, trim_whitespace=False)
    file = serializers.FileField(required=False)

    def validate(self, attrs):
        from hosts.importing import MAX_BYTES

        text, upload, fmt = attrs.get("text"), attrs.get("file"), attrs.get("format")
        if (text is None) == (upload is None):
            raise serializers.ValidationError({"text": ["Give the inventory as text or as a file, not both."]})
        if upload is not None:
            if fmt is None:
                suffix = upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
                fmt = {"csv": "csv", "yaml": "yaml", "yml": "yaml"}.get(suffix)
            raw = upload.read(MAX_BYTES + 1)
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise serializers.ValidationError({"file": ["The file is not UTF-8 text."]}) from exc
            if "\x00" in text:
                raise serializers.ValidationError({"file": ["The file is not text: it contains NUL characters."]})
        if fmt is None:
            raise serializers.ValidationError({"format": ["csv or yaml."]})
        return {"format": fmt, "text": text}


class ImportProblemSerializer(serializers.Serializer):
    line = serializers.IntegerField(help_text="0: the file as a whole.")
    field = serializers.CharField()
    message = serializers.CharField()


class ImportProblemsSerializer(serializers.Serializer):
    problems = ImportProblemSerializer(many=True)


class ImportErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = ImportProblemsSerializer()


class ImportErrorSerializer(serializers.Serializer):
    """The error shape, with every problem of the file and its line."""

    error = ImportErrorBodySerializer()


class HostImportResultSerializer(serializers.Serializer):
    enrolments = HostEnrolmentSerializer(many=True)


# --------------------------------------------------------------------------- trait rules


class TraitRuleSerializer(StrictSerializer):
    """An automatic trait: the hosts whose hardware matches ``rule`` carry the trait ``name``."""

    read_only_names = frozenset({"created_at", "updated_at"})

    name = serializers.CharField(max_length=57, help_text="The trait hosts matching the rule carry.")
    rule = serializers.CharField(help_text='e.g. accelerator(type == "nvidia-a100") or ram_gib >= 512')
    description = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")
    enabled = serializers.BooleanField(required=False, default=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class TraitRulePreviewSerializer(StrictSerializer):
    """A rule to try against the fleet (nothing is saved)."""

    rule = serializers.CharField()


class TraitRulePreviewResultSerializer(serializers.Serializer):
    matches = serializers.IntegerField(help_text="Active inspected hosts the rule matches.")
    inspected = serializers.IntegerField(help_text="Active inspected hosts.")
    sample = serializers.ListField(child=serializers.CharField(), help_text="A few of the matching hosts.")


class RuleProblemSerializer(serializers.Serializer):
    rule = serializers.CharField(help_text="What is wrong.")
    position = serializers.IntegerField(help_text="0-based offset of the problem in the rule.")


class RuleErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = RuleProblemSerializer()


class RuleErrorSerializer(serializers.Serializer):
    error = RuleErrorBodySerializer()


# --------------------------------------------------------------------------- fleet settings


class FleetSettingsSerializer(serializers.Serializer):
    topology_levels = serializers.ListField(child=serializers.CharField(), help_text="From the coarsest.")
    cost_unit = serializers.CharField()
    cost_model = serializers.SerializerMethodField()
    preemption_notice_seconds = serializers.IntegerField()
    minimum_cleaning = serializers.CharField()
    provisioning_attempts = serializers.IntegerField()
    reservation_extend_window_hours = serializers.IntegerField()
    reservation_max_hours = serializers.IntegerField()
    reservation_horizon_days = serializers.IntegerField()
    reservation_reminder_minutes = serializers.IntegerField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(
        {
            "type": "object",
            "description": "The weights in force: base, per_core, per_gib_ram, per_tb_disk (decimal strings), "
            "per_accelerator and per_trait (name → decimal string).",
            "additionalProperties": True,
        }
    )
    def get_cost_model(self, fleet: FleetSettings) -> dict:
        from hosts.costs import CostModelError

        try:
            return fleet.get_cost_model().to_dict()
        except CostModelError:
            return dict(fleet.cost_model or {})


class FleetSettingsUpdateSerializer(StrictSerializer):
    """The settings to change (the others stay)."""

    read_only_names = frozenset({"updated_at"})

    topology_levels = serializers.ListField(child=serializers.CharField(max_length=32), required=False)
    cost_unit = serializers.CharField(required=False, max_length=16)
    cost_model = serializers.DictField(
        required=False, help_text="Weights: base, per_core, per_gib_ram, per_tb_disk, per_accelerator, per_trait."
    )
    preemption_notice_seconds = serializers.IntegerField(required=False, min_value=0, max_value=86_400)
    minimum_cleaning = serializers.ChoiceField(required=False, choices=["standard", "key_erase"])
    provisioning_attempts = serializers.IntegerField(required=False, min_value=0, max_value=20)
    reservation_extend_window_hours = serializers.IntegerField(required=False, min_value=0, max_value=8_760)
    reservation_max_hours = serializers.IntegerField(required=False, min_value=1, max_value=8_760)
    reservation_horizon_days = serializers.IntegerField(required=False, min_value=1, max_value=1_095)
    reservation_reminder_minutes = serializers.IntegerField(
        required=False, min_value=0, max_value=10_080, help_text="0: no reminder."
    )
