"""REST API of the inventory (mounted under /api/v1/)."""

urlpatterns: list = []
