"""The demo data set: named accounts, invariants, idempotence, determinism, scale."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from server.commands.migrate import migrate
from server.commands.seed import NAMESPACE, SeedSummary, demo_id, seed_demo
from server.db import DatabaseUrls, connect, ensure_database, server_urls
from server.settings import Settings

# ---------------------------------------------------------------- fixtures
# Self-contained for now: its own embedded server and fresh databases. To use
# the shared conftest server instead, make ``seed_server`` return ``server``.


@pytest.fixture(scope="module")
def seed_server(tmp_path_factory: pytest.TempPathFactory) -> DatabaseUrls:
    settings = dataclasses.replace(Settings.from_env(), data_dir=tmp_path_factory.mktemp("seedpg"))
    return server_urls(settings)


async def fresh_database(server: DatabaseUrls, name: str) -> DatabaseUrls:
    """An empty, migrated database called ``name`` (dropped first if it exists)."""
    admin = await connect(server.with_database("postgres").owner)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    urls = server.with_database(name)
    await ensure_database(urls)
    await migrate(urls)
    return urls


@pytest_asyncio.fixture(scope="module")
async def seeded(seed_server: DatabaseUrls) -> tuple[DatabaseUrls, SeedSummary]:
    urls = await fresh_database(seed_server, "seedtest")
    summary = await seed_demo(urls.owner)
    return urls, summary


@pytest_asyncio.fixture(scope="module")
async def conn(seeded: tuple[DatabaseUrls, SeedSummary]) -> AsyncIterator[Any]:
    connection = await connect(seeded[0].owner)
    yield connection
    await connection.close()


# ------------------------------------------------------------------ helpers

SLUGS = ("northwind", "riverside")
SEEDED_TABLES = (
    "districts",
    "platform_users",
    "schools",
    "users",
    "guardian_links",
    "classes",
    "class_teachers",
    "enrollments",
    "assessments",
    "items",
    "assignments",
    "responses",
    "activity_events",
    "device_sessions",
    "consents",
)


async def table_counts(connection: Any) -> dict[str, int]:
    return {t: await connection.fetchval(f"SELECT count(*) FROM {t}") for t in SEEDED_TABLES}


async def table_digests(connection: Any) -> dict[str, str]:
    return {
        t: await connection.fetchval(
            f"SELECT md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '')) FROM {t} r"
        )
        for t in SEEDED_TABLES
    }


async def check_named_accounts(connection: Any) -> None:
    """API.md section 6: the accounts that tests and the README rely on."""
    rows = await connection.fetch(
        "SELECT username, role FROM users UNION ALL SELECT username, role FROM platform_users"
    )
    roles = {r["username"]: r["role"] for r in rows}
    assert roles["analyst@pledgeql.example"] == "ANALYST"
    assert roles["support@pledgeql.example"] == "SUPPORT"
    for slug in SLUGS:
        assert roles[f"admin@{slug}.example"] == "DISTRICT_ADMIN"
        assert roles[f"principal1@{slug}.example"] == "SCHOOL_ADMIN"
        assert roles[f"principal2@{slug}.example"] == "SCHOOL_ADMIN"
        assert roles[f"teacher1@{slug}.example"] == "TEACHER"
        assert roles[f"teacher2@{slug}.example"] == "TEACHER"
        assert roles[f"student1@{slug}.example"] == "STUDENT"
        assert roles[f"student2@{slug}.example"] == "STUDENT"
        assert roles[f"guardian1@{slug}.example"] == "GUARDIAN"

        def user(name: str, slug: str = slug) -> str:
            return f"(SELECT id FROM users WHERE username = '{name}@{slug}.example')"

        first_school = await connection.fetchval(f"SELECT school_id FROM users WHERE id = {user('principal1')}")
        assert first_school == demo_id("school", slug, "1")
        assert await connection.fetchval(f"SELECT school_id FROM users WHERE id = {user('admin')}") is None
        for name in ("teacher1", "teacher2", "student1", "student2"):
            school = await connection.fetchval(f"SELECT school_id FROM users WHERE id = {user(name)}")
            assert school == first_school, name

        teacher1_classes = f"SELECT class_id FROM class_teachers WHERE teacher_id = {user('teacher1')}"
        active = "e.begin_date <= current_date AND (e.end_date IS NULL OR e.end_date >= current_date)"
        # student1: actively enrolled in a class teacher1 teaches
        assert await connection.fetchval(
            f"SELECT count(*) FROM enrollments e WHERE e.student_id = {user('student1')} "
            f"AND {active} AND e.class_id IN ({teacher1_classes})"
        )
        # student2: in classes, but none of teacher1's
        assert await connection.fetchval(
            f"SELECT count(*) FROM enrollments e WHERE e.student_id = {user('student2')} AND {active}"
        )
        assert not await connection.fetchval(
            f"SELECT count(*) FROM enrollments e WHERE e.student_id = {user('student2')} "
            f"AND e.class_id IN ({teacher1_classes})"
        )
        # guardian1: student1's guardian, and nobody else's
        children = await connection.fetch(
            f"SELECT student_id FROM guardian_links WHERE guardian_id = {user('guardian1')}"
        )
        student1 = await connection.fetchval(f"SELECT {user('student1')}")
        assert [r["student_id"] for r in children] == [student1]
        # teacher1 and teacher2 co-teach a class
        assert await connection.fetchval(
            f"SELECT count(*) FROM class_teachers a JOIN class_teachers b USING (district_id, class_id) "
            f"WHERE a.teacher_id = {user('teacher1')} AND b.teacher_id = {user('teacher2')}"
        )


async def check_structure(connection: Any) -> None:
    """Every student has classes, guardians, responses, activity and devices."""
    worst = await connection.fetchrow(
        """
        SELECT
          min((SELECT count(*) FROM enrollments e WHERE e.district_id = u.district_id
               AND e.student_id = u.id AND e.begin_date <= current_date AND e.end_date IS NULL)) AS classes,
          min((SELECT count(*) FROM guardian_links g WHERE g.district_id = u.district_id
               AND g.student_id = u.id)) AS guardians,
          min((SELECT count(*) FROM responses r WHERE r.district_id = u.district_id
               AND r.student_id = u.id)) AS responses,
          min((SELECT count(*) FROM activity_events a WHERE a.district_id = u.district_id
               AND a.student_id = u.id)) AS activity,
          min((SELECT count(*) FROM device_sessions s WHERE s.district_id = u.district_id
               AND s.student_id = u.id)) AS devices,
          max((SELECT count(*) FROM consents c WHERE c.district_id = u.district_id
               AND c.student_id = u.id)) AS consents_max,
          min((SELECT count(*) FROM consents c WHERE c.district_id = u.district_id
               AND c.student_id = u.id)) AS consents_min
        FROM users u WHERE u.role = 'STUDENT'
        """
    )
    assert worst["classes"] >= 1
    assert worst["guardians"] >= 1
    assert worst["responses"] >= 10
    assert worst["activity"] >= 1
    assert worst["devices"] >= 1
    assert worst["consents_min"] == worst["consents_max"] == 1

    # Each district: at least 2 schools; each school an admin, 2 teachers and
    # 3 classes of at least 20 students; every class a teacher and 2 assignments.
    for slug in SLUGS:
        schools = await connection.fetch(
            """
            SELECT s.id,
              (SELECT count(*) FROM users u WHERE u.district_id = s.district_id
                 AND u.school_id = s.id AND u.role = 'SCHOOL_ADMIN') AS admins,
              (SELECT count(*) FROM users u WHERE u.district_id = s.district_id
                 AND u.school_id = s.id AND u.role = 'TEACHER') AS teachers,
              (SELECT count(*) FROM classes c WHERE c.district_id = s.district_id
                 AND c.school_id = s.id
                 AND (SELECT count(*) FROM enrollments e WHERE e.district_id = c.district_id
                        AND e.class_id = c.id) >= 20) AS full_classes
            FROM schools s WHERE s.district_id = $1
            """,
            demo_id("district", slug),
        )
        assert len(schools) >= 2
        for school in schools:
            assert school["admins"] >= 1
            assert school["teachers"] >= 2
            assert school["full_classes"] >= 3
    assert not await connection.fetchval(
        "SELECT count(*) FROM classes c WHERE NOT EXISTS "
        "(SELECT 1 FROM class_teachers t WHERE t.district_id = c.district_id AND t.class_id = c.id)"
    )
    assert not await connection.fetchval(
        "SELECT count(*) FROM classes c WHERE (SELECT count(*) FROM assignments a "
        "JOIN assessments s ON s.id = a.assessment_id AND s.subject = c.subject "
        "WHERE a.district_id = c.district_id AND a.class_id = c.id) < 2"
    )
    # a student's classes are in the student's school
    assert not await connection.fetchval(
        "SELECT count(*) FROM enrollments e JOIN users u ON u.district_id = e.district_id "
        "AND u.id = e.student_id JOIN classes c ON c.district_id = e.district_id AND c.id = e.class_id "
        "WHERE c.school_id IS DISTINCT FROM u.school_id"
    )


async def check_foreign_keys(connection: Any) -> None:
    """Every foreign key holds (the seed may load with the per-row checks off)."""
    constraints = await connection.fetch(
        """
        SELECT c.conname, c.conrelid::regclass::text AS child, c.confrelid::regclass::text AS parent,
               array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                     ORDER BY k.i) AS child_cols,
               array(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                     ORDER BY k.i) AS parent_cols
        FROM pg_constraint c WHERE c.contype = 'f'
        """
    )
    assert constraints
    for fk in constraints:
        joined = " AND ".join(f"p.{pc} = c.{cc}" for cc, pc in zip(fk["child_cols"], fk["parent_cols"], strict=True))
        present = " AND ".join(f"c.{cc} IS NOT NULL" for cc in fk["child_cols"])
        dangling = await connection.fetchval(
            f"SELECT count(*) FROM {fk['child']} c WHERE {present} "
            f"AND NOT EXISTS (SELECT 1 FROM {fk['parent']} p WHERE {joined})"
        )
        assert dangling == 0, fk["conname"]


# -------------------------------------------------------------------- tests


def test_demo_id_is_uuid5() -> None:
    for parts in [("district", "northwind"), ("response", "riverside", "12", "3"), ("",)]:
        made = demo_id(*parts)
        expected = uuid.uuid5(NAMESPACE, "/".join(parts))
        assert made == expected
        assert str(made) == str(expected)
        assert hash(made) == hash(expected)
        assert made.version == 5
    assert demo_id("district", "northwind") != demo_id("district", "riverside")


async def test_summary(seeded: tuple[DatabaseUrls, SeedSummary], conn: Any) -> None:
    summary = seeded[1]
    assert summary.created
    assert summary.districts == 2
    assert summary.schools == 4
    assert summary.students == 264
    assert summary.staff == 14  # per district: admin, 2 principals, 4 teachers
    assert summary.guardians >= summary.students // 2
    assert summary.responses == 264 * 30
    assert summary.activity_events >= summary.students
    assert summary.device_sessions >= summary.students
    names = await conn.fetch("SELECT name, sourced_id FROM districts ORDER BY name")
    assert [(r["name"], r["sourced_id"]) for r in names] == [
        ("Northwind Unified", "northwind"),
        ("Riverside Unified", "riverside"),
    ]
    # settings left at the column defaults
    settings = await conn.fetchrow(
        "SELECT bool_and(collect_usage AND collect_device AND collect_demographics "
        "AND NOT direct_record_access AND minimum_group_size = 10) AS defaults FROM districts"
    )
    assert settings["defaults"]


async def test_named_accounts(conn: Any) -> None:
    await check_named_accounts(conn)


async def test_every_student_and_school(conn: Any) -> None:
    await check_structure(conn)


async def test_foreign_keys_hold(conn: Any) -> None:
    await check_foreign_keys(conn)


async def test_content(conn: Any) -> None:
    subjects = await conn.fetch(
        "SELECT s.subject, count(DISTINCT s.id) AS assessments, min(n) AS fewest_items FROM assessments s "
        "JOIN (SELECT assessment_id, count(*) AS n FROM items GROUP BY assessment_id) i "
        "ON i.assessment_id = s.id GROUP BY s.subject ORDER BY s.subject"
    )
    assert [r["subject"] for r in subjects] == ["Math", "Reading"]
    assert sum(r["assessments"] for r in subjects) >= 4
    assert min(r["fewest_items"] for r in subjects) >= 10
    assert not await conn.fetchval(
        "SELECT count(*) FROM items WHERE cardinality(choices) <> 4 "
        "OR NOT answer_key = ANY (choices) OR explanation IS NULL OR NOT practice "
        "OR (SELECT count(DISTINCT c) FROM unnest(choices) c) <> 4"
    )
    assert await conn.fetchval("SELECT count(DISTINCT skill) FROM items") >= 4


async def test_responses_are_graded_against_the_key(conn: Any) -> None:
    wrong = await conn.fetchval(
        "SELECT count(*) FROM responses r JOIN items i ON i.id = r.item_id "
        "WHERE r.correct <> (r.answer = i.answer_key) "
        "OR r.score <> CASE WHEN r.correct THEN 1.0 ELSE 0.0 END "
        "OR NOT r.answer = ANY (i.choices) OR r.feedback IS NULL OR r.idempotency_key IS NOT NULL"
    )
    assert wrong == 0
    share = await conn.fetchval("SELECT avg(correct::int) FROM responses")
    assert 0.55 < share < 0.75
    # assigned responses: the item is in the assignment's assessment and the
    # student is enrolled in the assignment's class
    assert not await conn.fetchval(
        "SELECT count(*) FROM responses r JOIN assignments a "
        "ON a.district_id = r.district_id AND a.id = r.assignment_id "
        "JOIN items i ON i.id = r.item_id "
        "WHERE i.assessment_id <> a.assessment_id OR NOT EXISTS (SELECT 1 FROM enrollments e "
        "WHERE e.district_id = r.district_id AND e.student_id = r.student_id AND e.class_id = a.class_id)"
    )


async def test_times_are_fixed(conn: Any) -> None:
    span = await conn.fetchrow("SELECT min(submitted_at) AS first, max(submitted_at) AS last FROM responses")
    assert span["first"] >= dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    assert span["last"] < dt.datetime(2026, 10, 27, tzinfo=dt.UTC)
    assert await conn.fetchval("SELECT count(DISTINCT created_at) FROM users") == 1
    # a student's last activity is their latest event, never before a response
    assert not await conn.fetchval(
        "SELECT count(*) FROM users u WHERE u.role = 'STUDENT' AND ("
        "u.last_active_at IS DISTINCT FROM (SELECT max(occurred_at) FROM activity_events a "
        "WHERE a.district_id = u.district_id AND a.student_id = u.id) "
        "OR u.last_active_at < (SELECT max(submitted_at) FROM responses r "
        "WHERE r.district_id = u.district_id AND r.student_id = u.id))"
    )


async def test_second_seed_is_a_no_op(seeded: tuple[DatabaseUrls, SeedSummary], conn: Any) -> None:
    urls, first = seeded
    before = await table_counts(conn)
    again = await seed_demo(urls.owner)
    assert not again.created
    assert dataclasses.replace(again, seconds=0.0) == dataclasses.replace(first, created=False, seconds=0.0)
    assert await table_counts(conn) == before


async def test_two_databases_get_identical_rows(
    seed_server: DatabaseUrls, seeded: tuple[DatabaseUrls, SeedSummary], conn: Any
) -> None:
    other = await fresh_database(seed_server, "seedtest_again")
    await seed_demo(other.owner)
    other_conn = await connect(other.owner)
    try:
        assert await table_digests(other_conn) == await table_digests(conn)
    finally:
        await other_conn.close()


async def test_too_few_students_is_refused(seeded: tuple[DatabaseUrls, SeedSummary]) -> None:
    with pytest.raises(ValueError, match="at least"):
        await seed_demo(seeded[0].owner, students=100)


async def test_scale(seed_server: DatabaseUrls) -> None:
    urls = await fresh_database(seed_server, "seedtest_scale")
    summary = await seed_demo(urls.owner, students=2000)
    assert summary.created
    assert summary.students == 2000
    assert summary.responses == 2000 * 30
    assert summary.schools >= 4
    connection = await connect(urls.owner)
    try:
        await check_named_accounts(connection)
        await check_structure(connection)
        sizes = await connection.fetchrow(
            "SELECT min(n) AS smallest, max(n) AS largest, avg(n) AS mean FROM "
            "(SELECT count(*) AS n FROM enrollments GROUP BY district_id, class_id) x"
        )
        assert sizes["smallest"] >= 20
        assert sizes["largest"] <= 40
        assert 24 <= sizes["mean"] <= 31
        ratio = await connection.fetchval(
            "SELECT (SELECT count(*) FROM classes)::float / (SELECT count(*) FROM users WHERE role = 'TEACHER')"
        )
        assert 1.4 <= ratio <= 2.2
    finally:
        await connection.close()
