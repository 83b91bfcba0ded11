"""performanceReport and usageReport over hand-built districts whose suppressed cells are known.

The districts below are inserted into this module's copy of the demo database
with exact counts, so every expected number and every expected suppressed cell
is written here by hand from POLICY.md section 5 (k = minimumGroupSize):

* Alder (k = 5): school S1 = classes C1 (grade 4, 11 students: 8 F, 3 M, 2 of
  them opted out of analytics) and C2 (grade 5, 9 students, one of them both
  Asian and White); S2 = C3 (grade 4, 6 students: 4 F, 2 X) and C4 (grade 5,
  6 Hispanic students); S3 = C5 (grade 6, 3 students). Everyone in C1..C4
  answers assessment X1 three times (two right, one wrong) in the week of
  2026-09-07; C5 answers X2 four times in the week of 2026-09-14. C1 and C2
  have usage events. 35 students, 108 responses.
* Birch (k = 20): 25 students. Its k is the largest, so it is k across districts.
* Cedar (k = 5): has not authorized REPORTING or PRODUCT_ANALYTICS.
* Dogwood (k = 5): collects neither demographics nor usage.
* Elm (k = 5): a school x grade table with one small cell, P/5 = 3:
  P = 10, 3, 12 and Q = 8, 9, 15 students in grades 4, 5, 6.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from server.auth import mint_token
from server.settings import Settings
from tests.conftest import ALL_PURPOSES, error_codes

WEEK1 = dt.datetime(2026, 9, 8, 10, 0, tzinfo=dt.UTC)
WEEK2 = dt.datetime(2026, 9, 15, 10, 0, tzinfo=dt.UTC)
ALL_BUT = [p for p in ALL_PURPOSES if p not in ("REPORTING", "PRODUCT_ANALYTICS")]

PERFORMANCE = """
query Report($input: ReportInput!) {
  performanceReport(input: $input) {
    minimumGroupSize suppressedRows
    rows { group { dimension value } suppressed suppressionReason students responses meanScore percentCorrect
           activeMinutes sessions }
    total { group { dimension value } suppressed suppressionReason students responses meanScore percentCorrect }
  }
}"""
USAGE = """
query Usage($input: ReportInput!) {
  usageReport(input: $input) {
    minimumGroupSize suppressedRows
    rows { group { dimension value } suppressed suppressionReason students responses activeMinutes sessions }
    total { suppressed suppressionReason students activeMinutes sessions }
  }
}"""


@dataclass
class World:
    ids: dict[str, uuid.UUID] = field(default_factory=dict)
    students: dict[str, list[uuid.UUID]] = field(default_factory=dict)
    assessments: list[uuid.UUID] = field(default_factory=list)

    def __getitem__(self, name: str) -> uuid.UUID:
        return self.ids[name]


class Builder:
    def __init__(self, owner: Any, world: World) -> None:
        self.owner = owner
        self.world = world
        self.items: dict[uuid.UUID, list[uuid.UUID]] = {}

    async def setup(self) -> None:
        rows = await self.owner.fetch("SELECT id FROM assessments WHERE subject = 'Math' ORDER BY title LIMIT 2")
        self.world.assessments = [r["id"] for r in rows]
        for a in self.world.assessments:
            items = await self.owner.fetch("SELECT id FROM items WHERE assessment_id = $1 ORDER BY position", a)
            self.items[a] = [r["id"] for r in items]

    async def district(
        self, name: str, k: int, purposes: list[str] | None = None, demographics: bool = True, usage: bool = True
    ) -> uuid.UUID:
        did = uuid.uuid4()
        await self.owner.execute(
            "INSERT INTO districts (id, name, minimum_group_size, authorized_purposes, collect_demographics, "
            "collect_usage) VALUES ($1, $2, $3, $4, $5, $6)",
            did,
            f"{name} Test District",
            k,
            purposes or ALL_PURPOSES,
            demographics,
            usage,
        )
        self.world.ids[name] = did
        return did

    async def school(self, district: uuid.UUID, name: str) -> uuid.UUID:
        sid = uuid.uuid4()
        await self.owner.execute("INSERT INTO schools (district_id, id, name) VALUES ($1, $2, $3)", district, sid, name)
        self.world.ids[name] = sid
        return sid

    async def user(self, district: uuid.UUID, name: str, role: str, school: uuid.UUID | None = None) -> uuid.UUID:
        uid = uuid.uuid4()
        await self.owner.execute(
            "INSERT INTO users (district_id, id, role, username, school_id, first_name, last_name) "
            "VALUES ($1, $2, $3, $4, $5, 'Test', 'Account')",
            district,
            uid,
            role,
            f"{name.lower()}@reports.test",
            school,
        )
        self.world.ids[name] = uid
        return uid

    async def klass(
        self,
        district: uuid.UUID,
        school: uuid.UUID,
        name: str,
        grade: str,
        assessment: uuid.UUID,
        teacher: uuid.UUID | None = None,
    ) -> tuple[uuid.UUID, uuid.UUID]:
        cid, aid = uuid.uuid4(), uuid.uuid4()
        await self.owner.execute(
            "INSERT INTO classes (district_id, id, school_id, name, subject, grade_level) "
            "VALUES ($1, $2, $3, $4, 'Math', $5)",
            district,
            cid,
            school,
            name,
            grade,
        )
        await self.owner.execute(
            "INSERT INTO assignments (district_id, id, class_id, assessment_id, title) VALUES ($1, $2, $3, $4, $5)",
            district,
            aid,
            cid,
            assessment,
            f"{name} practice",
        )
        if teacher is not None:
            await self.owner.execute(
                "INSERT INTO class_teachers (district_id, class_id, teacher_id) VALUES ($1, $2, $3)",
                district,
                cid,
                teacher,
            )
        self.world.ids[name] = cid
        return cid, aid

    async def students(
        self,
        district: uuid.UUID,
        school: uuid.UUID,
        klass: tuple[uuid.UUID, uuid.UUID],
        assessment: uuid.UUID,
        name: str,
        count: int,
        *,
        grade: str,
        genders: list[str] | None = None,
        ethnicities: list[list[str]] | None = None,
        responses: int = 3,
        at: dt.datetime = WEEK1,
        opted_out: int = 0,
    ) -> list[uuid.UUID]:
        class_id, assignment_id = klass
        items = self.items[assessment]
        made: list[uuid.UUID] = []
        for i in range(count):
            sid = uuid.uuid4()
            made.append(sid)
            gender = (genders or [])[i] if genders and i < len(genders) else "F"
            ethnicity = (ethnicities or [])[i] if ethnicities and i < len(ethnicities) else ["White"]
            await self.owner.execute(
                "INSERT INTO users (district_id, id, role, username, school_id, grade_level, gender, ethnicity, "
                "first_name, last_name) VALUES ($1, $2, 'STUDENT', $3, $4, $5, $6, $7, 'Test', 'Student')",
                district,
                sid,
                f"{name.lower()}-{i}-{sid.hex[:8]}@reports.test",
                school,
                grade,
                gender,
                ethnicity,
            )
            await self.owner.execute(
                "INSERT INTO enrollments (district_id, class_id, student_id, begin_date) VALUES ($1, $2, $3, $4)",
                district,
                class_id,
                sid,
                dt.date(2026, 8, 15),
            )
            await self.owner.execute(
                "INSERT INTO consents (district_id, student_id, analytics_opt_out) VALUES ($1, $2, $3)",
                district,
                sid,
                i < opted_out,
            )
            for j in range(responses):
                correct = j < 2
                await self.owner.execute(
                    "INSERT INTO responses (district_id, id, student_id, item_id, assignment_id, answer, correct, "
                    "score, submitted_at) VALUES ($1, $2, $3, $4, $5, 'x', $6, $7, $8)",
                    district,
                    uuid.uuid4(),
                    sid,
                    items[j % len(items)],
                    assignment_id,
                    correct,
                    1.0 if correct else 0.0,
                    at + dt.timedelta(minutes=i, seconds=j),
                )
        self.world.students[name] = made
        return made

    async def session(self, district: uuid.UUID, student: uuid.UUID, at: dt.datetime, views: list[int]) -> None:
        key = uuid.uuid4().hex
        events: list[tuple[str, int | None]] = [("SESSION_START", None), *(("VIEW", ms) for ms in views)]
        events.append(("SESSION_END", sum(views)))
        for n, (kind, ms) in enumerate(events):
            await self.owner.execute(
                "INSERT INTO activity_events (district_id, id, student_id, kind, target, occurred_at, duration_ms, "
                "session_key) VALUES ($1, $2, $3, $4, '/practice', $5, $6, $7)",
                district,
                uuid.uuid4(),
                student,
                kind,
                at + dt.timedelta(seconds=n),
                ms,
                key,
            )


@pytest_asyncio.fixture(scope="module")
async def world(owner: Any) -> World:
    w = World()
    b = Builder(owner, w)
    await b.setup()
    x1, x2 = w.assessments

    alder = await b.district("Alder", 5)
    s1, s2, s3 = [await b.school(alder, n) for n in ("S1", "S2", "S3")]
    await b.user(alder, "AdminA", "DISTRICT_ADMIN")
    await b.user(alder, "P1", "SCHOOL_ADMIN", s1)
    await b.user(alder, "P2", "SCHOOL_ADMIN", s2)
    t1 = await b.user(alder, "T1", "TEACHER", s1)
    t2 = await b.user(alder, "T2", "TEACHER", s1)
    t5 = await b.user(alder, "T5", "TEACHER", s3)
    c1 = await b.klass(alder, s1, "C1", "4", x1, t1)
    c2 = await b.klass(alder, s1, "C2", "5", x1, t2)
    c3 = await b.klass(alder, s2, "C3", "4", x1)
    c4 = await b.klass(alder, s2, "C4", "5", x1)
    c5 = await b.klass(alder, s3, "C5", "6", x2, t5)
    c1_students = await b.students(
        alder, s1, c1, x1, "C1", 11, grade="4", genders=["F", "F", "M", "M", "M"], opted_out=2
    )
    c2_students = await b.students(alder, s1, c2, x1, "C2", 9, grade="5", ethnicities=[["Asian", "White"]])
    await b.students(alder, s2, c3, x1, "C3", 6, grade="4", genders=["X", "X"])
    await b.students(alder, s2, c4, x1, "C4", 6, grade="5", ethnicities=[["Hispanic"]] * 6)
    await b.students(alder, s3, c5, x2, "C5", 3, grade="6", responses=4, at=WEEK2)
    for student in c1_students:
        await b.session(alder, student, WEEK1, [60_000, 120_000])
    for student in c2_students:
        await b.session(alder, student, WEEK1, [30_000])
        await b.session(alder, student, WEEK1 + dt.timedelta(hours=2), [30_000])

    birch = await b.district("Birch", 20)
    sb = await b.school(birch, "SB1")
    await b.user(birch, "AdminB", "DISTRICT_ADMIN")
    await b.students(birch, sb, await b.klass(birch, sb, "CB1", "4", x1), x1, "CB1", 25, grade="4", responses=2)

    cedar = await b.district("Cedar", 5, purposes=ALL_BUT)
    sc = await b.school(cedar, "SC1")
    await b.user(cedar, "AdminC", "DISTRICT_ADMIN")
    await b.students(cedar, sc, await b.klass(cedar, sc, "CC1", "4", x1), x1, "CC1", 6, grade="4", responses=1)

    dogwood = await b.district("Dogwood", 5, demographics=False, usage=False)
    sd = await b.school(dogwood, "SD1")
    await b.user(dogwood, "AdminD", "DISTRICT_ADMIN")
    await b.students(dogwood, sd, await b.klass(dogwood, sd, "CD1", "4", x1), x1, "CD1", 6, grade="4", responses=1)

    elm = await b.district("Elm", 5)
    p, q = await b.school(elm, "P"), await b.school(elm, "Q")
    await b.user(elm, "AdminE", "DISTRICT_ADMIN")
    await b.user(elm, "PE", "SCHOOL_ADMIN", p)
    for school, name, sizes in ((p, "P", (10, 3, 12)), (q, "Q", (8, 9, 15))):
        for grade, size in zip(("4", "5", "6"), sizes, strict=True):
            k = await b.klass(elm, school, f"{name}{grade}", grade, x1)
            await b.students(elm, school, k, x1, f"{name}{grade}", size, grade=grade, responses=1)

    analyst = await owner.fetchval("SELECT id FROM platform_users WHERE role = 'ANALYST' ORDER BY username LIMIT 1")
    w.ids["Analyst"] = analyst
    w.ids["Northwind"] = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    w.ids["NorthwindSchool"] = await owner.fetchval(
        "SELECT id FROM schools WHERE district_id = $1 ORDER BY name LIMIT 1", w.ids["Northwind"]
    )
    w.ids["NorthwindClass"] = await owner.fetchval(
        "SELECT id FROM classes WHERE district_id = $1 ORDER BY name LIMIT 1", w.ids["Northwind"]
    )
    return w


Ask = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture(scope="module")
def ask(client: httpx.AsyncClient, settings: Settings, world: World) -> Ask:
    """Run a query as one of the world's users: ``ask("AdminA", "REPORTING", query, variables)``."""

    async def run(
        who: str, purpose: str, query: str, variables: dict[str, Any] | None = None, **headers: str
    ) -> dict[str, Any]:
        token = mint_token(settings, world[who], ALL_PURPOSES, 600)
        sent = {"Authorization": f"Bearer {token}", "X-Purpose": purpose}
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        response = await client.post("/graphql", json={"query": query, "variables": variables}, headers=sent)
        body: dict[str, Any] = response.json()
        body["_status"] = response.status_code
        return body

    return run


