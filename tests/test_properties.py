"""A property over random callers and random targets from the demo data.

Hypothesis draws a demo user of any role, one of the purposes POLICY.md gives
that role, and a student, a class and a school of either district. Whatever it
draws, the response never holds a value of a category the hand-written GOLDEN
table denies, and never a row outside the caller's scope, which is computed
here independently with SQL over the owner connection from POLICY.md's scope
column (not from resolvers/scope.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from permissions.enums import CALLER_ROLES, Purpose, Role
from server.settings import Settings
from tests.conftest import Gql
from tests.test_policy_golden import GOLDEN
from tests.test_policy_http import FIELD_CATEGORY, occurrences

PRINCIPALS = [
    "admin@northwind.example",
    "admin@riverside.example",
    "principal1@northwind.example",
    "principal2@northwind.example",
    "principal1@riverside.example",
    "teacher1@northwind.example",
    "teacher2@northwind.example",
    "teacher3@northwind.example",
    "teacher1@riverside.example",
    "student1@northwind.example",
    "student2@northwind.example",
    "student1@riverside.example",
    "guardian1@northwind.example",
    "guardian1@riverside.example",
    "guardian2@northwind.example",
    "analyst@pledgeql.example",
    "support@pledgeql.example",
]

STUDENT_FIELDS = """
fragment S on Student {
  __typename id
  firstName username gradeLevel studentNumber email gender birthDate englishLearner
  learningLevel progress { __typename responsesSubmitted averageScore mastery { __typename skill level } }
  responses(first: 2) { __typename id answer correct score timeSpentSeconds }
  lastActiveAt activity(first: 2) { __typename id kind occurredAt }
  deviceSessions(first: 1) { __typename id ipAddress browser }
  guardians { __typename id firstName email phone }
}
"""
QUERY = (
    """
