"""Bounded lists count their real bound in the cost model (issue 16, item 2): the schema knows
some bounds (one per value of an enum), the database caps the others, and the numbers the code
counts are the numbers the database enforces."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from graphql import parse

from permissions.policy import load_policy_set
from schema.build import build_schema, graphql_schema
from server.limits import DATABASE_CAPS, Limits, list_bounds, measure_operation

# Which table holds each capped list.
TABLES = {"Class.teachers": "class_teachers", "Student.guardians": "guardian_links", "Assessment.items": "items"}


def cost(query: str) -> int:
    schema = graphql_schema(build_schema(load_policy_set()))
    document = parse(query)
    return measure_operation(schema, document, document.definitions[0], Limits()).cost  # type: ignore[arg-type]


def test_capped_lists_cost_their_cap_and_unbounded_ones_the_default_list_size() -> None:
    # class: 1 x (1 + teachers: 10 x (1 + id))
    assert cost('{ class(id: "c") { teachers { id } } }') == 1 + DATABASE_CAPS["Class.teachers"] * 2
    assert cost("{ assessments { items { id } } }") == 20 * (1 + DATABASE_CAPS["Assessment.items"] * 2)
    assert cost('{ class(id: "c") { students { id } } }') == 1 + 20 * 2


def test_lists_of_enum_values_cost_what_the_schema_knows() -> None:
    schema = graphql_schema(build_schema(load_policy_set()))
    bounds = list_bounds(schema)
    assert bounds["PolicyDocument.purposes"] == len(schema.type_map["Purpose"].values) == 9  # type: ignore[attr-defined]
    assert bounds["AggregateRow.group"] == len(schema.type_map["Dimension"].values)  # type: ignore[attr-defined]
    assert cost("{ policy { purposes { purpose } } }") == 1 + 9 * 2


async def test_the_database_enforces_the_caps_the_code_declares(owner: Any) -> None:
    rows = await owner.fetch(
        "SELECT c.relname, pg_get_triggerdef(t.oid) AS definition FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname LIKE '%\\_cap\\_%' AND NOT t.tgisinternal"
    )
    declared = {r["relname"]: r["definition"] for r in rows}
    assert set(declared) == set(TABLES.values())
    for field, table in TABLES.items():
        assert f"'{DATABASE_CAPS[field]}'" in declared[table], (field, declared[table])


async def fill(owner: Any, table: str, count: int) -> None:
    """Add rows to one list until it holds ``count`` (inside the caller's transaction)."""
    if table == "items":
        assessment = uuid.uuid4()
        await owner.execute("INSERT INTO assessments (id, title, subject) VALUES ($1, 'Cap', 'math')", assessment)
        await owner.executemany(
            "INSERT INTO items (id, assessment_id, position, prompt, choices, skill, answer_key) "
            "VALUES ($1, $2, $3, 'p', ARRAY['a','b'], 'skill', 'a')",
            [(uuid.uuid4(), assessment, n) for n in range(count)],
        )
        return
    users = await owner.fetch("SELECT district_id, id FROM users ORDER BY district_id, id LIMIT $1", count + 1)
    district, first = users[0]["district_id"], users[0]["id"]
    others = [u["id"] for u in users[1:] if u["district_id"] == district][:count]
    assert len(others) == count
    if table == "class_teachers":
        klass = await owner.fetchval("SELECT id FROM classes WHERE district_id = $1 LIMIT 1", district)
        await owner.execute("DELETE FROM class_teachers WHERE district_id = $1 AND class_id = $2", district, klass)
        await owner.copy_records_to_table(
            "class_teachers",
            records=[(district, klass, t) for t in others],
            columns=["district_id", "class_id", "teacher_id"],
        )
    else:
        await owner.execute("DELETE FROM guardian_links WHERE district_id = $1 AND student_id = $2", district, first)
        await owner.executemany(
            "INSERT INTO guardian_links (district_id, guardian_id, student_id, relationship) "
            "VALUES ($1, $2, $3, 'aunt')",
            [(district, g, first) for g in others],
        )


@pytest.mark.parametrize("field", sorted(TABLES))
async def test_a_list_may_reach_its_cap_and_no_further(owner: Any, field: str) -> None:
    cap, table = DATABASE_CAPS[field], TABLES[field]
    transaction = owner.transaction()
    await transaction.start()
    try:
        await fill(owner, table, cap)
    finally:
        await transaction.rollback()
    transaction = owner.transaction()
    await transaction.start()
    try:
        with pytest.raises(asyncpg.CheckViolationError, match=f"at most {cap}"):
            await fill(owner, table, cap + 1)
    finally:
        await transaction.rollback()
