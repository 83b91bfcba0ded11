"""Student practice and classroom writes over HTTP: who may write, what is stored, what is refused."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from schema.practice import device_from_request, session_key
from server.app import create_app
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import ALL_PURPOSES, Gql, error_codes, justified

STUDENT = "student1@northwind.example"
STUDENT2 = "student2@northwind.example"
TEACHER = "teacher1@northwind.example"
CHROMEBOOK = (
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36"
)

SUBMIT = """
mutation Submit($input: SubmitResponseInput!) {
  submitResponse(input: $input) {
    correct feedback
    response { id answer correct score feedback submittedAt item { id prompt skill } assignment { id } }
  }
}"""
SUBMIT_WITH_TIME = """
mutation Submit($input: SubmitResponseInput!) {
  submitResponse(input: $input) { correct response { id timeSpentSeconds } }
}"""
RECORD = """
mutation Record($events: [ActivityEventInput!]!) { recordActivity(events: $events) { accepted droppedReason } }"""
CREATE = """
mutation Create($input: CreateAssignmentInput!) {
  createAssignment(input: $input) { id title dueAt class { id } assessment { id } createdBy { id } }
}"""

# POLICY.md section 3, by hand: the purposes each role may declare at all.
DECLARABLE = {
    "TEACHER": {"INSTRUCTION", "REPORTING", "PERSONALIZATION", "COMMUNICATION"},
    "SCHOOL_ADMIN": {"INSTRUCTION", "REPORTING", "PERSONALIZATION", "COMMUNICATION"},
    "DISTRICT_ADMIN": {
        "INSTRUCTION",
        "REPORTING",
        "PERSONALIZATION",
        "COMMUNICATION",
        "RECORD_ACCESS",
        "LEGAL_COMPLIANCE",
    },
    "STUDENT": {"STUDENT_LEARNING", "PERSONALIZATION", "RECORD_ACCESS"},
    "GUARDIAN": {"REPORTING", "PERSONALIZATION", "RECORD_ACCESS"},
    "ANALYST": {"PRODUCT_ANALYTICS", "REPORTING"},
    "SUPPORT": {"SUPPORT"},
}
ACCOUNTS = {
    "admin@northwind.example": "DISTRICT_ADMIN",
    "principal1@northwind.example": "SCHOOL_ADMIN",
    TEACHER: "TEACHER",
    STUDENT: "STUDENT",
    "guardian1@northwind.example": "GUARDIAN",
    "analyst@pledgeql.example": "ANALYST",
    "support@pledgeql.example": "SUPPORT",
}
# Who may run each mutation, by hand from POLICY.md section 3 ("also" column).
GRANTED = {
    "submitResponse": ("STUDENT", "STUDENT_LEARNING"),
    "recordActivity": ("STUDENT", "STUDENT_LEARNING"),
    "createAssignment": ("TEACHER", "INSTRUCTION"),
}


def expected_refusal(role: str, purpose: str, operation: str) -> str | None:
    if GRANTED[operation] == (role, purpose):
        return None
    if purpose not in DECLARABLE[role]:
        return "PURPOSE_NOT_ALLOWED"
    if role in ("STUDENT", "GUARDIAN") and purpose == "RECORD_ACCESS":
        return "DIRECT_ACCESS_DISABLED"  # the demo districts leave direct record access off
    return "FORBIDDEN"


SWEEP = [pytest.param(user, purpose, id=f"{ACCOUNTS[user]}-{purpose}") for user in ACCOUNTS for purpose in ALL_PURPOSES]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime) -> str:
    return value.isoformat()


@dataclasses.dataclass(frozen=True)
class Demo:
    district: uuid.UUID
    riverside: uuid.UUID
    student: uuid.UUID
    teacher: uuid.UUID
    assignment: uuid.UUID
    assessment: uuid.UUID
    class_id: uuid.UUID
    item: uuid.UUID
    item_key: str
    item_explanation: str
    other_item: uuid.UUID
    foreign_assignment: uuid.UUID
    foreign_item: uuid.UUID
    riverside_assignment: uuid.UUID
    teacher_class: uuid.UUID
    colleague_class: uuid.UUID
    riverside_class: uuid.UUID


ACTIVE = "e.begin_date <= current_date AND (e.end_date IS NULL OR e.end_date >= current_date)"


@pytest_asyncio.fixture(scope="module")
async def demo(owner: Any, users: dict[str, uuid.UUID]) -> Demo:
    student = users[STUDENT]
    teacher = users[TEACHER]
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", student)
    riverside = await owner.fetchval("SELECT id FROM districts WHERE id <> $1", district)
    own = await owner.fetchrow(
        "SELECT a.id, a.assessment_id, a.class_id FROM assignments a JOIN enrollments e "
        "ON e.district_id = a.district_id AND e.class_id = a.class_id "
        f"WHERE e.student_id = $1 AND {ACTIVE} ORDER BY a.id LIMIT 1",
        student,
    )
    item = await owner.fetchrow(
        "SELECT id, answer_key, explanation FROM items WHERE assessment_id = $1 ORDER BY position LIMIT 1",
        own["assessment_id"],
    )
    other_item = await owner.fetchval(
        "SELECT id FROM items WHERE assessment_id <> $1 ORDER BY id LIMIT 1", own["assessment_id"]
    )
    foreign = await owner.fetchrow(
        "SELECT a.id, a.assessment_id FROM assignments a WHERE a.district_id = $1 AND a.class_id NOT IN "
        f"(SELECT e.class_id FROM enrollments e WHERE e.student_id = $2 AND {ACTIVE}) ORDER BY a.id LIMIT 1",
        district,
        student,
    )
    foreign_item = await owner.fetchval(
        "SELECT id FROM items WHERE assessment_id = $1 ORDER BY position LIMIT 1", foreign["assessment_id"]
    )
    riverside_assignment = await owner.fetchval(
        "SELECT id FROM assignments WHERE district_id = $1 ORDER BY id LIMIT 1", riverside
    )
    teacher_class = await owner.fetchval(
        "SELECT class_id FROM class_teachers WHERE teacher_id = $1 ORDER BY class_id LIMIT 1", teacher
    )
    colleague_class = await owner.fetchval(
        "SELECT id FROM classes WHERE district_id = $1 AND id NOT IN "
        "(SELECT class_id FROM class_teachers WHERE teacher_id = $2) ORDER BY id LIMIT 1",
        district,
        teacher,
    )
    riverside_class = await owner.fetchval("SELECT id FROM classes WHERE district_id = $1 LIMIT 1", riverside)
    return Demo(
        district=district,
        riverside=riverside,
        student=student,
        teacher=teacher,
        assignment=own["id"],
        assessment=own["assessment_id"],
        class_id=own["class_id"],
        item=item["id"],
        item_key=item["answer_key"],
        item_explanation=item["explanation"],
        other_item=other_item,
        foreign_assignment=foreign["id"],
        foreign_item=foreign_item,
        riverside_assignment=riverside_assignment,
        teacher_class=teacher_class,
        colleague_class=colleague_class,
        riverside_class=riverside_class,
    )


async def counts(owner: Any) -> dict[str, int]:
    row = await owner.fetchrow(
        "SELECT (SELECT count(*) FROM responses) AS responses, (SELECT count(*) FROM activity_events) AS activity, "
        "(SELECT count(*) FROM device_sessions) AS devices, (SELECT count(*) FROM assignments) AS assignments, "
        "(SELECT count(*) FROM users WHERE last_active_at IS NOT NULL) AS active, "
        "(SELECT max(last_active_at) FROM users) AS latest"
    )
    return dict(row)


def bad_input_field(body: dict[str, Any]) -> str | None:
    errors = body.get("errors", [])
    assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"], body
    field: str | None = errors[0]["extensions"].get("field")
    return field


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"kind": "VIEW", "target": "/practice/item/1", "occurredAt": iso(now()), "durationMs": 1200}
    base.update(overrides)
    return base


@pytest.fixture
async def collection(owner: Any, demo: Demo) -> AsyncIterator[Callable[..., Any]]:
    """Switch the district's collection settings for one test; restored afterwards."""

    async def switch(*, usage: bool = True, device: bool = True) -> None:
        await owner.execute(
            "UPDATE districts SET collect_usage = $2, collect_device = $3 WHERE id = $1", demo.district, usage, device
        )

    yield switch
    await switch()


