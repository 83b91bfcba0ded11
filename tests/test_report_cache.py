"""Reports given again while what they count is unchanged (resolvers/report_cache.py, migration 0016).

Each test asks a report, changes (or does not change) what it counts, and asks
again: the second answer must be the one a fresh computation gives, and the
server's count of computed reports says whether it was computed again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest

from server.db import connect
from tests.conftest import Gql
from tests.test_reports import PERFORMANCE, USAGE

ADMIN = "admin@northwind.example"
STUDENT = "student1@northwind.example"
SUBMIT = """
mutation Submit($input: SubmitResponseInput!) { submitResponse(input: $input) { correct } }"""
RECORD = """
mutation Record($events: [ActivityEventInput!]!) { recordActivity(events: $events) { accepted droppedReason } }"""
GENERATION = (
    "SELECT pledgeql_report_generation($1::uuid[], $2::text[]), (SELECT n FROM principal_generation), "
    "current_setting('pledgeql.district_ids', true)"
)
PERFORMANCE_SOURCES = ["responses", "users", "consents", "assignments", "items", "assessments"]
USAGE_SOURCES = ["activity_events", "users", "consents", "enrollments"]


def computed(app: Any) -> int:
    count: int = app.state.pledgeql.endpoint.reports.computed
    return count


async def district_of(owner: Any, users: dict[str, uuid.UUID]) -> uuid.UUID:
    district: uuid.UUID = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", users[ADMIN])
    return district


async def performance(gql: Gql, district: uuid.UUID, group_by: list[str]) -> dict[str, Any]:
    body = await gql(
        ADMIN, "REPORTING", PERFORMANCE, {"input": {"scope": {"districtId": str(district)}, "groupBy": group_by}}
    )
    assert "errors" not in body, body["errors"]
    report: dict[str, Any] = body["data"]["performanceReport"]
    return report


async def usage(gql: Gql, district: uuid.UUID) -> dict[str, Any]:
    variables = {"input": {"scope": {"districtId": str(district)}, "groupBy": ["SCHOOL"]}}
    body = await gql(ADMIN, "REPORTING", USAGE, variables)
    assert "errors" not in body, body["errors"]
    report: dict[str, Any] = body["data"]["usageReport"]
    return report


async def test_a_report_is_given_again_until_an_answer_submitted_through_the_api_changes_it(
    gql: Gql, app: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    district = await district_of(owner, users)
    before = computed(app)
    first = await performance(gql, district, ["SCHOOL"])
    again = await performance(gql, district, ["SCHOOL"])
    assert again == first
    assert computed(app) == before + 1

    student = users[STUDENT]
    own = await owner.fetchrow(
        "SELECT a.id AS assignment, i.id AS item FROM assignments a "
        "JOIN enrollments e ON e.district_id = a.district_id AND e.class_id = a.class_id "
        "JOIN items i ON i.assessment_id = a.assessment_id WHERE e.student_id = $1 ORDER BY a.id, i.position LIMIT 1",
        student,
    )
    submitted = await gql(
        STUDENT,
        "STUDENT_LEARNING",
        SUBMIT,
        {"input": {"itemId": str(own["item"]), "assignmentId": str(own["assignment"]), "answer": "A"}},
    )
    assert "errors" not in submitted, submitted["errors"]

    after = await performance(gql, district, ["SCHOOL"])
    assert computed(app) == before + 2
    assert after["total"]["responses"] == first["total"]["responses"] + 1


async def test_only_a_change_to_what_a_report_reads_counts(owner: Any, users: dict[str, uuid.UUID]) -> None:
    district = await district_of(owner, users)
    student = users[STUDENT]

    async def generations() -> tuple[int, int]:
        return (
            await owner.fetchval(GENERATION, [district], PERFORMANCE_SOURCES),
            await owner.fetchval(GENERATION, [district], USAGE_SOURCES),
        )

    start = await generations()
    # Every answer sets the student's last activity: no report reads it.
    await owner.execute("UPDATE users SET last_active_at = now(), first_name = first_name WHERE id = $1", student)
    assert await generations() == start
    # A value the same as before changes nothing either.
    await owner.execute("UPDATE users SET grade_level = grade_level WHERE id = $1", student)
    assert await generations() == start

    # A grade level is grouped by in both kinds.
    grade = await owner.fetchval("SELECT grade_level FROM users WHERE id = $1", student)
    await owner.execute("UPDATE users SET grade_level = '12' WHERE id = $1", student)
    moved = await generations()
    assert moved[0] > start[0] and moved[1] > start[1]
    await owner.execute("UPDATE users SET grade_level = $2 WHERE id = $1", student, grade)

    # An item's skill is read by performance reports only, in every district.
    settled = await generations()
    item = await owner.fetchval("SELECT id FROM items ORDER BY id LIMIT 1")
    await owner.execute("UPDATE items SET skill = skill || '' WHERE id = $1", item)
    after_item = await generations()
    assert after_item[0] > settled[0] and after_item[1] == settled[1]

    # An activity event is read by usage reports only.
    await owner.execute(
        "INSERT INTO activity_events (district_id, id, student_id, kind, occurred_at, duration_ms) "
        "VALUES ($1, $2, $3, 'VIEW', now(), 1000)",
        district,
        uuid.uuid4(),
        student,
    )
    after_event = await generations()
    assert after_event[0] == after_item[0] and after_event[1] > after_item[1]

    # A change rolled back leaves no trace.
    transaction = owner.transaction()
    await transaction.start()
    await owner.execute("DELETE FROM activity_events WHERE district_id = $1", district)
    await transaction.rollback()
    assert await generations() == after_event

    # Another district's change is not this district's.
    other = await owner.fetchval("SELECT id FROM districts WHERE id <> $1 ORDER BY id LIMIT 1", district)
    other_student = await owner.fetchval(
        "SELECT id FROM users WHERE district_id = $1 AND role = 'STUDENT' ORDER BY id LIMIT 1", other
    )
    await owner.execute(
        "DELETE FROM responses WHERE id IN (SELECT id FROM responses WHERE student_id = $1 LIMIT 1)", other_student
    )
    assert await generations() == after_event


async def test_a_regrouped_student_and_a_new_minimum_group_size_give_new_reports(
    gql: Gql, app: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    district = await district_of(owner, users)
    first = await performance(gql, district, ["GRADE_LEVEL"])
    student = users[STUDENT]
    grade = await owner.fetchval("SELECT grade_level FROM users WHERE id = $1", student)
    try:
        await owner.execute("UPDATE users SET grade_level = '12' WHERE id = $1", student)
        moved = await performance(gql, district, ["GRADE_LEVEL"])
        assert "12" in {row["group"][0]["value"] for row in moved["rows"]}
        assert "12" not in {row["group"][0]["value"] for row in first["rows"]}
    finally:
        await owner.execute("UPDATE users SET grade_level = $2 WHERE id = $1", student, grade)
    assert await performance(gql, district, ["GRADE_LEVEL"]) == first

    k = await owner.fetchval("SELECT minimum_group_size FROM districts WHERE id = $1", district)
    try:
        await owner.execute("UPDATE districts SET minimum_group_size = 30 WHERE id = $1", district)
        stricter = await performance(gql, district, ["GRADE_LEVEL"])
        assert stricter["minimumGroupSize"] == 30
    finally:
        await owner.execute("UPDATE districts SET minimum_group_size = $2 WHERE id = $1", district, k)
    before = computed(app)
    assert await performance(gql, district, ["GRADE_LEVEL"]) == first
    assert computed(app) == before


async def test_activity_recorded_through_the_api_gives_a_new_usage_report(
    gql: Gql, app: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    district = await district_of(owner, users)
    first = await usage(gql, district)
    before = computed(app)
    assert await usage(gql, district) == first
    assert computed(app) == before

    at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    recorded = await gql(
        STUDENT, "STUDENT_LEARNING", RECORD, {"events": [{"kind": "VIEW", "occurredAt": at, "durationMs": 90_000}]}
    )
    assert "errors" not in recorded, recorded["errors"]
    assert recorded["data"]["recordActivity"]["accepted"] == 1
    after = await usage(gql, district)
    assert computed(app) == before + 1
    assert after["total"]["activeMinutes"] == pytest.approx(first["total"]["activeMinutes"] + 1.5)


async def test_the_same_report_asked_at_once_is_computed_once(
    gql: Gql, app: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    district = await district_of(owner, users)
    before = computed(app)
    reports = await asyncio.gather(*(performance(gql, district, ["SCHOOL", "GENDER"]) for _ in range(8)))
    assert all(r == reports[0] for r in reports)
    assert computed(app) == before + 1


async def test_the_app_role_can_neither_read_nor_write_the_counters(db: Any, owner: Any) -> None:
    app_role = await connect(db.app)
    try:
        for statement in (
            "SELECT * FROM report_changes",
            "UPDATE report_changes SET generation = 0",
            "INSERT INTO report_changes VALUES ('00000000-0000-0000-0000-000000000000', 'responses', 0, 0)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app_role.execute(statement)
        # It reads a sum through the function, which is all a report needs.
        assert await app_role.fetchval(GENERATION, [], PERFORMANCE_SOURCES) >= 0
    finally:
        await app_role.close()
