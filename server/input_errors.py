"""Errors about input values that never repeat the value (API.md: "Messages never contain personal
data"): a variable's value or a literal in the document may be a student's name, a birth date, an
answer. In every mode, the message names the variable, where in it the value is wrong, and the type
expected there; what graphql-core says about the value itself is kept only where it names no value
(a required field missing, a field the type does not have, null where null is not allowed).
"""

from __future__ import annotations

import re
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    ValueNode,
    VariableDefinitionNode,
    type_from_ast,
)
from graphql.language import SKIP, VisitorAction
from graphql.utilities.validate_input_value import validate_input_literal
from graphql.validation import ValuesOfCorrectTypeRule

_NAME = r"[_A-Za-z][_0-9A-Za-z]*"
# graphql-core's coercion error of a variable: "Variable '$v' has invalid value at .a[0].b: <about the value>".
_VARIABLE = re.compile(rf"^Variable '\$({_NAME})' has invalid value((?: at (?:\.{_NAME}|\[\d+\])+)?): ")
_STEP = re.compile(rf"\.({_NAME})|\[(\d+)\]")
# graphql-core's other errors about a variable, which name no value: kept as they are.
_VARIABLE_VALUE_FREE = re.compile(
    rf"^Variable '\${_NAME}' (?:of required type '[^']+' was not provided"
    r"|of non-null type '[^']+' must not be null"
    r"|expected value of type '[^']+' which cannot be used as an input type)\.$"
)
# What graphql-core says about an input that names no value of it, kept as it is.
_VALUE_FREE = (
    re.compile(r"^Expected a value of non-null type '[^']+' to be provided\."),
    re.compile(r"^Expected value of non-null type '[^']+' not to be None\."),
    re.compile(rf"^Expected value of type '[^']+' to include required field '{_NAME}'"),
    re.compile(rf"^Expected value of type '[^']+' not to include unknown field '{_NAME}'"),
    re.compile(r"^Expected value of type '[^']+' to be an object"),
    re.compile(
        rf"^Expected variable '\${_NAME}' provided to (?:non-null )?type '[^']+' "
        r"(?:to provide a runtime value|not to be None)\."
    ),
    re.compile(r"^Value cannot represent a DateTime: it is outside years 1 to 9999 once in UTC\."),
    re.compile(r"^Within OneOf Input Object type '[^']+', exactly one field must be specified, [^:]*\."),
)


def about_the_value(message: str, expected: Any) -> str:
    """What is wrong with an input value, without the value: graphql-core's own words when they
    name none (up to where they would), else the type expected."""
    for pattern in _VALUE_FREE:
        kept = pattern.match(message)
        if kept:
            said = kept.group(0).rstrip(" ,")
            return said if said.endswith(".") else said + "."
    return f"Expected a value of type '{expected}'."


def _type_at(root: Any, steps: list[str | int]) -> Any:
    """The input type at a path of field names and list indexes below ``root``, or ``root`` when the
    path leaves the type."""
    current = root
    for step in steps:
        while isinstance(current, GraphQLNonNull):
            current = current.of_type
        if isinstance(step, str) and isinstance(current, GraphQLInputObjectType) and step in current.fields:
            current = current.fields[step].type
        elif isinstance(step, int) and isinstance(current, GraphQLList):
            current = current.of_type
        else:
            return root
    return current


def variable_error(error: GraphQLError, schema: GraphQLSchema) -> GraphQLError:
    """A variable coercion error whose message names the variable, the path in its value and the
    type expected there, never the value; graphql-core's errors that name no value (a variable
    missing, null, of a type that is no input) as they are; any other, the type expected."""
    if _VARIABLE_VALUE_FREE.match(error.message):
        return error
    node = error.nodes[0] if error.nodes else None
    if not isinstance(node, VariableDefinitionNode):
        return GraphQLError("A variable has an invalid value.", nodes=error.nodes, extensions=error.extensions)
    matched = _VARIABLE.match(error.message)
    name, path = matched.groups() if matched else (node.variable.name.value, "")
    steps = [field or int(index) for field, index in _STEP.findall(path)]
    expected = _type_at(type_from_ast(schema, node.type), steps)
    inner = error.original_error.message if isinstance(error.original_error, GraphQLError) else ""
    return GraphQLError(
        f"Variable '${name}' has an invalid value{path}: {about_the_value(inner, expected)}",
        nodes=error.nodes,
        extensions=error.extensions,
    )


class ValueFreeLiterals(ValuesOfCorrectTypeRule):
    """graphql-core's rule for literals of the right type, whose messages name the type expected
    where the wrong literal stands, and not the literal."""

    def is_valid_value_node(self, node: ValueNode, input_type: GraphQLInputType | None) -> VisitorAction:
        if input_type:

            def on_error(error: GraphQLError, path: list[str | int]) -> None:
                expected = _type_at(input_type, path)
                self.report_error(GraphQLError(about_the_value(error.message, expected), nodes=error.nodes or node))

            validate_input_literal(node, input_type, on_error, None, None, self.context.hide_suggestions)
        return SKIP
