"""Student practice and classroom work: submitResponse, recordActivity, createAssignment.

Each mutation checks its operation against the policy data, validates all of
its input, and only then writes: a field error does not roll the request's
transaction back, so nothing may be written before the last check has passed.
Its audit note names the categories written, never the values.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from permissions.enums import DataCategory, Role
from permissions.errors import BadUserInput, Forbidden, NotFound, is_printable
from resolvers import practice as sql
from schema.base import Info, id_argument
from schema.gate import Needs, gate
from schema.types import Assignment, Response

if TYPE_CHECKING:
    from schema.governance import (
        ActivityEventInput,
        CreateAssignmentInput,
        RecordActivityPayload,
        SubmitResponseInput,
        SubmitResponsePayload,
    )

MAX_ANSWER_CHARS = 10_000
MAX_TIME_SPENT_SECONDS = 86_400
MAX_EVENTS = 500
MAX_TARGET_CHARS = 1_000
MAX_DURATION_MS = 86_400_000
MAX_TITLE_CHARS = 200
MAX_KEY_CHARS = 128
MAX_AGENT_CHARS = 512
MAX_REFERRER_CHARS = 2_048
# Clients' clocks drift: an event or a due date this close to now is not "in the future" or "in the past".
CLOCK_SKEW = dt.timedelta(minutes=5)
MAX_EVENT_AGE = dt.timedelta(days=30)
MAX_DUE_AHEAD = dt.timedelta(days=732)
EVENT_NAMESPACE = uuid.UUID("5d0c7a52-7a3e-4c55-9a43-6f1f1d2b9e11")


# ------------------------------------------------------------------ helpers


def _require(info: Info, operation: str, subject: uuid.UUID | None) -> uuid.UUID:
    """The caller's district, once the gate lets the caller run ``operation``
    (a refusal is audited against ``subject``)."""
    district_id: uuid.UUID = gate(info, operation, Needs.DISTRICT_USER, subject=subject)
    return district_id


def _student_subject(info: Info) -> uuid.UUID | None:
    """Whose data a student's write is about: the caller's own, never an argument."""
    principal = info.context.principal
    return principal.user_id if principal.role is Role.STUDENT else None


def _aware(value: dt.datetime) -> dt.datetime:
    """A timestamp without a zone is read as UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _printable_header(value: str | None, name: str, limit: int) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > limit or not is_printable(value):
        raise BadUserInput(f"The {name} header must be 1 to {limit} printable characters", field=name)
    return value


def _collects(info: Info, district_id: uuid.UUID) -> tuple[bool, bool]:
    """(collectUsage, collectDevice) of the district; off when its settings are unknown."""
    conditions = info.context.conditions.get(str(district_id))
    if conditions is None:
        return False, False
    return bool(conditions.collect_usage), bool(conditions.collect_device)


# ------------------------------------------------------------ submitResponse


def _payload(row: Any) -> SubmitResponsePayload:
    from schema.governance import SubmitResponsePayload

    return SubmitResponsePayload(response=Response.of(row), correct=bool(row["correct"]), feedback=row["feedback"])


def _replay(
    row: Any, item_id: uuid.UUID, assignment_id: uuid.UUID | None, answer: str, time_spent: int | None
) -> SubmitResponsePayload:
    """A retry of a stored submission: the stored response, provided it is the same submission
    (``time_spent`` as it would have been stored)."""
    if (row["item_id"], row["assignment_id"], row["answer"], row["time_spent_seconds"]) != (
        item_id,
        assignment_id,
        answer,
        time_spent,
    ):
        raise BadUserInput(
            "This Idempotency-Key was already used for a different submission; send a new key with a new answer",
            field="Idempotency-Key",
        )
    return _payload(row)


