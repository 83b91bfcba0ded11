"""The compiled path answers exactly as the resolver path: same body, same audit entries.

Each request is sent twice, once with the endpoint's compiled reads and once
without (the resolver path alone), and the two bodies and the two requests'
audit entries (subject, decision, fields in order, categories, district) must
be equal. Every case also says which path must have served it, so a plan that
silently stopped compiling, or a request that should have been refused to the
compiled path and was not, both fail.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import GraphQLSchema, OperationDefinitionNode, get_named_type, is_leaf_type, parse

from bench.scenarios import CLASS_VIEW as ROSTER  # the benchmark's S1, exactly
from schema.compiled import CompiledReads, Plan
from tests.conftest import ALL_PURPOSES

TEACHER = "teacher1@northwind.example"
OTHER_TEACHER = "teacher2@northwind.example"
STUDENT = "student1@northwind.example"
GUARDIAN = "guardian1@northwind.example"
PRINCIPAL = "principal1@northwind.example"
ADMIN = "admin@northwind.example"
RIVERSIDE_ADMIN = "admin@riverside.example"
SUPPORT = "support@pledgeql.example"
ANALYST = "analyst@pledgeql.example"

WIDE = """query Wide($id: ID!, $n: Int) {
  __typename
  class(id: $id) {
    __typename
    klass: id
    name subject gradeLevel
    pupils: students {
      ...Person
      ... on Student { preferredName username gradeLevel studentNumber stateId email }
      ... { gender birthDate ethnicity englishLearner specialEducation economicallyDisadvantaged }
      learningLevel lastActiveAt
      recent: responses(first: $n) { __typename id answer correct score feedback submittedAt timeSpentSeconds }
    }
  }
}
fragment Person on Student { id firstName lastName }"""

STUDENT_RECORD = """query Record($id: ID!, $assignment: ID) {
  student(id: $id) {
    id firstName lastName
    responses(first: 5, assignmentId: $assignment) { id score submittedAt }
  }
}"""

RECORD_WITH_USAGE = """query Usage($id: ID!) {
  student(id: $id) { id studentNumber lastActiveAt responses { submittedAt timeSpentSeconds } }
}"""

ONLY_RESPONSES = """query Work($id: ID!) {
  class(id: $id) { students { responses(first: 3) { answer submittedAt } } }
}"""

TYPENAME_ONLY = """query Ids($id: ID!) { class(id: $id) { id students { id __typename } } }"""

WITH_TEACHERS = """query Mixed($id: ID!) {
  class(id: $id) { name teachers { firstName } students { id firstName } }
}"""

# A student's clickstream and devices, newest first, with their arguments.
ACTIVITY = """query Activity($id: ID!, $first: Int, $since: DateTime) {
  student(id: $id) {
    id firstName
    activity(first: $first, since: $since) { id kind target occurredAt durationMs }
    deviceSessions(first: 2) { id startedAt browser operatingSystem deviceType ipAddress userAgent referrer }
  }
}"""

# A district and a school by id; a school's district; an assignment's author.
BY_ID = """query ById($district: ID!, $school: ID!, $assignment: ID!) {
  district(id: $district) { id name minimumGroupSize }
  school(id: $school) { id name district { id name } classes { id name } }
  assignment(id: $assignment) { id title createdBy { id role firstName lastName email } }
}"""

GUARDIANS = """query Guardians($id: ID!) {
  class(id: $id) { name students { id firstName guardians { id firstName lastName email phone relationship } } }
}"""

STUDENT_GUARDIANS = """query Contacts($id: ID!) {
  me { guardian { id firstName relationship } }
  student(id: $id) { id guardians { id firstName relationship } }
}"""

# A school's students: a connection of its own, per school.
SCHOOL_STUDENTS = """query SchoolStudents($id: ID!, $first: Int, $after: String) {
  school(id: $id) {
    name
    students(first: $first, after: $after) {
      n: totalCount
      info: pageInfo { end: endCursor more: hasNextPage }
      nodes { id firstName }
    }
  }
}"""

# A search whose students' school pages its own students: each connection its own page
# (a connection's nodes may be asked once in a document: the first only lists them).
SEARCH_NESTED = """query Nested($search: String) {
  students(search: $search, first: 3) {
    totalCount
    nodes { id firstName school { students(first: 2) { totalCount pageInfo { hasNextPage } } } }
  }
}"""

# Fragments on the Node interface, inline and named, beside the type's own.
ON_NODE = """query OnNode($id: ID!) {
  class(id: $id) {
    ... on Node { id }
    students { ...Identified ... on Student { firstName } __typename }
    assignments { ... on Node { __typename id } title }
  }
}
fragment Identified on Node { id __typename }"""

# One relationship asked twice (under two aliases): read field by field.
# One relationship twice under one object (aliases side by side), and one root twice.
TWICE = """query Twice($id: ID!) {
  class(id: $id) { a: students { id } b: students { firstName lastName } }
}"""
TWICE_DEEPER = """query TwiceDeeper($id: ID!, $student: ID!) {
  class(id: $id) {
    a: students { id firstName }
    b: students { gradeLevel school { name } }
  }
  student(id: $student) { recent: responses(first: 2) { score } older: responses(first: 5) { answer correct } }
  again: student(id: $student) { firstName classes { id } }
}"""
# Types inside themselves: a class's students, their classes, and those classes' students
# (the loaders read a key again in its level's batch, so the levels complete breadth first);
# a student's classes listed before the responses, which the cached answer used to outrun.
NESTED = """query Nested($id: ID!) {
  class(id: $id) {
    students { lastName classes { name students { firstName gradeLevel } } responses(first: 2) { answer } }
  }
}"""
INSIDE = """query Inside($id: ID!) {
  class(id: $id) { students { id classes { id students { firstName } } } }
}"""
# A read beside the policy document (a root the compiled reads do not answer): the resolver path.
NOT_COMPILED = """query Beside($id: ID!) { class(id: $id) { id students { firstName } } policy { version } }"""

# A fragment spread in two places, its denied field merged with another in one of them:
# each place's error is located where that place asked it.
SHARED_FRAGMENT = """query Shared($id: ID!, $student: ID!) {
  class(id: $id) { students { responses(first: 1) { ...Work answer } } }
  student(id: $student) { responses(first: 1) { ...Work } }
}
fragment Work on Response { answer score }"""

# One relationship under one key in two fragments (as colocated client fragments
# write it), nested merges, a denied field asked in both, @include on one of them:
# read once, its selection the fragments' in turn, as graphql-core merges them.
MERGED = """query Merged($id: ID!, $r: Boolean = true) {
  class(id: $id) {
    id
    ...Roster
    ...Results
    students @include(if: $r) { lastName responses(first: 2) { id } }
  }
}
fragment Roster on Class { students { id firstName ...Grade responses(first: 2) { answer } } }
fragment Results on Class { students { firstName responses(first: 2) { answer score } school { name } } }
fragment Grade on Student { gradeLevel school { id } }"""


# Sibling relationships and nesting: the teacher app's results screen, and more.
CLASS_SCREEN = """query Screen($id: ID!, $assignment: ID) {
  class(id: $id) {
    id name
    school { id name __typename }
    teachers { id role firstName lastName email }
    assignments { id title dueAt assessment { id title subject items { id prompt choices skill } } }
    students {
      id firstName lastName preferredName
      responses(first: 4, assignmentId: $assignment) {
        id answer correct score submittedAt
        item { id skill }
        assignment { id title class { id name } }
      }
    }
  }
}"""

STUDENT_SCREEN = """query Detail($id: ID!) {
  student(id: $id) {
    id firstName lastName learningLevel lastActiveAt
    school { name }
    classes { id name teachers { id firstName } }
    responses(first: 7) { id answer correct feedback timeSpentSeconds item { id prompt skill } assignment { id title } }
  }
}"""

# Responses before the student's own fields, and fields after a relationship: the audit's field order.
REORDERED = """query Reordered($id: ID!) {
  class(id: $id) {
    students { responses(first: 2) { score answer } gradeLevel id lastName }
    teachers { lastName }
    name
  }
}"""


# Progress and mastery (computed in SQL, rounded as the resolvers round), mastery before
# the other fields and aliased: the audit notes a mastery's levels right after it.
PROGRESS = """query Progress($id: ID!) {
  class(id: $id) {
    name
    students {
      id
      progress { m: mastery { level skill __typename } avg: averageScore percentCorrect responsesSubmitted }
      lastName
      responses(first: 1) { score }
    }
  }
}"""


# The caller: its own row as staff, student or guardian, and its classes.
VIEWER = """query Me {
  __typename
  me {
    id role purpose __typename
    staff { id role firstName lastName email }
    student { id firstName lastName responses(first: 2) { answer score } progress { averageScore } }
    guardian { id firstName lastName email phone relationship }
    classes { id name teachers { id firstName } students { id firstName } assignments { title } }
  }
}"""


# A list at the root (content: no district), and an assignment with its class's students.
CATALOG = """query Catalog($subject: String) {
  assessments(subject: $subject) { id title subject __typename items { id prompt choices skill } }
}"""

ASSIGNMENT = """query Assignment($id: ID!) {
  assignment(id: $id) {
    id title dueAt
    assessment { title items { skill } }
    class { name students { id firstName responses(first: 3) { answer correct } } }
  }
}"""


SEARCH = """query Search($search: String, $first: Int, $after: String, $schoolId: ID, $classId: ID) {
  students(search: $search, first: $first, after: $after, schoolId: $schoolId, classId: $classId) {
    __typename
    totalCount
    pageInfo { __typename hasNextPage endCursor }
    nodes {
      id firstName lastName gradeLevel
      classes { id name }
      progress { averageScore mastery { skill level } }
    }
  }
}"""
PAGE = """query Page($first: Int, $after: String) {
  students(first: $first, after: $after) {
    n: totalCount
    info: pageInfo { end: endCursor more: hasNextPage }
    nodes { id }
  }
}"""


DISTRICT = """query District($settings: Boolean!) {
  versions: policyVersions
  me {
    role
    district {
      __typename id name minimumGroupSize acceptedPolicyVersion
      settings @include(if: $settings) { authorizedPurposes collectUsage directRecordAccess retention { auditDays } }
      schools { id name classes { id name gradeLevel subject } }
    }
  }
  policyVersions
}"""
DISTRICT_PLAIN = DISTRICT.replace("@include(if: $settings) ", "").replace("($settings: Boolean!)", "")
DISTRICT_ONLY = DISTRICT_PLAIN.replace(
    "settings { authorizedPurposes collectUsage directRecordAccess retention { auditDays } }", ""
)


CONDITIONAL = """query Conditional($r: Boolean!, $s: Boolean = false, $id: ID!) {
  class(id: $id) {
    id
    teachers @skip(if: true) { id }
    students {
      id
      firstName @include(if: $r)
      lastName @skip(if: $s)
      responses(first: 2) @include(if: $r) { answer score }
      ... on Student @skip(if: $r) { gradeLevel lastName }
      ...Names @include(if: $s)
    }
  }
}
fragment Names on Student { preferredName firstName @skip(if: $r) }"""


MY_CHILDREN = """query MyChildren {
  me {
    id
    guardian { id firstName lastName }
    classes { id name subject teachers { id firstName lastName } }
  }
  students(first: 10) {
    nodes {
      id firstName lastName gradeLevel
      progress { assignmentsCompleted averageScore percentCorrect mastery { skill level } }
    }
  }
}"""
# Roots side by side, one student read by two of them, a search among them.
ROOTS = """query Roots($id: ID!, $class: ID!, $search: String) {
  kind: __typename
  found: students(first: 4, search: $search) { totalCount nodes { id lastName } }
  one: student(id: $id) { id firstName responses(first: 2) { answer score } }
  versions: policyVersions
  me { role staff { firstName } student { firstName lastName } }
  class(id: $class) { name students { id firstName gradeLevel } }
}"""


REQUESTS = """query Requests($status: DataRequestStatus) {
  dataRequests(status: $status) { __typename id kind studentId requestedBy receivedAt dueAt status fulfilledAt }
  supportGrants { id ticket expiresAt revokedAt userIds grantedBy { id firstName lastName role } }
}"""
ONLY_REQUESTS = """query Requests($status: DataRequestStatus) {
  dataRequests(status: $status) { id kind studentId receivedAt dueAt status }
}"""


class Recording(CompiledReads):
    """The production compiled reads, recording whether each request was served by them."""

    def __init__(self) -> None:
        super().__init__()
        self.served: list[bool] = []

    async def run(self, plan: Plan, ctx: Any, variables: Any) -> Any:
        data = await super().run(plan, ctx, variables)
        self.served.append(data is not None)
        return data


@pytest.fixture(scope="module")
async def ids(owner: Any, users: dict[str, uuid.UUID]) -> dict[str, Any]:
    roster = await owner.fetchval(
        "SELECT ct.class_id FROM class_teachers ct JOIN enrollments e ON e.class_id = ct.class_id "
        "WHERE ct.teacher_id = $1 AND e.student_id = $2 LIMIT 1",
        users[TEACHER],
        users[STUDENT],
    )
    other = await owner.fetchval(
        "SELECT class_id FROM class_teachers WHERE teacher_id = $1 AND class_id <> $2 LIMIT 1",
        users[OTHER_TEACHER],
        roster,
    )
    riverside_class = await owner.fetchval(
        "SELECT c.id FROM classes c JOIN districts d ON d.id = c.district_id WHERE d.name = 'Riverside Unified' LIMIT 1"
    )
    assignment = await owner.fetchval(
        "SELECT assignment_id FROM responses WHERE student_id = $1 AND assignment_id IS NOT NULL LIMIT 1",
        users[STUDENT],
    )
    child = await owner.fetchval("SELECT student_id FROM guardian_links WHERE guardian_id = $1", users[GUARDIAN])
    school = await owner.fetchval("SELECT school_id FROM classes WHERE id = $1", roster)
    district = await owner.fetchval("SELECT district_id FROM classes WHERE id = $1", roster)
    return {
        "district": str(district),
        "school": str(school),
        "roster": str(roster),
        "other": str(other),
        "riverside": str(riverside_class),
        "assignment": str(assignment),
        "student": str(users[STUDENT]),
        "child": str(child),
    }


@pytest.fixture(scope="module")
def recording(app: Any) -> Recording:
    endpoint = app.state.pledgeql.endpoint
    if not isinstance(endpoint.compiled, CompiledReads):
        raise RuntimeError("the app's endpoint has no compiled reads")
    recorder = Recording()
    endpoint.compiled = recorder
    return recorder


@asynccontextmanager
async def resolver_path_only(app: Any) -> AsyncIterator[None]:
    endpoint = app.state.pledgeql.endpoint
    kept = endpoint.compiled
    endpoint.compiled = None
    try:
        yield
    finally:
        endpoint.compiled = kept


async def send(
    client: httpx.AsyncClient, token: str, purpose: str, query: str, variables: dict[str, Any]
) -> tuple[Any, str]:
    request_id = uuid.uuid4().hex
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}", "X-Purpose": purpose, "X-Request-Id": request_id},
    )
    return (response.status_code, response.json()), request_id


async def entries(owner: Any, request_id: str) -> list[tuple[Any, ...]]:
    rows = await owner.fetch(
        "SELECT district_id, subject_student_id, decision, fields, categories, purpose, actor_role "
        "FROM audit_entries WHERE client_request_id = $1 ORDER BY seq",
        request_id,
    )
    return [tuple(r) for r in rows]


async def both_paths(
    app: Any,
    client: httpx.AsyncClient,
    owner: Any,
    recording: Recording,
    token: str,
    purpose: str,
    query: str,
    variables: dict[str, Any],
) -> tuple[Any, list[tuple[Any, ...]], bool]:
    """The compiled path's answer and entries, checked equal to the resolver path's; and whether compiled served."""
    before = len(recording.served)
    compiled, compiled_id = await send(client, token, purpose, query, variables)
    served = len(recording.served) > before and recording.served[-1]
    async with resolver_path_only(app):
        resolved, resolved_id = await send(client, token, purpose, query, variables)
    assert compiled == resolved
    compiled_entries = await entries(owner, compiled_id)
    assert compiled_entries == await entries(owner, resolved_id)
    return compiled, compiled_entries, served


CASES = [
    # (user, purpose, query, variables (names resolved from ids), served by the compiled path)
    (TEACHER, "INSTRUCTION", ROSTER, {"id": "roster"}, True),
    (TEACHER, "INSTRUCTION", WIDE, {"id": "roster", "n": 3}, True),  # DEMOGRAPHIC is not INSTRUCTION's: errors
    (TEACHER, "INSTRUCTION", ONLY_RESPONSES, {"id": "roster"}, True),
    (TEACHER, "INSTRUCTION", TYPENAME_ONLY, {"id": "roster"}, True),
    (TEACHER, "INSTRUCTION", ROSTER, {"id": "other"}, True),  # another teacher's class: no students reach
    (TEACHER, "INSTRUCTION", ROSTER, {"id": "riverside"}, False),  # another district: not found
    (TEACHER, "INSTRUCTION", ROSTER, {"id": "not-an-id"}, False),
    (TEACHER, "INSTRUCTION", WITH_TEACHERS, {"id": "roster"}, True),
    (TEACHER, "INSTRUCTION", NOT_COMPILED, {"id": "roster"}, False),
    (TEACHER, "REPORTING", SHARED_FRAGMENT, {"id": "roster", "student": "student"}, True),
    (TEACHER, "INSTRUCTION", SHARED_FRAGMENT, {"id": "roster", "student": "student"}, True),
    (TEACHER, "INSTRUCTION", INSIDE, {"id": "roster"}, True),
    (ADMIN, "RECORD_ACCESS", INSIDE, {"id": "roster"}, True),
    (TEACHER, "REPORTING", INSIDE, {"id": "roster"}, True),
    (TEACHER, "INSTRUCTION", NESTED, {"id": "roster"}, True),
    (TEACHER, "REPORTING", NESTED, {"id": "roster"}, True),
    (ADMIN, "RECORD_ACCESS", NESTED, {"id": "roster"}, True),
    (TEACHER, "INSTRUCTION", TWICE, {"id": "roster"}, True),
    (TEACHER, "INSTRUCTION", TWICE_DEEPER, {"id": "roster", "student": "student"}, True),
    (TEACHER, "REPORTING", TWICE_DEEPER, {"id": "roster", "student": "student"}, True),  # answer denied
    (ADMIN, "RECORD_ACCESS", TWICE_DEEPER, {"id": "roster", "student": "student"}, True),
    (TEACHER, "INSTRUCTION", MERGED, {"id": "roster"}, True),
    (TEACHER, "INSTRUCTION", MERGED, {"id": "roster", "r": False}, True),
    (TEACHER, "REPORTING", MERGED, {"id": "roster"}, True),  # answer denied in both fragments: both locations
    (ADMIN, "RECORD_ACCESS", MERGED, {"id": "roster"}, True),
    (TEACHER, "INSTRUCTION", SCHOOL_STUDENTS, {"id": "school"}, True),
    (TEACHER, "INSTRUCTION", SEARCH_NESTED, {"search": "a"}, True),
    (TEACHER, "INSTRUCTION", ON_NODE, {"id": "roster"}, True),
    (ADMIN, "REPORTING", ON_NODE, {"id": "roster"}, True),
    (ADMIN, "RECORD_ACCESS", SEARCH_NESTED, {"search": "e"}, True),
    (PRINCIPAL, "REPORTING", SEARCH_NESTED, {}, True),
    (TEACHER, "INSTRUCTION", SCHOOL_STUDENTS, {"id": "school", "first": 2}, True),
    (TEACHER, "INSTRUCTION", SCHOOL_STUDENTS, {"id": "school", "first": 0}, True),
    (TEACHER, "INSTRUCTION", SCHOOL_STUDENTS, {"id": "school", "first": 501}, False),
    (TEACHER, "INSTRUCTION", SCHOOL_STUDENTS, {"id": "school", "after": "not-a-cursor"}, False),
    (PRINCIPAL, "REPORTING", SCHOOL_STUDENTS, {"id": "school", "first": 5}, True),
    (ADMIN, "RECORD_ACCESS", SCHOOL_STUDENTS, {"id": "school"}, True),
    (STUDENT, "STUDENT_LEARNING", SCHOOL_STUDENTS, {"id": "school"}, True),
    (GUARDIAN, "REPORTING", SCHOOL_STUDENTS, {"id": "school"}, True),
    (TEACHER, "INSTRUCTION", GUARDIANS, {"id": "roster"}, True),
    (TEACHER, "REPORTING", GUARDIANS, {"id": "roster"}, True),
    (PRINCIPAL, "REPORTING", GUARDIANS, {"id": "roster"}, True),
    (ADMIN, "RECORD_ACCESS", GUARDIANS, {"id": "roster"}, True),
    (STUDENT, "STUDENT_LEARNING", GUARDIANS, {"id": "roster"}, True),
    (GUARDIAN, "REPORTING", GUARDIANS, {"id": "roster"}, True),
    (GUARDIAN, "REPORTING", STUDENT_GUARDIANS, {"id": "child"}, True),
    (ADMIN, "RECORD_ACCESS", STUDENT_GUARDIANS, {"id": "student"}, True),
    (TEACHER, "STUDENT_LEARNING", ROSTER, {"id": "roster"}, False),
    (PRINCIPAL, "INSTRUCTION", ROSTER, {"id": "roster"}, True),
    (ADMIN, "REPORTING", ROSTER, {"id": "roster"}, True),  # WORK is not REPORTING's: errors
    (ADMIN, "INSTRUCTION", ROSTER, {"id": "roster"}, True),
    (ADMIN, "RECORD_ACCESS", WIDE, {"id": "roster", "n": 2}, True),
    (ADMIN, "RECORD_ACCESS", WIDE, {"id": "roster", "n": 0}, True),
    (ADMIN, "RECORD_ACCESS", WIDE, {"id": "roster", "n": 501}, False),  # out of range: the resolver path's error
    (PRINCIPAL, "REPORTING", RECORD_WITH_USAGE, {"id": "student"}, True),
    (PRINCIPAL, "REPORTING", RECORD_WITH_USAGE, {"id": "child"}, True),
    (STUDENT, "STUDENT_LEARNING", RECORD_WITH_USAGE, {"id": "student"}, True),  # USAGE is not the student's
    (ADMIN, "PRODUCT_ANALYTICS", ROSTER, {"id": "roster"}, False),
    (RIVERSIDE_ADMIN, "REPORTING", ROSTER, {"id": "roster"}, False),
    (STUDENT, "STUDENT_LEARNING", STUDENT_RECORD, {"id": "student"}, True),
    (STUDENT, "STUDENT_LEARNING", STUDENT_RECORD, {"id": "student", "assignment": "assignment"}, True),
    (STUDENT, "STUDENT_LEARNING", ROSTER, {"id": "roster"}, True),
    (GUARDIAN, "REPORTING", STUDENT_RECORD, {"id": "child"}, True),
    (GUARDIAN, "REPORTING", STUDENT_RECORD, {"id": "student"}, None),  # only if student1 is the child
    (SUPPORT, "SUPPORT", STUDENT_RECORD, {"id": "student"}, False),
    (ANALYST, "PRODUCT_ANALYTICS", ROSTER, {"id": "roster"}, False),
    (TEACHER, "INSTRUCTION", CLASS_SCREEN, {"id": "roster"}, True),
    (TEACHER, "INSTRUCTION", CLASS_SCREEN, {"id": "roster", "assignment": "assignment"}, True),
    (TEACHER, "INSTRUCTION", CLASS_SCREEN, {"id": "other"}, True),  # row scope: no student, no co-teacher
    (OTHER_TEACHER, "INSTRUCTION", CLASS_SCREEN, {"id": "roster"}, True),
    (TEACHER, "REPORTING", CLASS_SCREEN, {"id": "roster"}, True),  # answer denied: its errors
    (ADMIN, "REPORTING", CLASS_SCREEN, {"id": "roster"}, True),
    (PRINCIPAL, "INSTRUCTION", CLASS_SCREEN, {"id": "roster"}, True),
    (STUDENT, "STUDENT_LEARNING", CLASS_SCREEN, {"id": "roster"}, True),
    (RIVERSIDE_ADMIN, "REPORTING", CLASS_SCREEN, {"id": "roster"}, False),
    (TEACHER, "INSTRUCTION", STUDENT_SCREEN, {"id": "student"}, True),
    (TEACHER, "REPORTING", STUDENT_SCREEN, {"id": "student"}, True),
    (STUDENT, "STUDENT_LEARNING", STUDENT_SCREEN, {"id": "student"}, True),  # USAGE denied: its errors
    (GUARDIAN, "REPORTING", STUDENT_SCREEN, {"id": "child"}, True),
    (OTHER_TEACHER, "INSTRUCTION", STUDENT_SCREEN, {"id": "student"}, False),  # not its student: not found
    (ADMIN, "RECORD_ACCESS", STUDENT_SCREEN, {"id": "student"}, True),
    (TEACHER, "INSTRUCTION", REORDERED, {"id": "roster"}, True),
    (TEACHER, "INSTRUCTION", PROGRESS, {"id": "roster"}, True),
    (TEACHER, "REPORTING", PROGRESS, {"id": "roster"}, True),
    (TEACHER, "COMMUNICATION", PROGRESS, {"id": "roster"}, True),
    (TEACHER, "PERSONALIZATION", PROGRESS, {"id": "roster"}, True),
    (ADMIN, "RECORD_ACCESS", PROGRESS, {"id": "roster"}, True),
    (STUDENT, "STUDENT_LEARNING", PROGRESS, {"id": "roster"}, True),
    (STUDENT, "PERSONALIZATION", PROGRESS, {"id": "roster"}, True),  # PERFORMANCE denied: progress null
    (STUDENT, "PERSONALIZATION", STUDENT_SCREEN, {"id": "student"}, True),
    (TEACHER, "INSTRUCTION", CATALOG, {}, True),
    (TEACHER, "INSTRUCTION", CATALOG, {"subject": "Math"}, True),
    (STUDENT, "STUDENT_LEARNING", CATALOG, {"subject": "Nope"}, True),
    (TEACHER, "INSTRUCTION", ASSIGNMENT, {"id": "assignment"}, True),
    (TEACHER, "REPORTING", ASSIGNMENT, {"id": "assignment"}, True),  # answer denied: its errors
    (STUDENT, "STUDENT_LEARNING", ASSIGNMENT, {"id": "assignment"}, True),
    (OTHER_TEACHER, "INSTRUCTION", ASSIGNMENT, {"id": "assignment"}, True),  # row scope: not its students
    (TEACHER, "INSTRUCTION", ASSIGNMENT, {"id": "roster"}, False),  # not an assignment: not found
    (RIVERSIDE_ADMIN, "REPORTING", ASSIGNMENT, {"id": "assignment"}, False),
    (TEACHER, "INSTRUCTION", VIEWER, {}, True),
    (TEACHER, "PERSONALIZATION", VIEWER, {}, True),  # STAFF only: the students' names denied
    (OTHER_TEACHER, "INSTRUCTION", VIEWER, {}, True),
    (PRINCIPAL, "REPORTING", VIEWER, {}, True),
    (ADMIN, "RECORD_ACCESS", VIEWER, {}, True),
    (STUDENT, "STUDENT_LEARNING", VIEWER, {}, True),
    (STUDENT, "PERSONALIZATION", VIEWER, {}, True),
    (GUARDIAN, "REPORTING", VIEWER, {}, True),  # CONTACT is not REPORTING's: the guardian's own fields denied
    (GUARDIAN, "PERSONALIZATION", VIEWER, {}, True),
    (SUPPORT, "SUPPORT", VIEWER, {}, False),  # no district of its own: the resolver path
    (ADMIN, "REPORTING", REORDERED, {"id": "roster"}, True),
    # Query.students: a keyset page, its total and where it ends; a search notes the names it matched.
    (TEACHER, "INSTRUCTION", SEARCH, {}, True),
    (TEACHER, "INSTRUCTION", SEARCH, {"search": "a", "first": 2}, True),  # more matches than the page
    (TEACHER, "INSTRUCTION", SEARCH, {"search": "", "first": 0}, True),
    (TEACHER, "INSTRUCTION", SEARCH, {"search": "no student is called this"}, True),
    (TEACHER, "INSTRUCTION", SEARCH, {"search": "%_\\"}, True),  # LIKE's wildcards are matched as text
    (TEACHER, "INSTRUCTION", SEARCH, {"classId": "roster", "first": 3}, True),
    (TEACHER, "INSTRUCTION", SEARCH, {"schoolId": "school", "search": "e"}, True),
    (TEACHER, "INSTRUCTION", SEARCH, {"classId": "riverside"}, True),  # another district's class: no one
    (TEACHER, "PERSONALIZATION", SEARCH, {}, True),  # names denied: their errors
    (TEACHER, "PERSONALIZATION", SEARCH, {"search": "a"}, False),  # a search needs DIRECTORY: FORBIDDEN
    (TEACHER, "INSTRUCTION", SEARCH, {"after": "not-a-cursor"}, False),
    (TEACHER, "INSTRUCTION", SEARCH, {"first": 501}, False),
    (TEACHER, "INSTRUCTION", SEARCH, {"classId": "not-an-id"}, False),
    (TEACHER, "INSTRUCTION", SEARCH, {"search": "x" * 101}, False),
    (OTHER_TEACHER, "INSTRUCTION", SEARCH, {"search": "a"}, True),
    (PRINCIPAL, "REPORTING", SEARCH, {"first": 5}, True),
    (ADMIN, "RECORD_ACCESS", SEARCH, {"search": "a", "first": 3}, True),
    (STUDENT, "STUDENT_LEARNING", SEARCH, {}, True),
    (GUARDIAN, "REPORTING", SEARCH, {}, True),
    (RIVERSIDE_ADMIN, "REPORTING", SEARCH, {"search": "a"}, True),
    (SUPPORT, "SUPPORT", SEARCH, {}, False),
    # Several roots that read: each root's entries after the previous one's.
    (GUARDIAN, "REPORTING", MY_CHILDREN, {}, True),
    (GUARDIAN, "PERSONALIZATION", MY_CHILDREN, {}, True),
    (TEACHER, "INSTRUCTION", MY_CHILDREN, {}, True),
    (TEACHER, "REPORTING", MY_CHILDREN, {}, True),
    (STUDENT, "STUDENT_LEARNING", MY_CHILDREN, {}, True),
    (TEACHER, "INSTRUCTION", ROOTS, {"id": "student", "class": "roster"}, True),
    (TEACHER, "INSTRUCTION", ROOTS, {"id": "student", "class": "roster", "search": "a"}, True),
    (TEACHER, "REPORTING", ROOTS, {"id": "student", "class": "roster", "search": ""}, True),  # answer denied
    (TEACHER, "PERSONALIZATION", ROOTS, {"id": "student", "class": "roster", "search": "a"}, False),
    (ADMIN, "RECORD_ACCESS", ROOTS, {"id": "student", "class": "roster", "search": "e"}, True),
    (TEACHER, "INSTRUCTION", ROOTS, {"id": "student", "class": "riverside"}, False),  # one root not found
    (STUDENT, "STUDENT_LEARNING", ROOTS, {"id": "student", "class": "roster"}, True),
    # A district's data requests and support grants, each root's own entry noted once its rows are read.
    (ADMIN, "RECORD_ACCESS", REQUESTS, {"status": "OPEN"}, True),
    (ADMIN, "RECORD_ACCESS", REQUESTS, {}, True),
    (ADMIN, "RECORD_ACCESS", REQUESTS, {"status": "FULFILLED"}, True),
    (ADMIN, "LEGAL_COMPLIANCE", REQUESTS, {}, None),  # as the rule has the operations
    (ADMIN, "REPORTING", REQUESTS, {}, False),  # not REPORTING's operations: FORBIDDEN
    (RIVERSIDE_ADMIN, "RECORD_ACCESS", REQUESTS, {}, True),
    (PRINCIPAL, "RECORD_ACCESS", ONLY_REQUESTS, {}, None),
    (PRINCIPAL, "RECORD_ACCESS", REQUESTS, {}, False),  # supportGrants is the administrators'
    (TEACHER, "INSTRUCTION", ONLY_REQUESTS, {}, False),
    (SUPPORT, "SUPPORT", ONLY_REQUESTS, {}, False),
    (ADMIN, "RECORD_ACCESS", ONLY_REQUESTS.replace("dataRequests", "me { role } dataRequests"), {}, True),
    # @include and @skip, with variables (a plan per set of their values) and literals.
    (TEACHER, "INSTRUCTION", CONDITIONAL, {"id": "roster", "r": True}, True),
    (TEACHER, "INSTRUCTION", CONDITIONAL, {"id": "roster", "r": False}, True),
    (TEACHER, "INSTRUCTION", CONDITIONAL, {"id": "roster", "r": True, "s": True}, True),
    (TEACHER, "INSTRUCTION", CONDITIONAL, {"id": "roster", "r": False, "s": True}, True),
    (TEACHER, "REPORTING", CONDITIONAL, {"id": "roster", "r": True, "s": True}, True),  # answer denied
    (TEACHER, "INSTRUCTION", CONDITIONAL, {"id": "roster", "r": True, "s": None}, False),  # null: graphql-core's
    # The caller's district, its schools and their classes; the policy's versions answered beside them.
    (ADMIN, "REPORTING", DISTRICT_PLAIN, {}, True),
    (ADMIN, "RECORD_ACCESS", DISTRICT_PLAIN, {}, True),
    (RIVERSIDE_ADMIN, "REPORTING", DISTRICT_PLAIN, {}, True),
    (PRINCIPAL, "REPORTING", DISTRICT_PLAIN, {}, False),  # settings are the administrators': FORBIDDEN
    (PRINCIPAL, "REPORTING", DISTRICT, {"settings": False}, True),  # the settings left out by their directive
    (PRINCIPAL, "REPORTING", DISTRICT, {"settings": True}, False),
    (ADMIN, "REPORTING", DISTRICT, {"settings": True}, True),
    (TEACHER, "INSTRUCTION", DISTRICT_PLAIN.replace("settings {", "s: settings {"), {}, False),
    (SUPPORT, "SUPPORT", DISTRICT_PLAIN, {}, False),  # no district of its own: the resolver path
    (PRINCIPAL, "REPORTING", DISTRICT_ONLY, {}, True),
    (TEACHER, "INSTRUCTION", DISTRICT_ONLY, {}, True),
    (GUARDIAN, "REPORTING", DISTRICT_ONLY, {}, True),
    (ANALYST, "PRODUCT_ANALYTICS", DISTRICT_ONLY, {}, False),
    # A student's activity (USAGE) and devices (DEVICE), each purpose's decision, each argument.
    (TEACHER, "INSTRUCTION", ACTIVITY, {"id": "student"}, True),
    (TEACHER, "INSTRUCTION", ACTIVITY, {"id": "student", "first": 3}, True),
    (TEACHER, "INSTRUCTION", ACTIVITY, {"id": "student", "since": "2020-01-01T00:00:00+00:00"}, True),
    (TEACHER, "INSTRUCTION", ACTIVITY, {"id": "student", "first": 0}, True),
    (TEACHER, "INSTRUCTION", ACTIVITY, {"id": "student", "first": 501}, False),  # out of range: its error
    (TEACHER, "REPORTING", ACTIVITY, {"id": "student"}, True),
    (PRINCIPAL, "REPORTING", ACTIVITY, {"id": "student"}, True),
    (ADMIN, "RECORD_ACCESS", ACTIVITY, {"id": "student"}, True),
    (STUDENT, "STUDENT_LEARNING", ACTIVITY, {"id": "student"}, True),
    (GUARDIAN, "REPORTING", ACTIVITY, {"id": "child"}, True),
    (OTHER_TEACHER, "INSTRUCTION", ACTIVITY, {"id": "student"}, False),  # out of scope: not found
    # Roots by id, a school's district, an assignment's author (STAFF).
    (TEACHER, "INSTRUCTION", BY_ID, {"district": "district", "school": "school", "assignment": "assignment"}, True),
    (ADMIN, "REPORTING", BY_ID, {"district": "district", "school": "school", "assignment": "assignment"}, True),
    (
        STUDENT,
        "STUDENT_LEARNING",
        BY_ID,
        {"district": "district", "school": "school", "assignment": "assignment"},
        True,
    ),
    (
        RIVERSIDE_ADMIN,
        "REPORTING",
        BY_ID,
        {"district": "district", "school": "school", "assignment": "assignment"},
        False,
    ),
    (TEACHER, "INSTRUCTION", BY_ID, {"district": "nope", "school": "school", "assignment": "assignment"}, False),
]


@pytest.mark.parametrize(("user", "purpose", "query", "variables", "compiled"), CASES)
async def test_compiled_equals_resolver_path(
    app: Any,
    client: httpx.AsyncClient,
    owner: Any,
    recording: Recording,
    token_for: Any,
    ids: dict[str, Any],
    user: str,
    purpose: str,
    query: str,
    variables: dict[str, Any],
    compiled: bool | None,
) -> None:
    values = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in variables.items()}
    (status, body), written, served = await both_paths(
        app, client, owner, recording, token_for(user, ALL_PURPOSES), purpose, query, values
    )
    if compiled is None and query in (REQUESTS, ONLY_REQUESTS):
        compiled = status == 200 and "errors" not in body  # served compiled exactly when the rule allows it
    if compiled is None:
        compiled = ids["child"] == ids["student"]
    assert served is compiled
    if served:
        # Denied fields are compiled too: their FORBIDDEN errors, and no other error.
        assert status == 200 and all(e["extensions"]["code"] == "FORBIDDEN" for e in body.get("errors", []))
        assert body["data"] is not None
        # What the compiled path read is audited: a teacher's roster names its students.
        if "firstName" in query and "students" in str(body["data"]):
            subjects = {str(e[1]) for e in written}
            assert {s["id"] for s in _students(body["data"]) if "id" in s} <= subjects


def _students(data: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("students", "pupils", "student") and isinstance(value, (list, dict)):
                found.extend(value if isinstance(value, list) else [value])
            else:
                found.extend(_students(value))
    elif isinstance(data, list):
        for item in data:
            found.extend(_students(item))
    return found


async def test_roster_is_one_statement_and_audited_per_student(
    app: Any, client: httpx.AsyncClient, owner: Any, recording: Recording, token_for: Any, ids: dict[str, Any]
) -> None:
    (status, body), written, served = await both_paths(
        app, client, owner, recording, token_for(TEACHER), "INSTRUCTION", ROSTER, {"id": ids["roster"]}
    )
    assert served and status == 200
    students = body["data"]["class"]["students"]
    assert students, "the roster class has students"
    assert [s["id"] for s in students] == sorted(s["id"] for s in students)
    by_subject = {str(e[1]): e for e in written}
    assert set(by_subject) == {s["id"] for s in students}
    for student in students:
        _, _, decision, fields, categories, purpose, role = by_subject[student["id"]]
        assert decision == "ALLOW" and purpose == "INSTRUCTION" and role == "TEACHER"
        expected = ["Student.firstName", "Student.lastName", "Student.responses"]
        if student["responses"]:
            expected += ["Response.answer", "Response.correct", "Response.score"]
        assert list(fields) == expected
        assert set(categories) == (
            {"DIRECTORY", "PERFORMANCE", "WORK"} if student["responses"] else {"DIRECTORY", "PERFORMANCE"}
        )
        times = [r for r in student["responses"]]
        assert len(times) <= 20


async def test_responses_newest_first_with_timestamps_as_the_resolver_path_formats_them(
    app: Any,
    client: httpx.AsyncClient,
    owner: Any,
    recording: Recording,
    token_for: Any,
    ids: dict[str, Any],
    users: dict[str, uuid.UUID],
) -> None:
    # A response at a whole second and one with microseconds: both forms of Python's isoformat.
    student = users[STUDENT]
    row = await owner.fetchrow("SELECT district_id, item_id FROM responses WHERE student_id = $1 LIMIT 1", student)
    for stamp in (
        dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        dt.datetime(2031, 1, 2, 3, 4, 5, 500000, tzinfo=dt.UTC),
    ):
        await owner.execute(
            "INSERT INTO responses (district_id, id, student_id, item_id, answer, correct, score, submitted_at) "
            "VALUES ($1, $2, $3, $4, 'B', true, 0.75, $5)",
            row["district_id"],
            uuid.uuid4(),
            student,
            row["item_id"],
            stamp,
        )
    (status, body), _, served = await both_paths(
        app, client, owner, recording, token_for(STUDENT), "STUDENT_LEARNING", STUDENT_RECORD, {"id": str(student)}
    )
    assert served and status == 200
    stamps = [r["submittedAt"] for r in body["data"]["student"]["responses"]]
    assert stamps[:2] == ["2031-01-02T03:04:05.500000+00:00", "2031-01-02T03:04:05+00:00"]
    assert stamps == sorted(stamps, reverse=True)


async def test_a_denied_field_is_null_with_one_error_per_occurrence_and_deny_entries_on_the_compiled_path(
    app: Any, client: httpx.AsyncClient, owner: Any, recording: Recording, token_for: Any, ids: dict[str, Any]
) -> None:
    (status, body), written, served = await both_paths(
        app, client, owner, recording, token_for(ADMIN, ALL_PURPOSES), "REPORTING", CLASS_SCREEN, {"id": ids["roster"]}
    )
    assert served and status == 200
    students = body["data"]["class"]["students"]
    responses = [(i, j, r) for i, s in enumerate(students) for j, r in enumerate(s["responses"])]
    assert responses, "the roster's students have responses"
    assert all(r["answer"] is None and r["score"] is not None for _, _, r in responses)
    answers = [e for e in body["errors"] if e["path"][-1] == "answer"]
    assert [e["path"] for e in answers] == [["class", "students", i, "responses", j, "answer"] for i, j, _ in responses]
    assert {e["extensions"]["category"] for e in answers} == {"WORK"}
    assert all(e["extensions"]["code"] == "FORBIDDEN" and e["locations"] for e in body["errors"])
    denied = [e for e in written if e[2] == "DENY" and e[1] is not None]
    assert denied and all(list(e[3]) == ["Response.answer"] for e in denied)


async def test_rows_out_of_scope_are_left_out_of_the_compiled_lists_and_not_audited(
    app: Any, client: httpx.AsyncClient, owner: Any, recording: Recording, token_for: Any, ids: dict[str, Any]
) -> None:
    # Another teacher's class: the class is the district's; of its students, only those the caller teaches.
    (status, body), written, served = await both_paths(
        app, client, owner, recording, token_for(TEACHER), "INSTRUCTION", CLASS_SCREEN, {"id": ids["other"]}
    )
    assert served and status == 200 and "errors" not in body
    enrolled = {
        str(r["student_id"])
        for r in await owner.fetch("SELECT student_id FROM enrollments WHERE class_id = $1", uuid.UUID(ids["other"]))
    }
    shown = {s["id"] for s in body["data"]["class"]["students"]}
    assert shown < enrolled, "some of the class's students are not the caller's"
    assert {str(e[1]) for e in written if e[1] is not None} == shown


async def test_a_denied_progress_is_null_with_its_error_and_nothing_below_it_read(
    app: Any, client: httpx.AsyncClient, owner: Any, recording: Recording, token_for: Any, ids: dict[str, Any]
) -> None:
    (status, body), written, served = await both_paths(
        app,
        client,
        owner,
        recording,
        token_for(STUDENT, ALL_PURPOSES),
        "PERSONALIZATION",
        PROGRESS,
        {"id": ids["roster"]},
    )
    assert served and status == 200
    (me,) = body["data"]["class"]["students"]
    assert me["progress"] is None and me["responses"] is None
    assert sorted(tuple(e["path"]) for e in body["errors"]) == [
        ("class", "students", 0, "progress"),
        ("class", "students", 0, "responses"),
    ]
    fields = [f for e in written if e[2] == "DENY" for f in e[3]]
    assert fields == ["Student.progress", "Student.responses"]


async def walked_to_the_end(
    page: Callable[[int, str | None], Awaitable[dict[str, Any]]],
) -> tuple[list[str], dict[str, Any]]:
    """A students connection (``n``, ``info { end more }``, ``nodes { id }``) read whole,
    then walked three at a time from the start along its cursors: each page counts
    them all and says whether more follow, and the walk meets every student once,
    in order. The students' ids, and the last page."""
    whole = await page(500, None)
    everyone = [s["id"] for s in whole["nodes"]]
    assert len(everyone) == whole["n"] > 4
    assert everyone == sorted(everyone)
    walked: list[str] = []
    after = None
    part = whole
    for _ in range(len(everyone)):
        part = await page(3, after)
        walked += [s["id"] for s in part["nodes"]]
        assert part["n"] == len(everyone)
        assert part["info"]["more"] is (len(walked) < len(everyone))
        if not part["info"]["more"]:
            break
        after = part["info"]["end"]
    assert walked == everyone
    return everyone, part


