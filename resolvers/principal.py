"""Who the caller is and the settings of the districts it touches, read per request."""

from __future__ import annotations

import datetime as dt
import json
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from permissions.decide import DistrictConditions
from permissions.enums import Purpose, Role
from permissions.notice import DistrictNotice, Retention
from permissions.principal import Principal, SupportScope
from resolvers.db import Db

# What a standing was read at (migration 0020).
GENERATION = "(SELECT n FROM principal_generation)"
# The columns a statement returns, from its own snapshot, for a kept standing to be confirmed
# (``confirm``): the principal's generation and the session's row-level security setting.
CONFIRMING = f"{GENERATION}, current_setting('pledgeql.district_ids', true)"

# The caller, its home district's settings, and the row-level security setting
# a district user's request runs under (its district alone), in one round
# trip. Internal users (no district) start under the nil district, where their
# entries about no district are chained; their other districts are set
# afterwards. An internal analyst's request takes every district's settings
# (each decides whether it takes part), in the same round trip.
PRINCIPAL = (
    "SELECT p.*, d AS home, set_config('pledgeql.district_ids', "
    "coalesce(p.district_id::text, $3), {local}) AS district_ids{generic}, "
    "CASE WHEN p.district_id IS NULL AND p.role <> 'SUPPORT' "
    "THEN ARRAY(SELECT x FROM districts x ORDER BY x.id) END AS every_district, "
    f"{GENERATION} AS generation "
    "FROM pledgeql_principal($1, $2) p LEFT JOIN districts d ON d.id = p.district_id"
)
# With generic_plans: the rest of the request uses each prepared statement's
# generic plan instead of planning it again for its values. The settings last
# for the transaction, or (a request without one, ``session``) for the
# connection's session, until the next checkout sets or resets them
# (server.app.driver_connection): so a request without a transaction and
# without generic plans sets PostgreSQL's default ('auto') back, which a
# previous request on the connection may have changed.
_STATEMENTS = {
    (generic, session): PRINCIPAL.format(
        local="false" if session else "true",
        generic=f", set_config('plan_cache_mode', 'force_generic_plan', {'false' if session else 'true'})"
        if generic
        else ", set_config('plan_cache_mode', 'auto', false)"
        if session
        else "",
    )
    for generic in (False, True)
    for session in (False, True)
}


@dataclass(frozen=True)
class Standing:
    """What ``load_principal`` read: the caller, its home district's settings
    (district users only) and the row-level security setting now in force."""

    principal: Principal
    home: DistrictConditions | None
    district_ids: str
    # An internal analyst's: every district's settings (None for anyone else).
    every_district: dict[str, DistrictConditions] | None = None
    # The principal's generation it was read at (migration 0020; None: no counter to confirm it by).
    generation: int | None = None


async def load_principal(
    db: Db,
    user_id: uuid.UUID,
    token_purposes: frozenset[Purpose],
    now: dt.datetime,
    nil: uuid.UUID,
    *,
    generic_plans: bool = False,
    session: bool = False,
) -> Standing | None:
    """The caller's standing, or None for an unknown or disabled user."""
    row = await db.fetchrow(_STATEMENTS[generic_plans, session], user_id, now, str(nil))
    if row is None:
        return None
    if session:  # the statement set the session's setting and plan mode (Standings.settle's hint)
        session_set(db.connection, row["district_ids"], generic_plans)
    if row["disabled"]:
        return None
    grants_raw = row["grants"]
    grants_data: list[dict[str, Any]] = json.loads(grants_raw) if isinstance(grants_raw, str) else grants_raw or []
    grants = tuple(
        SupportScope(
            district_id=uuid.UUID(g["district_id"]),
            user_ids=tuple(uuid.UUID(u) for u in g.get("user_ids") or ()),
            ticket=str(g.get("ticket") or ""),
        )
        for g in grants_data
    )
    principal = Principal(
        user_id=user_id,
        role=Role(row["role"]),
        district_id=row["district_id"],
        school_id=row["school_id"],
        class_ids=tuple(row["class_ids"] or ()),
        children_ids=tuple(row["children_ids"] or ()),
        grants=grants,
        token_purposes=token_purposes,
    )
    home = conditions_from_row(row["home"]) if row["home"] is not None else None
    every = row["every_district"]
    every_district = None if every is None else {str(d["id"]): conditions_from_row(d) for d in every}
    return Standing(principal, home, row["district_ids"], every_district, row["generation"])


class StaleStanding(Exception):
    """A kept standing that a request could not confirm: served again with the standing read anew."""


def confirm(expected: tuple[int, str] | None, generation: int | None, setting: str | None) -> None:
    """Raise StaleStanding unless a statement's ``CONFIRMING`` columns are those the kept standing
    was read with (nothing to confirm: ``expected`` is None)."""
    if expected is not None and (generation is None or (generation, setting) != expected):
        raise StaleStanding


