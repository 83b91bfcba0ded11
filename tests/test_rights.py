"""Families' rights through the district: requests, access, correction, deletion, consent.

The tests run in file order on one copy of the demo database: the deletions
come last.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from typing import Any

import pytest

from resolvers.rights import iso
from server.commands.cli import main as cli_main
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import Gql, error_codes, justified

ADMIN = "admin@northwind.example"
RIVERSIDE_ADMIN = "admin@riverside.example"
TEACHER = "teacher1@northwind.example"
PRINCIPAL = "principal1@northwind.example"
GUARDIAN = "guardian1@northwind.example"
STUDENT = "student1@northwind.example"

OPEN = """
mutation Open($kind: DataRequestKind!, $student: ID!, $by: String!) {
  openDataRequest(input: {kind: $kind, studentId: $student, requestedBy: $by}) {
    id kind studentId requestedBy receivedAt dueAt status fulfilledAt
  }
}
"""
EXPORT = """
mutation Export($student: ID!, $request: ID) {
  exportStudentRecord(studentId: $student, dataRequestId: $request) { studentId generatedAt document }
}
"""
CORRECT = """
mutation Correct($input: CorrectStudentInput!) {
  correctStudentRecord(input: $input) { id firstName lastName preferredName gradeLevel gender birthDate }
}
"""
DELETE = """
mutation Delete($student: ID!, $reason: String!, $request: ID) {
  deleteStudentRecord(studentId: $student, reason: $reason, dataRequestId: $request) {
    id studentId deletedAt deletedBy reason counts { table rows } digest
  }
}
"""
OPT_OUT = """
mutation OptOut($student: ID!, $optOut: Boolean!) {
  setAnalyticsOptOut(studentId: $student, optOut: $optOut) { studentId analyticsOptOut updatedAt }
}
"""
LIST = "query List($status: DataRequestStatus) { dataRequests(status: $status) { id kind studentId status } }"


def _sid(users: dict[str, uuid.UUID], n: int, district: str = "northwind") -> str:
    return str(users[f"student{n}@{district}.example"])


async def _open(gql: Gql, student: str, kind: str = "ACCESS", user: str = ADMIN) -> dict[str, Any]:
    return await gql(user, "RECORD_ACCESS", OPEN, {"kind": kind, "student": student, "by": "A parent, by letter"})


# ----------------------------------------------------------------- requests


async def test_district_admin_opens_a_request_due_45_days_after_receipt_and_lists_it(
    gql: Gql, users: dict[str, uuid.UUID], owner: Any
) -> None:
    student = _sid(users, 5)
    body = await _open(gql, student, "CORRECTION")
    assert "errors" not in body, body
    request = body["data"]["openDataRequest"]
    assert request["kind"] == "CORRECTION" and request["status"] == "OPEN" and request["fulfilledAt"] is None
    assert request["studentId"] == student and request["requestedBy"] == "A parent, by letter"
    received = dt.datetime.fromisoformat(request["receivedAt"])
    assert dt.datetime.fromisoformat(request["dueAt"]) - received == dt.timedelta(days=45)
    assert abs(received - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)

    listed = await gql(ADMIN, "RECORD_ACCESS", LIST, {"status": "OPEN"})
    assert request["id"] in {r["id"] for r in listed["data"]["dataRequests"]}
    fulfilled = await gql(ADMIN, "RECORD_ACCESS", LIST, {"status": "FULFILLED"})
    assert request["id"] not in {r["id"] for r in fulfilled["data"]["dataRequests"]}

    stored = await owner.fetchrow("SELECT * FROM data_requests WHERE id = $1", uuid.UUID(request["id"]))
    assert stored["requested_by"] == "A parent, by letter" and stored["student_id"] == uuid.UUID(student)
    entry = await owner.fetchrow(
        "SELECT * FROM audit_entries WHERE subject_student_id = $1 AND 'Mutation.openDataRequest' = ANY(fields)",
        uuid.UUID(student),
    )
    assert entry is not None and entry["decision"] == "ALLOW" and "CONTACT" in entry["categories"]


async def test_requests_are_refused_to_other_roles_purposes_and_districts(
    gql: Gql, users: dict[str, uuid.UUID], owner: Any
) -> None:
    student = _sid(users, 6)
    before = await owner.fetchval("SELECT count(*) FROM data_requests")

    body = await gql(TEACHER, "INSTRUCTION", OPEN, {"kind": "ACCESS", "student": student, "by": "x"})
    assert error_codes(body) == ["FORBIDDEN"]
    assert body["errors"][0]["extensions"]["reason"] == "OUT_OF_SCOPE_OPERATION"

    body = await gql(ADMIN, "REPORTING", OPEN, {"kind": "ACCESS", "student": student, "by": "x"})
    assert error_codes(body) == ["FORBIDDEN"]
    assert body["errors"][0]["extensions"]["reason"] == "OUT_OF_SCOPE_OPERATION"

    body = await gql(TEACHER, "RECORD_ACCESS", OPEN, {"kind": "ACCESS", "student": student, "by": "x"})
    assert error_codes(body) == ["PURPOSE_NOT_ALLOWED"]

    body = await gql(RIVERSIDE_ADMIN, "RECORD_ACCESS", OPEN, {"kind": "ACCESS", "student": student, "by": "x"})
    assert error_codes(body) == ["NOT_FOUND"]
    body = await _open(gql, str(uuid.uuid4()))
    assert error_codes(body) == ["NOT_FOUND"]

    body = await gql(ADMIN, "RECORD_ACCESS", OPEN, {"kind": "ACCESS", "student": student, "by": "   "})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == "input.requestedBy"

    for user, purpose in ((TEACHER, "INSTRUCTION"), (ADMIN, "REPORTING"), (PRINCIPAL, "REPORTING")):
        listed = await gql(user, purpose, LIST)
        assert error_codes(listed) == ["FORBIDDEN"], (user, purpose)
    assert await owner.fetchval("SELECT count(*) FROM data_requests") == before


# ------------------------------------------------------------------- access


def _text_forms(value: Any) -> list[str]:
    """How a stored value appears in the JSON document (empty: not checkable by text)."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, dt.datetime):
        return [iso(value)]
    if isinstance(value, dt.date):
        return [value.isoformat()]
    if isinstance(value, list | tuple):
        return [form for v in value for form in _text_forms(v)]
    if isinstance(value, dict):
        return _text_forms(list(value.values()))
    if isinstance(value, float):
        return [json.dumps(value)]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return _text_forms(list(json.loads(value).values()) if value[0] == "{" else json.loads(value))
        except (ValueError, AttributeError):
            pass
    return [json.dumps(str(value))[1:-1] if isinstance(value, str) else str(value)]


