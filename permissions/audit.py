"""The audit collector: one request's record of what was resolved about whom.

Every resolve of a classified field notes (district, subject, decision,
Type.field, category). Entries are grouped per (subject, decision): a roster
of 30 students read once is 30 entries, whatever its field count. Values are
never seen here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class PendingEntry:
    district_key: str
    subject_id: uuid.UUID | None
    allowed: bool
    fields: tuple[str, ...]
    categories: tuple[str, ...]


class AuditCollector:
    __slots__ = ("_groups",)

    def __init__(self) -> None:
        self._groups: dict[tuple[str, uuid.UUID | None, bool], tuple[dict[str, None], dict[str, None]]] = {}

    def note(self, district_key: str, subject_id: uuid.UUID | None, field: str, category: str, allowed: bool) -> None:
        key = (district_key, subject_id, allowed)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = ({}, {})
        group[0][field] = None
        if category:
            group[1][category] = None

    def __len__(self) -> int:
        return len(self._groups)

    def entries(self) -> list[PendingEntry]:
        return [
            PendingEntry(district, subject, allowed, tuple(fields), tuple(categories))
            for (district, subject, allowed), (fields, categories) in self._groups.items()
        ]