# ------------------------------------------------------------ submitResponse


async def test_student_submits_a_correct_answer_to_an_assignment_item_and_it_is_stored_as_theirs(
    gql: Gql, owner: Any, demo: Demo
) -> None:
    before = now()
    body = await gql(
        STUDENT,
        "STUDENT_LEARNING",
        SUBMIT,
        {
            "input": {
                "itemId": str(demo.item),
                "assignmentId": str(demo.assignment),
                "answer": f"  {demo.item_key.upper()} ",
                "timeSpentSeconds": 42,
            }
        },
    )
    assert "errors" not in body, body
    payload = body["data"]["submitResponse"]
    assert payload["correct"] is True
    assert payload["feedback"] == demo.item_explanation
    response = payload["response"]
    assert response["answer"] == f"  {demo.item_key.upper()} "
    assert response["correct"] is True and response["score"] == 1.0
    assert response["item"]["id"] == str(demo.item) and response["assignment"]["id"] == str(demo.assignment)
    row = await owner.fetchrow("SELECT * FROM responses WHERE id = $1", uuid.UUID(response["id"]))
    assert row["student_id"] == demo.student and row["district_id"] == demo.district
    assert row["item_id"] == demo.item and row["assignment_id"] == demo.assignment
    assert row["correct"] is True and row["score"] == 1.0 and row["time_spent_seconds"] == 42
    assert row["idempotency_key"] is None and row["submitted_at"] >= before
    last_active = await owner.fetchval("SELECT last_active_at FROM users WHERE id = $1", demo.student)
    assert last_active == row["submitted_at"]


async def test_time_spent_is_usage_data_and_is_denied_to_the_student_under_student_learning(
    gql: Gql, demo: Demo
) -> None:
    body = await gql(
        STUDENT,
        "STUDENT_LEARNING",
        SUBMIT_WITH_TIME,
        {"input": {"itemId": str(demo.item), "answer": "x", "timeSpentSeconds": 5}},
    )
    assert body["data"]["submitResponse"]["response"]["timeSpentSeconds"] is None
    [error] = body["errors"]
    assert error["path"] == ["submitResponse", "response", "timeSpentSeconds"]
    assert error["extensions"]["code"] == "FORBIDDEN" and error["extensions"]["category"] == "USAGE"


async def test_a_wrong_answer_is_graded_on_the_server_and_the_key_never_reaches_the_client(
    gql: Gql, owner: Any, demo: Demo
) -> None:
    # Items whose explanation does not itself spell out the answer (the explanation is the feedback).
    items = await owner.fetch(
        "SELECT id, answer_key, choices FROM items WHERE position(answer_key IN coalesce(explanation, '')) = 0 "
        "AND position(answer_key IN prompt) = 0 AND practice ORDER BY id LIMIT 3"
    )
    assert items
    for item in items:
        wrong = next(c for c in item["choices"] if c != item["answer_key"])
        body = await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, {"input": {"itemId": str(item["id"]), "answer": wrong}})
        assert "errors" not in body, body
        assert body["data"]["submitResponse"]["correct"] is False
        assert body["data"]["submitResponse"]["response"]["score"] == 0.0
        assert item["answer_key"] not in str(body)
        stored = await owner.fetchrow(
            "SELECT correct, score, answer FROM responses WHERE id = $1",
            uuid.UUID(body["data"]["submitResponse"]["response"]["id"]),
        )
        assert (stored["correct"], stored["score"], stored["answer"]) == (False, 0.0, wrong)


