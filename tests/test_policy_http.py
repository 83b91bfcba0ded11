"""Every role x purpose x category cell of the hand-written GOLDEN table, over HTTP.

Each demo user of a role asks, under each purpose, one query that reaches a
field of every category within its scope (one request per role and purpose,
shared by that pair's nine cells). An allowed cell returns values; a denied
cell returns null with FORBIDDEN naming the category, the purpose and
PURPOSE_NOT_ALLOWED_FOR_CATEGORY; a pair outside GOLDEN is refused with
PURPOSE_NOT_ALLOWED (403) before anything is read; and where the role reaches
no record of a category under a purpose, no value of that category appears.

The app here loads only the shipped policy (2020-04-01), the version GOLDEN
was written from; the test versions of tests/policies are exercised in
tests/test_conditions.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from permissions.enums import CALLER_ROLES, DataCategory, Purpose, Role
from server.settings import Settings
from tests.conftest import Gql
from tests.test_policy_golden import GOLDEN

C = DataCategory
GRAPHQL_RESPONSE = "application/graphql-response+json"

# The demo user who speaks for each role.
ACTOR = {
    Role.DISTRICT_ADMIN: "admin@northwind.example",
    Role.SCHOOL_ADMIN: "principal1@northwind.example",
    Role.TEACHER: "teacher1@northwind.example",
    Role.STUDENT: "student1@northwind.example",
    Role.GUARDIAN: "guardian1@northwind.example",
    Role.ANALYST: "analyst@pledgeql.example",
    Role.SUPPORT: "support@pledgeql.example",
}
ADMIN = ACTOR[Role.DISTRICT_ADMIN]

# POLICY.md section 1, by hand: the category of every classified field.
FIELD_CATEGORY: dict[tuple[str, str], DataCategory] = {
    **{("Student", f): C.DIRECTORY for f in ("firstName", "lastName", "preferredName", "username", "gradeLevel")},
    **{("Student", f): C.IDENTIFIER for f in ("studentNumber", "stateId", "email")},
    **{
        ("Student", f): C.DEMOGRAPHIC
        for f in (
            "gender",
            "birthDate",
            "ethnicity",
            "englishLearner",
            "specialEducation",
            "economicallyDisadvantaged",
        )
    },
    **{("Student", f): C.PERFORMANCE for f in ("learningLevel", "progress", "responses")},
    **{("Student", f): C.USAGE for f in ("lastActiveAt", "activity")},
    ("Student", "deviceSessions"): C.DEVICE,
    ("Student", "guardians"): C.CONTACT,
    **{
        ("StudentProgress", f): C.PERFORMANCE
        for f in ("assignmentsCompleted", "responsesSubmitted", "averageScore", "percentCorrect", "mastery")
    },
    ("SkillMastery", "level"): C.PERFORMANCE,
    ("Response", "answer"): C.WORK,
    **{("Response", f): C.PERFORMANCE for f in ("correct", "score", "feedback", "submittedAt")},
    ("Response", "timeSpentSeconds"): C.USAGE,
    **{("ActivityEvent", f): C.USAGE for f in ("kind", "target", "occurredAt", "durationMs")},
    **{
        ("DeviceSession", f): C.DEVICE
        for f in ("startedAt", "ipAddress", "userAgent", "browser", "operatingSystem", "deviceType", "referrer")
    },
    **{("Staff", f): C.STAFF for f in ("firstName", "lastName", "email")},
    **{("Guardian", f): C.CONTACT for f in ("firstName", "lastName", "email", "phone", "relationship")},
}

STUDENT_FIELDS = """
fragment S on Student {
  __typename id
  firstName lastName preferredName username gradeLevel
  studentNumber stateId email
  gender birthDate ethnicity englishLearner specialEducation economicallyDisadvantaged
  learningLevel
  progress { __typename assignmentsCompleted responsesSubmitted averageScore percentCorrect
             mastery { __typename skill level } }
  responses(first: 3) { __typename id answer correct score feedback submittedAt timeSpentSeconds }
  lastActiveAt
  activity(first: 3) { __typename id kind target occurredAt durationMs }
  deviceSessions(first: 2) { __typename id startedAt ipAddress userAgent browser operatingSystem deviceType referrer }
  guardians { __typename id firstName lastName email phone relationship }
}
"""
STAFF_FIELDS = "__typename id firstName lastName email"
CELLS_QUERY = (
    """
