"""Play the Cluster Autoscaler in the lab: ask an autoscaled node pool for N workers.

    python manage.py lab_autoscale physics train gpu 2

A real autoscaler raises ``spec.replicas`` of the pool's MachineDeployment when pods are
pending; Teapot then selects and labels hosts for the Metal3Machines that wait (DESIGN.md,
Autoscaler). The lab has no pods, so this command is the request.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from teapot_portal.gateway.base import GatewayError


class Command(BaseCommand):
    help = "Lab only: set an autoscaled node pool's MachineDeployment replicas, as the Cluster Autoscaler would."

    def add_arguments(self, parser):
        parser.add_argument("tenant")
        parser.add_argument("cluster")
        parser.add_argument("pool")
        parser.add_argument("replicas", type=int)

    def handle(self, *args, tenant, cluster, pool, replicas, **options):
        if settings.TEAPOT_PROVISIONER != "lab":
            raise CommandError("lab_autoscale drives the lab; on a real cluster the Cluster Autoscaler does this.")
        from teapot_portal.gateway.lab.gateway import LabGateway
        from tenants.clusters import reconcile_pool_after_commit
        from tenants.models import NodePool

        found = (
            NodePool.objects.live()
            .select_related("cluster__tenant")
            .filter(cluster__tenant__slug=tenant, cluster__name=cluster, cluster__deleted_at__isnull=True, name=pool)
            .first()
        )
        if found is None:
            raise CommandError(f"no node pool {tenant}/{cluster}/{pool}")
        if not found.autoscaled:
            raise CommandError(f"{tenant}/{cluster}/{pool} has a fixed size; scale it with the page or the API")
        try:
            LabGateway(settings.TEAPOT_NAMESPACE).autoscaler_scale(found.object_name, replicas)
        except GatewayError as exc:
            raise CommandError(str(exc)) from exc
        reconcile_pool_after_commit(found.pk)
        self.stdout.write(f"asked for {replicas} worker(s) in {tenant}/{cluster}/{pool}; Teapot allocates the hosts")