@pytest.mark.parametrize(("user", "purpose"), [(TEACHER, "INSTRUCTION"), (ADMIN, "RECORD_ACCESS")])
async def test_students_pages_follow_their_cursors_to_the_end_on_the_compiled_path(
    app: Any, client: httpx.AsyncClient, owner: Any, recording: Recording, token_for: Any, user: str, purpose: str
) -> None:
    token = token_for(user, ALL_PURPOSES)

    async def page(first: int, after: str | None) -> dict[str, Any]:
        variables = {"first": first, "after": after}
        (status, body), _, served = await both_paths(app, client, owner, recording, token, purpose, PAGE, variables)
        assert served and status == 200
        students: dict[str, Any] = body["data"]["students"]
        return students

    everyone, last = await walked_to_the_end(page)
    # After the last student: an empty page, with no cursor and nothing more.
    past = {"first": 3, "after": last["info"]["end"]}
    (_, body), _, served = await both_paths(app, client, owner, recording, token, purpose, PAGE, past)
    assert served
    assert body["data"]["students"] == {"n": len(everyone), "info": {"end": None, "more": False}, "nodes": []}


AUDIT_LOG = """query Log($filter: AuditFilter, $first: Int, $after: String) {
  auditLog(filter: $filter, first: $first, after: $after) {
    __typename
    nodes {
      id at requestId clientRequestId traceId actorId actorRole purpose justification
      operationName subjectStudentId fields categories decision breakGlass
    }
    pageInfo { hasNextPage endCursor }
  }
}"""


