"""Fuzzing: valid queries generated from the schema (hypothesis-graphql), sent
as several roles under several purposes. Whatever the query:

- the server never answers 5xx (nor INTERNAL);
- no field the policy denies for (role, purpose) carries a value (the
  expectation is POLICY.md's table as written by hand in test_policy_golden,
  not the policy data the server reads);
- every personal value returned has its audit entry (an ALLOW entry of the
  request, found by the X-Request-Id the test sent, naming that Type.field).

Bounded: FUZZ_EXAMPLES examples (500 unless PLEDGEQL_FUZZ_EXAMPLES says; each one request),
deadline off; about a minute on the CI machine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import graphql
import httpx
import pytest
import pytest_asyncio
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    parse,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import queries

from permissions.enums import DataCategory, Purpose, Role
from schema.build import graphql_schema
from schema.catalog import category_fields
from server.auth import mint_token
from server.settings import Settings
from tests.conftest import ALL_PURPOSES
from tests.test_policy_golden import GOLDEN

FUZZ_EXAMPLES = int(os.environ.get("PLEDGEQL_FUZZ_EXAMPLES", "500"))
# Examples per outcome, for the check that the fuzzing reached personal data at all.
SEEN: dict[str, int] = {}
SERVER_FAILURES = {"INTERNAL", "DATABASE_UNAVAILABLE", "AUDIT_UNAVAILABLE"}

# (username, role, purpose): every role, allowed purposes with wide and narrow
# grants, and one purpose the role may not declare at all.
CALLERS: list[tuple[str, Role, Purpose]] = [
    ("teacher1@northwind.example", Role.TEACHER, Purpose.INSTRUCTION),
    ("teacher1@northwind.example", Role.TEACHER, Purpose.PERSONALIZATION),
    ("teacher1@riverside.example", Role.TEACHER, Purpose.REPORTING),
    ("principal1@northwind.example", Role.SCHOOL_ADMIN, Purpose.REPORTING),
    ("admin@northwind.example", Role.DISTRICT_ADMIN, Purpose.RECORD_ACCESS),
    ("admin@northwind.example", Role.DISTRICT_ADMIN, Purpose.COMMUNICATION),
    ("student1@northwind.example", Role.STUDENT, Purpose.STUDENT_LEARNING),
    ("student1@northwind.example", Role.STUDENT, Purpose.PERSONALIZATION),
    ("guardian1@northwind.example", Role.GUARDIAN, Purpose.REPORTING),
    ("analyst@pledgeql.example", Role.ANALYST, Purpose.PRODUCT_ANALYTICS),
    ("support@pledgeql.example", Role.SUPPORT, Purpose.SUPPORT),
    ("teacher1@northwind.example", Role.TEACHER, Purpose.RECORD_ACCESS),
]

# Callers whose purpose reaches students' records are drawn more often.
WEIGHTED_CALLERS = [*CALLERS, *[c for c in CALLERS if GOLDEN.get((c[1], c[2]), set()) - {DataCategory.STAFF}] * 3]

CATEGORY_OF: dict[str, DataCategory] = {
    name: DataCategory(category) for category, names in category_fields().items() for name in names
}


def personal_values(document: graphql.DocumentNode, schema: GraphQLSchema, data: Any) -> Iterator[tuple[str, Any]]:
    """(Type.field, value) for every classified field that came back non-null."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    root = schema.query_type
    if root is None or not isinstance(data, dict):
        return
    yield from _walk(operation.selection_set, root, data, fragments, schema)


def _walk(
    selection_set: SelectionSetNode,
    parent: GraphQLNamedType,
    value: Any,
    fragments: dict[str, FragmentDefinitionNode],
    schema: GraphQLSchema,
) -> Iterator[tuple[str, Any]]:
    if isinstance(value, list):
        for item in value:
            yield from _walk(selection_set, parent, item, fragments, schema)
        return
    if not isinstance(value, dict):
        return
    for selection in selection_set.selections:
        if isinstance(selection, InlineFragmentNode):
            condition = selection.type_condition
            if (
                condition is None
                or condition.name.value == parent.name
                or value.get("__typename")
                in (
                    None,
                    condition.name.value,
                )
            ):
                yield from _walk(selection.selection_set, parent, value, fragments, schema)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments[selection.name.value]
            yield from _walk(fragment.selection_set, parent, value, fragments, schema)
        elif isinstance(selection, FieldNode):
            name = selection.name.value
            key = selection.alias.value if selection.alias else name
            if name.startswith("__") or key not in value:
                continue
            field = parent.fields[name]  # type: ignore[attr-defined]
            result = value[key]
            qualified = f"{parent.name}.{name}"
            if qualified in CATEGORY_OF and result is not None:
                yield qualified, result
            if selection.selection_set is not None and result is not None:
                yield from _walk(selection.selection_set, get_named_type(field.type), result, fragments, schema)


