"""Reads of live class activity (server/subscriptions.py): an event's student and row, under the caller's scope."""

from __future__ import annotations

import datetime as dt
import uuid

from resolvers.db import Db, Params
from resolvers.reads import Row
from resolvers.scope import RowScope

SESSION_KINDS = ("SESSION_START", "SESSION_END")
_ACTIVE = "e.begin_date <= {t} AND (e.end_date IS NULL OR e.end_date >= {t})"


async def student_in_class(
    db: Db, scope: RowScope, district_id: uuid.UUID, student_id: uuid.UUID, class_id: uuid.UUID, today: dt.date
) -> Row | None:
    """The student, when within the caller's row scope and actively enrolled in the class."""
    p = Params()
    t = p(today)
    row: Row | None = await db.fetchrow(
        f"SELECT u.* FROM users u WHERE u.district_id = {p(district_id)} AND u.id = {p(student_id)} "
        f"AND u.role = 'STUDENT' AND {scope.students('u', p)} AND EXISTS (SELECT 1 FROM enrollments e "
        f"WHERE e.district_id = u.district_id AND e.student_id = u.id AND e.class_id = {p(class_id)} "
        f"AND {_ACTIVE.format(t=t)})",
        *p.values,
    )
    return row


async def response_in_class(
    db: Db, district_id: uuid.UUID, response_id: uuid.UUID, student_id: uuid.UUID, class_id: uuid.UUID
) -> Row | None:
    """The student's response: practice, or to an assignment of the class."""
    row: Row | None = await db.fetchrow(
        "SELECT r.* FROM responses r WHERE r.district_id = $1 AND r.id = $2 AND r.student_id = $3 "
        "AND (r.assignment_id IS NULL OR EXISTS (SELECT 1 FROM assignments a WHERE a.district_id = "
        "r.district_id AND a.id = r.assignment_id AND a.class_id = $4))",
        district_id,
        response_id,
        student_id,
        class_id,
    )
    return row


async def session_event(db: Db, district_id: uuid.UUID, event_id: uuid.UUID, student_id: uuid.UUID) -> Row | None:
    """The student's practice session start or end."""
    row: Row | None = await db.fetchrow(
        "SELECT kind, occurred_at FROM activity_events WHERE district_id = $1 AND id = $2 "
        "AND student_id = $3 AND kind = ANY($4::text[])",
        district_id,
        event_id,
        student_id,
        list(SESSION_KINDS),
    )
    return row
