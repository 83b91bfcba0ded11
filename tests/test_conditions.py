"""POLICY.md section 4 over HTTP: the conditions that narrow the matrix.

Each district setting is changed through the API (updateDistrictSettings,
openSupportGrant, acceptPolicyVersion) and its effect read back as a real
caller. This module's app loads the test policy versions of tests/policies:
a non-material 2098-06-01 (SUPPORT no longer sees DEVICE) and a material
2099-01-01 (TEACHER/INSTRUCTION may read DEMOGRAPHIC once accepted).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from permissions.admission import NIL_DISTRICT
from permissions.admission import rls_districts as admission_districts
from permissions.decide import DecisionTable, Relationship, is_purpose_authorized
from permissions.enums import DataCategory, DenyReason, Purpose, Role
from resolvers.db import Db
from resolvers.principal import load_conditions, load_principal
from tests.conftest import Gql, error_codes

ADMIN = "admin@northwind.example"
TEACHER = "teacher1@northwind.example"
STUDENT = "student1@northwind.example"
GUARDIAN = "guardian1@northwind.example"
SUPPORT = "support@pledgeql.example"
RIVERSIDE_TEACHER = "teacher1@riverside.example"
RIVERSIDE_STUDENT = "student1@riverside.example"
GRAPHQL_RESPONSE = {"Accept": "application/graphql-response+json"}
ALL_BUT_NOTHING = [p.value for p in Purpose]

SETTINGS = "mutation($input: DistrictSettingsInput!) { updateDistrictSettings(input: $input) { collectUsage } }"
LOOKUP = "query($id: ID!) {{ student(id: $id) {{ id {fields} }} }}"


@pytest.fixture(scope="module")
async def northwind(owner: Any) -> uuid.UUID:
    district_id: uuid.UUID = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    return district_id


@pytest.fixture(scope="module")
async def riverside(owner: Any) -> uuid.UUID:
    district_id: uuid.UUID = await owner.fetchval("SELECT id FROM districts WHERE name = 'Riverside Unified'")
    return district_id


@contextlib.asynccontextmanager
async def northwind_settings(gql: Gql, **changes: Any) -> AsyncIterator[None]:
    """Change Northwind's settings through the API for the block, then put them back."""
    body = await gql(ADMIN, "REPORTING", SETTINGS, {"input": changes})
    assert "errors" not in body, body
    restore = {
        "authorizedPurposes": ALL_BUT_NOTHING,
        "collectUsage": True,
        "collectDevice": True,
        "collectDemographics": True,
        "directRecordAccess": False,
    }
    try:
        yield
    finally:
        # Under REPORTING even when the block took REPORTING away: governance is not a use of student data.
        body = await gql(ADMIN, "REPORTING", SETTINGS, {"input": {k: restore[k] for k in changes}})
        assert "errors" not in body, body


