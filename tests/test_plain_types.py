"""Plain types completed in one pass (schema/direct.py ``PlainCompletion``) give
what graphql-core's own completion gives: the same data, and where a value
breaks its type, the same errors at the same paths."""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Any

import pytest
import strawberry
from graphql import Executor, execute, parse

from permissions.policy import load_policy_set
from schema.build import build_schema
from schema.direct import PLAIN, PlainCompletion, install_plain_types
from server.graphql_http import SerialRoots
from tests.conftest import Gql


@strawberry.enum
class Colour(enum.Enum):
    RED = "red"
    DEEP_BLUE = "blue"


@strawberry.type
class Leaf:
    name: str
    size: int | None
    ratio: float | None
    colour: Colour
    flag: bool
    tags: list[str]
    code: strawberry.ID


@strawberry.type
class Branch:
    label: str
    leaves: list[Leaf]
    first: Leaf | None

    @strawberry.field
    def computed(self) -> str:  # a resolver: Branch is not plain
        return self.label.upper()


@strawberry.type
class Twig:
    label: str
    leaves: list[Leaf]


def _leaf(i: int, **broken: Any) -> Leaf:
    values: dict[str, Any] = {
        "name": f"leaf {i}",
        "size": i if i % 3 else None,
        "ratio": i / 7,
        "colour": Colour.DEEP_BLUE if i % 2 else Colour.RED,
        "flag": bool(i % 2),
        "tags": [f"t{j}" for j in range(i % 3)],
        "code": strawberry.ID(f"c{i}"),
    }
    values.update(broken)
    return Leaf(**values)


BROKEN: dict[str, dict[str, Any]] = {
    "none": {},
    "null": {"name": None},
    "nan": {"ratio": math.nan},
    "big": {"size": 2**40},
    "colour": {"colour": "purple"},
    "tag": {"tags": ["a", None]},
    "flag": {"flag": "yes"},
}


@strawberry.type
class Query:
    @strawberry.field
    def twig(self, broken: str = "none") -> Twig:
        leaves = [_leaf(i) for i in range(5)]
        leaves[3] = _leaf(3, **BROKEN[broken])
        return Twig(label="twig", leaves=leaves)

    @strawberry.field
    def branch(self) -> Branch:
        leaves = [_leaf(i) for i in range(3)]
        return Branch(label="branch", leaves=leaves, first=leaves[0])

    @strawberry.field
    def odd(self) -> Twig:
        return {"label": "not a Twig", "leaves": []}  # type: ignore[return-value]


SCHEMA = strawberry.Schema(query=Query)
install_plain_types(SCHEMA._schema)

DOCUMENTS = [
    "{ twig { label leaves { name size ratio colour flag tags code } } }",
    "{ twig { __typename l: label leaves { __typename n: name name c: colour } } }",
    "query($no: Boolean!) { twig { leaves { name @include(if: $no) ...F } } } fragment F on Leaf { size ratio }",
    "query($no: Boolean!) { twig { ... on Twig { label @skip(if: $no) } leaves { ... on Leaf { tags } } } }",
    "{ branch { label computed leaves { name colour } first { code } } }",
    "{ a: twig { label } b: twig { leaves { flag } } }",
    "{ odd { label } }",
    *(f'{{ twig(broken: "{name}") {{ leaves {{ name size ratio colour flag tags }} }} }}' for name in BROKEN),
]


def test_the_plain_types_of_the_example_are_those_without_resolvers_all_the_way_down() -> None:
    assert {n for n, t in SCHEMA._schema.type_map.items() if PLAIN in getattr(t, "extensions", {})} == {
        "Leaf",
        "Twig",
    }


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("no", [True, False])
def test_one_pass_completion_gives_graphql_cores_data_and_errors(document: str, no: bool) -> None:
    parsed = parse(document)
    variables = {"no": no} if "$no" in document else None
    ours = execute(SCHEMA._schema, parsed, variable_values=variables, executor_class=SerialRoots)
    theirs = execute(SCHEMA._schema, parsed, variable_values=variables, executor_class=Executor)
    assert not hasattr(ours, "__await__") and not hasattr(theirs, "__await__")
    assert ours.data == theirs.data  # type: ignore[union-attr]
    assert [e.formatted for e in ours.errors or []] == [e.formatted for e in theirs.errors or []]  # type: ignore[union-attr]