async def submit_response(info: Info, input: SubmitResponseInput) -> SubmitResponsePayload:
    ctx = info.context
    student_id = ctx.principal.user_id
    district_id = _require(info, "submitResponse", _student_subject(info))

    item_id = id_argument(input.item_id, "input.itemId")
    assignment_id = None if input.assignment_id is None else id_argument(input.assignment_id, "input.assignmentId")
    answer = input.answer
    if not answer.strip():
        raise BadUserInput("input.answer must not be blank", field="input.answer")
    if len(answer) > MAX_ANSWER_CHARS:
        raise BadUserInput(f"input.answer must be at most {MAX_ANSWER_CHARS} characters", field="input.answer")
    if "\x00" in answer:  # PostgreSQL's text cannot hold it; any other character is the student's answer
        raise BadUserInput("input.answer may not contain the character U+0000 (NUL)", field="input.answer")
    time_spent = input.time_spent_seconds
    if time_spent is not None and not 0 <= time_spent <= MAX_TIME_SPENT_SECONDS:
        raise BadUserInput(
            f"input.timeSpentSeconds must be between 0 and {MAX_TIME_SPENT_SECONDS}", field="input.timeSpentSeconds"
        )
    key = _printable_header(ctx.client.idempotency_key, "Idempotency-Key", MAX_KEY_CHARS)

    target = await sql.graded_target(ctx.db, district_id, item_id, assignment_id, ctx.principal.class_ids, answer)
    if target is None:
        raise NotFound("Item not found")
    if assignment_id is not None:
        # Another class's assignment looks exactly like one that does not exist.
        if target.assignment_id is None:
            raise NotFound("Assignment not found")
        if target.assignment_assessment_id != target.assessment_id:
            raise BadUserInput("This item is not part of the assignment's assessment", field="input.itemId")
    elif not target.practice:
        raise BadUserInput(
            "This item is not open for practice: submit it with the id of its assignment", field="input.assignmentId"
        )

    collect_usage, _ = _collects(info, district_id)
    # Time on task is usage data: not kept where the district does not collect it.
    kept_time = time_spent if collect_usage else None
    # With a key, the insert does nothing when the key was used before (by an
    # earlier try or a concurrent one): then the stored response answers.
    row = await sql.insert_response(
        ctx.db,
        district_id=district_id,
        student_id=student_id,
        target=target,
        answer=answer,
        time_spent_seconds=kept_time,
        submitted_at=ctx.now,
        idempotency_key=key,
        touch_last_active=collect_usage,
    )
    if row is None and key is not None:
        stored = await sql.response_by_key(ctx.db, district_id, student_id, key)
        if stored is not None:
            payload = _replay(stored, item_id, assignment_id, answer, kept_time)
            ctx.audit.note(str(district_id), student_id, "Mutation.submitResponse", "", True)
            return payload
    if row is None:
        raise RuntimeError("the response was neither stored nor found")
    for category in (DataCategory.WORK, DataCategory.PERFORMANCE):
        ctx.audit.note(str(district_id), student_id, "Mutation.submitResponse", category.value, True)
    if collect_usage:
        ctx.audit.note(str(district_id), student_id, "Mutation.submitResponse", DataCategory.USAGE.value, True)
    return _payload(row)


# ------------------------------------------------------------ recordActivity


def _event(index: int, event: ActivityEventInput, now: dt.datetime) -> sql.EventRow:
    path = f"events[{index}]"
    target = event.target
    if target is not None and (len(target) > MAX_TARGET_CHARS or not target.isprintable()):
        raise BadUserInput(
            f"{path}.target must be at most {MAX_TARGET_CHARS} printable characters", field=f"{path}.target"
        )
    duration = event.duration_ms
    if duration is not None and not 0 <= duration <= MAX_DURATION_MS:
        raise BadUserInput(f"{path}.durationMs must be between 0 and {MAX_DURATION_MS}", field=f"{path}.durationMs")
    occurred = _aware(event.occurred_at)
    if occurred > now + CLOCK_SKEW:
        raise BadUserInput(f"{path}.occurredAt is in the future", field=f"{path}.occurredAt")
    if occurred < now - MAX_EVENT_AGE:
        raise BadUserInput(f"{path}.occurredAt is more than {MAX_EVENT_AGE.days} days ago", field=f"{path}.occurredAt")
    return sql.EventRow(kind=event.kind.value, target=target, occurred_at=occurred, duration_ms=duration)


