"""PostgreSQL row-level security, the backstop under the SQL scopes.

A query that forgot its scope still cannot cross districts: a deliberately
unscoped SELECT run through a real request's own transaction sees its
district's rows only; without the request's setting the application role sees
no district row at all; it cannot rewrite or erase the audit trail; and the
policies read their setting once per statement, not once per row.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from server.db import DatabaseUrls, connect
from tests.conftest import Gql

# Every table holding one district's rows (migration 0002), written out here by hand.
DISTRICT_TABLES = (
    "schools",
    "users",
    "guardian_links",
    "classes",
    "class_teachers",
    "enrollments",
    "assignments",
    "responses",
    "activity_events",
    "device_sessions",
    "consents",
    "support_grants",
    "data_requests",
    "corrections",
    "deletion_certificates",
    "audit_entries",
)
SETTING = "SELECT set_config('pledgeql.district_ids', $1, true)"


@pytest.fixture(scope="module")
async def districts(owner: Any) -> dict[str, uuid.UUID]:
    rows = await owner.fetch("SELECT name, id FROM districts")
    return {r["name"].split()[0].lower(): r["id"] for r in rows}


@contextlib.asynccontextmanager
async def app_role(db: DatabaseUrls) -> AsyncIterator[Any]:
    conn = await connect(db.app)
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def inside_requests(app: Any, probe: Callable[[Any], Any]) -> AsyncIterator[list[Any]]:
    """Run ``probe(context)`` inside every request's own transaction, just before its audit is written."""
    endpoint = app.state.pledgeql.endpoint
    original = endpoint.audit_writer
    results: list[Any] = []

    async def writer(context: Any) -> None:
        results.append(await probe(context))
        await original(context)

    endpoint.audit_writer = writer
    try:
        yield results
    finally:
        endpoint.audit_writer = original


async def unscoped(context: Any) -> dict[str, list[Any]]:
    # Deliberately no WHERE: only row-level security stands between this and every district.
    return {
        "users": await context.db.fetch("SELECT district_id, id FROM users"),
        "responses": await context.db.fetch("SELECT district_id FROM responses"),
        "support_grants": await context.db.fetch("SELECT district_id FROM support_grants"),
    }


@pytest.mark.parametrize(
    ("username", "purpose"),
    [
        ("teacher1@northwind.example", "INSTRUCTION"),
        ("guardian1@northwind.example", "REPORTING"),
        ("admin@northwind.example", "RECORD_ACCESS"),
    ],
)
async def test_an_unscoped_select_in_a_requests_transaction_sees_only_its_district(
    app: Any, gql: Gql, owner: Any, districts: dict[str, uuid.UUID], username: str, purpose: str
) -> None:
    async with inside_requests(app, unscoped) as seen:
        body = await gql(username, purpose, "{ me { id } }")
    assert "errors" not in body, body
    [rows] = seen
    northwind = districts["northwind"]
    assert {r["district_id"] for r in rows["users"]} == {northwind}
    assert {r["district_id"] for r in rows["responses"]} == {northwind}
    # Everything of its own district is visible to RLS (the SQL scope narrows further), nothing else.
    assert len(rows["users"]) == await owner.fetchval("SELECT count(*) FROM users WHERE district_id = $1", northwind)
    assert len(rows["responses"]) == await owner.fetchval(
        "SELECT count(*) FROM responses WHERE district_id = $1", northwind
    )
    assert await owner.fetchval("SELECT count(*) FROM users WHERE district_id = $1", districts["riverside"]) > 0


async def test_an_unscoped_select_by_support_without_a_grant_sees_no_district_row(app: Any, gql: Gql) -> None:
    async with inside_requests(app, unscoped) as seen:
        body = await gql("support@pledgeql.example", "SUPPORT", "{ me { id } }")
    assert "errors" not in body, body
    [rows] = seen
    assert rows == {"users": [], "responses": [], "support_grants": []}


async def test_the_app_role_sees_only_the_district_its_transaction_names(
    db: DatabaseUrls, owner: Any, districts: dict[str, uuid.UUID]
) -> None:
    northwind, riverside = districts["northwind"], districts["riverside"]
    async with app_role(db) as conn, conn.transaction():
        await conn.execute(SETTING, str(northwind))
        for table in DISTRICT_TABLES:
            rows = await conn.fetch(f"SELECT DISTINCT district_id FROM {table}")
            assert {r["district_id"] for r in rows} <= {northwind}, table
        users = await conn.fetch("SELECT * FROM users")
        assert users and {r["district_id"] for r in users} == {northwind}
        assert len(users) == await owner.fetchval("SELECT count(*) FROM users WHERE district_id = $1", northwind)
        assert await conn.fetchval("SELECT count(*) FROM users WHERE district_id = $1", riverside) == 0
        responses = await conn.fetchval("SELECT count(*) FROM responses WHERE district_id <> $1", northwind)
        assert responses == 0


