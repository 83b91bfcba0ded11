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