async def test_the_schema_has_no_field_that_could_carry_an_answer_key(gql: Gql) -> None:
    body = await gql(
        STUDENT,
        "STUDENT_LEARNING",
        "{ __schema { types { name fields { name } inputFields { name } } } }",
    )
    types = {t["name"]: t for t in body["data"]["__schema"]["types"]}
    assert {f["name"] for f in types["Item"]["fields"]} == {"id", "prompt", "choices", "skill"}
    names = [
        (t["name"], f["name"])
        for t in types.values()
        if not t["name"].startswith("__")
        for f in (t["fields"] or []) + (t["inputFields"] or [])
    ]
    assert not [n for n in names if "key" in n[1].lower() or "solution" in n[1].lower()]
    assert "explanation" not in {f for _, f in names}


async def test_a_student_cannot_submit_for_another_student(gql: Gql, owner: Any, demo: Demo, users: Any) -> None:
    # There is no student argument: whatever the client sends, the row is the caller's.
    body = await gql(
        STUDENT,
        "STUDENT_LEARNING",
        SUBMIT,
        {"input": {"itemId": str(demo.item), "answer": "x", "studentId": str(users[STUDENT2])}},
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    body = await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, {"input": {"itemId": str(demo.item), "answer": "mine"}})
    stored = await owner.fetchval(
        "SELECT student_id FROM responses WHERE id = $1", uuid.UUID(body["data"]["submitResponse"]["response"]["id"])
    )
    assert stored == demo.student
    count = await owner.fetchval(
        "SELECT count(*) FROM responses WHERE student_id = $1 AND answer = 'mine'", users[STUDENT2]
    )
    assert count == 0


async def test_a_practice_item_is_submitted_without_an_assignment(gql: Gql, owner: Any, demo: Demo) -> None:
    body = await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, {"input": {"itemId": str(demo.other_item), "answer": "7"}})
    assert "errors" not in body, body
    assert body["data"]["submitResponse"]["response"]["assignment"] is None
    row = await owner.fetchrow(
        "SELECT assignment_id, item_id FROM responses WHERE id = $1",
        uuid.UUID(body["data"]["submitResponse"]["response"]["id"]),
    )
    assert row["assignment_id"] is None and row["item_id"] == demo.other_item


async def test_a_student_cannot_write_into_a_class_they_are_not_enrolled_in(gql: Gql, owner: Any, demo: Demo) -> None:
    before = await counts(owner)
    for assignment, item in (
        (demo.foreign_assignment, demo.foreign_item),
        (demo.riverside_assignment, demo.foreign_item),
        (uuid.uuid4(), demo.item),
    ):
        body = await gql(
            STUDENT,
            "STUDENT_LEARNING",
            SUBMIT,
            {"input": {"itemId": str(item), "assignmentId": str(assignment), "answer": "x"}},
        )
        assert body["data"] is None and error_codes(body) == ["NOT_FOUND"]
        assert body["errors"][0]["message"] == "Assignment not found"
    assert await counts(owner) == before


async def test_an_ended_enrollment_closes_the_class_to_the_student(gql: Gql, owner: Any, demo: Demo) -> None:
    yesterday = dt.date.today() - dt.timedelta(days=1)
    await owner.execute(
        "UPDATE enrollments SET end_date = $3 WHERE class_id = $1 AND student_id = $2",
        demo.class_id,
        demo.student,
        yesterday,
    )
    try:
        before = await counts(owner)
        body = await gql(
            STUDENT,
            "STUDENT_LEARNING",
            SUBMIT,
            {"input": {"itemId": str(demo.item), "assignmentId": str(demo.assignment), "answer": "x"}},
        )
        assert error_codes(body) == ["NOT_FOUND"]
        assert await counts(owner) == before
    finally:
        await owner.execute(
            "UPDATE enrollments SET end_date = NULL WHERE class_id = $1 AND student_id = $2",
            demo.class_id,
            demo.student,
        )


async def test_an_item_of_another_assessment_is_bad_input_on_the_assignment(gql: Gql, owner: Any, demo: Demo) -> None:
    before = await counts(owner)
    body = await gql(
        STUDENT,
        "STUDENT_LEARNING",
        SUBMIT,
        {"input": {"itemId": str(demo.other_item), "assignmentId": str(demo.assignment), "answer": "x"}},
    )
    assert bad_input_field(body) == "input.itemId"
    assert await counts(owner) == before


async def test_an_unknown_item_is_not_found(gql: Gql, owner: Any) -> None:
    before = await counts(owner)
    body = await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, {"input": {"itemId": str(uuid.uuid4()), "answer": "x"}})
    assert error_codes(body) == ["NOT_FOUND"]
    assert await counts(owner) == before


async def test_an_item_not_open_for_practice_needs_its_assignment(gql: Gql, owner: Any, demo: Demo) -> None:
    await owner.execute("UPDATE items SET practice = false WHERE id = $1", demo.item)
    try:
        before = await counts(owner)
        body = await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, {"input": {"itemId": str(demo.item), "answer": "x"}})
        assert bad_input_field(body) == "input.assignmentId"
        assert await counts(owner) == before
        body = await gql(
            STUDENT,
            "STUDENT_LEARNING",
            SUBMIT,
            {"input": {"itemId": str(demo.item), "assignmentId": str(demo.assignment), "answer": "x"}},
        )
        assert "errors" not in body, body
    finally:
        await owner.execute("UPDATE items SET practice = true WHERE id = $1", demo.item)