@pytest.mark.parametrize(
    ("user", "purpose", "given", "first", "compiled"),
    [
        (ADMIN, "RECORD_ACCESS", {}, None, True),
        (ADMIN, "RECORD_ACCESS", {}, 7, True),
        (ADMIN, "RECORD_ACCESS", {}, 0, True),
        (ADMIN, "RECORD_ACCESS", {"subjectStudentId": "student"}, 10, True),
        (ADMIN, "RECORD_ACCESS", {"actorId": "teacher"}, 10, True),
        (ADMIN, "RECORD_ACCESS", {"purpose": "INSTRUCTION", "decision": "DENY"}, 10, True),
        (ADMIN, "RECORD_ACCESS", {"decision": "ALLOW", "from": "2020-01-01T00:00:00"}, 10, True),
        (ADMIN, "RECORD_ACCESS", {"subjectStudentId": "not-an-id"}, 10, False),
        (ADMIN, "RECORD_ACCESS", {}, 501, False),
        (RIVERSIDE_ADMIN, "RECORD_ACCESS", {}, 5, True),
        (TEACHER, "INSTRUCTION", {}, 5, False),  # not an operation of the teacher's rule: FORBIDDEN
        (SUPPORT, "SUPPORT", {}, 5, False),
    ],
)
async def test_the_audit_log_pages_alike_on_the_compiled_path(
    app: Any,
    client: httpx.AsyncClient,
    owner: Any,
    recording: Recording,
    token_for: Any,
    users: dict[str, uuid.UUID],
    ids: dict[str, Any],
    user: str,
    purpose: str,
    given: dict[str, Any],
    first: int | None,
    compiled: bool,
) -> None:
    # Each read of the log writes to it: both paths read the log as it was before either ran.
    until = dt.datetime.now(dt.UTC).isoformat()
    values = {"student": ids["student"], "teacher": str(users[TEACHER])}
    log_filter = {"to": until, **{k: values.get(v, v) for k, v in given.items()}}
    token = token_for(user, ALL_PURPOSES)
    variables: dict[str, Any] = {"filter": log_filter, "first": first}
    (status, body), written, served = await both_paths(
        app, client, owner, recording, token, purpose, AUDIT_LOG, variables
    )
    assert served is compiled
    if not compiled:
        return
    assert status == 200 and "errors" not in body
    page = body["data"]["auditLog"]
    assert len(page["nodes"]) == (100 if first is None else first) or not page["pageInfo"]["hasNextPage"]
    # Its own entry: the read of the log, about the student it was filtered to.
    assert [(e[2], e[3]) for e in written] == [("ALLOW", ["Query.auditLog"])]
    subject = log_filter.get("subjectStudentId")
    assert written[0][1] == (None if subject is None else uuid.UUID(subject))
    if page["pageInfo"]["hasNextPage"] and first:
        # The next page follows the cursor, alike on both paths.
        variables["after"] = page["pageInfo"]["endCursor"]
        (_, following), _, served = await both_paths(
            app, client, owner, recording, token, purpose, AUDIT_LOG, variables
        )
        assert served
        newest = following["data"]["auditLog"]["nodes"]
        assert not newest or newest[0]["at"] <= page["nodes"][-1]["at"]
        assert not {n["id"] for n in newest} & {n["id"] for n in page["nodes"]}


