"""Operator pages that change the inventory, under /hosts/manage/ (namespace ``hosts``)."""

from django.urls import path

from hosts import views_manage

urlpatterns = [
    path("manage/enrol/", views_manage.enrol, name="enrol"),
    path("manage/import/", views_manage.import_hosts, name="import"),
    path("manage/import/template/", views_manage.import_template, name="import-template"),
    path("manage/enrolments/", views_manage.enrolments, name="enrolments"),
    path("manage/rules/", views_manage.rule_list, name="rules"),
    path("manage/rules/new/", views_manage.rule_new, name="rule-new"),
    path("manage/rules/preview/", views_manage.rule_preview, name="rule-preview"),
    path("manage/rules/<int:pk>/", views_manage.rule_edit, name="rule-edit"),
    path("manage/rules/<int:pk>/delete/", views_manage.rule_delete, name="rule-delete"),
    path("manage/settings/", views_manage.fleet_settings, name="settings"),
    path("manage/settings/preview/", views_manage.settings_preview, name="settings-preview"),
]
