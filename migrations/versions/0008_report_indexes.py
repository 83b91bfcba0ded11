"""An index that answers aggregate reports from the index alone.

A report first sums each student's responses (count, score, correct) in the
window, then groups the students. ``ix_responses_report`` holds everything
that first step reads, in the order it groups by, so PostgreSQL runs it as an
index-only scan without a sort and without touching the table's wide rows
(answers and feedback). It has the key of ``ix_responses_student_time``,
which it could replace; that one is left to its owners.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_responses_report ON responses (district_id, student_id, submitted_at) INCLUDE (score, correct)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_responses_report")