STUDENT_LINKS = ("student_id", "subject_student_id")
INTEGRITY_COLUMNS = {"district_id", "hash", "prev_hash"}


async def _tables_naming(owner: Any) -> dict[str, list[str]]:
    """From the catalog: every table with a column that names a student or a guardian."""
    rows = await owner.fetch(
        "SELECT c.relname AS t, a.attname AS col FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
        "AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY($1::text[])",
        [*STUDENT_LINKS, "guardian_id"],
    )
    tables: dict[str, list[str]] = {}
    for row in rows:
        tables.setdefault(row["t"], []).append(row["col"])
    return tables


async def test_export_holds_every_row_of_every_table_that_names_the_student(
    gql: Gql, users: dict[str, uuid.UUID], owner: Any
) -> None:
    student = _sid(users, 7)
    sid = uuid.UUID(student)
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", sid)
    # Fill every kind of record first: a request, a correction with a statement, a consent,
    # a support grant naming the student, and a table the code has never heard of.
    request = (await _open(gql, student, "CORRECTION"))["data"]["openDataRequest"]
    corrected = await gql(
        ADMIN,
        "RECORD_ACCESS",
        CORRECT,
        {"input": {"studentId": student, "preferredName": "Sunny", "statementOfDisagreement": "We disagree."}},
    )
    assert "errors" not in corrected, corrected
    assert "errors" not in await gql(ADMIN, "RECORD_ACCESS", OPT_OUT, {"student": student, "optOut": True})
    await owner.execute(
        "INSERT INTO support_grants (district_id, id, ticket, expires_at, user_ids) "
        "VALUES ($1, $2, 'TICKET-7', now() + interval '1 day', ARRAY[$3]::uuid[])",
        district,
        uuid.uuid4(),
        sid,
    )
    await owner.execute(
        "CREATE TABLE tutoring_notes (district_id uuid NOT NULL, id uuid PRIMARY KEY, student_id uuid NOT NULL, "
        "note text NOT NULL)"
    )
    await owner.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON tutoring_notes TO pledgeql_app")
    await owner.execute("ALTER TABLE tutoring_notes ENABLE ROW LEVEL SECURITY")
    await owner.execute(
        "CREATE POLICY tenant_isolation ON tutoring_notes TO pledgeql_app USING (district_id = ANY ((SELECT "
        "string_to_array(nullif(current_setting('pledgeql.district_ids', true), ''), ','))::uuid[]))"
    )
    await owner.execute(
        "INSERT INTO tutoring_notes VALUES ($1, $2, $3, 'Needs help with fractions')", district, uuid.uuid4(), sid
    )

    body = await gql(
        ADMIN, "RECORD_ACCESS", EXPORT, {"student": student, "request": None}, headers={"X-Request-Id": "export-7"}
    )
    assert "errors" not in body, body
    export = body["data"]["exportStudentRecord"]
    assert export["studentId"] == student
    doc = export["document"]
    text = json.dumps(doc)

    tables = await _tables_naming(owner)
    assert "tutoring_notes" in tables and "responses" in tables
    missing: list[str] = []
    for table, columns in sorted(tables.items()):
        links = [c for c in columns if c in STUDENT_LINKS]
        assert links, f"{table} names guardians but no student: decide what an export and a deletion do with it"
        rows = [
            r
            for column in links
            for r in await owner.fetch(
                f'SELECT * FROM "{table}" WHERE district_id = $1 AND "{column}" = $2', district, sid
            )
            # The export's own audit entry is written after the document is made.
            if table != "audit_entries" or r["client_request_id"] != "export-7"
        ]
        assert doc["recordsHeld"].get(table, 0) == len(rows), table
        for row in rows:
            for column, value in dict(row).items():
                if column in INTEGRITY_COLUMNS or column in links:
                    continue
                missing += [f"{table}.{column}" for form in _text_forms(value) if form not in text]
    student_row = await owner.fetchrow("SELECT * FROM users WHERE id = $1", sid)
    for column, value in dict(student_row).items():
        if column != "district_id":
            missing += [f"users.{column}" for form in _text_forms(value) if form not in text]
    assert not missing, sorted(set(missing))

    # Every table that holds something about this student had something to hold.
    assert doc["recordsHeld"]["users"] == 1 and doc["recordsHeld"]["support_grants"] == 1
    for table in ("responses", "activity_events", "device_sessions", "enrollments", "guardian_links", "consents"):
        assert doc["recordsHeld"][table] >= 1, table
    assert doc["recordsHeld"]["corrections"] == 1 and doc["recordsHeld"]["data_requests"] == 1
    # Readable by category, plain keys, ISO dates.
    assert doc["directory"]["preferredName"] == "Sunny"
    assert doc["statementsOfDisagreement"][0]["statement"] == "We disagree."
    assert doc["corrections"][0]["corrected"] == {"preferredName": "Sunny"}
    assert doc["consents"][0]["analyticsOptOut"] is True
    assert doc["dataRequests"][0]["id"] == request["id"]
    assert doc["otherRecords"]["tutoring_notes"][0]["note"] == "Needs help with fractions"
    assert doc["withheld"] == {}
    answer = doc["work"]["answers"][0]
    assert {"responseId", "answer"} <= answer.keys()
    first = doc["performance"]["responses"][0]
    assert {"correct", "score", "submittedAt", "item"} <= first.keys() and "answer" not in first
    dt.datetime.fromisoformat(first["submittedAt"])
    assert doc["guardians"] and {"firstName", "email", "phone", "relationship"} <= doc["guardians"][0].keys()
    disclosure = doc["disclosures"][0]
    assert {"at", "actorId", "actorRole", "purpose", "fields", "decision"} <= disclosure.keys()
    assert "hash" not in disclosure

    entry = await owner.fetchrow(
        "SELECT * FROM audit_entries WHERE subject_student_id = $1 AND 'Mutation.exportStudentRecord' = ANY(fields)",
        sid,
    )
    assert entry["decision"] == "ALLOW" and set(entry["categories"]) >= {"DIRECTORY", "WORK", "DEVICE", "CONTACT"}


