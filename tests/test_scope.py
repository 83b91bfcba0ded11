"""Row scope over HTTP: rows outside the caller's relationship do not exist for them.

For every role: a lookup of an out-of-scope id answers byte for byte what a
lookup of an id that does not exist answers; lists leave the rows out and
counts do not include them. The expected rows are computed here with SQL over
the owner connection, independently of resolvers/scope.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Gql, error_codes

TEACHER = "teacher1@northwind.example"
PRINCIPAL = "principal1@northwind.example"
ADMIN = "admin@northwind.example"
STUDENT = "student1@northwind.example"
GUARDIAN = "guardian1@northwind.example"
ANALYST = "analyst@pledgeql.example"
SUPPORT = "support@pledgeql.example"

LOOKUP = "query($id: ID!) {{ {root}(id: $id) {{ id }} }}"
STUDENT_LOOKUP = "query($id: ID!) { student(id: $id) { id firstName } }"
LIST = "query($after: String) { students(first: 500, after: $after) { totalCount nodes { id } } }"
NOWHERE = str(uuid.UUID("00000000-0000-4000-8000-00000000dead"))

ACTIVE = "e.begin_date <= current_date AND (e.end_date IS NULL OR e.end_date >= current_date)"


@pytest.fixture(scope="module")
def raw(client: httpx.AsyncClient, token_for: Callable[..., str]) -> Callable[..., Any]:
    """The raw HTTP response of one GraphQL request, to compare bodies byte for byte."""

    async def run(username: str, purpose: str, query: str, variables: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token_for(username)}", "X-Purpose": purpose}
        return await client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)

    return run


@pytest.fixture(scope="module")
async def ids(owner: Any) -> dict[str, Any]:
    """Demo rows the tests aim at, found with SQL."""
    northwind = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    riverside = await owner.fetchval("SELECT id FROM districts WHERE name = 'Riverside Unified'")
    teacher = await owner.fetchval("SELECT id FROM users WHERE username = $1", TEACHER)
    student = await owner.fetchval("SELECT id FROM users WHERE username = $1", STUDENT)
    school1 = await owner.fetchval("SELECT school_id FROM users WHERE username = $1", PRINCIPAL)
    other_school = await owner.fetchval(
        "SELECT id FROM schools WHERE district_id = $1 AND id <> $2 ORDER BY id LIMIT 1", northwind, school1
    )
    return {
        "northwind": northwind,
        "riverside": riverside,
        "teacher": teacher,
        "student": student,
        "student2": await owner.fetchval("SELECT id FROM users WHERE username = 'student2@northwind.example'"),
        "school1": school1,
        "other_school": other_school,
        "other_school_student": await owner.fetchval(
            "SELECT id FROM users WHERE role = 'STUDENT' AND school_id = $1 ORDER BY id LIMIT 1", other_school
        ),
        "riverside_student": await owner.fetchval("SELECT id FROM users WHERE username = 'student1@riverside.example'"),
        "classmate": await owner.fetchval(
            f"SELECT e2.student_id FROM enrollments e JOIN enrollments e2 ON e2.class_id = e.class_id "
            f"AND e2.student_id <> e.student_id WHERE e.student_id = $1 AND {ACTIVE} ORDER BY 1 LIMIT 1",
            student,
        ),
        "student2_class": await owner.fetchval(
            "SELECT class_id FROM enrollments WHERE student_id = (SELECT id FROM users "
            "WHERE username = 'student2@northwind.example')"
        ),
        "own_class": await owner.fetchval(
            "SELECT e.class_id FROM enrollments e JOIN class_teachers ct ON ct.class_id = e.class_id "
            "WHERE e.student_id = $1 AND ct.teacher_id = $2 LIMIT 1",
            student,
            teacher,
        ),
    }


async def expected(owner: Any, sql: str, *args: Any) -> set[str]:
    return {str(r[0]) for r in await owner.fetch(sql, *args)}


async def listed(gql: Gql, username: str, purpose: str, query: str = LIST, **variables: Any) -> tuple[set[str], int]:
    """Every student id the caller can list (following pages) and the reported total."""
    seen: list[str] = []
    total = None
    after = None
    while True:
        body = await gql(username, purpose, query, {**variables, "after": after})
        assert "errors" not in body, body
        page = next(iter(body["data"].values()))
        page = page if "totalCount" in page else next(iter(page.values()))
        total = page["totalCount"] if total is None else total
        assert page["totalCount"] == total
        seen.extend(n["id"] for n in page["nodes"])
        after = page.get("pageInfo", {}).get("endCursor") if page.get("pageInfo", {}).get("hasNextPage") else None
        if after is None:
            break
    assert len(seen) == len(set(seen)), "a student was listed twice"
    return set(seen), total


async def assert_not_found_like_nowhere(
    raw: Callable[..., Any], username: str, purpose: str, target: Any, root: str = "student"
) -> None:
    query = STUDENT_LOOKUP if root == "student" else LOOKUP.format(root=root)
    hidden = await raw(username, purpose, query, {"id": str(target)})
    missing = await raw(username, purpose, query, {"id": NOWHERE})
    assert hidden.status_code == missing.status_code == 200
    assert hidden.content == missing.content
    body = hidden.json()
    assert body["data"] == {root: None}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]


# ------------------------------------------------------------------ teacher


@pytest.mark.parametrize("target", ["student2", "other_school_student", "riverside_student"])
@pytest.mark.parametrize("purpose", ["INSTRUCTION", "REPORTING"])
async def test_teacher_cannot_read_students_outside_their_classes(
    raw: Callable[..., Any], gql: Gql, ids: dict[str, Any], target: str, purpose: str
) -> None:
    await assert_not_found_like_nowhere(raw, TEACHER, purpose, ids[target])
    control = await gql(TEACHER, purpose, STUDENT_LOOKUP, {"id": str(ids["student"])})
    assert control["data"]["student"]["id"] == str(ids["student"])


async def test_teacher_lists_and_counts_exactly_the_students_of_their_classes(
    gql: Gql, owner: Any, ids: dict[str, Any]
) -> None:
    want = await expected(
        owner,
        f"SELECT DISTINCT e.student_id FROM enrollments e JOIN class_teachers ct ON ct.district_id = e.district_id "
        f"AND ct.class_id = e.class_id WHERE ct.teacher_id = $1 AND {ACTIVE}",
        ids["teacher"],
    )
    assert str(ids["student2"]) not in want and str(ids["student"]) in want
    seen, total = await listed(gql, TEACHER, "INSTRUCTION")
    assert seen == want and total == len(want)

    # Small pages: the same rows, the same total on every page, each row once.
    paged_query = (
        "query($after: String) { students(first: 7, after: $after) "
        "{ totalCount nodes { id } pageInfo { hasNextPage endCursor } } }"
    )
    paged, paged_total = await listed(gql, TEACHER, "INSTRUCTION", paged_query)
    assert paged == want and paged_total == len(want)


async def test_teacher_filters_by_another_class_or_school_keep_only_the_teachers_students(
    gql: Gql, owner: Any, ids: dict[str, Any]
) -> None:
    mine = await expected(
        owner,
        f"SELECT DISTINCT e.student_id FROM enrollments e JOIN class_teachers ct ON ct.district_id = e.district_id "
        f"AND ct.class_id = e.class_id WHERE ct.teacher_id = $1 AND {ACTIVE}",
        ids["teacher"],
    )
    in_class = await expected(
        owner, f"SELECT e.student_id FROM enrollments e WHERE e.class_id = $1 AND {ACTIVE}", ids["student2_class"]
    )
    in_school = await expected(owner, "SELECT id FROM users WHERE school_id = $1", ids["other_school"])
    # Some of the other class's students also sit in one of the teacher's classes: only they show.
    assert in_class - mine and str(ids["student2"]) in in_class
    body = await gql(
        TEACHER,
        "INSTRUCTION",
        "query($c: ID!, $s: ID!) { byClass: students(classId: $c) { totalCount nodes { id } } "
        "bySchool: students(schoolId: $s) { totalCount nodes { id } } "
        "class(id: $c) { id students { id } teachers { id } } "
        "school(id: $s) { id students { totalCount nodes { id } } } }",
        {"c": str(ids["student2_class"]), "s": str(ids["other_school"])},
    )
    assert "errors" not in body, body
    data = body["data"]
    want = in_class & mine
    assert {n["id"] for n in data["byClass"]["nodes"]} == want
    assert data["byClass"]["totalCount"] == len(want)
    # Classes and schools carry no personal data and are visible in the district; their students are not.
    assert {n["id"] for n in data["class"]["students"]} == want
    assert data["bySchool"] == {"totalCount": len(in_school & mine), "nodes": []} == data["school"]["students"]
    # Its teachers: only those who also teach one of the teacher's classes (the teacher's own class
    # answers for its students and teachers at once: schema/compiled.py, RowScope.students_of_class).
    co_teachers = await expected(
        owner,
        "SELECT ct.teacher_id FROM class_teachers ct WHERE ct.class_id IN "
        "(SELECT class_id FROM class_teachers WHERE teacher_id = $1)",
        ids["teacher"],
    )
    its_teachers = await expected(
        owner, "SELECT teacher_id FROM class_teachers WHERE class_id = $1", ids["student2_class"]
    )
    assert str(ids["teacher"]) not in its_teachers
    assert {n["id"] for n in data["class"]["teachers"]} == its_teachers & co_teachers
    # A class of the district taught by someone who teaches none of the teacher's classes.
    stranger_class = await owner.fetchval(
        "SELECT ct.class_id FROM class_teachers ct JOIN users u ON u.id = $1 AND u.district_id = ct.district_id "
        "WHERE ct.teacher_id <> ALL($2::uuid[]) ORDER BY ct.class_id LIMIT 1",
        ids["teacher"],
        [uuid.UUID(t) for t in co_teachers],
    )
    strangers = await expected(owner, "SELECT teacher_id FROM class_teachers WHERE class_id = $1", stranger_class)
    assert strangers - co_teachers
    body = await gql(
        TEACHER, "INSTRUCTION", "query($c: ID!) { class(id: $c) { teachers { id } } }", {"c": str(stranger_class)}
    )
    assert {n["id"] for n in body["data"]["class"]["teachers"]} == strangers & co_teachers

    # One of the teacher's own classes: every student enrolled today and every teacher.
    own_class = await owner.fetchval(
        "SELECT class_id FROM class_teachers WHERE teacher_id = $1 ORDER BY class_id LIMIT 1", ids["teacher"]
    )
    body = await gql(
        TEACHER,
        "INSTRUCTION",
        "query($c: ID!) { class(id: $c) { students { id } teachers { id } } }",
        {"c": str(own_class)},
    )
    assert "errors" not in body, body
    enrolled = await expected(
        owner, f"SELECT e.student_id FROM enrollments e WHERE e.class_id = $1 AND {ACTIVE}", own_class
    )
    teaching = await expected(owner, "SELECT teacher_id FROM class_teachers WHERE class_id = $1", own_class)
    assert enrolled and {n["id"] for n in body["data"]["class"]["students"]} == enrolled
    assert {n["id"] for n in body["data"]["class"]["teachers"]} == teaching


# ----------------------------------------------------------- administrators


async def test_school_admin_sees_only_their_schools_students(
    raw: Callable[..., Any], gql: Gql, owner: Any, ids: dict[str, Any]
) -> None:
    await assert_not_found_like_nowhere(raw, PRINCIPAL, "REPORTING", ids["other_school_student"])
    await assert_not_found_like_nowhere(raw, PRINCIPAL, "REPORTING", ids["riverside_student"])
    want = await expected(owner, "SELECT id FROM users WHERE role = 'STUDENT' AND school_id = $1", ids["school1"])
    seen, total = await listed(gql, PRINCIPAL, "INSTRUCTION")
    assert seen == want and total == len(want)


async def test_district_admin_sees_only_their_districts_students(
    raw: Callable[..., Any], gql: Gql, owner: Any, ids: dict[str, Any]
) -> None:
    await assert_not_found_like_nowhere(raw, ADMIN, "RECORD_ACCESS", ids["riverside_student"])
    want = await expected(owner, "SELECT id FROM users WHERE role = 'STUDENT' AND district_id = $1", ids["northwind"])
    seen, total = await listed(gql, ADMIN, "REPORTING")
    assert seen == want and total == len(want)


@pytest.mark.parametrize("purpose", ["PERSONALIZATION", "COMMUNICATION"])
async def test_staff_purposes_without_student_scope_reach_no_student(
    raw: Callable[..., Any], gql: Gql, ids: dict[str, Any], purpose: str
) -> None:
    for username in (TEACHER, PRINCIPAL, ADMIN):
        await assert_not_found_like_nowhere(raw, username, purpose, ids["student"])
        seen, total = await listed(gql, username, purpose)
        assert seen == set() and total == 0


# ----------------------------------------------------------- families


async def test_guardian_cannot_read_a_student_who_is_not_their_child(
    raw: Callable[..., Any], gql: Gql, owner: Any, ids: dict[str, Any]
) -> None:
    await assert_not_found_like_nowhere(raw, GUARDIAN, "REPORTING", ids["student2"])
    await assert_not_found_like_nowhere(raw, GUARDIAN, "REPORTING", ids["classmate"])
    children = await expected(
        owner,
        "SELECT gl.student_id FROM guardian_links gl JOIN users g ON g.id = gl.guardian_id WHERE g.username = $1",
        GUARDIAN,
    )
    assert children == {str(ids["student"])}
    seen, total = await listed(gql, GUARDIAN, "REPORTING")
    assert seen == children and total == 1


async def test_student_cannot_read_a_classmate_and_lists_only_themselves(
    raw: Callable[..., Any], gql: Gql, ids: dict[str, Any]
) -> None:
    assert ids["classmate"] is not None
    await assert_not_found_like_nowhere(raw, STUDENT, "STUDENT_LEARNING", ids["classmate"])
    await assert_not_found_like_nowhere(raw, STUDENT, "STUDENT_LEARNING", ids["student2"])
    seen, total = await listed(gql, STUDENT, "STUDENT_LEARNING")
    assert seen == {str(ids["student"])} and total == 1
    body = await gql(
        STUDENT,
        "STUDENT_LEARNING",
        "query($c: ID!) { class(id: $c) { students { id } } }",
        {"c": str(ids["own_class"])},
    )
    assert body["data"]["class"]["students"] == [{"id": str(ids["student"])}]


# ------------------------------------------------------------------ support


@contextlib.contextmanager
def clock_at(app: Any, moment: dt.datetime) -> Iterator[None]:
    """Run requests as if at ``moment`` (the request clock decides grant expiry and enrollment dates)."""
    endpoint = app.state.pledgeql.endpoint
    before = endpoint.clock
    endpoint.clock = lambda: moment
    try:
        yield
    finally:
        endpoint.clock = before


async def open_grant(gql: Gql, expires_at: dt.datetime, user_ids: list[Any] | None = None) -> str:
    body = await gql(
        ADMIN,
        "REPORTING",
        "mutation($input: SupportGrantInput!) { openSupportGrant(input: $input) { id } }",
        {
            "input": {
                "ticket": "SCOPE-1",
                "expiresAt": expires_at.isoformat(),
                "userIds": [str(u) for u in user_ids] if user_ids is not None else None,
            }
        },
    )
    assert "errors" not in body, body
    grant_id: str = body["data"]["openSupportGrant"]["id"]
    return grant_id


async def revoke_grant(gql: Gql, grant_id: str) -> None:
    body = await gql(ADMIN, "REPORTING", "mutation($id: ID!) { revokeSupportGrant(id: $id) { id } }", {"id": grant_id})
    assert "errors" not in body, body


async def test_support_sees_nothing_without_a_grant(raw: Callable[..., Any], gql: Gql, ids: dict[str, Any]) -> None:
    await assert_not_found_like_nowhere(raw, SUPPORT, "SUPPORT", ids["student"])
    await assert_not_found_like_nowhere(raw, SUPPORT, "SUPPORT", ids["own_class"], root="class")
    seen, total = await listed(gql, SUPPORT, "SUPPORT")
    assert seen == set() and total == 0


async def test_support_sees_a_district_exactly_until_its_grant_expires(
    app: Any, raw: Callable[..., Any], gql: Gql, owner: Any, ids: dict[str, Any]
) -> None:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    grant = await open_grant(gql, expires)
    try:
        want = await expected(
            owner, "SELECT id FROM users WHERE role = 'STUDENT' AND district_id = $1", ids["northwind"]
        )
        seen, total = await listed(gql, SUPPORT, "SUPPORT")
        assert seen == want and total == len(want)
        await assert_not_found_like_nowhere(raw, SUPPORT, "SUPPORT", ids["riverside_student"])

        with clock_at(app, expires - dt.timedelta(seconds=1)):
            found = await gql(SUPPORT, "SUPPORT", STUDENT_LOOKUP, {"id": str(ids["student"])})
            assert found["data"]["student"]["firstName"]
        with clock_at(app, expires):
            await assert_not_found_like_nowhere(raw, SUPPORT, "SUPPORT", ids["student"])
            seen, total = await listed(gql, SUPPORT, "SUPPORT")
            assert seen == set() and total == 0
    finally:
        await revoke_grant(gql, grant)


async def test_support_sees_nothing_once_the_grant_is_revoked(
    raw: Callable[..., Any], gql: Gql, ids: dict[str, Any]
) -> None:
    grant = await open_grant(gql, dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    found = await gql(SUPPORT, "SUPPORT", STUDENT_LOOKUP, {"id": str(ids["student"])})
    assert found["data"]["student"]["id"] == str(ids["student"])
    await revoke_grant(gql, grant)
    await assert_not_found_like_nowhere(raw, SUPPORT, "SUPPORT", ids["student"])
    seen, total = await listed(gql, SUPPORT, "SUPPORT")
    assert seen == set() and total == 0


async def test_a_grant_narrowed_to_users_shows_only_those_users(
    raw: Callable[..., Any], gql: Gql, ids: dict[str, Any]
) -> None:
    grant = await open_grant(gql, dt.datetime.now(dt.UTC) + dt.timedelta(days=1), [ids["student"], ids["teacher"]])
    try:
        seen, total = await listed(gql, SUPPORT, "SUPPORT")
        assert seen == {str(ids["student"])} and total == 1
        await assert_not_found_like_nowhere(raw, SUPPORT, "SUPPORT", ids["student2"])
        teachers = await gql(
            SUPPORT, "SUPPORT", "query($c: ID!) { class(id: $c) { teachers { id } } }", {"c": str(ids["own_class"])}
        )
        assert {t["id"] for t in teachers["data"]["class"]["teachers"]} == {str(ids["teacher"])}
    finally:
        await revoke_grant(gql, grant)


# ------------------------------------------------------------------ analyst

ROW_ROOTS = ["district", "school", "class", "student", "assignment"]


@pytest.mark.parametrize("root", ROW_ROOTS)
@pytest.mark.parametrize("purpose", ["PRODUCT_ANALYTICS", "REPORTING"])
async def test_analyst_reaches_no_row_through_any_root(
    raw: Callable[..., Any], owner: Any, ids: dict[str, Any], purpose: str, root: str
) -> None:
    table = {"district": "districts", "school": "schools", "class": "classes", "assignment": "assignments"}
    for district in (ids["northwind"], ids["riverside"]):
        if root == "student":
            target = await owner.fetchval(
                "SELECT id FROM users WHERE role = 'STUDENT' AND district_id = $1 LIMIT 1", district
            )
        elif root == "district":
            target = district
        else:
            target = await owner.fetchval(f"SELECT id FROM {table[root]} WHERE district_id = $1 LIMIT 1", district)
        await assert_not_found_like_nowhere(raw, ANALYST, purpose, target, root=root)


@pytest.mark.parametrize("purpose", ["PRODUCT_ANALYTICS", "REPORTING"])
async def test_analyst_lists_nobody_and_has_no_district(gql: Gql, purpose: str) -> None:
    body = await gql(
        ANALYST,
        purpose,
        "{ me { district { id } staff { id } student { id } guardian { id } } "
        "students(first: 500) { totalCount nodes { id } } }",
    )
    assert "errors" not in body, body
    assert body["data"]["students"] == {"totalCount": 0, "nodes": []}
    assert body["data"]["me"] == {"district": None, "staff": None, "student": None, "guardian": None}
    grants = await gql(ANALYST, purpose, "{ supportGrants { id } }")
    assert error_codes(grants) == ["FORBIDDEN"]


@pytest.mark.parametrize("purpose", ["PRODUCT_ANALYTICS", "REPORTING"])
async def test_analyst_cannot_search_students_by_name(gql: Gql, purpose: str) -> None:
    body = await gql(ANALYST, purpose, '{ students(search: "a") { totalCount } }')
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {
        "code": "FORBIDDEN",
        "category": "DIRECTORY",
        "purpose": purpose,
        "reason": "PURPOSE_NOT_ALLOWED_FOR_CATEGORY",
    }


async def test_support_searches_names_only_within_its_grant(gql: Gql, owner: Any, ids: dict[str, Any]) -> None:
    search = '{ students(search: "an", first: 500) { totalCount nodes { id } } }'
    without = await gql(SUPPORT, "SUPPORT", search)
    assert "errors" not in without, without
    assert without["data"]["students"] == {"totalCount": 0, "nodes": []}

    grant = await open_grant(gql, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    try:
        body = await gql(SUPPORT, "SUPPORT", search)
        assert "errors" not in body, body
        want = await expected(
            owner,
            "SELECT id FROM users WHERE role = 'STUDENT' AND district_id = $1 AND (first_name ILIKE '%an%' "
            "OR last_name ILIKE '%an%' OR preferred_name ILIKE '%an%' OR username ILIKE '%an%')",
            ids["northwind"],
        )
        assert want
        assert {n["id"] for n in body["data"]["students"]["nodes"]} == want
        assert body["data"]["students"]["totalCount"] == len(want)
    finally:
        await revoke_grant(gql, grant)


async def test_a_narrowed_grant_names_users_of_its_own_district_only(gql: Gql, owner: Any, ids: dict[str, Any]) -> None:
    # A Riverside row that reuses the id of a Northwind student (ids are unique per district only).
    school = await owner.fetchval("SELECT id FROM schools WHERE district_id = $1 LIMIT 1", ids["riverside"])
    await owner.execute(
        "INSERT INTO users (district_id, id, role, username, school_id, first_name) "
        "VALUES ($1, $2, 'STUDENT', 'twin@riverside.example', $3, 'Twin')",
        ids["riverside"],
        ids["student"],
        school,
    )
    grants = []
    try:
        grants.append(await open_grant(gql, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), [ids["student"]]))
        body = await gql(
            "admin@riverside.example",
            "REPORTING",
            "mutation($i: SupportGrantInput!) { openSupportGrant(input: $i) { id } }",
            {
                "i": {
                    "ticket": "SCOPE-R",
                    "expiresAt": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat(),
                    "userIds": [str(ids["riverside_student"])],
                }
            },
        )
        assert "errors" not in body, body
        riverside_grant = body["data"]["openSupportGrant"]["id"]

        listing = await gql(SUPPORT, "SUPPORT", "{ students(first: 500) { totalCount nodes { id firstName } } }")
        assert "errors" not in listing, listing
        nodes = listing["data"]["students"]["nodes"]
        assert sorted(n["id"] for n in nodes) == sorted([str(ids["student"]), str(ids["riverside_student"])])
        assert "Twin" not in {n["firstName"] for n in nodes}
        assert listing["data"]["students"]["totalCount"] == 2
    finally:
        for grant in grants:
            await revoke_grant(gql, grant)
        await owner.execute(
            "UPDATE support_grants SET revoked_at = now() WHERE district_id = $1 AND revoked_at IS NULL",
            ids["riverside"],
        )
        await owner.execute("DELETE FROM users WHERE district_id = $1 AND id = $2", ids["riverside"], ids["student"])
    assert riverside_grant
