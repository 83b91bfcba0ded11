"""The relational model.

Every table that holds a district's data carries ``district_id`` as the first
column of its primary key, and every foreign key between such tables includes
it: the shape a distributed PostgreSQL (Citus) needs to shard by district.
Platform content (assessments, items) and platform staff are reference tables
without a district.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEFAULT_PURPOSES = (
    "INSTRUCTION",
    "STUDENT_LEARNING",
    "REPORTING",
    "PERSONALIZATION",
    "COMMUNICATION",
    "SUPPORT",
    "PRODUCT_ANALYTICS",
    "RECORD_ACCESS",
    "LEGAL_COMPLIANCE",
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True)


def _district_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True)


def _now() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class District(Base):
    __tablename__ = "districts"
    __table_args__ = (
        CheckConstraint("minimum_group_size BETWEEN 5 AND 30", name="minimum_group_size_range"),
        CheckConstraint(
            "responses_days > 0 AND activity_days > 0 AND device_days > 0 AND audit_days > 0",
            name="retention_days_positive",
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(Text)
    sourced_id: Mapped[str | None] = mapped_column(Text)
    authorized_purposes: Mapped[list[str]] = mapped_column(
        ARRAY(Text),
        server_default=text("ARRAY['" + "','".join(DEFAULT_PURPOSES) + "']::text[]"),
    )
    collect_usage: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    collect_device: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    collect_demographics: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    direct_record_access: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    minimum_group_size: Mapped[int] = mapped_column(Integer, server_default=text("10"))
    responses_days: Mapped[int] = mapped_column(Integer, server_default=text("1095"))
    activity_days: Mapped[int] = mapped_column(Integer, server_default=text("365"))
    device_days: Mapped[int] = mapped_column(Integer, server_default=text("90"))
    audit_days: Mapped[int] = mapped_column(Integer, server_default=text("2557"))
    accepted_policy_version: Mapped[str] = mapped_column(Text, server_default="2020-04-01")
    created_at: Mapped[dt.datetime] = _now()
    # Set when the district's data was exported and deleted (end of contract).
    contract_ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class School(Base):
    __tablename__ = "schools"
    __table_args__ = (
        ForeignKeyConstraint(["district_id"], ["districts.id"], ondelete="CASCADE"),
        UniqueConstraint("district_id", "sourced_id"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(Text)
    sourced_id: Mapped[str | None] = mapped_column(Text)
    roster_modified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class User(Base):
    """District people: staff of every district role, students and guardians.

    Student-only columns are null for other roles.
    """

    __tablename__ = "users"
    __table_args__ = (
        ForeignKeyConstraint(["district_id"], ["districts.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["district_id", "school_id"], ["schools.district_id", "schools.id"]),
        UniqueConstraint("district_id", "username"),
        UniqueConstraint("district_id", "sourced_id"),
        Index("ix_users_username", "username"),
        Index("ix_users_id", "id"),
        Index("ix_users_school", "district_id", "school_id", "role"),
        # Aggregate reports (migration 0008): the students' report attributes.
        Index(
            "ix_users_report",
            "district_id",
            "id",
            postgresql_include=[
                "school_id",
                "grade_level",
                "gender",
                "ethnicity",
                "english_learner",
                "special_education",
                "economically_disadvantaged",
            ],
            postgresql_where=text("role = 'STUDENT'"),
        ),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    id: Mapped[uuid.UUID] = _uuid_pk()
    role: Mapped[str] = mapped_column(String(20))
    username: Mapped[str] = mapped_column(Text)
    sourced_id: Mapped[str | None] = mapped_column(Text)
    disabled: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    school_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    preferred_name: Mapped[str | None] = mapped_column(Text)
    grade_level: Mapped[str | None] = mapped_column(Text)
    student_number: Mapped[str | None] = mapped_column(Text)
    state_id: Mapped[str | None] = mapped_column(Text)
    gender: Mapped[str | None] = mapped_column(Text)
    birth_date: Mapped[dt.date | None] = mapped_column(Date)
    ethnicity: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    english_learner: Mapped[bool | None] = mapped_column(Boolean)
    special_education: Mapped[bool | None] = mapped_column(Boolean)
    economically_disadvantaged: Mapped[bool | None] = mapped_column(Boolean)
    learning_level: Mapped[str | None] = mapped_column(Text)
    last_active_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    # OneRoster dateLastModified of the row last imported (older delta rows are skipped).
    roster_modified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class PlatformUser(Base):
    """Internal staff (ANALYST, SUPPORT): no district, no district data of their own."""

    __tablename__ = "platform_users"

    id: Mapped[uuid.UUID] = _uuid_pk()
    role: Mapped[str] = mapped_column(String(20))
    username: Mapped[str] = mapped_column(Text, unique=True)
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    disabled: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class GuardianLink(Base):
    __tablename__ = "guardian_links"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "guardian_id"], ["users.district_id", "users.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["district_id", "student_id"], ["users.district_id", "users.id"], ondelete="CASCADE"),
        Index("ix_guardian_links_student", "district_id", "student_id"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    guardian_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    relationship: Mapped[str | None] = mapped_column(Text)


class SchoolClass(Base):
    __tablename__ = "classes"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "school_id"], ["schools.district_id", "schools.id"]),
        UniqueConstraint("district_id", "sourced_id"),
        Index("ix_classes_school", "district_id", "school_id"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    id: Mapped[uuid.UUID] = _uuid_pk()
    school_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    name: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    grade_level: Mapped[str | None] = mapped_column(Text)
    sourced_id: Mapped[str | None] = mapped_column(Text)
    roster_modified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ClassTeacher(Base):
    __tablename__ = "class_teachers"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "class_id"], ["classes.district_id", "classes.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["district_id", "teacher_id"], ["users.district_id", "users.id"], ondelete="CASCADE"),
        Index("ix_class_teachers_teacher", "district_id", "teacher_id"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    class_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    teacher_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)


class Enrollment(Base):
    __tablename__ = "enrollments"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "class_id"], ["classes.district_id", "classes.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["district_id", "student_id"], ["users.district_id", "users.id"], ondelete="CASCADE"),
        Index("ix_enrollments_student", "district_id", "student_id"),
        UniqueConstraint("district_id", "sourced_id"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    class_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    begin_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    sourced_id: Mapped[str | None] = mapped_column(Text)
    roster_modified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Assessment(Base):
    """Platform content, shared by every district (a reference table)."""

    __tablename__ = "assessments"

    id: Mapped[uuid.UUID] = _uuid_pk()
    title: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)


class Item(Base):
    """Platform content. ``answer_key`` and ``explanation`` never leave the server
    except as grading feedback."""

    __tablename__ = "items"
    __table_args__ = (
        ForeignKeyConstraint(["assessment_id"], ["assessments.id"], ondelete="CASCADE"),
        Index("ix_items_assessment", "assessment_id", "position"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    assessment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    position: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    choices: Mapped[list[str]] = mapped_column(ARRAY(Text))
    skill: Mapped[str] = mapped_column(Text)
    answer_key: Mapped[str] = mapped_column(Text)
    explanation: Mapped[str | None] = mapped_column(Text)
    practice: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "class_id"], ["classes.district_id", "classes.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["assessment_id"], ["assessments.id"]),
        Index("ix_assignments_class", "district_id", "class_id"),
        CheckConstraint("char_length(title) BETWEEN 1 AND 200", name="title_length"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    id: Mapped[uuid.UUID] = _uuid_pk()
    class_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    assessment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    title: Mapped[str] = mapped_column(Text)
    due_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[dt.datetime] = _now()


class Response(Base):
    __tablename__ = "responses"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "student_id"], ["users.district_id", "users.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["item_id"], ["items.id"]),
        ForeignKeyConstraint(["district_id", "assignment_id"], ["assignments.district_id", "assignments.id"]),
        Index("ix_responses_student_time", "district_id", "student_id", "submitted_at"),
        Index("ix_responses_district_time", "district_id", "submitted_at"),
        # Aggregate reports (migration 0008): an index-only scan per student.
        Index(
            "ix_responses_report",
            "district_id",
            "student_id",
            "submitted_at",
            postgresql_include=["score", "correct"],
        ),
        UniqueConstraint("district_id", "student_id", "idempotency_key"),
        CheckConstraint("time_spent_seconds BETWEEN 0 AND 86400", name="time_spent_range"),
        CheckConstraint("char_length(answer) <= 10000", name="answer_length"),
        CheckConstraint("char_length(idempotency_key) BETWEEN 1 AND 200", name="idempotency_key_length"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    id: Mapped[uuid.UUID] = _uuid_pk()
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    item_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    assignment_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    answer: Mapped[str] = mapped_column(Text)
    correct: Mapped[bool] = mapped_column(Boolean)
    score: Mapped[float] = mapped_column(Float)
    feedback: Mapped[str | None] = mapped_column(Text)
    time_spent_seconds: Mapped[int | None] = mapped_column(Integer)
    submitted_at: Mapped[dt.datetime] = _now()
    idempotency_key: Mapped[str | None] = mapped_column(Text)


class ActivityEvent(Base):
    __tablename__ = "activity_events"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "student_id"], ["users.district_id", "users.id"], ondelete="CASCADE"),
        Index("ix_activity_student_time", "district_id", "student_id", "occurred_at"),
        Index("ix_activity_district_time", "district_id", "occurred_at"),
        CheckConstraint("duration_ms BETWEEN 0 AND 86400000", name="duration_range"),
        CheckConstraint("char_length(target) <= 1000", name="target_length"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    id: Mapped[uuid.UUID] = _uuid_pk()
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(String(20))
    target: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    session_key: Mapped[str | None] = mapped_column(Text)


class DeviceSession(Base):
    __tablename__ = "device_sessions"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "student_id"], ["users.district_id", "users.id"], ondelete="CASCADE"),
        Index("ix_device_student_time", "district_id", "student_id", "started_at"),
        Index("ix_device_district_time", "district_id", "started_at"),
        UniqueConstraint("district_id", "student_id", "session_key"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    id: Mapped[uuid.UUID] = _uuid_pk()
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    session_key: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ip_address: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    browser: Mapped[str | None] = mapped_column(Text)
    operating_system: Mapped[str | None] = mapped_column(Text)
    device_type: Mapped[str | None] = mapped_column(Text)
    referrer: Mapped[str | None] = mapped_column(Text)


class Consent(Base):
    __tablename__ = "consents"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "student_id"], ["users.district_id", "users.id"], ondelete="CASCADE"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    analytics_opt_out: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    updated_at: Mapped[dt.datetime] = _now()
    updated_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class ReportStudentTotal(Base):
    """A student's all-time response totals per class for aggregate reports,
    kept exact by statement-level triggers on responses and assignments
    (migration 0008)."""

    __tablename__ = "report_student_totals"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "student_id"], ["users.district_id", "users.id"], ondelete="CASCADE"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # The answered assignment's class; the nil uuid for practice outside one.
    class_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    responses: Mapped[int] = mapped_column(BigInteger)
    score_sum: Mapped[Decimal] = mapped_column(Numeric)
    correct: Mapped[int] = mapped_column(BigInteger)


class StudentProgress(Base):
    """A student's progress (schema.graphql StudentProgress) over their
    responses, computed again by statement-level triggers on responses, items
    and assignments whenever what it counts changes (migration 0018). A student
    with no responses has no row."""

    __tablename__ = "student_progress"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "student_id"], ["users.district_id", "users.id"], ondelete="CASCADE"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    responses_submitted: Mapped[int] = mapped_column(BigInteger)
    average_score: Mapped[float | None] = mapped_column(Float)
    percent_correct: Mapped[float | None] = mapped_column(Float)
    assignments_completed: Mapped[int] = mapped_column(BigInteger)
    mastery: Mapped[list[dict[str, object]]] = mapped_column(JSONB)


class SupportGrant(Base):
    __tablename__ = "support_grants"
    __table_args__ = (
        ForeignKeyConstraint(["district_id"], ["districts.id"], ondelete="CASCADE"),
        CheckConstraint("char_length(btrim(ticket)) BETWEEN 1 AND 200", name="ticket_present"),
        CheckConstraint("expires_at > created_at", name="expires_after_creation"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    id: Mapped[uuid.UUID] = _uuid_pk()
    ticket: Mapped[str] = mapped_column(Text)
    granted_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    user_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)), server_default=text("'{}'::uuid[]"))
    created_at: Mapped[dt.datetime] = _now()


class DataRequest(Base):
    __tablename__ = "data_requests"
    __table_args__ = (
        ForeignKeyConstraint(["district_id"], ["districts.id"], ondelete="CASCADE"),
        Index("ix_data_requests_student", "district_id", "student_id"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    id: Mapped[uuid.UUID] = _uuid_pk()
    kind: Mapped[str] = mapped_column(String(20))
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    requested_by: Mapped[str] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = _now()
    due_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), server_default="OPEN")
    fulfilled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Correction(Base):
    __tablename__ = "corrections"
    __table_args__ = (
        ForeignKeyConstraint(["district_id", "student_id"], ["users.district_id", "users.id"], ondelete="CASCADE"),
        Index("ix_corrections_student", "district_id", "student_id"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    id: Mapped[uuid.UUID] = _uuid_pk()
    student_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    data_request_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    previous: Mapped[dict[str, object]] = mapped_column(JSONB)
    corrected: Mapped[dict[str, object]] = mapped_column(JSONB)
    statement_of_disagreement: Mapped[str | None] = mapped_column(Text)
    corrected_by: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    corrected_at: Mapped[dt.datetime] = _now()


class DeletionCertificate(Base):
    """A student's record deleted (scope STUDENT), or a whole district's data at
    the end of its contract (scope DISTRICT, no student; migration 0007)."""

    __tablename__ = "deletion_certificates"
    __table_args__ = (
        CheckConstraint(
            "(scope = 'STUDENT' AND student_id IS NOT NULL) OR (scope = 'DISTRICT' AND student_id IS NULL)",
            name="scope",
        ),
        Index("ix_deletion_certificates_time", "district_id", "deleted_at"),
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    id: Mapped[uuid.UUID] = _uuid_pk()
    student_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    deleted_at: Mapped[dt.datetime] = _now()
    deleted_by: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    reason: Mapped[str] = mapped_column(Text)
    counts: Mapped[dict[str, int]] = mapped_column(JSONB)
    digest: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(10), server_default="STUDENT")
    data_request_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    operator: Mapped[str | None] = mapped_column(Text)


class AuditEntryV1(Base):
    """Audit entries chained one by one, as written before migration 0013 (no
    longer written; kept, verified and retained as they were). A district's
    chain continues from their head through its ``audit_records``."""

    __tablename__ = "audit_entries_v1"
    __table_args__ = (
        UniqueConstraint("district_id", "id", name="uq_audit_entries_district_id_id"),
        Index("ix_audit_subject", "district_id", "subject_student_id", "seq"),
        Index("ix_audit_at", "district_id", "at"),
        {"info": {"renamed_from": "audit_entries"}},
    )

    district_id: Mapped[uuid.UUID] = _district_pk()
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str] = mapped_column(Text)
    trace_id: Mapped[str | None] = mapped_column(Text)
    actor_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    actor_role: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(String(30))
    justification: Mapped[str | None] = mapped_column(Text)
    operation_name: Mapped[str | None] = mapped_column(Text)
    subject_student_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    fields: Mapped[list[str]] = mapped_column(ARRAY(Text))
    categories: Mapped[list[str]] = mapped_column(ARRAY(Text))
    decision: Mapped[str] = mapped_column(String(5))
    break_glass: Mapped[bool] = mapped_column(Boolean)
    prev_hash: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(Text)
    client_request_id: Mapped[str | None] = mapped_column(Text)


class AuditRecord(Base):
    """One chained record: a run of one request's entries that share everything
    but their subject (migration 0013). Its entries are numbered ``seq`` to
    ``seq + cardinality(subjects) - 1``; field and category names are codes of
    ``audit_names``. Partitioned by month of ``at`` (the table has no primary
    key in the database: ``(district_id, seq)`` is indexed, and unique by
    construction of the chain). The application role may only INSERT and SELECT.
    ``audit_entries`` is a view of every logical entry, old and new."""

    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_records_chain", "district_id", "seq"),
        Index("ix_audit_records_actor", "district_id", "actor_id", "seq"),
        Index("ix_audit_records_subjects", "subjects", postgresql_using="gin"),
        {"postgresql_partition_by": "RANGE (at)"},
    )

    district_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str] = mapped_column(Text)
    client_request_id: Mapped[str | None] = mapped_column(Text)
    trace_id: Mapped[str | None] = mapped_column(Text)
    actor_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    actor_role: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text)
    justification: Mapped[str | None] = mapped_column(Text)
    operation_name: Mapped[str | None] = mapped_column(Text)
    subjects: Mapped[list[uuid.UUID | None]] = mapped_column(ARRAY(UUID(as_uuid=True)))
    fields: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    categories: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    decision: Mapped[str] = mapped_column(Text)
    break_glass: Mapped[bool] = mapped_column(Boolean)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditHead(Base):
    """Each chain's head: the seq of its last entry and its record's hash, moved
    in the statement that writes the records (migration 0013)."""

    __tablename__ = "audit_heads"

    district_id: Mapped[uuid.UUID] = _district_pk()
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditName(Base):
    """The codes of the field and category names audit records store (migration 0013)."""

    __tablename__ = "audit_names"

    code: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)


class AuditAnchor(Base):
    """Where a district's chain starts after retention removed its oldest entries
    (migration 0004): the last removed entry's seq, hash and time, signed with
    the audit key. Written by the retention job only; the app role may read it."""

    __tablename__ = "audit_anchors"

    district_id: Mapped[uuid.UUID] = _district_pk()
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    removed_at: Mapped[dt.datetime] = _now()
    removed: Mapped[int] = mapped_column(BigInteger)
    mac: Mapped[str] = mapped_column(Text)


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
    "audit_records",
    "audit_entries_v1",
    "audit_heads",
)
