"""A worker keeps each caller's standing (resolvers.principal.Standings), and a kept standing is never stale.

A query's compiled read skips the principal's statement when the worker holds
the caller's standing; its own statement returns the principal's generation
(migration 0020) and the connection's row-level security setting, and the
request is served again on a standing read anew unless both are the kept
standing's. So a change to a caller's relationships, role or account takes
effect at their very next request, in either direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from resolvers.principal import Standings
from server.db import connect
from tests.conftest import Gql, clock_at, error_codes
from tests.test_reports import PERFORMANCE
from tests.test_statement_count import counting

TEACHER = "teacher1@northwind.example"
STUDENT = "student1@northwind.example"
CLASS = "query($id: ID!) { class(id: $id) { id name students { id firstName } } }"


def principal_reads(statements: list[str]) -> int:
    return sum("pledgeql_principal(" in q for q in statements)


async def watched(app: Any, request: Awaitable[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """A request's body, and how many times it read the principal."""
    async with counting(app) as statements:
        body = await request
    return body, principal_reads(statements)


@pytest.fixture(scope="module")
async def ids(owner: Any) -> dict[str, Any]:
    teacher = await owner.fetchrow("SELECT district_id, id FROM users WHERE username = $1", TEACHER)
    return {
        "northwind": teacher["district_id"],
        "riverside": await owner.fetchval("SELECT id FROM districts WHERE name = 'Riverside Unified'"),
        "teacher": teacher["id"],
        "class": await owner.fetchval(
            "SELECT class_id FROM class_teachers WHERE teacher_id = $1 ORDER BY class_id LIMIT 1", teacher["id"]
        ),
        "student": await owner.fetchval("SELECT id FROM users WHERE username = $1", STUDENT),
    }


async def read_class(gql: Gql, class_id: Any, username: str = TEACHER) -> dict[str, Any]:
    return await gql(username, "INSTRUCTION", CLASS, {"id": str(class_id)})


async def fresh(app: Any, gql: Gql, class_id: Any) -> dict[str, Any]:
    """The class as a worker that kept no standing serves it."""
    app.state.pledgeql.endpoint.standings = Standings()
    return await read_class(gql, class_id)


async def test_a_callers_next_read_uses_the_kept_standing(gql: Gql, app: Any, ids: dict[str, Any]) -> None:
    first = await read_class(gql, ids["class"])
    assert "errors" not in first and first["data"]["class"]["students"], first
    assert await watched(app, read_class(gql, ids["class"])) == (first, 0)


async def test_a_teacher_removed_from_a_class_loses_it_at_the_next_request_and_regains_it(
    gql: Gql, app: Any, owner: Any, ids: dict[str, Any]
) -> None:
    kept = await read_class(gql, ids["class"])
    assert "errors" not in kept
    await owner.execute(
        "DELETE FROM class_teachers WHERE district_id = $1 AND class_id = $2 AND teacher_id = $3",
        ids["northwind"],
        ids["class"],
        ids["teacher"],
    )
    try:
        gone, reads = await watched(app, read_class(gql, ids["class"]))
        # Still a class of their school, but none of its students is theirs now.
        assert "errors" not in gone and gone["data"]["class"]["students"] == [], gone
        assert reads == 1  # the kept standing did not stand: read anew
        assert await fresh(app, gql, ids["class"]) == gone
    finally:
        await owner.execute(
            "INSERT INTO class_teachers (district_id, class_id, teacher_id) VALUES ($1, $2, $3)",
            ids["northwind"],
            ids["class"],
            ids["teacher"],
        )
    # The standing kept without the class does not stand either, once the class is theirs again.
    assert await read_class(gql, ids["class"]) == kept


