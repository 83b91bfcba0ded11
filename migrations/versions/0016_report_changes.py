"""Counters of what changed under the aggregate reports, so that a report is
computed again only when what it counts has changed.

A report is a pure function of its inputs (resolvers/reports.py ``Universe``,
dimensions, slice, k) and of the rows it reads. ``report_changes`` counts,
per district and per source table, the committed statements that changed
those rows; resolvers/report_cache.py keeps a computed report with the sum of
the counters of its districts and sources, and serves it again only while that
sum is the same.

* Every counter only grows, so a sum that is the same is the same counters:
  nothing committed has changed the report's rows in between. A counter and the
  rows it counts change in one transaction, so whoever sees one sees both.
* Triggers bump them: statement-level with transition tables on the district
  tables a report reads (the districts of the changed rows), row-level on the
  report attributes of ``users`` (an update that sets only ``last_active_at``,
  as every answer does, changes no report), and platform-wide (the nil
  district, counted in every report) on ``items``, ``assessments`` and any
  TRUNCATE.
* A counter is one of ``SHARDS`` rows per (district, source), chosen by the
  writing backend, so that concurrent writers in one district rarely wait on
  each other's row lock until they commit.
* The column is ``district``, not ``district_id``: the counters are not a
  district's data (no export, no deletion, no row-level security). The app role
  reads them only through ``pledgeql_report_generation``, and no role but the
  owner's triggers writes them.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"
SHARDS = 8
PLATFORM = "00000000-0000-0000-0000-000000000000"

# The district tables a report reads (resolvers/reports.py), by what changes them.
DISTRICT_SOURCES = ("responses", "activity_events", "consents", "enrollments", "assignments")
PLATFORM_SOURCES = ("items", "assessments")
# The student attributes a report groups or filters by.
USER_COLUMNS = (
    "district_id",
    "id",
    "role",
    "school_id",
    "grade_level",
    "gender",
    "ethnicity",
    "english_learner",
    "special_education",
    "economically_disadvantaged",
)

_BUMP = (
    "INSERT INTO report_changes AS c (district, source, shard, generation) "
    "SELECT d, TG_TABLE_NAME, pg_backend_pid() % {shards}, 1 FROM ({districts}) AS changed(d) "
    "ON CONFLICT (district, source, shard) DO UPDATE SET generation = c.generation + 1;"
)
_FUNCTIONS = {
    "pledgeql_report_changed_new": _BUMP.format(shards=SHARDS, districts="SELECT DISTINCT district_id FROM new_rows"),
    "pledgeql_report_changed_old": _BUMP.format(shards=SHARDS, districts="SELECT DISTINCT district_id FROM old_rows"),
    "pledgeql_report_changed_both": _BUMP.format(
        shards=SHARDS, districts="SELECT district_id FROM old_rows UNION SELECT district_id FROM new_rows"
    ),
    "pledgeql_report_changed_platform": _BUMP.format(shards=SHARDS, districts=f"VALUES ('{PLATFORM}'::uuid)"),
    # Row-level (users' report attributes): the row's district, before and after.
    "pledgeql_report_changed_row": _BUMP.format(
        shards=SHARDS, districts="SELECT OLD.district_id UNION SELECT NEW.district_id"
    ),
}
NEW_ROWS = "REFERENCING NEW TABLE AS new_rows"
OLD_ROWS = "REFERENCING OLD TABLE AS old_rows"


def _trigger(name: str, table: str, event: str, function: str, transition: str = "") -> None:
    op.execute(
        f"CREATE TRIGGER {name} AFTER {event} ON {table} {transition} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )


def upgrade() -> None:
    op.execute(
        "CREATE TABLE report_changes (district uuid NOT NULL, source text NOT NULL, shard smallint NOT NULL, "
        "generation bigint NOT NULL, CONSTRAINT pk_report_changes PRIMARY KEY (district, source, shard))"
    )
    op.execute(f"REVOKE ALL ON report_changes FROM PUBLIC, {APP_ROLE}")
    for name, body in _FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            f"SET search_path = public, pg_temp AS $$ BEGIN {body} RETURN NULL; END $$"
        )
        op.execute(f"REVOKE ALL ON FUNCTION {name}() FROM PUBLIC")

    for table in (*DISTRICT_SOURCES, "users"):
        _trigger("report_changed_insert", table, "INSERT", "pledgeql_report_changed_new", NEW_ROWS)
        _trigger("report_changed_delete", table, "DELETE", "pledgeql_report_changed_old", OLD_ROWS)
    for table in DISTRICT_SOURCES:
        _trigger(
            "report_changed_update",
            table,
            "UPDATE",
            "pledgeql_report_changed_both",
            f"{OLD_ROWS} NEW TABLE AS new_rows",
        )
    # A student's report attributes only, and only when one of them changes value.
    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in USER_COLUMNS)
    op.execute(
        f"CREATE TRIGGER report_changed_update AFTER UPDATE OF {', '.join(USER_COLUMNS)} ON users "
        f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION pledgeql_report_changed_row()"
    )
    for table in PLATFORM_SOURCES:
        _trigger("report_changed", table, "INSERT OR UPDATE OR DELETE", "pledgeql_report_changed_platform")
    for table in (*DISTRICT_SOURCES, "users", *PLATFORM_SOURCES):
        _trigger("report_changed_truncate", table, "TRUNCATE", "pledgeql_report_changed_platform")

    op.execute(
        "CREATE FUNCTION pledgeql_report_generation(p_districts uuid[], p_sources text[]) RETURNS bigint "
        "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$ "
        "SELECT coalesce(sum(generation), 0)::bigint FROM report_changes "
        f"WHERE district = ANY (p_districts || '{PLATFORM}'::uuid) AND source = ANY (p_sources) $$"
    )
    op.execute("REVOKE ALL ON FUNCTION pledgeql_report_generation(uuid[], text[]) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION pledgeql_report_generation(uuid[], text[]) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS pledgeql_report_generation(uuid[], text[])")
    for table in (*DISTRICT_SOURCES, "users", *PLATFORM_SOURCES):
        for name in ("report_changed", "report_changed_insert", "report_changed_delete", "report_changed_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS report_changed_truncate ON {table}")
    for name in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.execute("DROP TABLE IF EXISTS report_changes")
