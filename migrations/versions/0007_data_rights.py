"""Data rights, retention and roster import.

- ``deletion_certificates`` also certify a whole district's deletion at the
  end of its contract (``scope = 'DISTRICT'``, no student), and name the data
  request a deletion fulfilled and the operator who ran a command-line one.
- ``roster_modified_at`` keeps a roster record's OneRoster
  ``dateLastModified``, so that an older delta row never overwrites a newer one.
- Enrollments' ``sourced_id`` is unique per district like the other roster keys.
- ``districts.contract_ended_at``: set when the district's data was exported
  and deleted; the row stays, because it holds the retention settings of the
  audit entries and certificates that are kept.
- Indexes for retention's per-district time scans and per-student lookups.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ROSTER_TABLES = ("schools", "users", "classes", "enrollments")


def upgrade() -> None:
    op.alter_column("deletion_certificates", "student_id", nullable=True)
    op.add_column(
        "deletion_certificates",
        sa.Column("scope", sa.String(length=10), server_default="STUDENT", nullable=False),
    )
    op.add_column("deletion_certificates", sa.Column("data_request_id", sa.UUID(), nullable=True))
    op.add_column("deletion_certificates", sa.Column("operator", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_deletion_certificates_scope"),
        "deletion_certificates",
        "(scope = 'STUDENT' AND student_id IS NOT NULL) OR (scope = 'DISTRICT' AND student_id IS NULL)",
    )
    op.create_index(
        "ix_deletion_certificates_time", "deletion_certificates", ["district_id", "deleted_at"], unique=False
    )

    for table in ROSTER_TABLES:
        op.add_column(table, sa.Column("roster_modified_at", sa.DateTime(timezone=True), nullable=True))
    op.create_unique_constraint(
        op.f("uq_enrollments_district_id_sourced_id"), "enrollments", ["district_id", "sourced_id"]
    )

    op.add_column("districts", sa.Column("contract_ended_at", sa.DateTime(timezone=True), nullable=True))

    op.create_index("ix_activity_district_time", "activity_events", ["district_id", "occurred_at"], unique=False)
    op.create_index("ix_device_district_time", "device_sessions", ["district_id", "started_at"], unique=False)
    op.create_index("ix_data_requests_student", "data_requests", ["district_id", "student_id"], unique=False)
    op.create_index("ix_corrections_student", "corrections", ["district_id", "student_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_corrections_student", table_name="corrections")
    op.drop_index("ix_data_requests_student", table_name="data_requests")
    op.drop_index("ix_device_district_time", table_name="device_sessions")
    op.drop_index("ix_activity_district_time", table_name="activity_events")
    op.drop_column("districts", "contract_ended_at")
    op.drop_constraint(op.f("uq_enrollments_district_id_sourced_id"), "enrollments", type_="unique")
    for table in ROSTER_TABLES:
        op.drop_column(table, "roster_modified_at")
    op.drop_index("ix_deletion_certificates_time", table_name="deletion_certificates")
    op.drop_constraint("ck_deletion_certificates_scope", "deletion_certificates", type_="check")
    op.drop_column("deletion_certificates", "operator")
    op.drop_column("deletion_certificates", "data_request_id")
    op.drop_column("deletion_certificates", "scope")
    op.execute("DELETE FROM deletion_certificates WHERE student_id IS NULL")
    op.alter_column("deletion_certificates", "student_id", nullable=False)
