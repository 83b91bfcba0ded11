"""Abuse limits on GraphQL documents, and the production operation allow-list.

A document is refused before anything executes when it is too big to parse
(tokens, comments), nested too deep, uses too many aliases, or would cost too
much. Cost counts every field once per object it is resolved on: a field with a
``first`` argument multiplies what is below it by that page size (its default
when absent), a list of objects without ``first`` by ``default_list_size``.

The rules are built once per app and run inside the cached validation, so a
document is measured once, however often it is sent. Only a document whose page
sizes come from variables is measured again with each request's values.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    VariableNode,
    get_named_type,
    is_composite_type,
    is_list_type,
    parse,
    print_ast,
    type_from_ast,
    value_from_ast,
)
from graphql.error import GraphQLSyntaxError
from graphql.language import Lexer, Source, Token, TokenKind
from graphql.language import parser as graphql_parser
from graphql.validation import NoSchemaIntrospectionCustomRule

from server.settings import Settings

log = logging.getLogger("pledgeql.limits")

TOO_COMPLEX = "QUERY_TOO_COMPLEX"
TYPENAME = "__typename"
# Lists the database caps (migrations/versions/0009_list_caps.py enforces these
# numbers with triggers; tests/test_list_bounds.py proves the two agree): the
# cost model counts a list at its cap rather than at the default list size.
DATABASE_CAPS: dict[str, int] = {
    "Class.teachers": 10,
    "Student.guardians": 10,
    "Assessment.items": 100,
}
INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})
PAGE_ARGUMENT = "first"
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # GraphQL's Int
MEASURE_BOUND = 2**53 - 1  # the largest integer every JSON client reads exactly


@dataclass(frozen=True)
class Limits:
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5000
    max_cost: int = 50_000
    default_list_size: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_depth=settings.max_depth,
            max_aliases=settings.max_aliases,
            max_tokens=settings.max_tokens,
            max_cost=settings.max_cost,
            default_list_size=settings.default_list_size,
        )


@dataclass(frozen=True)
class Violation:
    """One limit a document is over: which, its value, and the document's measure."""

    limit: str
    maximum: int
    measured: int
    message: str

    def extensions(self) -> dict[str, Any]:
        # A measure past what a JSON number holds exactly (nested pages multiply) is reported as that bound.
        measured = min(self.measured, MEASURE_BOUND)
        return {"code": TOO_COMPLEX, "limit": self.limit, "maximum": self.maximum, "measured": measured}


def too_complex(violation: Violation, nodes: Any = None) -> GraphQLError:
    return GraphQLError(violation.message, nodes, extensions=violation.extensions())


def count_tokens(query: str, cap: int) -> tuple[int, int]:
    """The document's lexical tokens and comments, counting no further than ``cap`` of them."""
    lexer = Lexer(Source(query))
    tokens = comments = 0
    token: Token = lexer.token
    try:
        while tokens + comments < cap:
            following = token.next or lexer.read_next_token(token.end)
            token.next, following.prev = following, token
            token = following
            if token.kind is TokenKind.EOF:
                break
            if token.kind is TokenKind.COMMENT:
                comments += 1
            else:
                tokens += 1
    except GraphQLSyntaxError:
        pass
    return tokens, comments


def parse_limited(query: str, limits: Limits) -> DocumentNode:
    """Parse with the token limit; a document over a parser limit (tokens, comments, nesting) is too
    complex, not malformed."""
    try:
        return parse(query, max_lexical_tokens=limits.max_tokens, max_comments=limits.max_tokens, no_location=False)
    except GraphQLSyntaxError as error:
        if error.message.endswith("nested too deeply. Parsing aborted."):
            # Past the parser's own nesting limit: too deep, however few its tokens.
            deeper = getattr(graphql_parser, "MAX_NESTING_DEPTH", limits.max_depth) + 1
            raise too_complex(
                Violation(
                    "depth",
                    limits.max_depth,
                    deeper,
                    f"The query is nested at least {deeper} levels deep; the limit (depth) is {limits.max_depth}",
                )
            ) from None
        if error.message.endswith("Parsing aborted."):
            cap = 4 * limits.max_tokens + 1
            tokens, comments = count_tokens(query, cap)
            limit, measured = ("comments", comments) if comments > limits.max_tokens else ("tokens", tokens)
            at_least = "at least " if tokens + comments >= cap else ""
            raise too_complex(
                Violation(
                    limit,
                    limits.max_tokens,
                    measured,
                    f"The document has {at_least}{measured} {limit}; the limit ({limit}) is {limits.max_tokens}",
                )
            ) from None
        raise


