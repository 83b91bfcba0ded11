"""District governance over HTTP: settings, policy versions and support grants.

Only a district admin governs, under any of its purposes, and only its own
district; every refused or invalid call leaves the stored rows exactly as
they were.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from tests.conftest import Gql, clock_at, error_codes

ADMIN = "admin@northwind.example"
RIVERSIDE_ADMIN = "admin@riverside.example"
JUSTIFIED = {"X-Justification": "court order 2026-114"}
ADMIN_PURPOSES = ["INSTRUCTION", "REPORTING", "PERSONALIZATION", "COMMUNICATION", "RECORD_ACCESS", "LEGAL_COMPLIANCE"]

# Every (user, purpose) the policy allows to a role other than DISTRICT_ADMIN
# (POLICY.md section 3, by hand).
OTHER_CALLERS = [
    ("principal1@northwind.example", "INSTRUCTION"),
    ("principal1@northwind.example", "REPORTING"),
    ("principal1@northwind.example", "PERSONALIZATION"),
    ("principal1@northwind.example", "COMMUNICATION"),
    ("teacher1@northwind.example", "INSTRUCTION"),
    ("teacher1@northwind.example", "REPORTING"),
    ("teacher1@northwind.example", "PERSONALIZATION"),
    ("teacher1@northwind.example", "COMMUNICATION"),
    ("student1@northwind.example", "STUDENT_LEARNING"),
    ("student1@northwind.example", "PERSONALIZATION"),
    ("guardian1@northwind.example", "REPORTING"),
    ("guardian1@northwind.example", "PERSONALIZATION"),
    ("analyst@pledgeql.example", "PRODUCT_ANALYTICS"),
    ("analyst@pledgeql.example", "REPORTING"),
    ("support@pledgeql.example", "SUPPORT"),
]

SETTINGS_FIELDS = (
    "authorizedPurposes collectUsage collectDevice collectDemographics directRecordAccess "
    "retention { responsesDays activityDays deviceDays auditDays }"
)
UPDATE = f"mutation($input: DistrictSettingsInput!) {{ updateDistrictSettings(input: $input) {{ {SETTINGS_FIELDS} }} }}"
ACCEPT = "mutation($v: String!) { acceptPolicyVersion(version: $v) { id acceptedPolicyVersion } }"
GRANT_FIELDS = "id ticket expiresAt revokedAt userIds grantedBy { id }"
OPEN = f"mutation($input: SupportGrantInput!) {{ openSupportGrant(input: $input) {{ {GRANT_FIELDS} }} }}"
REVOKE = f"mutation($id: ID!) {{ revokeSupportGrant(id: $id) {{ {GRANT_FIELDS} }} }}"
LIST = f"{{ supportGrants {{ {GRANT_FIELDS} }} }}"

DISTRICT_COLUMNS = (
    "authorized_purposes, collect_usage, collect_device, collect_demographics, direct_record_access, "
    "minimum_group_size, responses_days, activity_days, device_days, audit_days, accepted_policy_version"
)


def iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def soon(days: float = 7) -> str:
    return iso(dt.datetime.now(dt.UTC) + dt.timedelta(days=days))


def headers_for(purpose: str, request_id: str | None = None) -> dict[str, str]:
    sent = dict(JUSTIFIED) if purpose == "LEGAL_COMPLIANCE" else {}
    if request_id:
        sent["X-Request-Id"] = request_id
    return sent


@pytest.fixture(scope="module")
async def northwind(owner: Any) -> uuid.UUID:
    district_id: uuid.UUID = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    return district_id


@pytest.fixture(scope="module")
async def riverside(owner: Any) -> uuid.UUID:
    district_id: uuid.UUID = await owner.fetchval("SELECT id FROM districts WHERE name = 'Riverside Unified'")
    return district_id


async def district_state(owner: Any, district_id: uuid.UUID) -> dict[str, Any]:
    row = await owner.fetchrow(f"SELECT {DISTRICT_COLUMNS} FROM districts WHERE id = $1", district_id)
    return dict(row)


async def grants_state(owner: Any) -> list[dict[str, Any]]:
    rows = await owner.fetch("SELECT * FROM support_grants ORDER BY district_id, id")
    return [dict(r) for r in rows]


def the_error(body: dict[str, Any]) -> dict[str, Any]:
    errors = body.get("errors", [])
    assert len(errors) == 1, body
    error: dict[str, Any] = errors[0]
    return error


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("purpose", ADMIN_PURPOSES)
async def test_district_admin_updates_settings_under_each_of_its_purposes(
    gql: Gql, owner: Any, northwind: uuid.UUID, purpose: str
) -> None:
    size = 5 + ADMIN_PURPOSES.index(purpose)
    body = await gql(ADMIN, purpose, UPDATE, {"input": {"minimumGroupSize": size}}, headers=headers_for(purpose))
    assert "errors" not in body, body
    assert body["data"]["updateDistrictSettings"]["retention"]["responsesDays"] == 1095
    assert (await district_state(owner, northwind))["minimum_group_size"] == size
    restored = await gql(ADMIN, "REPORTING", UPDATE, {"input": {"minimumGroupSize": 10}})
    assert "errors" not in restored


async def test_update_district_settings_stores_every_field_and_returns_the_new_settings(
    gql: Gql, owner: Any, northwind: uuid.UUID, riverside: uuid.UUID
) -> None:
    before = await district_state(owner, northwind)
    riverside_before = await district_state(owner, riverside)
    new = {
        "authorizedPurposes": ["LEGAL_COMPLIANCE", "REPORTING", "INSTRUCTION", "REPORTING"],
        "collectUsage": False,
        "collectDevice": False,
        "collectDemographics": False,
        "directRecordAccess": True,
        "minimumGroupSize": 30,
        "responsesDays": 400,
        "activityDays": 200,
        "deviceDays": 30,
        "auditDays": 3000,
    }
    body = await gql(ADMIN, "REPORTING", UPDATE, {"input": new})
    assert "errors" not in body, body
    assert body["data"]["updateDistrictSettings"] == {
        # Stored once each, in the order of the Purpose enum.
        "authorizedPurposes": ["INSTRUCTION", "REPORTING", "LEGAL_COMPLIANCE"],
        "collectUsage": False,
        "collectDevice": False,
        "collectDemographics": False,
        "directRecordAccess": True,
        "retention": {"responsesDays": 400, "activityDays": 200, "deviceDays": 30, "auditDays": 3000},
    }
    stored = await district_state(owner, northwind)
    assert stored["authorized_purposes"] == ["INSTRUCTION", "REPORTING", "LEGAL_COMPLIANCE"]
    assert stored["minimum_group_size"] == 30
    assert (stored["responses_days"], stored["activity_days"], stored["device_days"], stored["audit_days"]) == (
        400,
        200,
        30,
        3000,
    )
    assert not stored["collect_usage"] and not stored["collect_device"] and not stored["collect_demographics"]
    assert stored["direct_record_access"] is True
    assert await district_state(owner, riverside) == riverside_before

    restore = {
        "authorizedPurposes": before["authorized_purposes"],
        "collectUsage": True,
        "collectDevice": True,
        "collectDemographics": True,
        "directRecordAccess": before["direct_record_access"],
        "minimumGroupSize": before["minimum_group_size"],
        "responsesDays": before["responses_days"],
        "activityDays": before["activity_days"],
        "deviceDays": before["device_days"],
        "auditDays": before["audit_days"],
    }
    body = await gql(ADMIN, "REPORTING", UPDATE, {"input": restore})
    assert "errors" not in body, body
    assert await district_state(owner, northwind) == before


async def test_an_empty_settings_input_changes_nothing_and_returns_the_settings(
    gql: Gql, owner: Any, northwind: uuid.UUID
) -> None:
    before = await district_state(owner, northwind)
    body = await gql(ADMIN, "REPORTING", UPDATE, {"input": {}})
    assert "errors" not in body, body
    assert body["data"]["updateDistrictSettings"]["collectUsage"] is before["collect_usage"]
    assert await district_state(owner, northwind) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"minimumGroupSize": 4}, "input.minimumGroupSize"),
        ({"minimumGroupSize": 31}, "input.minimumGroupSize"),
        ({"minimumGroupSize": -10}, "input.minimumGroupSize"),
        ({"responsesDays": 0}, "input.responsesDays"),
        ({"activityDays": -1}, "input.activityDays"),
        ({"deviceDays": 0}, "input.deviceDays"),
        ({"auditDays": -365}, "input.auditDays"),
        # Over 100 years: no retention run could compute how far back that is.
        ({"auditDays": 36_526}, "input.auditDays"),
        ({"responsesDays": 2_147_483_647}, "input.responsesDays"),
        ({"authorizedPurposes": ["INSTRUCTION", "REPORTING"]}, "input.authorizedPurposes"),
        ({"authorizedPurposes": []}, "input.authorizedPurposes"),
        # A valid change beside an invalid one is not stored either.
        ({"collectUsage": False, "minimumGroupSize": 2}, "input.minimumGroupSize"),
    ],
)
async def test_invalid_settings_are_refused_naming_the_field_and_nothing_is_stored(
    gql: Gql, owner: Any, northwind: uuid.UUID, change: dict[str, Any], field: str
) -> None:
    before = await district_state(owner, northwind)
    body = await gql(ADMIN, "REPORTING", UPDATE, {"input": change})
    error = the_error(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == field
    assert field.split(".")[1] in error["message"]
    assert body["data"] is None
    assert await district_state(owner, northwind) == before


async def test_an_unknown_purpose_in_authorized_purposes_is_a_bad_user_input(
    gql: Gql, owner: Any, northwind: uuid.UUID
) -> None:
    before = await district_state(owner, northwind)
    body = await gql(ADMIN, "REPORTING", UPDATE, {"input": {"authorizedPurposes": ["ADVERTISING"]}})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert await district_state(owner, northwind) == before


# --------------------------------------------------------- other callers

OPERATIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("updateDistrictSettings", UPDATE, {"input": {"minimumGroupSize": 25}}),
    ("acceptPolicyVersion", ACCEPT, {"v": "2099-01-01"}),
    ("openSupportGrant", OPEN, {"input": {"ticket": "T-1", "expiresAt": soon()}}),
    ("revokeSupportGrant", REVOKE, {"id": str(uuid.UUID(int=1))}),
    ("supportGrants", LIST, {}),
]


@pytest.mark.parametrize(("operation", "query", "variables"), OPERATIONS, ids=[o[0] for o in OPERATIONS])
@pytest.mark.parametrize(("username", "purpose"), OTHER_CALLERS)
async def test_no_role_but_district_admin_may_govern_and_nothing_is_stored(
    gql: Gql,
    owner: Any,
    northwind: uuid.UUID,
    username: str,
    purpose: str,
    operation: str,
    query: str,
    variables: dict[str, Any],
) -> None:
    if username.startswith("support@"):
        # Give SUPPORT every reason to succeed but its role: an active grant.
        await owner.execute(
            "INSERT INTO support_grants (district_id, id, ticket, expires_at) "
            "VALUES ($1, $2, 'T-support', now() + interval '1 day') ON CONFLICT DO NOTHING",
            northwind,
            uuid.UUID(int=2),
        )
    district_before = await district_state(owner, northwind)
    grants_before = await grants_state(owner)
    request_id = f"gov-refused-{uuid.uuid4().hex}"
    body = await gql(username, purpose, query, variables, headers={"X-Request-Id": request_id})
    error = the_error(body)
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["extensions"]["reason"] == "OUT_OF_SCOPE_OPERATION"
    assert error["extensions"]["purpose"] == purpose
    assert error["path"] == [operation]
    assert body["data"] is None
    assert await district_state(owner, northwind) == district_before
    assert await grants_state(owner) == grants_before
    audit = await owner.fetch("SELECT fields, decision FROM audit_entries WHERE client_request_id = $1", request_id)
    kind = "Query" if operation == "supportGrants" else "Mutation"
    assert [(list(r["fields"]), r["decision"]) for r in audit] == [([f"{kind}.{operation}"], "DENY")]


# ----------------------------------------------------------- policy versions


async def test_accept_policy_version_accepts_only_known_versions_not_older_than_the_accepted_one(
    app: Any, gql: Gql, owner: Any, northwind: uuid.UUID, riverside: uuid.UUID
) -> None:
    async def accepted(district: uuid.UUID) -> str:
        version: str = await owner.fetchval("SELECT accepted_policy_version FROM districts WHERE id = $1", district)
        return version

    # The test versions are dated 2098 and 2099: move the clock past them.
    with clock_at(app, dt.datetime(2099, 2, 1, 12, 0, tzinfo=dt.UTC)):
        assert await accepted(northwind) == "2020-04-01"
        unknown = await gql(ADMIN, "REPORTING", ACCEPT, {"v": "2031-13-01"})
        error = the_error(unknown)
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "version"}
        assert "2020-04-01" in error["message"] and "2099-01-01" in error["message"]
        assert await accepted(northwind) == "2020-04-01"

        same = await gql(ADMIN, "RECORD_ACCESS", ACCEPT, {"v": "2020-04-01"})
        assert same["data"]["acceptPolicyVersion"]["acceptedPolicyVersion"] == "2020-04-01"

        newer = await gql(ADMIN, "COMMUNICATION", ACCEPT, {"v": "2098-06-01"})
        assert "errors" not in newer, newer
        assert newer["data"]["acceptPolicyVersion"] == {"id": str(northwind), "acceptedPolicyVersion": "2098-06-01"}
        assert await accepted(northwind) == "2098-06-01"

        older = await gql(ADMIN, "REPORTING", ACCEPT, {"v": "2020-04-01"})
        error = the_error(older)
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "version"}
        assert "older" in error["message"]
        assert await accepted(northwind) == "2098-06-01"

        latest = await gql(ADMIN, "REPORTING", ACCEPT, {"v": "2099-01-01"})
        assert latest["data"]["acceptPolicyVersion"]["acceptedPolicyVersion"] == "2099-01-01"
        assert await accepted(northwind) == "2099-01-01"
        assert await accepted(riverside) == "2020-04-01"


# ------------------------------------------------------------ support grants


async def test_open_support_grant_stores_the_grant_with_its_ticket_granter_and_users(
    gql: Gql, owner: Any, northwind: uuid.UUID, users: dict[str, uuid.UUID]
) -> None:
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=3)
    student = users["student1@northwind.example"]
    teacher = users["teacher1@northwind.example"]
    before = dt.datetime.now(dt.UTC)
    body = await gql(
        ADMIN,
        "PERSONALIZATION",
        OPEN,
        {"input": {"ticket": "  HELP-4242 ", "expiresAt": iso(expires), "userIds": [str(student), str(teacher)]}},
    )
    assert "errors" not in body, body
    grant = body["data"]["openSupportGrant"]
    assert grant["ticket"] == "HELP-4242"
    assert grant["revokedAt"] is None
    assert grant["userIds"] == [str(student), str(teacher)]
    # Under PERSONALIZATION the admin's staff scope is their own record: the granter is visible.
    assert grant["grantedBy"] == {"id": str(users[ADMIN])}
    row = await owner.fetchrow("SELECT * FROM support_grants WHERE id = $1", uuid.UUID(grant["id"]))
    assert row["district_id"] == northwind
    assert row["ticket"] == "HELP-4242"
    assert row["granted_by"] == users[ADMIN]
    assert row["expires_at"] == expires
    assert row["revoked_at"] is None
    assert list(row["user_ids"]) == [student, teacher]
    assert before - dt.timedelta(seconds=5) <= row["created_at"] <= dt.datetime.now(dt.UTC)


async def test_a_grant_may_last_thirty_days_and_no_longer(gql: Gql, owner: Any) -> None:
    # The request's clock runs after the test's, so "30 days from the test's now" is within the limit.
    ok = await gql(ADMIN, "REPORTING", OPEN, {"input": {"ticket": "T-30", "expiresAt": soon(30)}})
    assert "errors" not in ok, ok
    before = await grants_state(owner)
    too_long = await gql(ADMIN, "REPORTING", OPEN, {"input": {"ticket": "T-31", "expiresAt": soon(30.01)}})
    assert the_error(too_long)["extensions"] == {"code": "BAD_USER_INPUT", "field": "input.expiresAt"}
    assert await grants_state(owner) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ticket": ""}, "input.ticket"),
        ({"ticket": "   \t "}, "input.ticket"),
        ({"ticket": "x" * 201}, "input.ticket"),
        ({"expiresAt": "PAST"}, "input.expiresAt"),
        ({"expiresAt": "NAIVE"}, "input.expiresAt"),
        ({"expiresAt": "FAR"}, "input.expiresAt"),
        ({"userIds": ["not-an-id"]}, "input.userIds"),
        ({"userIds": ["RIVERSIDE"]}, "input.userIds"),
        ({"userIds": [str(uuid.UUID(int=99))]}, "input.userIds"),
        ({"userIds": ["analyst"]}, "input.userIds"),
    ],
)
async def test_invalid_support_grants_are_refused_naming_the_field_and_nothing_is_stored(
    gql: Gql, owner: Any, users: dict[str, uuid.UUID], change: dict[str, Any], field: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    special = {
        "PAST": iso(now - dt.timedelta(minutes=1)),
        "NAIVE": (now + dt.timedelta(days=1)).replace(tzinfo=None).isoformat(),
        "FAR": iso(now + dt.timedelta(days=45)),
        "RIVERSIDE": str(users["student1@riverside.example"]),
        "analyst": str(users["analyst@pledgeql.example"]),
    }
    grant: dict[str, Any] = {
        "ticket": "T-9",
        "expiresAt": soon(),
        "userIds": [str(users["student2@northwind.example"])],
    }
    for key, value in change.items():
        grant[key] = [special.get(v, v) for v in value] if isinstance(value, list) else special.get(value, value)
    before = await grants_state(owner)
    body = await gql(ADMIN, "REPORTING", OPEN, {"input": grant})
    error = the_error(body)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}
    assert field.split(".")[1] in error["message"]
    # No id of the refused user comes back in the message.
    for value in grant.get("userIds") or []:
        assert value not in error["message"]
    assert await grants_state(owner) == before


async def test_revoke_support_grant_revokes_once_and_only_the_admins_own_district(
    gql: Gql, owner: Any, riverside: uuid.UUID
) -> None:
    opened = await gql(ADMIN, "REPORTING", OPEN, {"input": {"ticket": "T-REV", "expiresAt": soon(2)}})
    grant_id = opened["data"]["openSupportGrant"]["id"]

    other = await gql(RIVERSIDE_ADMIN, "REPORTING", REVOKE, {"id": grant_id})
    assert error_codes(other) == ["NOT_FOUND"]
    assert await owner.fetchval("SELECT revoked_at FROM support_grants WHERE id = $1", uuid.UUID(grant_id)) is None

    first = await gql(ADMIN, "REPORTING", REVOKE, {"id": grant_id})
    assert "errors" not in first, first
    revoked_at = first["data"]["revokeSupportGrant"]["revokedAt"]
    assert revoked_at is not None
    stored = await owner.fetchval("SELECT revoked_at FROM support_grants WHERE id = $1", uuid.UUID(grant_id))
    assert stored is not None

    again = await gql(ADMIN, "INSTRUCTION", REVOKE, {"id": grant_id})
    assert again["data"]["revokeSupportGrant"]["revokedAt"] == revoked_at
    assert await owner.fetchval("SELECT revoked_at FROM support_grants WHERE id = $1", uuid.UUID(grant_id)) == stored

    riverside_grant = uuid.uuid4()
    await owner.execute(
        "INSERT INTO support_grants (district_id, id, ticket, expires_at) "
        "VALUES ($1, $2, 'R-1', now() + interval '1 day')",
        riverside,
        riverside_grant,
    )
    missing = await gql(ADMIN, "REPORTING", REVOKE, {"id": str(riverside_grant)})
    nonexistent = await gql(ADMIN, "REPORTING", REVOKE, {"id": str(uuid.uuid4())})
    malformed = await gql(ADMIN, "REPORTING", REVOKE, {"id": "grant-1"})
    for body in (missing, nonexistent, malformed):
        assert error_codes(body) == ["NOT_FOUND"]
        assert body["errors"][0]["message"] == "Support grant not found"
    assert await owner.fetchval("SELECT revoked_at FROM support_grants WHERE id = $1", riverside_grant) is None


async def test_support_grants_lists_the_admins_district_grants_newest_first(
    gql: Gql, owner: Any, northwind: uuid.UUID, riverside: uuid.UUID
) -> None:
    await owner.execute(
        "INSERT INTO support_grants (district_id, id, ticket, expires_at) "
        "VALUES ($1, $2, 'R-LIST', now() + interval '1 day')",
        riverside,
        uuid.uuid4(),
    )
    opened = await gql(ADMIN, "REPORTING", OPEN, {"input": {"ticket": "T-LIST", "expiresAt": soon(1)}})
    body = await gql(ADMIN, "RECORD_ACCESS", LIST)
    assert "errors" not in body, body
    listed = body["data"]["supportGrants"]
    expected = await owner.fetch(
        "SELECT id FROM support_grants WHERE district_id = $1 ORDER BY created_at DESC, id", northwind
    )
    assert [g["id"] for g in listed] == [str(r["id"]) for r in expected]
    assert listed[0]["id"] == opened["data"]["openSupportGrant"]["id"]
    assert "R-LIST" not in {g["ticket"] for g in listed}

    riverside_list = await gql(RIVERSIDE_ADMIN, "REPORTING", LIST)
    assert {g["ticket"] for g in riverside_list["data"]["supportGrants"]} >= {"R-LIST"}
    assert "T-LIST" not in {g["ticket"] for g in riverside_list["data"]["supportGrants"]}


@pytest.mark.parametrize(
    ("query", "variables", "field"),
    [
        # A settings update names what it changed (API.md section 3), never the values.
        (
            UPDATE,
            {"input": {"collectDevice": True, "auditDays": 2557}},
            "Mutation.updateDistrictSettings DistrictSettingsInput.collectDevice DistrictSettingsInput.auditDays",
        ),
        (OPEN, {"input": {"ticket": "T-AUDIT", "expiresAt": soon()}}, "Mutation.openSupportGrant"),
        (LIST, {}, "Query.supportGrants"),
    ],
)
async def test_each_governance_call_leaves_one_audit_entry_about_no_student(
    gql: Gql, owner: Any, northwind: uuid.UUID, users: dict[str, uuid.UUID], query: str, variables: Any, field: str
) -> None:
    request_id = f"gov-audit-{uuid.uuid4().hex}"
    body = await gql(ADMIN, "LEGAL_COMPLIANCE", query, variables, headers={**JUSTIFIED, "X-Request-Id": request_id})
    assert "errors" not in body, body
    rows = await owner.fetch("SELECT * FROM audit_entries WHERE client_request_id = $1", request_id)
    assert len(rows) == 1
    entry = rows[0]
    assert entry["district_id"] == northwind
    assert list(entry["fields"]) == field.split()
    assert list(entry["categories"]) == []
    assert entry["decision"] == "ALLOW"
    assert entry["subject_student_id"] is None
    assert entry["actor_id"] == users[ADMIN]
    assert entry["justification"] == JUSTIFIED["X-Justification"]
    assert entry["break_glass"] is True


async def test_the_database_refuses_settings_the_api_refuses(owner: Any, northwind: uuid.UUID) -> None:
    import asyncpg

    for assignment in ("minimum_group_size = 4", "minimum_group_size = 31", "audit_days = 0", "device_days = -1"):
        with pytest.raises(asyncpg.CheckViolationError):
            await owner.execute(f"UPDATE districts SET {assignment} WHERE id = $1", northwind)
    with pytest.raises(asyncpg.CheckViolationError):
        await owner.execute(
            "INSERT INTO support_grants (district_id, id, ticket, expires_at) "
            "VALUES ($1, $2, '  ', now() + interval '1 day')",
            northwind,
            uuid.uuid4(),
        )


async def test_support_grants_look_their_granters_up_in_one_statement(
    gql: Gql, owner: Any, app: Any, northwind: uuid.UUID
) -> None:
    from tests.test_statement_count import counting

    granters = {}
    for user in (ADMIN, "principal1@northwind.example", "teacher1@northwind.example"):
        granters[user] = await owner.fetchval("SELECT id FROM users WHERE username = $1", user)

    async def statements_with_granters(users: list[str]) -> int:
        await owner.execute("DELETE FROM support_grants WHERE ticket LIKE 'T-GRANTER-%'")
        for number, user in enumerate(users):
            await owner.execute(
                "INSERT INTO support_grants (district_id, id, ticket, expires_at, granted_by) "
                "VALUES ($1, $2, $3, now() + interval '1 day', $4)",
                northwind,
                uuid.uuid4(),
                f"T-GRANTER-{number}",
                granters[user],
            )
        await gql(ADMIN, "REPORTING", LIST)  # a pooled connection open, the principal known
        async with counting(app) as seen:
            body = await gql(ADMIN, "REPORTING", LIST)
        assert "errors" not in body, body
        listed = body["data"]["supportGrants"]
        by_ticket = {g["ticket"]: g["grantedBy"] for g in listed if g["ticket"].startswith("T-GRANTER-")}
        assert by_ticket == {f"T-GRANTER-{n}": {"id": str(granters[u])} for n, u in enumerate(users)}
        return len(seen)

    one = await statements_with_granters([ADMIN, ADMIN, ADMIN])
    three = await statements_with_granters([ADMIN, "principal1@northwind.example", "teacher1@northwind.example"])
    assert three == one
