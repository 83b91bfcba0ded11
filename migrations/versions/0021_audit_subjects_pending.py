"""The audit's subjects index takes new records into its pending list.

Every audited read writes its records under the district's chain lock, and
each record put its subjects into the GIN index one by one (``fastupdate =
off``, migration 0013): a class view's record is 30 insertions into 30
posting trees, each decoding and re-encoding the leaf it lands on. For a
student read all day long that leaf is full: on the benchmark's database it
was a third of what PostgreSQL spent writing a class view's audit (118 us of
backend time per request in batches of 8, 75 us with the pending list).

With ``fastupdate = on`` a record's subjects are appended to the index's
pending list in one step, and are merged into the posting trees in bulk
(sorted, each tree touched once for many records) when the list passes
``gin_pending_list_limit``, or when VACUUM or ``gin_clean_pending_list``
runs. The limit is kept small, 512 kB (64 pages): the write that passes it
merges the list while it holds its chain lock (a few milliseconds), and a
search by subject reads the whole list besides the trees, so the access log's
pages stay as fast as before (measured: a guardian's view of who saw their
child unchanged). What a search finds is the same either way.

A partitioned index takes no storage parameters, so each month's index is
set: those that exist here, and each new month's, which
``pledgeql_audit_partitions`` now builds before it attaches the month (the
attach adopts it as the month's part of ``ix_audit_records_subjects``). The
rest of that function is 0013's.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"
PENDING = "fastupdate = on, gin_pending_list_limit = 512"
DIRECT = "fastupdate = off"

# Every month's part of the subjects' index (the default partition's too).
_EACH_PART = """
DO $$
DECLARE part regclass;
BEGIN
    FOR part IN
        SELECT i.inhrelid::regclass FROM pg_inherits i
        WHERE i.inhparent = 'ix_audit_records_subjects'::regclass
    LOOP
        EXECUTE format('ALTER INDEX %s SET ({options})', part);{after}
    END LOOP;
END
$$
"""


def _partitions_function(build_index: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION pledgeql_audit_partitions(p_until timestamptz) RETURNS integer
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
        AS $$
        DECLARE
            month timestamp;
            part text;
            made integer := 0;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtextextended('pledgeql.audit/partitions', 0));
            -- Each month (UTC) from this one to p_until's, and each month a record
            -- waits for in the default partition.
            FOR month IN
                SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'UTC') FROM audit_records_default
                UNION
                SELECT generate_series(date_trunc('month', now() AT TIME ZONE 'UTC'),
                                       date_trunc('month', p_until AT TIME ZONE 'UTC'), interval '1 month')
                ORDER BY 1
            LOOP
                part := 'audit_records_' || to_char(month, 'YYYY_MM');
                IF to_regclass(part) IS NULL THEN
                    EXECUTE format('CREATE TABLE %I (LIKE audit_records INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
                    EXECUTE format(
                        'WITH moved AS (DELETE FROM audit_records_default WHERE at >= %L AND at < %L RETURNING *) '
                        'INSERT INTO %I SELECT * FROM moved',
                        month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC', part);{build_index}
                    EXECUTE format('ALTER TABLE audit_records ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                                   part, month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC');
                    made := made + 1;
                END IF;
            END LOOP;
            RETURN made;
        END
        $$
        """


_BUILD_INDEX = f"""
                    EXECUTE format('CREATE INDEX %I ON %I USING gin (subjects) WITH ({PENDING})',
                                   part || '_subjects_idx', part);"""


def upgrade() -> None:
    op.execute(_EACH_PART.format(options=PENDING, after=""))
    op.execute(_partitions_function(_BUILD_INDEX))


def downgrade() -> None:
    op.execute(_partitions_function(""))
    # Turning the list off leaves what it holds: merge it now.
    op.execute(_EACH_PART.format(options=DIRECT, after="\n        PERFORM gin_clean_pending_list(part);"))
