"""Build-time guarantees: a schema or a policy that breaks the rules never serves.

The schemas here are defined inline, as Strawberry's own tests do, and go
through the same checks as the served schema.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import strawberry

from permissions.enums import DataCategory, Purpose
from permissions.policy import PolicyError, PolicySet, load_policy_set, parse_policy
from schema.build import SchemaPolicyError, build_schema, check_categories, check_policy, graphql_schema
from schema.classified import classified
from schema.compat import CONTRACT, incompatibilities

SHIPPED = Path(__file__).parent.parent / "permissions" / "policies" / "2020-04-01.toml"
POLICIES = load_policy_set()


# Inline schemas (module level: the annotations are strings resolved by name).


@strawberry.type(name="Student")
class LeakyStudent:
    id: strawberry.ID
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[object]

    @classified(DataCategory.DIRECTORY)
    def first_name(self) -> str | None:
        return "x"

    @strawberry.field
    def nickname(self) -> str | None:
        return "x"


@strawberry.type(name="Student")
class TidyStudent:
    id: strawberry.ID
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[object]

    @classified(DataCategory.DIRECTORY)
    def first_name(self) -> str | None:
        return "x"


@strawberry.type
class Tutor:
    id: strawberry.ID
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[object]
    hourly_rate: int

    @classified(DataCategory.STAFF)
    def first_name(self) -> str | None:
        return "x"


@strawberry.type(name="Query")
class LeakyQuery:
    student: LeakyStudent | None = None


@strawberry.type(name="Query")
class TidyQuery:
    student: TidyStudent | None = None


@strawberry.type(name="Query")
class TutorQuery:
    tutor: Tutor | None = None


def test_the_served_schema_builds_against_the_shipped_and_the_test_policies() -> None:
    build_schema(POLICIES)
    build_schema(load_policy_set([Path(__file__).parent / "policies"]))


def test_a_personal_field_without_a_category_fails_the_build_naming_the_field() -> None:
    with pytest.raises(SchemaPolicyError, match=r"Student\.nickname") as failure:
        build_schema(POLICIES, strawberry.Schema(query=LeakyQuery))
    message = str(failure.value)
    assert "@classified" in message and "NON_PERSONAL_FIELDS" in message
    assert "Student.firstName" not in message and "Student.id" not in message
    # The same type with every field declared builds.
    build_schema(POLICIES, strawberry.Schema(query=TidyQuery))


def test_a_type_with_classified_fields_must_be_listed_as_personal() -> None:
    with pytest.raises(SchemaPolicyError, match=r"Types Tutor have classified fields"):
        check_categories(strawberry.Schema(query=TutorQuery))


def without_block(text: str, table: str, key: str, value: str) -> str:
    """The policy text without the [[table]] entry whose ``key`` is ``value``."""
    entry = rf'\[\[{table}\]\]\n{key} = "{value}"\ndescription = "[^\n]*"\n'
    changed, count = re.subn(entry, "", text)
    assert count == 1, f"no [[{table}]] entry for {value}"
    return changed


@pytest.mark.parametrize("category", ["DEVICE", "CONTACT"])
def test_a_policy_without_a_category_entry_is_refused(category: str, tmp_path: Path) -> None:
    text = without_block(SHIPPED.read_text("utf-8"), "categories", "category", category)
    with pytest.raises(PolicyError, match=rf"category\(ies\) {category}"):
        parse_policy(text)
    (tmp_path / "2020-04-01.toml").write_text(text)
    with pytest.raises(PolicyError, match=category):
        load_policy_set([tmp_path])

    # And should a document reach the build without the entry, the build refuses it too.
    doc = POLICIES.latest()
    thinner = dataclasses.replace(doc, categories=tuple(c for c in doc.categories if c.category.value != category))
    with pytest.raises(SchemaPolicyError, match=rf"Category {category} .* no entry"):
        check_policy(build_schema(POLICIES), PolicySet([thinner]))


@pytest.mark.parametrize("purpose", ["SUPPORT", "LEGAL_COMPLIANCE"])
def test_a_policy_without_a_purpose_entry_is_refused(purpose: str) -> None:
    text = without_block(SHIPPED.read_text("utf-8"), "purposes", "purpose", purpose)
    with pytest.raises(PolicyError, match=rf"purpose\(s\) {purpose}"):
        parse_policy(text)
    doc = POLICIES.latest()
    thinner = dataclasses.replace(doc, purposes=tuple(p for p in doc.purposes if p.purpose is not Purpose(purpose)))
    with pytest.raises(SchemaPolicyError, match=rf"Purpose {purpose} has no entry"):
        check_policy(build_schema(POLICIES), PolicySet([thinner]))


# ------------------------------------------------------------------ contract


@pytest.fixture(scope="module")
def served_sdl() -> str:
    return build_schema(POLICIES).as_str()


def test_the_served_sdl_keeps_the_contract(served_sdl: str) -> None:
    assert incompatibilities(served_sdl) == []


def test_the_contract_copy_is_the_shared_contract() -> None:
    # The shared spec sits beside the repository's root (../shared), in CI as here.
    candidates = [
        Path(__file__).resolve().parents[2] / "shared/spec/schema.graphql",
        Path("/work/shared/spec/schema.graphql"),
    ]
    shared = next((c for c in candidates if c.exists()), None)
    if shared is None:
        pytest.skip("the shared spec folder (../shared) is not beside this checkout")
    assert CONTRACT.read_text() == shared.read_text()


def test_removing_a_field_breaks_the_contract(served_sdl: str) -> None:
    lines = served_sdl.splitlines()
    start = lines.index("type Student implements Node {")
    index = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("stateId:"))
    first = index
    if lines[index - 1].strip() == '"""':  # the field's description block goes with it
        first = max(i for i in range(start, index - 1) if lines[i].strip().startswith('"""'))
    changed = "\n".join(lines[:first] + lines[index + 1 :])
    problems = incompatibilities(changed)
    assert any("Student.stateId" in p for p in problems), problems


@pytest.mark.parametrize(
    ("before", "after", "name"),
    [
        ("me: Viewer!", "me: Viewer", "Query.me"),
        ("ticket: String!", "ticket: String", "SupportGrant.ticket"),
        ("purposes: [PurposeDescription!]!", "purposes: [PurposeDescription]!", "PolicyDocument.purposes"),
    ],
)
def test_changing_nullability_breaks_the_contract(served_sdl: str, before: str, after: str, name: str) -> None:
    assert served_sdl.count(before) >= 1
    problems = incompatibilities(served_sdl.replace(before, after))
    assert any(name in p for p in problems), problems


def test_dropping_a_category_from_a_field_breaks_the_contract(served_sdl: str) -> None:
    changed = served_sdl.replace("ipAddress: String @classified(category: DEVICE)", "ipAddress: String")
    assert changed != served_sdl
    problems = incompatibilities(changed)
    assert problems == ["DeviceSession.ipAddress should carry @classified(category: DEVICE), has nothing"]


def test_every_operation_a_policy_can_name_is_a_field_of_the_served_schema_and_a_missing_one_is_named() -> None:
    from schema.gate import check_operations

    served = build_schema(POLICIES)
    fields = {
        name
        for type_name, graphql_type in graphql_schema(served).type_map.items()
        if not type_name.startswith("__")
        for name in (getattr(graphql_type, "fields", None) or {})
    }
    assert check_operations(fields) == []
    assert check_operations(fields - {"auditLog", "submitResponse"}) == [
        "operation auditLog is no field of the schema",
        "operation submitResponse is no field of the schema",
    ]