def refusals(body: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """field name -> (category, purpose, reason) of each FORBIDDEN error."""
    return {
        str(e["path"][-1]): (e["extensions"]["category"], e["extensions"]["purpose"], e["extensions"]["reason"])
        for e in body.get("errors", [])
        if e["extensions"]["code"] == "FORBIDDEN"
    }


async def read_student(gql: Gql, username: str, purpose: str, student: uuid.UUID, fields: str, **kw: Any) -> Any:
    return await gql(username, purpose, LOOKUP.format(fields=fields), {"id": str(student)}, **kw)


# ------------------------------------------------- 1. authorized purposes


async def test_a_purpose_the_district_switches_off_is_refused_on_its_data(
    gql: Gql, users: dict[str, uuid.UUID]
) -> None:
    student = users[STUDENT]
    before = await read_student(gql, TEACHER, "REPORTING", student, "firstName studentNumber")
    assert before["data"]["student"]["firstName"] and "errors" not in before

    async with northwind_settings(gql, authorizedPurposes=[p for p in ALL_BUT_NOTHING if p != "REPORTING"]):
        off = await read_student(gql, TEACHER, "REPORTING", student, "firstName studentNumber")
        assert off["data"]["student"] == {"id": str(student), "firstName": None, "studentNumber": None}
        assert refusals(off) == {
            "firstName": ("DIRECTORY", "REPORTING", "PURPOSE_NOT_AUTHORIZED_BY_DISTRICT"),
            "studentNumber": ("IDENTIFIER", "REPORTING", "PURPOSE_NOT_AUTHORIZED_BY_DISTRICT"),
        }
        # The message says what stands in the way: the district, not the policy.
        assert {e["message"] for e in off["errors"]} == {
            "The district has not authorized purpose REPORTING for DIRECTORY data",
            "The district has not authorized purpose REPORTING for IDENTIFIER data",
        }
        # Another purpose of the same district, and the same purpose in another district, still work.
        other_purpose = await read_student(gql, TEACHER, "INSTRUCTION", student, "firstName")
        assert other_purpose["data"]["student"]["firstName"] and "errors" not in other_purpose
        other_district = await read_student(gql, RIVERSIDE_TEACHER, "REPORTING", users[RIVERSIDE_STUDENT], "firstName")
        assert other_district["data"]["student"]["firstName"] and "errors" not in other_district

    after = await read_student(gql, TEACHER, "REPORTING", student, "firstName")
    assert after["data"]["student"]["firstName"] and "errors" not in after


# ------------------------------------------------- 2. collection switches

SWITCHES = [
    ("collectUsage", "USAGE", TEACHER, "INSTRUCTION", "lastActiveAt", "activity(first: 2) { kind }"),
    ("collectDevice", "DEVICE", ADMIN, "RECORD_ACCESS", "deviceSessions(first: 2) { ipAddress }", ""),
    ("collectDemographics", "DEMOGRAPHIC", ADMIN, "REPORTING", "gender", "birthDate"),
]


@pytest.mark.parametrize(
    ("switch", "category", "username", "purpose", "field", "second"), SWITCHES, ids=[s[0] for s in SWITCHES]
)
async def test_a_kind_of_data_the_district_does_not_collect_resolves_to_null_not_collected(
    gql: Gql,
    users: dict[str, uuid.UUID],
    switch: str,
    category: str,
    username: str,
    purpose: str,
    field: str,
    second: str,
) -> None:
    student = users[STUDENT]
    fields = f"firstName {field} {second}"
    names = [f.split("(")[0].split(" ")[0] for f in (field, second) if f]
    before = await read_student(gql, username, purpose, student, fields)
    assert "errors" not in before, before
    assert all(before["data"]["student"][n] not in (None, []) for n in names)

    async with northwind_settings(gql, **{switch: False}):
        off = await read_student(gql, username, purpose, student, fields)
        assert off["data"]["student"]["firstName"], "other categories are untouched"
        assert all(off["data"]["student"][n] is None for n in names)
        assert refusals(off) == {n: (category, purpose, "NOT_COLLECTED") for n in names}
        assert {e["message"] for e in off["errors"]} == {f"The district does not collect {category} data"}


# ------------------------------------------------- 3. direct record access


@pytest.mark.parametrize("username", [STUDENT, GUARDIAN])
async def test_record_access_by_families_is_refused_until_the_district_allows_direct_access(
    gql: Gql, users: dict[str, uuid.UUID], username: str
) -> None:
    query = LOOKUP.format(fields="firstName gender deviceSessions(first: 1) { ipAddress }")
    variables = {"id": str(users[STUDENT])}
    refused = await gql(username, "RECORD_ACCESS", query, variables, headers=GRAPHQL_RESPONSE)
    assert refused["_status"] == 403
    assert "data" not in refused
    assert error_codes(refused) == ["DIRECT_ACCESS_DISABLED"]
    assert "contact your school district" in refused["errors"][0]["message"]

    async with northwind_settings(gql, directRecordAccess=True):
        allowed = await gql(username, "RECORD_ACCESS", query, variables, headers=GRAPHQL_RESPONSE)
        assert allowed["_status"] == 200 and "errors" not in allowed, allowed
        record = allowed["data"]["student"]
        assert record["firstName"] and record["gender"] and record["deviceSessions"][0]["ipAddress"]
        # Riverside has not turned it on: its families are still refused.
        riverside = await gql(
            RIVERSIDE_STUDENT,
            "RECORD_ACCESS",
            query,
            {"id": str(users[RIVERSIDE_STUDENT])},
            headers=GRAPHQL_RESPONSE,
        )
        assert error_codes(riverside) == ["DIRECT_ACCESS_DISABLED"]

    again = await gql(username, "RECORD_ACCESS", query, variables, headers=GRAPHQL_RESPONSE)
    assert error_codes(again) == ["DIRECT_ACCESS_DISABLED"]


async def test_the_district_itself_answers_record_access_whatever_direct_access_says(
    gql: Gql, users: dict[str, uuid.UUID]
) -> None:
    body = await read_student(gql, ADMIN, "RECORD_ACCESS", users[STUDENT], "firstName guardians { email }")
    assert "errors" not in body, body
    assert body["data"]["student"]["guardians"][0]["email"]


# ------------------------------------------------- 4. analytics consent
# Excluding opted-out students from PRODUCT_ANALYTICS aggregates happens in the
# reports (tests of the aggregate engine). What the policy engine decides is
# tested here: ANALYST never reaches a student row, consenting or not, and a
# district that withdraws PRODUCT_ANALYTICS leaves the analyst's transaction.


async def test_an_analyst_reaches_neither_an_opted_out_nor_a_consenting_student(gql: Gql, owner: Any) -> None:
    for opted_out in (True, False):
        student = await owner.fetchval(
            "SELECT student_id FROM consents WHERE analytics_opt_out = $1 ORDER BY student_id LIMIT 1", opted_out
        )
        assert student is not None
        body = await read_student(gql, "analyst@pledgeql.example", "PRODUCT_ANALYTICS", student, "firstName")
        assert body["data"] == {"student": None}
        assert error_codes(body) == ["NOT_FOUND"]


async def test_a_district_that_withdraws_both_analyst_purposes_leaves_the_analysts_transaction(
    gql: Gql, owner: Any, northwind: uuid.UUID, riverside: uuid.UUID, users: dict[str, uuid.UUID]
) -> None:
    """A district that authorizes neither of the analysts' purposes is not in
    the analyst's transaction at all. One that withdraws only one of them
    stays in it under both, to be counted for the joint suppression of the
    two purposes' reports (schema/reports.py); no report of the withdrawn
    purpose counts it (tests/attacks/test_reports.py)."""

    async def rls_districts(purpose: Purpose) -> set[uuid.UUID]:
        # Every district's settings, as the analyst's principal statement reads them for the server.
        standing = await load_principal(
            Db(owner), users["analyst@pledgeql.example"], frozenset(Purpose), dt.datetime.now(dt.UTC), NIL_DISTRICT
        )
        assert standing is not None and standing.every_district is not None
        return set(admission_districts(standing.principal, purpose, standing.every_district))

    assert await rls_districts(Purpose.PRODUCT_ANALYTICS) >= {northwind, riverside}
    withdrawn = ("PRODUCT_ANALYTICS", "REPORTING")
    async with northwind_settings(gql, authorizedPurposes=[p for p in ALL_BUT_NOTHING if p not in withdrawn]):
        conditions = await load_conditions(Db(owner), [northwind])
        assert not is_purpose_authorized(Purpose.PRODUCT_ANALYTICS, conditions[str(northwind)])
        for purpose in (Purpose.PRODUCT_ANALYTICS, Purpose.REPORTING):
            districts = await rls_districts(purpose)
            assert northwind not in districts and riverside in districts
    async with northwind_settings(gql, authorizedPurposes=[p for p in ALL_BUT_NOTHING if p != "PRODUCT_ANALYTICS"]):
        assert northwind in await rls_districts(Purpose.PRODUCT_ANALYTICS)
        assert northwind in await rls_districts(Purpose.REPORTING)
        report = await gql(
            "analyst@pledgeql.example",
            "PRODUCT_ANALYTICS",
            "query($i: ReportInput!) { performanceReport(input: $i) { total { students } } }",
            {"i": {"scope": {"districtId": str(northwind)}}},
        )
        assert error_codes(report) == ["FORBIDDEN"]
    assert northwind in await rls_districts(Purpose.PRODUCT_ANALYTICS)


# ------------------------------------------------- 5. support grants


@contextlib.contextmanager
def clock_at(app: Any, moment: dt.datetime) -> Iterator[None]:
    endpoint = app.state.pledgeql.endpoint
    before = endpoint.clock
    endpoint.clock = lambda: moment
    try:
        yield
    finally:
        endpoint.clock = before


async def open_grant(gql: Gql, expires_at: dt.datetime, user_ids: list[uuid.UUID] | None = None) -> str:
    body = await gql(
        ADMIN,
        "REPORTING",
        "mutation($i: SupportGrantInput!) { openSupportGrant(input: $i) { id } }",
        {
            "i": {
                "ticket": "COND-7",
                "expiresAt": expires_at.isoformat(),
                "userIds": None if user_ids is None else [str(u) for u in user_ids],
            }
        },
    )
    assert "errors" not in body, body
    grant: str = body["data"]["openSupportGrant"]["id"]
    return grant


async def revoke(gql: Gql, grant: str) -> None:
    body = await gql(ADMIN, "REPORTING", "mutation($id: ID!) { revokeSupportGrant(id: $id) { id } }", {"id": grant})
    assert "errors" not in body, body


async def test_support_reads_within_an_active_grant_only(app: Any, gql: Gql, users: dict[str, uuid.UUID]) -> None:
    student = users[STUDENT]
    fields = "firstName lastActiveAt studentNumber"
    without = await read_student(gql, SUPPORT, "SUPPORT", student, fields)
    assert error_codes(without) == ["NOT_FOUND"]

    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)
    grant = await open_grant(gql, expires)
    try:
        active = await read_student(gql, SUPPORT, "SUPPORT", student, fields)
        record = active["data"]["student"]
        assert record["firstName"] and record["lastActiveAt"]
        assert record["studentNumber"] is None
        assert refusals(active) == {"studentNumber": ("IDENTIFIER", "SUPPORT", "PURPOSE_NOT_ALLOWED_FOR_CATEGORY")}
        with clock_at(app, expires + dt.timedelta(minutes=1)):
            expired = await read_student(gql, SUPPORT, "SUPPORT", student, fields)
            assert error_codes(expired) == ["NOT_FOUND"]
    finally:
        await revoke(gql, grant)
    revoked = await read_student(gql, SUPPORT, "SUPPORT", student, fields)
    assert error_codes(revoked) == ["NOT_FOUND"]


