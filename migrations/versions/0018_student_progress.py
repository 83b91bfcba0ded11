"""Each student's progress, kept by triggers instead of computed on every read.

``StudentProgress`` (schema.graphql: responses submitted, average score,
percent correct, assignments completed, mastery per skill) was computed from
all of the student's responses each time it was read: a class's progress
screen read every response of 30 students, and a student who answers for a
year has thousands. ``student_progress`` holds it, one row per student with
responses (a student with none has no row and reads as zeros), computed by
the same SQL over the same rows, so it reads exactly as it did.

* Statement-level triggers (SECURITY DEFINER, as in 0008) compute it again
  for the students a statement touched: on ``responses`` (insert, update,
  delete, truncate), on ``items`` (an item added, removed or given another
  skill or assessment changes mastery and completion) and on ``assignments``
  (an assignment given another assessment).
* Two transactions answering for one student must not each compute over
  their own snapshot and keep the other's result out: the refresh first makes
  sure the students' rows exist and locks them, in order, and computes only
  in the next statement, whose snapshot (read committed) sees whatever
  committed while it waited. Row locks, not advisory locks: a statement may
  touch many thousands of students (the seed, retention), more than the lock
  table holds.
* The app role reads the rows of its request's districts (row-level
  security) and deletes them with a student's record (resolvers/rights.py
  deletes from every table naming a student); only the triggers write them.
  They go with the student's row too (ON DELETE CASCADE).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"
IN_SCOPE = (
    "district_id = ANY ((SELECT string_to_array("
    "nullif(current_setting('pledgeql.district_ids', true), ''), ','))::uuid[])"
)

# One student's progress (the student is {d}, {s}): their responses read once
# (rs); the averages rounded half away from zero, the score and the mastery
# levels to 4 places, the percentage to 2; an assignment is completed when they
# answered in it and every item of its assessment has a response of theirs for it.
PROGRESS = """
    WITH rs AS MATERIALIZED (SELECT r.score, r.correct, r.assignment_id, r.item_id FROM responses r
        WHERE r.district_id = {d} AND r.student_id = {s})
    SELECT count(*) AS responses_submitted, round(avg(rs.score)::numeric, 4)::float8 AS average_score,
           round(100.0 * avg(rs.correct::int), 2)::float8 AS percent_correct,
           (SELECT count(*) FROM assignments a
              WHERE a.district_id = {d} AND a.id IN (SELECT s.assignment_id FROM rs s)
                AND EXISTS (SELECT 1 FROM items i WHERE i.assessment_id = a.assessment_id)
                AND NOT EXISTS (SELECT 1 FROM items i WHERE i.assessment_id = a.assessment_id
                    AND NOT EXISTS (SELECT 1 FROM rs s WHERE s.assignment_id = a.id AND s.item_id = i.id))
           ) AS assignments_completed,
           (SELECT coalesce(jsonb_agg(jsonb_build_object('skill', m.skill, 'level', m.level) ORDER BY m.skill),
                   '[]'::jsonb)
              FROM (SELECT i.skill, round(avg(s.score)::numeric, 4)::float8 AS level
                    FROM rs s JOIN items i ON i.id = s.item_id GROUP BY i.skill) m
           ) AS mastery
    FROM rs
