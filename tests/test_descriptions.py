"""The served schema keeps every description of the contract, and tells introspection users which
fields are personal (issue 16, item 8)."""

from __future__ import annotations

import pytest
from graphql import build_schema as parse_sdl
from graphql import graphql_sync

from permissions.policy import load_policy_set
from schema.build import build_schema, graphql_schema
from schema.catalog import category_fields
from schema.descriptions import category_note, contract_descriptions, described
from server.commands.cli import main as cli_main


def served_by_the_schema_command(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert cli_main(["schema"]) == 0
    schema = parse_sdl(capsys.readouterr().out)
    return {coordinate: element.description or "" for coordinate, element in described(schema)}


def classified() -> dict[str, str]:
    return {name: category for category, names in category_fields().items() for name in names}


def test_the_schema_command_keeps_every_description_of_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    served = served_by_the_schema_command(capsys)
    contract = contract_descriptions()
    assert len(contract) > 50
    categories = classified()
    missing = []
    for coordinate, text in contract.items():
        expected = text
        if coordinate in categories:
            expected = f"{text}\n\n{category_note(categories[coordinate])}"
        if served.get(coordinate) != expected:
            missing.append(coordinate)
    assert missing == []


def test_the_descriptions_the_issue_found_missing_are_served(capsys: pytest.CaptureFixture[str]) -> None:
    served = served_by_the_schema_command(capsys)
    assert served["DataCategory.DIRECTORY"] == "Names, username, grade level."
    assert served["Role.ANALYST"].startswith("Internal staff")
    assert served["SuppressionReason.SMALL_GROUP"].startswith("Fewer students")
    assert served["Purpose"].startswith("Why the data is being used")
    assert served["DistrictSettings.authorizedPurposes"] and served["DistrictSettings.directRecordAccess"]


def test_every_classified_field_names_its_category_in_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    served = served_by_the_schema_command(capsys)
    categories = classified()
    assert len(categories) > 30
    for coordinate, category in categories.items():
        assert served[coordinate].endswith(category_note(category)), coordinate
    assert "Data category" not in served["Student.id"] and "Data category" not in served["Class.name"]


def test_introspection_shows_a_personal_fields_category() -> None:
    schema = graphql_schema(build_schema(load_policy_set()))
    result = graphql_sync(schema, '{ __type(name: "Student") { fields { name description } } }')
    assert result.errors is None and result.data is not None
    fields = {f["name"]: f["description"] or "" for f in result.data["__type"]["fields"]}
    assert fields["firstName"].endswith(category_note("DIRECTORY"))
    assert fields["studentNumber"].endswith(category_note("IDENTIFIER"))
    assert "Data category" not in fields["id"]


def test_building_the_schema_twice_does_not_repeat_the_category() -> None:
    policies = load_policy_set()
    build_schema(policies)
    schema = graphql_schema(build_schema(policies))
    description = schema.type_map["Student"].fields["firstName"].description  # type: ignore[attr-defined]
    assert description.count("Data category") == 1