async def test_a_grant_narrowed_to_users_opens_only_those_users(gql: Gql, users: dict[str, uuid.UUID]) -> None:
    grant = await open_grant(gql, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), [users[STUDENT]])
    try:
        named = await read_student(gql, SUPPORT, "SUPPORT", users[STUDENT], "firstName")
        assert named["data"]["student"]["firstName"]
        other = await read_student(gql, SUPPORT, "SUPPORT", users["student2@northwind.example"], "firstName")
        assert error_codes(other) == ["NOT_FOUND"]
    finally:
        await revoke(gql, grant)


async def test_without_a_grant_the_decision_for_support_is_no_support_grant(
    owner: Any, northwind: uuid.UUID, riverside: uuid.UUID, app: Any
) -> None:
    # Over HTTP the rows are simply invisible; the decision behind them, with the real settings:
    policies = app.state.pledgeql.policies
    conditions = await load_conditions(Db(owner), [northwind, riverside])
    table = DecisionTable(
        policies,
        Role.SUPPORT,
        Purpose.SUPPORT,
        {str(northwind): Relationship(support_grant_active=True)},
        conditions,
    )
    assert table.lookup(str(northwind), DataCategory.DIRECTORY).allowed
    assert table.lookup(str(riverside), DataCategory.DIRECTORY).reason is DenyReason.NO_SUPPORT_GRANT