async def test_a_disabled_account_is_refused_at_its_next_request(
    gql: Gql, app: Any, owner: Any, ids: dict[str, Any]
) -> None:
    assert "errors" not in await read_class(gql, ids["class"])
    await owner.execute("UPDATE users SET disabled = true WHERE id = $1", ids["teacher"])
    try:
        refused = await read_class(gql, ids["class"])
        assert error_codes(refused) == ["UNAUTHENTICATED"]
        assert refused.get("data") is None
        # The standing kept for the account is dropped: its next request reads nothing but the principal.
        async with counting(app) as statements:
            assert await read_class(gql, ids["class"]) == refused
        assert not any(q.startswith("SELECT json_build_object(") for q in statements), statements
    finally:
        await owner.execute("UPDATE users SET disabled = false WHERE id = $1", ids["teacher"])
    assert "errors" not in await read_class(gql, ids["class"])


async def test_a_purpose_the_district_withdraws_is_refused_at_the_next_request_and_restored(
    gql: Gql, app: Any, owner: Any, ids: dict[str, Any]
) -> None:
    query = "query($id: ID!) { class(id: $id) { id students { id firstName } } }"
    allowed = await gql(TEACHER, "REPORTING", query, {"id": str(ids["class"])})
    assert "errors" not in allowed, allowed
    before = await owner.fetchval("SELECT authorized_purposes FROM districts WHERE id = $1", ids["northwind"])
    await owner.execute(
        "UPDATE districts SET authorized_purposes = array_remove(authorized_purposes, 'REPORTING') WHERE id = $1",
        ids["northwind"],
    )
    try:
        refused = await gql(TEACHER, "REPORTING", query, {"id": str(ids["class"])})
        assert set(error_codes(refused)) == {"FORBIDDEN"}, refused
        assert all(s["firstName"] is None for s in refused["data"]["class"]["students"])
        endpoint = app.state.pledgeql.endpoint
        endpoint.standings = Standings()
        assert await gql(TEACHER, "REPORTING", query, {"id": str(ids["class"])}) == refused
    finally:
        await owner.execute("UPDATE districts SET authorized_purposes = $2 WHERE id = $1", ids["northwind"], before)
    # The standing kept with the refusal's settings does not stand once they change back.
    assert await gql(TEACHER, "REPORTING", query, {"id": str(ids["class"])}) == allowed


@contextlib.asynccontextmanager
async def sessions_set_to(app: Any, district_ids: str) -> AsyncIterator[None]:
    """Every connection a request gets carries ``district_ids`` as its session's setting,
    whatever the server last set on it."""
    endpoint = app.state.pledgeql.endpoint
    original = endpoint.acquire

    @contextlib.asynccontextmanager
    async def acquire(transaction: bool = True) -> AsyncIterator[Any]:
        async with original(transaction=transaction) as connection:
            await connection.execute(f"SELECT set_config('pledgeql.district_ids', '{district_ids}', false)")
            yield connection

    endpoint.acquire = acquire
    try:
        yield
    finally:
        endpoint.acquire = original


@pytest.mark.parametrize("setting", ["other", "both"])
async def test_a_connection_whose_setting_is_not_the_kept_one_is_served_anew(
    gql: Gql, app: Any, ids: dict[str, Any], setting: str
) -> None:
    kept = await read_class(gql, ids["class"])
    assert "errors" not in kept
    value = str(ids["riverside"]) if setting == "other" else f"{ids['northwind']},{ids['riverside']}"
    async with sessions_set_to(app, value):
        assert await watched(app, read_class(gql, ids["class"])) == (kept, 1)


