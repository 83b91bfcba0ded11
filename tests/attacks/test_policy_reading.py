"""Attacks from the independent, cell-by-cell reading of POLICY.md (issue 14, hole 13).

Where a rule's scope includes staff but STAFF is not a listed category, the
staff rows used to be dropped (`Class.teachers` was `[]`, `createdBy` null):
the caller learnt nothing wrong, but the answer contradicted POLICY.md
section 2, which says the rows are reachable and their STAFF fields are
FORBIDDEN. These tests ask over HTTP and check the contract's answer.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Gql

TEACHER = "teacher1@northwind.example"
PRINCIPAL = "principal1@northwind.example"
ADMIN = "admin@northwind.example"
SUPPORT = "support@pledgeql.example"
STUDENT = "student1@northwind.example"

STAFF_WITHOUT_NAMES = [
    (TEACHER, "REPORTING"),
    (PRINCIPAL, "INSTRUCTION"),
    (PRINCIPAL, "REPORTING"),
    (ADMIN, "INSTRUCTION"),
    (ADMIN, "REPORTING"),
]


async def _teachers_class_and_assignment(owner: Any, users: dict[str, uuid.UUID]) -> tuple[uuid.UUID, uuid.UUID]:
    row = await owner.fetchrow(
        "SELECT a.class_id, a.id FROM assignments a JOIN class_teachers ct ON ct.class_id = a.class_id "
        "AND ct.district_id = a.district_id WHERE ct.teacher_id = $1 AND a.created_by IS NOT NULL "
        "ORDER BY a.id LIMIT 1",
        users[TEACHER],
    )
    assert row is not None, "the demo data must give teacher1 an assignment"
    return row["class_id"], row["id"]


def _staff_refusals(body: dict[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {
        tuple(e["path"]): e["extensions"]
        for e in body.get("errors", [])
        if e["extensions"].get("code") == "FORBIDDEN" and e["extensions"].get("category") == "STAFF"
    }


@pytest.mark.parametrize(("user", "purpose"), STAFF_WITHOUT_NAMES)
async def test_staff_rows_hidden_instead_of_refused_a_scopes_teachers_are_listed_with_their_names_forbidden(
    gql: Gql, owner: Any, users: dict[str, uuid.UUID], user: str, purpose: str
) -> None:
    class_id, assignment_id = await _teachers_class_and_assignment(owner, users)
    body = await gql(
        user,
        purpose,
        "query($c: ID!, $a: ID!) { class(id: $c) { id teachers { id role firstName email } } "
        "assignment(id: $a) { id createdBy { id firstName } } }",
        {"c": str(class_id), "a": str(assignment_id)},
    )
    assert [e for e in body.get("errors", []) if e["extensions"]["code"] != "FORBIDDEN"] == []
    teachers = body["data"]["class"]["teachers"]
    assert str(users[TEACHER]) in {t["id"] for t in teachers}
    assert all(t["firstName"] is None and t["email"] is None and t["role"] for t in teachers)
    created_by = body["data"]["assignment"]["createdBy"]
    assert created_by is not None and created_by["id"] and created_by["firstName"] is None
    refusals = _staff_refusals(body)
    assert ("assignment", "createdBy", "firstName") in refusals
    assert len(refusals) == 2 * len(teachers) + 1
    for extensions in refusals.values():
        assert extensions == {
            "code": "FORBIDDEN",
            "category": "STAFF",
            "purpose": purpose,
            "reason": "PURPOSE_NOT_ALLOWED_FOR_CATEGORY",
        }


async def test_staff_rows_a_teacher_under_instruction_still_reads_the_names_of_its_co_teachers(
    gql: Gql, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    class_id, _ = await _teachers_class_and_assignment(owner, users)
    body = await gql(
        TEACHER, "INSTRUCTION", "query($c: ID!) { class(id: $c) { teachers { firstName } } }", {"c": str(class_id)}
    )
    assert "errors" not in body, body
    assert all(t["firstName"] for t in body["data"]["class"]["teachers"])


async def test_no_support_grant_is_never_returned_over_http_a_read_without_a_grant_is_not_found(
    gql: Gql, users: dict[str, uuid.UUID]
) -> None:
    body = await gql(
        SUPPORT, "SUPPORT", "query($s: ID!) { student(id: $s) { id firstName } }", {"s": str(users[STUDENT])}
    )
    assert body["data"]["student"] is None
    assert [e["extensions"] for e in body["errors"]] == [{"code": "NOT_FOUND"}]
    assert "NO_SUPPORT_GRANT" not in str(body)


async def test_audit_log_under_legal_compliance_is_read_with_the_justification_and_marked_break_glass(
    gql: Gql, owner: Any
) -> None:
    reason = f"Court order {uuid.uuid4().hex[:12]}"
    body = await gql(
        ADMIN, "LEGAL_COMPLIANCE", "{ auditLog(first: 3) { nodes { id } } }", headers={"X-Justification": reason}
    )
    assert "errors" not in body, body
    assert body["data"]["auditLog"]["nodes"]
    entries = await owner.fetch("SELECT fields, break_glass FROM audit_entries WHERE justification = $1", reason)
    assert [(list(e["fields"]), e["break_glass"]) for e in entries] == [(["Query.auditLog"], True)]


async def test_collection_switched_off_the_export_still_discloses_what_was_collected_before(
    gql: Gql, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    settings = "mutation($i: DistrictSettingsInput!) { updateDistrictSettings(input: $i) { collectUsage } }"
    off = {"collectUsage": False, "collectDevice": False, "collectDemographics": False}
    body = await gql(ADMIN, "REPORTING", settings, {"i": off})
    assert "errors" not in body, body
    try:
        student = users[STUDENT]
        # The fields themselves now answer NOT_COLLECTED...
        read = await gql(
            ADMIN, "RECORD_ACCESS", "query($s: ID!) { student(id: $s) { gender lastActiveAt } }", {"s": str(student)}
        )
        assert {e["extensions"]["reason"] for e in read["errors"]} == {"NOT_COLLECTED"}
        # ...but the right of access covers everything held.
        export = await gql(
            ADMIN,
            "RECORD_ACCESS",
            "mutation($s: ID!) { exportStudentRecord(studentId: $s) { document } }",
            {"s": str(student)},
        )
        assert "errors" not in export, export
        document = export["data"]["exportStudentRecord"]["document"]
        assert document["withheld"] == {}
        held = await owner.fetchrow(
            "SELECT (SELECT count(*) FROM activity_events WHERE student_id = $1) AS events, "
            "(SELECT count(*) FROM device_sessions WHERE student_id = $1) AS sessions",
            student,
        )
        assert held["events"] > 0 and held["sessions"] > 0
        assert document["recordsHeld"]["activity_events"] == held["events"]
        assert document["recordsHeld"]["device_sessions"] == held["sessions"]
    finally:
        on = {"collectUsage": True, "collectDevice": True, "collectDemographics": True}
        await gql(ADMIN, "REPORTING", settings, {"i": on})