WHO_SAW = """query WhoSaw($id: ID!, $first: Int, $after: String) {
  student(id: $id) {
    id
    firstName
    accessLog(first: $first, after: $after) {
      nodes { id at actorRole purpose justification fields categories decision breakGlass subjectStudentId }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""


@pytest.mark.parametrize(
    ("user", "purpose", "first", "compiled"),
    [
        (ADMIN, "RECORD_ACCESS", None, True),
        (ADMIN, "RECORD_ACCESS", 3, True),
        (PRINCIPAL, "REPORTING", 3, False),  # accessLog is no operation of REPORTING: FORBIDDEN
        (ADMIN, "RECORD_ACCESS", 501, False),
    ],
)
async def test_a_student_s_access_log_reads_alike_on_the_compiled_path(
    app: Any,
    client: httpx.AsyncClient,
    owner: Any,
    recording: Recording,
    token_for: Any,
    ids: dict[str, Any],
    user: str,
    purpose: str,
    first: int | None,
    compiled: bool,
) -> None:
    token = token_for(user, ALL_PURPOSES)
    variables = {"id": ids["student"], "first": first}
    before = len(recording.served)
    (status, body), compiled_id = await send(client, token, purpose, WHO_SAW, variables)
    assert (len(recording.served) > before and recording.served[-1]) is compiled
    async with resolver_path_only(app):
        (status_resolved, resolved), resolved_id = await send(client, token, purpose, WHO_SAW, variables)
    # Each read is an entry of the log it reads: the same entry on both paths.
    mine, theirs = await entries(owner, compiled_id), await entries(owner, resolved_id)
    assert mine == theirs and mine
    assert status == status_resolved
    if not compiled:
        assert body == resolved
        return
    assert "errors" not in body and "errors" not in resolved
    older = body["data"]["student"]["accessLog"]["nodes"]
    newer = resolved["data"]["student"]["accessLog"]["nodes"]
    # The second read shows the first read's entry first, then the same log.
    size = 50 if first is None else first
    assert newer[1:] == older[: size - 1]
    assert newer[0]["fields"] == list(mine[0][3]) and "Student.accessLog" in newer[0]["fields"]
    if body["data"]["student"]["accessLog"]["pageInfo"]["hasNextPage"]:
        # The next page from the compiled cursor: the entries after the first page's last.
        variables["after"] = body["data"]["student"]["accessLog"]["pageInfo"]["endCursor"]
        (_, following), _ = await send(client, token, purpose, WHO_SAW, variables)
        after = following["data"]["student"]["accessLog"]["nodes"]
        assert not {n["id"] for n in after} & {n["id"] for n in older}
        assert not after or after[0]["at"] <= older[-1]["at"]


async def test_requests_and_grants_with_rows_read_alike_on_the_compiled_path(
    app: Any,
    client: httpx.AsyncClient,
    owner: Any,
    recording: Recording,
    token_for: Any,
    users: dict[str, uuid.UUID],
    ids: dict[str, Any],
) -> None:
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", users[ADMIN])
    now = dt.datetime.now(dt.UTC)
    made: list[tuple[str, uuid.UUID]] = []
    for kind, status, due in (("ACCESS", "OPEN", 3), ("CORRECTION", "OPEN", 1), ("DELETION", "FULFILLED", 2)):
        made.append(
            (
                "data_requests",
                await owner.fetchval(
                    "INSERT INTO data_requests (district_id, id, kind, student_id, requested_by, due_at, status) "
                    "VALUES ($1, $6, $2, $3, 'a parent, by letter', $4, $5) RETURNING id",
                    district,
                    kind,
                    uuid.UUID(ids["student"]),
                    now + dt.timedelta(days=due),
                    status,
                    uuid.uuid4(),
                ),
            )
        )
    for ticket, granter, users_of in (("T-1", users[ADMIN], []), ("T-2", None, [users[TEACHER]])):
        made.append(
            (
                "support_grants",
                await owner.fetchval(
                    "INSERT INTO support_grants (district_id, id, ticket, granted_by, expires_at, user_ids) "
                    "VALUES ($1, $6, $2, $3, $4, $5) RETURNING id",
                    district,
                    ticket,
                    granter,
                    now + dt.timedelta(hours=4),
                    users_of,
                    uuid.uuid4(),
                ),
            )
        )
    try:
        token = token_for(ADMIN, ALL_PURPOSES)
        for status in ("OPEN", None):
            variables = {"status": status}
            (code, body), written, served = await both_paths(
                app, client, owner, recording, token, "RECORD_ACCESS", REQUESTS, variables
            )
            assert served and code == 200 and "errors" not in body
            requests = body["data"]["dataRequests"]
            assert len(requests) >= (2 if status else 3)
            assert [r["dueAt"] for r in requests] == sorted(r["dueAt"] for r in requests)
            assert {g["ticket"] for g in body["data"]["supportGrants"]} >= {"T-1", "T-2"}
            # Each root's own entry, about no one, with the granter's name (staff data, about
            # no one either); the requester of each request is about its student.
            about = {(e[1], tuple(e[3])) for e in written}
            assert (None, ("Query.dataRequests", "Query.supportGrants", "Staff.firstName", "Staff.lastName")) in about
            assert (uuid.UUID(ids["student"]), ("DataRequest.requestedBy",)) in about
    finally:
        for table, made_id in made:
            await owner.execute(f"DELETE FROM {table} WHERE id = $1", made_id)


def test_every_field_is_declared_once_where_the_compiled_path_reads_it() -> None:
    """Every field of the types the compiled path reads is declared on the field
    (``schema.declare``): a row type's plain fields as columns, the others'
    (progress, settings, requests, grants, pages, audit entries, the caller) as
    the SQL they read, relationships as relationships; the compiled plan has no
    list of its own. Left out: the caller's allowedPurposes, which the compiled
    path does not read (a document with it is served by the resolver path)."""
    from graphql import GraphQLObjectType, get_named_type

    from permissions.policy import load_policy_set
    from schema.build import build_schema, graphql_schema
    from schema.compiled import declared_sql
    from schema.declare import declared_relation

    schema = graphql_schema(build_schema(load_policy_set()))
    rows = (
        "Class",
        "School",
        "District",
        "Student",
        "Staff",
        "Guardian",
        "Response",
        "Assignment",
        "Assessment",
        "Item",
    )
    others = (
        "Viewer",
        "StudentProgress",
        "SkillMastery",
        "DistrictSettings",
        "RetentionSettings",
        "DataRequest",
        "SupportGrant",
        "StudentConnection",
        "PageInfo",
        "AuditEntry",
    )
    undeclared = set()
    for type_name in rows + others:
        graphql_type = schema.type_map[type_name]
        assert isinstance(graphql_type, GraphQLObjectType)
        for name, graphql_field in graphql_type.fields.items():
            definition = graphql_field.extensions["strawberry-definition"]
            if isinstance(get_named_type(graphql_field.type), GraphQLObjectType):
                if declared_relation(definition) is None:
                    undeclared.add(f"{type_name}.{name}")
                continue
            if declared_sql(graphql_field) is None:
                undeclared.add(f"{type_name}.{name}")
    assert undeclared == {"Viewer.allowedPurposes"}
    assert declared_sql(schema.type_map["Student"].fields["lastActiveAt"]) is not None  # type: ignore[union-attr]
    assert declared_sql(schema.type_map["AuditEntry"].fields["at"]) is not None  # type: ignore[union-attr]


async def test_a_student_s_activity_and_devices_read_alike_on_the_compiled_path(
    client: httpx.AsyncClient, app: Any, owner: Any, recording: Recording, token_for: Any, ids: dict[str, Any]
) -> None:
    token = token_for(ADMIN, ALL_PURPOSES)  # a district administrator's record access reads both
    (status, body), written, served = await both_paths(
        app, client, owner, recording, token, "RECORD_ACCESS", ACTIVITY, {"id": ids["student"]}
    )
    assert served and status == 200 and "errors" not in body
    student = body["data"]["student"]
    assert student["activity"] and student["deviceSessions"]
    times = [a["occurredAt"] for a in student["activity"]]
    assert times == sorted(times, reverse=True)  # newest first
    # The fields read about the student are its entry's: USAGE and DEVICE among them.
    (entry,) = [e for e in written if str(e[1]) == ids["student"]]
    assert {"Student.activity", "ActivityEvent.kind", "DeviceSession.ipAddress"} <= set(entry[3])
    # From a time on: only what happened since, the same on both paths.
    since = times[len(times) // 2]
    (status, later), _, served = await both_paths(
        app, client, owner, recording, token, "RECORD_ACCESS", ACTIVITY, {"id": ids["student"], "since": since}
    )
    assert served and status == 200
    assert [a["occurredAt"] for a in later["data"]["student"]["activity"]] == [t for t in times if t >= since]


async def test_a_school_s_students_page_to_the_end_on_the_compiled_path(
    app: Any, client: httpx.AsyncClient, owner: Any, recording: Recording, token_for: Any, ids: dict[str, Any]
) -> None:
    token = token_for(PRINCIPAL, ALL_PURPOSES)

    async def page(first: int, after: str | None) -> dict[str, Any]:
        variables = {"id": ids["school"], "first": first, "after": after}
        (status, body), _, served = await both_paths(
            app, client, owner, recording, token, "REPORTING", SCHOOL_STUDENTS, variables
        )
        assert served and status == 200 and "errors" not in body
        students: dict[str, Any] = body["data"]["school"]["students"]
        return students

    await walked_to_the_end(page)


async def test_a_statement_is_built_once_for_the_same_inputs_and_again_when_any_of_them_changes(
    app: Any,
    client: httpx.AsyncClient,
    owner: Any,
    recording: Recording,
    token_for: Any,
    ids: dict[str, Any],
    users: dict[str, uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CompiledReads keeps the statements it built: the same request again runs
    the kept one; another variable value, purpose or principal builds its own,
    and a teacher taken off a class reads it as a class that is not theirs at once."""
    import schema.compiled as compiled

    built: list[Any] = []
    build = compiled.statement

    def counted(*args: Any, **kwargs: Any) -> Any:
        built.append(args[1])
        return build(*args, **kwargs)

    monkeypatch.setattr(compiled, "statement", counted)
    recording.forget_statements()  # earlier tests' requests kept theirs
    token = token_for(TEACHER, ALL_PURPOSES)

    async def roster(purpose: str = "INSTRUCTION", klass: str = ids["roster"]) -> list[str]:
        (status, body), _ = await send(client, token, purpose, ROSTER, {"id": klass})
        assert status == 200 and body["data"]["class"] is not None, body
        return [s["id"] for s in body["data"]["class"]["students"]]

    first = await roster()
    assert first and len(built) == 1
    assert await roster() == first and len(built) == 1  # kept
    await roster("REPORTING")  # another purpose (answer denied): its own
    await roster(klass=ids["other"])  # another class: its own
    assert len(built) == 3
    assert await roster() == first and len(built) == 3
    # The teacher taken off the roster's class: its principal (its classes) is another.
    teacher, klass = users[TEACHER], uuid.UUID(ids["roster"])
    taken = await owner.fetch(
        "DELETE FROM class_teachers WHERE teacher_id = $1 AND class_id = $2 RETURNING *", teacher, klass
    )
    assert taken
    try:
        shared = {
            str(r[0])
            for r in await owner.fetch(
                "SELECT DISTINCT e.student_id FROM enrollments e JOIN class_teachers ct "
                "ON ct.district_id = e.district_id AND ct.class_id = e.class_id "
                "WHERE ct.teacher_id = $1 AND e.student_id = ANY($2::uuid[])",
                teacher,
                [uuid.UUID(s) for s in first],
            )
        }
        assert set(first) - shared  # some of its students are in none of the teacher's other classes
        after = await roster()
        assert len(built) == 4 and klass not in built[-1].principal.class_ids
        assert set(after) == shared
    finally:
        for row in taken:
            columns = list(row.keys())
            await owner.execute(
                f"INSERT INTO class_teachers ({', '.join(columns)}) "
                f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})",
                *row.values(),
            )
    assert await roster() == first and len(built) == 4  # the first principal's statement, kept


