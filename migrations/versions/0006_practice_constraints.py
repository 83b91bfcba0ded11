"""Bounds on what student practice and classroom writes may store.

The resolvers validate every input with a clear BAD_USER_INPUT first; these
CHECK constraints are the database's own guarantee of the same bounds, so
that no other writer (an import, a script) can store what the API refuses.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHECKS = (
    ("responses", "ck_responses_time_spent_range", "time_spent_seconds BETWEEN 0 AND 86400"),
    ("responses", "ck_responses_answer_length", "char_length(answer) <= 10000"),
    ("responses", "ck_responses_idempotency_key_length", "char_length(idempotency_key) BETWEEN 1 AND 200"),
    ("activity_events", "ck_activity_events_duration_range", "duration_ms BETWEEN 0 AND 86400000"),
    ("activity_events", "ck_activity_events_target_length", "char_length(target) <= 1000"),
    ("assignments", "ck_assignments_title_length", "char_length(title) BETWEEN 1 AND 200"),
)


def upgrade() -> None:
    # A CHECK passes on NULL, so the nullable columns stay optional.
    for table, name, condition in CHECKS:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({condition})")


def downgrade() -> None:
    for table, name, _ in reversed(CHECKS):
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
