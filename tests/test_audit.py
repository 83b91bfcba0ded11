"""The audit trail over HTTP: what is written equals what was resolved; who may read it; fail-closed.

The expected entries of a request are derived from its response alone: every
classified field present in the data (by its ``__typename``) is an ALLOW of
its subject, unless a FORBIDDEN error names its path, then a DENY. The
entries in the database must be exactly those, grouped per (subject,
decision), with the same fields and categories.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from schema.catalog import category_fields
from tests.conftest import error_codes

NORTHWIND_ADMIN = "admin@northwind.example"
RIVERSIDE_ADMIN = "admin@riverside.example"
TEACHER = "teacher1@northwind.example"
GUARDIAN = "guardian1@northwind.example"
STUDENT = "student1@northwind.example"
SUPPORT = "support@pledgeql.example"

CATEGORY_OF = {field: category for category, fields in category_fields().items() for field in fields}
AUDIT_READS = {"Student.accessLog", "Query.auditLog"}

Expected = dict[tuple[uuid.UUID | None, str], tuple[set[str], set[str]]]


def resolved(body: dict[str, Any]) -> Expected:
    """(subject, decision) -> (fields, categories), read off a response."""
    denied = {tuple(e["path"]) for e in body.get("errors", []) if e.get("extensions", {}).get("code") == "FORBIDDEN"}
    found: Expected = {}

    def add(subject: uuid.UUID | None, decision: str, field: str) -> None:
        fields, categories = found.setdefault((subject, decision), (set(), set()))
        fields.add(field)
        if field in CATEGORY_OF:
            categories.add(CATEGORY_OF[field])

    def walk(value: Any, path: tuple[Any, ...], typename: str, subject: uuid.UUID | None) -> None:
        if isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i), typename, subject)
            return
        if not isinstance(value, dict):
            return
        typename = value.get("__typename", typename)
        if typename == "Student":
            subject = uuid.UUID(value["id"])
        elif typename == "Staff":
            subject = None
        for key, child in value.items():
            name = f"{typename}.{key}"
            if name in CATEGORY_OF or name in AUDIT_READS:
                add(subject, "DENY" if (*path, key) in denied else "ALLOW", name)
            walk(child, (*path, key), "", subject)

    walk(body.get("data") or {}, (), "Query", None)
    # A refused root field leaves no data to walk: its error is the record.
    for path in denied:
        if len(path) == 1 and f"Query.{path[0]}" in AUDIT_READS:
            add(None, "DENY", f"Query.{path[0]}")
    return found


def written(rows: list[Any]) -> Expected:
    result: Expected = {}
    for row in rows:
        key = (row["subject_student_id"], row["decision"])
        assert key not in result, f"two entries for one (subject, decision): {key}"
        assert len(set(row["fields"])) == len(row["fields"])
        result[key] = (set(row["fields"]), set(row["categories"]))
    return result


@pytest.fixture(scope="module")
def request_as(client: httpx.AsyncClient, token_for: Any) -> Any:
    async def run(
        username: str,
        purpose: str,
        query: str,
        variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[dict[str, Any], str]:
        sent = {
            "Authorization": f"Bearer {token_for(username)}",
            "X-Purpose": purpose,
            "Accept": "application/graphql-response+json",
        }
        sent.update(headers or {})
        response = await client.post("/graphql", json={"query": query, "variables": variables}, headers=sent)
        body: dict[str, Any] = response.json()
        body["_status"] = response.status_code
        # The server's own id for the request: the audit's requestId.
        return body, response.headers["x-request-id"]

    return run


async def entries_of(owner: Any, request_id: str) -> list[Any]:
    return list(await owner.fetch("SELECT * FROM audit_entries WHERE request_id = $1 ORDER BY seq", request_id))


@pytest.fixture(scope="module")
async def ids(owner: Any, users: dict[str, uuid.UUID]) -> dict[str, uuid.UUID]:
    northwind = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    riverside = await owner.fetchval("SELECT id FROM districts WHERE name = 'Riverside Unified'")
    roster = await owner.fetchval(
        "SELECT ct.class_id FROM class_teachers ct JOIN enrollments e ON e.class_id = ct.class_id "
        "WHERE ct.teacher_id = $1 AND e.student_id = $2 LIMIT 1",
        users[TEACHER],
        users[STUDENT],
    )
    return {"northwind": northwind, "riverside": riverside, "roster": roster}


async def check_entries_match(owner: Any, body: dict[str, Any], request_id: str) -> list[Any]:
    rows = await entries_of(owner, request_id)
    expected = resolved(body)
    assert expected, "the query resolved no personal field: nothing to compare"
    assert written(rows) == expected
    return rows


ROSTER = """
query Roster($id: ID!) {
  class(id: $id) {
    __typename name
    teachers { __typename id firstName lastName }
    students { __typename id firstName lastName responses(first: 20) { __typename answer correct score } }
  }
}
"""


async def test_teacher_roster_writes_one_entry_per_student_with_exactly_the_fields_resolved(
    request_as: Any, owner: Any, ids: dict[str, uuid.UUID], users: dict[str, uuid.UUID]
) -> None:
    body, request_id = await request_as(TEACHER, "INSTRUCTION", ROSTER, {"id": str(ids["roster"])})
    assert "errors" not in body
    rows = await check_entries_match(owner, body, request_id)
    students = body["data"]["class"]["students"]
    assert len(rows) == len(students) + 1  # one per student, one for the teachers' names
    for row in rows:
        assert row["district_id"] == ids["northwind"]
        assert row["actor_id"] == users[TEACHER] and row["actor_role"] == "TEACHER"
        assert row["purpose"] == "INSTRUCTION" and row["operation_name"] == "Roster"
        assert row["decision"] == "ALLOW" and row["break_glass"] is False and row["justification"] is None
    student_row = next(r for r in rows if r["subject_student_id"] == uuid.UUID(students[0]["id"]))
    assert set(student_row["fields"]) == {
        "Student.firstName",
        "Student.lastName",
        "Student.responses",
        "Response.answer",
        "Response.correct",
        "Response.score",
    }
    assert set(student_row["categories"]) == {"DIRECTORY", "PERFORMANCE", "WORK"}


async def test_teacher_roster_under_reporting_writes_a_deny_entry_per_student_for_the_answers(
    request_as: Any, owner: Any, ids: dict[str, uuid.UUID]
) -> None:
    body, request_id = await request_as(TEACHER, "REPORTING", ROSTER, {"id": str(ids["roster"])})
    assert set(error_codes(body)) == {"FORBIDDEN"}
    rows = await check_entries_match(owner, body, request_id)
    denies = [r for r in rows if r["decision"] == "DENY" and r["subject_student_id"] is not None]
    assert len(denies) == len(body["data"]["class"]["students"])
    assert all(r["fields"] == ["Response.answer"] and r["categories"] == ["WORK"] for r in denies)
    # The class's teachers are listed (POLICY.md section 2) with their names refused.
    assert body["data"]["class"]["teachers"]
    staff = [r for r in rows if r["subject_student_id"] is None]
    assert [(sorted(r["fields"]), r["categories"], r["decision"]) for r in staff] == [
        (["Staff.firstName", "Staff.lastName"], ["STAFF"], "DENY")
    ]


async def test_teacher_single_student_lookup_records_allowed_and_denied_fields_of_that_student(
    request_as: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    query = """
    query One($id: ID!) {
      student(id: $id) {
        __typename id firstName gender email learningLevel
        progress { __typename averageScore mastery { __typename skill level } }
        guardians { __typename id firstName }
        deviceSessions { __typename ipAddress }
      }
    }
    """
    body, request_id = await request_as(TEACHER, "INSTRUCTION", query, {"id": str(users[STUDENT])})
    rows = await check_entries_match(owner, body, request_id)
    assert {r["subject_student_id"] for r in rows} == {users[STUDENT]}
    deny = next(r for r in rows if r["decision"] == "DENY")
    assert set(deny["fields"]) == {"Student.gender", "Student.guardians", "Student.deviceSessions"}
    assert set(deny["categories"]) == {"DEMOGRAPHIC", "CONTACT", "DEVICE"}


async def test_guardian_progress_records_the_child_and_the_guardians_own_contact_without_a_subject(
    request_as: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    query = """
    query Progress($id: ID!) {
      me { guardian { __typename id firstName email } }
      student(id: $id) {
        __typename id firstName
        progress { __typename averageScore percentCorrect responsesSubmitted }
        responses(first: 5) { __typename correct answer }
        classes { teachers { __typename id lastName } }
      }
    }
    """
    body, request_id = await request_as(GUARDIAN, "REPORTING", query, {"id": str(users[STUDENT])})
    rows = await check_entries_match(owner, body, request_id)
    by_key = written(rows)
    # The guardian's own contact data is not about a student, and REPORTING does not allow it.
    assert by_key[(None, "DENY")] == ({"Guardian.firstName", "Guardian.email"}, {"CONTACT"})
    # The child's teachers' names are staff data: no subject.
    assert by_key[(None, "ALLOW")] == ({"Staff.lastName"}, {"STAFF"})
    assert by_key[(users[STUDENT], "DENY")] == ({"Response.answer"}, {"WORK"})
    assert all(r["actor_role"] == "GUARDIAN" and r["purpose"] == "REPORTING" for r in rows)


async def test_support_lookup_under_an_active_grant_records_the_student_and_the_denied_identifier(
    request_as: Any, owner: Any, ids: dict[str, uuid.UUID], users: dict[str, uuid.UUID]
) -> None:
    grant = uuid.uuid4()
    await owner.execute(
        "INSERT INTO support_grants (district_id, id, ticket, granted_by, expires_at) VALUES ($1, $2, $3, $4, $5)",
        ids["northwind"],
        grant,
        "TICKET-4711",
        users[NORTHWIND_ADMIN],
        dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
    )
    try:
        query = """
        query Lookup($id: ID!) { student(id: $id) { __typename id firstName email lastActiveAt } }
        """
        body, request_id = await request_as(SUPPORT, "SUPPORT", query, {"id": str(users[STUDENT])})
        rows = await check_entries_match(owner, body, request_id)
        assert {(r["subject_student_id"], r["decision"]) for r in rows} == {
            (users[STUDENT], "ALLOW"),
            (users[STUDENT], "DENY"),
        }
        assert all(r["district_id"] == ids["northwind"] and r["actor_role"] == "SUPPORT" for r in rows)
    finally:
        await owner.execute("DELETE FROM support_grants WHERE id = $1", grant)


async def test_district_admin_reading_the_audit_log_is_itself_an_entry_without_category(
    request_as: Any, owner: Any, ids: dict[str, uuid.UUID], users: dict[str, uuid.UUID]
) -> None:
    body, request_id = await request_as(
        NORTHWIND_ADMIN, "REPORTING", "query Log { auditLog(first: 5) { nodes { id fields } } }"
    )
    assert "errors" not in body and body["data"]["auditLog"]["nodes"]
    rows = await check_entries_match(owner, body, request_id)
    assert len(rows) == 1
    row = rows[0]
    assert row["district_id"] == ids["northwind"] and row["actor_id"] == users[NORTHWIND_ADMIN]
    assert row["fields"] == ["Query.auditLog"] and row["categories"] == [] and row["subject_student_id"] is None


async def test_audit_log_filtered_to_a_student_is_recorded_as_about_that_student(
    request_as: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    body, request_id = await request_as(
        NORTHWIND_ADMIN,
        "RECORD_ACCESS",
        "query Log($s: ID!) { auditLog(filter: {subjectStudentId: $s}) { nodes { subjectStudentId } } }",
        {"s": str(users[STUDENT])},
    )
    nodes = body["data"]["auditLog"]["nodes"]
    assert nodes and {n["subjectStudentId"] for n in nodes} == {str(users[STUDENT])}
    rows = await entries_of(owner, request_id)
    assert [(r["subject_student_id"], r["fields"]) for r in rows] == [(users[STUDENT], ["Query.auditLog"])]


async def test_legal_compliance_entries_are_break_glass_and_carry_the_justification(
    request_as: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    body, request_id = await request_as(
        NORTHWIND_ADMIN,
        "LEGAL_COMPLIANCE",
        "query Legal($id: ID!) { student(id: $id) { __typename id firstName birthDate } }",
        {"id": str(users[STUDENT])},
        headers={"X-Justification": "  Court order 2026-117  "},
    )
    assert "errors" not in body
    rows = await check_entries_match(owner, body, request_id)
    assert rows and all(r["break_glass"] is True for r in rows)
    assert all(r["justification"] == "Court order 2026-117" for r in rows)
    read = await request_as(NORTHWIND_ADMIN, "REPORTING", "{ auditLog(first: 50) { nodes { id breakGlass } } }")
    flags = {n["id"]: n["breakGlass"] for n in read[0]["data"]["auditLog"]["nodes"]}
    assert flags[str(rows[0]["id"])] is True


async def test_requests_outside_legal_compliance_are_not_break_glass(
    request_as: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    body, request_id = await request_as(
        NORTHWIND_ADMIN,
        "RECORD_ACCESS",
        "query R($id: ID!) { student(id: $id) { __typename id firstName } }",
        {"id": str(users[STUDENT])},
    )
    rows = await check_entries_match(owner, body, request_id)
    assert all(r["break_glass"] is False and r["justification"] is None for r in rows)


@pytest.mark.parametrize(
    ("username", "purpose"),
    [
        (TEACHER, "INSTRUCTION"),
        (TEACHER, "REPORTING"),
        ("principal1@northwind.example", "REPORTING"),
        (NORTHWIND_ADMIN, "INSTRUCTION"),
        (NORTHWIND_ADMIN, "COMMUNICATION"),
        (GUARDIAN, "REPORTING"),
        (STUDENT, "STUDENT_LEARNING"),
        ("analyst@pledgeql.example", "REPORTING"),
        (SUPPORT, "SUPPORT"),
    ],
)
async def test_everyone_but_a_district_admin_under_its_audit_purposes_is_refused_the_audit_log(
    request_as: Any, owner: Any, username: str, purpose: str
) -> None:
    body, request_id = await request_as(username, purpose, "{ auditLog { nodes { id fields } } }")
    assert body["data"] is None  # auditLog is non-null in the contract: the refusal nulls the data
    assert error_codes(body) == ["FORBIDDEN"]
    assert body["errors"][0]["extensions"]["reason"] == "OUT_OF_SCOPE_OPERATION"
    await check_entries_match(owner, body, request_id)


@pytest.mark.parametrize(
    ("username", "purpose"),
    [(TEACHER, "INSTRUCTION"), (NORTHWIND_ADMIN, "REPORTING"), (NORTHWIND_ADMIN, "LEGAL_COMPLIANCE")],
)
async def test_access_log_is_null_and_forbidden_outside_record_access(
    request_as: Any, owner: Any, users: dict[str, uuid.UUID], username: str, purpose: str
) -> None:
    body, request_id = await request_as(
        username,
        purpose,
        "query A($id: ID!) { student(id: $id) { __typename id accessLog { nodes { id } } } }",
        {"id": str(users[STUDENT])},
        headers={"X-Justification": "audit of audits"} if purpose == "LEGAL_COMPLIANCE" else {},
    )
    assert body["data"]["student"]["accessLog"] is None
    assert error_codes(body) == ["FORBIDDEN"]
    assert body["errors"][0]["extensions"]["reason"] == "OUT_OF_SCOPE_OPERATION"
    rows = await check_entries_match(owner, body, request_id)
    assert [(r["subject_student_id"], r["decision"], r["fields"]) for r in rows] == [
        (users[STUDENT], "DENY", ["Student.accessLog"])
    ]


async def test_audit_log_pages_newest_first_with_cursors_that_do_not_overlap(request_as: Any) -> None:
    query = (
        "query P($after: String) { auditLog(first: 4, after: $after) "
        "{ nodes { id at } pageInfo { hasNextPage endCursor } } }"
    )
    first, _ = await request_as(NORTHWIND_ADMIN, "RECORD_ACCESS", query)
    page1 = first["data"]["auditLog"]
    assert len(page1["nodes"]) == 4 and page1["pageInfo"]["hasNextPage"] is True
    second, _ = await request_as(NORTHWIND_ADMIN, "RECORD_ACCESS", query, {"after": page1["pageInfo"]["endCursor"]})
    page2 = second["data"]["auditLog"]
    assert len(page2["nodes"]) == 4
    assert not {n["id"] for n in page1["nodes"]} & {n["id"] for n in page2["nodes"]}
    times = [n["at"] for n in page1["nodes"] + page2["nodes"]]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize("cursor", ["not-a-cursor", "c2VxOi0x", "c2VxOjk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5", ""])
async def test_a_cursor_this_server_did_not_issue_is_bad_user_input_never_a_500(request_as: Any, cursor: str) -> None:
    body, _ = await request_as(
        NORTHWIND_ADMIN,
        "RECORD_ACCESS",
        "query P($after: String) { auditLog(after: $after) { nodes { id } } }",
        {"after": cursor},
    )
    if cursor == "":
        assert "errors" not in body  # an empty cursor is the first page
    else:
        assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_audit_log_filters_by_actor_purpose_decision_and_time(
    request_as: Any, users: dict[str, uuid.UUID]
) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    query = """
    query F($f: AuditFilter) { auditLog(filter: $f, first: 500) { nodes { actorId purpose decision at } } }
    """
    body, _ = await request_as(
        NORTHWIND_ADMIN,
        "RECORD_ACCESS",
        query,
        {"f": {"actorId": str(users[TEACHER]), "purpose": "REPORTING", "decision": "DENY", "from": since.isoformat()}},
    )
    nodes = body["data"]["auditLog"]["nodes"]
    assert nodes
    assert {(n["actorId"], n["purpose"], n["decision"]) for n in nodes} == {(str(users[TEACHER]), "REPORTING", "DENY")}
    future, _ = await request_as(
        NORTHWIND_ADMIN,
        "RECORD_ACCESS",
        query,
        {"f": {"from": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()}},
    )
    assert future["data"]["auditLog"]["nodes"] == []
    bad, _ = await request_as(NORTHWIND_ADMIN, "RECORD_ACCESS", query, {"f": {"actorId": "nope"}})
    assert error_codes(bad) == ["BAD_USER_INPUT"]


async def test_a_district_admin_sees_only_their_own_districts_entries(
    request_as: Any, owner: Any, ids: dict[str, uuid.UUID], users: dict[str, uuid.UUID]
) -> None:
    body, _ = await request_as(
        RIVERSIDE_ADMIN, "RECORD_ACCESS", "{ auditLog(first: 500) { nodes { id actorId subjectStudentId } } }"
    )
    seen = {n["id"] for n in body["data"]["auditLog"]["nodes"]}
    northwind = {
        str(r["id"]) for r in await owner.fetch("SELECT id FROM audit_entries WHERE district_id = $1", ids["northwind"])
    }
    assert northwind and not seen & northwind
    assert str(users[TEACHER]) not in {n["actorId"] for n in body["data"]["auditLog"]["nodes"]}
    # ... nor a Northwind student's access log through a filter.
    filtered, _ = await request_as(
        RIVERSIDE_ADMIN,
        "RECORD_ACCESS",
        "query F($s: ID!) { auditLog(filter: {subjectStudentId: $s}) { nodes { id } } }",
        {"s": str(users[STUDENT])},
    )
    assert filtered["data"]["auditLog"]["nodes"] == []


@contextmanager
def active_span(trace_id: int) -> Iterator[None]:
    context = SpanContext(trace_id=trace_id, span_id=0x1234, is_remote=False, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(context)):
        yield


async def test_entries_carry_the_current_opentelemetry_trace_id_and_show_it(
    request_as: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    trace_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736
    with active_span(trace_id):
        body, request_id = await request_as(
            TEACHER,
            "INSTRUCTION",
            "query T($id: ID!) { student(id: $id) { id firstName } }",
            {"id": str(users[STUDENT])},
        )
    assert "errors" not in body
    rows = await entries_of(owner, request_id)
    assert rows and {r["trace_id"] for r in rows} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    log, _ = await request_as(
        NORTHWIND_ADMIN,
        "RECORD_ACCESS",
        "query F($s: ID!) { auditLog(filter: {subjectStudentId: $s}, first: 50) { nodes { requestId traceId } } }",
        {"s": str(users[STUDENT])},
    )
    shown = {n["requestId"]: n["traceId"] for n in log["data"]["auditLog"]["nodes"]}
    assert shown[request_id] == "4bf92f3577b34da6a3ce929d0e0e4736"
    # Without a span there is no trace id, never a made-up one.
    _, plain = await request_as(
        TEACHER, "INSTRUCTION", "query T($id: ID!) { student(id: $id) { id firstName } }", {"id": str(users[STUDENT])}
    )
    assert {r["trace_id"] for r in await entries_of(owner, plain)} == {None}


async def test_guardian_with_direct_access_sees_who_read_their_childs_data_for_which_purpose_and_when(
    request_as: Any, owner: Any, ids: dict[str, uuid.UUID], users: dict[str, uuid.UUID]
) -> None:
    log_query = """
    query Log($id: ID!) {
      student(id: $id) { accessLog(first: 200) { nodes { actorId actorRole purpose at fields decision requestId } } }
    }
    """
    refused, _ = await request_as(GUARDIAN, "RECORD_ACCESS", log_query, {"id": str(users[STUDENT])})
    assert error_codes(refused) == ["DIRECT_ACCESS_DISABLED"] and "data" not in refused
    assert refused["_status"] == 403

    before = dt.datetime.now(dt.UTC)
    read, read_id = await request_as(
        TEACHER, "INSTRUCTION", "query T($id: ID!) { student(id: $id) { id firstName } }", {"id": str(users[STUDENT])}
    )
    assert "errors" not in read
    await owner.execute("UPDATE districts SET direct_record_access = true WHERE id = $1", ids["northwind"])
    try:
        body, own_read = await request_as(GUARDIAN, "RECORD_ACCESS", log_query, {"id": str(users[STUDENT])})
        assert "errors" not in body
        nodes = body["data"]["student"]["accessLog"]["nodes"]
        teacher_read = next(n for n in nodes if n["requestId"] == read_id)
        assert teacher_read["actorId"] == str(users[TEACHER]) and teacher_read["actorRole"] == "TEACHER"
        assert teacher_read["purpose"] == "INSTRUCTION" and teacher_read["fields"] == ["Student.firstName"]
        assert teacher_read["decision"] == "ALLOW"
        assert dt.datetime.fromisoformat(teacher_read["at"]) >= before - dt.timedelta(seconds=1)
        # Only entries about this child.
        rows = await owner.fetch(
            "SELECT count(*) FROM audit_entries WHERE district_id = $1 AND subject_student_id = $2 "
            "AND request_id <> $3",
            ids["northwind"],
            users[STUDENT],
            own_read,
        )
        assert len(nodes) == min(rows[0][0], 200)
        # The guardian's read of the log is itself on the child's record.
        assert [(r["subject_student_id"], r["fields"]) for r in await entries_of(owner, own_read)] == [
            (users[STUDENT], ["Student.accessLog"])
        ]
        # The student reads their own access log too; another student's record does not exist for them.
        mine, _ = await request_as(STUDENT, "RECORD_ACCESS", log_query, {"id": str(users[STUDENT])})
        assert mine["data"]["student"]["accessLog"]["nodes"]
        other, _ = await request_as(
            GUARDIAN, "RECORD_ACCESS", log_query, {"id": str(users["student2@northwind.example"])}
        )
        assert other["data"]["student"] is None and error_codes(other) == ["NOT_FOUND"]
    finally:
        await owner.execute("UPDATE districts SET direct_record_access = false WHERE id = $1", ids["northwind"])


async def test_district_admin_reads_a_students_access_log_under_record_access(
    request_as: Any, users: dict[str, uuid.UUID]
) -> None:
    body, _ = await request_as(
        NORTHWIND_ADMIN,
        "RECORD_ACCESS",
        "query L($id: ID!) { student(id: $id) "
        "{ accessLog(first: 3) { nodes { subjectStudentId } pageInfo { hasNextPage } } } }",
        {"id": str(users[STUDENT])},
    )
    log = body["data"]["student"]["accessLog"]
    assert len(log["nodes"]) == 3 and log["pageInfo"]["hasNextPage"] is True
    assert {n["subjectStudentId"] for n in log["nodes"]} == {str(users[STUDENT])}


async def test_audit_write_failure_returns_audit_unavailable_with_no_personal_data_then_recovers(
    request_as: Any, owner: Any, ids: dict[str, uuid.UUID]
) -> None:
    names = {
        r["first_name"]
        for r in await owner.fetch(
            "SELECT u.first_name FROM enrollments e JOIN users u ON u.id = e.student_id WHERE e.class_id = $1",
            ids["roster"],
        )
    }
    count = await owner.fetchval("SELECT count(*) FROM audit_entries")
    await owner.execute("REVOKE INSERT ON audit_records FROM pledgeql_app")
    try:
        body, _ = await request_as(TEACHER, "INSTRUCTION", ROSTER, {"id": str(ids["roster"])})
        assert body["_status"] == 503
        assert error_codes(body) == ["AUDIT_UNAVAILABLE"]
        assert "data" not in body
        text = str(body)
        assert not [n for n in names if n in text]
        # A request that reads no personal data writes no entry and still works.
        plain, _ = await request_as(TEACHER, "INSTRUCTION", "{ me { role } }")
        assert plain["data"] == {"me": {"role": "TEACHER"}}
        assert await owner.fetchval("SELECT count(*) FROM audit_entries") == count
    finally:
        await owner.execute("GRANT INSERT ON audit_records TO pledgeql_app")
    body, request_id = await request_as(TEACHER, "INSTRUCTION", ROSTER, {"id": str(ids["roster"])})
    assert body["_status"] == 200 and "errors" not in body
    assert {s["firstName"] for s in body["data"]["class"]["students"]} <= names
    await check_entries_match(owner, body, request_id)


@pytest.mark.parametrize(
    ("username", "purpose", "code", "status"),
    [
        (TEACHER, "RECORD_ACCESS", "PURPOSE_NOT_ALLOWED", 403),  # not a purpose of the role
        (NORTHWIND_ADMIN, "LEGAL_COMPLIANCE", "JUSTIFICATION_REQUIRED", 400),  # no X-Justification
        (GUARDIAN, "RECORD_ACCESS", "DIRECT_ACCESS_DISABLED", 403),  # the district keeps it off
    ],
)
async def test_a_mutation_refused_before_it_runs_is_an_attempt_with_its_deny_entry(
    request_as: Any, owner: Any, users: dict[str, uuid.UUID], username: str, purpose: str, code: str, status: int
) -> None:
    mutation = (
        "mutation Attempt($id: ID!) { setAnalyticsOptOut(studentId: $id, optOut: true) { analyticsOptOut } "
        "... on Mutation { again: setAnalyticsOptOut(studentId: $id, optOut: false) { analyticsOptOut } } }"
    )
    before = await owner.fetchval("SELECT count(*) FROM consents")
    body, request_id = await request_as(username, purpose, mutation, {"id": str(users[STUDENT])})
    assert body["_status"] == status and error_codes(body) == [code], body
    assert await owner.fetchval("SELECT count(*) FROM consents") == before  # nothing ran
    rows = await owner.fetch("SELECT * FROM audit_entries WHERE request_id = $1", request_id)
    assert len(rows) == 1
    (entry,) = rows
    district, role = await owner.fetchrow("SELECT district_id, role FROM users WHERE id = $1", users[username])
    assert (entry["district_id"], entry["subject_student_id"], entry["decision"]) == (district, None, "DENY")
    assert (list(entry["fields"]), list(entry["categories"])) == (["Mutation.setAnalyticsOptOut"], [])
    assert (entry["actor_id"], entry["actor_role"]) == (users[username], role)
    assert (entry["purpose"], entry["operation_name"], entry["break_glass"]) == (purpose, "Attempt", False)
    # A query refused the same way reads nothing and writes nothing.
    body, request_id = await request_as(username, purpose, "{ me { id } }")
    assert error_codes(body) == [code]
    assert await owner.fetchval("SELECT count(*) FROM audit_entries WHERE request_id = $1", request_id) == 0
