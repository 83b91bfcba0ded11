"""The audit chain's head lookup and its retention anchors.

``pledgeql_audit_heads(districts)`` takes each district's chain lock (a
transaction-level advisory lock, in district order so that two requests never
deadlock) and only then reads each chain's head. It is a VOLATILE plpgsql
function on purpose: in READ COMMITTED each statement inside it takes a new
snapshot, so the head is read after the lock is held and sees the entries of
the transaction that held it before. (The same lock and read in one plain SQL
statement would share a snapshot taken before the lock, and could read a
stale head.) Lock and head cost the writer one round trip instead of two,
and the function costs no more than those two statements did over a local
socket (0.26 ms against 0.26 ms, bench/audit_overhead.py's machine). It runs
as the owner (SECURITY DEFINER) so that reading a head is always one backward
step on the primary key: under the app role's row-level security policy, a
table without statistics yet got a plan that sorted the district's whole
chain (21 ms at 7,000 entries, and growing). It answers only for the
request's own districts (the ``pledgeql.district_ids`` setting that
row-level security reads), and only with heads: a seq and a hash, no
personal data.

``audit_anchors`` holds, per district, where the chain starts once retention
has removed its oldest entries: the seq and hash of the last removed entry,
signed with the audit key by the retention job (the key never reaches the
database). ``pledgeql audit verify`` accepts a chain that starts after seq 1
only from a valid anchor. The app role may read anchors (a chain whose every
entry was removed continues from its anchor), never write them.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"
IN_SCOPE = (
    "district_id = ANY ((SELECT string_to_array("
    "nullif(current_setting('pledgeql.district_ids', true), ''), ','))::uuid[])"
)


def upgrade() -> None:
    op.create_table(
        "audit_anchors",
        sa.Column("district_id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("removed", sa.BigInteger(), nullable=False),
        sa.Column("mac", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("district_id", name=op.f("pk_audit_anchors")),
    )
    op.execute(f"GRANT SELECT ON audit_anchors TO {APP_ROLE}")
    # Enabled, not forced (as in 0002): it binds the app role; the owner that
    # runs retention and verify sees every district.
    op.execute("ALTER TABLE audit_anchors ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON audit_anchors TO {APP_ROLE} USING ({IN_SCOPE})")
    op.execute(
        """
        CREATE FUNCTION pledgeql_audit_lock_key(p_district uuid) RETURNS bigint
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT hashtextextended('pledgeql.audit/' || p_district::text, 0) $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION pledgeql_audit_heads(p_districts uuid[])
        RETURNS TABLE (head_district uuid, head_seq bigint, head_hash text)
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
        AS $$
        BEGIN
            -- The request's own districts only (the setting row-level security
            -- reads): another district gets neither lock nor head, and row-level
            -- security then refuses its INSERT. The lock calls are volatile, so
            -- they run after the sort: always in district order.
            PERFORM pg_advisory_xact_lock(pledgeql_audit_lock_key(ds.x))
            FROM (SELECT DISTINCT y AS x FROM unnest(p_districts) AS y
                  WHERE y = ANY (string_to_array(current_setting('pledgeql.district_ids', true), ',')::uuid[])) AS ds
            ORDER BY ds.x;
            -- A new statement: a new snapshot, taken with every lock held.
            RETURN QUERY
                SELECT ds.x, h.seq, h.hash
                FROM (SELECT DISTINCT y AS x FROM unnest(p_districts) AS y
                      WHERE y = ANY (string_to_array(current_setting('pledgeql.district_ids', true), ',')::uuid[])) AS ds
                CROSS JOIN LATERAL (
                    (SELECT e.seq, e.hash FROM audit_entries e
                     WHERE e.district_id = ds.x ORDER BY e.seq DESC LIMIT 1)
                    UNION ALL
                    (SELECT a.seq, a.hash FROM audit_anchors a WHERE a.district_id = ds.x)
                    ORDER BY 1 DESC LIMIT 1
                ) AS h;
        END
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION pledgeql_audit_heads(uuid[]) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION pledgeql_audit_heads(uuid[]) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS pledgeql_audit_heads(uuid[])")
    op.execute("DROP FUNCTION IF EXISTS pledgeql_audit_lock_key(uuid)")
    op.execute("DROP POLICY IF EXISTS tenant_isolation ON audit_anchors")
    op.drop_table("audit_anchors")
