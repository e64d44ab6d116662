"""Shared API plumbing: one error shape for every endpoint, and the /api/v1/me/ view."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    """Every API error is ``{"error": {"code", "message", "details"}}``."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    code = getattr(exc, "default_code", "error")
    if isinstance(data, dict) and set(data) == {"detail"}:
        message, details = str(data["detail"]), {}
        code = getattr(data["detail"], "code", code)
    else:
        message, details = "The request is not valid.", data
    response.data = {"error": {"code": code, "message": message, "details": details}}
    return response


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField(help_text="Per field: a list of messages (or what the operation says).")


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API (teapot_portal.api.exception_handler)."""

    error = ErrorBodySerializer()


class TenantMembershipSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    role = serializers.CharField()


class MeSerializer(serializers.Serializer):
    email = serializers.EmailField()
    name = serializers.CharField()
    is_operator = serializers.BooleanField()
    tenants = TenantMembershipSerializer(many=True)


class MeView(APIView):
    """Who am I? The authenticated user and the tenants they belong to."""

    @extend_schema(responses=MeSerializer, operation_id="me")
    def get(self, request):
        from tenants.access import token_of
        from tenants.models import Membership

        user = request.user
        memberships = Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__slug")
        token = token_of(request)
        if token is not None and token.tenant_id is not None:  # a tenant token sees its one tenant
            memberships = memberships.filter(tenant_id=token.tenant_id)
        data = {
            "email": user.email,
            "name": user.get_full_name(),
            "is_operator": user.is_staff,
            "tenants": [{"slug": m.tenant.slug, "name": m.tenant.name, "role": m.role} for m in memberships],
        }
        return Response(MeSerializer(data).data)
