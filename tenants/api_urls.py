"""REST API of tenants, quotas, clusters and node pools (mounted under /api/v1/, namespace ``api``).

tenants/ and, under tenants/{slug}/: members/, quota/ (+ {class_name}/), clusters/ (+ {cluster}/
kubeconfig/), clusters/{cluster}/node-pools/ (+ {pool}/scale/), audit/. Operators' catalogue:
quota-classes/, kubernetes-versions/, os-images/; capacity/ and audit/.
"""

from django.urls import path
from rest_framework.routers import SimpleRouter

from hosts.api import NAME_IN_URL
from tenants import api

TENANT = rf"tenants/(?P<slug>{NAME_IN_URL})"
CLUSTER = rf"{TENANT}/clusters/(?P<cluster>{NAME_IN_URL})"

router = SimpleRouter()
router.register("tenants", api.TenantViewSet, basename="tenant")
router.register(rf"{TENANT}/members", api.MembershipViewSet, basename="tenant-member")
router.register(rf"{TENANT}/quota", api.QuotaViewSet, basename="tenant-quota")
router.register(rf"{TENANT}/clusters", api.ClusterViewSet, basename="cluster")
router.register(rf"{CLUSTER}/node-pools", api.NodePoolViewSet, basename="node-pool")
router.register(rf"{TENANT}/audit", api.TenantAuditEntryViewSet, basename="tenant-audit")
router.register("quota-classes", api.QuotaClassViewSet, basename="quota-class")
router.register("kubernetes-versions", api.KubernetesVersionViewSet, basename="kubernetes-version")
router.register("os-images", api.OsImageViewSet, basename="os-image")
router.register("audit", api.AuditEntryViewSet, basename="audit")

urlpatterns = [
    path("capacity/", api.CapacityView.as_view(), name="capacity"),
    *router.urls,
]