async def report(
    ask: Ask,
    who: str,
    scope: dict[str, Any],
    group_by: list[str] | None = None,
    purpose: str = "REPORTING",
    **more: Any,
) -> dict[str, Any]:
    body = await ask(who, purpose, PERFORMANCE, {"input": {"scope": scope, "groupBy": group_by or [], **more}})
    assert "errors" not in body, body.get("errors")
    result: dict[str, Any] = body["data"]["performanceReport"]
    return result


def by(rows: list[dict[str, Any]], world: World | None = None) -> dict[Any, dict[str, Any]]:
    """Rows keyed by their group's values (ids turned back into the world's names)."""
    names = {str(v): k for k, v in world.ids.items()} if world else {}
    out: dict[Any, dict[str, Any]] = {}
    for row in rows:
        values = tuple(names.get(g["value"], g["value"]) for g in row["group"])
        out[values[0] if len(values) == 1 else values] = row
    return out


def hidden(rows: dict[Any, dict[str, Any]]) -> dict[Any, str]:
    return {key: row["suppressionReason"] for key, row in rows.items() if row["suppressed"]}


MEASURES = ("students", "responses", "meanScore", "percentCorrect", "activeMinutes", "sessions")


def assert_all_measures_null(row: dict[str, Any]) -> None:
    assert row["suppressed"] is True
    assert all(row[m] is None for m in MEASURES if m in row)


