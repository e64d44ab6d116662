from __future__ import annotations

import logging
import time

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from teapot_portal.models import WorkerHeartbeat

log = logging.getLogger(__name__)


@login_required
def dashboard(request):
    """A tenant member lands on their tenant's dashboard (/t/<slug>/); an operator on the fleet
    and every tenant at a glance; someone in no tenant yet on the welcome page."""
    from tenants.access import current_tenant

    if not request.user.is_staff:
        tenant = current_tenant(request)
        if tenant is not None:
            return redirect("tenant:dashboard", slug=tenant.slug)
    heartbeat = WorkerHeartbeat.objects.filter(source="beat").first()
    context = {"heartbeat": heartbeat}
    if request.user.is_staff:
        context.update(_operator_summary())
    return render(request, "dashboard.html", context)


def _operator_summary() -> dict:
    """The fleet's counts and every tenant's clusters and quota use (constant queries)."""
    from hosts.models import FleetSettings
    from hosts.views import fleet_counts
    from tenants.views_operator import tenants_overview

    counts = fleet_counts()
    return {
        "fleet": counts,
        "fleet_states": [(state, n) for state, n in counts["states"] if n],
        "tenant_rows": tenants_overview(),
        "unit": FleetSettings.load().cost_unit,
    }


@require_GET
@never_cache
def healthz(request):
    """Liveness: the process answers. No I/O, so a slow database never restarts the pod."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not ready"; the type is in the message
        return f"{type(exc).__name__}: {exc}".strip()[:300]
    return None


def _check_broker() -> str | None:
    from teapot_portal.celery import app

    try:
        with app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()[:300]
    return None


@require_GET
@never_cache
def readyz(request):
    """Readiness: database and broker reachable. 503 with a JSON body naming what failed."""
    checks = {}
    for name, check in (("database", _check_database), ("broker", _check_broker)):
        started = time.monotonic()
        error = check()
        checks[name] = {
            "ok": error is None,
            "ms": round((time.monotonic() - started) * 1000, 1),
            **({"error": error} if error else {}),
        }
    failed = [name for name, result in checks.items() if not result["ok"]]
    if failed:
        log.warning("readiness check failed", extra={"failed": ",".join(failed)})
    body = {"status": "unavailable" if failed else "ok", "failed": failed, "checks": checks}
    if settings.DEBUG is False:
        # Error text can name internal hosts; keep it out of unauthenticated responses.
        for result in checks.values():
            result.pop("error", None)
    return JsonResponse(body, status=503 if failed else 200)
