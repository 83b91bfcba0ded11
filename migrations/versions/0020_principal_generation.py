"""The principal's generation: a counter that every change to what ``pledgeql_principal`` reads moves.

A worker keeps the standing it read for a caller (``resolvers.principal.Standings``)
and serves the caller's next reads from it without asking again. Each
compiled read statement returns the counter from its own snapshot: the
answer stands only if it is still the one read with the standing, and the
connection still carries the row-level security setting the standing
gives. Otherwise the request is served again with the standing read anew.
So a kept standing is never older than the statement that uses it.

The counter is a row, not a sequence: a transaction's move is seen by
others only once it commits, with the change it counts, in the same
snapshot. It moves at the commit of a transaction that changed what the
principal reads: deferred row triggers (``pledgeql_principal_moved``, once
per transaction, however many rows) on ``users`` (its identity, role,
district, school and disabled flag; not ``last_active_at``, which each
submission moves), ``platform_users``, ``class_teachers``, ``enrollments``,
``guardian_links``, ``support_grants`` and ``districts`` (whose settings the
standing carries), and a statement trigger on TRUNCATE of each. So writers
of those tables in different districts wait on the row only for each
other's commit, not for each other's whole transaction (a roster import
of one district does not hold a grant's revocation in another).

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"
# table -> the UPDATE OF column list its trigger watches (None: every update)
WATCHED: dict[str, str | None] = {
    "users": "id, role, district_id, school_id, disabled",
    "platform_users": "id, role, disabled",
    "class_teachers": None,
    "enrollments": None,
    "guardian_links": None,
    "support_grants": None,
    "districts": None,
}


def upgrade() -> None:
    op.execute(
        "CREATE TABLE principal_generation ("
        " only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),"
        " n bigint NOT NULL,"
        " moved_by xid8)"
    )
    op.execute("INSERT INTO principal_generation (only_row, n) VALUES (true, 1)")
    op.execute(f"GRANT SELECT ON principal_generation TO {APP_ROLE}")
    op.execute(
        """
        CREATE FUNCTION pledgeql_principal_moved() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
        AS $$
        BEGIN
            -- Once per transaction: its later rows find the row moved by it already.
            UPDATE principal_generation SET n = n + 1, moved_by = pg_current_xact_id()
            WHERE moved_by IS DISTINCT FROM pg_current_xact_id();
            RETURN NULL;
        END
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION pledgeql_principal_moved() FROM PUBLIC")
    for table, columns in WATCHED.items():
        update = "UPDATE" if columns is None else f"UPDATE OF {columns}"
        op.execute(
            f"CREATE CONSTRAINT TRIGGER principal_moved AFTER INSERT OR DELETE OR {update} ON {table} "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pledgeql_principal_moved()"
        )
        op.execute(
            f"CREATE TRIGGER principal_truncated AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION pledgeql_principal_moved()"
        )


def downgrade() -> None:
    for table in WATCHED:
        op.execute(f"DROP TRIGGER principal_truncated ON {table}")
        op.execute(f"DROP TRIGGER principal_moved ON {table}")
    op.execute("DROP FUNCTION pledgeql_principal_moved()")
    op.execute("DROP TABLE principal_generation")
