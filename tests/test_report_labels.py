"""GroupValue.label: what a person reads for each group of a report, never personal data.

Over HTTP on the demo data, for every dimension: the label is the district's,
school's, class's or assessment's name, the week's first day, a flag in words,
or the value itself (grade level, gender, ethnicity, subject, skill). The
analyst, who cannot look a school up, reads the same names.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from tests.conftest import Gql

ADMIN = "admin@northwind.example"
ANALYST = "analyst@pledgeql.example"
REPORT = """
query Report($input: ReportInput!) {
  performanceReport(input: $input) { rows { group { dimension value label } suppressed } }
}"""
USAGE = """
query Usage($input: ReportInput!) {
  usageReport(input: $input) { rows { group { dimension value label } suppressed } }
}"""
DIMENSIONS = [
    "DISTRICT",
    "SCHOOL",
    "CLASS",
    "GRADE_LEVEL",
    "SUBJECT",
    "ASSESSMENT",
    "SKILL",
    "WEEK",
    "GENDER",
    "ETHNICITY",
    "ENGLISH_LEARNER",
    "SPECIAL_EDUCATION",
    "ECONOMICALLY_DISADVANTAGED",
]


async def _northwind(owner: Any) -> uuid.UUID:
    district: uuid.UUID = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    return district


async def _names(owner: Any, sql: str) -> dict[str, str]:
    return {str(r["id"]): r["name"] for r in await owner.fetch(sql)}


async def _expected(owner: Any, dimension: str, value: str | None) -> str | None:
    if value is None:
        return "No class (practice outside an assignment)" if dimension == "CLASS" else "Not recorded"
    lookups = {
        "DISTRICT": "SELECT id, name FROM districts",
        "SCHOOL": "SELECT id, name FROM schools",
        "CLASS": "SELECT id, name FROM classes",
        "ASSESSMENT": "SELECT id, title AS name FROM assessments",
    }
    if dimension in lookups:
        return (await _names(owner, lookups[dimension]))[value]
    if dimension == "WEEK":
        monday = dt.date.fromisoformat(value)
        assert monday.weekday() == 0
        return f"Week of Monday {monday.day} {monday.strftime('%B %Y')}"
    flags = {
        "ENGLISH_LEARNER": ("English learner", "Not an English learner"),
        "SPECIAL_EDUCATION": ("Special education", "Not in special education"),
        "ECONOMICALLY_DISADVANTAGED": ("Economically disadvantaged", "Not economically disadvantaged"),
    }
    if dimension in flags:
        return flags[dimension][0 if value == "true" else 1]
    return value


@pytest.mark.parametrize("dimension", DIMENSIONS)
async def test_each_dimensions_groups_carry_the_label_a_person_reads(gql: Gql, owner: Any, dimension: str) -> None:
    district = await _northwind(owner)
    body = await gql(
        ADMIN, "REPORTING", REPORT, {"input": {"scope": {"districtId": str(district)}, "groupBy": [dimension]}}
    )
    assert "errors" not in body, body
    rows = body["data"]["performanceReport"]["rows"]
    assert rows
    for row in rows:
        (group,) = row["group"]
        assert group["dimension"] == dimension
        assert group["label"] == await _expected(owner, dimension, group["value"])


async def test_the_analyst_reads_school_and_class_names_it_cannot_look_up(gql: Gql, owner: Any) -> None:
    body = await gql(ANALYST, "REPORTING", REPORT, {"input": {"scope": {"allDistricts": True}, "groupBy": ["SCHOOL"]}})
    assert "errors" not in body, body
    schools = await _names(owner, "SELECT id, name FROM schools")
    rows = body["data"]["performanceReport"]["rows"]
    assert rows and all(r["group"][0]["label"] == schools[r["group"][0]["value"]] for r in rows)
    looked_up = await gql(
        ANALYST, "REPORTING", "query($id: ID!) { school(id: $id) { name } }", {"id": rows[0]["group"][0]["value"]}
    )
    assert [e["extensions"]["code"] for e in looked_up["errors"]] == ["NOT_FOUND"]
    usage = await gql(
        ANALYST,
        "PRODUCT_ANALYTICS",
        USAGE,
        {"input": {"scope": {"districtId": str(await _northwind(owner))}, "groupBy": ["CLASS", "WEEK"]}},
    )
    assert "errors" not in usage, usage
    classes = await _names(owner, "SELECT id, name FROM classes")
    for row in usage["data"]["usageReport"]["rows"]:
        by = {g["dimension"]: g for g in row["group"]}
        if by["CLASS"]["value"] is not None:
            assert by["CLASS"]["label"] == classes[by["CLASS"]["value"]]
        assert by["WEEK"]["label"].startswith("Week of Monday ")


async def test_no_label_ever_carries_personal_data(gql: Gql, owner: Any) -> None:
    district = await _northwind(owner)
    personal: set[str] = set()
    for row in await owner.fetch(
        "SELECT first_name, last_name, preferred_name, username, email FROM users WHERE district_id = $1", district
    ):
        personal.update(v.lower() for v in row.values() if v)
    labels: set[str] = set()
    for query, name, dims in (
        (REPORT, "performanceReport", DIMENSIONS),
        (USAGE, "usageReport", [d for d in DIMENSIONS if d not in ("SUBJECT", "ASSESSMENT", "SKILL")]),
    ):
        for dimension in dims:
            body = await gql(
                ADMIN, "REPORTING", query, {"input": {"scope": {"districtId": str(district)}, "groupBy": [dimension]}}
            )
            assert "errors" not in body, body
            labels.update(g["label"] for r in body["data"][name]["rows"] for g in r["group"])
    assert None not in labels
    words = {w.lower().strip("(),.'") for label in labels for w in label.split()}
    assert not (words & personal), sorted(words & personal)
    assert not any(label.lower() in personal for label in labels)
