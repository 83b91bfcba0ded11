"""One student's newest audit records, found at the cost of a page whoever they are.

``pledgeql_audit_subject_seqs`` (migration 0013) answered every record of a
student through the subjects' GIN index, and the page was cut after: a student
read a hundred thousand times cost a hundred thousand heap reads per page of
their ``accessLog``. ``pledgeql_audit_subject_page`` answers only the newest
``p_limit`` records below ``p_before``, month by month, newest first; in each
month it takes whichever way is cheap for that student:

- the subjects' index, when the month holds at most ``CAP`` of their records
  (reading at most ``CAP + 1`` of them finds out);
- otherwise the district's chain index, newest first, filtered by the subject:
  at least one record in every few hundred of the month is theirs, so a page is
  found after a bounded stretch of it.

A record's month is its ``at``, noted when the request was, and its ``seq`` is
given when it is written, so a record written just after a month began can be
older by ``at`` than one written just before. The month after the page's
last is therefore asked for its records newer than the page's oldest (a few
at most, along the chain index). The default partition (records waiting for
their month's partition) is read first, as any month can be in it.

Without ``p_limit`` (NULL) it answers every record of the student, as the
function it replaces did: a caller that narrows the page further (by actor,
purpose, decision, time) or reads them all (an export) needs them all. It
answers for the caller's own districts only, as the function it replaces.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"
CAP = 2000  # a month with more of a student's records than this is read along its chain


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION pledgeql_audit_subject_page(p_district uuid, p_subject uuid, p_before bigint, p_limit integer)
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
                ELSE
                    -- OFFSET 0: the chain index newest first, the subject checked on each record.
                    EXECUTE format(
                        'SELECT coalesce(array_agg(seq), ''{{}}'') FROM (SELECT seq FROM ('
                        'SELECT seq, subjects FROM %I WHERE district_id = $1 AND seq < $2 ORDER BY seq DESC OFFSET 0'
                        ') x WHERE subjects @> ARRAY[$3] LIMIT $4) y', part.name)
                    INTO page USING p_district, p_before, p_subject, p_limit;
                END IF;
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
    )
    op.execute("REVOKE ALL ON FUNCTION pledgeql_audit_subject_page(uuid, uuid, bigint, integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION pledgeql_audit_subject_page(uuid, uuid, bigint, integer) TO {APP_ROLE}")
    op.execute("DROP FUNCTION pledgeql_audit_subject_seqs(uuid, uuid, bigint)")


def downgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION pledgeql_audit_subject_seqs(p_district uuid, p_subject uuid, p_before bigint)
        RETURNS SETOF bigint
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
        AS $$
            SELECT x.seq FROM (
                SELECT r.seq, r.district_id FROM audit_records r
                WHERE r.subjects @> ARRAY[p_subject] AND r.seq < p_before OFFSET 0
            ) x
            WHERE x.district_id = p_district
              AND p_district = ANY (string_to_array(current_setting('pledgeql.district_ids', true), ',')::uuid[])
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION pledgeql_audit_subject_seqs(uuid, uuid, bigint) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION pledgeql_audit_subject_seqs(uuid, uuid, bigint) TO {APP_ROLE}")
    op.execute("DROP FUNCTION pledgeql_audit_subject_page(uuid, uuid, bigint, integer)")
