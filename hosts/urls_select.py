""" "What would I get?" pages, mounted at /select/ (namespace ``select``)."""

from django.urls import path

from hosts import views_select

app_name = "select"

urlpatterns = [
    path("", views_select.select_page, name="page"),
    path("preview/", views_select.select_preview, name="preview"),
]
