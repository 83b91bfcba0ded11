"""Authentication lookup: who a token's subject is, across districts.

Row-level security hides every district's rows until a request has set its
districts, so the first lookup (the caller's own role, district and
relationships) goes through one SECURITY DEFINER function that returns only
that caller's standing, never other people's data.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"


def upgrade() -> None:
    op.create_index("ix_users_id", "users", ["id"])
    op.execute(
        """
        CREATE FUNCTION pledgeql_principal(p_user uuid, p_now timestamptz)
        RETURNS TABLE (
            role text,
            district_id uuid,
            school_id uuid,
            disabled boolean,
            class_ids uuid[],
            children_ids uuid[],
            grants jsonb
        )
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
        AS $$
            SELECT u.role, u.district_id, u.school_id, u.disabled,
                   CASE u.role
                       WHEN 'TEACHER' THEN ARRAY(
                           SELECT ct.class_id FROM class_teachers ct
                           WHERE ct.district_id = u.district_id AND ct.teacher_id = u.id
                           ORDER BY ct.class_id)
                       WHEN 'STUDENT' THEN ARRAY(
                           SELECT e.class_id FROM enrollments e
                           WHERE e.district_id = u.district_id AND e.student_id = u.id
                             AND e.begin_date <= p_now::date
                             AND (e.end_date IS NULL OR e.end_date >= p_now::date)
                           ORDER BY e.class_id)
                       ELSE '{}'::uuid[]
                   END,
                   CASE u.role
                       WHEN 'GUARDIAN' THEN ARRAY(
                           SELECT g.student_id FROM guardian_links g
                           WHERE g.district_id = u.district_id AND g.guardian_id = u.id
                           ORDER BY g.student_id)
                       ELSE '{}'::uuid[]
                   END,
                   '[]'::jsonb
            FROM users u
            WHERE u.id = p_user
            UNION ALL
            SELECT p.role, NULL::uuid, NULL::uuid, p.disabled, '{}'::uuid[], '{}'::uuid[],
                   CASE p.role
                       WHEN 'SUPPORT' THEN (
                           SELECT coalesce(jsonb_agg(jsonb_build_object(
                                      'district_id', g.district_id,
                                      'user_ids', g.user_ids,
                                      'ticket', g.ticket)
                                      ORDER BY g.district_id, g.id), '[]'::jsonb)
                           FROM support_grants g
                           WHERE g.revoked_at IS NULL AND g.expires_at > p_now
                             AND g.created_at <= p_now)
                       ELSE '[]'::jsonb
                   END
            FROM platform_users p
            WHERE p.id = p_user
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION pledgeql_principal(uuid, timestamptz) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION pledgeql_principal(uuid, timestamptz) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS pledgeql_principal(uuid, timestamptz)")
    op.drop_index("ix_users_id", table_name="users")
