"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 15:25:48.984615
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assessments",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assessments")),
    )
    op.create_table(
        "audit_entries",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("trace_id", sa.Text(), nullable=True),
        sa.Column("actor_id", sa.UUID(), nullable=False),
        sa.Column("actor_role", sa.String(length=20), nullable=False),
        sa.Column("purpose", sa.String(length=30), nullable=False),
        sa.Column("justification", sa.Text(), nullable=True),
        sa.Column("operation_name", sa.Text(), nullable=True),
        sa.Column("subject_student_id", sa.UUID(), nullable=True),
        sa.Column("fields", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("categories", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("decision", sa.String(length=5), nullable=False),
        sa.Column("break_glass", sa.Boolean(), nullable=False),
        sa.Column("prev_hash", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("district_id", "seq", name=op.f("pk_audit_entries")),
        sa.UniqueConstraint("district_id", "id", name=op.f("uq_audit_entries_district_id_id")),
    )
    op.create_index("ix_audit_at", "audit_entries", ["district_id", "at"], unique=False)
    op.create_index(
        "ix_audit_subject",
        "audit_entries",
        ["district_id", "subject_student_id", "seq"],
        unique=False,
    )
    op.create_table(
        "deletion_certificates",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_by", sa.UUID(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("counts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("district_id", "id", name=op.f("pk_deletion_certificates")),
    )
    op.create_table(
        "districts",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("sourced_id", sa.Text(), nullable=True),
        sa.Column(
            "authorized_purposes",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text(
                "ARRAY['INSTRUCTION','STUDENT_LEARNING','REPORTING','PERSONALIZATION','COMMUNICATION','SUPPORT','PRODUCT_ANALYTICS','RECORD_ACCESS','LEGAL_COMPLIANCE']::text[]"
            ),
            nullable=False,
        ),
        sa.Column("collect_usage", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("collect_device", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("collect_demographics", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("direct_record_access", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("minimum_group_size", sa.Integer(), server_default=sa.text("10"), nullable=False),
        sa.Column("responses_days", sa.Integer(), server_default=sa.text("1095"), nullable=False),
        sa.Column("activity_days", sa.Integer(), server_default=sa.text("365"), nullable=False),
        sa.Column("device_days", sa.Integer(), server_default=sa.text("90"), nullable=False),
        sa.Column("audit_days", sa.Integer(), server_default=sa.text("2557"), nullable=False),
        sa.Column("accepted_policy_version", sa.Text(), server_default="2020-04-01", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_districts")),
    )
    op.create_table(
        "platform_users",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("disabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_users")),
        sa.UniqueConstraint("username", name=op.f("uq_platform_users_username")),
    )
    op.create_table(
        "data_requests",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="OPEN", nullable=False),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["district_id"],
            ["districts.id"],
            name=op.f("fk_data_requests_district_id_districts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "id", name=op.f("pk_data_requests")),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("assessment_id", sa.UUID(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("choices", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("skill", sa.Text(), nullable=False),
        sa.Column("answer_key", sa.Text(), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=True),
        sa.Column("practice", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.ForeignKeyConstraint(
            ["assessment_id"],
            ["assessments.id"],
            name=op.f("fk_items_assessment_id_assessments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
    )
    op.create_index("ix_items_assessment", "items", ["assessment_id", "position"], unique=False)
    op.create_table(
        "schools",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("sourced_id", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["district_id"],
            ["districts.id"],
            name=op.f("fk_schools_district_id_districts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "id", name=op.f("pk_schools")),
        sa.UniqueConstraint("district_id", "sourced_id", name=op.f("uq_schools_district_id_sourced_id")),
    )
    op.create_table(
        "support_grants",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("ticket", sa.Text(), nullable=False),
        sa.Column("granted_by", sa.UUID(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "user_ids",
            postgresql.ARRAY(sa.UUID()),
            server_default=sa.text("'{}'::uuid[]"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["district_id"],
            ["districts.id"],
            name=op.f("fk_support_grants_district_id_districts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "id", name=op.f("pk_support_grants")),
    )
    op.create_table(
        "classes",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("school_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("grade_level", sa.Text(), nullable=True),
        sa.Column("sourced_id", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["district_id", "school_id"],
            ["schools.district_id", "schools.id"],
            name=op.f("fk_classes_district_id_school_id_schools"),
        ),
        sa.PrimaryKeyConstraint("district_id", "id", name=op.f("pk_classes")),
        sa.UniqueConstraint("district_id", "sourced_id", name=op.f("uq_classes_district_id_sourced_id")),
    )
    op.create_index("ix_classes_school", "classes", ["district_id", "school_id"], unique=False)
    op.create_table(
        "users",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("sourced_id", sa.Text(), nullable=True),
        sa.Column("disabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("school_id", sa.UUID(), nullable=True),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("preferred_name", sa.Text(), nullable=True),
        sa.Column("grade_level", sa.Text(), nullable=True),
        sa.Column("student_number", sa.Text(), nullable=True),
        sa.Column("state_id", sa.Text(), nullable=True),
        sa.Column("gender", sa.Text(), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("ethnicity", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("english_learner", sa.Boolean(), nullable=True),
        sa.Column("special_education", sa.Boolean(), nullable=True),
        sa.Column("economically_disadvantaged", sa.Boolean(), nullable=True),
        sa.Column("learning_level", sa.Text(), nullable=True),
        sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["district_id", "school_id"],
            ["schools.district_id", "schools.id"],
            name=op.f("fk_users_district_id_school_id_schools"),
        ),
        sa.ForeignKeyConstraint(
            ["district_id"],
            ["districts.id"],
            name=op.f("fk_users_district_id_districts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "id", name=op.f("pk_users")),
        sa.UniqueConstraint("district_id", "sourced_id", name=op.f("uq_users_district_id_sourced_id")),
        sa.UniqueConstraint("district_id", "username", name=op.f("uq_users_district_id_username")),
    )
    op.create_index("ix_users_school", "users", ["district_id", "school_id", "role"], unique=False)
    op.create_index("ix_users_username", "users", ["username"], unique=False)
    op.create_table(
        "activity_events",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("session_key", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["district_id", "student_id"],
            ["users.district_id", "users.id"],
            name=op.f("fk_activity_events_district_id_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "id", name=op.f("pk_activity_events")),
    )
    op.create_index(
        "ix_activity_student_time",
        "activity_events",
        ["district_id", "student_id", "occurred_at"],
        unique=False,
    )
    op.create_table(
        "assignments",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("class_id", sa.UUID(), nullable=False),
        sa.Column("assessment_id", sa.UUID(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["assessment_id"],
            ["assessments.id"],
            name=op.f("fk_assignments_assessment_id_assessments"),
        ),
        sa.ForeignKeyConstraint(
            ["district_id", "class_id"],
            ["classes.district_id", "classes.id"],
            name=op.f("fk_assignments_district_id_class_id_classes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "id", name=op.f("pk_assignments")),
    )
    op.create_index("ix_assignments_class", "assignments", ["district_id", "class_id"], unique=False)
    op.create_table(
        "class_teachers",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("class_id", sa.UUID(), nullable=False),
        sa.Column("teacher_id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_id", "class_id"],
            ["classes.district_id", "classes.id"],
            name=op.f("fk_class_teachers_district_id_class_id_classes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["district_id", "teacher_id"],
            ["users.district_id", "users.id"],
            name=op.f("fk_class_teachers_district_id_teacher_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "class_id", "teacher_id", name=op.f("pk_class_teachers")),
    )
    op.create_index("ix_class_teachers_teacher", "class_teachers", ["district_id", "teacher_id"], unique=False)
    op.create_table(
        "consents",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("analytics_opt_out", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("updated_by", sa.UUID(), nullable=True),
        sa.ForeignKeyConstraint(
            ["district_id", "student_id"],
            ["users.district_id", "users.id"],
            name=op.f("fk_consents_district_id_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "student_id", name=op.f("pk_consents")),
    )
    op.create_table(
        "corrections",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("data_request_id", sa.UUID(), nullable=True),
        sa.Column("previous", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("corrected", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("statement_of_disagreement", sa.Text(), nullable=True),
        sa.Column("corrected_by", sa.UUID(), nullable=False),
        sa.Column(
            "corrected_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["district_id", "student_id"],
            ["users.district_id", "users.id"],
            name=op.f("fk_corrections_district_id_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "id", name=op.f("pk_corrections")),
    )
    op.create_table(
        "device_sessions",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("session_key", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip_address", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("browser", sa.Text(), nullable=True),
        sa.Column("operating_system", sa.Text(), nullable=True),
        sa.Column("device_type", sa.Text(), nullable=True),
        sa.Column("referrer", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["district_id", "student_id"],
            ["users.district_id", "users.id"],
            name=op.f("fk_device_sessions_district_id_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "id", name=op.f("pk_device_sessions")),
        sa.UniqueConstraint(
            "district_id",
            "student_id",
            "session_key",
            name=op.f("uq_device_sessions_district_id_student_id_session_key"),
        ),
    )
    op.create_index(
        "ix_device_student_time",
        "device_sessions",
        ["district_id", "student_id", "started_at"],
        unique=False,
    )
    op.create_table(
        "enrollments",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("class_id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("begin_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("sourced_id", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["district_id", "class_id"],
            ["classes.district_id", "classes.id"],
            name=op.f("fk_enrollments_district_id_class_id_classes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["district_id", "student_id"],
            ["users.district_id", "users.id"],
            name=op.f("fk_enrollments_district_id_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "class_id", "student_id", name=op.f("pk_enrollments")),
    )
    op.create_index("ix_enrollments_student", "enrollments", ["district_id", "student_id"], unique=False)
    op.create_table(
        "guardian_links",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("guardian_id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("relationship", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["district_id", "guardian_id"],
            ["users.district_id", "users.id"],
            name=op.f("fk_guardian_links_district_id_guardian_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["district_id", "student_id"],
            ["users.district_id", "users.id"],
            name=op.f("fk_guardian_links_district_id_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "guardian_id", "student_id", name=op.f("pk_guardian_links")),
    )
    op.create_index("ix_guardian_links_student", "guardian_links", ["district_id", "student_id"], unique=False)
    op.create_table(
        "responses",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("item_id", sa.UUID(), nullable=False),
        sa.Column("assignment_id", sa.UUID(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("feedback", sa.Text(), nullable=True),
        sa.Column("time_spent_seconds", sa.Integer(), nullable=True),
        sa.Column(
            "submitted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["district_id", "assignment_id"],
            ["assignments.district_id", "assignments.id"],
            name=op.f("fk_responses_district_id_assignment_id_assignments"),
        ),
        sa.ForeignKeyConstraint(
            ["district_id", "student_id"],
            ["users.district_id", "users.id"],
            name=op.f("fk_responses_district_id_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_responses_item_id_items")),
        sa.PrimaryKeyConstraint("district_id", "id", name=op.f("pk_responses")),
        sa.UniqueConstraint(
            "district_id",
            "student_id",
            "idempotency_key",
            name=op.f("uq_responses_district_id_student_id_idempotency_key"),
        ),
    )
    op.create_index("ix_responses_district_time", "responses", ["district_id", "submitted_at"], unique=False)
    op.create_index(
        "ix_responses_student_time",
        "responses",
        ["district_id", "student_id", "submitted_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_responses_student_time", table_name="responses")
    op.drop_index("ix_responses_district_time", table_name="responses")
    op.drop_table("responses")
    op.drop_index("ix_guardian_links_student", table_name="guardian_links")
    op.drop_table("guardian_links")
    op.drop_index("ix_enrollments_student", table_name="enrollments")
    op.drop_table("enrollments")
    op.drop_index("ix_device_student_time", table_name="device_sessions")
    op.drop_table("device_sessions")
    op.drop_table("corrections")
    op.drop_table("consents")
    op.drop_index("ix_class_teachers_teacher", table_name="class_teachers")
    op.drop_table("class_teachers")
    op.drop_index("ix_assignments_class", table_name="assignments")
    op.drop_table("assignments")
    op.drop_index("ix_activity_student_time", table_name="activity_events")
    op.drop_table("activity_events")
    op.drop_index("ix_users_username", table_name="users")
    op.drop_index("ix_users_school", table_name="users")
    op.drop_table("users")
    op.drop_index("ix_classes_school", table_name="classes")
    op.drop_table("classes")
    op.drop_table("support_grants")
    op.drop_table("schools")
    op.drop_index("ix_items_assessment", table_name="items")
    op.drop_table("items")
    op.drop_table("data_requests")
    op.drop_table("platform_users")
    op.drop_table("districts")
    op.drop_table("deletion_certificates")
    op.drop_index("ix_audit_subject", table_name="audit_entries")
    op.drop_index("ix_audit_at", table_name="audit_entries")
    op.drop_table("audit_entries")
    op.drop_table("assessments")