# ------------------------------------------------- 6. justification


async def test_legal_compliance_needs_a_justification_which_every_audit_entry_keeps(
    gql: Gql, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    query = LOOKUP.format(fields="firstName gender deviceSessions(first: 1) { ipAddress } guardians { email }")
    variables = {"id": str(users[STUDENT])}
    for headers in ({}, {"X-Justification": "   "}):
        refused = await gql(ADMIN, "LEGAL_COMPLIANCE", query, variables, headers={**GRAPHQL_RESPONSE, **headers})
        assert refused["_status"] == 400 and "data" not in refused
        assert error_codes(refused) == ["JUSTIFICATION_REQUIRED"]

    request_id = f"legal-{uuid.uuid4().hex}"
    reason = "Court order 2026-CV-0113"
    allowed = await gql(
        ADMIN, "LEGAL_COMPLIANCE", query, variables, headers={"X-Justification": reason, "X-Request-Id": request_id}
    )
    assert "errors" not in allowed, allowed
    assert allowed["data"]["student"]["guardians"][0]["email"]
    entries = await owner.fetch("SELECT * FROM audit_entries WHERE client_request_id = $1", request_id)
    assert entries
    assert {(e["justification"], e["break_glass"], e["purpose"]) for e in entries} == {
        (reason, True, "LEGAL_COMPLIANCE")
    }

    ordinary = f"ordinary-{uuid.uuid4().hex}"
    await gql(ADMIN, "REPORTING", query, variables, headers={"X-Request-Id": ordinary})
    plain = await owner.fetch(
        "SELECT justification, break_glass FROM audit_entries WHERE client_request_id = $1", ordinary
    )
    assert plain and {(e["justification"], e["break_glass"]) for e in plain} == {(None, False)}


# ------------------------------------------------- 7. policy versions (last: acceptance changes the terms)


# The test versions are dated 2098-06-01 and 2099-01-01: no version applies
# before its effective date, so these tests move the request clock past them.
IN_2098 = dt.datetime(2098, 7, 1, 12, 0, tzinfo=dt.UTC)
IN_2099 = dt.datetime(2099, 2, 1, 12, 0, tzinfo=dt.UTC)


async def test_no_policy_version_applies_before_its_effective_date(
    app: Any, gql: Gql, users: dict[str, uuid.UUID]
) -> None:
    # Today only 2020-04-01 is in effect: SUPPORT sees DEVICE under a grant.
    grant = await open_grant(gql, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    try:
        body = await read_student(gql, SUPPORT, "SUPPORT", users[STUDENT], "firstName deviceSessions { ipAddress }")
        assert "errors" not in body, body
        assert body["data"]["student"]["deviceSessions"]
    finally:
        await revoke(gql, grant)
    versions = await gql(TEACHER, "INSTRUCTION", "{ policyVersions }")
    assert versions["data"]["policyVersions"] == ["2020-04-01"]
    early = await gql(ADMIN, "COMMUNICATION", 'mutation { acceptPolicyVersion(version: "2099-01-01") { id } }')
    assert error_codes(early) == ["BAD_USER_INPUT"]


async def test_a_non_material_version_governs_without_acceptance(
    app: Any, gql: Gql, users: dict[str, uuid.UUID]
) -> None:
    # 2020-04-01 let SUPPORT see DEVICE; the non-material 2098-06-01 narrows that, and applies once in effect.
    with clock_at(app, IN_2098):
        grant = await open_grant(gql, IN_2098 + dt.timedelta(hours=1))
        try:
            body = await read_student(gql, SUPPORT, "SUPPORT", users[STUDENT], "firstName deviceSessions { ipAddress }")
            assert body["data"]["student"]["firstName"]
            assert body["data"]["student"]["deviceSessions"] is None
            assert refusals(body) == {"deviceSessions": ("DEVICE", "SUPPORT", "PURPOSE_NOT_ALLOWED_FOR_CATEGORY")}
            versions = await gql(TEACHER, "INSTRUCTION", "{ policyVersions }")
            assert versions["data"]["policyVersions"] == ["2020-04-01", "2098-06-01"]
        finally:
            await revoke(gql, grant)


async def test_a_material_version_applies_only_after_the_district_accepts_it(
    app: Any, gql: Gql, owner: Any, northwind: uuid.UUID, users: dict[str, uuid.UUID]
) -> None:
    fields = "firstName gender ethnicity"
    with clock_at(app, IN_2099):
        pending = await read_student(gql, TEACHER, "INSTRUCTION", users[STUDENT], fields)
        assert pending["data"]["student"]["gender"] is None
        assert refusals(pending) == {
            "gender": ("DEMOGRAPHIC", "INSTRUCTION", "POLICY_VERSION_NOT_ACCEPTED"),
            "ethnicity": ("DEMOGRAPHIC", "INSTRUCTION", "POLICY_VERSION_NOT_ACCEPTED"),
        }

        accepted = await gql(
            ADMIN, "COMMUNICATION", 'mutation { acceptPolicyVersion(version: "2099-01-01") { acceptedPolicyVersion } }'
        )
        assert accepted["data"]["acceptPolicyVersion"]["acceptedPolicyVersion"] == "2099-01-01", accepted
        assert await owner.fetchval("SELECT accepted_policy_version FROM districts WHERE id = $1", northwind) == (
            "2099-01-01"
        )

        now_allowed = await read_student(gql, TEACHER, "INSTRUCTION", users[STUDENT], fields)
        assert "errors" not in now_allowed, now_allowed
        assert now_allowed["data"]["student"]["gender"] and now_allowed["data"]["student"]["ethnicity"]

        # Riverside has not accepted: its teachers still work under the older terms.
        riverside = await read_student(gql, RIVERSIDE_TEACHER, "INSTRUCTION", users[RIVERSIDE_STUDENT], fields)
        assert refusals(riverside)["gender"] == ("DEMOGRAPHIC", "INSTRUCTION", "POLICY_VERSION_NOT_ACCEPTED")
