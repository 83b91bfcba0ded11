"""The read API on the demo data: who sees which rows, and the SQL it costs."""

from __future__ import annotations

from typing import Any

from tests.conftest import Gql, error_codes

ADMIN = "admin@northwind.example"


async def test_district_admin_reads_me_district_schools_classes_and_student_ids(gql: Gql) -> None:
    body = await gql(
        ADMIN,
        "REPORTING",
        "{ me { role purpose district { id name schools { id name classes { id name students { id } } } } } }",
    )
    assert "errors" not in body
    me = body["data"]["me"]
    assert me["role"] == "DISTRICT_ADMIN" and me["purpose"] == "REPORTING"
    assert me["district"]["name"] == "Northwind Unified"
    schools = me["district"]["schools"]
    assert len(schools) >= 2
    students = {s["id"] for school in schools for c in school["classes"] for s in c["students"]}
    assert len(students) >= 120


async def test_northwind_token_never_sees_a_riverside_id(gql: Gql, owner: Any) -> None:
    riverside = {
        str(r["id"])
        for r in await owner.fetch(
            "SELECT u.id FROM users u JOIN districts d ON d.id = u.district_id WHERE d.name = 'Riverside Unified' "
            "UNION ALL SELECT s.id FROM schools s JOIN districts d ON d.id = s.district_id "
            "WHERE d.name = 'Riverside Unified' UNION ALL SELECT c.id FROM classes c "
            "JOIN districts d ON d.id = c.district_id WHERE d.name = 'Riverside Unified' "
            "UNION ALL SELECT id FROM districts WHERE name = 'Riverside Unified'"
        )
    }
    assert riverside
    body = await gql(
        ADMIN,
        "REPORTING",
        "{ me { district { id schools { id classes { id teachers { id } students { id } } } } } "
        "students(first: 500) { totalCount nodes { id } } }",
    )
    text = str(body)
    assert not [i for i in riverside if i in text]
    for riverside_id in list(riverside)[:20]:
        for root in ("student", "school", "class", "district"):
            probe = await gql(ADMIN, "REPORTING", f'{{ {root}(id: "{riverside_id}") {{ id }} }}')
            assert probe["data"][root] is None
            assert error_codes(probe) == ["NOT_FOUND"]