@pytest.mark.parametrize(
    ("changes", "headers", "field"),
    [
        ({"answer": ""}, {}, "input.answer"),
        ({"answer": "   "}, {}, "input.answer"),
        ({"answer": "a" * 10_001}, {}, "input.answer"),
        ({"timeSpentSeconds": -1}, {}, "input.timeSpentSeconds"),
        ({"timeSpentSeconds": 86_401}, {}, "input.timeSpentSeconds"),
        ({"itemId": "not-an-id"}, {}, "input.itemId"),
        ({"assignmentId": "not-an-id"}, {}, "input.assignmentId"),
    ],
    ids=lambda v: str(v)[:30],
)
async def test_invalid_submissions_are_bad_user_input_naming_the_field_and_store_nothing(
    gql: Gql, owner: Any, demo: Demo, changes: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    before = await counts(owner)
    submitted = {"itemId": str(demo.item), "assignmentId": str(demo.assignment), "answer": "x", **changes}
    body = await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, {"input": submitted}, headers=headers)
    assert body["data"] is None
    assert bad_input_field(body) == field
    assert await counts(owner) == before


async def test_the_largest_answer_and_time_are_accepted(gql: Gql, demo: Demo) -> None:
    body = await gql(
        STUDENT,
        "STUDENT_LEARNING",
        SUBMIT,
        {"input": {"itemId": str(demo.item), "answer": "a" * 10_000, "timeSpentSeconds": 86_400}},
    )
    assert "errors" not in body, body


async def test_a_retry_with_the_same_idempotency_key_stores_one_response(gql: Gql, owner: Any, demo: Demo) -> None:
    key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    submitted = {"input": {"itemId": str(demo.item), "assignmentId": str(demo.assignment), "answer": "first try"}}
    first = await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, submitted, headers=key)
    second = await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, submitted, headers=key)
    assert "errors" not in first and "errors" not in second
    assert first["data"] == second["data"]
    stored = await owner.fetch(
        "SELECT id FROM responses WHERE student_id = $1 AND idempotency_key = $2", demo.student, key["Idempotency-Key"]
    )
    assert [str(r["id"]) for r in stored] == [first["data"]["submitResponse"]["response"]["id"]]
    # The same key with a different answer is a client bug, not a retry.
    changed = {"input": {**submitted["input"], "answer": "second thoughts"}}
    third = await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, changed, headers=key)
    assert bad_input_field(third) == "Idempotency-Key"
    assert await owner.fetchval("SELECT count(*) FROM responses WHERE answer = 'second thoughts'") == 0
    # So is the same answer with another time on task.
    timed = {"input": {**submitted["input"], "timeSpentSeconds": 6}}
    assert bad_input_field(await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, timed, headers=key)) == "Idempotency-Key"


async def test_concurrent_retries_with_one_idempotency_key_store_one_response(gql: Gql, owner: Any, demo: Demo) -> None:
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}
    submitted = {"input": {"itemId": str(demo.item), "answer": "raced"}}
    bodies = await asyncio.gather(*(gql(STUDENT, "STUDENT_LEARNING", SUBMIT, submitted, headers=key) for _ in range(4)))
    assert all("errors" not in b for b in bodies), bodies
    assert len({b["data"]["submitResponse"]["response"]["id"] for b in bodies}) == 1
    assert (
        await owner.fetchval("SELECT count(*) FROM responses WHERE idempotency_key = $1", key["Idempotency-Key"]) == 1
    )


async def test_without_a_key_two_submissions_are_two_responses(gql: Gql, owner: Any, demo: Demo) -> None:
    submitted = {"input": {"itemId": str(demo.item), "answer": "twice"}}
    await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, submitted)
    await gql(STUDENT, "STUDENT_LEARNING", SUBMIT, submitted)
    assert await owner.fetchval("SELECT count(*) FROM responses WHERE answer = 'twice'") == 2


async def test_with_collect_usage_off_a_submission_keeps_no_time_on_task_or_last_activity(
    gql: Gql, owner: Any, demo: Demo, collection: Callable[..., Any]
) -> None:
    await collection(usage=False)
    last_active = await owner.fetchval("SELECT last_active_at FROM users WHERE id = $1", demo.student)
    body = await gql(
        STUDENT,
        "STUDENT_LEARNING",
        SUBMIT,
        {"input": {"itemId": str(demo.item), "answer": "no usage", "timeSpentSeconds": 30}},
    )
    assert "errors" not in body, body
    row = await owner.fetchrow(
        "SELECT time_spent_seconds FROM responses WHERE id = $1",
        uuid.UUID(body["data"]["submitResponse"]["response"]["id"]),
    )
    assert row["time_spent_seconds"] is None
    assert await owner.fetchval("SELECT last_active_at FROM users WHERE id = $1", demo.student) == last_active


async def test_a_submission_is_audited_with_its_categories_and_never_its_values(
    gql: Gql, owner: Any, demo: Demo
) -> None:
    request_id = f"audit-{uuid.uuid4().hex}"
    answer = f"secret answer {uuid.uuid4().hex}"
    body = await gql(
        STUDENT,
        "STUDENT_LEARNING",
        SUBMIT,
        {"input": {"itemId": str(demo.item), "answer": answer}},
        headers={"X-Request-Id": request_id},
    )
    assert "errors" not in body
    entries = await owner.fetch("SELECT * FROM audit_entries WHERE client_request_id = $1", request_id)
    [entry] = [e for e in entries if "Mutation.submitResponse" in e["fields"]]
    assert entry["subject_student_id"] == demo.student and entry["decision"] == "ALLOW"
    assert entry["actor_id"] == demo.student and entry["purpose"] == "STUDENT_LEARNING"
    assert {"WORK", "PERFORMANCE", "USAGE"} <= set(entry["categories"])
    assert all(answer not in str(dict(e)) for e in entries)


