"""Direct resolvers: simple fields resolved without Strawberry's per-field wrapper.

Most fields of a roster are plain reads of a row (``Response.correct``,
``Student.firstName``, ``Student.id``). Strawberry wraps each resolve in
argument conversion, an ``Info`` object and its extension chain, which costs
several times the read itself. For every field whose resolver is a synchronous
method taking only ``self`` and no arguments, the built schema calls the method
directly instead; a classified field first runs the very same permission
object's check (the decision lookup, the audit note, FORBIDDEN when denied).
Fields with arguments, async resolvers or any other extension keep
Strawberry's path.

Plain types go further. An object type whose every field is an attribute of
its Python object (no resolver, no argument, no permission or other
extension) and of a scalar, an enum or another plain type is a *plain* type:
an aggregate report's rows, their groups, a policy document. Its values are
completed in one pass (``PlainCompletion``) that reads the attributes and
coerces the leaves as graphql-core does, without a resolve per field:
a district's report of three hundred rows is some four thousand fields. The
selection is collected by graphql-core itself (fragments, aliases,
``@include`` / ``@skip``), and anything the pass does not expect (a null
where the type says non-null, an object of another class, deferred
fragments) gives the value back to graphql-core's own completion, which has
the errors.
"""

from __future__ import annotations

import enum
import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLString,
    Undefined,
    get_named_type,
    is_leaf_type,
)
from graphql.execution.collect_fields import CollectedFields, FieldDetailsList
from strawberry.permission import PermissionExtension

from schema.classified import ClassifiedPermission

Resolver = Callable[..., Any]


def _plain(method: Resolver) -> Resolver:
    def resolve(source: Any, info: GraphQLResolveInfo[Any]) -> Any:
        return method(source)

    return resolve


def _checked(permission: ClassifiedPermission, method: Resolver) -> Resolver:
    check = permission.check

    def resolve(source: Any, info: GraphQLResolveInfo[Any]) -> Any:
        if check(source, info) is not True:  # check raises FORBIDDEN; never fall through
            raise PermissionError("classified field check did not allow")
        return method(source)

    return resolve


def direct_resolver(field: Any) -> Resolver | None:
    """The direct resolver for a Strawberry field, or None when it must keep Strawberry's path."""
    base = getattr(field, "base_resolver", None)
    if base is None or field.is_async or field.arguments:
        return None
    method = base.wrapped_func
    if inspect.iscoroutinefunction(method) or list(inspect.signature(method).parameters) != ["self"]:
        return None
    permissions: list[Any] = []
    for extension in field.extensions:
        if not isinstance(extension, PermissionExtension):
            return None
        permissions.extend(extension.permissions)
    if not permissions:
        return _plain(method)
    if len(permissions) == 1 and isinstance(permissions[0], ClassifiedPermission):
        return _checked(permissions[0], method)
    return None


def install_direct_resolvers(schema: GraphQLSchema) -> int:
    """Give every qualifying field of ``schema`` its direct resolver; return how many."""
    installed = 0
    for graphql_type in schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type.name.startswith("__"):
            continue
        for graphql_field in graphql_type.fields.values():
            if graphql_field.args:
                continue
            resolver = direct_resolver(graphql_field.extensions.get("strawberry-definition"))
            if resolver is not None:
                graphql_field.resolve = resolver
                installed += 1
    return installed


# ------------------------------------------------------------------ plain types

PLAIN = "pledgeql-plain"  # a plain type's GraphQLObjectType.extensions key: its ``Plain``


COMPLETIONS = "completions"  # a plain class's dict of its completed forms (PlainCompletion)
KEPT_SHAPES = 8  # completed forms kept per value, at most


@dataclass(frozen=True, slots=True)
class Plain:
    """A plain type: the Python class of its values, each field's attribute,
    and whether its values keep their completed forms (a ``completions`` dict)."""

    origin: type
    attributes: dict[str, str]
    keeps: bool = False


