"""Documents and limits: from a request's text to a validated operation and its variables.

The text is sent, or named by its sha256 (persisted operations); it is
parsed with the token limit, measured against the abuse limits, then fully
validated, once per text (the cache); in production only registered
operations are served. The operation to run is then selected, and its
variables coerced (page sizes that come from variables are measured with
their values).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    ValuesOfCorrectTypeRule,
    Visitor,
    specified_rules,
    validate,
    visit,
)
from graphql.error import GraphQLSyntaxError
from graphql.execution.values import VariableValues, get_variable_values
from graphql.validation.validate import ValidationAbortedError

from permissions.errors import RequestError
from schema.compiled import Plan, condition_variables
from server.http_request import GraphQLRequest, MalformedRequest
from server.input_errors import ValueFreeLiterals, variable_error
from server.limits import (
    Limits,
    Violation,
    canonical_hash,
    introspection_off_rule,
    limits_rule,
    measure_operation,
    parse_limited,
    sha256_hex,
    sized_by_variables,
    violations,
)
from server.operations import OperationRegistry
from server.replies import format_error

# The root fields a request without a token may select.
PUBLIC_ROOTS = frozenset({"policy", "policyVersions", "__typename", "__schema", "__type"})
SHA256 = re.compile(r"[0-9A-Fa-f]{64}")
# Texts learned under the hash they were sent with (development's Automatic Persisted Queries).
LEARNED_SIZE = 1000


@dataclass(frozen=True)
class Prepared:
    document: DocumentNode
    errors: tuple[GraphQLError, ...]
    digest: str = ""
    variable_sizes: bool = False
    # Compiled plans by operation name and the values of the variables its
    # @include / @skip read (None: the operation takes the resolver path).
    plans: dict[tuple[str | None, tuple[Any, ...]], Plan | None] = field(default_factory=dict)
    # Those variables (schema.compiled.condition_variables).
    conditions: tuple[str, ...] = ()
    # The selections of plain types made for it, by the same keys (schema.direct.PlainCompletion).
    selections: dict[tuple[str | None, tuple[Any, ...]], dict[Any, Any]] = field(default_factory=dict)
    # The registry's generation it was allowed under (production): a reload checks it again.
    generation: int = 0


class DocumentCache:
    """Parsed and validated documents by their text: parse, measure and validate once.

    The rules (the abuse limits first, alone, so that an abusive document never
    reaches the costlier standard rules; then the standard rules) are built
    once, here, not per request.
    """

    def __init__(
        self,
        schema: GraphQLSchema,
        size: int = 512,
        *,
        limits: Limits | None = None,
        production: bool = False,
        registry: OperationRegistry | None = None,
    ) -> None:
        self.schema = schema
        self.size = size
        self.limits = limits or Limits()
        self.production = production
        # Production serves the registered operations only.
        self.registry = registry if production else None
        self.limit_rules: tuple[type[ASTValidationRule], ...] = (limits_rule(self.limits),)
        extra = (introspection_off_rule(),) if production else ()
        # Every rule of the specification, with literals of the wrong type said without the literal.
        specified = tuple(ValueFreeLiterals if r is ValuesOfCorrectTypeRule else r for r in specified_rules)
        self.rules: tuple[type[ASTValidationRule], ...] = (*specified, *extra)
        self._entries: OrderedDict[str, Prepared] = OrderedDict()

    def get(self, query: str) -> Prepared:
        entry = self._entries.get(query)
        generation = self.registry.generation if self.registry is not None else 0
        if entry is not None and entry.generation == generation:
            self._entries.move_to_end(query)
            return entry
        try:
            document = parse_limited(query, self.limits)
        except GraphQLSyntaxError as error:
            raise RequestError("BAD_USER_INPUT", f"The query does not parse: {error.message}") from None
        except GraphQLError as error:
            raise RequestError("QUERY_TOO_COMPLEX", error.message, **_limit_extensions(error)) from None
        if "\\u" in query and _holds_nul(document):
            raise RequestError("BAD_USER_INPUT", NUL_MESSAGE)
        digest = canonical_hash(document)
        if self.registry is not None and not self.registry.allows(query, document):
            # Not cached: unregistered documents must not push registered ones out.
            raise RequestError("OPERATION_NOT_ALLOWED", "This operation is not registered with the server")
        generation = self.registry.generation if self.registry is not None else 0
        errors = validate(self.schema, document, self.limit_rules, hide_suggestions=self.production)
        if not errors:
            errors = [
                _over_validation_work(e) if _work_ran_out(e) else e
                for e in validate(self.schema, document, self.rules, hide_suggestions=self.production)
            ]
        variable_sizes = not errors and any(
            sized_by_variables(self.schema, document, d)
            for d in document.definitions
            if isinstance(d, OperationDefinitionNode)
        )
        conditions = () if errors else condition_variables(document)
        entry = Prepared(document, tuple(errors), digest, variable_sizes, generation=generation, conditions=conditions)
        self._entries[query] = entry
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry

    def coerce_variables(
        self, prepared: Prepared, operation: OperationDefinitionNode, raw: dict[str, Any] | None
    ) -> VariableValues | list[dict[str, Any]] | None:
        """The operation's variables coerced against their types (None when it declares none),
        or the formatted errors (values masked in production); page sizes that come from
        variables are measured with these values (QUERY_TOO_COMPLEX raised)."""
        if not operation.variable_definitions:
            return None
        coerced = get_variable_values(
            self.schema,
            operation.variable_definitions,
            raw or {},
            max_errors=20,
            hide_suggestions=self.production,
        )
        if isinstance(coerced, list):
            return [format_error(variable_error(e, self.schema), self.production) for e in coerced]
        # A mutation validates its own inputs, naming the field, and audits the refused attempt.
        checked = () if operation.operation is OperationType.MUTATION else operation.variable_definitions
        for definition in checked:
            name = definition.variable.name.value
            if _nul_in(coerced.coerced.get(name)):
                error = GraphQLError(
                    f"Variable '${name}': {NUL_MESSAGE}", definition, extensions={"code": "BAD_USER_INPUT"}
                )
                return [format_error(error, self.production)]
        if prepared.variable_sizes:
            measure = measure_operation(self.schema, prepared.document, operation, self.limits, coerced.coerced)
            for violation in violations(measure, self.limits):
                raise RequestError("QUERY_TOO_COMPLEX", violation.message, **_limit_extensions(violation))
        return coerced


# PostgreSQL's text cannot hold U+0000: a string with it is refused as input, never sent to the database.
NUL_MESSAGE = "a string may not contain the character U+0000 (NUL)"


def _nul_in(value: Any) -> bool:
    """Whether a coerced input value holds a string with U+0000 anywhere within it."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_nul_in(v) for v in value.values())
    if isinstance(value, list):
        return any(_nul_in(v) for v in value)
    return False


