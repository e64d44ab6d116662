from django.apps import AppConfig


class LabConfig(AppConfig):
    name = "teapot_portal.gateway.lab"
    label = "lab"
    verbose_name = "Lab management cluster (simulation)"