# ------------------------------------------------------------ recordActivity


async def test_a_batch_of_activity_and_its_device_session_are_stored_once_per_session(
    gql: Gql, owner: Any, demo: Demo
) -> None:
    session = {
        "X-Session-Id": f"s-{uuid.uuid4()}",
        "User-Agent": CHROMEBOOK,
        "Referer": "https://classroom.google.com/c/123?student=someone#frag",
    }
    started = now() - dt.timedelta(minutes=3)
    events = [
        event(kind="SESSION_START", target="/home", occurredAt=iso(started), durationMs=None),
        event(kind="CLICK", target="/practice/item/3#submit", occurredAt=iso(started + dt.timedelta(seconds=20))),
    ]
    devices_before = await owner.fetchval("SELECT count(*) FROM device_sessions WHERE student_id = $1", demo.student)
    body = await gql(STUDENT, "STUDENT_LEARNING", RECORD, {"events": events}, headers=session)
    assert body["data"]["recordActivity"] == {"accepted": 2, "droppedReason": None}, body
    stored = await owner.fetch(
        "SELECT kind, target, occurred_at, duration_ms, session_key FROM activity_events "
        "WHERE student_id = $1 AND occurred_at >= $2 ORDER BY occurred_at",
        demo.student,
        started,
    )
    assert [(r["kind"], r["target"], r["duration_ms"]) for r in stored] == [
        ("SESSION_START", "/home", None),
        ("CLICK", "/practice/item/3#submit", 1200),
    ]
    assert stored[0]["occurred_at"] == started and len({r["session_key"] for r in stored}) == 1
    device = await owner.fetchrow(
        "SELECT * FROM device_sessions WHERE student_id = $1 AND session_key = $2",
        demo.student,
        stored[0]["session_key"],
    )
    assert (device["browser"], device["operating_system"], device["device_type"]) == ("Chrome", "ChromeOS", "laptop")
    assert device["user_agent"] == CHROMEBOOK and device["ip_address"] == "127.0.0.1"
    assert device["referrer"] == "https://classroom.google.com/c/123"
    assert device["started_at"] == started

    again = await gql(STUDENT, "STUDENT_LEARNING", RECORD, {"events": [event()]}, headers=session)
    assert again["data"]["recordActivity"]["accepted"] == 1
    assert (
        await owner.fetchval("SELECT count(*) FROM device_sessions WHERE student_id = $1", demo.student)
        == devices_before + 1
    )
    other = await gql(
        STUDENT, "STUDENT_LEARNING", RECORD, {"events": []}, headers={**session, "X-Session-Id": "another"}
    )
    assert other["data"]["recordActivity"] == {"accepted": 0, "droppedReason": None}
    assert (
        await owner.fetchval("SELECT count(*) FROM device_sessions WHERE student_id = $1", demo.student)
        == devices_before + 2
    )


async def test_without_a_session_header_a_session_is_the_students_agent_and_day(
    gql: Gql, owner: Any, demo: Demo
) -> None:
    agent = {"User-Agent": "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) Version/17.0 Mobile/15E148 Safari/604.1"}
    before = await owner.fetchval("SELECT count(*) FROM device_sessions WHERE student_id = $1", demo.student)
    for _ in range(2):
        body = await gql(STUDENT, "STUDENT_LEARNING", RECORD, {"events": [event()]}, headers=agent)
        assert body["data"]["recordActivity"]["accepted"] == 1
    rows = await owner.fetch(
        "SELECT browser, operating_system, device_type FROM device_sessions WHERE student_id = $1 AND user_agent = $2",
        demo.student,
        agent["User-Agent"],
    )
    assert [tuple(r) for r in rows] == [("Safari", "iOS", "tablet")]
    assert (
        await owner.fetchval("SELECT count(*) FROM device_sessions WHERE student_id = $1", demo.student) == before + 1
    )


async def test_a_retried_batch_with_the_same_idempotency_key_is_stored_once(gql: Gql, owner: Any, demo: Demo) -> None:
    headers = {"Idempotency-Key": f"batch-{uuid.uuid4()}", "X-Session-Id": f"s-{uuid.uuid4()}"}
    batch = {"events": [event(target="/retry/1"), event(kind="CLICK", target="/retry/2")]}
    before = await counts(owner)
    for _ in range(2):
        body = await gql(STUDENT, "STUDENT_LEARNING", RECORD, batch, headers=headers)
        assert body["data"]["recordActivity"] == {"accepted": 2, "droppedReason": None}, body
    assert (await counts(owner))["activity"] == before["activity"] + 2
    first, second = batch["events"]
    # The same key with different content is a client bug, not a retry: another event, one more
    # or one fewer, none at all, or the same events in another session.
    for changed, session in (
        ([first, event(kind="CLICK", target="/retry/other")], headers),
        ([first, second, event(target="/retry/3")], headers),
        ([first], headers),
        ([], headers),
        ([first, second], {**headers, "X-Session-Id": f"s-{uuid.uuid4()}"}),
    ):
        body = await gql(STUDENT, "STUDENT_LEARNING", RECORD, {"events": changed}, headers=session)
        assert bad_input_field(body) == "Idempotency-Key", (changed, body)
    assert (await counts(owner))["activity"] == before["activity"] + 2


