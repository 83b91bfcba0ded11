"""The database caps the lists the cost model counts at their bound.

A class has at most 10 teachers, a student at most 10 guardians, an
assessment at most 100 items: ``server/limits.py`` (``DATABASE_CAPS``) counts
these lists at these numbers, so a client's query is measured by what it can
really cost, and these triggers make sure no row ever breaks them (whoever
writes: the API, a roster import, the seed). Statement-level, over the
statement's new rows, so that a bulk load checks each list once.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# (table, the columns that name one list, the cap, what the error says)
CAPS = (
    ("class_teachers", ("district_id", "class_id"), 10, "A class has at most 10 teachers"),
    ("guardian_links", ("district_id", "student_id"), 10, "A student has at most 10 guardians"),
    ("items", ("assessment_id",), 100, "An assessment has at most 100 items"),
)

FUNCTION = """
CREATE FUNCTION pledgeql_list_cap() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    keys text := TG_ARGV[0];
    cap integer := TG_ARGV[1]::integer;
    over boolean;
BEGIN
    EXECUTE format(
        'SELECT EXISTS (SELECT 1 FROM %I t WHERE (%s) IN (SELECT DISTINCT %s FROM new_rows) '
        'GROUP BY %s HAVING count(*) > %s)',
        TG_TABLE_NAME, keys, keys, keys, cap
    ) INTO over;
    IF over THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = TG_ARGV[2];
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.execute(FUNCTION)
    for table, keys, cap, message in CAPS:
        columns = ", ".join(keys)
        for event in ("INSERT", "UPDATE"):
            op.execute(
                f"CREATE TRIGGER {table}_cap_{event.lower()} AFTER {event} ON {table} "
                f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                f"EXECUTE FUNCTION pledgeql_list_cap('{columns}', '{cap}', '{message}')"
            )


def downgrade() -> None:
    for table, _, _, _ in reversed(CAPS):
        for event in ("insert", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_cap_{event} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS pledgeql_list_cap()")