async def test_export_fulfils_the_access_request_it_names_and_refuses_another_kind_or_student(
    gql: Gql, users: dict[str, uuid.UUID], owner: Any
) -> None:
    student, other = _sid(users, 8), _sid(users, 9)
    access = (await _open(gql, student, "ACCESS"))["data"]["openDataRequest"]
    deletion = (await _open(gql, student, "DELETION"))["data"]["openDataRequest"]
    others = (await _open(gql, other, "ACCESS"))["data"]["openDataRequest"]

    for request in (deletion["id"], others["id"], "not-an-id", str(uuid.uuid4())):
        body = await gql(ADMIN, "RECORD_ACCESS", EXPORT, {"student": student, "request": request})
        assert error_codes(body) == ["BAD_USER_INPUT"], request
        assert body["errors"][0]["extensions"]["field"] == "dataRequestId"
        assert body["data"] is None
    statuses = await owner.fetch(
        "SELECT status FROM data_requests WHERE id = ANY($1::uuid[])",
        [uuid.UUID(r["id"]) for r in (access, deletion, others)],
    )
    assert {r["status"] for r in statuses} == {"OPEN"}

    body = await gql(ADMIN, "RECORD_ACCESS", EXPORT, {"student": student, "request": access["id"]})
    assert "errors" not in body, body
    stored = await owner.fetchrow("SELECT * FROM data_requests WHERE id = $1", uuid.UUID(access["id"]))
    assert stored["status"] == "FULFILLED" and stored["fulfilled_at"] is not None
    again = await gql(ADMIN, "RECORD_ACCESS", EXPORT, {"student": student, "request": access["id"]})
    assert error_codes(again) == ["BAD_USER_INPUT"]


