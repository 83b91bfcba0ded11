"""``me.classes``: the caller's own classes, for each role."""

from __future__ import annotations

from typing import Any

from tests.conftest import Gql, error_codes

MY_CLASSES = "{ me { classes { id name } } }"


async def _names(owner: Any, sql: str, username: str) -> list[str]:
    rows = await owner.fetch(sql, username)
    return sorted(r["name"] for r in rows)


async def test_a_teacher_sees_the_classes_they_teach_and_no_other(gql: Gql, owner: Any) -> None:
    body = await gql("teacher1@northwind.example", "INSTRUCTION", MY_CLASSES)
    assert "errors" not in body, body
    expected = await _names(
        owner,
        "SELECT c.name FROM classes c JOIN class_teachers ct ON ct.class_id = c.id AND ct.district_id = c.district_id "
        "JOIN users u ON u.id = ct.teacher_id WHERE u.username = $1",
        "teacher1@northwind.example",
    )
    got = [c["name"] for c in body["data"]["me"]["classes"]]
    assert expected and got == sorted(got)
    assert sorted(got) == expected


async def test_a_student_sees_the_classes_they_are_enrolled_in(gql: Gql, owner: Any) -> None:
    body = await gql("student1@northwind.example", "STUDENT_LEARNING", MY_CLASSES)
    assert "errors" not in body, body
    expected = await _names(
        owner,
        "SELECT c.name FROM classes c JOIN enrollments e ON e.class_id = c.id AND e.district_id = c.district_id "
        "JOIN users u ON u.id = e.student_id WHERE u.username = $1 AND e.begin_date <= current_date "
        "AND (e.end_date IS NULL OR e.end_date >= current_date)",
        "student1@northwind.example",
    )
    assert expected
    assert sorted(c["name"] for c in body["data"]["me"]["classes"]) == expected


async def test_a_guardian_sees_the_classes_of_their_children_only(gql: Gql, owner: Any) -> None:
    body = await gql("guardian1@northwind.example", "REPORTING", MY_CLASSES)
    assert "errors" not in body, body
    expected = await _names(
        owner,
        "SELECT DISTINCT c.name FROM classes c JOIN enrollments e ON e.class_id = c.id "
        "AND e.district_id = c.district_id JOIN guardian_links g ON g.student_id = e.student_id "
        "JOIN users u ON u.id = g.guardian_id WHERE u.username = $1 AND e.begin_date <= current_date "
        "AND (e.end_date IS NULL OR e.end_date >= current_date)",
        "guardian1@northwind.example",
    )
    assert expected
    assert sorted(c["name"] for c in body["data"]["me"]["classes"]) == expected


async def test_administrators_and_internal_users_have_no_classes_of_their_own(gql: Gql) -> None:
    for username, purpose in [
        ("admin@northwind.example", "REPORTING"),
        ("principal1@northwind.example", "REPORTING"),
        ("analyst@pledgeql.example", "REPORTING"),
    ]:
        body = await gql(username, purpose, MY_CLASSES)
        assert "errors" not in body, body
        assert body["data"]["me"]["classes"] == []


async def test_a_subscription_over_plain_http_is_refused_with_its_code(gql: Gql) -> None:
    body = await gql(
        "teacher1@northwind.example",
        "INSTRUCTION",
        'subscription { classActivity(classId: "00000000-0000-0000-0000-000000000000") { kind } }',
        headers={"Accept": "application/graphql-response+json"},
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["_status"] == 400
    assert "data" not in body or body["data"] is None
