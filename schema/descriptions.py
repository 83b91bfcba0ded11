"""The contract's descriptions, kept in the served schema, and each classified field's category in its own.

Strawberry types carry some descriptions and not others (enum values, for
one); the contract (``contract.graphql``) is the one text clients read. Every
description it has is copied onto the served schema, so that ``pledgeql
schema``, introspection, codegen and GraphiQL show it. Introspection cannot
show directives, so a classified field's description also ends with its data
category.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
)

from schema.compat import CONTRACT


def category_note(category: str) -> str:
    return f"Data category: {category} (personal data: read only under a purpose the policy allows, and audited)."


@functools.cache
def contract_schema() -> GraphQLSchema:
    return build_schema(CONTRACT.read_text(encoding="utf-8"))


def described(schema: GraphQLSchema) -> Iterator[tuple[str, Any]]:
    """(coordinate, element) for every element of ``schema`` that can carry a description."""
    for name, graphql_type in schema.type_map.items():
        if name.startswith("__"):
            continue
        yield name, graphql_type
        if isinstance(graphql_type, GraphQLEnumType):
            for value_name, value in graphql_type.values.items():
                yield f"{name}.{value_name}", value
        if isinstance(graphql_type, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            for field_name, field in graphql_type.fields.items():
                yield f"{name}.{field_name}", field
                for arg_name, arg in getattr(field, "args", {}).items():
                    yield f"{name}.{field_name}({arg_name}:)", arg
    for directive in schema.directives:
        yield f"@{directive.name}", directive
        for arg_name, arg in directive.args.items():
            yield f"@{directive.name}({arg_name}:)", arg


def contract_descriptions() -> dict[str, str]:
    return {
        coordinate: element.description for coordinate, element in described(contract_schema()) if element.description
    }


def keep_descriptions(schema: GraphQLSchema, categories: dict[str, str]) -> None:
    """Give ``schema`` the contract's descriptions, and each classified field (``categories``) its category."""
    contract = contract_descriptions()
    for coordinate, element in described(schema):
        text = contract.get(coordinate) or element.description
        category = categories.get(coordinate)
        if category is not None:
            note = category_note(category)
            base = (text or "").replace(note, "").strip()
            text = f"{base}\n\n{note}" if base else note
        if text:
            element.description = text