async def test_export_is_refused_to_other_roles_purposes_and_districts(gql: Gql, users: dict[str, uuid.UUID]) -> None:
    student = _sid(users, 1)
    for user, purpose in ((TEACHER, "INSTRUCTION"), (ADMIN, "REPORTING"), (ADMIN, "LEGAL_COMPLIANCE")):
        body = await gql(user, purpose, EXPORT, {"student": student}, headers=justified(purpose))
        assert error_codes(body) == ["FORBIDDEN"], (user, purpose)
        assert body["data"] is None
    body = await gql(TEACHER, "RECORD_ACCESS", EXPORT, {"student": student})
    assert error_codes(body) == ["PURPOSE_NOT_ALLOWED"]
    body = await gql(GUARDIAN, "RECORD_ACCESS", EXPORT, {"student": student})
    assert error_codes(body) == ["DIRECT_ACCESS_DISABLED"]
    body = await gql(RIVERSIDE_ADMIN, "RECORD_ACCESS", EXPORT, {"student": student})
    assert error_codes(body) == ["NOT_FOUND"]


# --------------------------------------------------------------- correction


async def test_correction_changes_fields_keeps_previous_values_and_discloses_the_statement(
    gql: Gql, users: dict[str, uuid.UUID], owner: Any
) -> None:
    student = _sid(users, 10)
    sid = uuid.UUID(student)
    before = await owner.fetchrow("SELECT * FROM users WHERE id = $1", sid)
    request = (await _open(gql, student, "CORRECTION"))["data"]["openDataRequest"]
    body = await gql(
        ADMIN,
        "RECORD_ACCESS",
        CORRECT,
        {
            "input": {
                "studentId": student,
                "dataRequestId": request["id"],
                "firstName": "  Corrected ",
                "gradeLevel": "07",
                "gender": "Unspecified",
                "birthDate": "2012-03-04",
                "lastName": before["last_name"],
                "statementOfDisagreement": "The grade was recorded wrongly in 2023.",
            }
        },
    )
    assert "errors" not in body, body
    shown = body["data"]["correctStudentRecord"]
    assert shown["firstName"] == "Corrected" and shown["gradeLevel"] == "7"
    assert shown["gender"] == "unspecified" and shown["birthDate"] == "2012-03-04"
    assert shown["lastName"] == before["last_name"]

    after = await owner.fetchrow("SELECT * FROM users WHERE id = $1", sid)
    assert after["first_name"] == "Corrected" and after["birth_date"] == dt.date(2012, 3, 4)
    correction = await owner.fetchrow("SELECT * FROM corrections WHERE student_id = $1", sid)
    previous, new = json.loads(correction["previous"]), json.loads(correction["corrected"])
    assert previous["firstName"] == before["first_name"] and new["firstName"] == "Corrected"
    assert "lastName" not in new  # unchanged values are not corrections
    assert correction["statement_of_disagreement"] == "The grade was recorded wrongly in 2023."
    assert correction["data_request_id"] == uuid.UUID(request["id"])
    assert await owner.fetchval("SELECT status FROM data_requests WHERE id = $1", uuid.UUID(request["id"])) == (
        "FULFILLED"
    )

    # A statement alone is a correction too, and both are disclosed with the record from then on.
    body = await gql(
        ADMIN,
        "RECORD_ACCESS",
        CORRECT,
        {"input": {"studentId": student, "statementOfDisagreement": "We still disagree."}},
    )
    assert "errors" not in body, body
    doc = (await gql(ADMIN, "RECORD_ACCESS", EXPORT, {"student": student}))["data"]["exportStudentRecord"]["document"]
    statements = [s["statement"] for s in doc["statementsOfDisagreement"]]
    assert statements == ["The grade was recorded wrongly in 2023.", "We still disagree."]
    assert doc["corrections"][0]["previous"]["firstName"] == before["first_name"]

    entry = await owner.fetchrow(
        "SELECT * FROM audit_entries WHERE subject_student_id = $1 AND 'Mutation.correctStudentRecord' = ANY(fields) "
        "ORDER BY seq LIMIT 1",
        sid,
    )
    assert set(entry["categories"]) >= {"DIRECTORY", "DEMOGRAPHIC"}
    assert "Corrected" not in json.dumps([str(v) for v in dict(entry).values()])
    # What changed (API.md section 3): each corrected field and the statement, by name; not an unchanged one.
    changed = {f"CorrectStudentInput.{name}" for name in new} | {"CorrectStudentInput.statementOfDisagreement"}
    assert "CorrectStudentInput.firstName" in changed and changed <= set(entry["fields"])
    assert "CorrectStudentInput.lastName" not in entry["fields"]


