"""District governance: settings, policy versions and support grants.

For DISTRICT_ADMIN under any of its purposes (the policy document's
``governance_operations``); every other caller gets FORBIDDEN with reason
OUT_OF_SCOPE_OPERATION and nothing is written. Input is validated completely
before the first write, each write runs in the request's transaction, and the
audit notes the operation (no subject, no category: no student's personal
data is read or written here; a settings update also names each setting it
sets, ``DistrictSettingsInput.<field>``, never its value). New settings and
terms govern from the next request on: this request keeps the decisions it
started with.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import strawberry

from permissions.enums import Purpose
from permissions.errors import BadUserInput, NotFound, is_printable
from resolvers import governance as sql
from resolvers.reads import Row
from schema.base import Info, id_to_look_up
from schema.gate import Needs, field_name, gate

if TYPE_CHECKING:
    from schema.governance import DistrictSettingsInput, SupportGrant, SupportGrantInput
    from schema.types import District, DistrictSettings

MINIMUM_GROUP_SIZE = (5, 30)
MAX_GRANT_DAYS = 30
MAX_TICKET_LENGTH = 200
MAX_GRANT_USERS = 1000
RETENTION_FIELDS = ("responses_days", "activity_days", "device_days", "audit_days")
# A retention period is a number of days the data is kept: at most 100 years (more
# would keep it for good, and no date that far back exists for the retention run).
MAX_RETENTION_DAYS = 36_525


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _admin_district(info: Info, operation: str) -> uuid.UUID:
    """The caller's district, once the gate lets the caller govern it."""
    district_id: uuid.UUID = gate(info, operation, Needs.DISTRICT_ADMIN)
    return district_id


def _noted(info: Info, district_id: uuid.UUID) -> None:
    info.context.audit.note(str(district_id), None, field_name(info), "", True)


def _missing_district() -> NotFound:
    # Row-level security hid the caller's own district: never expected, never a 500.
    return NotFound("District not found")


# ----------------------------------------------------------------- settings


def _settings_changes(input: DistrictSettingsInput) -> dict[str, Any]:
    """The settings the input changes, validated; raises BadUserInput naming the field."""
    changes: dict[str, Any] = {}
    if input.authorized_purposes is not None:
        given = {Purpose(p) for p in input.authorized_purposes}
        if Purpose.LEGAL_COMPLIANCE not in given:
            raise BadUserInput(
                "input.authorizedPurposes must keep LEGAL_COMPLIANCE: a district cannot switch off "
                "uses the law requires",
                field="input.authorizedPurposes",
            )
        changes["authorized_purposes"] = [p.value for p in Purpose if p in given]
    for name in ("collect_usage", "collect_device", "collect_demographics", "direct_record_access"):
        value = getattr(input, name)
        if value is not None:
            changes[name] = bool(value)
    if input.minimum_group_size is not None:
        low, high = MINIMUM_GROUP_SIZE
        if not low <= input.minimum_group_size <= high:
            raise BadUserInput(
                f"input.minimumGroupSize must be between {low} and {high}", field="input.minimumGroupSize"
            )
        changes["minimum_group_size"] = input.minimum_group_size
    for name in RETENTION_FIELDS:
        value = getattr(input, name)
        if value is not None:
            if not 0 < value <= MAX_RETENTION_DAYS:
                field = f"input.{_camel(name)}"
                raise BadUserInput(
                    f"{field} must be a number of days from 1 to {MAX_RETENTION_DAYS} (100 years)", field=field
                )
            changes[name] = value
    return changes


async def update_district_settings(info: Info, input: DistrictSettingsInput) -> DistrictSettings:
    from schema.types import DistrictSettings

    district_id = _admin_district(info, "updateDistrictSettings")
    changes = _settings_changes(input)
    row = await sql.update_settings(info.context.db, district_id, changes)
    if row is None:
        raise _missing_district()
    _noted(info, district_id)
    # What changed (API.md section 3): each setting the input sets, by its input field's name.
    for name in changes:
        info.context.audit.note(str(district_id), None, f"DistrictSettingsInput.{_camel(name)}", "", True)
    return DistrictSettings.from_row(row)


# ----------------------------------------------------------- policy versions


async def accept_policy_version(info: Info, version: str) -> District:
    from schema.types import District

    district_id = _admin_district(info, "acceptPolicyVersion")
    policies = info.context.policies
    wanted = version.strip()
    if wanted not in policies:
        raise BadUserInput(
            f"Unknown policy version; the versions are: {', '.join(policies.versions())}", field="version"
        )
    current = await sql.district_row(info.context.db, district_id)
    if current is None:
        raise _missing_district()
    order = policies.versions()
    accepted = current["accepted_policy_version"]
    if accepted in policies and order.index(wanted) < order.index(accepted):
        raise BadUserInput(
            f"Policy version {wanted} is older than the accepted version {accepted}; "
            "a district cannot go back to older terms",
            field="version",
        )
    row = await sql.accept_version(info.context.db, district_id, wanted)
    if row is None:
        raise _missing_district()
    _noted(info, district_id)
    return District(row=row)