async def test_activity_moves_last_activity_forward(gql: Gql, owner: Any, demo: Demo) -> None:
    await owner.execute("UPDATE users SET last_active_at = now() - interval '2 days' WHERE id = $1", demo.student)
    at = now() - dt.timedelta(seconds=5)
    await gql(STUDENT, "STUDENT_LEARNING", RECORD, {"events": [event(occurredAt=iso(at))]})
    assert await owner.fetchval("SELECT last_active_at FROM users WHERE id = $1", demo.student) == at


async def test_five_hundred_events_are_accepted_and_five_hundred_and_one_are_refused(
    gql: Gql, owner: Any, demo: Demo
) -> None:
    body = await gql(STUDENT, "STUDENT_LEARNING", RECORD, {"events": [event() for _ in range(500)]})
    assert body["data"]["recordActivity"]["accepted"] == 500
    before = await counts(owner)
    body = await gql(STUDENT, "STUDENT_LEARNING", RECORD, {"events": [event() for _ in range(501)]})
    assert bad_input_field(body) == "events"
    assert await counts(owner) == before
    # The limit is the request's: aliases do not multiply it (30 of them would store 15,000 rows).
    aliased = (
        "mutation Twice($events: [ActivityEventInput!]!) { "
        "a: recordActivity(events: $events) { accepted } b: recordActivity(events: $events) { accepted } }"
    )
    body = await gql(STUDENT, "STUDENT_LEARNING", aliased, {"events": [event() for _ in range(300)]})
    assert bad_input_field(body) == "events" and "per request" in body["errors"][0]["message"], body
    assert (await counts(owner))["activity"] - before["activity"] <= 300


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"durationMs": -1}, "events[1].durationMs"),
        ({"durationMs": 86_400_001}, "events[1].durationMs"),
        ({"target": "x" * 1_001}, "events[1].target"),
        ({"target": "line\nbreak"}, "events[1].target"),
        ({"occurredAt": "FUTURE"}, "events[1].occurredAt"),
        ({"occurredAt": "ANCIENT"}, "events[1].occurredAt"),
    ],
    ids=lambda v: str(v)[:30],
)
async def test_invalid_events_refuse_the_whole_batch_naming_the_field(
    gql: Gql, owner: Any, bad: dict[str, Any], field: str
) -> None:
    if bad.get("occurredAt") == "FUTURE":
        bad = {"occurredAt": iso(now() + dt.timedelta(hours=1))}
    elif bad.get("occurredAt") == "ANCIENT":
        bad = {"occurredAt": iso(now() - dt.timedelta(days=40))}
    before = await counts(owner)
    body = await gql(STUDENT, "STUDENT_LEARNING", RECORD, {"events": [event(), event(**bad), event()]})
    assert bad_input_field(body) == field
    assert await counts(owner) == before


async def test_a_timestamp_that_is_not_a_time_is_bad_user_input(gql: Gql, owner: Any, demo: Demo) -> None:
    before = await counts(owner)
    body = await gql(STUDENT, "STUDENT_LEARNING", RECORD, {"events": [event(occurredAt="yesterday-ish")]})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    submitted = {
        "classId": str(demo.teacher_class),
        "assessmentId": str(demo.assessment),
        "title": "t",
        "dueAt": "soon",
    }
    body = await gql(TEACHER, "INSTRUCTION", CREATE, {"input": submitted})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert await counts(owner) == before


async def test_an_event_a_little_ahead_of_the_server_clock_is_accepted(gql: Gql) -> None:
    body = await gql(
        STUDENT, "STUDENT_LEARNING", RECORD, {"events": [event(occurredAt=iso(now() + dt.timedelta(minutes=2)))]}
    )
    assert body["data"]["recordActivity"]["accepted"] == 1


@pytest.mark.parametrize(
    ("usage", "device", "reason_mentions", "accepted"),
    [
        (False, True, ["collectUsage"], 0),
        (True, False, ["collectDevice"], 2),
        (False, False, ["collectUsage", "collectDevice"], 0),
    ],
)
async def test_a_district_that_does_not_collect_keeps_those_rows_untouched_and_says_why(
    gql: Gql,
    owner: Any,
    demo: Demo,
    collection: Callable[..., Any],
    usage: bool,
    device: bool,
    reason_mentions: list[str],
    accepted: int,
) -> None:
    await collection(usage=usage, device=device)
    before = await counts(owner)
    body = await gql(
        STUDENT,
        "STUDENT_LEARNING",
        RECORD,
        {"events": [event(), event(kind="CLICK")]},
        headers={"X-Session-Id": f"s-{uuid.uuid4()}", "User-Agent": CHROMEBOOK},
    )
    result = body["data"]["recordActivity"]
    assert result["accepted"] == accepted
    for setting in reason_mentions:
        assert f"{setting} is off for this district" in result["droppedReason"]
    after = await counts(owner)
    assert after["activity"] == before["activity"] + accepted
    assert after["devices"] == before["devices"] + (1 if device else 0)
    if not usage:
        assert (after["active"], after["latest"]) == (before["active"], before["latest"])


async def test_activity_is_audited_as_usage_and_device(gql: Gql, owner: Any, demo: Demo) -> None:
    request_id = f"audit-{uuid.uuid4().hex}"
    target = f"/secret/{uuid.uuid4().hex}"
    await gql(
        STUDENT,
        "STUDENT_LEARNING",
        RECORD,
        {"events": [event(target=target)]},
        headers={"X-Request-Id": request_id, "X-Session-Id": f"s-{uuid.uuid4()}"},
    )
    [entry] = await owner.fetch("SELECT * FROM audit_entries WHERE client_request_id = $1", request_id)
    assert entry["fields"] == ["Mutation.recordActivity"] and entry["subject_student_id"] == demo.student
    assert set(entry["categories"]) == {"USAGE", "DEVICE"}
    assert target not in str(dict(entry))


