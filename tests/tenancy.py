"""Tenancy test data, around the named people of STYLE.md §9: alice owns physics, bob views it,
carol owns genomics, olga operates. Built through the services, as the demo seed is.

``catalogue()`` — quota classes (general, gpu-a100, highmem), Kubernetes versions, OS images.
``tenancy()`` — catalogue + physics and genomics with members and quotas; returns a namespace.
"""

from __future__ import annotations

from types import SimpleNamespace

from tenants.models import KubernetesVersion, Membership, OsImage, Quota, QuotaClass, Role, Tenant
from tenants.services import user_ensure

DEMO_PASSWORD = "teapot-demo"
CLASSES = {
    "general": ({"forbidden": ["gpu", "fpga"]}, "Compute without accelerators", 0),
    "gpu-a100": ({"accelerators": [{"type": "nvidia-a100", "count": 1}]}, "NVIDIA A100 GPU servers", 1),
    "highmem": ({"traits": ["highmem"], "forbidden": ["gpu"]}, "512 GiB of RAM or more", 2),
}
IMAGE_CHECKSUM = "4f1c0d0b5bb0e1d4b0f2a1cfd1c9d1b8f9e1a2b3c4d5e6f708192a3b4c5d6e7f"


def catalogue() -> SimpleNamespace:
    classes = {}
    for name, (requirement, description, order) in CLASSES.items():
        classes[name], _ = QuotaClass.objects.update_or_create(
            name=name, defaults={"requirement": requirement, "description": description, "order": order}
        )
    v131, _ = KubernetesVersion.objects.update_or_create(version="v1.31.4", defaults={"is_default": True})
    v130, _ = KubernetesVersion.objects.update_or_create(version="v1.30.8", defaults={"is_default": False})
    image, _ = OsImage.objects.update_or_create(
        name="ubuntu-24.04-k8s-1.31",
        defaults={
            "url": "http://images.teapot.example/ubuntu-24.04-k8s-1.31.qcow2",
            "checksum": IMAGE_CHECKSUM,
            "kubernetes_version": v131,
        },
    )
    return SimpleNamespace(classes=classes, v131=v131, v130=v130, image=image)


def person(email: str, *, staff: bool = False):
    user, _ = user_ensure(email=email, password=DEMO_PASSWORD, is_staff=staff, first_name=email.split("@")[0].title())
    return user


def member(tenant: Tenant, user, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(tenant=tenant, user=user, defaults={"role": role})
    return membership


def quota(tenant: Tenant, klass: QuotaClass, guaranteed: int, maximum: int) -> Quota:
    row, _ = Quota.objects.update_or_create(
        tenant=tenant, quota_class=klass, defaults={"guaranteed": guaranteed, "maximum": maximum}
    )
    return row


def tenancy() -> SimpleNamespace:
    """physics (alice owner, bob viewer, dave member) and genomics (carol owner), with quotas."""
    cat = catalogue()
    physics, _ = Tenant.objects.get_or_create(slug="physics", defaults={"name": "Physics", "priority": 10})
    genomics, _ = Tenant.objects.get_or_create(slug="genomics", defaults={"name": "Genomics", "priority": 5})
    alice, bob, carol, dave = (
        person("alice@physics.example"),
        person("bob@physics.example"),
        person("carol@genomics.example"),
        person("dave@physics.example"),
    )
    olga = person("olga@teapot.example", staff=True)
    member(physics, alice, Role.OWNER)
    member(physics, bob, Role.VIEWER)
    member(physics, dave, Role.MEMBER)
    member(genomics, carol, Role.OWNER)
    quota(physics, cat.classes["general"], 2, 8)
    quota(physics, cat.classes["gpu-a100"], 1, 4)
    quota(genomics, cat.classes["general"], 2, 6)
    quota(genomics, cat.classes["highmem"], 0, 2)
    return SimpleNamespace(
        **vars(cat), physics=physics, genomics=genomics, alice=alice, bob=bob, carol=carol, dave=dave, olga=olga
    )