@pytest_asyncio.fixture(scope="module")
async def ids(owner: Any) -> list[str]:
    """Ids the callers can reach (teacher1's classes, student1, their school and district), ids
    outside their scope, and ids that exist nowhere."""
    rows = await owner.fetch(
        "(SELECT id FROM users WHERE username IN ('student1@northwind.example', 'student2@northwind.example', "
        "'student1@riverside.example')) "
        "UNION ALL (SELECT ct.class_id FROM class_teachers ct JOIN users u ON u.id = ct.teacher_id "
        "WHERE u.username = 'teacher1@northwind.example') "
        "UNION ALL (SELECT school_id FROM users WHERE username = 'student1@northwind.example') "
        "UNION ALL (SELECT district_id FROM users WHERE username = 'student1@northwind.example') "
        "UNION ALL (SELECT id FROM assignments LIMIT 1)"
    )
    return [str(r["id"]) for r in rows] + [str(uuid.uuid4()), "not-an-id"]


ROOT_FIELDS = [
    "me",
    "district",
    "school",
    "class",
    "student",
    "students",
    "assessments",
    "assignment",
    "performanceReport",
    "usageReport",
    "policy",
    "auditLog",
    "dataRequests",
    "supportGrants",
]


# The roots that reach students' records are drawn more often.
WEIGHTED_ROOTS = [*ROOT_FIELDS, *["students"] * 5, *["me", "student", "class", "school"] * 3]


@pytest.fixture(scope="module")
def strategies(app: Any, ids: list[str]) -> dict[str, st.SearchStrategy[Any]]:
    """One strategy per root field: a failing non-null root field nulls the whole response, so each
    query asks one root field and the others' errors cannot hide its values. Arguments take real
    ids, small page sizes and a few plain strings, so that most queries reach data."""
    schema: GraphQLSchema = graphql_schema(app.state.pledgeql.schema)
    scalars = {
        "ID": st.sampled_from(ids).map(lambda v: graphql.StringValueNode(value=v)),
        "Int": st.integers(min_value=1, max_value=30).map(lambda v: graphql.IntValueNode(value=str(v))),
        "String": st.sampled_from([None, None, "e", "2020-04-01"]).map(
            lambda v: graphql.NullValueNode() if v is None else graphql.StringValueNode(value=v)
        ),
        "Date": st.dates().map(lambda d: graphql.StringValueNode(value=d.isoformat())),
        "DateTime": st.datetimes().map(lambda d: graphql.StringValueNode(value=d.isoformat() + "Z")),
        "JSON": st.just(graphql.NullValueNode()),
    }
    return {name: queries(schema, fields=[name], custom_scalars=scalars, allow_x00=False) for name in ROOT_FIELDS}


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
async def test_generated_queries_never_fail_the_server_leak_a_denied_field_or_skip_the_audit(
    data: st.DataObject,
    strategies: dict[str, st.SearchStrategy[Any]],
    client: httpx.AsyncClient,
    app: Any,
    owner: Any,
    settings: Settings,
    users: dict[str, uuid.UUID],
) -> None:
    root = data.draw(st.sampled_from(WEIGHTED_ROOTS), label="root field")
    query = data.draw(strategies[root], label="query")
    username, role, purpose = data.draw(st.sampled_from(WEIGHTED_CALLERS), label="caller")
    request_id = "fuzz-" + uuid.uuid4().hex
    token = mint_token(settings, users[username], ALL_PURPOSES)
    response = await client.post(
        "/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {token}", "X-Purpose": purpose.value, "X-Request-Id": request_id},
    )
    assert response.status_code < 500, response.text
    body = response.json()
    codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
    assert not codes & SERVER_FAILURES, body["errors"]
    assert None not in codes, "every error carries its code"

    ran = "ran, data null" if body.get("data") is None else "ran"
    event("outcome: " + (ran if "data" in body else "refused") + " " + ",".join(sorted(str(c) for c in codes)))
    allowed = GOLDEN.get((role, purpose), set())
    returned = list(personal_values(parse(query), graphql_schema(app.state.pledgeql.schema), body.get("data")))
    denied = [(name, CATEGORY_OF[name]) for name, _ in returned if CATEGORY_OF[name] not in allowed]
    assert denied == [], f"{role.value} under {purpose.value} received denied fields"
    if returned:
        rows = await owner.fetch(
            "SELECT fields FROM audit_entries WHERE client_request_id = $1 AND decision = 'ALLOW'", request_id
        )
        audited = {f for row in rows for f in row["fields"]}
        missing = sorted({name for name, _ in returned} - audited)
        assert missing == [], f"values returned without an audit entry: {missing}"
        event("returned personal values")
        SEEN["personal"] = SEEN.get("personal", 0) + 1
    SEEN["examples"] = SEEN.get("examples", 0) + 1


def test_the_fuzzing_reached_personal_data_and_its_audit() -> None:
    if not SEEN:
        pytest.skip("runs after the fuzzing test, in the same session")
    # Not a vacuous pass: a share of the generated queries returned personal values,
    # each of them checked against the policy and the audit above.
    assert SEEN.get("personal", 0) >= max(5, SEEN["examples"] // 50), SEEN