async def test_without_the_setting_the_app_role_sees_no_district_row_at_all(db: DatabaseUrls) -> None:
    async with app_role(db) as conn:
        for table in DISTRICT_TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        async with conn.transaction():
            await conn.execute(SETTING, str(uuid.uuid4()))
            assert await conn.fetchval("SELECT count(*) FROM users") == 0
        async with conn.transaction():
            await conn.execute(SETTING, "")
            assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_the_setting_ends_with_its_transaction(db: DatabaseUrls, districts: dict[str, uuid.UUID]) -> None:
    async with app_role(db) as conn:
        async with conn.transaction():
            await conn.execute(SETTING, str(districts["northwind"]))
            assert await conn.fetchval("SELECT count(*) FROM users") > 0
        assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_the_app_role_cannot_write_another_districts_rows(
    db: DatabaseUrls, owner: Any, districts: dict[str, uuid.UUID]
) -> None:
    northwind, riverside = districts["northwind"], districts["riverside"]
    before = await owner.fetchval("SELECT count(*) FROM users WHERE district_id = $1 AND disabled", riverside)
    async with app_role(db) as conn, conn.transaction():
        await conn.execute(SETTING, str(northwind))
        assert await conn.execute("UPDATE users SET disabled = true WHERE district_id = $1", riverside) == "UPDATE 0"
        assert await conn.execute("DELETE FROM responses WHERE district_id = $1", riverside) == "DELETE 0"
        assert await conn.execute("UPDATE districts SET minimum_group_size = 20 WHERE id = $1", riverside) == "UPDATE 0"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO support_grants (district_id, id, ticket, expires_at) "
                "VALUES ($1, $2, 'X', now() + interval '1 day')",
                riverside,
                uuid.uuid4(),
            )
    assert await owner.fetchval("SELECT count(*) FROM users WHERE district_id = $1 AND disabled", riverside) == before


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_records SET decision = 'ALLOW'",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records",
        "UPDATE audit_entries_v1 SET decision = 'ALLOW'",
        "DELETE FROM audit_entries_v1",
        "TRUNCATE audit_entries_v1",
        "UPDATE audit_names SET name = 'Student.id'",
        "DELETE FROM audit_names",
        "DELETE FROM audit_heads",
    ],
)
async def test_the_app_role_cannot_rewrite_or_erase_the_audit_trail(
    db: DatabaseUrls, gql: Gql, owner: Any, districts: dict[str, uuid.UUID], statement: str
) -> None:
    await gql("teacher1@northwind.example", "INSTRUCTION", "{ me { staff { firstName } } }")
    before = await owner.fetchval("SELECT count(*) FROM audit_entries")
    assert before > 0
    async with app_role(db) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute(SETTING, str(districts["northwind"]))
                await conn.execute(statement)
    assert await owner.fetchval("SELECT count(*) FROM audit_entries") == before


@pytest.mark.parametrize("table", ["users", "responses", "audit_entries"])
async def test_the_policy_reads_its_setting_once_per_statement(
    db: DatabaseUrls, districts: dict[str, uuid.UUID], table: str
) -> None:
    async with app_role(db) as conn, conn.transaction():
        await conn.execute(SETTING, str(districts["northwind"]))
        plan = [r[0] for r in await conn.fetch(f"EXPLAIN (ANALYZE, VERBOSE, COSTS OFF) SELECT * FROM {table}")]
    text = "\n".join(plan)
    init_plans = [i for i, line in enumerate(plan) if line.strip().startswith("InitPlan")]
    assert init_plans, text
    # current_setting is computed in the InitPlan (run once: loops=1), and every
    # row is compared with the InitPlan's result, never with a fresh call.
    setting_lines = [i for i, line in enumerate(plan) if "current_setting" in line]
    assert setting_lines and all(i > init_plans[0] for i in setting_lines), text
    assert "loops=1" in plan[init_plans[0] + 1], text
    # PostgreSQL 17 and later name the InitPlan's result "(InitPlan 1).col1"; older ones "$0".
    assert "(InitPlan 1).col1" in text or "$0" in text, text


NIL = uuid.UUID(int=0)


async def test_a_district_users_request_runs_under_its_own_district_alone_not_the_nil_district(
    app: Any, gql: Gql, owner: Any, districts: dict[str, uuid.UUID]
) -> None:
    # An analyst's report writes its entry in the chain of no district (the nil district).
    analyst = await gql(
        "analyst@pledgeql.example",
        "REPORTING",
        "{ performanceReport(input: {scope: {allDistricts: true}}) { total { students } } }",
    )
    assert "errors" not in analyst, analyst
    assert await owner.fetchval("SELECT count(*) FROM audit_entries WHERE district_id = $1", NIL) > 0

    async def probe(context: Any) -> tuple[str, int]:
        setting = await context.db.fetchval("SELECT current_setting('pledgeql.district_ids', true)")
        nil_rows = await context.db.fetchval("SELECT count(*) FROM audit_entries WHERE district_id = $1", NIL)
        return setting, nil_rows

    async with inside_requests(app, probe) as seen:
        for user, purpose in (
            ("teacher1@northwind.example", "INSTRUCTION"),
            ("admin@northwind.example", "REPORTING"),
            ("student1@northwind.example", "STUDENT_LEARNING"),
        ):
            body = await gql(user, purpose, "{ me { role } }")
            assert "errors" not in body, body
    assert seen == [(str(districts["northwind"]), 0)] * 3


async def test_an_internal_users_request_keeps_the_nil_district_for_its_own_entries(
    app: Any, gql: Gql, districts: dict[str, uuid.UUID]
) -> None:
    async def probe(context: Any) -> str:
        setting: str = await context.db.fetchval("SELECT current_setting('pledgeql.district_ids', true)")
        return setting

    async with inside_requests(app, probe) as seen:
        body = await gql(
            "analyst@pledgeql.example",
            "REPORTING",
            "{ performanceReport(input: {scope: {allDistricts: true}}) { total { students } } }",
        )
        assert "errors" not in body, body
    assert seen and all(str(NIL) in s.split(",") for s in seen)
