from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from teapot_portal.gateway import GatewayError
from teapot_portal.gateway.factory import get_gateway
from teapot_portal.gateway.manifests import collect, to_yaml


class Command(BaseCommand):
    help = (
        "Print every management-cluster object Teapot wants (desired state, no status) as one "
        "multi-document YAML stream, for review or GitOps. Secret values are never printed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="only this tenant's objects (slug)")
        parser.add_argument("--cluster", help="only this cluster's objects (name within the tenant)")

    def handle(self, *args, tenant=None, cluster=None, **options):
        if cluster and not tenant:
            raise CommandError("--cluster needs --tenant (cluster names are unique per tenant)")
        try:
            objects = collect(get_gateway(), tenant=tenant, cluster=cluster)
        except GatewayError as exc:
            raise CommandError(f"could not read the management cluster: {exc}") from exc
        self.stdout.write(to_yaml(objects), ending="")
        self.stderr.write(f"# {len(objects)} object(s)")
