"""The audit log is append-only: PostgreSQL refuses UPDATE and DELETE on it (as the host state
history, hosts migration 0002)."""

from django.db import migrations

FORWARD = """
CREATE FUNCTION tenants_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER tenants_audit_append_only
    BEFORE UPDATE OR DELETE ON tenants_auditentry
    FOR EACH ROW EXECUTE FUNCTION tenants_audit_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS tenants_audit_append_only ON tenants_auditentry;
DROP FUNCTION IF EXISTS tenants_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("tenants", "0002_tenancy_quota_clusters")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
