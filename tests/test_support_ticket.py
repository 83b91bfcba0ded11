"""SUPPORT works under a district's grant, and the grant's ticket is its justification in the audit."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from tests.conftest import Gql, error_codes


async def test_support_reads_under_a_grant_and_its_ticket_is_recorded_as_the_justification(
    gql: Gql, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    student_id = users["student1@northwind.example"]
    query = f'{{ student(id: "{student_id}") {{ firstName }} }}'

    refused = await gql("support@pledgeql.example", "SUPPORT", query)
    assert refused["data"]["student"] is None and error_codes(refused) == ["NOT_FOUND"]

    district_id = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", student_id)
    await owner.execute(
        "INSERT INTO support_grants (district_id, id, ticket, expires_at) VALUES ($1, $2, 'HELP-4821', $3)",
        district_id,
        uuid.uuid4(),
        dt.datetime.now(dt.UTC) + dt.timedelta(days=2),
    )
    body = await gql("support@pledgeql.example", "SUPPORT", query, headers={"X-Request-Id": "support-ticket-check"})
    assert "errors" not in body and body["data"]["student"]["firstName"]
    rows = await owner.fetch(
        "SELECT justification, subject_student_id, fields FROM audit_entries WHERE client_request_id = $1",
        "support-ticket-check",
    )
    assert rows, "the support read left no audit entry"
    assert all(r["justification"] == "HELP-4821" for r in rows)
    assert any(r["subject_student_id"] == student_id and "Student.firstName" in r["fields"] for r in rows)
