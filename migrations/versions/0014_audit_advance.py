"""Moving a chain's head in the statement that writes its records.

``pledgeql_audit_advance`` takes each district's chain lock (the same lock as
``pledgeql_audit_heads``, in district order) if it is free, then in a new
snapshot checks that every head is the one the caller chained its records
onto, and only then moves them. A worker that wrote a district's last records
knows its head, so it can chain the next ones onto it and write them with one
statement. When a lock is held by another writer, or another writer moved the
head in between, it answers false at once: nothing is written, and the worker
waits for the lock and reads the head as before (``server/audit_writer.py``).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"


def upgrade() -> None:
    # As the owner, like pledgeql_audit_heads: the districts are the caller's own
    # (the setting row-level security reads), and a head moves only from the
    # expected one. lock_timeout is set first, for this transaction, as HEADS does.
    op.execute(
        """
        CREATE FUNCTION pledgeql_audit_advance(
            p_districts uuid[], p_seqs bigint[], p_hashes text[], p_new_seqs bigint[], p_new_hashes text[],
            p_lock_timeout text
        ) RETURNS boolean
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
        AS $$
        DECLARE
            mine uuid[] := string_to_array(current_setting('pledgeql.district_ids', true), ',')::uuid[];
            district uuid;
            matched integer;
        BEGIN
            IF coalesce(cardinality(p_districts), 0) = 0 OR NOT p_districts <@ coalesce(mine, '{}') THEN
                RETURN false;
            END IF;
            PERFORM set_config('lock_timeout', p_lock_timeout, true);
            FOR district IN SELECT DISTINCT x FROM unnest(p_districts) AS x ORDER BY 1 LOOP
                IF NOT pg_try_advisory_xact_lock(pledgeql_audit_lock_key(district)) THEN
                    RETURN false;
                END IF;
            END LOOP;
            SELECT count(*) INTO matched
            FROM unnest(p_districts, p_seqs, p_hashes) AS e(district_id, seq, hash)
            JOIN audit_heads h ON h.district_id = e.district_id AND h.seq = e.seq AND h.hash = decode(e.hash, 'hex');
            IF matched <> cardinality(p_districts) THEN
                RETURN false;
            END IF;
            UPDATE audit_heads h SET seq = n.seq, hash = decode(n.hash, 'hex')
            FROM unnest(p_districts, p_new_seqs, p_new_hashes) AS n(district_id, seq, hash)
            WHERE h.district_id = n.district_id;
            RETURN true;
        END
        $$
        """
    )
    op.execute(
        "REVOKE ALL ON FUNCTION pledgeql_audit_advance(uuid[], bigint[], text[], bigint[], text[], text) FROM PUBLIC"
    )
    op.execute(
        "GRANT EXECUTE ON FUNCTION pledgeql_audit_advance(uuid[], bigint[], text[], bigint[], text[], text) "
        f"TO {APP_ROLE}"
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION pledgeql_audit_advance(uuid[], bigint[], text[], bigint[], text[], text)")
