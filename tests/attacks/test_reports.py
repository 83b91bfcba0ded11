"""Attacks on the aggregate reports (issue 14, holes 1 and 2), over HTTP on the demo data.

Each test performs the attack as the careful adversary did and asserts that
it no longer singles anyone out.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Gql

ANALYST = "analyst@pledgeql.example"
ADMIN = "admin@northwind.example"

PERFORMANCE = """
query Report($input: ReportInput!) {
  performanceReport(input: $input) {
    minimumGroupSize
    rows { group { dimension value } suppressed students responses meanScore percentCorrect }
    total { suppressed students responses meanScore percentCorrect }
  }
}"""
USAGE = """
query Usage($input: ReportInput!) {
  usageReport(input: $input) {
    minimumGroupSize
    rows { group { dimension value } suppressed students activeMinutes sessions }
    total { suppressed students activeMinutes sessions }
  }
}"""


async def _northwind(owner: Any) -> uuid.UUID:
    district: uuid.UUID = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    return district


async def _ask(gql: Gql, user: str, purpose: str, query: str, report_input: dict[str, Any]) -> dict[str, Any]:
    body = await gql(user, purpose, query, {"input": report_input})
    assert "errors" not in body, body.get("errors")
    report: dict[str, Any] = next(iter(body["data"].values()))
    return report


def _rows(report: dict[str, Any]) -> dict[tuple[str | None, ...], dict[str, Any]]:
    return {tuple(g["value"] for g in row["group"]): row for row in report["rows"]}


@pytest.mark.parametrize("group_by", [["CLASS"], ["CLASS", "GENDER"]])
async def test_opt_out_differencing_the_same_report_under_reporting_and_product_analytics_differs_by_no_one(
    gql: Gql, owner: Any, group_by: list[str]
) -> None:
    district = await _northwind(owner)
    opted_out = await owner.fetchval(
        "SELECT count(*) FROM consents WHERE district_id = $1 AND analytics_opt_out", district
    )
    assert opted_out > 0, "the demo data must hold opted-out students for this attack to mean anything"
    report_input = {"scope": {"districtId": str(district)}, "groupBy": group_by}
    reporting = await _ask(gql, ANALYST, "REPORTING", PERFORMANCE, report_input)
    analytics = await _ask(gql, ANALYST, "PRODUCT_ANALYTICS", PERFORMANCE, report_input)
    assert reporting == analytics
    assert any(not row["suppressed"] for row in reporting["rows"])


async def test_opt_out_differencing_the_districts_own_report_still_counts_opted_out_students(
    gql: Gql, owner: Any
) -> None:
    district = await _northwind(owner)
    report_input = {"scope": {"districtId": str(district)}}
    own = await _ask(gql, ADMIN, "REPORTING", PERFORMANCE, report_input)
    analyst = await _ask(gql, ANALYST, "REPORTING", PERFORMANCE, report_input)
    students = await owner.fetchval("SELECT count(DISTINCT student_id) FROM responses WHERE district_id = $1", district)
    kept = await owner.fetchval(
        "SELECT count(DISTINCT r.student_id) FROM responses r WHERE r.district_id = $1 AND NOT EXISTS "
        "(SELECT 1 FROM consents c WHERE c.district_id = r.district_id AND c.student_id = r.student_id "
        "AND c.analytics_opt_out)",
        district,
    )
    assert own["total"]["students"] == students
    assert analyst["total"]["students"] == kept < students


# The students of a school counted more than once by CLASS (enrolled in two of
# its classes on the day of an event), and by ETHNICITY (two ethnicities).
_DOUBLE_BY_CLASS = """
SELECT count(*) FROM (
  SELECT ev.student_id FROM activity_events ev
  JOIN users u ON u.district_id = ev.district_id AND u.id = ev.student_id
  LEFT JOIN enrollments en ON en.district_id = ev.district_id AND en.student_id = ev.student_id
   AND en.begin_date <= (ev.occurred_at AT TIME ZONE 'UTC')::date
   AND (en.end_date IS NULL OR en.end_date >= (ev.occurred_at AT TIME ZONE 'UTC')::date)
  WHERE u.school_id = $1
  GROUP BY ev.student_id
  HAVING count(DISTINCT en.class_id) + max(CASE WHEN en.class_id IS NULL THEN 1 ELSE 0 END) > 1
) s"""
_DOUBLE_BY_ETHNICITY = """
SELECT count(*) FROM users u WHERE u.school_id = $1 AND u.role = 'STUDENT' AND cardinality(u.ethnicity) > 1
AND EXISTS (SELECT 1 FROM activity_events ev WHERE ev.district_id = u.district_id AND ev.student_id = u.id)"""


async def _schools_where_a_small_group_counts_twice(owner: Any, sql: str, k: int) -> list[uuid.UUID]:
    rows = await owner.fetch("SELECT s.id FROM schools s JOIN districts d ON d.id = s.district_id ORDER BY s.name")
    small = []
    for row in rows:
        double = await owner.fetchval(sql, row["id"])
        if 0 < double < k:
            small.append(row["id"])
    return small


async def _make_a_small_group_count_twice(owner: Any, sql: str, dimension: str) -> uuid.UUID:
    """A school of the demo data in which 1 to k-1 students count twice by
    ``dimension``, and (for ETHNICITY) every group of the report is at least k."""
    school = await owner.fetchrow(
        "SELECT s.id, s.district_id FROM schools s JOIN districts d ON d.id = s.district_id "
        "WHERE d.name = 'Northwind Unified' ORDER BY s.name LIMIT 1"
    )
    if dimension == "CLASS" and await owner.fetchval(sql, school["id"]) in range(1, 10):
        return uuid.UUID(str(school["id"]))
    students = await owner.fetch(
        "SELECT u.id FROM users u WHERE u.school_id = $1 AND u.role = 'STUDENT' AND EXISTS "
        "(SELECT 1 FROM activity_events ev WHERE ev.district_id = u.district_id AND ev.student_id = u.id) "
        "ORDER BY u.id",
        school["id"],
    )
    if dimension == "ETHNICITY":
        # Two large groups that share three students: every row is at least k.
        ids = [r["id"] for r in students]
        half = len(ids) // 2
        await owner.execute("UPDATE users SET ethnicity = ARRAY['White'] WHERE id = ANY($1::uuid[])", ids[:half])
        await owner.execute("UPDATE users SET ethnicity = ARRAY['Hispanic'] WHERE id = ANY($1::uuid[])", ids[half:])
        await owner.execute(
            "UPDATE users SET ethnicity = ARRAY['Hispanic', 'White'] WHERE id = ANY($1::uuid[])", ids[:3]
        )
        await owner.execute(
            "UPDATE users SET ethnicity = ARRAY['White'] WHERE school_id = $1 AND role = 'STUDENT' "
            "AND NOT (id = ANY($2::uuid[]))",
            school["id"],
            ids,
        )
    else:
        await owner.execute(
            "DELETE FROM enrollments e USING users u WHERE u.id = e.student_id AND u.school_id = $1 "
            "AND e.class_id IN (SELECT id FROM classes c WHERE c.school_id = $1) AND "
            "e.student_id IN (SELECT student_id FROM enrollments e2 JOIN classes c2 ON c2.id = e2.class_id "
            "WHERE c2.school_id = $1 GROUP BY student_id HAVING count(*) > 1) AND e.class_id <> "
            "(SELECT min(e3.class_id::text)::uuid FROM enrollments e3 WHERE e3.student_id = e.student_id)",
            school["id"],
        )
    assert 0 < await owner.fetchval(sql, school["id"]) < 10
    return uuid.UUID(str(school["id"]))


@pytest.mark.parametrize(("dimension", "sql"), [("CLASS", _DOUBLE_BY_CLASS), ("ETHNICITY", _DOUBLE_BY_ETHNICITY)])
async def test_counted_twice_the_rows_of_a_schools_usage_report_minus_its_total_isolate_no_small_group(
    gql: Gql, owner: Any, dimension: str, sql: str
) -> None:
    school = await _make_a_small_group_count_twice(owner, sql, dimension)
    k_value = await owner.fetchval(
        "SELECT d.minimum_group_size FROM districts d JOIN schools s ON s.district_id = d.id WHERE s.id = $1", school
    )
    double = await owner.fetchval(sql, school)
    assert 0 < double < k_value
    by_dimension = await _ask(
        gql, ADMIN, "REPORTING", USAGE, {"scope": {"schoolId": str(school)}, "groupBy": [dimension]}
    )
    # The same report without the dimension gives the total too.
    alone = await _ask(gql, ADMIN, "REPORTING", USAGE, {"scope": {"schoolId": str(school)}})
    assert alone["total"] == by_dimension["total"]
    rows = by_dimension["rows"]
    assert len(rows) > 1
    shown = [row for row in rows if not row["suppressed"]]
    # Subtraction needs every row: at least two are hidden, so neither the
    # students counted twice nor a hidden row follows from the rest.
    assert len(rows) - len(shown) >= 2
    assert all(row["students"] is None and row["activeMinutes"] is None for row in rows if row["suppressed"])


# Students of a district with responses, not opted out, per grade and gender:
# what an analyst's performance report by GRADE_LEVEL x GENDER counts of it.
_DISTRICT_CELLS = """
SELECT u.grade_level, u.gender, count(*) AS students FROM users u
WHERE u.district_id = $1 AND u.role = 'STUDENT'
AND EXISTS (SELECT 1 FROM responses r WHERE r.district_id = u.district_id AND r.student_id = u.id)
AND NOT EXISTS (SELECT 1 FROM consents c WHERE c.district_id = u.district_id AND c.student_id = u.id
                AND c.analytics_opt_out)