# ------------------------------------------------------------- suppression


async def test_a_single_small_school_is_hidden_with_the_next_smallest_school(ask: Ask, world: World) -> None:
    r = await report(ask, "AdminA", {"districtId": str(world["Alder"])}, ["SCHOOL"])
    rows = by(r["rows"], world)
    assert r["minimumGroupSize"] == 5
    assert set(rows) == {"S1", "S2", "S3"}
    assert hidden(rows) == {"S3": "SMALL_GROUP", "S2": "COMPLEMENTARY"}
    assert r["suppressedRows"] == 2
    assert_all_measures_null(rows["S2"])
    assert_all_measures_null(rows["S3"])
    s1 = rows["S1"]
    assert (s1["students"], s1["responses"], s1["meanScore"], s1["percentCorrect"]) == (20, 60, 0.6667, 66.67)
    total = r["total"]
    assert total["group"] == [] and total["suppressed"] is False
    assert (total["students"], total["responses"]) == (35, 108)


async def test_two_small_groups_hide_each_other_and_nothing_else(ask: Ask, world: World) -> None:
    r = await report(ask, "AdminA", {"districtId": str(world["Alder"])}, ["GENDER"])
    rows = by(r["rows"])
    assert hidden(rows) == {"M": "SMALL_GROUP", "X": "SMALL_GROUP"}
    assert rows["F"]["students"] == 30 and r["suppressedRows"] == 2


async def test_a_small_cell_alone_in_its_partition_takes_the_next_smallest_with_it(ask: Ask, world: World) -> None:
    r = await report(ask, "AdminA", {"districtId": str(world["Alder"])}, ["GRADE_LEVEL"])
    rows = by(r["rows"])
    assert hidden(rows) == {"6": "SMALL_GROUP", "5": "COMPLEMENTARY"}
    assert rows["4"]["students"] == 17


async def test_a_two_way_table_hides_a_partner_in_the_small_cells_row_and_column(ask: Ask, world: World) -> None:
    # Elm: P = 10, 3, 12 and Q = 8, 9, 15 in grades 4, 5, 6; k = 5.
    r = await report(ask, "AdminE", {"districtId": str(world["Elm"])}, ["SCHOOL", "GRADE_LEVEL"])
    rows = by(r["rows"], world)
    assert hidden(rows) == {
        ("P", "5"): "SMALL_GROUP",
        ("Q", "4"): "COMPLEMENTARY",
        ("P", "4"): "COMPLEMENTARY",
        ("Q", "5"): "COMPLEMENTARY",
    }
    assert rows[("P", "6")]["students"] == 12 and rows[("Q", "6")]["students"] == 15
    assert r["suppressedRows"] == 4
    # The same table asked the other way round hides the same cells.
    swapped = await report(ask, "AdminE", {"districtId": str(world["Elm"])}, ["GRADE_LEVEL", "SCHOOL"])
    assert {(k[1], k[0]): v for k, v in hidden(by(swapped["rows"], world)).items()} == hidden(rows)
    assert [g["dimension"] for g in swapped["rows"][0]["group"]] == ["GRADE_LEVEL", "SCHOOL"]


