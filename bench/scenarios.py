"""The benchmark's scenarios: who asks what, chosen from the seeded data.

S1  a teacher's class view under INSTRUCTION: a class of exactly 30 students,
    each with their 20 newest responses (answer, correct, score);
S2  a student's submitResponse under STUDENT_LEARNING (students rotate);
S3  a district performanceReport grouped by SCHOOL x GRADE_LEVEL, by the
    district administrator under REPORTING;
S4  a guardian's view of their child's progress under REPORTING (guardians
    rotate);
S5  a mix of S1-S4 in the proportions of ``MIX``.

The subjects are read over the owner connection (which bypasses row-level
security). When no class of exactly 30 active students exists (the seed
deals about 25 per class, plus students in a second class), one is created in
the benchmark database: "Benchmark class (30)" in Northwind's first school,
taught by teacher1, with 30 of that school's students.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from server.commands.seed import demo_id
from server.db import connect

CLASS_SIZE = 30
RESPONSES_SHOWN = 20
ROTATING_USERS = 200

# Realistic proportions of the mixed load (S5), per 100 requests: students
# answering questions dominate; teachers open class views between lessons;
# families look at progress; district reports are rare and heavy.
MIX = {"S2": 60, "S1": 25, "S4": 14, "S3": 1}

CLASS_VIEW = """query ClassView($id: ID!) {
  class(id: $id) {
    id
    name
    students {
      id
      firstName
      lastName
      responses(first: 20) { answer correct score }
    }
  }
}"""

SUBMIT = """mutation Submit($input: SubmitResponseInput!) {
  submitResponse(input: $input) {
    correct
    feedback
    response { id score submittedAt }
  }
}"""

DISTRICT_REPORT = """query DistrictReport($district: ID!) {
  performanceReport(input: {scope: {districtId: $district}, groupBy: [SCHOOL, GRADE_LEVEL]}) {
    minimumGroupSize
    suppressedRows
    rows {
      group { dimension value }
      suppressed
      suppressionReason
      students
      responses
      meanScore
      percentCorrect
    }
    total { students responses meanScore percentCorrect }
  }
}"""

CHILD_PROGRESS = """query ChildProgress($id: ID!) {
  student(id: $id) {
    firstName
    progress {
      averageScore
      percentCorrect
      mastery { skill level }
    }
    responses(first: 20) { correct score submittedAt }
  }
}"""

SCENARIO_TITLES = {
    "S1": "teacher's class view (30 students x 20 responses)",
    "S2": "student submitResponse",
    "S3": "district performanceReport SCHOOL x GRADE_LEVEL",
    "S4": "guardian's view of a child's progress",
    "S5": "mixed " + "/".join(f"{k} {v}%" for k, v in MIX.items()),
}


@dataclass(frozen=True)
class Submission:
    student_id: uuid.UUID
    item_id: uuid.UUID
    assignment_id: uuid.UUID
    answer: str


@dataclass(frozen=True)
class Subjects:
    district_id: uuid.UUID
    district_responses: int
    total_responses: int
    class_id: uuid.UUID
    class_created: bool
    teacher_id: uuid.UUID
    admin_id: uuid.UUID
    submissions: list[Submission]
    guardians: list[tuple[uuid.UUID, uuid.UUID]]  # (guardian, child)


ACTIVE = "e.begin_date <= current_date AND (e.end_date IS NULL OR e.end_date >= current_date)"

FIND_CLASS = f"""
SELECT c.id, min(ct.teacher_id::text)::uuid AS teacher_id
FROM classes c
JOIN class_teachers ct ON ct.district_id = c.district_id AND ct.class_id = c.id
WHERE c.district_id = $1
  AND (SELECT count(*) FROM enrollments e JOIN users u ON u.district_id = e.district_id AND u.id = e.student_id
       WHERE e.district_id = c.district_id AND e.class_id = c.id AND u.role = 'STUDENT' AND {ACTIVE}) = $2
