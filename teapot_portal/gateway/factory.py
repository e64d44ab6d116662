"""Which gateway this process uses: ``TEAPOT_PROVISIONER=lab`` (default) or ``kubernetes``."""

from __future__ import annotations

from django.conf import settings

from teapot_portal.gateway.base import Gateway


def get_gateway() -> Gateway:
    if settings.TEAPOT_PROVISIONER == "kubernetes":
        from teapot_portal.gateway.kube import KubernetesGateway

        return KubernetesGateway.from_settings()
    from teapot_portal.gateway.lab.gateway import LabGateway

    return LabGateway(settings.TEAPOT_NAMESPACE)
