"""The tenancy API's representations and request bodies (tenants.api).

Request bodies only check the shape (types, lengths, choices) and refuse unknown keys by name
(:class:`~hosts.serializers.StrictSerializer`); the rules — names, quota, images, requirements,
the last owner — are the services' (:mod:`tenants.services`, :mod:`tenants.clusters`,
:mod:`tenants.quota`), whose refusals the views turn into a 400 keyed by field.

Representations never carry secrets: no kubeconfig (its own endpoint), no token, no hash.
Every list representation reads only what its view's queryset loaded (select_related,
prefetch_related, annotations), so a list costs the same number of queries for 1 or 100 rows.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hosts.requirements import Requirement, RequirementError
from hosts.serializers import StrictSerializer
from hosts.serializers_select import REQUIREMENT_OPENAPI, PolicyJSONField, RequirementJSONField
from tenants.models import (
    CLUSTER_NAME_MAX,
    POOL_NAME_MAX,
    TENANT_SLUG_MAX,
    AuditEntry,
    Cluster,
    KubernetesVersion,
    Membership,
    NodePool,
    OsImage,
    PoolHost,
    QuotaClass,
    Role,
    Tenant,
)


def _compact(requirement: dict | None) -> str:
    """The stored requirement as compact text ("" for none, or one stored before a rule changed)."""
    if not requirement:
        return ""
    try:
        return Requirement.from_json(requirement).to_compact()
    except RequirementError:
        return ""


# --------------------------------------------------------------------------- tenants


class TenantSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="The requester's role (null: an operator who is not a member).")

    class Meta:
        model = Tenant
        fields = ["slug", "name", "description", "priority", "role", "created_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=Role.choices, allow_null=True))
    def get_role(self, tenant: Tenant) -> str | None:
        # Lists annotate ``my_role``; a single tenant passes the role it was resolved with.
        if hasattr(tenant, "my_role"):
            return tenant.my_role
        return self.context.get("role")


class TenantCreateSerializer(StrictSerializer):
    slug = serializers.CharField(max_length=TENANT_SLUG_MAX, help_text="Short name used in URLs and object names.")
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    priority = serializers.IntegerField(required=False, default=0, help_text="Higher wins when hosts are pre-empted.")


class TenantUpdateSerializer(StrictSerializer):
    read_only_names = frozenset({"slug", "role", "created_at"})

    name = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(max_length=255, required=False, allow_blank=True)
    priority = serializers.IntegerField(required=False)


# --------------------------------------------------------------------------- members


class MembershipSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    name = serializers.CharField(source="user.get_full_name", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "email", "name", "role", "created_at"]
        read_only_fields = fields


class MembershipCreateSerializer(StrictSerializer):
    email = serializers.EmailField(max_length=254, help_text="Someone without an account gets one (no password).")
    role = serializers.ChoiceField(choices=Role.choices, required=False, default=Role.MEMBER)


class MembershipUpdateSerializer(StrictSerializer):
    read_only_names = frozenset({"id", "email", "name", "created_at"})

    role = serializers.ChoiceField(choices=Role.choices)


# --------------------------------------------------------------------------- quota


class ClassUsageSerializer(serializers.Serializer):
    """A tenant's quota of one class and its use (tenants.quota.tenant_usage)."""

    quota_class = serializers.CharField(source="quota_class.name")
    description = serializers.CharField(source="quota_class.description")
    guaranteed = serializers.IntegerField(help_text="Hosts always obtainable (others' use of them is pre-empted).")
    maximum = serializers.IntegerField(help_text="The most the tenant may hold, borrowing included.")
    held = serializers.IntegerField(help_text="Hosts the tenant's pools hold now.")
    held_guaranteed = serializers.IntegerField(help_text="Of those, counted within the guarantee.")
    borrowed = serializers.IntegerField(help_text="Held beyond the guarantee (can be reclaimed).")
    committed = serializers.IntegerField(help_text="What the tenant's pools ask for (fixed sizes, autoscale maxima).")
    room = serializers.IntegerField(help_text="How many more hosts the quota allows.")


