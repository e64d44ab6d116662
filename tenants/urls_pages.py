"""Tenant self-service pages (mounted at /t/, namespace ``tenant``) and operator tenancy pages.

The operator pages and the switcher come first: ``operator`` and ``switch`` are not tenant slugs
(tenants.forms.RESERVED_SLUGS)."""

from django.urls import path

from tenants import views_operator as op
from tenants import views_pages as v

app_name = "tenant"

urlpatterns = [
    path("", v.tenant_home, name="home"),
    path("switch/", v.tenant_switch, name="switch"),
    # operators
    path("operator/tenants/", op.operator_tenants, name="operator_tenants"),
    path("operator/tenants/new/", op.operator_tenant_new, name="operator_tenant_new"),
    path("operator/tenants/<slug:slug>/quota/", op.operator_quota, name="operator_quota"),
    path("operator/capacity/", op.operator_capacity, name="operator_capacity"),
    path("operator/audit/", op.operator_audit, name="operator_audit"),
    # a tenant
    path("<slug:slug>/", v.tenant_dashboard, name="dashboard"),
    path("<slug:slug>/clusters/", v.cluster_list, name="clusters"),
    path("<slug:slug>/clusters/new/", v.cluster_new, name="cluster_new"),
    path("<slug:slug>/clusters/<slug:name>/", v.cluster_detail, name="cluster"),
    path("<slug:slug>/clusters/<slug:name>/kubeconfig/", v.cluster_kubeconfig, name="kubeconfig"),
    path("<slug:slug>/clusters/<slug:name>/delete/", v.cluster_delete_view, name="cluster_delete"),
    path("<slug:slug>/clusters/<slug:name>/pools/new/", v.pool_new, name="pool_new"),
    path("<slug:slug>/clusters/<slug:name>/pools/preview/", v.pool_preview_view, name="pool_preview"),
    path("<slug:slug>/clusters/<slug:name>/pools/<slug:pool>/scale/", v.pool_scale, name="pool_scale"),
    path("<slug:slug>/clusters/<slug:name>/pools/<slug:pool>/delete/", v.pool_delete_view, name="pool_delete"),
    path("<slug:slug>/members/", v.members, name="members"),
    path("<slug:slug>/members/<int:pk>/role/", v.member_role, name="member_role"),
    path("<slug:slug>/members/<int:pk>/remove/", v.member_remove, name="member_remove"),
    path("<slug:slug>/audit/", v.tenant_audit, name="audit"),
]