query Cells($student: ID!, $class: ID!) {
  me {
    staff { STAFF }
    guardian { __typename id firstName lastName email phone relationship }
    student { ...S }
  }
  student(id: $student) { ...S classes { __typename id teachers { STAFF } } }
  class(id: $class) { __typename id teachers { STAFF } }
}
""".replace("STAFF", STAFF_FIELDS)
    + STUDENT_FIELDS
)

# POLICY.md sections 2 and 3, by hand: the pairs whose scope reaches the demo
# student (student1, in teacher1's class in principal1's school, guardian1's
# child), and the pairs that reach some staff record (a staff member's own
# record through `me`, teachers through classes).
REACHES_STUDENT = {
    (Role.TEACHER, Purpose.INSTRUCTION),
    (Role.TEACHER, Purpose.REPORTING),
    (Role.SCHOOL_ADMIN, Purpose.INSTRUCTION),
    (Role.SCHOOL_ADMIN, Purpose.REPORTING),
    (Role.DISTRICT_ADMIN, Purpose.INSTRUCTION),
    (Role.DISTRICT_ADMIN, Purpose.REPORTING),
    (Role.DISTRICT_ADMIN, Purpose.RECORD_ACCESS),
    (Role.DISTRICT_ADMIN, Purpose.LEGAL_COMPLIANCE),
    (Role.STUDENT, Purpose.STUDENT_LEARNING),
    (Role.STUDENT, Purpose.PERSONALIZATION),
    (Role.STUDENT, Purpose.RECORD_ACCESS),
    (Role.GUARDIAN, Purpose.REPORTING),
    (Role.GUARDIAN, Purpose.RECORD_ACCESS),
    (Role.SUPPORT, Purpose.SUPPORT),
}
STAFF_ROLES = {Role.TEACHER, Role.SCHOOL_ADMIN, Role.DISTRICT_ADMIN}
REACHES_TEACHERS = {
    (Role.STUDENT, Purpose.STUDENT_LEARNING),
    (Role.GUARDIAN, Purpose.REPORTING),
    (Role.SUPPORT, Purpose.SUPPORT),
}


def reaches(role: Role, purpose: Purpose, category: DataCategory) -> bool:
    """Whether the query reaches a record that carries a field of ``category``."""
    pair = (role, purpose)
    if category is C.STAFF:
        return role in STAFF_ROLES or pair in REACHES_TEACHERS
    if category is C.CONTACT:
        return pair in REACHES_STUDENT or role is Role.GUARDIAN
    if category is C.WORK:
        # The answers are reached through Student.responses, a PERFORMANCE field.
        return pair in REACHES_STUDENT and C.PERFORMANCE in GOLDEN.get(pair, set())
    return pair in REACHES_STUDENT


ALL_CELLS = list(itertools.product(CALLER_ROLES, Purpose, DataCategory))


def cell_id(cell: tuple[Role, Purpose, DataCategory]) -> str:
    return "-".join(part.value for part in cell)


@dataclasses.dataclass(frozen=True)
class Occurrence:
    category: DataCategory
    path: tuple[str | int, ...]
    value: Any


def occurrences(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[Occurrence]:
    """Every classified field selected in a response, with its value and path."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from occurrences(item, (*path, index))
    elif isinstance(value, dict):
        type_name = value.get("__typename")
        for key, item in value.items():
            category = FIELD_CATEGORY.get((type_name, key)) if isinstance(type_name, str) else None
            if category is not None:
                yield Occurrence(category, (*path, key), item)
            yield from occurrences(item, (*path, key))


@pytest.fixture(scope="module")
def settings(base_settings: Settings) -> Settings:
    """Only the shipped policy: the version GOLDEN was written from."""
    return dataclasses.replace(base_settings, policy_dirs=())


@pytest.fixture(scope="module")
async def cells(gql: Gql, owner: Any, users: dict[str, uuid.UUID]) -> dict[tuple[Role, Purpose], dict[str, Any]]:
    """One response per (role, purpose): the pair's nine cells are read from it."""
    # Direct record access on, so that students and guardians can use RECORD_ACCESS,
    # and a support grant for Northwind: both through the API.
    setup = await gql(
        ADMIN,
        "REPORTING",
        "mutation { updateDistrictSettings(input: {directRecordAccess: true}) { directRecordAccess } }",
    )
    assert setup["data"]["updateDistrictSettings"]["directRecordAccess"] is True, setup
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).isoformat()
    grant = await gql(
        ADMIN,
        "REPORTING",
        'mutation($e: DateTime!) { openSupportGrant(input: {ticket: "HTTP-MATRIX", expiresAt: $e}) { id } }',
        {"e": expires},
    )
    assert "errors" not in grant, grant

    class_id = await owner.fetchval(
        "SELECT e.class_id FROM enrollments e JOIN class_teachers ct ON ct.class_id = e.class_id "
        "AND ct.district_id = e.district_id WHERE e.student_id = $1 AND ct.teacher_id = $2 LIMIT 1",
        users[ACTOR[Role.STUDENT]],
        users[ACTOR[Role.TEACHER]],
    )
    variables = {"student": str(users[ACTOR[Role.STUDENT]]), "class": str(class_id)}
    responses: dict[tuple[Role, Purpose], dict[str, Any]] = {}
    for role, purpose in itertools.product(CALLER_ROLES, Purpose):
        headers = {"Accept": GRAPHQL_RESPONSE}
        if purpose is Purpose.LEGAL_COMPLIANCE:
            headers["X-Justification"] = "subpoena 2026-88"
        responses[(role, purpose)] = await gql(ACTOR[role], purpose.value, CELLS_QUERY, variables, headers=headers)
    return responses