class QuotaUpdateSerializer(StrictSerializer):
    guaranteed = serializers.IntegerField(min_value=0)
    maximum = serializers.IntegerField(min_value=0)


class QuotaSerializer(serializers.Serializer):
    tenant = serializers.CharField(source="tenant.slug")
    quota_class = serializers.CharField(source="quota_class.name")
    guaranteed = serializers.IntegerField()
    maximum = serializers.IntegerField()
    updated_at = serializers.DateTimeField()


class ClassCapacitySerializer(serializers.Serializer):
    """One class across the fleet (tenants.quota.fleet_capacity)."""

    quota_class = serializers.CharField(source="quota_class.name")
    hosts = serializers.IntegerField(help_text="Active hosts meeting the class's requirement.")
    guaranteed_total = serializers.IntegerField(help_text="Guarantees given to tenants in this class.")
    maximum_total = serializers.IntegerField(help_text="Maxima of the tenants in this class, summed.")
    held_total = serializers.IntegerField(help_text="Hosts of the class held by pools.")
    free = serializers.IntegerField(help_text="Hosts of the class nobody holds.")


# --------------------------------------------------------------------------- catalogue


class QuotaClassSerializer(StrictSerializer):
    """A class of hardware quota is counted in. Write the requirement as JSON or as text (one)."""

    read_only_names = frozenset({"requirement_description", "created_at", "updated_at"})

    name = serializers.CharField(max_length=40, help_text="Lowercase letters, digits and '-'.")
    description = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")
    requirement = RequirementJSONField(required=False, help_text="The requirement as JSON.")
    requirement_text = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, help_text="The requirement as compact text."
    )
    requirement_description = serializers.CharField(read_only=True, help_text="The requirement in words.")
    order = serializers.IntegerField(required=False, default=0, help_text="Where the class appears in lists.")
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, klass: QuotaClass) -> dict:
        try:
            requirement = Requirement.from_json(klass.requirement)
            text, words = requirement.to_compact(), requirement.describe()
        except RequirementError:
            text, words = "", "(no longer valid: edit the class)"
        stamp = serializers.DateTimeField()
        return {
            "name": klass.name,
            "description": klass.description,
            "requirement": klass.requirement,
            "requirement_text": text,
            "requirement_description": words,
            "order": klass.order,
            "created_at": stamp.to_representation(klass.created_at),
            "updated_at": stamp.to_representation(klass.updated_at),
        }


class KubernetesVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = KubernetesVersion
        fields = ["version", "available", "is_default", "notes"]


class OsImageSerializer(serializers.ModelSerializer):
    kubernetes_version = serializers.SlugRelatedField(
        slug_field="version",
        queryset=KubernetesVersion.objects.all(),
        allow_null=True,
        required=False,
        help_text="The kubelet the image carries (null: any version).",
    )

    class Meta:
        model = OsImage
        fields = [
            "name",
            "url",
            "checksum",
            "checksum_type",
            "format",
            "kubernetes_version",
            "available",
            "created_at",
        ]
        read_only_fields = ["created_at"]


# --------------------------------------------------------------------------- clusters


class NodePoolSummarySerializer(serializers.ModelSerializer):
    quota_class = serializers.CharField(source="quota_class.name", read_only=True)

    class Meta:
        model = NodePool
        fields = [
            "name",
            "quota_class",
            "workload_class",
            "phase",
            "desired",
            "ready",
            "autoscale_min",
            "autoscale_max",
        ]
        read_only_fields = fields


# The node pools' ``phase`` is the schema's PhaseEnum; the cluster's, a different set, stays
# inline (a one-element allOf, as drf-spectacular writes a described reference) so the two do
# not collide in the enum naming.
CLUSTER_PHASE_OPENAPI = {
    "allOf": [{"type": "string", "enum": list(Cluster.Phase.values)}],
    "description": ", ".join(f"{value}: {label}" for value, label in Cluster.Phase.choices),
}