async def test_a_schools_report_is_its_slice_of_the_districts_table(ask: Ask, world: World) -> None:
    r = await report(ask, "PE", {"schoolId": str(world["P"])}, ["GRADE_LEVEL"])
    rows = by(r["rows"])
    assert hidden(rows) == {"5": "SMALL_GROUP", "4": "COMPLEMENTARY"}
    assert rows["6"]["students"] == 12
    assert r["total"]["students"] == 25 and not r["total"]["suppressed"]


async def test_a_total_below_k_is_suppressed_with_every_row(ask: Ask, world: World) -> None:
    r = await report(ask, "T5", {"classId": str(world["C5"])}, ["SKILL"])
    assert r["total"]["suppressed"] is True and r["total"]["suppressionReason"] == "SMALL_GROUP"
    assert_all_measures_null(r["total"])
    assert r["rows"] and all(row["suppressed"] for row in r["rows"])
    admin = await report(ask, "AdminA", {"schoolId": str(world["S3"])})
    assert admin["total"]["suppressionReason"] == "SMALL_GROUP" and admin["rows"] == []


async def test_a_student_with_two_ethnicities_counts_in_both_groups(ask: Ask, world: World) -> None:
    r = await report(ask, "AdminA", {"districtId": str(world["Alder"])}, ["ETHNICITY"])
    rows = by(r["rows"])
    assert hidden(rows) == {"Asian": "SMALL_GROUP", "Hispanic": "COMPLEMENTARY"}
    assert rows["White"]["students"] == 29
    # The groups are not a partition of the students: 29 + 1 + 6 > 35.
    assert r["total"]["students"] == 35 and r["total"]["responses"] == 108


async def test_weeks_are_the_mondays_of_the_events(ask: Ask, world: World) -> None:
    r = await report(ask, "AdminA", {"districtId": str(world["Alder"])}, ["WEEK"])
    assert hidden(by(r["rows"])) == {"2026-09-14": "SMALL_GROUP", "2026-09-07": "COMPLEMENTARY"}


async def test_k_across_districts_is_the_largest_of_them(ask: Ask, world: World) -> None:
    # Birch's k is 20: in the analysts' reports Alder's S2 (12 students) is small
    # and so is S1 (20, of whom 2 opted out: 18), while Alder's own report uses
    # Alder's k of 5.
    r = await report(ask, "Analyst", {"districtId": str(world["Alder"])}, ["SCHOOL"])
    assert r["minimumGroupSize"] == 20
    assert hidden(by(r["rows"], world)) == {"S1": "SMALL_GROUP", "S2": "SMALL_GROUP", "S3": "SMALL_GROUP"}
    own = await report(ask, "AdminA", {"districtId": str(world["Alder"])}, ["SCHOOL"])
    assert own["minimumGroupSize"] == 5 and hidden(by(own["rows"], world)) == {
        "S3": "SMALL_GROUP",
        "S2": "COMPLEMENTARY",
    }
    everywhere = await report(ask, "Analyst", {"allDistricts": True}, ["DISTRICT"])
    assert everywhere["minimumGroupSize"] == 20
    rows = by(everywhere["rows"], world)
    assert "Cedar" not in rows  # it has not authorized REPORTING
    assert rows["Dogwood"]["suppressionReason"] == "SMALL_GROUP"  # 6 < 20
    assert rows["Birch"]["suppressionReason"] == "COMPLEMENTARY"  # the next smallest, 25
    assert rows["Alder"]["students"] == 33 and rows["Elm"]["students"] == 57


async def test_an_analysts_school_rows_cannot_give_back_a_hidden_district(ask: Ask, world: World) -> None:
    # Birch is hidden among the districts to protect Dogwood (6 < 20): total less the shown
    # districts is Birch plus Dogwood. Birch has one school, SB1: shown among all schools, it
    # would be Birch, and Dogwood would follow. A school is decided among its district's too.
    districts = await report(ask, "Analyst", {"allDistricts": True}, ["DISTRICT"])
    schools = await report(ask, "Analyst", {"allDistricts": True}, ["SCHOOL"])
    by_district = by(districts["rows"], world)
    assert by_district["Birch"]["suppressionReason"] == "COMPLEMENTARY"
    rows = by(schools["rows"], world)
    assert rows["SB1"]["suppressed"] is True
    # No hidden district is the sum of its shown schools: each hidden district keeps a hidden school.
    schools_of = {"Alder": ["S1", "S2", "S3"], "Birch": ["SB1"], "Dogwood": ["SD1"], "Elm": ["P", "Q"]}
    for district, row in by_district.items():
        if row["suppressed"]:
            assert any(rows[s]["suppressed"] for s in schools_of[district] if s in rows), district


async def test_opted_out_students_are_left_out_of_every_analyst_report_but_not_the_districts_own(
    ask: Ask, world: World
) -> None:
    scope = {"districtId": str(world["Alder"])}
    own = await report(ask, "AdminA", scope)
    internal = await report(ask, "Analyst", scope)
    analytics = await report(ask, "Analyst", scope, purpose="PRODUCT_ANALYTICS")
    assert own["total"]["students"] == 35
    assert own["total"]["responses"] == 108
    for analyst in (internal, analytics):
        assert analyst["total"]["students"] == 33
        assert analyst["total"]["responses"] == 108 - 2 * 3