async def test_a_students_classes_are_those_of_the_day_served(
    gql: Gql, app: Any, owner: Any, ids: dict[str, Any]
) -> None:
    day = dt.date(2026, 11, 2)
    later = await owner.fetchval(
        "SELECT c.id FROM classes c JOIN users u ON u.district_id = c.district_id AND u.school_id = c.school_id "
        "WHERE u.id = $1 AND NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.class_id = c.id AND e.student_id = u.id) "
        "ORDER BY c.id LIMIT 1",
        ids["student"],
    )
    assert later is not None
    await owner.execute(
        "INSERT INTO enrollments (district_id, class_id, student_id, begin_date) VALUES ($1, $2, $3, $4)",
        ids["northwind"],
        later,
        ids["student"],
        day + dt.timedelta(days=1),
    )
    query = "query { me { classes { id } } }"
    try:
        with clock_at(app, dt.datetime.combine(day, dt.time(23, 59), dt.UTC)):
            before = await gql(STUDENT, "STUDENT_LEARNING", query)
            assert await gql(STUDENT, "STUDENT_LEARNING", query) == before
        with clock_at(app, dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 1), dt.UTC)):
            after = await gql(STUDENT, "STUDENT_LEARNING", query)
        assert "errors" not in before and "errors" not in after, (before, after)
        classes = [c["id"] for c in before["data"]["me"]["classes"]]
        assert str(later) not in classes
        assert sorted([c["id"] for c in after["data"]["me"]["classes"]]) == sorted([*classes, str(later)])
    finally:
        await owner.execute("DELETE FROM enrollments WHERE class_id = $1 AND student_id = $2", later, ids["student"])


ADMIN = "admin@northwind.example"


def by_school(ids: dict[str, Any]) -> dict[str, Any]:
    return {"input": {"scope": {"districtId": str(ids["northwind"])}, "groupBy": ["SCHOOL"]}}


async def test_a_report_uses_the_kept_standing_and_a_changed_minimum_group_size_at_once(
    gql: Gql, app: Any, owner: Any, ids: dict[str, Any]
) -> None:
    first = await gql(ADMIN, "REPORTING", PERFORMANCE, by_school(ids))
    assert "errors" not in first, first
    assert await watched(app, gql(ADMIN, "REPORTING", PERFORMANCE, by_school(ids))) == (first, 0)
    k = first["data"]["performanceReport"]["minimumGroupSize"]
    await owner.execute("UPDATE districts SET minimum_group_size = $2 WHERE id = $1", ids["northwind"], k + 5)
    try:
        changed, reads = await watched(app, gql(ADMIN, "REPORTING", PERFORMANCE, by_school(ids)))
        assert changed["data"]["performanceReport"]["minimumGroupSize"] == k + 5, changed
        assert reads == 1
    finally:
        await owner.execute("UPDATE districts SET minimum_group_size = $2 WHERE id = $1", ids["northwind"], k)
    assert await gql(ADMIN, "REPORTING", PERFORMANCE, by_school(ids)) == first


async def test_a_report_for_a_disabled_account_is_refused_at_its_next_request(
    gql: Gql, owner: Any, ids: dict[str, Any]
) -> None:
    assert "errors" not in await gql(ADMIN, "REPORTING", PERFORMANCE, by_school(ids))
    await owner.execute("UPDATE users SET disabled = true WHERE username = $1", ADMIN)
    try:
        refused = await gql(ADMIN, "REPORTING", PERFORMANCE, by_school(ids))
        assert error_codes(refused) == ["UNAUTHENTICATED"] and refused.get("data") is None, refused
    finally:
        await owner.execute("UPDATE users SET disabled = false WHERE username = $1", ADMIN)


UPDATE = "mutation($input: DistrictSettingsInput!) { updateDistrictSettings(input: $input) { collectDevice } }"


async def test_a_watched_write_in_one_district_holds_another_districts_only_while_it_commits(
    gql: Gql, db: Any, ids: dict[str, Any]
) -> None:
    """The generation moves at commit: a long transaction changing one district's roster does not make
    another district's settings change wait for it."""
    other = await connect(db.owner)
    try:
        async with other.transaction():
            await other.execute("UPDATE enrollments SET end_date = end_date WHERE district_id = $1", ids["riverside"])
            changed = await asyncio.wait_for(gql(ADMIN, "REPORTING", UPDATE, {"input": {"minimumGroupSize": 7}}), 10)
            assert changed.get("data") == {"updateDistrictSettings": {"collectDevice": True}}, changed
            raise _RolledBack
    except _RolledBack:
        pass
    finally:
        await other.close()
    restored = await gql(ADMIN, "REPORTING", UPDATE, {"input": {"minimumGroupSize": 10}})
    assert "errors" not in restored, restored


class _RolledBack(Exception):
    pass
