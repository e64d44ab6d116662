"""The hardware inventory: Teapot's mirror of the BareMetalHosts and their state history.

* :class:`Host` — one BareMetalHost as last seen (spec, status, labels — never BMC
  credentials), its hardware normalised into columns the host list and the allocator filter
  on (:mod:`hosts.hardware`), and the operator's own fields. The sync (:mod:`hosts.services`)
  writes only the mirror columns; operator fields (maintenance, notes, location) and the
  hand-off estimates are never touched by it (``key_erase_capable`` only when the host carries
  the ``teapot.io/key-erase`` annotation). A host whose BareMetalHost disappears is
  *retired* (``retired_at``), never deleted: bookings, costs and history keep pointing at it.
* :class:`HostStateChange` — every change of a tracked field, with when the sync saw it and,
  for status fields, when the controller says it happened. Append-only: a PostgreSQL trigger
  (migration 0002) refuses UPDATE and DELETE, the admin is read-only, and hosts cannot be
  deleted while they have history (``on_delete=PROTECT``). Later parts learn inspection,
  provisioning and cleaning latencies per hardware class from it.
* :class:`SyncCursor` — where the watch left off (``resource_version``), so the next
  ``hosts_follow`` resumes instead of relisting.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from hosts import handoff

# The fields whose every change is recorded in HostStateChange (the sync's "tracked" fields).
TRACKED_FIELDS = ("provisioning_state", "operational_status", "error_type", "online", "powered_on", "consumer")
RETIRED = "retired"
# Operator curation recorded in the same history (written by hosts.curation, not by the sync).
CURATED_FIELDS = ("maintenance", "traits")

# A trait is written on its BareMetalHost as the label teapot.io/trait-<name>: a label name is at
# most 63 characters, so a trait name is at most 57.
TRAIT_NAME = RegexValidator(
    r"^[a-z0-9]([a-z0-9-]{0,55}[a-z0-9])?$",
    "Lowercase letters, digits and '-', starting and ending with a letter or digit, at most 57 characters.",
)
TRAIT_LABEL_PREFIX = "teapot.io/trait-"


class Host(models.Model):
    # ------------------------------------------------------------ the BareMetalHost, mirrored
    name = models.CharField(max_length=253)
    namespace = models.CharField(max_length=253)
    uid = models.CharField(max_length=64, blank=True)
    resource_version = models.CharField(max_length=64, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    bmc_address = models.CharField(
        max_length=2048, blank=True, help_text="The BMC's address only: credentials stay in the cluster."
    )
    boot_mac = models.CharField(max_length=17, blank=True)
    architecture = models.CharField(max_length=32, blank=True)
    online = models.BooleanField(default=False, help_text="Desired power (spec.online).")
    powered_on = models.BooleanField(default=False, help_text="Actual power (status.poweredOn).")
    automated_cleaning_mode = models.CharField(max_length=16, blank=True)
    root_device_hints = models.JSONField(default=dict, blank=True)
    image_url = models.CharField(max_length=2048, blank=True)
    consumer = models.CharField(max_length=320, blank=True, help_text="The consumerRef as <kind>/<name>.")
    provisioning_state = models.CharField(max_length=32, blank=True)
    operational_status = models.CharField(max_length=16, blank=True)
    error_type = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    error_count = models.PositiveIntegerField(default=0)
    paused = models.BooleanField(default=False)
    detached = models.BooleanField(default=False)
    deleting = models.BooleanField(default=False, help_text="Deletion requested (deletionTimestamp set).")

    # ------------------------------------------------------------ hardware, normalised
    cpu_model = models.CharField(max_length=255, blank=True)
    cpu_count = models.PositiveIntegerField(default=0, help_text="Logical CPUs (threads).")
    cpu_mhz = models.FloatField(default=0)
    cpu_flags = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    ram_mib = models.PositiveIntegerField(default=0)
    disk_count = models.PositiveSmallIntegerField(default=0)
    disk_total_bytes = models.BigIntegerField(default=0)
    disks = models.JSONField(
        default=list, blank=True, help_text="[{name, type HDD|SSD|NVME, size_bytes, rotational, model}]"
    )
    nic_max_speed_gbps = models.PositiveIntegerField(default=0)
    nics = models.JSONField(default=list, blank=True, help_text="[{name, mac, speed_gbps}]")
    system_vendor = models.CharField(max_length=255, blank=True)
    system_product = models.CharField(max_length=255, blank=True)
    system_serial = models.CharField(max_length=255, blank=True)
    firmware = models.JSONField(default=dict, blank=True, help_text="{bios_vendor, bios_version, bios_date}")
    accelerator_count = models.PositiveSmallIntegerField(default=0)
    accelerators = models.JSONField(
        default=list, blank=True, help_text="[{type, count}] from the teapot.io/accelerators annotation."
    )
    hardware = models.JSONField(null=True, blank=True, help_text="status.hardware as reported (null: not inspected).")
    hardware_warnings = models.JSONField(default=list, blank=True)

    # ------------------------------------------------------------ hand-off (later parts fill the estimates)
    key_erase_capable = models.BooleanField(
        default=False,
        help_text="Disks encrypted with a per-tenant key: hand-off erases the key instead of cleaning. "
        "When the host carries the teapot.io/key-erase annotation, the sync sets it from that "
        "whenever the BareMetalHost changes.",
    )
    key_erase_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Estimated key-erase hand-off.")
    metadata_clean_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Estimated hand-off with metadata cleaning."
    )
    full_clean_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Estimated full-disk cleaning.")

    # ------------------------------------------------------------ operator fields (never written by the sync)
    maintenance = models.BooleanField(default=False)
    maintenance_reason = models.CharField(max_length=255, blank=True)
    notes = models.TextField(blank=True)
    location = models.JSONField(
        default=dict, blank=True, help_text="Place along the fleet's topology levels, e.g. {room: a, row: 2, rack: r3}."
    )
    manual_traits = ArrayField(
        models.CharField(max_length=57, validators=[TRAIT_NAME]),
        default=list,
        blank=True,
        help_text="Traits an operator gives this host on top of the rules' (e.g. for hardware no rule can see).",
    )
    cost_override = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Cost per hour set by an operator instead of the fleet's cost model.",
    )

    # ------------------------------------------------------------ derived (hosts.classify)
    rule_traits = ArrayField(models.CharField(max_length=57), default=list, blank=True, editable=False)
    traits = ArrayField(
        models.CharField(max_length=57),
        default=list,
        blank=True,
        editable=False,
        help_text="Rule traits and manual traits: what selection and the BMH labels use.",
    )
    cost_per_hour = models.DecimalField(max_digits=12, decimal_places=4, default=0, editable=False)
    hardware_class = models.CharField(
        max_length=40,
        blank=True,
        editable=False,
        db_index=True,
        help_text="A digest of what requirements can see of the hardware: hosts with equal classes "
        "meet the same hardware requirements (selection checks one of each).",
    )
    classified_at = models.DateTimeField(null=True, blank=True, editable=False)

    # ------------------------------------------------------------ bookkeeping
    fingerprint = models.CharField(max_length=96, blank=True, editable=False)
    sync_error = models.TextField(blank=True, help_text="Why the last sync could not read this host completely.")
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_synced_at = models.DateTimeField(null=True, blank=True, help_text="When a sync last saw the BareMetalHost.")
    retired_at = models.DateTimeField(
        null=True, blank=True, help_text="When its BareMetalHost disappeared (empty: active)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "name"],
                name="host_unique_name",
                violation_error_message="A host with this name already exists in the namespace.",
            )
        ]
        indexes = [
            # What the host list filters on: active hosts by state; maintenance; retired ones.
            models.Index(
                fields=["provisioning_state", "operational_status"],
                condition=Q(retired_at__isnull=True),
                name="host_active_state",
            ),
            models.Index(fields=["retired_at"], name="host_retired_at"),
            models.Index(fields=["maintenance"], condition=Q(maintenance=True), name="host_maintenance"),
            GinIndex(fields=["traits"], name="host_traits"),
            # Selection's prefilter for accelerators: accelerators @> '[{"type": "nvidia-a100"}]'.
            GinIndex(fields=["accelerators"], name="host_accelerators", opclasses=["jsonb_path_ops"]),
            # The host list's page queries: ORDER BY name (or cost), id LIMIT 50 over active hosts.
            models.Index(fields=["cost_per_hour", "id"], condition=Q(retired_at__isnull=True), name="host_active_cost"),
            models.Index(fields=["name", "id"], condition=Q(retired_at__isnull=True), name="host_active_name"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def active(self) -> bool:
        return self.retired_at is None

    @property
    def state_label(self) -> str:
        """One word or two for pages: what matters most about the host right now."""
        if self.retired_at is not None:
            return "retired"
        if self.deleting:
            return "deleting"
        if self.operational_status == "error":
            return f"error: {self.error_type}" if self.error_type else "error"
        if self.maintenance:
            return "maintenance"
        if self.detached:
            return "detached"
        if self.paused:
            return "paused"
        return self.provisioning_state or "new"

    @property
    def ram_gib(self) -> int:
        return self.ram_mib // 1024

    @property
    def accelerators_label(self) -> str:
        return ", ".join(f"{a['count']}× {a['type']}" for a in self.accelerators or [])

    @property
    def handoff_estimate_seconds(self) -> int:
        """The fastest safe hand-off to another tenant: key erase where the disks allow it, else
        metadata cleaning (never none: readable data is not handed over). The stored figure where
        one is set (learned or operator-entered), else :mod:`hosts.handoff`'s default estimate."""
        if self.key_erase_capable:
            return self.key_erase_seconds if self.key_erase_seconds is not None else handoff.KEY_ERASE_SECONDS
        return self.metadata_clean_seconds if self.metadata_clean_seconds is not None else handoff.METADATA_SECONDS

    @property
    def full_clean_estimate_seconds(self) -> int:
        """Overwriting every disk: the stored figure, else estimated from the disks (:mod:`hosts.handoff`)."""
        if self.full_clean_seconds is not None:
            return self.full_clean_seconds
        return handoff.full_clean_seconds(self.disks or [])