def event_ids(student_id: uuid.UUID, key: str | None, count: int) -> list[uuid.UUID]:
    """Ids for a batch's events: derived from the Idempotency-Key when there is one,
    so that a retried batch names the same events and is stored once."""
    if key is None:
        return [uuid.uuid4() for _ in range(count)]
    return [uuid.uuid5(EVENT_NAMESPACE, f"{student_id}|{key}|{i}") for i in range(count)]


def _check_retried_batch(stored: list[Any], probed: list[uuid.UUID], rows: list[sql.EventRow], session: str) -> None:
    """A batch sent again under a key already used must be that batch: the same events, no
    more and no fewer, in the same session. ``probed`` are the key's ids for one event more
    than this batch has; ``stored``, the events stored under any of them."""
    if not stored:
        return
    by_id = {row["id"]: row for row in stored}
    same = len(by_id) == len(rows) and all(
        (earlier := by_id.get(event_id)) is not None
        and (earlier["kind"], earlier["target"], earlier["occurred_at"], earlier["duration_ms"], earlier["session_key"])
        == (row.kind, row.target, row.occurred_at, row.duration_ms, session)
        for event_id, row in zip(probed, rows, strict=False)
    )
    if not same:
        raise BadUserInput(
            "This Idempotency-Key was already used for a different batch; send a new key with new events",
            field="Idempotency-Key",
        )


def session_key(student_id: uuid.UUID, client_session: str | None, user_agent: str | None, day: dt.date) -> str:
    """The session a batch belongs to.

    With an X-Session-Id header, that session (hashed with the student's id,
    so a client-chosen value can never name another student's session);
    without one, the student's sessions are one per user agent and UTC day."""
    if client_session is not None:
        material = f"client|{student_id}|{client_session}"
    else:
        material = f"derived|{student_id}|{user_agent or ''}|{day.isoformat()}"
    return hashlib.sha256(material.encode()).hexdigest()


def _ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def _referrer(value: str | None) -> str | None:
    """Where the student came from, without its query or fragment (they can carry personal data)."""
    if not value:
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))[:MAX_REFERRER_CHARS]


def device_from_request(ip_address: str | None, user_agent: str | None, referrer: str | None) -> sql.Device:
    agent = user_agent[:MAX_AGENT_CHARS] if user_agent else None
    facts = sql.parse_user_agent(agent)
    return sql.Device(
        ip_address=_ip(ip_address),
        user_agent=agent,
        browser=facts.browser,
        operating_system=facts.operating_system,
        device_type=facts.device_type,
        referrer=_referrer(referrer),
    )