async def test_the_client_address_comes_from_the_trusted_proxy_header_only_when_configured(
    settings: Settings,
    db: DatabaseUrls,
    token_for: Callable[..., str],
    owner: Any,
    demo: Demo,
    client: httpx.AsyncClient,
) -> None:
    headers = {
        "Authorization": f"Bearer {token_for(STUDENT)}",
        "X-Purpose": "STUDENT_LEARNING",
        "X-Forwarded-For": "203.0.113.7, 10.0.0.1",
    }
    query = {"query": RECORD, "variables": {"events": []}}
    untrusted = await client.post("/graphql", json=query, headers={**headers, "X-Session-Id": "direct"})
    assert untrusted.json()["data"]["recordActivity"]["accepted"] == 0
    proxied_app = create_app(dataclasses.replace(settings, trusted_proxy_header="x-forwarded-for"), db)
    async with proxied_app.router.lifespan_context(proxied_app):
        transport = httpx.ASGITransport(app=proxied_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as proxied:
            trusted = await proxied.post("/graphql", json=query, headers={**headers, "X-Session-Id": "proxied"})
    assert trusted.json()["data"]["recordActivity"]["accepted"] == 0, trusted.json()
    today = now().date()
    for client_session, address in (("direct", "127.0.0.1"), ("proxied", "203.0.113.7")):
        stored = await owner.fetchval(
            "SELECT ip_address FROM device_sessions WHERE student_id = $1 AND session_key = $2",
            demo.student,
            session_key(demo.student, client_session, None, today),
        )
        assert stored == address


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (CHROMEBOOK, ("Chrome", "ChromeOS", "laptop")),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
            ("Edge", "Windows", "desktop"),
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.1 Safari/605.1.15",
            ("Safari", "macOS", "desktop"),
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
            ("Firefox", "Linux", "desktop"),
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0.0.0 Mobile Safari/537.36",
            ("Chrome", "Android", "phone"),
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0.0.0 Safari/537.36",
            ("Chrome", "Android", "tablet"),
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
            ("Chrome", "iOS", "phone"),
        ),
        ("curl/8.4.0", ("Other", "Other", "Other")),
        (None, (None, None, None)),
    ],
    ids=lambda v: str(v)[:40],
)
def test_a_user_agent_is_read_as_browser_system_and_device_type(
    agent: str | None, expected: tuple[str | None, ...]
) -> None:
    device = device_from_request(None, agent, None)
    assert (device.browser, device.operating_system, device.device_type) == expected


def test_a_referrer_keeps_only_its_origin_and_path_and_a_bad_address_is_dropped() -> None:
    device = device_from_request("not an address", None, "https://portal.example/a/b?q=name#x")
    assert device.ip_address is None and device.referrer == "https://portal.example/a/b"
    assert device_from_request("::1", None, "javascript:alert(1)").referrer is None


# ---------------------------------------------------------- createAssignment


async def test_a_teacher_creates_an_assignment_for_their_own_class(gql: Gql, owner: Any, demo: Demo) -> None:
    due = (now() + dt.timedelta(days=7)).replace(microsecond=0)
    body = await gql(
        TEACHER,
        "INSTRUCTION",
        CREATE,
        {
            "input": {
                "classId": str(demo.teacher_class),
                "assessmentId": str(demo.assessment),
                "title": "  Fractions, week 3  ",
                "dueAt": iso(due),
            }
        },
    )
    assert "errors" not in body, body
    created = body["data"]["createAssignment"]
    assert created["title"] == "Fractions, week 3"
    assert created["class"]["id"] == str(demo.teacher_class)
    assert created["assessment"]["id"] == str(demo.assessment)
    assert created["createdBy"]["id"] == str(demo.teacher)
    row = await owner.fetchrow("SELECT * FROM assignments WHERE id = $1", uuid.UUID(created["id"]))
    assert row["district_id"] == demo.district and row["class_id"] == demo.teacher_class
    assert row["created_by"] == demo.teacher and row["due_at"] == due and row["title"] == "Fractions, week 3"


async def test_an_assignment_without_a_due_date_is_accepted(gql: Gql, demo: Demo) -> None:
    body = await gql(
        TEACHER,
        "INSTRUCTION",
        CREATE,
        {"input": {"classId": str(demo.teacher_class), "assessmentId": str(demo.assessment), "title": "Open"}},
    )
    assert "errors" not in body and body["data"]["createAssignment"]["dueAt"] is None


async def test_a_teacher_cannot_create_an_assignment_for_another_teachers_class(
    gql: Gql, owner: Any, demo: Demo
) -> None:
    before = await counts(owner)
    submitted = {"classId": str(demo.colleague_class), "assessmentId": str(demo.assessment), "title": "Not mine"}
    body = await gql(TEACHER, "INSTRUCTION", CREATE, {"input": submitted})
    [error] = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["extensions"]["reason"] == "OUT_OF_SCOPE_OPERATION"
    assert error["message"] == "You can create assignments only for classes you teach"
    for missing in (demo.riverside_class, uuid.uuid4()):
        body = await gql(TEACHER, "INSTRUCTION", CREATE, {"input": {**submitted, "classId": str(missing)}})
        assert error_codes(body) == ["NOT_FOUND"]
    assert await counts(owner) == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"title": ""}, "input.title"),
        ({"title": "   "}, "input.title"),
        ({"title": "t" * 201}, "input.title"),
        ({"title": "two\nlines"}, "input.title"),
        ({"classId": "nope"}, "input.classId"),
        ({"assessmentId": "nope"}, "input.assessmentId"),
        ({"assessmentId": "UNKNOWN"}, "input.assessmentId"),
        ({"dueAt": "PAST"}, "input.dueAt"),
        ({"dueAt": "FAR"}, "input.dueAt"),
    ],
    ids=lambda v: str(v)[:30],
)
async def test_invalid_assignments_are_bad_user_input_naming_the_field_and_store_nothing(
    gql: Gql, owner: Any, demo: Demo, changes: dict[str, Any], field: str
) -> None:
    symbolic = {
        "UNKNOWN": str(uuid.uuid4()),
        "PAST": iso(now() - dt.timedelta(days=1)),
        "FAR": iso(now() + dt.timedelta(days=3 * 365)),
    }
    changes = {k: symbolic.get(v, v) for k, v in changes.items()}
    before = await counts(owner)
    submitted = {"classId": str(demo.teacher_class), "assessmentId": str(demo.assessment), "title": "Ok", **changes}
    body = await gql(TEACHER, "INSTRUCTION", CREATE, {"input": submitted})
    assert bad_input_field(body) == field
    assert await counts(owner) == before