"""
COLUMNS = "responses_submitted, average_score, percent_correct, assignments_completed, mastery"
KEYS = "(SELECT DISTINCT u.d, u.s FROM unnest(p_districts, p_students) AS u(d, s))"

# Generic plans: planning the progress for the students' values each time costs three
# times what running it does (about 1 ms against 0.3 ms for one student's answer).
REFRESH = f"""
CREATE FUNCTION pledgeql_progress_refresh(p_districts uuid[], p_students uuid[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF coalesce(cardinality(p_students), 0) = 0 THEN
        RETURN;
    END IF;
    -- Each student's row, then its lock, in one order: a transaction that
    -- refreshed one of them and has not committed is waited for here.
    INSERT INTO student_progress (district_id, student_id, {COLUMNS})
    SELECT k.d, k.s, 0, NULL, NULL, 0, '[]'::jsonb FROM {KEYS} k
    JOIN users u ON u.district_id = k.d AND u.id = k.s
    ON CONFLICT (district_id, student_id) DO NOTHING;
    PERFORM 1 FROM student_progress p JOIN {KEYS} k ON p.district_id = k.d AND p.student_id = k.s
    ORDER BY p.district_id, p.student_id FOR UPDATE OF p;
    -- A new statement, a new snapshot: it sees what committed meanwhile.
    UPDATE student_progress p SET ({COLUMNS}) = (g.responses_submitted, g.average_score, g.percent_correct,
        g.assignments_completed, g.mastery)
    FROM {KEYS} k CROSS JOIN LATERAL ({PROGRESS.format(d="k.d", s="k.s")}) g
    WHERE p.district_id = k.d AND p.student_id = k.s;
    DELETE FROM student_progress p USING {KEYS} k
    WHERE p.district_id = k.d AND p.student_id = k.s AND p.responses_submitted = 0;
END
$$
"""

_STUDENTS_OF = "PERFORM pledgeql_progress_refresh(array_agg(c.district_id), array_agg(c.student_id)) FROM ({rows}) c;"
# The students who answered in assignments of the changed items' assessments (an item
# added or removed changes what completes them; an item with responses cannot be
# removed, and a new one has none), and, for a changed item, those who answered it.
# Only when there are any: responses has no index by item or assignment.
_IN_ASSIGNMENTS = (
    "SELECT r.district_id, r.student_id FROM responses r JOIN assignments a"
    " ON a.district_id = r.district_id AND a.id = r.assignment_id"
    " WHERE a.assessment_id IN (SELECT assessment_id FROM {t})"
)
_ITEMS_ASSIGNED = (
    "IF EXISTS (SELECT 1 FROM assignments WHERE assessment_id IN (SELECT assessment_id FROM {t})) THEN "
    + _STUDENTS_OF.format(rows=_IN_ASSIGNMENTS)
    + " END IF;"
)
_CHANGED_ITEMS = "(SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows) AS changed"
_FUNCTIONS = {
    "pledgeql_progress_new": _STUDENTS_OF.format(rows="SELECT DISTINCT district_id, student_id FROM new_rows"),
    "pledgeql_progress_old": _STUDENTS_OF.format(rows="SELECT DISTINCT district_id, student_id FROM old_rows"),
    "pledgeql_progress_both": _STUDENTS_OF.format(
        rows="SELECT district_id, student_id FROM old_rows UNION SELECT district_id, student_id FROM new_rows"
    ),
    "pledgeql_progress_truncate": "TRUNCATE student_progress;",
    "pledgeql_progress_items_new": _ITEMS_ASSIGNED.format(t="new_rows"),
    "pledgeql_progress_items_old": _ITEMS_ASSIGNED.format(t="old_rows"),
    "pledgeql_progress_items_both": "IF EXISTS (SELECT 1 FROM new_rows) THEN "
    + _STUDENTS_OF.format(
        rows=_IN_ASSIGNMENTS.format(t=_CHANGED_ITEMS)
        + f" UNION SELECT r.district_id, r.student_id FROM responses r WHERE r.item_id IN (SELECT id FROM {_CHANGED_ITEMS})"
    )
    + " END IF;",
    # An assignment given another assessment: the students who answered in it.
    "pledgeql_progress_reassessed": "IF EXISTS (SELECT 1 FROM old_rows o JOIN new_rows n ON n.district_id = o.district_id"
    " AND n.id = o.id WHERE n.assessment_id IS DISTINCT FROM o.assessment_id) THEN "
    + _STUDENTS_OF.format(
        rows="SELECT r.district_id, r.student_id FROM responses r"
        " JOIN old_rows o ON o.district_id = r.district_id AND o.id = r.assignment_id"
        " JOIN new_rows n ON n.district_id = o.district_id AND n.id = o.id"
        " WHERE n.assessment_id IS DISTINCT FROM o.assessment_id"
    )
    + " END IF;",
}
NEW_ROWS = "REFERENCING NEW TABLE AS new_rows"
OLD_ROWS = "REFERENCING OLD TABLE AS old_rows"
BOTH_ROWS = "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
# (trigger, table, event, transition tables, function)
TRIGGERS = (
    ("progress_insert", "responses", "INSERT", NEW_ROWS, "pledgeql_progress_new"),
    ("progress_delete", "responses", "DELETE", OLD_ROWS, "pledgeql_progress_old"),
    ("progress_update", "responses", "UPDATE", BOTH_ROWS, "pledgeql_progress_both"),
    ("progress_truncate", "responses", "TRUNCATE", "", "pledgeql_progress_truncate"),
    ("progress_insert", "items", "INSERT", NEW_ROWS, "pledgeql_progress_items_new"),
    ("progress_delete", "items", "DELETE", OLD_ROWS, "pledgeql_progress_items_old"),
    ("progress_update", "items", "UPDATE", BOTH_ROWS, "pledgeql_progress_items_both"),
    ("progress_reassessed", "assignments", "UPDATE", BOTH_ROWS, "pledgeql_progress_reassessed"),
)


def upgrade() -> None:
    op.create_table(
        "student_progress",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("responses_submitted", sa.BigInteger(), nullable=False),
        sa.Column("average_score", sa.Float(), nullable=True),
        sa.Column("percent_correct", sa.Float(), nullable=True),
        sa.Column("assignments_completed", sa.BigInteger(), nullable=False),
        sa.Column("mastery", sa.dialects.postgresql.JSONB(), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_id", "student_id"],
            ["users.district_id", "users.id"],
            name=op.f("fk_student_progress_district_id_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "student_id", name=op.f("pk_student_progress")),
    )
    op.execute(
        f"INSERT INTO student_progress (district_id, student_id, {COLUMNS}) "
        f"SELECT k.district_id, k.student_id, g.* FROM (SELECT DISTINCT district_id, student_id FROM responses) k "
        f"CROSS JOIN LATERAL ({PROGRESS.format(d='k.district_id', s='k.student_id')}) g"
    )
    op.execute(f"GRANT SELECT, DELETE ON student_progress TO {APP_ROLE}")
    # Enabled, not forced (as in 0002): it binds the app role, not the owner whose triggers keep the rows.
    op.execute("ALTER TABLE student_progress ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON student_progress TO {APP_ROLE} USING ({IN_SCOPE})")
    op.execute(REFRESH)
    op.execute("REVOKE ALL ON FUNCTION pledgeql_progress_refresh(uuid[], uuid[]) FROM PUBLIC")
    for name, body in _FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            f"SET search_path = public, pg_temp AS $$ BEGIN {body} RETURN NULL; END $$"
        )
        op.execute(f"REVOKE ALL ON FUNCTION {name}() FROM PUBLIC")
    for trigger, table, event, transition, function in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {trigger} AFTER {event} ON {table} {transition} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )


def downgrade() -> None:
    for trigger, table, _, _, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    for name in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.execute("DROP FUNCTION IF EXISTS pledgeql_progress_refresh(uuid[], uuid[])")
    op.drop_table("student_progress")