async def record_activity(info: Info, events: list[ActivityEventInput]) -> RecordActivityPayload:
    from schema.governance import RecordActivityPayload

    ctx = info.context
    student_id = ctx.principal.user_id
    district_id = _require(info, "recordActivity", _student_subject(info))

    if len(events) > MAX_EVENTS:
        raise BadUserInput(f"Send at most {MAX_EVENTS} events per call (this call has {len(events)})", field="events")
    # The limit is the request's: aliased calls in one document do not multiply it.
    sent = ctx.activity_events + len(events)
    if sent > MAX_EVENTS:
        raise BadUserInput(
            f"Send at most {MAX_EVENTS} events per request (its recordActivity calls have {sent})", field="events"
        )
    ctx.activity_events = sent
    rows = [_event(i, e, ctx.now) for i, e in enumerate(events)]
    client_session = _printable_header(ctx.client.session_id, "X-Session-Id", 128)
    session = session_key(student_id, client_session, ctx.client.user_agent, ctx.now.date())
    collect_usage, collect_device = _collects(info, district_id)
    key = _printable_header(ctx.client.idempotency_key, "Idempotency-Key", MAX_KEY_CHARS)
    ids = event_ids(student_id, key, len(rows))
    if key is not None and collect_usage:
        probed = event_ids(student_id, key, len(rows) + 1)
        stored = await sql.stored_events(ctx.db, district_id, student_id, probed)
        _check_retried_batch(stored, probed, rows, session)
    # Everything is computed before the first write: a failure after it would not roll back.
    device = device_from_request(ctx.client.ip_address, ctx.client.user_agent, ctx.client.referrer)
    started = min([r.occurred_at for r in rows if r.occurred_at <= ctx.now], default=ctx.now)
    latest = min([max(r.occurred_at for r in rows), ctx.now]) if rows else None

    dropped: list[str] = []
    accepted = 0
    if collect_usage:
        stored_now = await sql.insert_activity(ctx.db, district_id, student_id, session, rows, ids)
        # A retried batch (same Idempotency-Key) is all stored, once: by this call or the first.
        accepted = len(rows) if key is not None else stored_now
        if latest is not None:
            await sql.touch_last_active(ctx.db, district_id, student_id, latest)
            ctx.audit.note(str(district_id), student_id, "Mutation.recordActivity", DataCategory.USAGE.value, True)
    else:
        dropped.append("collectUsage is off for this district, so activity events are not stored")
    if collect_device:
        if await sql.insert_device_session(ctx.db, district_id, student_id, session, started, device):
            ctx.audit.note(str(district_id), student_id, "Mutation.recordActivity", DataCategory.DEVICE.value, True)
    else:
        dropped.append("collectDevice is off for this district, so the device session is not stored")
    # The call itself is audited even when nothing of a category was written.
    ctx.audit.note(str(district_id), student_id, "Mutation.recordActivity", "", True)
    return RecordActivityPayload(accepted=accepted, dropped_reason="; ".join(dropped) or None)


# ----------------------------------------------------------- createAssignment


async def create_assignment(info: Info, input: CreateAssignmentInput) -> Assignment:
    ctx = info.context
    district_id = _require(info, "createAssignment", None)

    class_id = id_argument(input.class_id, "input.classId")
    assessment_id = id_argument(input.assessment_id, "input.assessmentId")
    title = input.title.strip()
    if not title:
        raise BadUserInput("input.title must not be blank", field="input.title")
    if len(title) > MAX_TITLE_CHARS or not title.isprintable():
        raise BadUserInput(
            f"input.title must be at most {MAX_TITLE_CHARS} printable characters on one line", field="input.title"
        )
    due_at = None if input.due_at is None else _aware(input.due_at)
    if due_at is not None and due_at < ctx.now - CLOCK_SKEW:
        raise BadUserInput("input.dueAt must not be in the past", field="input.dueAt")
    if due_at is not None and due_at > ctx.now + MAX_DUE_AHEAD:
        raise BadUserInput("input.dueAt must be within two years from now", field="input.dueAt")

    if class_id not in ctx.principal.class_ids:
        if await sql.class_in_district(ctx.db, district_id, class_id):
            # The class is the district's, visible by name to its staff: refuse, do not pretend it is missing.
            ctx.audit.note(str(district_id), None, "Mutation.createAssignment", "", False)
            raise Forbidden(
                "You can create assignments only for classes you teach",
                purpose=ctx.purpose.value,
                reason="OUT_OF_SCOPE_OPERATION",
            )
        raise NotFound("Class not found")
    if not await sql.assessment_exists(ctx.db, assessment_id):
        raise BadUserInput("input.assessmentId names no assessment", field="input.assessmentId")

    row = await sql.insert_assignment(
        ctx.db,
        district_id=district_id,
        class_id=class_id,
        assessment_id=assessment_id,
        title=title,
        due_at=due_at,
        created_by=ctx.principal.user_id,
        created_at=ctx.now,
    )
    ctx.audit.note(str(district_id), None, "Mutation.createAssignment", "", True)
    return Assignment(row=row)
