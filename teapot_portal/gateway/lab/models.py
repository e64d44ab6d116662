"""The lab's management cluster, stored in PostgreSQL.

* :class:`LabObject` — every Kubernetes object (BareMetalHosts, Secrets, Cluster API objects),
  with the metadata an API server keeps (uid, resourceVersion, generation, finalizers, owner
  references, deletionTimestamp). ``internal`` is the simulated controllers' private memory
  (phase deadlines, counters): it never appears in the API and never bumps resourceVersion.
* :class:`LabEvent` — the watch log: one row per visible change, in resourceVersion order,
  pruned to a retention window (a watch from before the window raises ``Expired``).
* :class:`LabClock` — the simulated "now" (a persisted singleton).
* :class:`LabHostProfile` — the hardware a host "has": what inspection will find.
* :class:`LabFault` — faults injected on demand (per host or by probability).

resourceVersions come from one PostgreSQL sequence (``lab_resource_version``, created by the
migration) and are taken under a transaction-scoped advisory lock, so they are committed in
the order they were allocated: a watcher that saw resourceVersion N never later finds a
committed change numbered below N.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from teapot_portal.sealing import SealedDataJSONField

RESOURCE_VERSION_SEQUENCE = "lab_resource_version"


class LabObject(models.Model):
    api_version = models.CharField(max_length=100)
    kind = models.CharField(max_length=63)
    namespace = models.CharField(max_length=253)
    name = models.CharField(max_length=253)
    uid = models.UUIDField(default=uuid.uuid4, unique=True)
    resource_version = models.BigIntegerField()
    generation = models.BigIntegerField(default=1)
    labels = models.JSONField(default=dict)
    annotations = models.JSONField(default=dict)
    finalizers = models.JSONField(default=list)
    owner_references = models.JSONField(default=list)
    # The object minus apiVersion/kind/metadata/status: {"spec": …} or, for Secrets, {"type", "data"}.
    # A Secret's values (BMC passwords) are sealed at rest: Teapot's database never holds them in clear.
    body = SealedDataJSONField(default=dict)
    status = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()  # simulated time (creationTimestamp)
    deletion_timestamp = models.DateTimeField(null=True, blank=True)
    # What the last apply() sent ({"labels", "annotations", "body"}): fields dropped from the next
    # apply are removed, fields others set (controllers, metadata patches) are left alone.
    applied = models.JSONField(null=True, blank=True)
    internal = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "namespace", "name"],
                name="lab_object_unique_name",
                violation_error_message="An object of this kind and name already exists in the namespace.",
            )
        ]
        indexes = [models.Index(fields=["kind", "namespace"], name="lab_object_kind_ns")]

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} @{self.resource_version}"


class LabEvent(models.Model):
    ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
    TYPES = [(ADDED, ADDED), (MODIFIED, MODIFIED), (DELETED, DELETED)]

    resource_version = models.BigIntegerField(unique=True)
    type = models.CharField(max_length=8, choices=TYPES)
    kind = models.CharField(max_length=63)
    namespace = models.CharField(max_length=253)
    name = models.CharField(max_length=253)
    object = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)  # real time, for retention by age

    class Meta:
        indexes = [models.Index(fields=["kind", "namespace", "resource_version"], name="lab_event_watch")]

    def __str__(self) -> str:
        return f"{self.resource_version} {self.type} {self.kind} {self.namespace}/{self.name}"


class LabClock(models.Model):
    """The simulated "now". Tests move it with :meth:`advance`; the ``teapot.lab.tick`` task
    moves it by real elapsed time * ``TEAPOT_LAB_SPEED`` (:meth:`sync`)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    current = models.DateTimeField()
    real_anchor = models.DateTimeField(null=True, blank=True)  # real time of the last sync
    # The highest resourceVersion pruned from the watch log: watches from before it are Expired.
    compacted_rv = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"lab clock {self.current:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def get(cls) -> LabClock:
        start = timezone.now().replace(microsecond=0)
        clock, _ = cls.objects.get_or_create(pk=1, defaults={"current": start})
        return clock

    def now(self) -> datetime:
        """The simulated time, as stored (another worker may have moved it)."""
        self.current = LabClock.objects.values_list("current", flat=True).get(pk=self.pk)
        return self.current

    def advance(self, seconds: float) -> datetime:
        LabClock.objects.filter(pk=self.pk).update(current=F("current") + timedelta(seconds=seconds))
        return self.now()

    def sync(self, speed: float) -> float:
        """Advance by the real time elapsed since the last sync * ``speed``; simulated seconds moved.

        Two workers syncing at once: the row lock makes the second see the first's anchor, so
        real time is counted once.
        """
        with transaction.atomic():
            clock = LabClock.objects.select_for_update().get(pk=self.pk)
            real_now = timezone.now()
            moved = 0.0
            if clock.real_anchor is not None and real_now > clock.real_anchor:
                moved = (real_now - clock.real_anchor).total_seconds() * max(speed, 0.0)
                clock.current += timedelta(seconds=moved)
            clock.real_anchor = real_now
            clock.save(update_fields=["current", "real_anchor"])
        self.current, self.real_anchor = clock.current, clock.real_anchor
        return moved


class LabHostProfile(models.Model):
    """The hardware behind a lab BareMetalHost (by host name): what inspection reports."""

    name = models.CharField(max_length=253, unique=True)  # the BareMetalHost's name
    profile = models.CharField(max_length=63, blank=True)  # catalogue key (profiles.CATALOGUE) or ""
    hardware = models.JSONField()  # the BMH status.hardware shape
    accelerators = models.JSONField(default=list)  # [{"type": "nvidia-a100", "count": 8}]
    encrypted_disks = models.BooleanField(default=False)  # per-tenant key: hand-off by key erase
    bmc_reachable = models.BooleanField(default=True)  # False: registration never succeeds
    full_erase = models.BooleanField(default=False)  # Ironic wipes whole disks, not just metadata

    def __str__(self) -> str:
        return f"{self.name} ({self.profile or 'custom'})"


class LabFault(models.Model):
    BMC_UNREACHABLE = "bmc_unreachable"
    INSPECTION_ERROR = "inspection_error"
    PROVISIONING_ERROR = "provisioning_error"
    POWER_ERROR = "power_error"
    SLOW = "slow"
    KINDS = [
        (BMC_UNREACHABLE, "BMC unreachable (registration and power fail)"),
        (INSPECTION_ERROR, "inspection fails"),
        (PROVISIONING_ERROR, "provisioning fails"),
        (POWER_ERROR, "power changes fail"),
        (SLOW, "everything takes longer (multiplier)"),
    ]

    kind = models.CharField(max_length=32, choices=KINDS)
    host = models.CharField(max_length=253, blank=True, help_text="BareMetalHost name; empty: every host")
    probability = models.FloatField(null=True, blank=True, help_text="chance per attempt; empty: always")
    remaining = models.PositiveIntegerField(null=True, blank=True, help_text="times left; empty: until cleared")
    multiplier = models.FloatField(default=3.0, help_text="for 'slow': durations are multiplied by this")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(probability__isnull=True) | models.Q(probability__gte=0, probability__lte=1),
                name="lab_fault_probability_range",
            ),
            models.CheckConstraint(condition=models.Q(multiplier__gt=0), name="lab_fault_multiplier_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} on {self.host or 'all hosts'}"
