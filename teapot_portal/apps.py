from django.apps import AppConfig


class TeapotPortalConfig(AppConfig):
    name = "teapot_portal"
    verbose_name = "Teapot"