GROUP BY c.id, c.sourced_id
ORDER BY c.sourced_id, c.id
LIMIT 1
"""


async def _bench_class(conn: Any, district_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID, bool]:
    found = await conn.fetchrow(FIND_CLASS, district_id, CLASS_SIZE)
    if found is not None:
        return found["id"], found["teacher_id"], False
    school_id = demo_id("school", "northwind", "1")
    teacher_id = demo_id("user", "northwind", "teacher", "1")
    class_id = demo_id("class", "northwind", "bench-30")
    students = await conn.fetch(
        "SELECT id FROM users WHERE district_id = $1 AND school_id = $2 AND role = 'STUDENT' "
        "ORDER BY student_number LIMIT $3",
        district_id,
        school_id,
        CLASS_SIZE,
    )
    if len(students) < CLASS_SIZE:
        raise RuntimeError(f"Northwind's first school has fewer than {CLASS_SIZE} students: seed more")
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO classes (district_id, id, school_id, name, subject, grade_level, sourced_id) "
            "VALUES ($1, $2, $3, 'Benchmark class (30)', 'Math', NULL, 'northwind-bench-class-30') "
            "ON CONFLICT DO NOTHING",
            district_id,
            class_id,
            school_id,
        )
        await conn.execute(
            "INSERT INTO class_teachers (district_id, class_id, teacher_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            district_id,
            class_id,
            teacher_id,
        )
        await conn.executemany(
            "INSERT INTO enrollments (district_id, class_id, student_id, begin_date, end_date, sourced_id) "
            "VALUES ($1, $2, $3, $4, NULL, $5) ON CONFLICT DO NOTHING",
            [
                (district_id, class_id, row["id"], dt.date(2026, 8, 15), f"northwind-bench-enrollment-{n}")
                for n, row in enumerate(students)
            ],
        )
    return class_id, teacher_id, True


async def prepare_subjects(owner_url: str) -> Subjects:
    district_id = demo_id("district", "northwind")
    conn = await connect(owner_url)
    try:
        class_id, teacher_id, created = await _bench_class(conn, district_id)
        # Students of Northwind with an assignment of their class and an item of it.
        rows = await conn.fetch(
            f"""
            SELECT DISTINCT ON (u.id) u.id AS student_id, a.id AS assignment_id, i.id AS item_id,
                   i.choices[1] AS answer
            FROM users u
            JOIN enrollments e ON e.district_id = u.district_id AND e.student_id = u.id AND {ACTIVE}
            JOIN assignments a ON a.district_id = e.district_id AND a.class_id = e.class_id
            JOIN items i ON i.assessment_id = a.assessment_id
            WHERE u.district_id = $1 AND u.role = 'STUDENT' AND NOT u.disabled
            ORDER BY u.id, a.id, i.position
            LIMIT $2
            """,
            district_id,
            ROTATING_USERS,
        )
        submissions = [Submission(r["student_id"], r["item_id"], r["assignment_id"], r["answer"]) for r in rows]
        guardians = await conn.fetch(
            "SELECT DISTINCT ON (gl.guardian_id) gl.guardian_id, gl.student_id FROM guardian_links gl "
            "JOIN users g ON g.district_id = gl.district_id AND g.id = gl.guardian_id AND NOT g.disabled "
            "WHERE gl.district_id = $1 ORDER BY gl.guardian_id, gl.student_id LIMIT $2",
            district_id,
            ROTATING_USERS,
        )
        district_responses = await conn.fetchval("SELECT count(*) FROM responses WHERE district_id = $1", district_id)
        total_responses = await conn.fetchval("SELECT count(*) FROM responses")
    finally:
        await conn.close()
    return Subjects(
        district_id=district_id,
        district_responses=int(district_responses),
        total_responses=int(total_responses),
        class_id=class_id,
        class_created=created,
        teacher_id=teacher_id,
        admin_id=demo_id("user", "northwind", "admin"),
        submissions=submissions,
        guardians=[(r["guardian_id"], r["student_id"]) for r in guardians],
    )


@dataclass(frozen=True)
class Request:
    """One GraphQL request of a scenario, as the user it is made by."""

    scenario: str
    user_id: uuid.UUID
    purpose: str
    body: bytes


def body_of(query: str, variables: dict[str, Any]) -> bytes:
    return orjson.dumps({"query": query, "variables": variables})


_body = body_of


def scenario_requests(subjects: Subjects) -> dict[str, list[Request]]:
    """S1-S4, each as the list of requests its load rotates through."""
    return {
        "S1": [Request("S1", subjects.teacher_id, "INSTRUCTION", _body(CLASS_VIEW, {"id": str(subjects.class_id)}))],
        "S2": [
            Request(
                "S2",
                s.student_id,
                "STUDENT_LEARNING",
                _body(
                    SUBMIT,
                    {
                        "input": {
                            "itemId": str(s.item_id),
                            "assignmentId": str(s.assignment_id),
                            "answer": s.answer,
                            "timeSpentSeconds": 42,
                        }
                    },
                ),
            )
            for s in subjects.submissions
        ],
        "S3": [
            Request(
                "S3",
                subjects.admin_id,
                "REPORTING",
                _body(DISTRICT_REPORT, {"district": str(subjects.district_id)}),
            )
        ],
        "S4": [
            Request("S4", guardian, "REPORTING", _body(CHILD_PROGRESS, {"id": str(child)}))
            for guardian, child in subjects.guardians
        ],
    }


def check_body(scenario: str, body: dict[str, Any]) -> str | None:
    """Why a scenario's response is not the full answer it should be; None when it is."""
    if body.get("errors"):
        codes = sorted({str(e.get("extensions", {}).get("code")) for e in body["errors"]})
        return "errors " + ",".join(codes)
    data = body.get("data") or {}
    if scenario == "S1":
        students = (data.get("class") or {}).get("students") or []
        if len(students) != CLASS_SIZE:
            return f"{len(students)} students instead of {CLASS_SIZE}"
        short = [s for s in students if len(s.get("responses") or []) != RESPONSES_SHOWN]
        if short:
            return f"{len(short)} students with fewer than {RESPONSES_SHOWN} responses"
    elif scenario == "S2":
        if not (data.get("submitResponse") or {}).get("response"):
            return "no response stored"
    elif scenario == "S3":
        if not (data.get("performanceReport") or {}).get("rows"):
            return "a report without rows"
    elif scenario == "S4":
        student = data.get("student") or {}
        if not student.get("progress") or not student.get("responses"):
            return "no progress or responses"
    return None


def is_not_implemented(body: dict[str, Any]) -> bool:
    return any((e.get("extensions") or {}).get("code") == "NOT_IMPLEMENTED" for e in body.get("errors") or [])
