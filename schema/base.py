"""Shapes every part of the graph shares."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import strawberry
from strawberry.types.field import StrawberryField

from permissions.errors import BadUserInput, NotFound
from schema.expressions import reads

if TYPE_CHECKING:
    from server.context import PublicContext, RequestContext

    # What a resolver receives: a signed-in request's context (server/context.py).
    Info: TypeAlias = strawberry.Info[RequestContext, None]
    # Public fields (``policy``, ``policyVersions``) also resolve for requests
    # without a token, whose context is the smaller PublicContext.
    PublicInfo: TypeAlias = strawberry.Info[RequestContext | PublicContext, None]
    # A signed-in request's context where a helper takes it without the Info around it.
    Context: TypeAlias = RequestContext
else:
    # Strawberry reads a resolver's annotations when the schema is built and
    # only needs to see ``strawberry.Info`` there; the context's type is for
    # the type checker, so schema/ does not import server/ at run time.
    Info = PublicInfo = strawberry.Info
    Context = Any

Resolver = Callable[..., Any]


def id_argument(value: Any, name: str) -> uuid.UUID:
    """An id that filters or names the input of an operation: a malformed one is the caller's mistake."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BadUserInput(f"Argument '{name}' is not a valid id", field=name) from None


def id_to_look_up(value: Any, kind: str) -> uuid.UUID:
    """The id of a record to look up: a malformed id is simply not found, like a missing one."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"{kind} not found") from None


# The largest page a list argument may ask for.
MAX_PAGE = 500


def field(
    *, name: str | None = None, description: str | None = None, metadata: dict[str, Any] | None = None
) -> Callable[[Resolver], StrawberryField]:
    """``@strawberry.field(name=..., description=..., metadata=...)`` for a resolver method.

    Called with options only, ``strawberry.field`` is typed as returning Any
    (strawberry-graphql issue 1929), which leaves the method it decorates
    untyped; handing it the resolver picks its typed overload instead.
    """

    def wrap(resolver: Resolver) -> StrawberryField:
        return strawberry.field(resolver, name=name, description=description, metadata=metadata)

    return wrap


def subscription(*, description: str) -> Callable[[Resolver], StrawberryField]:
    """``@strawberry.subscription(description=...)``, typed as ``field`` is."""

    def wrap(resolver: Resolver) -> StrawberryField:
        return strawberry.subscription(resolver, description=description)

    return wrap


@strawberry.interface
class Node:
    id: strawberry.ID


@strawberry.type
class PageInfo:
    # Over the page's row (schema.compiled._Builder.rows): the cursor of its last student as
    # resolvers.reads.encode_cursor writes it.
    has_next_page: bool = strawberry.field(metadata=reads("{a}.has_next"))
    end_cursor: str | None = strawberry.field(metadata=reads("{a}.end_cursor"))


def check_first(first: int | None, name: str = "first", maximum: int = MAX_PAGE, default: int = 50) -> int:
    """A page size argument: null means the default."""
    if first is None:
        return default
    if first < 0 or first > maximum:
        raise BadUserInput(f"Argument '{name}' must be between 0 and {maximum}", field=name)
    return first
