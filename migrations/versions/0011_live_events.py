"""Live class activity: a notification per event, on the district's channel, at commit.

A submitted response and a practice session's start and end (activity events
of kind SESSION_START and SESSION_END) each notify the channel
``pledgeql_live_<district id without hyphens>`` from a row trigger, so the
notification is part of the writing transaction: PostgreSQL delivers it to
every listening session, on every app node, when (and only if) that
transaction commits, in commit order.

The payload carries ids only, never personal data: what kind of row it is
(``r`` a response, ``a`` an activity event), the row's id, the student's id
and the classes the event is in (the answered assignment's class; otherwise
the classes the student is actively enrolled in today), so that a node can
route it to the subscriptions of those classes without a read. With more
classes than fit comfortably in a notification (over 100), the list is left
out and every subscription of the district reads the event back and keeps it
only if it is in its class. The trigger runs as the writer, under the
writer's row-level security.

Bulk loads (the demo seed) set ``pledgeql.live_events`` to ``off`` in their
transaction: nobody watches a seed, and a million notifications would fill
PostgreSQL's queue.

Revision ID: 0011
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION pledgeql_live_notify() RETURNS trigger
        LANGUAGE plpgsql SET search_path = public, pg_temp
        AS $$
        DECLARE
            classes uuid[];
        BEGIN
            IF current_setting('pledgeql.live_events', true) = 'off' THEN
                RETURN NULL;
            END IF;
            IF TG_TABLE_NAME = 'responses' THEN
                -- NEW.assignment_id exists only on responses: read it in a branch of its own.
                IF NEW.assignment_id IS NOT NULL THEN
                    classes := ARRAY(
                        SELECT a.class_id FROM assignments a
                        WHERE a.district_id = NEW.district_id AND a.id = NEW.assignment_id);
                END IF;
            END IF;
            IF classes IS NULL THEN
                classes := ARRAY(
                    SELECT e.class_id FROM enrollments e
                    WHERE e.district_id = NEW.district_id AND e.student_id = NEW.student_id
                      AND e.begin_date <= (now() AT TIME ZONE 'UTC')::date
                      AND (e.end_date IS NULL OR e.end_date >= (now() AT TIME ZONE 'UTC')::date)
                    ORDER BY e.class_id LIMIT 101);
            END IF;
            PERFORM pg_notify(
                'pledgeql_live_' || replace(NEW.district_id::text, '-', ''),
                json_build_object(
                    't', CASE TG_TABLE_NAME WHEN 'responses' THEN 'r' ELSE 'a' END,
                    'id', NEW.id,
                    's', NEW.student_id,
                    'c', CASE WHEN cardinality(classes) > 100 THEN NULL ELSE classes END
                )::text);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER responses_live AFTER INSERT ON responses FOR EACH ROW EXECUTE FUNCTION pledgeql_live_notify()"
    )
    op.execute(
        "CREATE TRIGGER activity_events_live AFTER INSERT ON activity_events "
        "FOR EACH ROW WHEN (NEW.kind IN ('SESSION_START', 'SESSION_END')) "
        "EXECUTE FUNCTION pledgeql_live_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS activity_events_live ON activity_events")
    op.execute("DROP TRIGGER IF EXISTS responses_live ON responses")
    op.execute("DROP FUNCTION IF EXISTS pledgeql_live_notify()")