def _plain_field(graphql_field: Any) -> str | None:
    """The attribute a field reads, or None if it is not a plain attribute."""
    definition = graphql_field.extensions.get("strawberry-definition")
    if definition is None or graphql_field.args or definition.base_resolver is not None or definition.extensions:
        return None
    name: str = definition.python_name
    return name


def install_plain_types(schema: GraphQLSchema) -> list[str]:
    """Mark every plain type of ``schema`` (see the module's docstring); return their names."""
    candidates: dict[str, tuple[GraphQLObjectType, Plain]] = {}
    for graphql_type in schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type.name.startswith("__"):
            continue
        definition = graphql_type.extensions.get("strawberry-definition")
        attributes = {name: _plain_field(f) for name, f in graphql_type.fields.items()}
        if definition is None or not isinstance(definition.origin, type) or None in attributes.values():
            continue
        keeps = COMPLETIONS in getattr(definition.origin, "__dataclass_fields__", {})
        plain = Plain(definition.origin, {name: a for name, a in attributes.items() if a is not None}, keeps)
        candidates[graphql_type.name] = (graphql_type, plain)
    # A type stays plain only while every object type its fields hold is plain too.
    changed = True
    while changed:
        changed = False
        for name, (graphql_type, _) in list(candidates.items()):
            for f in graphql_type.fields.values():
                inner = get_named_type(f.type)
                if not is_leaf_type(inner) and inner.name not in candidates:
                    del candidates[name]
                    changed = True
                    break
    for graphql_type, plain in candidates.values():
        graphql_type.extensions = {**graphql_type.extensions, PLAIN: plain}
    return sorted(candidates)


class Fallback(Exception):
    """A plain value the one-pass completion leaves to graphql-core's."""


class PlainCompletion:
    """The one-pass completion of plain types, for an executor: it gives the
    executor's ``collect_subfields`` (memoized per request) and takes the same
    field groups graphql-core's ``complete_object_value`` takes. Each selection
    is turned once into a list of (response key, attribute, completer); the
    rows of a list share theirs. The completers hold their selections, not
    this object, so nothing here is left in a reference cycle.

    A value whose class keeps a ``completions`` dict (a report kept for many
    requests: resolvers/report_cache.py) keeps its completed form there, per
    *shape* of the selection (its keys, fields and nested shapes, which is all
    the completed form depends on), and gives it again to the next request
    that selects it the same way."""

    def __init__(
        self,
        collect: Callable[[GraphQLObjectType, FieldDetailsList], CollectedFields],
        made: dict[Any, Any] | None = None,
    ) -> None:
        self.collect = collect
        self.made = made

    def object(self, graphql_type: GraphQLObjectType, plain: Plain, details: FieldDetailsList, value: Any) -> Any:
        """``value`` completed for the selection ``details`` make. With ``made`` (a document's
        own, for one set of values of the variables its @include / @skip read: its
        ``server.documents.Prepared.selections``), each selection is made once per document,
        not once per request: its fields' nodes, which it is keyed by, live as long as that."""
        if self.made is None:
            return _completed(graphql_type.name, plain, self._selection(graphql_type, plain, details), value)
        key = (graphql_type.name, *(id(d.node) for d in details))
        selection = self.made.get(key)
        if selection is None:
            selection = self.made[key] = self._selection(graphql_type, plain, details)
        return _completed(graphql_type.name, plain, selection, value)

    def _selection(self, graphql_type: GraphQLObjectType, plain: Plain, details: FieldDetailsList) -> _Selection:
        grouped, deferred, forbidden = self.collect(graphql_type, details)
        if deferred or forbidden:
            raise Fallback
        entries: list[tuple[str, str | None, Completer]] = []
        shape: list[tuple[str, str, Any]] = []
        for key, group in grouped.items():
            name = group[0].node.name.value
            if name == "__typename":
                entries.append((key, None, _as_is))
                shape.append((key, name, None))
            else:
                complete, inner = self._completer(graphql_type.fields[name].type, group)
                entries.append((key, plain.attributes[name], complete))
                shape.append((key, name, inner))
        return _Selection(entries, (graphql_type.name, *shape))

    def _completer(self, graphql_type: Any, details: FieldDetailsList) -> tuple[Completer, Any]:
        """A field's completer, and the shape of what it gives."""
        if isinstance(graphql_type, GraphQLNonNull):
            inner, shape = self._completer(graphql_type.of_type, details)

            def non_null(value: Any) -> Any:
                completed = inner(value)
                if completed is None:
                    raise Fallback
                return completed

            return non_null, ("!", shape)
        if isinstance(graphql_type, GraphQLList):
            item, shape = self._completer(graphql_type.of_type, details)
            return (lambda value: None if value is None else [item(v) for v in value]), ("[]", shape)
        if isinstance(graphql_type, GraphQLObjectType):
            plain: Plain = graphql_type.extensions[PLAIN]
            selection = self._selection(graphql_type, plain, details)
            name = graphql_type.name
            return (lambda value: None if value is None else _completed(name, plain, selection, value)), selection.shape
        return _leaf(graphql_type), graphql_type.name