# ------------------------------------------------------------ support grants


def _grant_user_ids(raw: list[strawberry.ID] | None) -> list[uuid.UUID]:
    if raw is None:
        return []
    if len(raw) > MAX_GRANT_USERS:
        raise BadUserInput(f"input.userIds names more than {MAX_GRANT_USERS} users", field="input.userIds")
    ids: dict[uuid.UUID, None] = {}
    for value in raw:
        try:
            ids[uuid.UUID(str(value))] = None
        except ValueError:
            raise BadUserInput("input.userIds holds a value that is not a valid id", field="input.userIds") from None
    return list(ids)


def _grant_expiry(expires_at: dt.datetime, now: dt.datetime) -> dt.datetime:
    if expires_at.tzinfo is None or expires_at.utcoffset() is None:
        raise BadUserInput(
            "input.expiresAt needs a time zone offset (for example 2026-01-31T17:00:00Z)", field="input.expiresAt"
        )
    if expires_at <= now:
        raise BadUserInput("input.expiresAt must be in the future", field="input.expiresAt")
    if expires_at > now + dt.timedelta(days=MAX_GRANT_DAYS):
        raise BadUserInput(
            f"input.expiresAt must be at most {MAX_GRANT_DAYS} days from now; open a new grant when it ends",
            field="input.expiresAt",
        )
    return expires_at


async def _grant(info: Info, row: Row) -> SupportGrant:
    return (await _grants(info, [row]))[0]


async def _grants(info: Info, rows: list[Row]) -> list[SupportGrant]:
    from schema.governance import SupportGrant
    from schema.types import Staff

    # Every granter looked up together (gather starts them in one turn of the
    # loop, so the loader batches them): one scoped statement.
    reads = info.context.reads
    granters = sorted({row["granted_by"] for row in rows if row["granted_by"] is not None})
    found = dict(zip(granters, await asyncio.gather(*(reads.staff(g) for g in granters)), strict=True))
    grants = []
    for row in rows:
        staff_row = found.get(row["granted_by"]) if row["granted_by"] is not None else None
        grants.append(
            SupportGrant(
                id=strawberry.ID(str(row["id"])),
                ticket=row["ticket"],
                granted_by=None if staff_row is None else Staff.of(staff_row),
                expires_at=row["expires_at"],
                revoked_at=row["revoked_at"],
                user_ids=[strawberry.ID(str(u)) for u in row["user_ids"] or ()],
            )
        )
    return grants


async def open_support_grant(info: Info, input: SupportGrantInput) -> SupportGrant:
    district_id = _admin_district(info, "openSupportGrant")
    ctx = info.context
    ticket = input.ticket.strip()
    if not ticket:
        raise BadUserInput("input.ticket is required: name the support ticket the grant is for", field="input.ticket")
    if len(ticket) > MAX_TICKET_LENGTH:
        raise BadUserInput(f"input.ticket is longer than {MAX_TICKET_LENGTH} characters", field="input.ticket")
    if not is_printable(ticket):  # it becomes the audit's justification
        raise BadUserInput("input.ticket must be printable: no control characters", field="input.ticket")
    expires_at = _grant_expiry(input.expires_at, ctx.now)
    user_ids = _grant_user_ids(input.user_ids)
    if user_ids:
        known = await sql.district_user_ids(ctx.db, district_id, user_ids)
        if len(known) != len(user_ids):
            raise BadUserInput("input.userIds must name users of your district only", field="input.userIds")
    row = await sql.insert_grant(
        ctx.db,
        district_id=district_id,
        ticket=ticket,
        granted_by=ctx.principal.user_id,
        expires_at=expires_at,
        user_ids=user_ids,
        created_at=ctx.now,
    )
    _noted(info, district_id)
    return await _grant(info, row)


async def revoke_support_grant(info: Info, id: strawberry.ID) -> SupportGrant:
    district_id = _admin_district(info, "revokeSupportGrant")
    grant_id = id_to_look_up(id, "Support grant")
    row = await sql.revoke_grant(info.context.db, district_id, grant_id, info.context.now)
    if row is None:
        raise NotFound("Support grant not found")
    _noted(info, district_id)
    return await _grant(info, row)


async def support_grants(info: Info) -> list[SupportGrant]:
    district_id = _admin_district(info, "supportGrants")
    rows = await sql.grants_of_district(info.context.db, district_id)
    _noted(info, district_id)
    return await _grants(info, rows)
