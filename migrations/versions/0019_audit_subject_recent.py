"""A student read often lately: their access log's page from the district's newest records.

``pledgeql_audit_subject_page`` (migrations 0015, 0017) first asks the month's
subjects' index how many of the student's records the month holds (up to
``CAP + 1``). For a student with more than that, the answer costs the whole
posting list of the index and ``CAP + 1`` heap reads before the walk along the
chain even starts: about 4 ms a page on the benchmark's database, whose
guardian's child is read there tens of thousands of times a month, even though
the page is among the district's last few hundred records.

The function now first reads the district's newest ``RECENT`` records below
the cursor, across every partition (the chain index, newest first). If they
hold a full page of the student's, that is the page: every record of the
student with a higher ``seq`` is among them, so it is the plain answer. If
not, the month-by-month function of 0015 and 0017 answers, as before
(renamed ``pledgeql_audit_subject_months``, unchanged). A student seldom read
pays for reading those few hundred records, a tenth of a millisecond.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

APP_ROLE = "pledgeql_app"
RECENT = 500  # the district's newest records read for a page before the months are asked
SIGNATURE = "(uuid, uuid, bigint, integer)"


def upgrade() -> None:
    op.execute(f"ALTER FUNCTION pledgeql_audit_subject_page{SIGNATURE} RENAME TO pledgeql_audit_subject_months")
    # Only the function below calls it (as its owner): the app role asks the one below.
    op.execute(f"REVOKE ALL ON FUNCTION pledgeql_audit_subject_months{SIGNATURE} FROM PUBLIC, {APP_ROLE}")
    op.execute(
        f"""
        CREATE FUNCTION pledgeql_audit_subject_page(p_district uuid, p_subject uuid, p_before bigint, p_limit integer)
        RETURNS SETOF bigint
        LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
        AS $$
        DECLARE
            page bigint[];
        BEGIN
            IF p_limit IS NOT NULL AND p_limit > 0 AND p_limit <= {RECENT} AND coalesce(
                p_district = ANY (string_to_array(current_setting('pledgeql.district_ids', true), ',')::uuid[]),
                false
            ) THEN
                SELECT coalesce(array_agg(seq ORDER BY seq DESC), '{{}}') INTO page FROM (
                    SELECT seq FROM (
                        SELECT seq, subjects FROM audit_records
                        WHERE district_id = p_district AND seq < p_before
                        ORDER BY seq DESC LIMIT {RECENT}
                    ) newest
                    WHERE subjects @> ARRAY[p_subject]
                    ORDER BY seq DESC LIMIT p_limit
                ) mine;
                IF cardinality(page) = p_limit THEN
                    RETURN QUERY SELECT unnest(page);
                    RETURN;
                END IF;
            END IF;
            -- Not a page among them (or not a page to find that way): month by month.
            RETURN QUERY SELECT pledgeql_audit_subject_months(p_district, p_subject, p_before, p_limit);
        END
        $$
        """
    )
    op.execute(f"REVOKE ALL ON FUNCTION pledgeql_audit_subject_page{SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION pledgeql_audit_subject_page{SIGNATURE} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION pledgeql_audit_subject_page{SIGNATURE}")
    op.execute(f"ALTER FUNCTION pledgeql_audit_subject_months{SIGNATURE} RENAME TO pledgeql_audit_subject_page")
    op.execute(f"GRANT EXECUTE ON FUNCTION pledgeql_audit_subject_page{SIGNATURE} TO {APP_ROLE}")
