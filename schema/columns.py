"""Fields that are one column of their object's row, each declared once.

``column`` gives the Strawberry field: its resolver reads the row's column
(through ``convert`` when given), and a category makes it classified, so its
permission class decides and notes it as it does for any classified field.
The declaration also stays on the field (``declared``), which is where the
compiled plan reads the column from (``schema.compiled``): the SQL that reads
it follows from the column and the field's GraphQL type, so a field is not
declared a second time for the compiler. Categories reach the export's data
dictionary and ``/privacy`` from the same field (``schema.classified.category_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import strawberry

from permissions.enums import DataCategory
from schema.classified import classified

_KEY = "pledgeql.column"


@dataclass(frozen=True)
class Column:
    """What a field reads: its row's column ``name``."""

    name: str


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

    metadata = {_KEY: Column(name)}
    if category is None:
        return strawberry.field(resolver=resolve, description=description, metadata=metadata)
    return classified(category, description=description, metadata=metadata)(resolve)


def declared(field: Any) -> Column | None:
    """The column a Strawberry field was declared to read (``column``), or None."""
    metadata = getattr(field, "metadata", None) or {}
    found = metadata.get(_KEY)
    return found if isinstance(found, Column) else None
