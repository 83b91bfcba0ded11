"""District governance in SQL: settings, accepted policy version, support grants.

Everything here runs in the request's transaction as ``pledgeql_app``, so
row-level security limits every statement to the request's district on top of
the ``district_id`` each statement names. No statement reads or writes a
student's personal data.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from resolvers.db import Db, Params
from resolvers.reads import Row

# DistrictSettingsInput field -> districts column. SQL is composed from these
# constant column names only; every value is a bind parameter.
SETTINGS_COLUMNS: Mapping[str, str] = {
    "authorized_purposes": "authorized_purposes",
    "collect_usage": "collect_usage",
    "collect_device": "collect_device",
    "collect_demographics": "collect_demographics",
    "direct_record_access": "direct_record_access",
    "minimum_group_size": "minimum_group_size",
    "responses_days": "responses_days",
    "activity_days": "activity_days",
    "device_days": "device_days",
    "audit_days": "audit_days",
}


async def district_row(db: Db, district_id: uuid.UUID) -> Row | None:
    return await db.fetchrow("SELECT * FROM districts WHERE id = $1", district_id)


async def update_settings(db: Db, district_id: uuid.UUID, changes: Mapping[str, Any]) -> Row | None:
    """Write the given settings (keys of SETTINGS_COLUMNS); the district's row after."""
    unknown = set(changes) - set(SETTINGS_COLUMNS)
    if unknown:
        raise ValueError(f"Not district settings: {', '.join(sorted(unknown))}")
    if not changes:
        return await district_row(db, district_id)
    p = Params()
    assignments = ", ".join(f"{SETTINGS_COLUMNS[name]} = {p(value)}" for name, value in changes.items())
    return await db.fetchrow(f"UPDATE districts SET {assignments} WHERE id = {p(district_id)} RETURNING *", *p.values)


async def accept_version(db: Db, district_id: uuid.UUID, version: str) -> Row | None:
    return await db.fetchrow(
        "UPDATE districts SET accepted_policy_version = $2 WHERE id = $1 RETURNING *", district_id, version
    )


async def district_user_ids(db: Db, district_id: uuid.UUID, user_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``user_ids`` are users of the district (any role)."""
    rows = await db.fetch(
        "SELECT id FROM users WHERE district_id = $1 AND id = ANY($2::uuid[])", district_id, list(user_ids)
    )
    return {row["id"] for row in rows}


async def insert_grant(
    db: Db,
    *,
    district_id: uuid.UUID,
    ticket: str,
    granted_by: uuid.UUID,
    expires_at: dt.datetime,
    user_ids: Sequence[uuid.UUID],
    created_at: dt.datetime,
) -> Row:
    row: Row = await db.fetchrow(
        "INSERT INTO support_grants (district_id, id, ticket, granted_by, expires_at, user_ids, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6::uuid[], $7) RETURNING *",
        district_id,
        uuid.uuid4(),
        ticket,
        granted_by,
        expires_at,
        list(user_ids),
        created_at,
    )
    return row


async def revoke_grant(db: Db, district_id: uuid.UUID, grant_id: uuid.UUID, now: dt.datetime) -> Row | None:
    """Revoke a grant of the district (a revoked grant keeps its first revocation time)."""
    return await db.fetchrow(
        "UPDATE support_grants SET revoked_at = coalesce(revoked_at, $3) "
        "WHERE district_id = $1 AND id = $2 RETURNING *",
        district_id,
        grant_id,
        now,
    )


async def grants_of_district(db: Db, district_id: uuid.UUID) -> list[Row]:
    """Every grant of the district, newest first, including expired and revoked ones."""
    return await db.fetch(
        "SELECT * FROM support_grants WHERE district_id = $1 ORDER BY created_at DESC, id", district_id
    )
