"""Writes of student practice and classroom work, in SQL.

Every statement names the request's district explicitly, on top of the
row-level security the transaction already carries. Reads for grading are the
only place that selects an item's answer key: it is compared here and never
returned to the schema layer.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resolvers.db import Db
from resolvers.reads import Row

# ------------------------------------------------------------------ grading


@dataclass(frozen=True)
class Target:
    """An item as submitted, graded: where it belongs and whether the answer matched its key."""

    item_id: uuid.UUID
    assessment_id: uuid.UUID
    practice: bool
    # The assignment asked for, when it is one of the student's classes' assignments.
    assignment_id: uuid.UUID | None
    assignment_assessment_id: uuid.UUID | None
    correct: bool
    explanation: str | None

    @property
    def score(self) -> float:
        return 1.0 if self.correct else 0.0


def normalize_answer(answer: str) -> str:
    """Answers match their key whatever their case and spacing."""
    return " ".join(answer.split()).casefold()


async def graded_target(
    db: Db,
    district_id: uuid.UUID,
    item_id: uuid.UUID,
    assignment_id: uuid.UUID | None,
    class_ids: Sequence[uuid.UUID],
    answer: str,
) -> Target | None:
    """The item graded against ``answer`` and, when asked for, the assignment if it is
    one of ``class_ids``; None when there is no such item. The key is compared here
    and goes no further."""
    row = await db.fetchrow(
        "SELECT i.id, i.assessment_id, i.practice, i.explanation, i.answer_key, "
        "a.id AS assignment_id, a.assessment_id AS assignment_assessment_id "
        "FROM items i LEFT JOIN assignments a ON a.district_id = $2 AND a.id = $3 "
        "AND a.class_id = ANY($4::uuid[]) WHERE i.id = $1",
        item_id,
        district_id,
        assignment_id,
        list(class_ids),
    )
    if row is None:
        return None
    return Target(
        item_id=row["id"],
        assessment_id=row["assessment_id"],
        practice=row["practice"],
        assignment_id=row["assignment_id"],
        assignment_assessment_id=row["assignment_assessment_id"],
        correct=normalize_answer(answer) == normalize_answer(row["answer_key"]),
        explanation=row["explanation"],
    )


# ---------------------------------------------------------------- responses


async def response_by_key(db: Db, district_id: uuid.UUID, student_id: uuid.UUID, key: str) -> Row | None:
    return await db.fetchrow(
        "SELECT * FROM responses WHERE district_id = $1 AND student_id = $2 AND idempotency_key = $3",
        district_id,
        student_id,
        key,
    )


async def insert_response(
    db: Db,
    *,
    district_id: uuid.UUID,
    student_id: uuid.UUID,
    target: Target,
    answer: str,
    time_spent_seconds: int | None,
    submitted_at: dt.datetime,
    idempotency_key: str | None,
    touch_last_active: bool,
) -> Row | None:
    """Store one response and move the student's last activity forward, in one statement.

    None when a concurrent request stored a response with the same idempotency
    key first (then nothing is written here)."""
    row: Row | None = await db.fetchrow(
        "WITH inserted AS ("
        "  INSERT INTO responses (district_id, id, student_id, item_id, assignment_id, answer, correct,"
        "                         score, feedback, time_spent_seconds, submitted_at, idempotency_key)"
        "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        "  ON CONFLICT (district_id, student_id, idempotency_key) DO NOTHING"
        "  RETURNING *"
        "), touched AS ("
        "  UPDATE users SET last_active_at = GREATEST(last_active_at, $11)"
        "  WHERE district_id = $1 AND id = $3 AND $13::boolean AND EXISTS (SELECT 1 FROM inserted)"
        ") SELECT * FROM inserted",
        district_id,
        uuid.uuid4(),
        student_id,
        target.item_id,
        target.assignment_id,
        answer,
        target.correct,
        target.score,
        target.explanation,
        time_spent_seconds,
        submitted_at,
        idempotency_key,
        touch_last_active,
    )
    return row


# ----------------------------------------------------------------- activity


@dataclass(frozen=True)
class EventRow:
    kind: str
    target: str | None
    occurred_at: dt.datetime
    duration_ms: int | None


async def stored_events(db: Db, district_id: uuid.UUID, student_id: uuid.UUID, ids: Sequence[uuid.UUID]) -> list[Row]:
    """Events of the student already stored under these ids (a retried batch)."""
    return await db.fetch(
        "SELECT id, kind, target, occurred_at, duration_ms, session_key FROM activity_events "
        "WHERE district_id = $1 AND student_id = $2 AND id = ANY($3::uuid[])",
        district_id,
        student_id,
        list(ids),
    )


async def insert_activity(
    db: Db,
    district_id: uuid.UUID,
    student_id: uuid.UUID,
    session_key: str,
    events: Sequence[EventRow],
    ids: Sequence[uuid.UUID],
) -> int:
    """Store a batch of events in one statement; the number newly stored.

    An event whose id is already stored (a retry of the same batch) is skipped."""
    if not events:
        return 0
    status = await db.execute(
        "INSERT INTO activity_events (district_id, id, student_id, kind, target, occurred_at, duration_ms, "
        "session_key) SELECT $1, e.id, $2, e.kind, e.target, e.occurred_at, e.duration_ms, $3 "
        "FROM unnest($4::uuid[], $5::text[], $6::text[], $7::timestamptz[], $8::int[]) "
        "AS e(id, kind, target, occurred_at, duration_ms) ON CONFLICT (district_id, id) DO NOTHING",
        district_id,
        student_id,
        session_key,
        list(ids),
        [e.kind for e in events],
        [e.target for e in events],
        [e.occurred_at for e in events],
        [e.duration_ms for e in events],
    )
    return int(status.rsplit(" ", 1)[-1])


async def touch_last_active(db: Db, district_id: uuid.UUID, student_id: uuid.UUID, at: dt.datetime) -> None:
    await db.execute(
        "UPDATE users SET last_active_at = GREATEST(last_active_at, $3) WHERE district_id = $1 AND id = $2",
        district_id,
        student_id,
        at,
    )


@dataclass(frozen=True)
class Device:
    ip_address: str | None
    user_agent: str | None
    browser: str | None
    operating_system: str | None
    device_type: str | None
    referrer: str | None


async def insert_device_session(
    db: Db,
    district_id: uuid.UUID,
    student_id: uuid.UUID,
    session_key: str,
    started_at: dt.datetime,
    device: Device,
) -> bool:
    """Store the session's device once: False when this session already has one."""
    status = await db.execute(
        "INSERT INTO device_sessions (district_id, id, student_id, session_key, started_at, ip_address, "
        "user_agent, browser, operating_system, device_type, referrer) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
        "ON CONFLICT (district_id, student_id, session_key) DO NOTHING",
        district_id,
        uuid.uuid4(),
        student_id,
        session_key,
        started_at,
        device.ip_address,
        device.user_agent,
        device.browser,
        device.operating_system,
        device.device_type,
        device.referrer,
    )
    return status.endswith(" 1")