async def test_product_analytics_leaves_out_districts_that_have_not_authorized_it(ask: Ask, world: World) -> None:
    r = await report(ask, "Analyst", {"allDistricts": True}, ["DISTRICT"], purpose="PRODUCT_ANALYTICS")
    assert "Cedar" not in by(r["rows"], world)
    body = await ask(
        "Analyst", "PRODUCT_ANALYTICS", PERFORMANCE, {"input": {"scope": {"districtId": str(world["Cedar"])}}}
    )
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["reason"] == "PURPOSE_NOT_AUTHORIZED_BY_DISTRICT"


async def test_demographics_a_district_does_not_collect_give_no_groups(ask: Ask, world: World) -> None:
    body = await ask(
        "AdminD",
        "REPORTING",
        PERFORMANCE,
        {"input": {"scope": {"districtId": str(world["Dogwood"])}, "groupBy": ["GENDER"]}},
    )
    assert error_codes(body) == ["FORBIDDEN"]
    assert body["errors"][0]["extensions"]["reason"] == "NOT_COLLECTED"
    assert body["errors"][0]["extensions"]["category"] == "DEMOGRAPHIC"
    r = await report(ask, "Analyst", {"districtId": str(world["Dogwood"])}, ["GENDER"])
    assert [row["group"][0]["value"] for row in r["rows"]] == [None]


# -------------------------------------------------------------- usage


async def test_usage_counts_minutes_without_the_session_markers_and_distinct_sessions(ask: Ask, world: World) -> None:
    body = await ask(
        "AdminA", "REPORTING", USAGE, {"input": {"scope": {"districtId": str(world["Alder"])}, "groupBy": ["CLASS"]}}
    )
    assert "errors" not in body, body
    r = body["data"]["usageReport"]
    rows = by(r["rows"], world)
    assert set(rows) == {"C1", "C2"}
    assert (rows["C1"]["students"], rows["C1"]["activeMinutes"], rows["C1"]["sessions"]) == (11, 33.0, 11)
    assert (rows["C2"]["students"], rows["C2"]["activeMinutes"], rows["C2"]["sessions"]) == (9, 9.0, 18)
    assert rows["C1"]["responses"] is None
    assert (r["total"]["students"], r["total"]["activeMinutes"], r["total"]["sessions"]) == (20, 42.0, 29)


async def test_usage_is_refused_where_it_is_not_collected_or_not_a_purposes_category(ask: Ask, world: World) -> None:
    body = await ask("AdminD", "REPORTING", USAGE, {"input": {"scope": {"districtId": str(world["Dogwood"])}}})
    assert body["errors"][0]["extensions"] == {
        "code": "FORBIDDEN",
        "purpose": "REPORTING",
        "reason": "NOT_COLLECTED",
        "category": "USAGE",
    }
    body = await ask("T1", "REPORTING", USAGE, {"input": {"scope": {"classId": str(world["C1"])}}})
    assert body["errors"][0]["extensions"]["reason"] == "PURPOSE_NOT_ALLOWED_FOR_CATEGORY"
    assert body["errors"][0]["extensions"]["category"] == "USAGE"


# ---------------------------------------------------------- differencing


async def test_the_total_minus_the_visible_schools_does_not_give_the_small_school(
    ask: Ask, world: World, owner: Any
) -> None:
    # What the report shows: the total and S1. What an attacker computes from
    # them is S2 + S3 together; the test checks that this is all they get, and
    # that it is not S3's own value (read from the database).
    r = await report(ask, "AdminA", {"districtId": str(world["Alder"])}, ["SCHOOL"])
    shown = [row for row in r["rows"] if not row["suppressed"]]
    assert [by([row], world) for row in shown] and len(shown) == 1
    residual_students = r["total"]["students"] - sum(row["students"] for row in shown)
    residual_responses = r["total"]["responses"] - sum(row["responses"] for row in shown)
    s3_responses = await owner.fetchval(
        "SELECT count(*) FROM responses r JOIN users u ON u.district_id = r.district_id AND u.id = r.student_id "
        "WHERE u.school_id = $1",
        world["S3"],
    )
    assert s3_responses == 12
    assert (residual_students, residual_responses) == (15, 48)  # S2 and S3 together
    assert residual_responses != s3_responses and residual_students != 3


async def test_an_assessment_filter_cannot_be_subtracted_from_the_unfiltered_total(ask: Ask, world: World) -> None:
    # Only S3 answered X2, so (all) - (X1 only) would be S3. The X1 report's
    # total is the X1 cell of the by-assessment table, hidden beside X2's.
    x1, x2 = world.assessments
    scope = {"districtId": str(world["Alder"])}
    everything = await report(ask, "AdminA", scope)
    only_x1 = await report(ask, "AdminA", scope, assessmentId=str(x1))
    only_x2 = await report(ask, "AdminA", scope, assessmentId=str(x2))
    assert everything["total"]["responses"] == 108
    assert only_x1["total"]["suppressionReason"] == "COMPLEMENTARY"
    assert only_x2["total"]["suppressionReason"] == "SMALL_GROUP"
    assert_all_measures_null(only_x1["total"])