@pytest.mark.parametrize(
    ("given", "field"),
    [
        # A valid change beside the invalid one must not be written either.
        ({"preferredName": "Valid", "firstName": " "}, "input.firstName"),
        ({"preferredName": "Valid", "lastName": "x" * 101}, "input.lastName"),
        ({"preferredName": "Valid", "gradeLevel": "14"}, "input.gradeLevel"),
        ({"preferredName": "Valid", "gender": "robot"}, "input.gender"),
        ({"preferredName": "Valid", "birthDate": "2999-01-01"}, "input.birthDate"),
        ({"preferredName": "Valid", "firstName": "Same\u0000Name"}, "input.firstName"),
        ({"preferredName": "Valid", "lastName": "Two\nLines"}, "input.lastName"),  # a name is one line
        ({"preferredName": "Tab\tbed"}, "input.preferredName"),
        ({"preferredName": "Valid", "firstName": "Del\u007fete"}, "input.firstName"),
        ({"preferredName": "Valid", "statementOfDisagreement": "x" * 5001}, "input.statementOfDisagreement"),
        ({}, "input"),
        ({"statementOfDisagreement": "   "}, "input"),
    ],
)
async def test_correction_validates_everything_before_writing(
    gql: Gql, users: dict[str, uuid.UUID], owner: Any, given: dict[str, Any], field: str
) -> None:
    student = _sid(users, 11)
    sid = uuid.UUID(student)
    before = dict(await owner.fetchrow("SELECT * FROM users WHERE id = $1", sid))
    body = await gql(ADMIN, "RECORD_ACCESS", CORRECT, {"input": {"studentId": student, **given}})
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert body["errors"][0]["extensions"]["field"] == field
    assert dict(await owner.fetchrow("SELECT * FROM users WHERE id = $1", sid)) == before
    assert await owner.fetchval("SELECT count(*) FROM corrections WHERE student_id = $1", sid) == 0


async def test_correction_is_refused_to_other_roles_and_districts(gql: Gql, users: dict[str, uuid.UUID]) -> None:
    student = _sid(users, 1)
    variables = {"input": {"studentId": student, "firstName": "Nope"}}
    assert error_codes(await gql(PRINCIPAL, "INSTRUCTION", CORRECT, variables)) == ["FORBIDDEN"]
    assert error_codes(await gql(ADMIN, "INSTRUCTION", CORRECT, variables)) == ["FORBIDDEN"]
    assert error_codes(await gql(STUDENT, "STUDENT_LEARNING", CORRECT, variables)) == ["FORBIDDEN"]
    assert error_codes(await gql(RIVERSIDE_ADMIN, "RECORD_ACCESS", CORRECT, variables)) == ["NOT_FOUND"]


async def test_a_refused_operation_on_a_student_is_a_deny_entry_about_them_when_the_caller_reaches_them(
    gql: Gql, users: dict[str, uuid.UUID], owner: Any
) -> None:
    # The teacher reaches student1 (their class) but may not correct or export records: the DENY
    # entries are about student1, so they show in student1's accessLog. A student of another
    # district is not reached: its entry names no one.
    async def denied(query: str, variables: dict[str, Any]) -> list[tuple[str, uuid.UUID | None]]:
        request_id = uuid.uuid4().hex
        body = await gql(TEACHER, "INSTRUCTION", query, variables, headers={"X-Request-Id": request_id})
        assert error_codes(body) == ["FORBIDDEN"], body
        rows = await owner.fetch(
            "SELECT decision, subject_student_id FROM audit_entries WHERE client_request_id = $1", request_id
        )
        return [(r["decision"], r["subject_student_id"]) for r in rows]

    reached, elsewhere = _sid(users, 1), _sid(users, 1, "riverside")
    assert await denied(CORRECT, {"input": {"studentId": reached, "firstName": "Nope"}}) == [
        ("DENY", uuid.UUID(reached))
    ]
    assert await denied(EXPORT, {"student": reached}) == [("DENY", uuid.UUID(reached))]
    assert await denied(OPT_OUT, {"student": reached, "optOut": True}) == [("DENY", uuid.UUID(reached))]
    assert await denied(CORRECT, {"input": {"studentId": elsewhere, "firstName": "Nope"}}) == [("DENY", None)]
    assert await denied(EXPORT, {"student": "not-an-id"}) == [("DENY", None)]


# ------------------------------------------------------------------ consent