# --------------------------------------------------------------- assignments


async def class_in_district(db: Db, district_id: uuid.UUID, class_id: uuid.UUID) -> bool:
    found = await db.fetchval("SELECT 1 FROM classes WHERE district_id = $1 AND id = $2", district_id, class_id)
    return found is not None


async def assessment_exists(db: Db, assessment_id: uuid.UUID) -> bool:
    return await db.fetchval("SELECT 1 FROM assessments WHERE id = $1", assessment_id) is not None


async def insert_assignment(
    db: Db,
    *,
    district_id: uuid.UUID,
    class_id: uuid.UUID,
    assessment_id: uuid.UUID,
    title: str,
    due_at: dt.datetime | None,
    created_by: uuid.UUID,
    created_at: dt.datetime,
) -> Row:
    row: Any = await db.fetchrow(
        "INSERT INTO assignments (district_id, id, class_id, assessment_id, title, due_at, created_by, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        district_id,
        uuid.uuid4(),
        class_id,
        assessment_id,
        title,
        due_at,
        created_by,
        created_at,
    )
    return row


# ---------------------------------------------------------------- user agent


@dataclass(frozen=True)
class AgentFacts:
    browser: str | None
    operating_system: str | None
    device_type: str | None


# Order matters: Edge and Chrome on iOS also say "Safari", Edge says "Chrome",
# Android says "Linux", and iPadOS says "like Mac OS X".
_BROWSERS = (
    ("Edge", ("Edg/", "Edge/", "EdgA/", "EdgiOS/")),
    ("Firefox", ("Firefox/", "FxiOS/")),
    ("Chrome", ("Chrome/", "CriOS/", "Chromium/")),
    ("Safari", ("Safari/",)),
)
_SYSTEMS = (
    ("ChromeOS", ("CrOS",)),
    ("iOS", ("iPhone", "iPad", "iPod")),
    ("Android", ("Android",)),
    ("Windows", ("Windows",)),
    ("macOS", ("Macintosh", "Mac OS X")),
    ("Linux", ("Linux", "X11")),
)


def parse_user_agent(agent: str | None) -> AgentFacts:
    """Browser, operating system and device type from a User-Agent header.

    A small table of tokens, not a database of devices: what it does not
    recognise is "Other". A user agent cannot tell a laptop from a desktop
    except for Chromebooks (always portable), so Windows, macOS and Linux
    report "desktop"."""
    if not agent or not agent.strip():
        return AgentFacts(None, None, None)
    browser = next((name for name, tokens in _BROWSERS if any(t in agent for t in tokens)), "Other")
    system = next((name for name, tokens in _SYSTEMS if any(t in agent for t in tokens)), "Other")
    if "iPad" in agent or "Tablet" in agent or (system == "Android" and "Mobile" not in agent):
        device = "tablet"
    elif system in ("iOS", "Android") or "Mobile" in agent:
        device = "phone"
    elif system == "ChromeOS":
        device = "laptop"
    elif system in ("Windows", "macOS", "Linux"):
        device = "desktop"
    else:
        device = "Other"
    return AgentFacts(browser, system, device)