async def test_a_time_window_cannot_be_subtracted_from_all_time(ask: Ask, world: World) -> None:
    # S3 answered only in the week of 2026-09-14: (all time) - (up to that week)
    # would be S3. The windowed total is hidden because the window holds one of
    # the two hidden weeks of the all-time by-week table but not the other.
    scope = {"districtId": str(world["Alder"])}
    before = await report(ask, "AdminA", scope, to="2026-09-14T00:00:00Z")
    after = await report(ask, "AdminA", scope, **{"from": "2026-09-14T00:00:00Z"})
    assert before["total"]["suppressionReason"] == "COMPLEMENTARY"
    assert after["total"]["suppressionReason"] == "SMALL_GROUP"
    # A window is widened to whole weeks: ending mid-week 2 is all of week 2.
    midweek = await report(ask, "AdminA", scope, to="2026-09-15T09:00:00Z")
    assert (midweek["total"]["students"], midweek["total"]["responses"]) == (35, 108)
    # Windows that hold all or none of a group's hidden weeks show what they can.
    grouped = await report(ask, "AdminA", scope, ["SCHOOL"], **{"from": "2026-09-01T00:00:00Z"})
    assert grouped["total"]["students"] == 35
    assert hidden(by(grouped["rows"], world)) == {"S3": "SMALL_GROUP", "S2": "COMPLEMENTARY"}
    # In the all-time school x week table every cell is hidden (S3's week is
    # small, and S1's and S2's cells go with it). S1 answered only in week 1,
    # so its week-1 figure is its all-time figure: shown. S2 is hidden all
    # time, so its week-1 figure (equally all of it) stays hidden.
    first_week = await report(ask, "AdminA", scope, ["SCHOOL"], to="2026-09-14T00:00:00Z")
    rows = by(first_week["rows"], world)
    assert set(rows) == {"S1", "S2"}
    assert rows["S1"]["students"] == 20 and rows["S1"]["responses"] == 60
    assert hidden(rows) == {"S2": "COMPLEMENTARY"}
    assert first_week["total"]["suppressionReason"] == "COMPLEMENTARY"


async def test_a_total_of_no_students_is_below_k_and_suppressed(ask: Ask, world: World) -> None:
    # POLICY section 5: "The total row is itself suppressed when it is below k"; 0 is below k.
    scope = {"districtId": str(world["Alder"])}
    empty = await report(ask, "AdminA", scope, ["SCHOOL"], **{"from": "2030-01-07T00:00:00Z"})
    assert empty["rows"] == []
    assert empty["total"]["suppressed"] is True and empty["total"]["suppressionReason"] == "SMALL_GROUP"
    assert_all_measures_null(empty["total"])


async def test_a_schools_total_cannot_be_subtracted_from_the_districts(ask: Ask, world: World) -> None:
    # District 35 - S1 20 - S2 would be S3; S2's own report hides its total.
    s1 = await report(ask, "P1", {"schoolId": str(world["S1"])})
    s2 = await report(ask, "P2", {"schoolId": str(world["S2"])})
    assert s1["total"]["students"] == 20
    assert s2["total"]["suppressionReason"] == "COMPLEMENTARY"


# ------------------------------------------------------------- refusals


def forbidden(body: dict[str, Any], reason: str = "OUT_OF_SCOPE_OPERATION") -> None:
    assert body["data"] is None
    assert error_codes(body) == ["FORBIDDEN"]
    assert body["errors"][0]["extensions"]["reason"] == reason
    assert body["errors"][0]["path"] in (["performanceReport"], ["usageReport"])


@pytest.mark.parametrize(
    ("who", "purpose", "scope_of"),
    [
        ("T1", "REPORTING", {"classId": "C2"}),  # a class of another teacher
        ("T1", "REPORTING", {"schoolId": "S1"}),  # the whole school
        ("T1", "REPORTING", {"districtId": "Alder"}),
        ("T1", "INSTRUCTION", {"classId": "C1"}),  # no aggregates under INSTRUCTION
        ("P1", "REPORTING", {"schoolId": "S2"}),  # another school
        ("P1", "REPORTING", {"classId": "C3"}),  # a class of another school
        ("P1", "REPORTING", {"districtId": "Alder"}),
        ("AdminA", "REPORTING", {"districtId": "Northwind"}),  # another district
        ("AdminA", "REPORTING", {"schoolId": "NorthwindSchool"}),
        ("AdminA", "REPORTING", {"classId": "NorthwindClass"}),
        ("AdminA", "REPORTING", {"classId": "CB1"}),
        ("AdminA", "REPORTING", {"allDistricts": True}),
        ("AdminA", "RECORD_ACCESS", {"districtId": "Alder"}),  # no aggregates under RECORD_ACCESS
        ("AdminB", "REPORTING", {"districtId": "Alder"}),
    ],
)
async def test_reports_outside_the_callers_aggregates_are_refused(
    ask: Ask, world: World, who: str, purpose: str, scope_of: dict[str, Any]
) -> None:
    scope = {k: v if isinstance(v, bool) else str(world[v]) for k, v in scope_of.items()}
    forbidden(await ask(who, purpose, PERFORMANCE, {"input": {"scope": scope}}))


async def test_the_callers_own_scopes_are_answered(ask: Ask, world: World) -> None:
    teacher = await report(ask, "T1", {"classId": str(world["C1"])}, ["GRADE_LEVEL"])
    assert teacher["total"]["students"] == 11 and teacher["minimumGroupSize"] == 5
    principal = await report(ask, "P1", {"classId": str(world["C2"])})
    assert principal["total"]["students"] == 9
    # C5 (3 students) is S3's only class: S3 is small among Alder's schools, and S2 (C3 and C4,
    # six students each) is hidden beside it. A class is decided among its school's classes too,
    # so neither of S2's classes is shown: together they would give S2, and then S3, back.
    c3 = await report(ask, "AdminA", {"classId": str(world["C3"])})
    c4 = await report(ask, "P2", {"classId": str(world["C4"])})
    assert c3["total"]["suppressionReason"] == c4["total"]["suppressionReason"] == "COMPLEMENTARY"
    c1 = await report(ask, "AdminA", {"classId": str(world["C1"])})
    assert c1["total"]["students"] == 11


async def test_a_district_that_has_not_authorized_the_purpose_refuses_its_own_staff(ask: Ask, world: World) -> None:
    body = await ask("AdminC", "REPORTING", PERFORMANCE, {"input": {"scope": {"districtId": str(world["Cedar"])}}})
    forbidden(body, "PURPOSE_NOT_AUTHORIZED_BY_DISTRICT")
    legal = await ask(
        "AdminC",
        "LEGAL_COMPLIANCE",
        PERFORMANCE,
        {"input": {"scope": {"districtId": str(world["Cedar"])}}},
        X_Justification="court order 1",
    )
    assert "errors" not in legal and legal["data"]["performanceReport"]["total"]["students"] == 6