class HostStateChange(models.Model):
    """A tracked field of a host changed. Append-only (see the module docstring)."""

    FIELDS = [(name, name) for name in (*TRACKED_FIELDS, RETIRED, *CURATED_FIELDS)]

    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="state_changes")
    field = models.CharField(max_length=32, choices=FIELDS)
    old = models.CharField(max_length=320, blank=True)
    new = models.CharField(max_length=320, blank=True)
    at = models.DateTimeField(default=timezone.now, help_text="When the sync saw the change (or an operator made it).")
    reported_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="For status fields: the BareMetalHost's status.lastUpdated with the change, "
        "i.e. when the controller made it (the lab's simulated time in the lab).",
    )
    actor = models.CharField(max_length=254, blank=True, help_text="Who made an operator change (empty: the sync).")
    reason = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["host", "field", "at"], name="host_change_host_field_at")]

    def __str__(self) -> str:
        return f"{self.host_id} {self.field}: {self.old!r} → {self.new!r} at {self.at:%Y-%m-%d %H:%M:%S}"


class SyncCursor(models.Model):
    """Where a follower of the management cluster left off (key ``hosts``: the BMH watch)."""

    key = models.CharField(max_length=64, unique=True)
    resource_version = models.CharField(max_length=64, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.key} @{self.resource_version}"


