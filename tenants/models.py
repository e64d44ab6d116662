from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.contrib.postgres.fields import ArrayField
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra):
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra.update(is_staff=True, is_superuser=True)
        return self._create_user(email, password, **extra)


class User(AbstractUser):
    """A person. Identified by email; operators are staff users."""

    username = None
    email = models.EmailField("email address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                Lower("email"), name="user_email_ci_unique", violation_error_message="A user with this email exists."
            )
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def is_operator(self) -> bool:
        return self.is_staff


def hash_token(plaintext: str) -> str:
    # Tokens carry 256 bits of randomness, so a plain SHA-256 is enough to make the stored
    # value useless to a reader of the database; no slow KDF needed per request.
    return hashlib.sha256(plaintext.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        from django.utils import timezone

        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=timezone.now())
        )


class ApiToken(models.Model):
    """A personal API token. Only its hash is stored; the plaintext is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'CI pipeline'.")
    prefix = models.CharField(max_length=12, help_text="The token's first characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    tenant = models.ForeignKey(
        "Tenant",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_tokens",
        help_text="A tenant token acts only within this tenant (automation); blank: everything its user may do.",
    )

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                "user",
                "name",
                condition=models.Q(revoked_at__isnull=True),
                name="apitoken_active_name_unique",
                violation_error_message="You already have an active token with this name.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        from django.utils import timezone

        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())


# =============================================================================== tenancy
#
# Object names in the management cluster carry the tenant, cluster and pool names
# ("<tenant>-<cluster>-<pool>-<hash8>", a MachineDeployment name is a DNS label of at most 63),
# so the three are short DNS labels: 20 + 20 + 12 characters.

DNS_LABEL = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
DNS_LABEL_MESSAGE = "Lowercase letters, digits and '-', starting and ending with a letter or digit."
TENANT_SLUG = RegexValidator(DNS_LABEL, DNS_LABEL_MESSAGE)
TENANT_SLUG_MAX, CLUSTER_NAME_MAX, POOL_NAME_MAX = 20, 20, 12
# Path segments the pages use next to a tenant slug, a cluster or a pool name (/t/operator/,
# /t/<slug>/clusters/new/, …/pools/preview/): no tenant, cluster or pool may be named so.
RESERVED_NAMES = frozenset({"operator", "switch", "static", "new", "preview"})


class Role(models.TextChoices):
    OWNER = "owner", "Owner"  # manages members and everything below
    MEMBER = "member", "Member"  # creates and scales clusters and bookings
    VIEWER = "viewer", "Viewer"  # reads


WRITE_ROLES = (Role.OWNER, Role.MEMBER)


class TenantQuerySet(models.QuerySet):
    def visible_to(self, user, *, token: ApiToken | None = None) -> TenantQuerySet:
        """The tenants ``user`` may see: every tenant for an operator, else their memberships;
        a tenant-scoped API token narrows it to its one tenant (tenants.access)."""
        if user is None or not user.is_authenticated:
            return self.none()
        qs = self if user.is_staff else self.filter(memberships__user=user)
        if token is not None and token.tenant_id is not None:
            qs = qs.filter(pk=token.tenant_id)
        return qs.distinct() if not user.is_staff else qs


class Tenant(models.Model):
    """A department: it rents whole servers as the workers of its clusters, within its quota."""

    slug = models.CharField(
        max_length=TENANT_SLUG_MAX,
        unique=True,
        validators=[TENANT_SLUG],
        help_text="Short name used in URLs and in object names in the management cluster (e.g. physics).",
    )
    name = models.CharField(max_length=100, help_text="The department's name, e.g. Physics.")
    description = models.CharField(max_length=255, blank=True)
    priority = models.IntegerField(
        default=0, help_text="Higher wins: when hosts must be pre-empted, lower-priority tenants' hosts go first."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name or self.slug


class Membership(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant__slug", "user__email"]
        constraints = [
            models.UniqueConstraint(
                "tenant", "user", name="membership_unique", violation_error_message="This person is already a member."
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant.slug} ({self.role})"

    @property
    def can_write(self) -> bool:
        return self.role in WRITE_ROLES


# =============================================================================== quota


class QuotaClass(models.Model):
    """A class of hardware quota is counted in: a named requirement ("general", "gpu-a100").

    Every node pool belongs to one class and gets only hosts meeting the class's requirement
    (and the pool's own, if it adds one)."""

    name = models.CharField(max_length=40, unique=True, validators=[TENANT_SLUG])
    description = models.CharField(max_length=255, blank=True)
    requirement = models.JSONField(help_text="The requirement as JSON (hosts.requirements.REQUIREMENT_SCHEMA).")
    order = models.IntegerField(default=0, help_text="Where the class appears in lists and quota bars.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "name"]
        verbose_name_plural = "quota classes"

    def __str__(self) -> str:
        return self.name

    def get_requirement(self):
        from hosts.requirements import Requirement

        return Requirement.from_json(self.requirement)


class Quota(models.Model):
    """A tenant's share of one class: ``guaranteed`` hosts are always obtainable (others' use of
    them is pre-empted); ``maximum`` caps what it holds, borrowing included."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="quotas")
    quota_class = models.ForeignKey(QuotaClass, on_delete=models.PROTECT, related_name="quotas")
    guaranteed = models.PositiveIntegerField(default=0)
    maximum = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant__slug", "quota_class__order", "quota_class__name"]
        constraints = [
            models.UniqueConstraint(
                "tenant",
                "quota_class",
                name="quota_unique",
                violation_error_message="This tenant already has a quota for this class.",
            ),
            models.CheckConstraint(
                condition=Q(guaranteed__lte=models.F("maximum")),
                name="quota_guaranteed_within_maximum",
                violation_error_message="The guaranteed minimum cannot exceed the maximum.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.quota_class.name}: {self.guaranteed}–{self.maximum}"


# =============================================================================== catalogue


class KubernetesVersion(models.Model):
    """A version tenants may choose for a cluster (operator-maintained)."""

    version = models.CharField(max_length=32, unique=True, help_text="e.g. v1.31.4")
    available = models.BooleanField(default=True, help_text="Offered for new clusters.")
    is_default = models.BooleanField(default=False)
    notes = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(
                "is_default",
                condition=Q(is_default=True),
                name="kubernetesversion_one_default",
                violation_error_message="Only one version can be the default.",
            )
        ]

    def __str__(self) -> str:
        return self.version


class OsImage(models.Model):
    """An operating-system image node pools boot (operator-maintained)."""

    class ChecksumType(models.TextChoices):
        SHA256 = "sha256"
        SHA512 = "sha512"
        MD5 = "md5"

    class Format(models.TextChoices):
        QCOW2 = "qcow2"
        RAW = "raw"
        VDI = "vdi"
        VMDK = "vmdk"
        LIVE_ISO = "live-iso"

    name = models.CharField(max_length=63, unique=True, help_text="e.g. ubuntu-24.04-k8s-1.31")
    url = models.CharField(max_length=2048, help_text="http(s)://, file:// or oci://")
    checksum = models.CharField(max_length=256, blank=True, help_text="The checksum, or a URL of a checksum file.")
    checksum_type = models.CharField(max_length=8, choices=ChecksumType.choices, default=ChecksumType.SHA256)
    format = models.CharField(max_length=8, choices=Format.choices, default=Format.QCOW2)
    kubernetes_version = models.ForeignKey(
        KubernetesVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="images",
        help_text="The kubelet the image carries (blank: any version).",
    )
    available = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "OS image"

    def __str__(self) -> str:
        return self.name


# =============================================================================== clusters


class ClusterQuerySet(models.QuerySet):
    def visible_to(self, user, *, token: ApiToken | None = None) -> ClusterQuerySet:
        return self.filter(tenant__in=Tenant.objects.visible_to(user, token=token))

    def live(self) -> ClusterQuerySet:
        return self.filter(deleted_at__isnull=True)


class Cluster(models.Model):
    """A tenant's Kubernetes cluster: a hosted control plane (KamajiControlPlane, pods in the
    management cluster — no servers) and node pools of bare-metal workers."""

    class Phase(models.TextChoices):
        PENDING = "pending", "Pending"
        PROVISIONING = "provisioning", "Provisioning"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        DELETING = "deleting", "Deleting"
        DELETED = "deleted", "Deleted"

    class Addon(models.TextChoices):
        KUBEVIRT = "kubevirt", "KubeVirt (virtual machines)"
        KATA = "kata", "Kata Containers (sandboxed pods)"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="clusters")
    name = models.CharField(max_length=CLUSTER_NAME_MAX, validators=[TENANT_SLUG])
    kubernetes_version = models.ForeignKey(KubernetesVersion, on_delete=models.PROTECT, related_name="clusters")
    control_plane_replicas = models.PositiveSmallIntegerField(default=2)
    addons = ArrayField(models.CharField(max_length=16, choices=Addon.choices), default=list, blank=True)
    endpoint_host = models.GenericIPAddressField(null=True, blank=True, help_text="The control plane's address.")
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.PENDING)
    message = models.CharField(max_length=500, blank=True)
    control_plane_ready = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = ClusterQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__slug", "name"]
        constraints = [
            models.UniqueConstraint(
                "tenant",
                "name",
                condition=Q(deleted_at__isnull=True),
                name="cluster_live_name_unique",
                violation_error_message="This tenant already has a cluster with this name.",
            ),
            models.UniqueConstraint(
                "endpoint_host",
                condition=Q(deleted_at__isnull=True),
                name="cluster_live_endpoint_unique",
                violation_error_message="The control-plane address is in use.",
            ),
            models.CheckConstraint(
                condition=Q(control_plane_replicas__gte=1, control_plane_replicas__lte=5),
                name="cluster_control_plane_replicas_1_to_5",
                violation_error_message="Control-plane replicas must be between 1 and 5.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"

    @property
    def object_name(self) -> str:
        """The Cluster object's name in the management cluster."""
        return f"{self.tenant.slug}-{self.name}"


class NodePoolQuerySet(models.QuerySet):
    def visible_to(self, user, *, token: ApiToken | None = None) -> NodePoolQuerySet:
        return self.filter(cluster__tenant__in=Tenant.objects.visible_to(user, token=token))

    def live(self) -> NodePoolQuerySet:
        return self.filter(deleted_at__isnull=True)


class NodePool(models.Model):
    """Bare-metal workers of one kind: one MachineDeployment. Fixed size (``replicas``) or
    autoscaled between ``autoscale_min`` and ``autoscale_max``; zero is a valid size."""

    class Cleaning(models.TextChoices):
        STANDARD = "standard", "Standard (wipe disk metadata)"
        KEY_ERASE = "key_erase", "Key erase (encrypted disks: erase the key, ~1 minute)"

    class WorkloadClass(models.TextChoices):
        GUARANTEED = "guaranteed", "Guaranteed (within the tenant's guarantee; never pre-empted)"
        ON_DEMAND = "on_demand", "On demand (may borrow beyond the guarantee; borrowed hosts can be reclaimed)"
        PREEMPTIBLE = "preemptible", "Pre-emptible (spot: the first to go when others need the hosts)"

    class Phase(models.TextChoices):
        PENDING = "pending", "Pending"
        SCALING = "scaling", "Scaling"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        DELETING = "deleting", "Deleting"
        DELETED = "deleted", "Deleted"

    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="node_pools")
    name = models.CharField(max_length=POOL_NAME_MAX, validators=[TENANT_SLUG])
    uid = models.CharField(max_length=40, unique=True, help_text="The teapot.io/node-pool label value.")
    quota_class = models.ForeignKey(QuotaClass, on_delete=models.PROTECT, related_name="node_pools")
    requirement = models.JSONField(default=dict, blank=True, help_text="More than the class asks, if anything.")
    policy = models.JSONField(default=dict, blank=True, help_text="Placement policy (hosts.allocator.Policy).")
    image = models.ForeignKey(OsImage, on_delete=models.PROTECT, related_name="node_pools")
    cleaning = models.CharField(max_length=16, choices=Cleaning.choices, default=Cleaning.STANDARD)
    workload_class = models.CharField(max_length=16, choices=WorkloadClass.choices, default=WorkloadClass.ON_DEMAND)
    replicas = models.PositiveIntegerField(default=0, help_text="The size of a fixed pool.")
    autoscale_min = models.PositiveIntegerField(null=True, blank=True)
    autoscale_max = models.PositiveIntegerField(null=True, blank=True)
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.PENDING)
    message = models.CharField(max_length=500, blank=True)
    desired = models.PositiveIntegerField(default=0, help_text="What the pool should have now (autoscaler's say).")
    ready = models.PositiveIntegerField(default=0, help_text="Workers with a Ready node.")
    replacements = models.PositiveIntegerField(default=0, help_text="Hosts replaced after failing to provision.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = NodePoolQuerySet.as_manager()

    class Meta:
        ordering = ["cluster__tenant__slug", "cluster__name", "name"]
        constraints = [
            models.UniqueConstraint(
                "cluster",
                "name",
                condition=Q(deleted_at__isnull=True),
                name="nodepool_live_name_unique",
                violation_error_message="This cluster already has a node pool with this name.",
            ),
            models.CheckConstraint(
                condition=Q(autoscale_min__isnull=True, autoscale_max__isnull=True)
                | Q(
                    autoscale_min__isnull=False,
                    autoscale_max__isnull=False,
                    autoscale_min__lte=models.F("autoscale_max"),
                ),
                name="nodepool_autoscale_bounds",
                violation_error_message="Autoscaling needs both a minimum and a maximum, minimum ≤ maximum.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.cluster}/{self.name}"

    @property
    def autoscaled(self) -> bool:
        return self.autoscale_min is not None

    @property
    def tenant(self) -> Tenant:
        return self.cluster.tenant

    @property
    def object_name(self) -> str:
        return f"{self.cluster.object_name}-{self.name}"

    @property
    def holder(self) -> str:
        """The HostClaim holder of this pool's hosts."""
        return f"pool:{self.uid}"

    def get_requirement(self):
        """The class's requirement and the pool's own, together."""
        from hosts.requirements import Requirement

        base = self.quota_class.get_requirement()
        return base.merge(Requirement.from_json(self.requirement)) if self.requirement else base


class PoolHost(models.Model):
    """A host allocated to a node pool, from the claim to the release.

    ``guaranteed``: counted within the tenant's guarantee (never pre-empted); otherwise borrowed.
    ``preempt_at``: the host was chosen as a victim and leaves the pool at that time (notice)."""

    class State(models.TextChoices):
        ALLOCATED = "allocated", "Allocated"  # claimed and labelled for the pool; waiting for a machine
        PROVISIONING = "provisioning", "Provisioning"
        READY = "ready", "Ready"
        RELEASING = "releasing", "Releasing"  # deprovisioning / cleaning
        RELEASED = "released", "Released"
        FAILED = "failed", "Failed"  # failed to provision; replaced

    pool = models.ForeignKey(NodePool, on_delete=models.PROTECT, related_name="pool_hosts")
    host = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="pool_hosts")
    claim = models.OneToOneField("hosts.HostClaim", on_delete=models.PROTECT, related_name="pool_host")
    state = models.CharField(max_length=16, choices=State.choices, default=State.ALLOCATED)
    guaranteed = models.BooleanField(default=False)
    preempt_at = models.DateTimeField(null=True, blank=True)
    preempted_for = models.ForeignKey(
        NodePool, null=True, blank=True, on_delete=models.SET_NULL, related_name="preempting"
    )
    message = models.CharField(max_length=500, blank=True)
    allocated_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pool_id", "host__name"]
        constraints = [
            models.UniqueConstraint(
                "host",
                condition=Q(released_at__isnull=True),
                name="poolhost_one_live_per_host",
                violation_error_message="The host already belongs to a pool.",
            )
        ]
        indexes = [models.Index(fields=["pool"], condition=Q(released_at__isnull=True), name="poolhost_live_pool")]

    def __str__(self) -> str:
        return f"{self.host_id} in {self.pool_id} ({self.state})"


# =============================================================================== audit


class AuditEntry(models.Model):
    """Every change: who, what, when, before and after. Append-only (a trigger refuses UPDATE
    and DELETE); secrets are never recorded (tenants.audit strips them)."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    # No database constraint on who and which tenant: the log outlives both (append-only), and
    # ``actor_label`` keeps the who in words.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_label = models.CharField(max_length=254, blank=True, help_text="Who, in words (email, 'system', a token).")
    tenant = models.ForeignKey(
        Tenant,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="audit_entries",
    )
    action = models.CharField(max_length=64, help_text="e.g. cluster.create, node_pool.scale, quota.update")
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=255, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["tenant", "-at"], name="auditentry_tenant_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.target_repr}"


# =============================================================================== API idempotency

IDEMPOTENCY_TTL_HOURS = 24


class IdempotencyKey(models.Model):
    """The first response to a create sent with an ``Idempotency-Key`` header, replayed when a
    client retries the same request with the same key (tenants.api).

    Retention: a key is honoured for ``IDEMPOTENCY_TTL_HOURS`` (24 h) after its first use; after
    that it is ignored, may be reused for a new request, and its row is purged the next time its
    user sends a key. Only successful responses are kept (a refused request leaves nothing, so a
    retry is judged afresh), and only from creates whose responses carry no secrets."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_keys")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=1024)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the request body (canonical JSON).")
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                "user", "key", name="idempotencykey_user_key_unique", violation_error_message="This key is in use."
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key} {self.method} {self.path}"