async def test_teachers_may_not_group_by_demographics(ask: Ask, world: World) -> None:
    body = await ask(
        "T1", "REPORTING", PERFORMANCE, {"input": {"scope": {"classId": str(world["C1"])}, "groupBy": ["GENDER"]}}
    )
    forbidden(body, "PURPOSE_NOT_ALLOWED_FOR_CATEGORY")
    assert body["errors"][0]["extensions"]["category"] == "DEMOGRAPHIC"


async def test_students_get_no_reports(gql: Any, world: World) -> None:
    body = await gql(
        "student1@northwind.example",
        "STUDENT_LEARNING",
        PERFORMANCE,
        {"input": {"scope": {"districtId": str(world["Northwind"])}}},
    )
    forbidden(body)


async def test_analysts_read_no_row_level_field_and_reports_hold_no_student_id(ask: Ask, world: World) -> None:
    student = world.students["C1"][0]
    body = await ask(
        "Analyst", "REPORTING", "query($id: ID!) { student(id: $id) { id firstName } }", {"id": str(student)}
    )
    assert body["data"]["student"] is None and error_codes(body) == ["NOT_FOUND"]
    grouped = await ask(
        "Analyst",
        "REPORTING",
        PERFORMANCE,
        {"input": {"scope": {"allDistricts": True}, "groupBy": ["SCHOOL", "CLASS", "GENDER", "ETHNICITY", "WEEK"]}},
    )
    assert "errors" not in grouped
    text = json.dumps(grouped)
    everyone = [s for students in world.students.values() for s in students]
    assert not [s for s in everyone if str(s) in text]


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"scope": {}}, "scope"),
        ({"scope": {"classId": "C1", "schoolId": "S1"}}, "scope"),
        ({"scope": {"allDistricts": False}}, "scope"),
        ({"scope": {"classId": "not-an-id"}}, "scope.classId"),
        ({"scope": {"districtId": "Alder"}, "groupBy": ["SCHOOL", "SCHOOL"]}, "groupBy"),
        (
            {
                "scope": {"districtId": "Alder"},
                "groupBy": ["SCHOOL", "CLASS", "GRADE_LEVEL", "SUBJECT", "SKILL", "WEEK"],
            },
            "groupBy",
        ),
        ({"scope": {"districtId": "Alder"}, "from": "2026-09-10T00:00:00Z", "to": "2026-09-01T00:00:00Z"}, "from"),
        ({"scope": {"districtId": "Alder"}, "assessmentId": "nope"}, "assessmentId"),
        ({"scope": {"districtId": "Alder"}, "to": "9999-12-31T23:59:59Z"}, "to"),
        ({"scope": {"districtId": "Alder"}, "from": "0001-01-01T00:00:00Z"}, "from"),
    ],
)
async def test_bad_report_input_names_the_argument(
    ask: Ask, world: World, variables: dict[str, Any], field: str
) -> None:
    scope = {k: (str(world[v]) if isinstance(v, str) and v in world.ids else v) for k, v in variables["scope"].items()}
    body = await ask("AdminA", "REPORTING", PERFORMANCE, {"input": {**variables, "scope": scope}})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == field


async def test_usage_reports_take_no_item_dimensions(ask: Ask, world: World) -> None:
    scope = {"districtId": str(world["Alder"])}
    body = await ask("AdminA", "REPORTING", USAGE, {"input": {"scope": scope, "groupBy": ["SKILL"]}})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    body = await ask(
        "AdminA", "REPORTING", USAGE, {"input": {"scope": scope, "assessmentId": str(world.assessments[0])}}
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]


# ----------------------------------------------------------------- audit


async def test_each_report_is_one_audit_entry_with_no_subject(ask: Ask, world: World, owner: Any) -> None:
    request_id = uuid.uuid4().hex
    body = await ask(
        "AdminA",
        "REPORTING",
        PERFORMANCE,
        {"input": {"scope": {"districtId": str(world["Alder"])}, "groupBy": ["SCHOOL", "GENDER"]}},
        X_Request_Id=request_id,
    )
    assert "errors" not in body
    entries = await owner.fetch("SELECT * FROM audit_entries WHERE client_request_id = $1", request_id)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["subject_student_id"] is None and entry["decision"] == "ALLOW"
    assert entry["district_id"] == world["Alder"]
    # Its categories are what it is counted from: the measures', and DEMOGRAPHIC for GENDER.
    assert list(entry["categories"]) == ["PERFORMANCE", "DEMOGRAPHIC"]
    assert set(entry["fields"]) >= {
        "performanceReport.scope.DISTRICT",
        "performanceReport.groupBy.SCHOOL",
        "performanceReport.groupBy.GENDER",
        "performanceReport.students",
        "performanceReport.meanScore",
    }

    refused_id = uuid.uuid4().hex
    await ask(
        "T1", "REPORTING", PERFORMANCE, {"input": {"scope": {"classId": str(world["C2"])}}}, X_Request_Id=refused_id
    )
    refused = await owner.fetch(
        "SELECT decision, subject_student_id FROM audit_entries WHERE client_request_id = $1", refused_id
    )
    assert [(r["decision"], r["subject_student_id"]) for r in refused] == [("DENY", None)]

    analyst_id = uuid.uuid4().hex
    await ask(
        "Analyst", "REPORTING", PERFORMANCE, {"input": {"scope": {"allDistricts": True}}}, X_Request_Id=analyst_id
    )
    analyst = await owner.fetch(
        "SELECT district_id, categories FROM audit_entries WHERE client_request_id = $1", analyst_id
    )
    assert [(r["district_id"], list(r["categories"])) for r in analyst] == [(uuid.UUID(int=0), ["PERFORMANCE"])]


# ----------------------------------------------------- the kept totals

