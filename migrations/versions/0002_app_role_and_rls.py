"""The application role, its grants, and row-level security on district tables.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"

# Every table holding one district's data. ``districts`` itself is readable by
# the app (settings are not personal data) but only writable for the request's
# own district.
DISTRICT_TABLES = (
    "schools",
    "users",
    "guardian_links",
    "classes",
    "class_teachers",
    "enrollments",
    "assignments",
    "responses",
    "activity_events",
    "device_sessions",
    "consents",
    "support_grants",
    "data_requests",
    "corrections",
    "deletion_certificates",
    "audit_entries",
)

# RLS is enabled but not forced: it binds pledgeql_app (which owns nothing),
# while the owner that runs migrations and maintenance commands keeps seeing
# every district, superuser or not.
#
# The request's districts, set transaction-locally by the server
# (``set_config('pledgeql.district_ids', ..., true)``). Wrapped in a scalar
# subquery so PostgreSQL evaluates it once per statement, not once per row.
IN_SCOPE = (
    "district_id = ANY ((SELECT string_to_array("
    "nullif(current_setting('pledgeql.district_ids', true), ''), ','))::uuid[])"
)


def upgrade() -> None:
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
            END IF;
        END
        $$;
        """
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
    op.execute(f"GRANT SELECT ON assessments, items, platform_users, alembic_version TO {APP_ROLE}")
    op.execute(f"GRANT SELECT, UPDATE ON districts TO {APP_ROLE}")
    for table in DISTRICT_TABLES:
        if table == "audit_entries":
            op.execute(f"GRANT SELECT, INSERT ON {table} TO {APP_ROLE}")
        else:
            op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} TO {APP_ROLE} USING ({IN_SCOPE}) WITH CHECK ({IN_SCOPE})"
        )
    op.execute("ALTER TABLE districts ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY readable ON districts FOR SELECT TO {APP_ROLE} USING (true)")
    op.execute(
        f"CREATE POLICY own_district_writes ON districts FOR UPDATE TO {APP_ROLE} "
        f"USING ({IN_SCOPE.replace('district_id', 'id')}) "
        f"WITH CHECK ({IN_SCOPE.replace('district_id', 'id')})"
    )


def downgrade() -> None:
    op.execute("DROP POLICY IF EXISTS readable ON districts")
    op.execute("DROP POLICY IF EXISTS own_district_writes ON districts")
    op.execute("ALTER TABLE districts DISABLE ROW LEVEL SECURITY")
    for table in DISTRICT_TABLES:
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {APP_ROLE}")
