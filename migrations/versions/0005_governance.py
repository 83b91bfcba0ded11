"""District governance: a district's own settings are writable, and the
database refuses settings and grants the API refuses.

1. Revision 0002 wrote the UPDATE policy on ``districts`` by replacing
   ``district_id`` with ``id`` in the tenant predicate, which also renamed the
   setting it reads (``pledgeql.district_ids`` became ``pledgeql.ids``, which
   nothing sets), so no request could ever update its district. The policy is
   recreated here on the setting the server does set.
2. The governance mutations validate their input with clear messages; these
   constraints are the backstop for any other writer (a maintenance script, a
   future code path): the minimum group size stays within 5 to 30, retention
   periods stay positive, and a support grant has a ticket and ends after it
   starts.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"

# The request's districts (see 0002), evaluated once per statement.
OWN_DISTRICT = (
    "id = ANY ((SELECT string_to_array(nullif(current_setting('pledgeql.district_ids', true), ''), ','))::uuid[])"
)
# What revision 0002 created, restored on downgrade.
BROKEN_OWN_DISTRICT = OWN_DISTRICT.replace("pledgeql.district_ids", "pledgeql.ids")

CHECKS = (
    ("districts", "ck_districts_minimum_group_size_range", "minimum_group_size BETWEEN 5 AND 30"),
    (
        "districts",
        "ck_districts_retention_days_positive",
        "responses_days > 0 AND activity_days > 0 AND device_days > 0 AND audit_days > 0",
    ),
    ("support_grants", "ck_support_grants_ticket_present", "char_length(btrim(ticket)) BETWEEN 1 AND 200"),
    ("support_grants", "ck_support_grants_expires_after_creation", "expires_at > created_at"),
)


def _own_district_writes(predicate: str) -> None:
    op.execute("DROP POLICY IF EXISTS own_district_writes ON districts")
    op.execute(
        f"CREATE POLICY own_district_writes ON districts FOR UPDATE TO {APP_ROLE} "
        f"USING ({predicate}) WITH CHECK ({predicate})"
    )


def upgrade() -> None:
    _own_district_writes(OWN_DISTRICT)
    for table, name, condition in CHECKS:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({condition})")


def downgrade() -> None:
    for table, name, _ in reversed(CHECKS):
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
    _own_district_writes(BROKEN_OWN_DISTRICT)
