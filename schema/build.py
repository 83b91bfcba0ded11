"""Build the schema once, and refuse to build one that breaks the policy's rules.

Build-time guarantees:
- every field of a type that reaches a student, guardian or staff record has
  a data category, unless it is on the explicit list of non-personal fields;
- every category a field declares, and every purpose, has its entry (a
  plain-language description) in every policy document.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Iterable

import strawberry
from graphql import GraphQLSchema
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import DateTimeDefinition

from permissions.enums import DataCategory, Purpose
from permissions.policy import PolicySet
from schema import reports
from schema.catalog import NON_PERSONAL_FIELDS, PERSONAL_TYPE_NAMES
from schema.classified import category_of
from schema.descriptions import keep_descriptions
from schema.direct import install_direct_resolvers, install_plain_types
from schema.gate import check_operations
from schema.mutation import Mutation
from schema.query import Query
from schema.subscription import Subscription


class SchemaPolicyError(RuntimeError):
    """The schema and the policy disagree; the message says what to declare."""


_STRAWBERRY_DATETIME = DateTimeDefinition.parse_value


def _stored_datetime(value: object) -> object:
    """A DateTime as Strawberry parses it (ISO 8601, its refusals included), refused too
    when it has no instant PostgreSQL can hold: one whose UTC time falls outside years 1
    to 9999 (9999-12-31T20:00:00-05:00 is year 10000 in UTC) answered INTERNAL."""
    if _STRAWBERRY_DATETIME is None:
        raise RuntimeError("Strawberry's DateTime scalar has no parser")
    parsed = _STRAWBERRY_DATETIME(value)
    if isinstance(parsed, dt.datetime) and parsed.tzinfo is not None:
        try:
            parsed.astimezone(dt.UTC)
        except OverflowError:
            raise StrawberryInputCoercionError(
                "Value cannot represent a DateTime: it is outside years 1 to 9999 once in UTC."
            ) from None
    return parsed


# Strawberry's own DateTime scalar (name, description, output), with that parser.
DATETIME = dataclasses.replace(DateTimeDefinition, parse_value=_stored_datetime)


@functools.cache
def _graphql_schema() -> strawberry.Schema:
    return strawberry.Schema(
        query=Query, mutation=Mutation, subscription=Subscription, scalar_overrides={dt.datetime: DATETIME}
    )


def graphql_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """The graphql-core schema that ``schema`` built and executes against.

    The direct resolvers and the descriptions are installed on it, and the
    server plans, checks and executes operations with it, so it must be that
    very object, not one rebuilt from the SDL. Strawberry keeps it in
    ``Schema._schema`` and offers no public accessor for it (its own printer
    reads the attribute too); this is the one place that reads it.
    """
    return schema._schema


def _fields(schema: strawberry.Schema) -> Iterable[tuple[str, DataCategory | None]]:
    """(Type.field, declared category) for every field of the personal types.

    A personal type the schema does not contain exposes nothing and is skipped
    (a schema built for a test may hold only some of them)."""
    for type_name in PERSONAL_TYPE_NAMES:
        graphql_type = graphql_schema(schema).type_map.get(type_name)
        if graphql_type is None:
            continue
        for field_name, field in graphql_type.fields.items():  # type: ignore[attr-defined]
            yield f"{type_name}.{field_name}", category_of(field.extensions.get("strawberry-definition"))


def _unlisted_personal_types(schema: strawberry.Schema) -> list[str]:
    """Types with a classified field that are missing from PERSONAL_TYPES: their
    other fields would escape the category check."""
    unlisted = []
    for type_name, graphql_type in graphql_schema(schema).type_map.items():
        fields = getattr(graphql_type, "fields", None)
        if type_name in PERSONAL_TYPE_NAMES or type_name.startswith("__") or not isinstance(fields, dict):
            continue
        if any(category_of((f.extensions or {}).get("strawberry-definition")) for f in fields.values()):
            unlisted.append(type_name)
    return sorted(unlisted)


def check_categories(schema: strawberry.Schema) -> None:
    unlisted = _unlisted_personal_types(schema)
    if unlisted:
        raise SchemaPolicyError(
            "Types "
            + ", ".join(unlisted)
            + " have classified fields but are not listed in schema.catalog.PERSONAL_TYPES; add them, "
            "so that every one of their fields needs a data category"
        )
    missing = [name for name, category in _fields(schema) if category is None and name not in NON_PERSONAL_FIELDS]
    if missing:
        raise SchemaPolicyError(
            "Fields "
            + ", ".join(sorted(missing))
            + " have no data category; declare one with @classified(...) where the field is defined, "
            "or list the field in schema.catalog.NON_PERSONAL_FIELDS if it carries no personal information"
        )


def check_policy(schema: strawberry.Schema, policies: PolicySet) -> None:
    used = {category for _, category in _fields(schema) if category is not None}
    for doc in policies:
        described = {c.category for c in doc.categories}
        for category in sorted(used - described, key=lambda c: c.value):
            raise SchemaPolicyError(
                f"Category {category.value} is declared on fields but policy {doc.version} has no entry for it; "
                "add it to the policy document's categories"
            )
        purposes = {p.purpose for p in doc.purposes}
        for purpose in Purpose:
            if purpose not in purposes:
                raise SchemaPolicyError(
                    f"Purpose {purpose.value} has no entry in policy {doc.version}; add it to the document's purposes"
                )


def check_operation_fields(schema: strawberry.Schema) -> None:
    """Every operation a policy can name is a field of the schema (schema/gate.py)."""
    fields: set[str] = set()
    for type_name, graphql_type in graphql_schema(schema).type_map.items():
        if not type_name.startswith("__") and isinstance(getattr(graphql_type, "fields", None), dict):
            fields |= set(graphql_type.fields)  # type: ignore[attr-defined]
    problems = check_operations(fields)
    if problems:
        raise SchemaPolicyError(
            "; ".join(problems) + ": permissions.policy.KNOWN_OPERATIONS must name the schema's operations"
        )


def install_report_resolvers(schema: GraphQLSchema) -> None:
    """The reports' roots resolved directly (schema.reports.direct_resolvers), where the schema has them."""
    if schema.query_type is None:
        return
    for name, resolve in reports.direct_resolvers().items():
        field = schema.query_type.fields.get(name)
        if field is not None:
            field.resolve = resolve


def build_schema(policies: PolicySet, schema: strawberry.Schema | None = None) -> strawberry.Schema:
    """The served schema (or ``schema``), once it passes the build-time checks."""
    served = schema is None
    schema = schema if schema is not None else _graphql_schema()
    check_categories(schema)
    check_policy(schema, policies)
    if served:
        # A schema built for a test may hold only some of the operations.
        check_operation_fields(schema)
    install_direct_resolvers(graphql_schema(schema))
    install_report_resolvers(graphql_schema(schema))
    install_plain_types(graphql_schema(schema))
    keep_descriptions(graphql_schema(schema), {name: c.value for name, c in _fields(schema) if c is not None})
    return schema