# ------------------------------------------------------------------- measuring


@dataclass
class Measure:
    depth: int = 0
    aliases: int = 0
    cost: int = 0
    visits: int = 0
    sized_by_variables: bool = False
    # The walk stopped at the visits' bound: the cost and the depth are lower bounds.
    stopped: bool = False


class _Budget(Exception):
    """The walk stopped: the document has more fields to walk than the cost limit."""


@functools.lru_cache(maxsize=8)
def list_bounds(schema: GraphQLSchema) -> dict[str, int]:
    """``Type.field`` -> the most items the list can hold: known to the schema (one per value of an
    enum) or capped by the database (``DATABASE_CAPS``)."""
    sizes = {name: len(t.values) for name, t in schema.type_map.items() if isinstance(t, GraphQLEnumType)}
    known = {
        "PolicyDocument.purposes": sizes.get("Purpose"),
        "PolicyDocument.categories": sizes.get("DataCategory"),
        "PolicyDocument.rules": (sizes.get("Role") or 0) * (sizes.get("Purpose") or 0) or None,
        # groupBy takes each Dimension at most once.
        "AggregateRow.group": sizes.get("Dimension"),
    }
    return {**{k: v for k, v in known.items() if v}, **DATABASE_CAPS}


class Measurer:
    """Walks one operation with its fragments expanded, stopping once it has visited more fields
    than the cost limit allows."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        limits: Limits,
        variables: Mapping[str, Any] | None,
        variable_defaults: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.limits = limits
        self.variables = variables
        self.variable_defaults = variable_defaults
        self.bounds = list_bounds(schema)
        self.measure = Measure()

    def operation(self, operation: OperationDefinitionNode) -> Measure:
        root = self.schema.get_root_type(operation.operation)
        if root is None:
            return self.measure
        try:
            self.measure.cost = self._selections(operation.selection_set, root, 1, ())
        except _Budget:
            # More fields than the cost limit to walk (fragments spread many times over): its
            # cost is past the limit, and how far past is not worth the walk.
            self.measure.cost = self.limits.max_cost + 1
            self.measure.stopped = True
        return self.measure

    def _fields(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType, seen: tuple[str, ...]
    ) -> Iterator[tuple[FieldNode, GraphQLNamedType]]:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                yield selection, parent
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self.schema.get_type(condition.name.value) if condition else parent
                yield from self._fields(selection.selection_set, inner or parent, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:  # unknown or cyclic: validation reports it
                    continue
                inner = self.schema.get_type(fragment.type_condition.name.value)
                yield from self._fields(fragment.selection_set, inner or parent, (*seen, name))

    def _selections(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType, depth: int, seen: tuple[str, ...]
    ) -> int:
        measure = self.measure
        # The whole document is walked, past the depth limit too, so that the depth and cost it
        # reports are its own (QUERY_TOO_COMPLEX's measure): the walk is bounded by the visits.
        measure.depth = max(measure.depth, depth)
        total = 0
        for node, owner in self._fields(selection_set, parent, seen):
            measure.visits += 1
            if measure.visits > self.limits.max_cost:
                raise _Budget
            if node.alias is not None:
                measure.aliases += 1
            name = node.name.value
            if name == TYPENAME:
                continue  # free: clients add it to every selection set
            fields = getattr(owner, "fields", None)
            if name.startswith("__") or fields is None:
                total += 1  # introspection, bounded by its own rule
                continue
            definition = fields.get(name)
            if definition is None:
                continue  # validation reports unknown fields
            size = self._size(node, definition, owner)
            below = 0
            if node.selection_set is not None:
                below = self._selections(node.selection_set, get_named_type(definition.type), depth + 1, seen)
            total += size * (1 + below)
        return total

    def _size(self, node: FieldNode, definition: Any, owner: GraphQLNamedType) -> int:
        argument = definition.args.get(PAGE_ARGUMENT)
        if argument is not None:
            value: Any = None
            for given in node.arguments or ():
                if given.name.value != PAGE_ARGUMENT:
                    continue
                if isinstance(given.value, VariableNode):
                    self.measure.sized_by_variables = True
                    name = given.value.name.value
                    if self.variables is not None and name in self.variables:
                        value = self.variables[name]
                    else:
                        value = self.variable_defaults.get(name)
                elif isinstance(given.value, IntValueNode):
                    value = int(given.value.value)
                    if not INT_MIN <= value <= INT_MAX:
                        value = None  # not an Int: validation says so (BAD_USER_INPUT), not the cost
            if value is None:
                value = argument.default_value
            return max(value, 0) if isinstance(value, int) else self.limits.default_list_size
        unwrapped = definition.type.of_type if isinstance(definition.type, GraphQLNonNull) else definition.type
        if (
            is_list_type(unwrapped)
            and isinstance(unwrapped, GraphQLList)
            and is_composite_type(get_named_type(unwrapped))
            and not owner.name.endswith("Connection")  # a connection's page is sized where it was asked for
        ):
            return self.bounds.get(f"{owner.name}.{node.name.value}", self.limits.default_list_size)
        return 1


def _variable_defaults(schema: GraphQLSchema, operation: OperationDefinitionNode) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for definition in operation.variable_definitions or ():
        if definition.default_value is not None:
            input_type = type_from_ast(schema, definition.type)
            if input_type is not None:
                defaults[definition.variable.name.value] = value_from_ast(definition.default_value, input_type)  # type: ignore[arg-type]
    return defaults


def measure_operation(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    limits: Limits,
    variables: Mapping[str, Any] | None = None,
) -> Measure:
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    return Measurer(schema, fragments, limits, variables, _variable_defaults(schema, operation)).operation(operation)


def violations(measure: Measure, limits: Limits) -> list[Violation]:
    found = []
    at_least = "at least " if measure.stopped else ""
    if measure.depth > limits.max_depth:
        found.append(
            Violation(
                "depth",
                limits.max_depth,
                measure.depth,
                f"The query is nested {at_least}{measure.depth} levels deep; the limit (depth) is {limits.max_depth}",
            )
        )
    if measure.aliases > limits.max_aliases:
        found.append(
            Violation(
                "aliases",
                limits.max_aliases,
                measure.aliases,
                f"The query uses {measure.aliases} aliases; the limit (aliases) is {limits.max_aliases}",
            )
        )
    if measure.cost > limits.max_cost:
        found.append(
            Violation(
                "cost",
                limits.max_cost,
                measure.cost,
                f"The query costs {at_least}{measure.cost} (fields resolved, page sizes multiplied); "
                f"the limit (cost) is {limits.max_cost}: ask for smaller pages",
            )
        )
    return found


def limits_rule(limits: Limits) -> type[ASTValidationRule]:
    """A validation rule measuring each operation against ``limits`` (build it once per app)."""

    class LimitsRule(ASTValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
            context = self.context
            if not isinstance(context, ValidationContext):
                return
            measure = measure_operation(context.schema, context.document, node, limits)
            for violation in violations(measure, limits):
                context.report_error(too_complex(violation, node))

    return LimitsRule


class IntrospectionOff(NoSchemaIntrospectionCustomRule):
    """graphql-core's rule (a field whose type is an introspection type is
    refused), reported once per entry point (``__schema``, ``__type``) rather
    than for every field below it, with the API's code and message."""

    def report_error(self, error: GraphQLError) -> None:
        node = error.nodes[0] if error.nodes else None
        if isinstance(node, FieldNode) and node.name.value in INTROSPECTION_FIELDS:
            super().report_error(
                GraphQLError(
                    "Introspection is off in production; the schema is published with the API documentation",
                    node,
                    extensions={"code": "BAD_USER_INPUT"},
                )
            )


def introspection_off_rule() -> type[ASTValidationRule]:
    return IntrospectionOff


def sized_by_variables(schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode) -> bool:
    return measure_operation(schema, document, operation, Limits(max_cost=10**9, max_depth=10**6)).sized_by_variables


# ------------------------------------------------------------ the allow-list


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def canonical_hash(document: DocumentNode) -> str:
    """The document's identity whatever its whitespace and comments: sha256 of its printed form."""
    return sha256_hex(print_ast(document))