TOTALS_DRIFT = """
WITH raw AS (
    SELECT r.district_id, r.student_id, coalesce(a.class_id, '00000000-0000-0000-0000-000000000000'::uuid),
           count(*) AS responses, sum(r.score::numeric) AS score_sum, count(*) FILTER (WHERE r.correct) AS correct
    FROM responses r LEFT JOIN assignments a ON a.district_id = r.district_id AND a.id = r.assignment_id
    GROUP BY 1, 2, 3
), kept AS (
    SELECT district_id, student_id, class_id, responses, score_sum, correct FROM report_student_totals
)
SELECT (SELECT count(*) FROM (SELECT * FROM raw EXCEPT SELECT * FROM kept) a)
     + (SELECT count(*) FROM (SELECT * FROM kept EXCEPT SELECT * FROM raw) b)
"""


async def test_the_kept_student_totals_follow_every_insert_update_and_delete(owner: Any, world: World) -> None:
    assert await owner.fetchval(TOTALS_DRIFT) == 0
    b = Builder(owner, world)
    await b.setup()
    x1 = world.assessments[0]
    fir = await b.district("Fir", 5)
    school = await b.school(fir, "SF1")
    klass = await b.klass(fir, school, "CF1", "4", x1)
    students = await b.students(fir, school, klass, x1, "CF1", 4, grade="4", responses=5)
    assert await owner.fetchval("SELECT count(*) FROM report_student_totals WHERE district_id = $1", fir) == 4
    # One statement touching several students: rescore, move, delete some, delete all of one.
    await owner.execute(
        "UPDATE responses SET score = 0.25, correct = false WHERE student_id = ANY($1::uuid[])", students[:2]
    )
    await owner.execute(
        "UPDATE responses SET student_id = $1 WHERE id IN (SELECT id FROM responses WHERE student_id = $2 LIMIT 2)",
        students[0],
        students[2],
    )
    await owner.execute(
        "DELETE FROM responses WHERE id IN (SELECT id FROM responses WHERE student_id = $1 LIMIT 1)", students[1]
    )
    await owner.execute("DELETE FROM responses WHERE student_id = $1", students[3])
    assert await owner.fetchval(TOTALS_DRIFT) == 0
    kept = await owner.fetch(
        "SELECT student_id, responses FROM report_student_totals WHERE district_id = $1 ORDER BY responses", fir
    )
    assert sorted(r["responses"] for r in kept) == [3, 4, 7]
    # An assignment moved to another class takes its answers' totals along.
    other, _ = await b.klass(fir, school, "CF2", "4", x1)
    await owner.execute("UPDATE assignments SET class_id = $1 WHERE class_id = $2", other, klass[0])
    assert await owner.fetchval(TOTALS_DRIFT) == 0
    classes = await owner.fetch("SELECT DISTINCT class_id FROM report_student_totals WHERE district_id = $1", fir)
    assert [r["class_id"] for r in classes] == [other]
    # A student's totals go with the student.
    await owner.execute("DELETE FROM users WHERE district_id = $1 AND id = $2", fir, students[0])
    assert await owner.fetchval("SELECT count(*) FROM report_student_totals WHERE student_id = $1", students[0]) == 0
    assert await owner.fetchval(TOTALS_DRIFT) == 0


async def test_all_time_reports_from_the_kept_totals_equal_the_responses_themselves(ask: Ask, world: World) -> None:
    # Without a window the report reads the kept totals; with one that holds
    # everything it reads the responses. The figures must be the same.
    for district in ("Alder", "Elm"):
        scope = {"districtId": str(world[district])}
        for group_by in (["SCHOOL", "GRADE_LEVEL"], ["CLASS", "GENDER"]):
            kept = await report(ask, f"Admin{district[0]}", scope, group_by)
            raw = await report(ask, f"Admin{district[0]}", scope, group_by, **{"from": "2000-01-03T00:00:00Z"})
            assert kept["total"] == raw["total"]
            assert kept["rows"] == raw["rows"]


REPORT_INPUTS = [
    {"scope": {"districtId": "d1"}},
    {"scope": {"schoolId": "s1", "classId": None}, "groupBy": ["CLASS", "ECONOMICALLY_DISADVANTAGED"]},
    {"scope": {"allDistricts": True}, "groupBy": ["SUBJECT", "SKILL"], "assessmentId": "a1"},
    {"scope": {"classId": "c1"}, "groupBy": [], "from": "2026-09-01T00:00:00Z", "to": "2026-09-30T12:00:00+02:00"},
    {"scope": {"districtId": "d1", "schoolId": "s1", "allDistricts": False}, "groupBy": ["WEEK", "WEEK"]},
]


@pytest.mark.parametrize("given", REPORT_INPUTS)
@pytest.mark.parametrize("root", ["performanceReport", "usageReport"])
def test_the_served_report_resolvers_read_their_input_as_strawberry_converts_it(
    given: dict[str, Any], root: str
) -> None:
    from graphql import parse
    from graphql.execution.values import get_argument_values, get_variable_values
    from strawberry.types.arguments import convert_arguments

    from permissions.policy import load_policy_set
    from schema.build import build_schema, graphql_schema
    from schema.reports import report_input

    schema = build_schema(load_policy_set([Path(__file__).parent / "policies"]))
    document = parse(f"query($input: ReportInput!) {{ {root}(input: $input) {{ minimumGroupSize }} }}")
    operation = document.definitions[0]
    variables = get_variable_values(graphql_schema(schema), operation.variable_definitions, {"input": given})  # type: ignore[attr-defined]
    assert not isinstance(variables, list), variables
    field = graphql_schema(schema).query_type.fields[root]  # type: ignore[union-attr]
    raw = get_argument_values(field, operation.selection_set.selections[0], variables)  # type: ignore[attr-defined]
    definition = field.extensions["strawberry-definition"]
    strawberrys = convert_arguments(raw, definition.arguments, schema.schema_converter.scalar_registry, schema.config)
    assert report_input(raw["input"]) == strawberrys["input"]
    # And the served schema's field is resolved by it, not by Strawberry's wrapper.
    assert field.resolve.__qualname__.startswith("direct_resolvers.")
