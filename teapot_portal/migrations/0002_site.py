import os

from django.db import migrations


def set_site(apps, schema_editor):
    # Password-reset emails and allauth use the Site's name; give it Teapot's.
    Site = apps.get_model("sites", "Site")
    Site.objects.update_or_create(
        id=1, defaults={"domain": os.environ.get("TEAPOT_SITE_DOMAIN", "localhost:8000"), "name": "Teapot"}
    )


class Migration(migrations.Migration):
    dependencies = [("teapot_portal", "0001_initial"), ("sites", "0002_alter_domain_unique")]
    operations = [migrations.RunPython(set_site, migrations.RunPython.noop)]
