"""The SQL a field reads when it is not one column of a row (``schema.declare.reads``).

Its own module, importing nothing of the schema: ``schema.base`` declares
``PageInfo`` with it, and everything else in the schema imports ``schema.base``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_EXPRESSION = "pledgeql.expression"
# A timestamptz as Python's isoformat() gives it for a UTC datetime (what the
# DateTime scalar serializes): microseconds only when there are any.
_TIMESTAMP = (
    "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
    "CASE WHEN extract(microseconds FROM {c})::bigint % 1000000 = 0 THEN '' "
    "ELSE to_char({c} AT TIME ZONE 'UTC', '.US') END || '+00:00'"
)


@dataclass(frozen=True)
class Expression:
    """What a field that is not one column of its row reads: SQL over its
    object's alias ``{a}``, giving the value as the resolver path serializes it."""

    sql: str


def reads(sql: str) -> dict[str, Any]:
    """A field's metadata (``strawberry.field(metadata=...)``, ``classified(..., metadata=...)``):
    the compiled plan reads ``sql`` for it."""
    return {_EXPRESSION: Expression(sql)}


def timestamp(column: str) -> str:
    """The SQL of a timestamptz column of the alias ``{a}`` as the DateTime scalar writes it."""
    return _TIMESTAMP.replace("{c}", "{a}." + column)


def declared_expression(field: Any) -> Expression | None:
    """The SQL a Strawberry field was declared to read (``reads``), or None."""
    found = (getattr(field, "metadata", None) or {}).get(_EXPRESSION)
    return found if isinstance(found, Expression) else None
