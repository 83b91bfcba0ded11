"""Is the served schema still the contract the clients were built against?"""

from __future__ import annotations

from pathlib import Path

from graphql import (
    GraphQLSchema,
    build_schema,
    find_breaking_changes,
    print_ast,
)

CONTRACT = Path(__file__).with_name("contract.graphql")


def _classified(schema: GraphQLSchema) -> dict[str, str]:
    """``Type.field`` -> the printed @classified directive of each field."""
    found: dict[str, str] = {}
    for name, graphql_type in schema.type_map.items():
        fields = getattr(graphql_type, "fields", None)
        if name.startswith("__") or not fields:
            continue
        for field_name, field in fields.items():
            node = field.ast_node
            for directive in getattr(node, "directives", None) or ():
                if directive.name.value == "classified":
                    found[f"{name}.{field_name}"] = print_ast(directive)
    return found


def incompatibilities(served_sdl: str, contract_sdl: str | None = None) -> list[str]:
    """Every way the served SDL breaks the contract; empty when compatible."""
    contract = build_schema(contract_sdl if contract_sdl is not None else CONTRACT.read_text())
    served = build_schema(served_sdl)
    problems = [f"{change.type.name}: {change.description}" for change in find_breaking_changes(contract, served)]
    served_directive = served.get_directive("classified")
    if served_directive is None:
        problems.append("the @classified directive is missing")
    else:
        contract_directive = contract.get_directive("classified")
        if contract_directive is not None and set(contract_directive.args) != set(served_directive.args):
            problems.append("the @classified directive's arguments differ")
    wanted = _classified(contract)
    have = _classified(served)
    for field, directive in sorted(wanted.items()):
        if have.get(field) != directive:
            problems.append(f"{field} should carry {directive}, has {have.get(field) or 'nothing'}")
    return problems