# ------------------------------------------------------------------ the student scope, asked once

SCOPED_READS = {
    # A page of students (matched under the student scope), and their classes.
    "page": ("query { students(first: 25) { nodes { id classes { id } } } }", 1),
    # One student (read under the student scope), and theirs.
    "student": ('query { student(id: "00000000-0000-4000-8000-000000000002") { id classes { id } } }', 1),
    # A class's students are read under the scope of a class's students, not this one: their
    # classes still ask it of each of them.
    "class": ('query { class(id: "00000000-0000-4000-8000-0000000000c1") { students { id classes { id } } } }', 2),
}


@pytest.mark.parametrize("name", sorted(SCOPED_READS))
def test_a_students_classes_ask_the_student_scope_only_of_a_student_not_read_under_it(name: str) -> None:
    from permissions.enums import Role, Scope
    from permissions.policy import load_policy_set
    from permissions.principal import Principal
    from resolvers.scope import RowScope
    from schema.build import build_schema, graphql_schema
    from schema.compiled import Planner, statement

    document, asked = SCOPED_READS[name]
    schema = graphql_schema(build_schema(load_policy_set([Path(__file__).parent / "policies"])))
    parsed = parse(document)
    operation = parsed.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    plan = Planner(schema).plan(parsed, operation)
    assert plan is not None
    district, klass = uuid.UUID(int=0xD1), uuid.UUID("00000000-0000-4000-8000-0000000000c1")
    teacher = Principal(uuid.UUID(int=1), Role.TEACHER, district, school_id=uuid.UUID(int=0xA1), class_ids=(klass,))
    scope = RowScope(teacher, Scope.CLASSES, Scope.CLASSES, Scope.NONE, dt.date(2026, 3, 1))
    sql = statement(plan, scope, None, purpose="INSTRUCTION").sql
    # RowScope.students under CLASSES: enrolled today in one of the caller's classes.
    predicate = "EXISTS (SELECT 1 FROM enrollments e WHERE e.district_id = "
    assert sql.count(predicate) == asked, sql


