from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from teapot_portal.gateway import GatewayError


class Command(BaseCommand):
    help = "Check the management cluster: reachable, CRDs at the expected versions, RBAC sufficient."

    def handle(self, *args, **options):
        if settings.TEAPOT_PROVISIONER != "kubernetes":
            self.stdout.write(
                "TEAPOT_PROVISIONER=lab: the simulated management cluster lives in Teapot's own database; "
                "set TEAPOT_PROVISIONER=kubernetes and KUBECONFIG to check a real one."
            )
            return
        from teapot_portal.gateway.kube import KubernetesGateway

        try:
            gateway = KubernetesGateway.from_settings()
        except Exception as exc:  # kubeconfig missing/unreadable, not in a cluster…
            raise CommandError(
                f"cannot load the cluster configuration ({exc}); set KUBECONFIG or run in-cluster"
            ) from exc
        gateway.retries = 1
        try:
            results = gateway.check()
        except GatewayError as exc:
            raise CommandError(str(exc)) from exc
        failed = 0
        for name, ok, message in results:
            failed += not ok
            mark = self.style.SUCCESS("ok  ") if ok else self.style.ERROR("FAIL")
            self.stdout.write(f"{mark} {name}: {message}")
        self.stdout.write(f"namespace: {gateway.namespace}")
        if failed:
            raise CommandError(f"{failed} check(s) failed; see docs/management-cluster.md")
