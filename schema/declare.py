"""What a field reads, declared once, on the field.

* ``column``: a field that is one column of its object's row. It gives the
  Strawberry field: its resolver reads the row's column (through ``convert``
  when given), and a category makes it classified, so its permission class
  decides and notes it as for any classified field.
* ``reads``: the metadata of a field that is not one column of a row (a
  computed value, the caller, a page's total): the SQL expression, over its
  object's alias ``{a}``, that the compiled plan reads for it (``Expression``),
  beside the resolver or attribute the resolver path answers with.
* ``relationship``: a field whose value is rows found from its parent's (or,
  on ``Query``, from the request): how the compiled plan finds them
  (``Relation``: its way of finding them, ``schema.compiled._Builder.rows``,
  whether it is a list, a list's order, the arguments it takes). Its resolver
  stays the method it decorates (the resolver path's loaders); ``related``
  declares one whose value its object already holds (a connection's nodes).

The declaration stays on the field (``declared_column``, ``declared_expression``, ``declared_relation``),
which is where the compiled plan reads it (``schema.compiled``): the SQL that
reads a column follows from the column and the field's GraphQL type, so a
field is not declared a second time for the compiler. Categories reach the
export's data dictionary and ``/privacy`` from the same field
(``schema.classified.category_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import strawberry

from permissions.enums import DataCategory
from schema.classified import classified
from schema.expressions import Expression, declared_expression, reads, timestamp

# reads, timestamp and what they declare (schema.expressions) are declarations too.
__all__ = [
    "Column",
    "Expression",
    "Relation",
    "column",
    "declared_column",
    "declared_expression",
    "declared_relation",
    "reads",
    "related",
    "relationship",
    "timestamp",
]
_COLUMN, _RELATION = "pledgeql.column", "pledgeql.relation"
Resolver = Callable[..., Any]


@dataclass(frozen=True)
class Column:
    """What a field reads: its row's column ``name``."""

    name: str


@dataclass(frozen=True)
class Relation:
    """A relationship field: how its rows are found (``name``, the compiled
    plan's way of finding them), whether it is a list, and a list's order over
    the row's alias (the loader's ORDER BY)."""

    name: str
    many: bool = False
    order: str = ""
    arguments: frozenset[str] = frozenset()
    # Of a single object about its parent (progress): how many rows of its
    # own sync list (mastery) the audit notes, over its alias.
    count: str = ""


def column(
    name: str,
    category: DataCategory | None = None,
    *,
    convert: Callable[[Any], Any] | None = None,
    description: str | None = None,
) -> Any:
    """The field that reads column ``name`` of its object's row, classified as ``category`` when given."""
    if convert is None:

        def resolve(self: Any) -> Any:
            return self.row[name]

    else:

        def resolve(self: Any) -> Any:
            value = self.row[name]
            return None if value is None else convert(value)

    metadata = {_COLUMN: Column(name)}
    if category is None:
        return strawberry.field(resolver=resolve, description=description, metadata=metadata)
    return classified(category, description=description, metadata=metadata)(resolve)


def relationship(
    relation: Relation, category: DataCategory | None = None, **field_args: Any
) -> Callable[[Resolver], Any]:
    """Declare a resolver's field the relationship ``relation``, classified as ``category`` when given."""
    metadata = {_RELATION: relation}
    if category is None:
        return lambda resolver: strawberry.field(resolver, metadata=metadata, **field_args)
    return classified(category, metadata=metadata, **field_args)


def related(relation: Relation, **field_args: Any) -> Any:
    """A relationship field whose value its object holds (no resolver of its own)."""
    return strawberry.field(metadata={_RELATION: relation}, **field_args)


def declared_column(field: Any) -> Column | None:
    """The column a Strawberry field was declared to read (``column``), or None."""
    found = (getattr(field, "metadata", None) or {}).get(_COLUMN)
    return found if isinstance(found, Column) else None


def declared_relation(field: Any) -> Relation | None:
    """The relationship a Strawberry field was declared to be (``relationship``, ``related``), or None."""
    found = (getattr(field, "metadata", None) or {}).get(_RELATION)
    return found if isinstance(found, Relation) else None