def test_the_served_schemas_plain_types_hold_no_classified_field() -> None:
    schema = build_schema(load_policy_set([Path(__file__).parent / "policies"]))._schema
    plain = {n for n, t in schema.type_map.items() if PLAIN in getattr(t, "extensions", {})}
    # Reports, the policy's own documents, the audit log, governance settings and payloads:
    # none of them a student's field with a category.
    assert plain == {
        "AggregateReport",
        "AggregateRow",
        "AuditConnection",
        "AuditEntry",
        "CategoryDescription",
        "Consent",
        "DeletedCount",
        "DeletionCertificate",
        "DistrictSettings",
        "GroupValue",
        "PageInfo",
        "PolicyDocument",
        "PolicyRule",
        "PurposeDescription",
        "RecordActivityPayload",
        "RetentionSettings",
        "StudentExport",
    }
    for name in plain:
        for field in schema.type_map[name].fields.values():  # type: ignore[union-attr]
            assert not field.extensions["strawberry-definition"].extensions, (name, field)


REPORTS = [
    """query($d: ID!) { performanceReport(input: {scope: {districtId: $d}, groupBy: [SCHOOL, GRADE_LEVEL]}) {
         __typename minimumGroupSize suppressedRows
         rows { __typename group { dimension value label } suppressed suppressionReason students responses
                meanScore percentCorrect }
         total { students responses } } }""",
    """query($d: ID!, $no: Boolean!) {
       r: performanceReport(input: {scope: {districtId: $d}, groupBy: [SCHOOL, GRADE_LEVEL]}) {
         rows { ...M g: group { v: value } } total { ...M } } }
       fragment M on AggregateRow { students meanScore @include(if: $no) suppressed @skip(if: $no) }""",
    """query($d: ID!) { usageReport(input: {scope: {districtId: $d}, groupBy: [WEEK]}) {
         rows { group { dimension value label } activeMinutes sessions students } total { sessions } } }""",
    """{ policy { version summary purposes { purpose description } categories { category fields }
                 rules { role purpose categories scope aggregates requiresJustification } } }""",
    """{ policyVersions p: policy { __typename version material effectiveDate } }""",
]


async def test_served_documents_over_plain_types_answer_as_graphql_core_completes_them(
    gql: Gql, owner: Any, users: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", users["admin@northwind.example"])

    async def answers() -> list[dict[str, Any]]:
        out = []
        for document in REPORTS:
            for no in (True, False):
                body = await gql("admin@northwind.example", "REPORTING", document, {"d": str(district), "no": no})
                assert "errors" not in body, body["errors"]
                out.append(body["data"])
        return out

    first = await answers()
    again = await answers()  # the reports kept, and their completed forms
    monkeypatch.setattr(SerialRoots, "complete_object_value", Executor.complete_object_value)
    theirs = await answers()
    for ours_first, ours_again, graphql_cores in zip(first, again, theirs, strict=True):
        assert ours_first == graphql_cores
        assert ours_again == graphql_cores


async def test_a_report_asked_with_two_shapes_gives_each_its_own(gql: Gql, owner: Any, users: dict[str, Any]) -> None:
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", users["admin@northwind.example"])
    wide = await gql("admin@northwind.example", "REPORTING", REPORTS[0], {"d": str(district)})
    narrow = await gql("admin@northwind.example", "REPORTING", REPORTS[1], {"d": str(district), "no": True})
    assert set(wide["data"]["performanceReport"]["rows"][0]) == {
        "__typename",
        "group",
        "suppressed",
        "suppressionReason",
        "students",
        "responses",
        "meanScore",
        "percentCorrect",
    }
    assert set(narrow["data"]["r"]["rows"][0]) == {"students", "meanScore", "g"}
    assert len(wide["data"]["performanceReport"]["rows"]) == len(narrow["data"]["r"]["rows"])


async def test_a_documents_selections_are_made_once_not_for_every_request(
    gql: Gql, owner: Any, users: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", users["admin@northwind.example"])
    made: list[str] = []
    selection = PlainCompletion._selection

    def counted(self: PlainCompletion, graphql_type: Any, plain: Any, details: Any) -> Any:
        made.append(graphql_type.name)
        return selection(self, graphql_type, plain, details)

    monkeypatch.setattr(PlainCompletion, "_selection", counted)

    document = REPORTS[1].replace("r:", "once:")  # a text no other test has sent: its selections not yet made

    async def ask(no: bool) -> dict[str, Any]:
        body = await gql("admin@northwind.example", "REPORTING", document, {"d": str(district), "no": no})
        assert "errors" not in body, body["errors"]
        return body["data"]

    first = await ask(True)
    once = len(made)
    assert made[0] == "AggregateReport" and once > 1  # the report's, and its rows' within it
    assert await ask(True) == first and len(made) == once
    # Another value of a variable its @include / @skip read: another selection, made once too.
    other = await ask(False)
    assert other != first and len(made) == 2 * once
    assert await ask(False) == other and await ask(True) == first and len(made) == 2 * once