class HostEnrolment(models.Model):
    """An operator's request to enrol a host, until the gateway has created its Secret and BMH.

    The BMC credentials travel to the worker through this row, sealed (teapot_portal.sealing),
    never through the broker; they are wiped as soon as the management cluster holds them.
    """

    PENDING, APPLIED, FAILED = "pending", "applied", "failed"
    STATES = [(PENDING, "pending"), (APPLIED, "applied"), (FAILED, "failed")]

    name = models.CharField(max_length=242)
    bmc_address = models.CharField(max_length=2048)
    sealed_credentials = models.TextField(blank=True, editable=False)
    boot_mac = models.CharField(max_length=17)
    location = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True)
    key_erase_capable = models.BooleanField(default=False)
    root_device_name = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=16, choices=STATES, default=PENDING)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    requested_by = models.ForeignKey("tenants.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                "name",
                condition=models.Q(state="pending"),
                name="hostenrolment_pending_name_unique",
                violation_error_message="An enrolment of this host is already pending.",
            ),
            models.UniqueConstraint(
                "boot_mac",
                condition=models.Q(state="pending"),
                name="hostenrolment_pending_mac_unique",
                violation_error_message="An enrolment with this boot MAC is already pending.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"


class FleetSettings(models.Model):
    """The operator's settings for the whole fleet: one row (``FleetSettings.load()``).

    * ``topology_levels`` — failure-domain levels from the coarsest, e.g. site > room > row > rack
      (first value: ``TEAPOT_TOPOLOGY_LEVELS``); a level in use by a host's location cannot be
      removed (:func:`hosts.curation.fleet_settings_update`).
    * ``cost_model`` — the weights of :class:`hosts.costs.CostModel` (empty: the MAAS-like
      default, one unit per core and per GiB of RAM).
    * tenancy: the pre-emption notice, the least cleaning a pool may choose, how many failed
      hosts a pool may replace (tenants.provisioning).
    """

    topology_levels = ArrayField(models.CharField(max_length=32), default=list)
    cost_model = models.JSONField(default=dict, blank=True)
    cost_unit = models.CharField(max_length=16, default="units", help_text="What a cost is counted in, e.g. EUR.")
    preemption_notice_seconds = models.PositiveIntegerField(
        default=120,
        help_text="How long a pre-empted host stays with its pool (shown on both tenants' pages) before it goes.",
    )
    minimum_cleaning = models.CharField(
        max_length=16,
        choices=[("standard", "Standard"), ("key_erase", "Key erase allowed")],
        default="key_erase",
        help_text="The least cleaning a node pool may choose: 'standard' forbids key-erase-only pools.",
    )
    provisioning_attempts = models.PositiveSmallIntegerField(
        default=3,
        help_text="Hosts a node pool may replace after they fail to provision, before the pool reports a failure.",
    )
    # Reservations (Chameleon-like defaults: extend within 48 h of the end, at most 7 days long).
    reservation_extend_window_hours = models.PositiveIntegerField(
        default=48, help_text="A reservation may be extended only within this many hours before its end."
    )
    reservation_max_hours = models.PositiveIntegerField(
        default=168, help_text="The longest a single reservation may last, extensions included (hours)."
    )
    reservation_horizon_days = models.PositiveIntegerField(
        default=90, help_text="How far ahead bookings may start, and how far a recurrence is expanded (days)."
    )
    reservation_reminder_minutes = models.PositiveIntegerField(
        default=60, help_text="Members are reminded this long before a reservation ends (page banner, email)."
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=254, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "fleet settings"
        constraints = [models.CheckConstraint(condition=Q(id=1), name="fleetsettings_singleton")]

    def __str__(self) -> str:
        return "Fleet settings"

    @classmethod
    def load(cls) -> FleetSettings:
        from django.conf import settings

        obj = cls.objects.filter(id=1).first()  # created by migration 0004; one query
        if obj is None:
            default_levels = list(getattr(settings, "TEAPOT_TOPOLOGY_LEVELS", ["site", "room", "row", "rack"]))
            obj, _ = cls.objects.get_or_create(id=1, defaults={"topology_levels": default_levels})
        return obj

    def get_cost_model(self):
        from hosts.costs import CostModel

        return CostModel.from_dict(self.cost_model or {})


class TraitRuleQuerySet(models.QuerySet):
    def with_host_counts(self) -> TraitRuleQuerySet:
        """Each rule with ``host_count``: active hosts carrying its trait (one correlated count,
        served by the GIN index on traits)."""
        carrying = (
            Host.objects.filter(retired_at__isnull=True, traits__contains=[OuterRef("name")])
            .order_by()
            .values("retired_at")
            .annotate(n=Count("id"))
            .values("n")
        )
        return self.annotate(host_count=Coalesce(Subquery(carrying, output_field=IntegerField()), Value(0)))


class TraitRule(models.Model):
    """An automatic trait, like a MAAS tag with a definition: hosts whose hardware matches the
    rule (:mod:`hosts.rules`) carry the trait. Saving or deleting a rule reclassifies the fleet."""

    name = models.CharField(max_length=57, unique=True, validators=[TRAIT_NAME])
    rule = models.TextField(help_text='e.g. accelerator(type == "nvidia-a100") or ram_gib >= 512')
    description = models.CharField(max_length=255, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TraitRuleQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from hosts.curation import trait_rule_check

        trait_rule_check(self.rule)


class HostClaim(models.Model):
    """A host taken by an allocation (hosts.selection.hosts_claim). At most one active claim per
    host: a partial unique constraint, so two concurrent allocations can never hold the same host."""

    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="claims")
    holder = models.CharField(max_length=200, help_text="Who holds it, e.g. pool:42 (later issues link it).")
    tenant = models.CharField(max_length=63, blank=True)
    claimed_at = models.DateTimeField(default=timezone.now)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-claimed_at", "id"]
        constraints = [
            models.UniqueConstraint(
                "host",
                condition=Q(released_at__isnull=True),
                name="hostclaim_one_active_per_host",
                violation_error_message="The host is already claimed.",
            )
        ]
        indexes = [
            models.Index(fields=["holder"], condition=Q(released_at__isnull=True), name="hostclaim_active_holder")
        ]

    def __str__(self) -> str:
        return f"{self.host_id} → {self.holder}"


class Flavour(models.Model):
    """A named requirement an operator offers (Nova-style): a convenience, never the only way —
    every page and the API also take a requirement written out."""

    name = models.CharField(max_length=57, unique=True, validators=[TRAIT_NAME])
    description = models.CharField(max_length=255, blank=True)
    requirement = models.JSONField(help_text="The requirement as JSON (hosts.requirements.REQUIREMENT_SCHEMA).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from hosts.requirements import Requirement, RequirementError

        try:
            self.requirement = Requirement.from_json(self.requirement).to_json()
        except RequirementError as exc:
            raise ValidationError({"requirement": exc.message}) from exc

    def get_requirement(self):
        from hosts.requirements import Requirement

        return Requirement.from_json(self.requirement)
