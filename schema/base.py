"""Shapes every part of the graph shares."""

from __future__ import annotations

import strawberry

from permissions.errors import BadUserInput

# The largest page a list argument may ask for.
MAX_PAGE = 500


@strawberry.interface
class Node:
    id: strawberry.ID


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


def check_first(first: int | None, name: str = "first", maximum: int = MAX_PAGE, default: int = 50) -> int:
    """A page size argument: null means the default."""
    if first is None:
        return default
    if first < 0 or first > maximum:
        raise BadUserInput(f"Argument '{name}' must be between 0 and {maximum}", field=name)
    return first
