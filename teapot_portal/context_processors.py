from __future__ import annotations

from django.conf import settings


def teapot(request):
    return {
        "TEAPOT_DEMO": settings.TEAPOT_DEMO,
        "TEAPOT_PROVISIONER": settings.TEAPOT_PROVISIONER,
    }
