"""A student's progress, checked against the rows it is computed from.

``StudentProgress`` (schema.graphql): responses submitted, their average score
and percent correct, mastery per skill (the average score of the responses to
that skill's items) and the assignments completed: those the student answered
in where every item of the assignment's assessment has a response of theirs
for that assignment. Here a student gets one assignment answered in full (an
item twice), one answered in part and a practice response with no assignment;
each figure is recomputed in Python from the stored rows and compared with the
answer, on the compiled path (``student``) and the resolver path (a document
the planner does not compile) alike.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from server.db import DatabaseUrls, connect
from tests.conftest import Gql

STUDENT = "student1@northwind.example"
TEACHER = "teacher1@northwind.example"
PROGRESS = "progress { assignmentsCompleted responsesSubmitted averageScore percentCorrect mastery { skill level } }"
OWN = f"query Own($id: ID!) {{ student(id: $id) {{ id {PROGRESS} }} }}"
# Through a search, which the planner does not compile today: the loader's path.
SEARCHED = f"query Searched($q: String) {{ students(first: 50, search: $q) {{ nodes {{ id {PROGRESS} }} }} }}"


def rounded(value: Decimal, places: int) -> float:
    """As PROGRESS rounds: the average as numeric, half away from zero."""
    return float(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def average(values: list[float]) -> Decimal:
    """A float8 average as PostgreSQL casts it to numeric: 15 significant digits."""
    return Decimal(f"{sum(values) / len(values):.15g}")


async def expected_progress(owner: Any, student: uuid.UUID) -> dict[str, Any]:
    responses = await owner.fetch(
        "SELECT r.assignment_id, r.item_id, r.score, r.correct, i.skill FROM responses r "
        "JOIN items i ON i.id = r.item_id WHERE r.student_id = $1",
        student,
    )
    answered = {r["assignment_id"] for r in responses if r["assignment_id"] is not None}
    completed = 0
    for assignment in answered:
        items = await owner.fetch(
            "SELECT i.id FROM assignments a JOIN items i ON i.assessment_id = a.assessment_id WHERE a.id = $1",
            assignment,
        )
        given = {r["item_id"] for r in responses if r["assignment_id"] == assignment}
        if items and all(i["id"] in given for i in items):
            completed += 1
    by_skill: dict[str, list[float]] = defaultdict(list)
    for r in responses:
        by_skill[r["skill"]].append(r["score"])
    scores = [r["score"] for r in responses]
    return {
        "assignmentsCompleted": completed,
        "responsesSubmitted": len(responses),
        "averageScore": rounded(average(scores), 4) if scores else None,
        "percentCorrect": rounded(Decimal(100 * sum(r["correct"] for r in responses)) / len(responses), 2)
        if responses
        else None,
        "mastery": [
            {"skill": skill, "level": rounded(average(levels), 4)} for skill, levels in sorted(by_skill.items())
        ],
    }


async def give_student_assignments(owner: Any, student: uuid.UUID) -> tuple[int, int]:
    """One assignment answered in full (its first item twice), one in part, one practice
    response; returns how many assignments the student had completed before, and after."""
    row = await owner.fetchrow(
        "SELECT e.district_id, e.class_id FROM enrollments e WHERE e.student_id = $1 LIMIT 1", student
    )
    assessments = await owner.fetch(
        "SELECT assessment_id FROM items GROUP BY assessment_id HAVING count(*) >= 2 ORDER BY assessment_id LIMIT 2"
    )
    before = (await expected_progress(owner, student))["assignmentsCompleted"]
    at = dt.datetime(2031, 3, 1, tzinfo=dt.UTC)
    for number, assessment in enumerate(a["assessment_id"] for a in assessments):
        assignment = uuid.uuid4()
        await owner.execute(
            "INSERT INTO assignments (district_id, id, class_id, assessment_id, title) VALUES ($1, $2, $3, $4, $5)",
            row["district_id"],
            assignment,
            row["class_id"],
            assessment,
            f"Progress check {number}",
        )
        items = [r["id"] for r in await owner.fetch("SELECT id FROM items WHERE assessment_id = $1", assessment)]
        answered = items + items[:1] if number == 0 else items[:1]  # the first in full, an item twice
        for position, item in enumerate(answered):
            await owner.execute(
                "INSERT INTO responses (district_id, id, student_id, item_id, assignment_id, answer, correct, "
                "score, submitted_at) VALUES ($1, $2, $3, $4, $5, 'A', $6, $7, $8)",
                row["district_id"],
                uuid.uuid4(),
                student,
                item,
                assignment,
                position % 2 == 0,
                0.25 * (position % 5),
                at + dt.timedelta(minutes=position),
            )
    practice_item = await owner.fetchval("SELECT id FROM items ORDER BY id LIMIT 1")
    await owner.execute(
        "INSERT INTO responses (district_id, id, student_id, item_id, answer, correct, score, submitted_at) "
        "VALUES ($1, $2, $3, $4, 'B', true, 1.0, $5)",
        row["district_id"],
        uuid.uuid4(),
        student,
        practice_item,
        at,
    )
    return before, (await expected_progress(owner, student))["assignmentsCompleted"]


async def test_progress_is_what_the_rows_say_on_both_paths(gql: Gql, owner: Any) -> None:
    student = await owner.fetchval("SELECT id FROM users WHERE username = $1", STUDENT)
    before, after = await give_student_assignments(owner, student)
    # The case this test is for: one more completed, the partial one not.
    assert after == before + 1
    expected = await expected_progress(owner, student)
    assert expected["mastery"] and expected["responsesSubmitted"] > 0

    own = await gql(STUDENT, "STUDENT_LEARNING", OWN, {"id": str(student)})
    assert "errors" not in own, own
    assert own["data"]["student"]["progress"] == expected

    last_name = await owner.fetchval("SELECT last_name FROM users WHERE id = $1", student)
    searched = await gql(TEACHER, "INSTRUCTION", SEARCHED, {"q": last_name})
    assert "errors" not in searched, searched
    found = [n for n in searched["data"]["students"]["nodes"] if n["id"] == str(student)]
    assert found and found[0]["progress"] == expected


async def test_a_student_without_responses_has_zero_progress(gql: Gql, owner: Any) -> None:
    student = await owner.fetchval("SELECT id FROM users WHERE username = $1", STUDENT)
    await owner.execute("DELETE FROM responses WHERE student_id = $1", student)
    body = await gql(STUDENT, "STUDENT_LEARNING", OWN, {"id": str(student)})
    assert "errors" not in body, body
    assert body["data"]["student"]["progress"] == {
        "assignmentsCompleted": 0,
        "responsesSubmitted": 0,
        "averageScore": None,
        "percentCorrect": None,
        "mastery": [],
    }


async def answer(owner: Any, district: uuid.UUID, student: uuid.UUID, item: uuid.UUID, assignment: uuid.UUID) -> None:
    await owner.execute(
        "INSERT INTO responses (district_id, id, student_id, item_id, assignment_id, answer, correct, score, "
        "submitted_at) VALUES ($1, $2, $3, $4, $5, 'A', true, 0.5, $6)",
        district,
        uuid.uuid4(),
        student,
        item,
        assignment,
        dt.datetime(2031, 3, 2, tzinfo=dt.UTC),
    )


async def test_progress_follows_every_change_to_what_it_counts(gql: Gql, owner: Any) -> None:
    """Progress is kept, not computed per read (migration 0018): after each kind
    of change to the rows it counts, it reads as those rows say."""
    student = await owner.fetchval("SELECT id FROM users WHERE username = $1", STUDENT)
    row = await owner.fetchrow("SELECT district_id, class_id FROM enrollments WHERE student_id = $1 LIMIT 1", student)
    district = row["district_id"]

    async def check() -> dict[str, Any]:
        expected = await expected_progress(owner, student)
        body = await gql(STUDENT, "STUDENT_LEARNING", OWN, {"id": str(student)})
        assert "errors" not in body, body
        assert body["data"]["student"]["progress"] == expected
        return expected

    start = await check()
    # A new assessment of two items, assigned; the student answers the first: not completed.
    assessment = uuid.uuid4()
    await owner.execute("INSERT INTO assessments (id, title, subject) VALUES ($1, 'Kept progress', 'Math')", assessment)
    items = [uuid.uuid4(), uuid.uuid4()]
    for position, item in enumerate(items):
        await owner.execute(
            "INSERT INTO items (id, assessment_id, position, prompt, choices, skill, answer_key) "
            "VALUES ($1, $2, $3, 'Which?', ARRAY['A', 'B'], $4, 'A')",
            item,
            assessment,
            position,
            "kept.one" if position == 0 else "kept.two",
        )
    assignment = uuid.uuid4()
    await owner.execute(
        "INSERT INTO assignments (district_id, id, class_id, assessment_id, title) VALUES ($1, $2, $3, $4, 'Kept')",
        district,
        assignment,
        row["class_id"],
        assessment,
    )
    await answer(owner, district, student, items[0], assignment)
    answered = await check()
    assert answered["responsesSubmitted"] == start["responsesSubmitted"] + 1
    assert answered["assignmentsCompleted"] == start["assignmentsCompleted"]
    # The unanswered item taken out of the assessment: now completed (items, delete).
    await owner.execute("DELETE FROM items WHERE id = $1", items[1])
    completed = await check()
    assert completed["assignmentsCompleted"] == start["assignmentsCompleted"] + 1
    # An item added to it: not completed again (items, insert).
    await owner.execute(
        "INSERT INTO items (id, assessment_id, position, prompt, choices, skill, answer_key) "
        "VALUES ($1, $2, 5, 'Which?', ARRAY['A', 'B'], 'kept.two', 'A')",
        items[1],
        assessment,
    )
    assert (await check())["assignmentsCompleted"] == start["assignmentsCompleted"]
    # The answered item given another skill (items, update), a score changed (responses, update).
    await owner.execute("UPDATE items SET skill = 'kept.renamed' WHERE id = $1", items[0])
    renamed = await check()
    assert any(m["skill"] == "kept.renamed" for m in renamed["mastery"])
    await owner.execute("UPDATE responses SET score = 1.0 WHERE item_id = $1 AND student_id = $2", items[0], student)
    assert (await check())["averageScore"] != renamed["averageScore"]
    # The assignment given an assessment the student has not answered (assignments, update).
    other = await owner.fetchval("SELECT assessment_id FROM items WHERE assessment_id <> $1 LIMIT 1", assessment)
    await owner.execute("UPDATE items SET assessment_id = $2 WHERE id = $1", items[1], other)
    assert (await check())["assignmentsCompleted"] == start["assignmentsCompleted"] + 1
    await owner.execute("UPDATE assignments SET assessment_id = $2 WHERE id = $1", assignment, other)
    assert (await check())["assignmentsCompleted"] == start["assignmentsCompleted"]
    # Emptied in a transaction (responses, truncate), then rolled back.
    emptied = owner.transaction()
    await emptied.start()
    try:
        assert await owner.fetchval("SELECT count(*) FROM student_progress") > 0
        await owner.execute("TRUNCATE responses CASCADE")
        assert await owner.fetchval("SELECT count(*) FROM student_progress") == 0
    finally:
        await emptied.rollback()
    await check()


async def test_two_answers_at_once_are_both_counted(owner: Any, db: DatabaseUrls) -> None:
    """Two transactions answering for one student: the second's refresh waits for
    the first to commit, and counts its answer too (no lost update)."""
    student = await owner.fetchval("SELECT id FROM users WHERE username = $1", STUDENT)
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", student)
    item = await owner.fetchval("SELECT id FROM items ORDER BY id LIMIT 1")
    first, second = await connect(db.owner), await connect(db.owner)
    try:
        one, two = first.transaction(), second.transaction()
        await one.start()
        await two.start()
        await first.execute(
            "INSERT INTO responses (district_id, id, student_id, item_id, answer, correct, score, submitted_at) "
            "VALUES ($1, $2, $3, $4, 'A', true, 1.0, now())",
            district,
            uuid.uuid4(),
            student,
            item,
        )
        waiting = asyncio.ensure_future(
            second.execute(
                "INSERT INTO responses (district_id, id, student_id, item_id, answer, correct, score, submitted_at) "
                "VALUES ($1, $2, $3, $4, 'B', false, 0.0, now())",
                district,
                uuid.uuid4(),
                student,
                item,
            )
        )
        await asyncio.sleep(0.5)
        assert not waiting.done()  # its refresh waits for the first transaction's lock
        await one.commit()
        await waiting
        await two.commit()
    finally:
        await first.close()
        await second.close()
    kept = await owner.fetchrow(
        "SELECT responses_submitted, percent_correct FROM student_progress WHERE student_id = $1", student
    )
    expected = await expected_progress(owner, student)
    assert kept["responses_submitted"] == expected["responsesSubmitted"]
    assert kept["percent_correct"] == expected["percentCorrect"]
