"""What aggregate reports read instead of every response.

A report first sums each student's responses (count, score, correct), then
groups the students. Two structures make that first step cheap:

* ``report_student_totals``: each student's all-time totals per class (the
  class of the answered assignment; practice outside an assignment under the
  nil uuid), kept exact by statement-level triggers on ``responses`` (insert,
  update, delete and truncate, each one set-based over its transition table)
  and on ``assignments`` (an assignment moved to another class). A report
  over all time grouped by class or by student attributes (district, school,
  grade level, demographics) reads a row or two per student instead of every
  response: a teacher's class report is a slice of the district's. The
  triggers run as the owner (SECURITY DEFINER): the app role may read the
  totals of its request's districts (row-level security) and delete them with
  a student's record, never add to or change them. They are part of the
  student's record (exported and deleted with it) and go with the student's
  row too (ON DELETE CASCADE).
* ``ix_users_report``: the students' report attributes (school, grade level,
  demographics) by (district, id), so that grouping the students is an
  index-only scan too, not a read of every user's wide row.
* ``ix_responses_report``: for windowed reports, the same first step as an
  index-only scan in the order it groups by, without touching the table's wide
  rows (answers and feedback). It has the key of ``ix_responses_student_time``,
  which it could replace; that one is left to its owners.

Bulk loads that switch triggers off (``session_replication_role = replica``)
would leave the totals stale; the demo seed switches them off only when the
tables have no triggers of their own, so it keeps them.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"
IN_SCOPE = (
    "district_id = ANY ((SELECT string_to_array("
    "nullif(current_setting('pledgeql.district_ids', true), ''), ','))::uuid[])"
)

NO_CLASS = "00000000-0000-0000-0000-000000000000"

# Per (district, student, class) of a set of responses: what it adds to the
# totals. A response's class is its assignment's; practice has NO_CLASS.
_SUMS = f"""
    SELECT r.district_id, r.student_id, coalesce(a.class_id, '{NO_CLASS}'::uuid) AS class_id,
           count(*) AS responses, sum(r.score::numeric) AS score_sum, count(*) FILTER (WHERE r.correct) AS correct
    FROM {{rows}} r LEFT JOIN assignments a ON a.district_id = r.district_id AND a.id = r.assignment_id
    {{where}}
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
_COLUMNS = "(district_id, student_id, class_id, responses, score_sum, correct)"
_KEY = "t.district_id = o.district_id AND t.student_id = o.student_id AND t.class_id = o.class_id"
_ADD = (
    f"INSERT INTO report_student_totals AS t {_COLUMNS} "
    + _SUMS.format(rows="new_rows", where="")
    + " ON CONFLICT (district_id, student_id, class_id) DO UPDATE SET responses = t.responses + excluded.responses, "
    "score_sum = t.score_sum + excluded.score_sum, correct = t.correct + excluded.correct;"
)
_SUBTRACT = (
    "UPDATE report_student_totals AS t SET responses = t.responses - o.responses, "
    "score_sum = t.score_sum - o.score_sum, correct = t.correct - o.correct FROM ("
    + _SUMS.format(rows="old_rows", where="")
    + f") AS o WHERE {_KEY};"
    " DELETE FROM report_student_totals AS t USING ("
    + _SUMS.format(rows="old_rows", where="")
    + f") AS o WHERE {_KEY} AND t.responses <= 0;"
)
# An assignment moved to another class moves its responses' totals: the
# students who answered it are counted again from their responses.
_MOVED = (
    "SELECT DISTINCT r.district_id, r.student_id FROM responses r"
    " JOIN old_rows o ON o.district_id = r.district_id AND o.id = r.assignment_id"
    " JOIN new_rows n ON n.district_id = o.district_id AND n.id = o.id"
    " WHERE n.class_id IS DISTINCT FROM o.class_id"
)
_RECOUNT = (
    f"DELETE FROM report_student_totals AS t USING ({_MOVED}) AS o"
    " WHERE t.district_id = o.district_id AND t.student_id = o.student_id;"
    f" INSERT INTO report_student_totals {_COLUMNS} "
    + _SUMS.format(rows="responses", where=f"WHERE (r.district_id, r.student_id) IN ({_MOVED})")
    + ";"
)
_FUNCTIONS = {
    "pledgeql_report_totals_insert": _ADD,
    "pledgeql_report_totals_delete": _SUBTRACT,
    "pledgeql_report_totals_update": _SUBTRACT + " " + _ADD,
    "pledgeql_report_totals_truncate": "TRUNCATE report_student_totals;",
    "pledgeql_report_totals_reclass": _RECOUNT,
}


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_responses_report ON responses (district_id, student_id, submitted_at) INCLUDE (score, correct)"
    )
    op.execute(
        "CREATE INDEX ix_users_report ON users (district_id, id) INCLUDE (school_id, grade_level, gender, "
        "ethnicity, english_learner, special_education, economically_disadvantaged) WHERE role = 'STUDENT'"
    )
    op.create_table(
        "report_student_totals",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("student_id", sa.UUID(), nullable=False),
        sa.Column("class_id", sa.UUID(), nullable=False),
        sa.Column("responses", sa.BigInteger(), nullable=False),
        sa.Column("score_sum", sa.Numeric(), nullable=False),
        sa.Column("correct", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_id", "student_id"],
            ["users.district_id", "users.id"],
            name=op.f("fk_report_student_totals_district_id_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("district_id", "student_id", "class_id", name=op.f("pk_report_student_totals")),
    )
    op.execute(f"INSERT INTO report_student_totals {_COLUMNS} " + _SUMS.format(rows="responses", where=""))
    # The app reads the totals to report, and deletes them with a student's
    # record (resolvers/rights.py deletes from every table naming a student);
    # only the triggers add to them.
    op.execute(f"GRANT SELECT, DELETE ON report_student_totals TO {APP_ROLE}")
    # Enabled, not forced (as in 0002): it binds the app role, not the owner
    # whose triggers keep the totals.
    op.execute("ALTER TABLE report_student_totals ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON report_student_totals TO {APP_ROLE} USING ({IN_SCOPE})")

    for name, body in _FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            f"SET search_path = public, pg_temp AS $$ BEGIN {body} RETURN NULL; END $$"
        )
        op.execute(f"REVOKE ALL ON FUNCTION {name}() FROM PUBLIC")
    op.execute(
        "CREATE TRIGGER report_totals_insert AFTER INSERT ON responses REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION pledgeql_report_totals_insert()"
    )
    op.execute(
        "CREATE TRIGGER report_totals_delete AFTER DELETE ON responses REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION pledgeql_report_totals_delete()"
    )
    op.execute(
        "CREATE TRIGGER report_totals_update AFTER UPDATE ON responses "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION pledgeql_report_totals_update()"
    )
    op.execute(
        "CREATE TRIGGER report_totals_truncate AFTER TRUNCATE ON responses "
        "FOR EACH STATEMENT EXECUTE FUNCTION pledgeql_report_totals_truncate()"
    )
    op.execute(
        "CREATE TRIGGER report_totals_reclass AFTER UPDATE ON assignments "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION pledgeql_report_totals_reclass()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS report_totals_reclass ON assignments")
    for trigger in ("insert", "delete", "update", "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS report_totals_{trigger} ON responses")
    for name in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_table("report_student_totals")
    op.execute("DROP INDEX IF EXISTS ix_users_report")
    op.execute("DROP INDEX IF EXISTS ix_responses_report")