def very_wide(schema: GraphQLSchema) -> tuple[str, int]:
    """A class's students of more than 50 keys, and how many: every scalar field of a
    student, __typename, 4 relationships and 30 aliases of those fields."""
    student = schema.type_map["Student"]
    leaves = [n for n, f in getattr(student, "fields", {}).items() if is_leaf_type(get_named_type(f.type))]
    query = (
        "query VeryWide($id: ID!) { class(id: $id) { students { __typename "
        + " ".join(leaves)
        + " school { name } classes { id } responses(first: 2) { id score } progress { averageScore } "
        + " ".join(f"k{i}: {leaves[i % len(leaves)]}" for i in range(30))
        + " } } }"
    )
    return query, len(leaves) + 1 + 4 + 30


# Twenty students side by side, each with six lists of rows the statement reports:
# 120, past a function's 100 arguments.
MANY_LISTS = (
    "query ManyLists($id: ID!) { "
    + " ".join(f"s{i}: student(id: $id) {{ ...Lists }}" for i in range(20))
    + " } fragment Lists on Student { firstName responses(first: 1) { score } guardians { firstName } "
    "progress { averageScore } school { students(first: 1) { nodes { firstName } } } "
    "classes { students { firstName } } }"
)


@pytest.mark.parametrize(
    ("shape", "variable", "user", "purpose"),
    [("wide", "roster", TEACHER, "INSTRUCTION"), ("lists", "student", ADMIN, "RECORD_ACCESS")],
)
async def test_objects_and_reported_rows_past_a_function_s_100_arguments_are_compiled(
    app: Any,
    client: httpx.AsyncClient,
    owner: Any,
    recording: Recording,
    token_for: Any,
    ids: dict[str, Any],
    shape: str,
    variable: str,
    user: str,
    purpose: str,
) -> None:
    """json_build_object and json_build_array take at most 100 arguments: a wider object, or
    more reported rows, is built in parts spliced in order, and still served compiled."""
    query, keys = very_wide(app.state.pledgeql.endpoint.schema) if shape == "wide" else (MANY_LISTS, 0)
    document = parse(query)
    plan = app.state.pledgeql.endpoint.planner.plan(document, document.definitions[0])
    assert plan is not None
    widest = max(len(n.members) for n in _nodes(plan))
    assert widest > 50 if shape == "wide" else len(plan.slots) > 100, (widest, len(plan.slots))
    (status, body), written, served = await both_paths(
        app, client, owner, recording, token_for(user, ALL_PURPOSES), purpose, query, {"id": ids[variable]}
    )
    assert served is True and status == 200 and body["data"] is not None, body
    assert written, "the rows read are audited"
    if shape == "wide":
        students = body["data"]["class"]["students"]
        assert students and all(len(s) == keys for s in students)
        assert list(students[0])[:3] == ["__typename", "id", "firstName"] and list(students[0])[-1] == "k29"
    else:
        assert len(body["data"]) == 20 and all(s["firstName"] for s in body["data"].values())


def _nodes(plan: Plan) -> list[Any]:
    """Every object node of the plan, its roots' and theirs below."""
    found = []
    queue = [m.child for m in plan.members if m.child is not None]
    while queue:
        node = queue.pop()
        found.append(node)
        queue += [m.child for m in node.members if m.child is not None]
    return found
