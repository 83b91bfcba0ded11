"""A student's newest audit records when they were read often, but not lately.

``pledgeql_audit_subject_page`` (migration 0015) reads a month holding more
than ``CAP`` of a student's records along the district's chain, newest first,
until it has a page: that assumes their records are spread through the month.
A student read in a burst (an investigation, a busy week) and then not at all
while the district goes on is not found until the walk has passed everything
written since: 90,000 records and 87 ms on the benchmark's database, and in
proportion to the district's month at any scale.

The walk now stops after ``WALK`` records. A page not found by then is read
through the subjects' index: every record of the student in that month (at
most what the student has there, whatever the district has written since),
sorted newest first. The rest of the function is 0015's.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

CAP = 2000  # as in 0015: a month with more of a student's records than this is read along its chain
WALK = 4000  # records of the chain read before the subjects' index is asked instead


# 0015's function, with the branch for a month holding more than CAP of the student's records in between.
_HEAD = f"""
        CREATE OR REPLACE FUNCTION pledgeql_audit_subject_page(p_district uuid, p_subject uuid, p_before bigint, p_limit integer)
        RETURNS SETOF bigint
        LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
        AS $$
        DECLARE
            part record;
            found bigint[] := '{{}}';
            page bigint[];
            few bigint[];
            seen bigint;
            in_months integer := 0;
            oldest bigint;
        BEGIN
            IF p_limit <= 0 OR NOT coalesce(
                p_district = ANY (string_to_array(current_setting('pledgeql.district_ids', true), ',')::uuid[]),
                false
            ) THEN
                RETURN;
            END IF;
            IF p_limit IS NULL THEN
                -- Every record (a page narrowed further by its caller, an export): the subjects' index.
                RETURN QUERY SELECT x.seq FROM (
                    SELECT r.seq, r.district_id FROM audit_records r
                    WHERE r.subjects @> ARRAY[p_subject] AND r.seq < p_before OFFSET 0
                ) x WHERE x.district_id = p_district;
                RETURN;
            END IF;
            FOR part IN
                SELECT c.relname AS name, c.relname = 'audit_records_default' AS waiting
                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'audit_records'::regclass
                ORDER BY c.relname = 'audit_records_default' DESC, c.relname DESC
            LOOP
                IF oldest IS NOT NULL THEN
                    -- The month before the page's last: only records written after the page's oldest.
                    EXECUTE format(
                        'SELECT coalesce(array_agg(seq), ''{{}}'') FROM %I '
                        'WHERE district_id = $1 AND seq > $2 AND seq < $3 AND subjects @> ARRAY[$4]', part.name)
                    INTO page USING p_district, oldest, p_before, p_subject;
                    found := found || page;
                    EXIT;
                END IF;
                EXECUTE format(
                    'SELECT count(*), array_agg(seq) FILTER (WHERE district_id = $4) FROM ('
                    'SELECT seq, district_id FROM %I WHERE subjects @> ARRAY[$1] AND seq < $2 LIMIT $3) x', part.name)
                INTO seen, few USING p_subject, p_before, {CAP} + 1, p_district;
                CONTINUE WHEN seen = 0;
                IF seen <= {CAP} THEN
                    SELECT coalesce(array_agg(s ORDER BY s DESC), '{{}}') INTO page
                    FROM (SELECT s FROM unnest(few) s ORDER BY s DESC LIMIT p_limit) t;
"""
_TAIL = """
                found := found || page;
                IF NOT part.waiting THEN
                    in_months := in_months + cardinality(page);
                    IF in_months >= p_limit THEN
                        SELECT s INTO oldest FROM unnest(found) s ORDER BY s DESC OFFSET p_limit - 1 LIMIT 1;
                    END IF;
                END IF;
            END LOOP;
            RETURN QUERY SELECT s FROM unnest(found) s ORDER BY s DESC LIMIT p_limit;
        END
        $$
"""
# 0017: along the chain for at most WALK records, then the subjects' index.
_WALK_THEN_INDEX = f"""
                ELSE
                    -- The chain index newest first, the subject checked on each record, for at
                    -- most {WALK} records: a student read often lately is found there at once.
                    EXECUTE format(
                        'SELECT coalesce(array_agg(seq), ''{{}}'') FROM (SELECT seq FROM ('
                        'SELECT seq, subjects FROM %I WHERE district_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $5'
                        ') x WHERE subjects @> ARRAY[$3] LIMIT $4) y', part.name)
                    INTO page USING p_district, p_before, p_subject, p_limit, {WALK};
                    IF cardinality(page) < p_limit THEN
                        -- Read often earlier in the month only: the subjects' index, every record
                        -- of theirs in the month, newest first.
                        EXECUTE format(
                            'SELECT coalesce(array_agg(seq ORDER BY seq DESC), ''{{}}'') FROM (SELECT seq FROM ('
                            'SELECT seq, district_id FROM %I WHERE subjects @> ARRAY[$1] AND seq < $2 OFFSET 0'
                            ') x WHERE district_id = $3 ORDER BY seq DESC LIMIT $4) y', part.name)
                        INTO page USING p_subject, p_before, p_district, p_limit;
                    END IF;
                END IF;
"""
# 0015: along the chain until the page is found.
_WALK = """
                ELSE
                    -- OFFSET 0: the chain index newest first, the subject checked on each record.
                    EXECUTE format(
                        'SELECT coalesce(array_agg(seq), ''{}'') FROM (SELECT seq FROM ('
                        'SELECT seq, subjects FROM %I WHERE district_id = $1 AND seq < $2 ORDER BY seq DESC OFFSET 0'
                        ') x WHERE subjects @> ARRAY[$3] LIMIT $4) y', part.name)
                    INTO page USING p_district, p_before, p_subject, p_limit;
                END IF;
"""


def upgrade() -> None:
    op.execute(_HEAD + _WALK_THEN_INDEX + _TAIL)


def downgrade() -> None:
    op.execute(_HEAD + _WALK + _TAIL)