query Property($student: ID!, $class: ID!, $school: ID!) {
  student(id: $student) { ...S classes { __typename id teachers { __typename id firstName email } } }
  class(id: $class) { __typename id students { ...S } teachers { __typename id firstName lastName email } }
  school(id: $school) {
    __typename id classes { __typename id }
    students(first: 100) { totalCount nodes { ...S } }
  }
  students(first: 500) { totalCount nodes { __typename id } }
}
"""
    + STUDENT_FIELDS
)

ACTIVE = "e.begin_date <= current_date AND (e.end_date IS NULL OR e.end_date >= current_date)"
STAFF_ROLES = "('TEACHER', 'SCHOOL_ADMIN', 'DISTRICT_ADMIN')"
GRANTED_USERS = (
    "SELECT u.id FROM users u JOIN support_grants g ON g.district_id = u.district_id "
    "WHERE g.revoked_at IS NULL AND g.expires_at > now() AND g.created_at <= now() "
    "AND (cardinality(g.user_ids) = 0 OR u.id = ANY(g.user_ids))"
)

# POLICY.md sections 2 and 3 by hand: (role, purpose) -> whose student, staff
# and guardian rows the caller reaches, as SQL over the caller ($1 = user id).
# Staff rows show up here only as teachers of classes.
STUDENT_ROWS = {
    "CLASSES": (
        f"SELECT e.student_id FROM enrollments e JOIN class_teachers ct ON ct.district_id = e.district_id "
        f"AND ct.class_id = e.class_id WHERE ct.teacher_id = $1 AND {ACTIVE}"
    ),
    "SCHOOL": (
        "SELECT s.id FROM users s JOIN users me ON me.id = $1 "
        "WHERE s.role = 'STUDENT' AND s.district_id = me.district_id AND s.school_id = me.school_id"
    ),
    "DISTRICT": (
        "SELECT s.id FROM users s JOIN users me ON me.id = $1 "
        "WHERE s.role = 'STUDENT' AND s.district_id = me.district_id"
    ),
    "SELF": "SELECT id FROM users WHERE id = $1 AND role = 'STUDENT'",
    "CHILDREN": "SELECT student_id FROM guardian_links WHERE guardian_id = $1",
    "GRANT": f"SELECT id FROM users WHERE role = 'STUDENT' AND id IN ({GRANTED_USERS}) AND $1::uuid IS NOT NULL",
}
STAFF_ROWS = {
    "CO_TEACHERS": (
        "SELECT t.teacher_id FROM class_teachers t WHERE t.class_id IN "
        "(SELECT class_id FROM class_teachers WHERE teacher_id = $1) UNION SELECT $1::uuid"
    ),
    "SELF": "SELECT id FROM users WHERE id = $1",
    "SCHOOL": (
        f"SELECT s.id FROM users s JOIN users me ON me.id = $1 WHERE s.role IN {STAFF_ROLES} "
        "AND s.district_id = me.district_id AND s.school_id = me.school_id"
    ),
    "DISTRICT": (
        f"SELECT s.id FROM users s JOIN users me ON me.id = $1 WHERE s.role IN {STAFF_ROLES} "
        "AND s.district_id = me.district_id"
    ),
    "OWN_TEACHERS": (
        f"SELECT ct.teacher_id FROM class_teachers ct JOIN enrollments e ON e.district_id = ct.district_id "
        f"AND e.class_id = ct.class_id WHERE e.student_id = $1 AND {ACTIVE}"
    ),
    "CHILDRENS_TEACHERS": (
        f"SELECT ct.teacher_id FROM class_teachers ct JOIN enrollments e ON e.district_id = ct.district_id "
        f"AND e.class_id = ct.class_id JOIN guardian_links gl ON gl.student_id = e.student_id "
        f"WHERE gl.guardian_id = $1 AND {ACTIVE}"
    ),
    "GRANT": f"SELECT id FROM users WHERE role IN {STAFF_ROLES} AND id IN ({GRANTED_USERS}) AND $1::uuid IS NOT NULL",
}
GUARDIAN_ROWS = {
    "DISTRICT": (
        "SELECT g.id FROM users g JOIN users me ON me.id = $1 "
        "WHERE g.role = 'GUARDIAN' AND g.district_id = me.district_id"
    ),
    "SELF": "SELECT id FROM users WHERE id = $1",
    "CHILDRENS_GUARDIANS": (
        "SELECT gl.guardian_id FROM guardian_links gl WHERE gl.student_id IN "
        "(SELECT student_id FROM guardian_links WHERE guardian_id = $1) UNION SELECT $1::uuid"
    ),
}

R, P = Role, Purpose
SCOPES: dict[tuple[Role, Purpose], tuple[str | None, str | None, str | None]] = {
    (R.TEACHER, P.INSTRUCTION): ("CLASSES", "CO_TEACHERS", None),
    (R.TEACHER, P.REPORTING): ("CLASSES", "CO_TEACHERS", None),
    (R.TEACHER, P.PERSONALIZATION): (None, "SELF", None),
    (R.TEACHER, P.COMMUNICATION): (None, "SCHOOL", None),
    (R.SCHOOL_ADMIN, P.INSTRUCTION): ("SCHOOL", "SCHOOL", None),
    (R.SCHOOL_ADMIN, P.REPORTING): ("SCHOOL", "SCHOOL", None),
    (R.SCHOOL_ADMIN, P.PERSONALIZATION): (None, "SELF", None),
    (R.SCHOOL_ADMIN, P.COMMUNICATION): (None, "SCHOOL", None),
    (R.DISTRICT_ADMIN, P.INSTRUCTION): ("DISTRICT", "DISTRICT", None),
    (R.DISTRICT_ADMIN, P.REPORTING): ("DISTRICT", "DISTRICT", None),
    (R.DISTRICT_ADMIN, P.PERSONALIZATION): (None, "SELF", None),
    (R.DISTRICT_ADMIN, P.COMMUNICATION): (None, "DISTRICT", None),
    (R.DISTRICT_ADMIN, P.RECORD_ACCESS): ("DISTRICT", "DISTRICT", "DISTRICT"),
    (R.DISTRICT_ADMIN, P.LEGAL_COMPLIANCE): ("DISTRICT", "DISTRICT", "DISTRICT"),
    (R.STUDENT, P.STUDENT_LEARNING): ("SELF", "OWN_TEACHERS", None),
    (R.STUDENT, P.PERSONALIZATION): ("SELF", None, None),
    (R.STUDENT, P.RECORD_ACCESS): ("SELF", None, None),
    (R.GUARDIAN, P.REPORTING): ("CHILDREN", "CHILDRENS_TEACHERS", None),
    (R.GUARDIAN, P.PERSONALIZATION): (None, None, "SELF"),
    (R.GUARDIAN, P.RECORD_ACCESS): ("CHILDREN", None, "CHILDRENS_GUARDIANS"),
    (R.ANALYST, P.PRODUCT_ANALYTICS): (None, None, None),
    (R.ANALYST, P.REPORTING): (None, None, None),
    (R.SUPPORT, P.SUPPORT): ("GRANT", "GRANT", None),
}
PURPOSES_OF = {role: sorted((p for (r, p) in GOLDEN if r is role), key=list(Purpose).index) for role in Role}


@dataclasses.dataclass(frozen=True)
class Caller:
    username: str
    user_id: uuid.UUID
    role: Role
    district_id: uuid.UUID | None


@dataclasses.dataclass(repr=False)
class World:
    callers: list[Caller]
    students: list[uuid.UUID]
    classes: list[uuid.UUID]
    schools: list[uuid.UUID]
    class_district: dict[uuid.UUID, uuid.UUID]
    school_district: dict[uuid.UUID, uuid.UUID]
    school_of_student: dict[uuid.UUID, uuid.UUID]
    enrolled: dict[uuid.UUID, set[uuid.UUID]]
    granted_districts: set[uuid.UUID]

    def __repr__(self) -> str:
        return f"World({len(self.callers)} callers, {len(self.students)} students)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints a failing example's arguments: keep the demo data out of it.
        printer.text(repr(self))


@pytest.fixture(scope="module")
def settings(base_settings: Settings) -> Settings:
    """Only the shipped policy: the version GOLDEN was written from."""
    return dataclasses.replace(base_settings, policy_dirs=())


@pytest.fixture(scope="module")
async def world(gql: Gql, owner: Any) -> World:
    # Support grants through the API: all of Northwind, and in Riverside only two named users.
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
    riverside_named = await owner.fetch(
        "SELECT id FROM users WHERE username IN ('student1@riverside.example', 'teacher1@riverside.example')"
    )
    opened = [
        ("admin@northwind.example", None),
        ("admin@riverside.example", [str(r["id"]) for r in riverside_named]),
    ]
    for admin, user_ids in opened:
        body = await gql(
            admin,
            "REPORTING",
            "mutation($i: SupportGrantInput!) { openSupportGrant(input: $i) { id } }",
            {"i": {"ticket": "PROPERTY", "expiresAt": expires, "userIds": user_ids}},
        )
        assert "errors" not in body, body
    # An expired grant for the whole of Riverside must widen nothing.
    await owner.execute(
        "INSERT INTO support_grants (district_id, id, ticket, expires_at, created_at) "
        "SELECT id, $1, 'EXPIRED', now() - interval '1 hour', now() - interval '2 days' "
        "FROM districts WHERE name = 'Riverside Unified'",
        uuid.uuid4(),
    )

    rows = await owner.fetch(
        "SELECT username, id, role, district_id FROM users WHERE username = ANY($1::text[]) "
        "UNION ALL SELECT username, id, role, NULL FROM platform_users WHERE username = ANY($1::text[])",
        PRINCIPALS,
    )
    callers = [Caller(r["username"], r["id"], Role(r["role"]), r["district_id"]) for r in rows]
    assert {c.username for c in callers} == set(PRINCIPALS)
    assert {c.role for c in callers} == set(CALLER_ROLES)
    students = await owner.fetch("SELECT id, school_id FROM users WHERE role = 'STUDENT' ORDER BY id")
    classes = await owner.fetch("SELECT id, district_id FROM classes ORDER BY id")
    schools = await owner.fetch("SELECT id, district_id FROM schools ORDER BY id")
    enrolled: dict[uuid.UUID, set[uuid.UUID]] = {}
    for r in await owner.fetch(f"SELECT e.class_id, e.student_id FROM enrollments e WHERE {ACTIVE}"):
        enrolled.setdefault(r["class_id"], set()).add(r["student_id"])
    granted = await owner.fetch(
        "SELECT DISTINCT district_id FROM support_grants "
        "WHERE revoked_at IS NULL AND expires_at > now() AND created_at <= now()"
    )
    return World(
        callers=sorted(callers, key=lambda c: PRINCIPALS.index(c.username)),
        students=[r["id"] for r in students],
        classes=[r["id"] for r in classes],
        schools=[r["id"] for r in schools],
        class_district={r["id"]: r["district_id"] for r in classes},
        school_district={r["id"]: r["district_id"] for r in schools},
        school_of_student={r["id"]: r["school_id"] for r in students},
        enrolled=enrolled,
        granted_districts={r["district_id"] for r in granted},
    )


async def expected_rows(owner: Any, caller: Caller, purpose: Purpose) -> tuple[set[str], set[str], set[str]]:
    student_scope, staff_scope, guardian_scope = SCOPES[(caller.role, purpose)]

    async def ids(sql: str | None) -> set[str]:
        if sql is None:
            return set()
        return {str(r[0]) for r in await owner.fetch(sql, caller.user_id)}

    return (
        await ids(STUDENT_ROWS[student_scope] if student_scope else None),
        await ids(STAFF_ROWS[staff_scope] if staff_scope else None),
        await ids(GUARDIAN_ROWS[guardian_scope] if guardian_scope else None),
    )


def objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every object of the response that names its type."""
    if isinstance(value, list):
        for item in value:
            yield from objects(item)
    elif isinstance(value, dict):
        if "__typename" in value:
            yield value
        for item in value.values():
            yield from objects(item)


