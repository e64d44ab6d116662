"""The state history is append-only: PostgreSQL refuses UPDATE and DELETE on it.

Later parts learn latencies from it and audits rely on it, so no code path — not the admin,
not a stray queryset, not a cascade — may rewrite or remove it. (TRUNCATE, which only a test
database flush or an operator at psql would run, is not a row operation and is allowed.)
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION hosts_state_change_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'host state history is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER hosts_state_change_append_only
    BEFORE UPDATE OR DELETE ON hosts_hoststatechange
    FOR EACH ROW EXECUTE FUNCTION hosts_state_change_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS hosts_state_change_append_only ON hosts_hoststatechange;
DROP FUNCTION IF EXISTS hosts_state_change_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("hosts", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