@extend_schema_field(CLUSTER_PHASE_OPENAPI)
class ClusterPhaseField(serializers.CharField):
    pass


class ClusterSerializer(serializers.ModelSerializer):
    phase = ClusterPhaseField(read_only=True)
    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    kubernetes_version = serializers.CharField(source="kubernetes_version.version", read_only=True)
    endpoint = serializers.SerializerMethodField(help_text="The API server's URL (null until an address is set).")
    created_by = serializers.EmailField(source="created_by.email", read_only=True, allow_null=True, default=None)
    node_pools = serializers.SerializerMethodField(help_text="Its live node pools.")

    class Meta:
        model = Cluster
        fields = [
            "name",
            "tenant",
            "kubernetes_version",
            "control_plane_replicas",
            "addons",
            "phase",
            "message",
            "control_plane_ready",
            "endpoint",
            "node_pools",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_endpoint(self, cluster: Cluster) -> str | None:
        return f"https://{cluster.endpoint_host}:6443" if cluster.endpoint_host else None

    @extend_schema_field(NodePoolSummarySerializer(many=True))
    def get_node_pools(self, cluster: Cluster) -> list:
        # Lists prefetch ``live_pools``; a single cluster loads its own.
        pools = getattr(cluster, "live_pools", None)
        if pools is None:
            pools = NodePool.objects.live().filter(cluster=cluster).select_related("quota_class").order_by("name")
        return NodePoolSummarySerializer(pools, many=True).data


class ClusterCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=CLUSTER_NAME_MAX, help_text="A DNS label of at most 20 characters.")
    kubernetes_version = serializers.CharField(
        max_length=32, required=False, allow_blank=True, help_text="One of GET /kubernetes-versions/ (default: theirs)."
    )
    control_plane_replicas = serializers.IntegerField(required=False, default=2, min_value=1, max_value=5)
    addons = serializers.ListField(
        child=serializers.ChoiceField(choices=Cluster.Addon.choices), required=False, default=list
    )


# --------------------------------------------------------------------------- node pools


