"""pledgeql built WITHOUT its permission checks and audit writes: for the benchmark only.

This is a build, not a switch: nothing here is read by the production server
(``server.app.create_app``), and no setting or environment variable turns it
on there. It is constructed by this module's own code from the same types:

* a second Strawberry schema over the same ``Query`` and ``Mutation`` whose
  ``@classified`` fields are converted without their ``PermissionExtension``
  (so no decision lookup and no audit note per field), put through the same
  ``build_schema`` as production's (its checks, and what it installs, such as
  direct resolvers: a plain read where production reads after the check), the
  extension being put back on the shared field definitions as soon as the
  schema is built;
* the production app (``create_app``) whose endpoint, once started, executes
  that schema and has an audit writer that writes nothing; everything else
  (token, purpose, principal, limits, row scope in SQL, row-level security,
  one transaction, orjson) is the production construction.

bench/run.py serves it with ``python -m server.workers bench.unenforced_app:app``
(uvicorn, with the workers of ``pledgeql serve``) on the same database as the
enforced server, to measure what enforcement costs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from starlette.applications import Starlette
from strawberry.permission import PermissionExtension
from strawberry.types.base import StrawberryObjectDefinition, get_object_definition

from permissions.decide import Decision
from permissions.enums import DataCategory
from permissions.policy import PolicySet, load_policy_set
from schema.build import build_schema, graphql_schema
from schema.classified import category_of
from schema.compiled import CompiledReads, Plan, Planner
from schema.mutation import Mutation
from schema.query import Query
from server.app import create_app
from server.context import RequestContext
from server.db import DatabaseUrls
from server.settings import Settings


def _definitions(root: type) -> Iterator[StrawberryObjectDefinition]:
    """Every object type reachable from ``root``, once."""
    seen: set[str] = set()
    pending: list[Any] = [root]
    while pending:
        definition = get_object_definition(pending.pop())
        if definition is None or definition.name in seen:
            continue
        seen.add(definition.name)
        yield definition
        for field in definition.fields:
            pending.extend(_object_types(field.type))


def _object_types(annotation: Any) -> Iterator[Any]:
    """The object types inside a field type (through lists, optionals, unions)."""
    if get_object_definition(annotation) is not None:
        yield annotation
        return
    for attribute in ("of_type", "types"):
        inner = getattr(annotation, attribute, None)
        if inner is None:
            continue
        for member in inner if isinstance(inner, (list, tuple)) else [inner]:
            yield from _object_types(member)


@contextlib.contextmanager
def _without_permission_extensions() -> Iterator[int]:
    """Take the PermissionExtension off every classified field while a schema is
    converted; put it back afterwards. Yields how many fields were stripped."""
    stripped: list[tuple[Any, list[Any]]] = []
    for root in (Query, Mutation):
        for definition in _definitions(root):
            for field in definition.fields:
                if category_of(field) is None:
                    continue
                kept = [e for e in field.extensions if not isinstance(e, PermissionExtension)]
                if len(kept) != len(field.extensions):
                    stripped.append((field, list(field.extensions)))
                    field.extensions = kept
    try:
        yield len(stripped)
    finally:
        for field, extensions in stripped:
            field.extensions = extensions


def build_unenforced_schema(policies: PolicySet | None = None) -> strawberry.Schema:
    """The same build as production's (``schema.build.build_schema``: its checks and
    whatever it installs, such as direct resolvers), over a Strawberry schema whose
    classified fields carry no permission extension."""
    with _without_permission_extensions() as count:
        if count == 0:
            raise RuntimeError("no classified field carried a permission extension: the unenforced build is wrong")
        schema = strawberry.Schema(query=Query, mutation=Mutation)
        return build_schema(policies or load_policy_set(()), schema)


async def _no_audit(context: RequestContext) -> None:
    """The unenforced build writes no audit entry."""


class UnenforcedCompiledReads(CompiledReads):
    """The compiled path without its decision lookups and audit notes."""

    def decisions(self, plan: Plan, ctx: Any) -> dict[DataCategory, Decision] | None:
        return dict.fromkeys(plan.categories, Decision.ALLOW)

    def note(
        self,
        plan: Plan,
        ctx: Any,
        reported: list[Any],
        decisions: dict[DataCategory, Decision],
        search: bool = False,
    ) -> list[GraphQLError] | None:
        return []


def create_unenforced_app(settings: Settings | None = None, urls: DatabaseUrls | None = None) -> Starlette:
    """The production app with exactly three parts replaced once it has started:
    the schema its endpoint executes, its audit writer, and its compiled reads
    (which then neither look up decisions nor note the audit).

    Everything else (middleware, token, purpose, principal, limits, rate limit,
    row scope in SQL, row-level security, the transaction, orjson) is the
    production construction, so the enforced/unenforced ratio isolates the
    per-field permission checks and the audit write.
    """
    settings = settings or Settings.from_env()
    app = create_app(settings, urls)
    schema = build_unenforced_schema(load_policy_set(settings.policy_dirs))
    started = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: Starlette) -> AsyncIterator[Any]:
        async with started(application) as value:
            endpoint = getattr(application.state.pledgeql, "endpoint", None)
            if endpoint is None or not hasattr(endpoint, "schema") or not hasattr(endpoint, "audit_writer"):
                raise RuntimeError(
                    "server.app no longer exposes state.pledgeql.endpoint.schema/audit_writer: "
                    "update bench/unenforced_app.py to the new construction"
                )
            endpoint.schema = graphql_schema(schema)
            endpoint.audit_writer = _no_audit
            endpoint.compiled = UnenforcedCompiledReads()
            endpoint.planner = Planner(graphql_schema(schema))
            yield value

    app.router.lifespan_context = lifespan
    return app


def __getattr__(name: str) -> Any:
    # ``uvicorn bench.unenforced_app:app`` builds it on first use, not on import.
    if name == "app":
        built = create_unenforced_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)