async def test_an_assignment_is_audited_without_its_title(gql: Gql, owner: Any, demo: Demo) -> None:
    request_id = f"audit-{uuid.uuid4().hex}"
    title = f"Title {uuid.uuid4().hex}"
    await gql(
        TEACHER,
        "INSTRUCTION",
        CREATE,
        {"input": {"classId": str(demo.teacher_class), "assessmentId": str(demo.assessment), "title": title}},
        headers={"X-Request-Id": request_id},
    )
    entries = await owner.fetch("SELECT * FROM audit_entries WHERE client_request_id = $1", request_id)
    [entry] = [e for e in entries if "Mutation.createAssignment" in e["fields"]]
    assert entry["decision"] == "ALLOW" and entry["subject_student_id"] is None
    assert entry["actor_id"] == demo.teacher
    assert all(title not in str(dict(e)) for e in entries)


# ------------------------------------------------------- refusals, everywhere


def _mutation_and_variables(operation: str, demo: Demo) -> tuple[str, dict[str, Any]]:
    if operation == "submitResponse":
        return SUBMIT, {"input": {"itemId": str(demo.item), "answer": "sweep"}}
    if operation == "recordActivity":
        return RECORD, {"events": [event(target="/sweep")]}
    return CREATE, {
        "input": {"classId": str(demo.teacher_class), "assessmentId": str(demo.assessment), "title": "Sweep"}
    }


@pytest.mark.parametrize("operation", sorted(GRANTED))
@pytest.mark.parametrize(("username", "purpose"), SWEEP)
async def test_every_other_role_and_purpose_is_refused_with_the_contracts_code_and_stores_nothing(
    gql: Gql, owner: Any, demo: Demo, username: str, purpose: str, operation: str
) -> None:
    expected = expected_refusal(ACCOUNTS[username], purpose, operation)
    if expected is None:
        pytest.skip("the allowed caller: covered by the tests above")
    query, variables = _mutation_and_variables(operation, demo)
    before = await counts(owner)
    body = await gql(username, purpose, query, variables, headers=justified(purpose))
    assert body.get("data") is None
    assert error_codes(body) == [expected]
    if expected == "FORBIDDEN":
        assert body["errors"][0]["extensions"]["reason"] == "OUT_OF_SCOPE_OPERATION"
    assert await counts(owner) == before


async def test_a_refused_write_is_audited_as_a_denied_attempt(gql: Gql, owner: Any, demo: Demo) -> None:
    request_id = f"audit-{uuid.uuid4().hex}"
    query, variables = _mutation_and_variables("submitResponse", demo)
    body = await gql(STUDENT, "PERSONALIZATION", query, variables, headers={"X-Request-Id": request_id})
    assert error_codes(body) == ["FORBIDDEN"]
    [entry] = await owner.fetch("SELECT * FROM audit_entries WHERE client_request_id = $1", request_id)
    assert entry["decision"] == "DENY" and entry["fields"] == ["Mutation.submitResponse"]
    assert entry["subject_student_id"] == demo.student


async def test_with_direct_access_on_a_student_under_record_access_still_cannot_write(
    gql: Gql, owner: Any, demo: Demo
) -> None:
    await owner.execute("UPDATE districts SET direct_record_access = true WHERE id = $1", demo.district)
    try:
        before = await counts(owner)
        for operation in ("submitResponse", "recordActivity"):
            query, variables = _mutation_and_variables(operation, demo)
            body = await gql(STUDENT, "RECORD_ACCESS", query, variables)
            assert error_codes(body) == ["FORBIDDEN"]
        assert await counts(owner) == before
    finally:
        await owner.execute("UPDATE districts SET direct_record_access = false WHERE id = $1", demo.district)


async def test_a_district_that_withdrew_student_learning_refuses_practice_writes(
    gql: Gql, owner: Any, demo: Demo
) -> None:
    await owner.execute(
        "UPDATE districts SET authorized_purposes = array_remove(authorized_purposes, 'STUDENT_LEARNING') "
        "WHERE id = $1",
        demo.district,
    )
    try:
        before = await counts(owner)
        query, variables = _mutation_and_variables("submitResponse", demo)
        body = await gql(STUDENT, "STUDENT_LEARNING", query, variables)
        assert error_codes(body) == ["FORBIDDEN"]
        assert body["errors"][0]["extensions"]["reason"] == "PURPOSE_NOT_AUTHORIZED_BY_DISTRICT"
        assert await counts(owner) == before
    finally:
        await owner.execute(
            "UPDATE districts SET authorized_purposes = array_append(authorized_purposes, 'STUDENT_LEARNING') "
            "WHERE id = $1",
            demo.district,
        )