@extend_schema_field(
    {
        "oneOf": [
            {**REQUIREMENT_OPENAPI, "description": "The requirement as JSON."},
            {"type": "string", "description": "The requirement as compact text, e.g. cores>=32,nvme."},
        ],
        "description": "What the pool asks beyond its class: JSON, or compact text such as cores>=32,nvme.",
    }
)
class RequirementInputField(serializers.JSONField):
    """A requirement as JSON or as compact text; read for meaning by the service."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if data is not None and not isinstance(data, dict | str):
            raise serializers.ValidationError("A JSON object or compact text such as cores>=32,nvme.")
        return data


class PoolHostSerializer(serializers.ModelSerializer):
    name = serializers.CharField(source="host.name", read_only=True)
    borrowed = serializers.SerializerMethodField(help_text="Held beyond the guarantee: can be reclaimed.")

    class Meta:
        model = PoolHost
        fields = ["name", "state", "guaranteed", "borrowed", "preempt_at", "allocated_at", "ready_at"]
        read_only_fields = fields

    def get_borrowed(self, pool_host: PoolHost) -> bool:
        return not pool_host.guaranteed


class NodePoolSerializer(serializers.ModelSerializer):
    cluster = serializers.CharField(source="cluster.name", read_only=True)
    quota_class = serializers.CharField(source="quota_class.name", read_only=True)
    image = serializers.CharField(source="image.name", read_only=True)
    requirement = serializers.JSONField(read_only=True, help_text="What the pool asks beyond its class, as JSON.")
    requirement_text = serializers.SerializerMethodField(help_text="The same as compact text.")
    policy = PolicyJSONField(read_only=True)
    replicas = serializers.SerializerMethodField(help_text="The fixed size (null: autoscaled).")
    held = serializers.SerializerMethodField(help_text="Hosts the pool holds now.")
    created_by = serializers.EmailField(source="created_by.email", read_only=True, allow_null=True, default=None)

    class Meta:
        model = NodePool
        fields = [
            "name",
            "cluster",
            "quota_class",
            "image",
            "requirement",
            "requirement_text",
            "policy",
            "cleaning",
            "workload_class",
            "replicas",
            "autoscale_min",
            "autoscale_max",
            "phase",
            "message",
            "desired",
            "ready",
            "held",
            "replacements",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_requirement_text(self, pool: NodePool) -> str:
        return _compact(pool.requirement)

    def get_replicas(self, pool: NodePool) -> int | None:
        return None if pool.autoscaled else pool.replicas

    def get_held(self, pool: NodePool) -> int:
        # Lists annotate ``held``; a single pool counts the hosts the view loaded for it.
        if hasattr(pool, "held"):
            return pool.held
        return len(self.context.get("hosts", ()))


class NodePoolDetailSerializer(NodePoolSerializer):
    hosts = serializers.SerializerMethodField(help_text="The hosts the pool holds, by name.")

    class Meta(NodePoolSerializer.Meta):
        fields = [*NodePoolSerializer.Meta.fields, "hosts"]
        read_only_fields = fields

    @extend_schema_field(PoolHostSerializer(many=True))
    def get_hosts(self, pool: NodePool) -> list:
        return PoolHostSerializer(self.context.get("hosts", ()), many=True).data


class NodePoolCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=POOL_NAME_MAX, help_text="A DNS label of at most 12 characters.")
    quota_class = serializers.CharField(max_length=40, help_text="One of GET /quota-classes/.")
    image = serializers.CharField(max_length=63, help_text="One of GET /os-images/.")
    requirement = RequirementInputField(required=False, allow_null=True)
    policy = PolicyJSONField(required=False, allow_null=True)
    cleaning = serializers.ChoiceField(choices=NodePool.Cleaning.choices, required=False)
    workload_class = serializers.ChoiceField(choices=NodePool.WorkloadClass.choices, required=False)
    replicas = serializers.IntegerField(required=False, allow_null=True, min_value=0, help_text="A fixed size.")
    autoscale_min = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    autoscale_max = serializers.IntegerField(required=False, allow_null=True, min_value=0)


class NodePoolUpdateSerializer(StrictSerializer):
    """What may change on a pool (new hosts follow it; hosts it holds are kept). The size
    changes through scale/, the class and the workload class never."""

    read_only_names = frozenset(NodePoolDetailSerializer.Meta.fields) - {"image", "cleaning", "policy", "requirement"}

    image = serializers.CharField(max_length=63, required=False)
    cleaning = serializers.ChoiceField(choices=NodePool.Cleaning.choices, required=False)
    policy = PolicyJSONField(required=False, allow_null=True)
    requirement = RequirementInputField(required=False, allow_null=True)


class NodePoolScaleSerializer(StrictSerializer):
    """A fixed size (``replicas``; 0 keeps the pool with no hosts) or autoscaling bounds."""

    replicas = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    autoscale_min = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    autoscale_max = serializers.IntegerField(required=False, allow_null=True, min_value=0)


# --------------------------------------------------------------------------- audit


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label", read_only=True, help_text="Who, in words.")
    tenant = serializers.SerializerMethodField()
    before = serializers.JSONField(read_only=True, allow_null=True)
    after = serializers.JSONField(read_only=True, allow_null=True)

    class Meta:
        model = AuditEntry
        fields = ["id", "at", "actor", "tenant", "action", "target_type", "target_id", "target_repr", "before", "after"]
        read_only_fields = fields

    def get_tenant(self, entry: AuditEntry) -> str | None:
        # No database constraint: the tenant may be gone, the entry stays (the view joins it).
        if entry.tenant_id is None:
            return None
        try:
            return entry.tenant.slug
        except Tenant.DoesNotExist:
            return None