def test_the_hand_written_scopes_cover_every_golden_pair() -> None:
    assert set(SCOPES) == set(GOLDEN)
    assert {name for (_, name) in FIELD_CATEGORY} >= {"firstName", "answer", "ipAddress", "phone"}


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
@given(data=st.data())
async def test_no_denied_value_and_no_row_outside_the_scope_ever_appears(
    data: st.DataObject, world: World, gql: Gql, owner: Any
) -> None:
    caller = data.draw(st.sampled_from(world.callers), label="caller")
    purpose = data.draw(st.sampled_from(PURPOSES_OF[caller.role]), label="purpose")
    student = data.draw(st.sampled_from(world.students), label="student")
    klass = data.draw(st.sampled_from(world.classes), label="class")
    school = data.draw(st.sampled_from(world.schools), label="school")

    variables = {"student": str(student), "class": str(klass), "school": str(school)}
    headers = {"X-Justification": "property test"} if purpose is Purpose.LEGAL_COMPLIANCE else {}
    if caller.role in (Role.STUDENT, Role.GUARDIAN) and purpose is Purpose.RECORD_ACCESS:
        # Direct record access is off in the demo districts: the whole request is refused.
        body = await gql(caller.username, purpose.value, QUERY, variables, headers=headers)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["DIRECT_ACCESS_DISABLED"]
        assert "data" not in body
        return
    body = await gql(caller.username, purpose.value, QUERY, variables, headers=headers)
    assert body["_status"] == 200, body
    data_out = body["data"]
    allowed = GOLDEN[(caller.role, purpose)]

    # 1. No value of a category the golden table denies to this role and purpose.
    for found in occurrences(data_out):
        if found.value is not None:
            assert found.category in allowed, (found.path, found.category)

    # 2. No row outside the scope, and counts that count exactly the scope.
    students_in, staff_in, guardians_in = await expected_rows(owner, caller, purpose)
    for obj in objects(data_out):
        kind = obj["__typename"]
        if kind == "Student":
            assert obj["id"] in students_in, "a student outside the scope"
        elif kind == "Staff":
            assert obj["id"] in staff_in, "a staff member outside the scope"
        elif kind == "Guardian":
            assert obj["id"] in guardians_in, "a guardian outside the scope"

    if caller.district_id is not None:
        districts = {caller.district_id}
    elif caller.role is Role.SUPPORT:
        districts = world.granted_districts
    else:
        districts = set()
    assert (data_out["student"] is not None) == (str(student) in students_in)
    assert (data_out["class"] is not None) == (world.class_district[klass] in districts)
    assert (data_out["school"] is not None) == (world.school_district[school] in districts)

    assert data_out["students"]["totalCount"] == len(students_in)
    assert {n["id"] for n in data_out["students"]["nodes"]} == students_in
    if data_out["class"] is not None:
        members = {str(s) for s in world.enrolled.get(klass, set())}
        assert {s["id"] for s in data_out["class"]["students"]} == members & students_in
    if data_out["school"] is not None:
        of_school = {s for s in students_in if str(world.school_of_student[uuid.UUID(s)]) == str(school)}
        assert data_out["school"]["students"]["totalCount"] == len(of_school)
        assert {n["id"] for n in data_out["school"]["students"]["nodes"]} == of_school
