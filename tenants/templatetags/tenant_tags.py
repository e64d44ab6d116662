"""The navigation's tenant switcher and small formatting filters of the tenant pages."""

from __future__ import annotations

from django import template

from tenants.access import SESSION_KEY

register = template.Library()

SWITCHER_SHOWN = 12  # operators see every tenant: the first few, then a link to them all


@register.simple_tag(takes_context=True)
def tenant_nav(context) -> dict:
    """The tenants the person can switch to and the one they are working in (one query; the
    same choice as tenants.access.current_tenant). Cached on the request: the layout asks twice."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if request is None or user is None or not user.is_authenticated:
        return {"current": None, "tenants": [], "more": False}
    found = getattr(request, "_tenant_nav", None)
    if found is not None:
        return found
    from tenants.models import Tenant

    visible = list(Tenant.objects.visible_to(user).only("slug", "name").order_by("slug")[: SWITCHER_SHOWN + 1])
    more = len(visible) > SWITCHER_SHOWN
    visible = visible[:SWITCHER_SHOWN]
    chosen = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    current = next((t for t in visible if t.slug == chosen), None)
    if current is None and chosen and user.is_staff:
        current = Tenant.objects.visible_to(user).filter(slug=chosen).only("slug", "name").first()
    if current is None and not user.is_staff and visible:
        current = visible[0]
    found = {"current": current, "tenants": visible, "more": more}
    request._tenant_nav = found
    return found


@register.filter
def countdown(seconds) -> str:
    """105 → '1:45'; 3725 → '1:02:05'."""
    if seconds in (None, ""):
        return ""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@register.filter
def ago(moment) -> str:
    """How long ago, in a few characters: 'just now', '12 min', '3 h 5 min', '2 d'."""
    if not moment:
        return ""
    from django.utils import timezone

    seconds = max(0, int((timezone.now() - moment).total_seconds()))
    if seconds < 60:
        return "just now"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min ago" if minutes else f"{hours} h ago"
    return f"{hours // 24} d ago"


@register.filter
def percent(value) -> str:
    """A width for style attributes: always a dot as the decimal separator."""
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return "0"


@register.filter
def audit_value(value) -> str:
    """A value of an audit entry's before/after, in a few words."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, "", [], {})) or "—"
    return str(value)