async def test_analytics_opt_out_is_upserted_by_the_admin_and_by_a_guardian_with_direct_access(
    gql: Gql, users: dict[str, uuid.UUID], owner: Any
) -> None:
    child, not_child = _sid(users, 1), _sid(users, 2)
    untouched = await owner.fetchrow("SELECT * FROM consents WHERE student_id = $1", uuid.UUID(not_child))
    body = await gql(ADMIN, "RECORD_ACCESS", OPT_OUT, {"student": child, "optOut": True})
    assert "errors" not in body, body
    assert body["data"]["setAnalyticsOptOut"]["analyticsOptOut"] is True
    row = await owner.fetchrow("SELECT * FROM consents WHERE student_id = $1", uuid.UUID(child))
    assert row["analytics_opt_out"] is True and row["updated_by"] == users[ADMIN]

    body = await gql(GUARDIAN, "RECORD_ACCESS", OPT_OUT, {"student": child, "optOut": False})
    assert error_codes(body) == ["DIRECT_ACCESS_DISABLED"]
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", users[GUARDIAN])
    await owner.execute("UPDATE districts SET direct_record_access = true WHERE id = $1", district)
    try:
        body = await gql(GUARDIAN, "RECORD_ACCESS", OPT_OUT, {"student": child, "optOut": False})
        assert "errors" not in body, body
        row = await owner.fetchrow("SELECT * FROM consents WHERE student_id = $1", uuid.UUID(child))
        assert row["analytics_opt_out"] is False and row["updated_by"] == users[GUARDIAN]
        assert await owner.fetchval("SELECT count(*) FROM consents WHERE student_id = $1", uuid.UUID(child)) == 1

        body = await gql(GUARDIAN, "RECORD_ACCESS", OPT_OUT, {"student": not_child, "optOut": True})
        assert error_codes(body) == ["NOT_FOUND"]
        body = await gql(STUDENT, "RECORD_ACCESS", OPT_OUT, {"student": child, "optOut": True})
        assert error_codes(body) == ["FORBIDDEN"]
        body = await gql(GUARDIAN, "RECORD_ACCESS", EXPORT, {"student": child})
        assert error_codes(body) == ["FORBIDDEN"]
    finally:
        await owner.execute("UPDATE districts SET direct_record_access = false WHERE id = $1", district)
    assert await owner.fetchrow("SELECT * FROM consents WHERE student_id = $1", uuid.UUID(not_child)) == untouched
    body = await gql(GUARDIAN, "REPORTING", OPT_OUT, {"student": child, "optOut": True})
    assert error_codes(body) == ["FORBIDDEN"]
    body = await gql(RIVERSIDE_ADMIN, "RECORD_ACCESS", OPT_OUT, {"student": child, "optOut": True})
    assert error_codes(body) == ["NOT_FOUND"]


# ----------------------------------------------------------------- deletion

STUDENT_QUERIES = {
    "INSTRUCTION": "query Q($id: ID!) { student(id: $id) { id firstName } students(first: 500) { nodes { id } } }",
    "REPORTING": "query Q($id: ID!) { student(id: $id) { id firstName } students(first: 500) { nodes { id } } }",
    "RECORD_ACCESS": "query Q($id: ID!) { student(id: $id) { id firstName guardians { id } } "
    "students(first: 500) { nodes { id } } }",
    "LEGAL_COMPLIANCE": "query Q($id: ID!) { student(id: $id) { id firstName } students(first: 500) { nodes { id } } }",
}


