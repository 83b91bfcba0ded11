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
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from graphql import GraphQLObjectType, GraphQLResolveInfo, GraphQLSchema
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