def _completed(type_name: str, plain: Plain, selection: _Selection, value: Any) -> Any:
    """A plain object's value completed for ``selection`` (or its kept completed form)."""
    if not isinstance(value, plain.origin):
        raise Fallback
    kept = getattr(value, COMPLETIONS, None) if plain.keeps else None
    if kept is not None:
        done = kept.get(selection.shape)
        if done is not None:
            return done
    out: dict[str, Any] = {}
    for key, attribute, complete in selection.entries:
        out[key] = type_name if attribute is None else complete(getattr(value, attribute))
    if kept is not None and len(kept) < KEPT_SHAPES:
        kept[selection.shape] = out
    return out


@dataclass(frozen=True, slots=True)
class _Selection:
    entries: list[tuple[str, str | None, Completer]]
    shape: tuple[Any, ...]


Completer = Callable[[Any], Any]


def _as_is(value: Any) -> Any:
    return value


@functools.cache
def _leaf(graphql_type: Any) -> Completer:
    """A leaf's completion: the value itself where graphql-core would give it
    unchanged (a str for String and ID, a bool for Boolean, a 32-bit int for
    Int, a finite float for Float), an enum member's name as Strawberry's
    enum type gives it, else the type's own coercion. Made once per type (by
    identity: a schema's types live as long as it), not per request."""
    native = next((python for scalar, python in _NATIVE if graphql_type is scalar), None)
    coerce = graphql_type.coerce_output_value

    def coerced(value: Any) -> Any:
        try:
            result = coerce(value)
        except Exception:  # graphql-core's completion raises it again, at the field's path
            raise Fallback from None
        if result is Undefined or result is None:
            raise Fallback
        return result

    wrapped = getattr(graphql_type, "wrapped_cls", None)  # a Strawberry enum: its members' names
    if isinstance(wrapped, type) and issubclass(wrapped, enum.Enum):
        names = {m: name for name, v in graphql_type.values.items() for m in wrapped if m.value == v.value}
        return lambda value: (
            names[value] if type(value) is wrapped and value in names else None if value is None else coerced(value)
        )
    if native is not None:
        return lambda value: value if type(value) is native else (None if value is None else coerced(value))
    if graphql_type is GraphQLInt:
        return lambda value: (
            value if type(value) is int and _INT_MIN <= value <= _INT_MAX else None if value is None else coerced(value)
        )
    if graphql_type is GraphQLFloat:
        return lambda value: (
            value if type(value) is float and math.isfinite(value) else None if value is None else coerced(value)
        )
    return lambda value: None if value is None else coerced(value)


_NATIVE = ((GraphQLString, str), (GraphQLID, str), (GraphQLBoolean, bool))
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