# The row-level security setting and plan mode a connection's session carries, as
# this worker last set them (a hint: the statement that confirms a kept standing confirms the setting).
_SESSION: weakref.WeakKeyDictionary[Any, tuple[str, bool]] = weakref.WeakKeyDictionary()
SETTLE = (
    "SELECT set_config('pledgeql.district_ids', $1, false), "
    "set_config('plan_cache_mode', CASE WHEN $2 THEN 'force_generic_plan' ELSE 'auto' END, false)"
)


def session_unknown(connection: Any) -> None:
    """Forget what a connection's session carries (a transaction's BEGIN resets it)."""
    _SESSION.pop(connection, None)


def session_set(connection: Any, district_ids: str, generic_plans: bool) -> None:
    _SESSION[connection] = (district_ids, generic_plans)


class Standings:
    """The standings a worker read lately, kept per caller, token purposes and day.

    A kept standing serves a query's compiled read, or its reports, without
    the principal's statement: the statement it reads with returns the
    generation and the row-level security setting from its own snapshot
    (``CONFIRMING``), and the request stands only if they are the standing's
    (``confirm``); else ``StaleStanding`` is raised and the request is served
    again with a standing read anew. A student's classes
    change with the day (enrollment dates), so the day is part of the key.
    SUPPORT's standing (grants that expire by the minute) is never kept.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._kept: dict[tuple[uuid.UUID, frozenset[Purpose], dt.date], Standing] = {}

    def get(self, user_id: uuid.UUID, token_purposes: frozenset[Purpose], day: dt.date) -> Standing | None:
        return self._kept.get((user_id, token_purposes, day))

    def keep(self, token_purposes: frozenset[Purpose], day: dt.date, standing: Standing) -> None:
        key = (standing.principal.user_id, token_purposes, day)
        if standing.principal.role is Role.SUPPORT or standing.generation is None:
            self._kept.pop(key, None)
            return
        if len(self._kept) >= self.capacity:
            self._kept.pop(next(iter(self._kept)))
        self._kept[key] = standing

    def forget(self, user_id: uuid.UUID, token_purposes: frozenset[Purpose], day: dt.date) -> None:
        """No standing kept for the caller (an account now unknown or disabled)."""
        self._kept.pop((user_id, token_purposes, day), None)

    @staticmethod
    async def settle(db: Db, district_ids: str, generic_plans: bool) -> None:
        """The session's setting and plan mode made these, unless it carries them already."""
        connection = db.connection
        if _SESSION.get(connection) != (district_ids, generic_plans):
            await db.execute(SETTLE, district_ids, generic_plans)
            session_set(connection, district_ids, generic_plans)


# A row of ``districts`` is read here alone: its policy settings (what the
# decisions use), its retention periods, and both with its name (the notice).


def conditions_from_row(row: Any) -> DistrictConditions:
    return DistrictConditions(
        district_id=str(row["id"]),
        authorized_purposes=frozenset(Purpose(p) for p in row["authorized_purposes"] if p in Purpose.__members__),
        collect_usage=row["collect_usage"],
        collect_device=row["collect_device"],
        collect_demographics=row["collect_demographics"],
        direct_record_access=row["direct_record_access"],
        accepted_version=row["accepted_policy_version"],
        minimum_group_size=row["minimum_group_size"],
    )


def retention_from_row(row: Any) -> Retention:
    return Retention(
        responses_days=row["responses_days"],
        activity_days=row["activity_days"],
        device_days=row["device_days"],
        audit_days=row["audit_days"],
    )


def notice_from_row(row: Any) -> DistrictNotice:
    return DistrictNotice(name=row["name"], conditions=conditions_from_row(row), retention=retention_from_row(row))


async def load_conditions(db: Db, district_ids: Sequence[uuid.UUID]) -> dict[str, DistrictConditions]:
    """Settings of the given districts (SUPPORT's granted ones: an internal
    analyst's principal statement reads every district's)."""
    if not district_ids:
        return {}
    rows = await db.fetch("SELECT * FROM districts WHERE id = ANY($1::uuid[])", list(district_ids))
    return {str(row["id"]): conditions_from_row(row) for row in rows}


async def support_tickets(db: Db, now: dt.datetime) -> dict[str, str]:
    """District id -> the tickets of its active support grants, oldest first, joined
    with ", ": SUPPORT's justification on that district's audit entries. Read
    under the request's row-level security, so only the granted districts."""
    rows = await db.fetch(
        "SELECT district_id, ticket FROM support_grants "
        "WHERE revoked_at IS NULL AND expires_at > $1 AND created_at <= $1 ORDER BY district_id, created_at, id",
        now,
    )
    tickets: dict[str, list[str]] = {}
    for row in rows:
        listed = tickets.setdefault(str(row["district_id"]), [])
        if row["ticket"] not in listed:
            listed.append(row["ticket"])
    return {district: ", ".join(names) for district, names in tickets.items()}
