"""Production plans every persisted query when it starts (issue 13, item 5): the log says how
many, and a query that cannot be planned stops the server, named by its file and operation."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from graphql import DocumentNode, OperationDefinitionNode, parse
from graphql.execution.values import VariableValues

from bench.scenarios import CLASS_VIEW
from permissions.policy import load_policy_set
from schema.build import build_schema, graphql_schema
from schema.compiled import Plan, Planner
from server import app as app_module
from server.app import create_app, plan_operations
from server.db import DatabaseUrls
from server.limits import Limits
from server.operations import Checker, OperationRegistry
from server.settings import Settings
from tests.test_tokens import PRODUCTION_AUDIT_KEY, Keys, make_keys, production

SHARED_OPERATIONS = Path(__file__).with_name("operations")  # the copy of ../shared/operations
# A read beside the policy document (a root the compiled reads do not answer): a read
# today's planner refuses (the resolver path serves it).
REFUSED = "query Twice($id: ID!) { class(id: $id) { id } policy { version } }\n"
MUTATION = "mutation Submit($input: SubmitResponseInput!) { submitResponse(input: $input) { correct } }\n"
REPORT = (
    "query Performance($districtId: ID!) { performanceReport(input: { scope: { districtId: $districtId }, "
    "groupBy: [SCHOOL] }) { minimumGroupSize rows { students } } }\n"
)
VERSIONS = "query Versions { policyVersions }\n"


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path)


def strict(settings: Settings, keys: Keys, operations: Path) -> Settings:
    """Production as an operator runs it: no way for an unplanned query to take the resolver path."""
    return production(settings, keys, operations_dir=operations, extra={"audit_key": PRODUCTION_AUDIT_KEY})


def folder(root: Path, files: dict[str, str]) -> Path:
    operations = root / "ops"
    operations.mkdir()
    for name, text in files.items():
        (operations / name).write_text(text)
    return operations


async def start(settings: Settings, db: DatabaseUrls) -> None:
    application = create_app(settings, db)
    async with application.router.lifespan_context(application):
        assert application.state.pledgeql.endpoint is not None


async def test_production_plans_every_query_at_startup_and_logs_how_many(
    settings: Settings, keys: Keys, db: DatabaseUrls, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    operations = folder(
        tmp_path,
        {"roster.graphql": CLASS_VIEW, "submit.graphql": MUTATION, "report.graphql": REPORT, "v.graphql": VERSIONS},
    )
    with caplog.at_level(logging.INFO, logger="pledgeql.app"):
        await start(strict(settings, keys, operations), db)
    # The roster is planned; the mutation, the report and the policy need no plan.
    assert "Planned 1 of 4 persisted operations at startup" in caplog.messages


def _planner_refuses(text: str) -> bool:
    schema = graphql_schema(build_schema(load_policy_set(())))
    document = parse(text)
    operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    return Planner(schema).plan(document, operation) is None


@pytest.mark.skipif(
    not _planner_refuses(REFUSED),
    reason="the planner plans this document now: the refusing planner's test below covers the error path",
)
async def test_a_query_that_cannot_be_planned_stops_production_and_is_named(
    settings: Settings, keys: Keys, db: DatabaseUrls, tmp_path: Path
) -> None:
    operations = folder(tmp_path, {"roster.graphql": CLASS_VIEW, "twice.graphql": REFUSED})
    with pytest.raises(SystemExit) as stopped:
        await start(strict(settings, keys, operations), db)
    message = str(stopped.value)
    assert "twice.graphql: operation Twice cannot be planned" in message
    assert "ClassView" not in message  # the planned one is not blamed


class RefusingPlanner(Planner):
    """The real planner, refusing one operation as it refuses a document it cannot plan."""

    def plan(
        self, document: DocumentNode, operation: OperationDefinitionNode, variables: VariableValues | None = None
    ) -> Plan | None:
        if operation.name is not None and operation.name.value == "ClassView":
            return None
        return super().plan(document, operation, variables)


async def test_production_does_not_start_when_the_planner_refuses_a_registered_query(
    settings: Settings, keys: Keys, db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "Planner", RefusingPlanner)
    operations = folder(tmp_path, {"roster.graphql": CLASS_VIEW, "v.graphql": VERSIONS})
    with pytest.raises(SystemExit, match=r"roster\.graphql: operation ClassView cannot be planned"):
        await start(strict(settings, keys, operations), db)


class FailingPlanner(Planner):
    """The real planner, failing on one operation as a planner bug would."""

    def plan(
        self, document: DocumentNode, operation: OperationDefinitionNode, variables: VariableValues | None = None
    ) -> Plan | None:
        if operation.name is not None and operation.name.value == "ClassView":
            raise RuntimeError("a planner bug; secret-value-in-message")
        return super().plan(document, operation, variables)


def test_a_planner_failure_stops_the_server_naming_the_operation_never_the_failures_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    schema = graphql_schema(build_schema(load_policy_set(())))
    registry = OperationRegistry(folder(tmp_path, {"roster.graphql": CLASS_VIEW}), Checker(schema, Limits(), True))
    with caplog.at_level(logging.ERROR, logger="pledgeql.app"), pytest.raises(SystemExit) as stopped:
        plan_operations(registry, FailingPlanner(schema))
    assert "roster.graphql: operation ClassView cannot be planned" in str(stopped.value)
    logged = " ".join(caplog.messages)
    assert "RuntimeError" in logged and "secret-value-in-message" not in logged + str(stopped.value)


def test_planning_that_is_not_strict_logs_each_query_left_to_the_resolver_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    schema = graphql_schema(build_schema(load_policy_set(())))
    operations = folder(tmp_path, {"roster.graphql": CLASS_VIEW, "twice.graphql": REFUSED})
    registry = OperationRegistry(operations, Checker(schema, Limits(), True))
    with caplog.at_level(logging.WARNING, logger="pledgeql.app"):
        assert plan_operations(registry, Planner(schema), strict=False) == 1
    assert any("Twice" in m for m in caplog.messages)


async def test_production_starts_with_every_shared_operation_planned(
    settings: Settings, keys: Keys, db: DatabaseUrls, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pledgeql.app"):
        await start(strict(settings, keys, SHARED_OPERATIONS), db)
    # Every query is planned but the four that read only the reports or the policy;
    # the mutations and subscriptions need no plan.
    assert any(re.fullmatch(r"Planned 16 of \d+ persisted operations at startup", m) for m in caplog.messages)


def test_the_operations_copy_is_the_shared_folder() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "operations"
    if not shared.is_dir():
        pytest.skip("the shared operations folder (../shared/operations) is not beside this checkout")
    mine = {p.relative_to(SHARED_OPERATIONS): p.read_text() for p in SHARED_OPERATIONS.rglob("*") if p.is_file()}
    theirs = {p.relative_to(shared): p.read_text() for p in shared.rglob("*") if p.is_file()}
    assert mine == theirs


CONDITIONS = (
    "query Roster($id: ID!, $full: Boolean!, $brief: Boolean = false) { class(id: $id) { name "
    "students { id firstName @skip(if: $brief) responses(first: 3) @include(if: $full) { answer } } } }\n"
)
# With $more true the policy document is read beside the class (a root the compiled reads
# do not answer): not planned.
CONDITION_REFUSED = (
    "query Twice($id: ID!, $more: Boolean!) { class(id: $id) { name } policy @include(if: $more) { version } }\n"
)


def test_startup_plans_a_query_for_every_value_of_the_variables_its_conditions_read(tmp_path: Path) -> None:
    schema = graphql_schema(build_schema(load_policy_set(())))
    seen: list[dict[str, object]] = []

    class Recording(Planner):
        def plan(
            self, document: DocumentNode, operation: OperationDefinitionNode, variables: VariableValues | None = None
        ) -> Plan | None:
            seen.append(dict(variables.coerced) if variables is not None else {})
            return super().plan(document, operation, variables)

    registry = OperationRegistry(folder(tmp_path, {"roster.graphql": CONDITIONS}), Checker(schema, Limits(), True))
    assert plan_operations(registry, Recording(schema)) == 1
    assert sorted(tuple(sorted(v.items())) for v in seen) == sorted(
        (("brief", b), ("full", f)) for b in (False, True) for f in (False, True)
    )


def test_a_query_one_of_whose_condition_values_cannot_be_planned_stops_production(tmp_path: Path) -> None:
    schema = graphql_schema(build_schema(load_policy_set(())))
    registry = OperationRegistry(
        folder(tmp_path, {"twice.graphql": CONDITION_REFUSED}), Checker(schema, Limits(), True)
    )
    with pytest.raises(SystemExit, match=r"twice\.graphql: operation Twice cannot be planned"):
        plan_operations(registry, Planner(schema))