def forbidden_errors(body: dict[str, Any], category: DataCategory) -> dict[tuple[str | int, ...], dict[str, Any]]:
    return {
        tuple(e["path"]): e
        for e in body.get("errors", [])
        if e["extensions"].get("code") == "FORBIDDEN" and e["extensions"].get("category") == category.value
    }


@pytest.mark.parametrize(("role", "purpose", "category"), ALL_CELLS, ids=[cell_id(c) for c in ALL_CELLS])
def test_each_cell_of_the_golden_table_holds_over_http(
    cells: dict[tuple[Role, Purpose], dict[str, Any]], role: Role, purpose: Purpose, category: DataCategory
) -> None:
    body = cells[(role, purpose)]
    if (role, purpose) not in GOLDEN:
        assert body["_status"] == 403
        assert "data" not in body
        assert [e["extensions"]["code"] for e in body["errors"]] == ["PURPOSE_NOT_ALLOWED"]
        return

    assert body["_status"] == 200
    found = [o for o in occurrences(body["data"]) if o.category is category]
    denials = forbidden_errors(body, category)
    if category in GOLDEN[(role, purpose)]:
        assert denials == {}, f"{category.value} is allowed to {role.value}/{purpose.value} but was refused"
        if reaches(role, purpose, category):
            assert any(o.value not in (None, []) for o in found), f"no {category.value} value came back"
        return

    # Denied: never a value, and every field of the category that was reached is refused with its reason.
    assert [o.path for o in found if o.value is not None] == []
    assert {o.path for o in found} == set(denials)
    for error in denials.values():
        assert error["extensions"] == {
            "code": "FORBIDDEN",
            "category": category.value,
            "purpose": purpose.value,
            "reason": "PURPOSE_NOT_ALLOWED_FOR_CATEGORY",
        }
    if reaches(role, purpose, category):
        assert denials, f"{role.value}/{purpose.value} reached no {category.value} field to refuse"


GOLDEN_PAIRS = sorted(GOLDEN, key=lambda pair: (pair[0].value, pair[1].value))


@pytest.mark.parametrize(("role", "purpose"), GOLDEN_PAIRS, ids=[f"{r.value}-{p.value}" for r, p in GOLDEN_PAIRS])
def test_an_allowed_pair_answers_with_no_error_but_refusals_and_out_of_scope_roots(
    cells: dict[tuple[Role, Purpose], dict[str, Any]], role: Role, purpose: Purpose
) -> None:
    body = cells[(role, purpose)]
    others = [e for e in body.get("errors", []) if e["extensions"]["code"] != "FORBIDDEN"]
    for error in others:
        assert error["extensions"] == {"code": "NOT_FOUND"}
        assert error["path"] in (["student"], ["class"])
    not_found = {e["path"][0] for e in others}
    # The demo student is out of scope exactly where POLICY.md's scope says so.
    assert ("student" in not_found) is ((role, purpose) not in REACHES_STUDENT)
    if (role, purpose) in REACHES_STUDENT:
        assert body["data"]["student"]["id"] == body["data"]["student"]["id"] != ""


def test_the_matrix_covers_every_cell() -> None:
    assert len(ALL_CELLS) == len(CALLER_ROLES) * len(Purpose) * len(DataCategory) == 567


# POLICY.md section 2: a scope's staff rows are reachable under every purpose
# of the pair, STAFF listed or not. The demo class is teacher1's, in
# principal1's school: these pairs list its teachers.
LISTS_THE_CLASS_TEACHERS = sorted(
    (
        (Role.TEACHER, Purpose.INSTRUCTION),
        (Role.TEACHER, Purpose.REPORTING),
        (Role.SCHOOL_ADMIN, Purpose.INSTRUCTION),
        (Role.SCHOOL_ADMIN, Purpose.REPORTING),
        (Role.DISTRICT_ADMIN, Purpose.INSTRUCTION),
        (Role.DISTRICT_ADMIN, Purpose.REPORTING),
        (Role.DISTRICT_ADMIN, Purpose.RECORD_ACCESS),
        (Role.DISTRICT_ADMIN, Purpose.LEGAL_COMPLIANCE),
    ),
    key=lambda pair: (pair[0].value, pair[1].value),
)


@pytest.mark.parametrize(
    ("role", "purpose"), LISTS_THE_CLASS_TEACHERS, ids=[f"{r.value}-{p.value}" for r, p in LISTS_THE_CLASS_TEACHERS]
)
def test_a_scopes_staff_rows_are_listed_under_every_purpose_of_the_pair(
    cells: dict[tuple[Role, Purpose], dict[str, Any]], role: Role, purpose: Purpose
) -> None:
    teachers = cells[(role, purpose)]["data"]["class"]["teachers"]
    assert teachers and all(t["id"] for t in teachers)
    named = C.STAFF in GOLDEN[(role, purpose)]
    assert all((t["firstName"] is not None) is named for t in teachers)