async def test_deletion_removes_every_row_about_the_student_and_certifies_it(
    gql: Gql, users: dict[str, uuid.UUID], owner: Any, token_for: Any, client: Any
) -> None:
    student = _sid(users, 1)
    sid = uuid.UUID(student)
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", sid)
    guardian = users[GUARDIAN]
    assert await owner.fetchval("SELECT count(*) FROM guardian_links WHERE guardian_id = $1", guardian) == 1
    await owner.execute("INSERT INTO tutoring_notes VALUES ($1, $2, $3, 'A note')", district, uuid.uuid4(), sid)
    orphans = await owner.fetch(
        "SELECT guardian_id FROM guardian_links g WHERE student_id = $1 AND NOT EXISTS "
        "(SELECT 1 FROM guardian_links o WHERE o.guardian_id = g.guardian_id AND o.student_id <> g.student_id)",
        sid,
    )
    assert guardian in {r["guardian_id"] for r in orphans}
    # What the database holds before, table by table, from the catalog.
    tables = await _tables_naming(owner)
    held = {
        table: await owner.fetchval(
            f'SELECT count(*) FROM "{table}" WHERE district_id = $1 AND student_id = $2', district, sid
        )
        for table, columns in tables.items()
        if "student_id" in columns
    }
    audit_before = await owner.fetchval("SELECT count(*) FROM audit_entries WHERE subject_student_id = $1", sid)
    assert audit_before > 0 and held["responses"] >= 10

    request = (await _open(gql, student, "DELETION"))["data"]["openDataRequest"]
    await _open(gql, student, "DELETION")  # asked twice: the one deletion answers both
    # Open requests of other kinds cannot be carried out once the record is gone: closed too.
    unanswerable = [(await _open(gql, student, kind))["data"]["openDataRequest"] for kind in ("ACCESS", "CORRECTION")]
    body = await gql(ADMIN, "REPORTING", DELETE, {"student": student, "reason": "x", "request": request["id"]})
    assert error_codes(body) == ["FORBIDDEN"]
    body = await gql(ADMIN, "RECORD_ACCESS", DELETE, {"student": student, "reason": " ", "request": request["id"]})
    assert error_codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["field"] == "reason"
    assert await owner.fetchval("SELECT count(*) FROM users WHERE id = $1", sid) == 1

    body = await gql(
        ADMIN, "RECORD_ACCESS", DELETE, {"student": student, "reason": "Family request", "request": request["id"]}
    )
    assert "errors" not in body, body
    certificate = body["data"]["deleteStudentRecord"]
    counts = {c["table"]: c["rows"] for c in certificate["counts"]}
    assert certificate["studentId"] == student and certificate["reason"] == "Family request"
    assert certificate["deletedBy"] == str(users[ADMIN])
    for table in ("responses", "activity_events", "device_sessions", "enrollments", "guardian_links", "tutoring_notes"):
        assert counts[table] == held[table], table
    assert counts["users"] == 1 and counts["guardians"] == len(orphans)
    assert counts["data_requests"] == held["data_requests"] + 4
    statuses = await owner.fetch(
        "SELECT status, fulfilled_at FROM data_requests WHERE student_id = $1 AND kind = 'DELETION'", sid
    )
    assert len(statuses) == 2 and all(r["status"] == "FULFILLED" and r["fulfilled_at"] for r in statuses)
    closed = await owner.fetch(
        "SELECT status, fulfilled_at FROM data_requests WHERE id = ANY($1::uuid[])",
        [uuid.UUID(r["id"]) for r in unanswerable],
    )
    assert [(r["status"], r["fulfilled_at"]) for r in closed] == [("REJECTED", None)] * 2
    assert (
        await owner.fetchval("SELECT count(*) FROM data_requests WHERE student_id = $1 AND status = 'OPEN'", sid) == 0
    )
    assert "audit_entries" not in counts and "deletion_certificates" not in counts

    # The digest is sha256 over the certificate's canonical JSON, recomputable by anyone.
    canonical = {
        "certificateId": certificate["id"],
        "scope": "STUDENT",
        "districtId": str(district),
        "studentId": student,
        "deletedAt": certificate["deletedAt"].replace("+00:00", "Z"),
        "deletedBy": certificate["deletedBy"],
        "operator": None,
        "reason": "Family request",
        "counts": dict(sorted(counts.items())),
        "dataRequestId": request["id"],
    }
    raw = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert hashlib.sha256(raw).hexdigest() == certificate["digest"]
    stored = await owner.fetchrow("SELECT * FROM deletion_certificates WHERE id = $1", uuid.UUID(certificate["id"]))
    assert stored["digest"] == certificate["digest"] and stored["student_id"] == sid

    # Nothing personal is left anywhere; the audit entries and the certificate are kept.
    for table, columns in tables.items():
        for column in (c for c in columns if c in STUDENT_LINKS):
            left = await owner.fetchval(f'SELECT count(*) FROM "{table}" WHERE "{column}" = $1', sid)
            if table == "audit_entries":
                assert left > audit_before
            elif table == "deletion_certificates":
                assert left == 1
            elif table == "data_requests":
                names = await owner.fetch("SELECT requested_by, status FROM data_requests WHERE student_id = $1", sid)
                assert {r["requested_by"] for r in names} == {"(removed with the student's record)"}
                assert {r["status"] for r in names} >= {"FULFILLED"}
            else:
                assert left == 0, table
    gone = [sid, *(r["guardian_id"] for r in orphans)]
    assert await owner.fetchval("SELECT count(*) FROM users WHERE id = ANY($1::uuid[])", gone) == 0

    # No query by any role returns anything about the student.
    for purpose, query in STUDENT_QUERIES.items():
        body = await gql(ADMIN, purpose, query, {"id": student}, headers=justified(purpose))
        assert body["data"]["student"] is None and error_codes(body) == ["NOT_FOUND"], purpose
        assert student not in json.dumps(body["data"]["students"])
    for user, purpose in ((TEACHER, "INSTRUCTION"), (PRINCIPAL, "REPORTING")):
        body = await gql(user, purpose, STUDENT_QUERIES[purpose], {"id": student})
        assert body["data"]["student"] is None, user
        assert student not in json.dumps(body["data"]["students"])
    for user in (STUDENT, GUARDIAN):
        response = await client.post(
            "/graphql",
            json={"query": "{ me { id } }"},
            headers={"Authorization": f"Bearer {token_for(user)}", "X-Purpose": "PERSONALIZATION"},
        )
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    body = await gql(ADMIN, "RECORD_ACCESS", EXPORT, {"student": student})
    assert error_codes(body) == ["NOT_FOUND"]
    body = await gql(ADMIN, "RECORD_ACCESS", DELETE, {"student": student, "reason": "again"})
    assert error_codes(body) == ["NOT_FOUND"]


