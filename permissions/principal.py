"""Who is asking: the caller's standing, read from the database per request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from permissions.enums import Purpose, Role


@dataclass(frozen=True)
class SupportScope:
    """One active support grant: a district, narrowed to some users when given."""

    district_id: uuid.UUID
    user_ids: tuple[uuid.UUID, ...]
    ticket: str = ""


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    role: Role
    district_id: uuid.UUID | None
    school_id: uuid.UUID | None = None
    class_ids: tuple[uuid.UUID, ...] = ()
    children_ids: tuple[uuid.UUID, ...] = ()
    grants: tuple[SupportScope, ...] = ()
    token_purposes: frozenset[Purpose] = field(default_factory=frozenset)

    @property
    def school_ids(self) -> tuple[uuid.UUID, ...]:
        return (self.school_id,) if self.school_id else ()

    @property
    def granted_district_ids(self) -> tuple[uuid.UUID, ...]:
        return tuple(dict.fromkeys(g.district_id for g in self.grants))

    @property
    def whole_district_grants(self) -> tuple[uuid.UUID, ...]:
        return tuple(dict.fromkeys(g.district_id for g in self.grants if not g.user_ids))

    @property
    def granted_user_ids(self) -> tuple[uuid.UUID, ...]:
        return tuple(dict.fromkeys(u for g in self.grants for u in g.user_ids))