GROUP BY u.grade_level, u.gender"""


@pytest.mark.parametrize("dropped", ["PRODUCT_ANALYTICS", "REPORTING"])
async def test_cross_purpose_differencing_an_analysts_two_purposes_over_different_districts_isolate_no_small_group(
    gql: Gql, owner: Any, dropped: str
) -> None:
    """Riverside stops authorizing one of the analysts' purposes: the same
    report under REPORTING and under PRODUCT_ANALYTICS then counts different
    districts, and subtracting them would give Riverside's cells."""
    riverside = await owner.fetchval("SELECT id FROM districts WHERE name = 'Riverside Unified'")
    k = await owner.fetchval("SELECT max(minimum_group_size) FROM districts")
    cells = await owner.fetch(_DISTRICT_CELLS, riverside)
    assert any(0 < c["students"] < k for c in cells), "the attack needs a small cell of Riverside's"
    before = await owner.fetchval("SELECT authorized_purposes FROM districts WHERE id = $1", riverside)
    await owner.execute(
        "UPDATE districts SET authorized_purposes = array_remove(authorized_purposes, $2) WHERE id = $1",
        riverside,
        dropped,
    )
    try:
        report_input = {"scope": {"allDistricts": True}, "groupBy": ["GRADE_LEVEL", "GENDER"]}
        reporting = await _ask(gql, ANALYST, "REPORTING", PERFORMANCE, report_input)
        analytics = await _ask(gql, ANALYST, "PRODUCT_ANALYTICS", PERFORMANCE, report_input)
    finally:
        await owner.execute("UPDATE districts SET authorized_purposes = $2 WHERE id = $1", riverside, before)

    one, other = _rows(reporting), _rows(analytics)
    # Both reports hide the same cells, so no hidden cell of one is shown by the
    # other (a group with no student in one report's districts is not a row of it).
    both = one.keys() & other.keys()
    assert {key for key in both if one[key]["suppressed"]} == {key for key in both if other[key]["suppressed"]}
    shown = [key for key in one.keys() & other.keys() if not one[key]["suppressed"]]
    assert shown, "the reports must still publish cells for the comparison to mean anything"
    for key in shown:
        difference = abs(one[key]["students"] - other[key]["students"])
        assert difference == 0 or difference >= k, (key, difference)
    totals = abs(reporting["total"]["students"] - analytics["total"]["students"])
    assert reporting["total"]["suppressed"] or totals == 0 or totals >= k
    assert reporting["minimumGroupSize"] == analytics["minimumGroupSize"] == k