class _NulFinder(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found = False

    def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
        if "\x00" in node.value:
            self.found = True


def _holds_nul(document: DocumentNode) -> bool:
    """Whether a string literal of the document holds U+0000 (an escape: the parser refuses the raw character)."""
    finder = _NulFinder()
    visit(document, finder)
    return finder.found


def _work_ran_out(error: GraphQLError) -> bool:
    """graphql-core stopped validating: the work its rules may spend on one document (comparing
    fields of one name in a selection, walking shared fragments) ran out, the document was not
    found invalid. Too many errors stop it too, and say so in other words."""
    return isinstance(error, ValidationAbortedError) and error.message == "Validation aborted."


def _over_validation_work(error: GraphQLError) -> GraphQLError:
    return GraphQLError(
        "The document takes more work to validate than the server spends on one (many fields of one "
        "name in a selection, or fragments spread very widely): select each field once, or split it",
        nodes=error.nodes,
        extensions={"code": "QUERY_TOO_COMPLEX", "limit": "validationWork"},
    )


def _limit_extensions(source: GraphQLError | Violation) -> dict[str, Any]:
    """A QUERY_TOO_COMPLEX error's limit, maximum and measure."""
    extensions = source.extensions() if isinstance(source, Violation) else dict(source.extensions or {})
    return {k: v for k, v in extensions.items() if k != "code"}


# ------------------------------------------------------------ persisted operations


def persisted_hash(gql: GraphQLRequest) -> str | None:
    """The lower-case sha256 of ``extensions.persistedQuery``, or None when the request has none."""
    persisted = gql.extensions.get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, dict) or persisted.get("version", 1) != 1:
        raise MalformedRequest('\'extensions.persistedQuery\' must be {"version": 1, "sha256Hash": ...}')
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not SHA256.fullmatch(digest):
        raise MalformedRequest("'extensions.persistedQuery.sha256Hash' must be 64 hexadecimal digits")
    return digest.lower()


class PersistedOperations:
    """Document texts by their sha256: the registry's (production), and those learned (development)."""

    def __init__(self, registry: OperationRegistry | None, production: bool) -> None:
        self.registry = registry
        self.production = production
        self.learned: OrderedDict[str, str] = OrderedDict()

    def text(self, gql: GraphQLRequest) -> str:
        """The document's text: sent, or named by its sha256 (Automatic Persisted Queries)."""
        if self.registry is not None:
            self.registry.refresh()
        digest = persisted_hash(gql)
        if digest is None:
            if not gql.query.strip():
                raise MalformedRequest("The request has no 'query'")
            return gql.query
        if gql.query.strip():
            if sha256_hex(gql.query) != digest:
                raise MalformedRequest("'persistedQuery.sha256Hash' is not the sha256 of 'query'")
            return gql.query
        text = self.registry.text_for_hash(digest) if self.registry is not None else None
        if text is None and not self.production:
            text = self.learned.get(digest)
        if text is None:
            # The clients' persisted-query links retry with the text on this message or code.
            raise RequestError("PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")
        return text

    def remember(self, gql: GraphQLRequest, prepared: Prepared) -> None:
        """Serve a valid text sent with its hash under that hash from now on.

        In production only a registered text gets this far (the allow-list
        refused the others); in development any valid text does.
        """
        digest = persisted_hash(gql)
        if digest is None or not gql.query.strip() or prepared.errors:
            return
        if self.production and self.registry is not None:
            self.registry.learn(digest, gql.query)
            return
        self.learned[digest] = gql.query
        self.learned.move_to_end(digest)
        while len(self.learned) > LEARNED_SIZE:
            self.learned.popitem(last=False)


# ------------------------------------------------------------ the operation


def select_operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode:
    """The operation ``operationName`` names, or the document's only one."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        if len(operations) != 1:
            raise RequestError("BAD_USER_INPUT", "Name the operation to run with 'operationName'")
        return operations[0]
    for operation in operations:
        if operation.name is not None and operation.name.value == name:
            return operation
    raise RequestError("BAD_USER_INPUT", "'operationName' names no operation of the document")


def root_fields(document: DocumentNode, operation: OperationDefinitionNode) -> set[str]:
    """The root fields an operation selects, through inline fragments and fragment
    spreads at any depth (a fragment on the root type hides no field)."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    names: set[str] = set()
    seen: set[str] = set()
    pending: list[SelectionSetNode] = [operation.selection_set]
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                names.add(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is None:
                    names.add(f"...{name}")  # an unknown fragment: never public
                elif name not in seen:
                    seen.add(name)
                    pending.append(fragment.selection_set)
    return names
