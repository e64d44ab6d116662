"""Demo tenants (``make run``, demo mode only): four departments with members, quotas, a
catalogue and a few clusters in different states — all created through the services, so the
reconciles then provision them in the lab like anything a person creates.

* physics — alice (owner), bob (viewer); cluster ``vision``: 2 A100 hosts + 3 general workers.
* genomics — carol (owner); cluster ``seq`` with KubeVirt: 2 high-memory workers.
* ml-research — maya (owner); cluster ``train``: an autoscaled GPU pool, idle at zero workers.
* finance — frank (owner); cluster ``risk`` with Kata Containers: a control plane only.

Quotas are written directly rather than through the admission check: at seed time the demo
fleet is still being enrolled and inspected, so no guarantee could be admitted yet. They fit
the demo fleet once it is up (docs/tenancy.md); operators' changes are always admitted.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from tenants.models import KubernetesVersion, Membership, OsImage, Quota, QuotaClass, Role, Tenant

DEMO_PASSWORD = "teapot-demo"  # noqa: S105 (public by design, demo mode only)
CLASSES = [
    ("general", {"forbidden": ["gpu", "fpga"]}, "Compute servers without accelerators"),
    ("gpu-a100", {"accelerators": [{"type": "nvidia-a100", "count": 1}]}, "NVIDIA A100 GPU servers"),
    ("highmem", {"traits": ["highmem"], "forbidden": ["gpu"]}, "512 GiB of RAM or more"),
]
VERSIONS = [("v1.31.4", True), ("v1.30.8", False)]
IMAGES = [
    ("ubuntu-24.04-k8s-1.31", "v1.31.4", "c0ffee" * 10 + "beef"),
    ("ubuntu-24.04-k8s-1.30", "v1.30.8", "facade" * 10 + "feed"),
]
TENANTS = [
    ("physics", "Physics", 10, [("alice@physics.example", Role.OWNER), ("bob@physics.example", Role.VIEWER)]),
    ("genomics", "Genomics", 5, [("carol@genomics.example", Role.OWNER)]),
    ("ml-research", "Machine-learning research", 5, [("maya@ml-research.example", Role.OWNER)]),
    ("finance", "Finance", 0, [("frank@finance.example", Role.OWNER)]),
]
QUOTAS = {
    "physics": {"general": (8, 24), "gpu-a100": (2, 6)},
    "genomics": {"general": (8, 20), "highmem": (4, 8)},
    "ml-research": {"gpu-a100": (4, 8), "general": (2, 8)},
    "finance": {"general": (4, 12)},
}


def seed_demo_catalogue() -> None:
    for order, (name, requirement, description) in enumerate(CLASSES):
        QuotaClass.objects.get_or_create(
            name=name, defaults={"requirement": requirement, "description": description, "order": order}
        )
    for version, default in VERSIONS:
        KubernetesVersion.objects.get_or_create(version=version, defaults={"is_default": default})
    for name, version, checksum in IMAGES:
        OsImage.objects.get_or_create(
            name=name,
            defaults={
                "url": f"http://images.lab.teapot.example/{name}.qcow2",
                "checksum": checksum,
                "kubernetes_version": KubernetesVersion.objects.get(version=version),
            },
        )


def seed_demo_tenants(*, operator=None) -> list[str]:
    """Idempotent: what exists is kept. Returns what was created, in words."""
    from tenants.clusters import cluster_create, node_pool_create
    from tenants.services import tenant_create, user_ensure

    seed_demo_catalogue()
    made = []
    for slug, name, priority, people in TENANTS:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            tenant = tenant_create(slug=slug, name=name, priority=priority, actor=operator)
            made.append(f"tenant {slug}")
        for email, role in people:
            user, _ = user_ensure(email=email, password=DEMO_PASSWORD, first_name=email.split("@")[0].title())
            Membership.objects.get_or_create(tenant=tenant, user=user, defaults={"role": role})
        for class_name, (guaranteed, maximum) in QUOTAS[slug].items():
            Quota.objects.get_or_create(
                tenant=tenant,
                quota_class=QuotaClass.objects.get(name=class_name),
                defaults={"guaranteed": guaranteed, "maximum": maximum},
            )

    def cluster(slug: str, name: str, owner: str, **fields):
        tenant = Tenant.objects.get(slug=slug)
        found = tenant.clusters.filter(name=name, deleted_at__isnull=True).first()
        if found is not None:
            return found, False
        from tenants.models import User

        made.append(f"cluster {slug}/{name}")
        return cluster_create(tenant=tenant, name=name, actor=User.objects.get(email=owner), **fields), True

    image = OsImage.objects.get(name="ubuntu-24.04-k8s-1.31")
    try:
        vision, new = cluster("physics", "vision", "alice@physics.example", addons=[])
        if new:
            node_pool_create(cluster=vision, name="gpu", quota_class="gpu-a100", image=image, replicas=2)
            node_pool_create(
                cluster=vision,
                name="cpu",
                quota_class="general",
                image=image,
                replicas=3,
                policy={"mode": "spread", "level": "rack", "hard": False},
            )
        seq, new = cluster("genomics", "seq", "carol@genomics.example", addons=["kubevirt"])
        if new:
            node_pool_create(cluster=seq, name="mem", quota_class="highmem", image=image, replicas=2)
        train, new = cluster("ml-research", "train", "maya@ml-research.example")
        if new:
            node_pool_create(
                cluster=train,
                name="gpu",
                quota_class="gpu-a100",
                image=image,
                replicas=None,
                autoscale_min=0,
                autoscale_max=4,
                workload_class="preemptible",
            )
        cluster("finance", "risk", "frank@finance.example", addons=["kata"])
    except ValidationError as exc:  # e.g. the control-plane address pool is exhausted
        made.append(f"demo clusters incomplete: {exc}")
    return made