async def test_a_guardian_with_another_child_is_kept_when_one_child_is_deleted(
    gql: Gql, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    pair = await owner.fetchrow(
        "SELECT a.student_id AS deleted, b.student_id AS sibling, a.guardian_id FROM guardian_links a "
        "JOIN guardian_links b ON b.guardian_id = a.guardian_id AND b.student_id <> a.student_id "
        "JOIN districts d ON d.id = a.district_id WHERE d.name = 'Northwind Unified' LIMIT 1"
    )
    assert pair is not None
    body = await gql(ADMIN, "RECORD_ACCESS", DELETE, {"student": str(pair["deleted"]), "reason": "Left the district"})
    assert "errors" not in body, body
    counts = {c["table"]: c["rows"] for c in body["data"]["deleteStudentRecord"]["counts"]}
    assert counts["users"] == 1
    assert await owner.fetchval("SELECT count(*) FROM users WHERE id = $1", pair["guardian_id"]) == 1
    assert (
        await owner.fetchval(
            "SELECT count(*) FROM guardian_links WHERE guardian_id = $1 AND student_id = $2",
            pair["guardian_id"],
            pair["sibling"],
        )
        == 1
    )


async def test_deletion_certificates_are_listed_for_the_district_only(gql: Gql, users: dict[str, uuid.UUID]) -> None:
    query = "{ deletionCertificates { id studentId reason digest counts { table rows } } }"
    body = await gql(ADMIN, "RECORD_ACCESS", query)
    assert "errors" not in body, body
    listed = body["data"]["deletionCertificates"]
    assert _sid(users, 1) in {c["studentId"] for c in listed} and len(listed) == 2
    one = await gql(
        ADMIN, "RECORD_ACCESS", "query Q($s: ID) { deletionCertificates(studentId: $s) { id } }", {"s": _sid(users, 1)}
    )
    assert len(one["data"]["deletionCertificates"]) == 1
    body = await gql(RIVERSIDE_ADMIN, "RECORD_ACCESS", query)
    assert body["data"]["deletionCertificates"] == []
    for user, purpose in ((ADMIN, "REPORTING"), (TEACHER, "INSTRUCTION")):
        assert error_codes(await gql(user, purpose, query)) == ["FORBIDDEN"]


def test_the_audit_chains_still_verify_after_deletions(
    settings: Settings, db: DatabaseUrls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PLEDGEQL_DATABASE_URL", db.owner)
    monkeypatch.setenv("PLEDGEQL_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("PLEDGEQL_AUDIT_KEY", raising=False)
    status = cli_main(["audit", "verify"])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "OK district" in out.out and "FAILED" not in out.out + out.err


def test_a_withheld_category_is_withheld_from_the_other_records_too() -> None:
    """The report totals (answers, score sums) are performance data: an export that
    withholds PERFORMANCE withholds them under otherRecords as well as the section."""
    from resolvers.rights import StudentRecord, build_document

    student = {
        "district_id": uuid.uuid4(),
        "id": uuid.uuid4(),
        "school_id": None,
        "role": "STUDENT",
        "learning_level": None,
        "last_active_at": None,
    }
    totals = {"district_id": student["district_id"], "student_id": student["id"], "responses": 3, "score_sum": 2}
    record = StudentRecord(student, {"report_student_totals": [totals]}, None, {}, {}, {}, {}, [])
    district = {"id": student["district_id"], "name": "A district"}
    at = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    shown = build_document(record, district, None, at, {})
    assert shown["otherRecords"]["report_student_totals"][0]["scoreSum"] == 2
    withheld = build_document(record, district, None, at, {"PERFORMANCE": "PURPOSE_NOT_ALLOWED_FOR_CATEGORY"})
    assert withheld["performance"]["withheld"] is True
    assert withheld["otherRecords"]["report_student_totals"] == {
        "withheld": True,
        "category": "PERFORMANCE",
        "reason": "PURPOSE_NOT_ALLOWED_FOR_CATEGORY",
    }
    assert "scoreSum" not in json.dumps(withheld)
