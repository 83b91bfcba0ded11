"""Issue 14's attacks over HTTP, each performed as the attacker did, each kept closed.

One test per hole, named after the attack: name searches, the correction
oracle, justifications, client-chosen request ids, HEAD, fragments on the
root, duplicate purposes, and the /privacy page's rate limit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from server.app import create_app
from server.commands.audit_cli import verify_chains
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import error_codes

GRAPHQL_RESPONSE = "application/graphql-response+json"
TEACHER = "teacher1@northwind.example"
ADMIN = "admin@northwind.example"
SUPPORT = "support@pledgeql.example"
STUDENT = "student1@northwind.example"


@pytest.fixture(scope="module")
def send(client: httpx.AsyncClient, token_for: Callable[..., str]) -> Callable[..., Any]:
    """POST a GraphQL request as a demo user; return the whole response."""

    async def run(
        username: str | None,
        purpose: str | None,
        query: str,
        variables: dict[str, Any] | None = None,
        headers: dict[str, str] | list[tuple[str, Any]] | None = None,
        accept: str = GRAPHQL_RESPONSE,
    ) -> httpx.Response:
        sent: list[tuple[str, Any]] = [("Accept", accept)]
        if username is not None:
            sent.append(("Authorization", f"Bearer {token_for(username)}"))
        if purpose is not None:
            sent.append(("X-Purpose", purpose))
        sent += list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        return await client.post("/graphql", json={"query": query, "variables": variables}, headers=sent)

    return run


async def entries_of(owner: Any, response: httpx.Response) -> list[Any]:
    """The audit entries of one request, found by the server's request id in the response."""
    return list(
        await owner.fetch(
            "SELECT * FROM audit_entries WHERE request_id = $1 ORDER BY seq", response.headers["x-request-id"]
        )
    )


# ------------------------------------------------------------------ item 3


async def test_extending_a_name_search_one_letter_at_a_time_notes_the_names_of_every_student_it_matched(
    send: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    student = users[STUDENT]
    last_name = await owner.fetchval("SELECT last_name FROM users WHERE id = $1", student)
    seen_names_noted = 0
    for length in range(max(1, len(last_name) - 2), len(last_name) + 1):
        # The attacker selects no name at all: only ids and the count.
        response = await send(
            ADMIN,
            "REPORTING",
            "query S($q: String) { students(search: $q, first: 100) { totalCount nodes { id } } }",
            {"q": last_name[:length]},
        )
        body = response.json()
        assert response.status_code == 200 and "errors" not in body
        matched = {uuid.UUID(n["id"]) for n in body["data"]["students"]["nodes"]}
        assert matched and (student in matched or body["data"]["students"]["totalCount"] > 100)
        rows = await entries_of(owner, response)
        noted = {r["subject_student_id"]: r for r in rows if r["subject_student_id"] is not None}
        assert set(noted) == matched
        for row in noted.values():
            assert list(row["fields"]) == ["Student.firstName", "Student.lastName"]
            assert list(row["categories"]) == ["DIRECTORY"] and row["decision"] == "ALLOW"
        seen_names_noted += 1
    assert seen_names_noted >= 1
    # A page of none still discloses how many matched: that is noted too, with no subject.
    response = await send(
        ADMIN, "REPORTING", "query S($q: String) { students(search: $q, first: 0) { totalCount } }", {"q": last_name}
    )
    assert response.json()["data"]["students"]["totalCount"] >= 1
    [entry] = await entries_of(owner, response)
    assert entry["subject_student_id"] is None
    assert list(entry["fields"]) == ["Student.firstName", "Student.lastName"]


# ------------------------------------------------------------------ item 4


CORRECT = """
mutation C($input: CorrectStudentInput!) { correctStudentRecord(input: $input) { id } }
"""


async def test_guessing_a_not_collected_gender_through_correct_student_record_gets_one_answer_and_is_audited(
    send: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    student = users[STUDENT]
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", student)
    stored = await owner.fetchval("SELECT gender FROM users WHERE id = $1", student)
    wrong = next(g for g in ("female", "male", "nonbinary") if g != stored)
    await owner.execute("UPDATE districts SET collect_demographics = false WHERE id = $1", district)
    try:
        answers = []
        for guess in (stored, wrong):
            response = await send(
                ADMIN, "RECORD_ACCESS", CORRECT, {"input": {"studentId": str(student), "gender": guess}}
            )
            body = response.json()
            answers.append((response.status_code, body))
            assert error_codes(body) == ["FORBIDDEN"], body
            assert body["errors"][0]["extensions"]["reason"] == "NOT_COLLECTED"
            [entry] = await entries_of(owner, response)
            assert entry["decision"] == "DENY" and entry["subject_student_id"] == student
            assert list(entry["fields"]) == ["Mutation.correctStudentRecord"]
            assert list(entry["categories"]) == ["DEMOGRAPHIC"]
        # The right guess and the wrong one are answered alike: nothing about the stored value leaks.
        assert answers[0] == answers[1]
        assert await owner.fetchval("SELECT gender FROM users WHERE id = $1", student) == stored
    finally:
        await owner.execute("UPDATE districts SET collect_demographics = true WHERE id = $1", district)


async def test_a_random_data_request_id_is_refused_only_after_the_attempt_is_audited(
    send: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    student = users[STUDENT]
    first_name = await owner.fetchval("SELECT first_name FROM users WHERE id = $1", student)
    for name in (first_name, first_name + "x"):
        response = await send(
            ADMIN,
            "RECORD_ACCESS",
            CORRECT,
            {"input": {"studentId": str(student), "firstName": name, "dataRequestId": str(uuid.uuid4())}},
        )
        assert error_codes(response.json()) == ["BAD_USER_INPUT"]
        [entry] = await entries_of(owner, response)
        assert entry["decision"] == "DENY" and entry["subject_student_id"] == student
        assert list(entry["categories"]) == ["DIRECTORY"]
    assert await owner.fetchval("SELECT first_name FROM users WHERE id = $1", student) == first_name


async def test_every_refused_mutation_attempt_leaves_a_deny_entry(send: Any, owner: Any) -> None:
    attempts = [
        (f'mutation {{ revokeSupportGrant(id: "{uuid.uuid4()}") {{ id }} }}', "NOT_FOUND"),
        ('mutation { acceptPolicyVersion(version: "1999-01-01") { id } }', "BAD_USER_INPUT"),
        (f'mutation {{ exportStudentRecord(studentId: "{uuid.uuid4()}") {{ studentId }} }}', "NOT_FOUND"),
    ]
    for query, code in attempts:
        response = await send(ADMIN, "RECORD_ACCESS", query)
        assert error_codes(response.json()) == [code], query
        rows = await entries_of(owner, response)
        assert [r["decision"] for r in rows] == ["DENY"], query
        assert rows[0]["fields"][0].startswith("Mutation.")


# ------------------------------------------------------------------ item 5


async def test_a_justification_is_refused_outside_legal_compliance_so_a_teacher_cannot_write_court_order(
    send: Any, owner: Any
) -> None:
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        response = await send(
            TEACHER, "INSTRUCTION", "{ me { role } }", headers={"X-Justification": "Court order"}, accept=accept
        )
        assert response.status_code == 400 and error_codes(response.json()) == ["BAD_USER_INPUT"]
        assert "data" not in response.json()
        assert await entries_of(owner, response) == []
    # An empty header counts as absent.
    response = await send(TEACHER, "INSTRUCTION", "{ me { role } }", headers={"X-Justification": "  "})
    assert response.status_code == 200 and response.json()["data"]["me"]["role"] == "TEACHER"
    response = await send(ADMIN, "LEGAL_COMPLIANCE", "{ me { role } }", headers={"X-Justification": ""})
    assert error_codes(response.json()) == ["JUSTIFICATION_REQUIRED"]


async def test_a_sixty_kilobyte_or_unprintable_justification_is_refused(send: Any, owner: Any) -> None:
    query = "{ me { district { schools { classes { students { firstName } } } } } }"
    for text in ("x" * 60_000, "x" * 501, "Court\x01order", "Court order\x7f"):
        response = await send(ADMIN, "LEGAL_COMPLIANCE", query, headers={"X-Justification": text})
        assert response.status_code == 400 and error_codes(response.json()) == ["BAD_USER_INPUT"]
        assert await entries_of(owner, response) == []
    response = await send(ADMIN, "LEGAL_COMPLIANCE", query, headers={"X-Justification": "y" * 500})
    assert response.status_code == 200 and "errors" not in response.json()
    rows = await entries_of(owner, response)
    assert rows and {r["justification"] for r in rows} == {"y" * 500}


async def test_support_cannot_replace_its_ticket_and_one_districts_tickets_never_reach_another_chain(
    send: Any, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    north_student, river_student = users[STUDENT], users["student1@riverside.example"]
    north = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", north_student)
    river = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", river_student)
    now = dt.datetime.now(dt.UTC)
    grants = [
        (north, "NW-NEWER", now - dt.timedelta(hours=1)),
        (north, "NW-OLDER", now - dt.timedelta(hours=2)),
        (river, "RS-ONLY", now - dt.timedelta(hours=3)),
    ]
    for district, ticket, created in grants:
        await owner.execute(
            "INSERT INTO support_grants (district_id, id, ticket, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
            district,
            uuid.uuid4(),
            ticket,
            now + dt.timedelta(days=1),
            created,
        )
    try:
        query = "query S($a: ID!, $b: ID!) { a: student(id: $a) { firstName } b: student(id: $b) { firstName } }"
        variables = {"a": str(north_student), "b": str(river_student)}
        refused = await send(SUPPORT, "SUPPORT", query, variables, headers={"X-Justification": "nothing to see"})
        assert refused.status_code == 400 and error_codes(refused.json()) == ["BAD_USER_INPUT"]
        response = await send(SUPPORT, "SUPPORT", query, variables)
        body = response.json()
        assert "errors" not in body and body["data"]["a"]["firstName"] and body["data"]["b"]["firstName"]
        by_district = {r["district_id"]: r["justification"] for r in await entries_of(owner, response)}
        assert by_district == {north: "NW-OLDER, NW-NEWER", river: "RS-ONLY"}
    finally:
        await owner.execute("DELETE FROM support_grants WHERE ticket = ANY($1::text[])", [g[1] for g in grants])


# ------------------------------------------------------------------ item 6


async def test_a_client_reusing_another_requests_id_gets_a_new_server_id_and_keeps_its_own_as_client_request_id(
    send: Any, owner: Any, settings: Settings
) -> None:
    reused = f"victim-{uuid.uuid4().hex}"
    query = "{ me { staff { firstName } } }"
    first = await send(TEACHER, "INSTRUCTION", query, headers={"X-Request-Id": reused})
    second = await send(TEACHER, "INSTRUCTION", query, headers={"X-Request-Id": reused})
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and reused not in ids
    for response in (first, second):
        [entry] = await entries_of(owner, response)
        assert entry["client_request_id"] == reused
    # The district admin's log shows both ids.
    log = await send(
        ADMIN,
        "REPORTING",
        "query L($a: ID!) { auditLog(filter: {actorId: $a}, first: 5) { nodes { requestId clientRequestId } } }",
        {"a": str((await entries_of(owner, first))[0]["actor_id"])},
    )
    shown = {(n["requestId"], n["clientRequestId"]) for n in log.json()["data"]["auditLog"]["nodes"]}
    assert {(i, reused) for i in ids} <= shown
    # Every chain still verifies: entries with and without a client id, and those of before.
    reports = await verify_chains(owner, settings.audit_key())
    assert [r.describe() for r in reports if r.broken is not None] == []


@pytest.mark.parametrize("given", ["r" * 129, "tab\there", "nul\x00byte", "del\x7f"])
async def test_a_client_request_id_over_128_characters_or_unprintable_is_refused(send: Any, given: str) -> None:
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        response = await send(TEACHER, "INSTRUCTION", "{ me { role } }", headers={"X-Request-Id": given}, accept=accept)
        assert response.status_code == 400 and error_codes(response.json()) == ["BAD_USER_INPUT"]


async def test_a_client_request_id_of_128_printable_characters_is_kept_as_sent(send: Any, owner: Any) -> None:
    given = "é" + "k" * 120 + " ~!@#$%"  # 128 characters, sent as UTF-8
    response = await send(
        TEACHER, "INSTRUCTION", "{ me { staff { firstName } } }", headers=[("X-Request-Id", given.encode())]
    )
    assert response.status_code == 200
    [entry] = await entries_of(owner, response)
    assert entry["client_request_id"] == given


# ------------------------------------------------------------------ item 7


SETTINGS_MUTATION = "mutation { updateDistrictSettings(input: {minimumGroupSize: 29}) { minimumGroupSize } }"


@pytest.mark.parametrize("method", ["HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "CONNECT"])
async def test_a_head_or_other_request_with_a_json_body_runs_no_mutation(
    client: httpx.AsyncClient, token_for: Callable[..., str], owner: Any, method: str
) -> None:
    before = await owner.fetchval("SELECT minimum_group_size FROM districts WHERE name = 'Northwind Unified'")
    audited = await owner.fetchval("SELECT count(*) FROM audit_entries")
    response = await client.request(
        method,
        "/graphql",
        json={"query": SETTINGS_MUTATION},
        headers={"Authorization": f"Bearer {token_for(ADMIN)}", "X-Purpose": "REPORTING"},
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    if method != "HEAD":
        assert error_codes(response.json()) == ["METHOD_NOT_ALLOWED"]
    assert await owner.fetchval("SELECT minimum_group_size FROM districts WHERE name = 'Northwind Unified'") == before
    assert before != 29
    assert await owner.fetchval("SELECT count(*) FROM audit_entries") == audited


# ------------------------------------------------------------------ item 8


@pytest.mark.parametrize(
    "query",
    [
        "{ ... on Query { me { role } } }",
        "query { ...Root } fragment Root on Query { me { role } }",
        "query { ...Outer } fragment Outer on Query { ... on Query { ...Inner } } "
        "fragment Inner on Query { me { id } }",
        "{ policyVersions ... on Query { me { role } } }",
    ],
)
async def test_a_fragment_on_the_query_root_does_not_hide_the_need_for_a_token(send: Any, query: str) -> None:
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        response = await send(None, None, query, accept=accept)
        assert response.status_code == 401 and error_codes(response.json()) == ["UNAUTHENTICATED"]


async def test_a_fragment_on_the_query_root_of_public_fields_still_needs_no_token(send: Any) -> None:
    response = await send(None, None, "query { ...P } fragment P on Query { ... on Query { policyVersions } }")
    assert response.status_code == 200 and "2020-04-01" in response.json()["data"]["policyVersions"]


# ------------------------------------------------------------------ item 9


@pytest.mark.parametrize(
    "purposes",
    [
        [("X-Purpose", "INSTRUCTION"), ("X-Purpose", "REPORTING")],
        [("X-Purpose", "REPORTING"), ("X-Purpose", "REPORTING")],
        [("X-Purpose", "INSTRUCTION, REPORTING")],
        [("X-Purpose", "INSTRUCTION,REPORTING")],
    ],
)
async def test_duplicate_x_purpose_headers_or_a_list_in_one_are_bad_user_input(
    send: Any, owner: Any, purposes: list[tuple[str, str]]
) -> None:
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        response = await send(TEACHER, None, "{ me { staff { firstName } } }", headers=purposes, accept=accept)
        assert response.status_code == 400 and error_codes(response.json()) == ["BAD_USER_INPUT"]
        assert await entries_of(owner, response) == []


NUL_CASES = [
    # (query, variables): a NUL in a variable, deep in an input object, in a literal's escape
    ("query($s: String) { students(search: $s) { totalCount } }", {"s": "a\u0000b"}),
    ("query($s: String) { assessments(subject: $s) { id } }", {"s": "\u0000"}),
    ("query($f: AuditFilter) { auditLog(filter: $f) { nodes { id } } }", {"f": {"subjectStudentId": "x\u0000"}}),
    ('{ assessments(subject: "Math\\u0000") { id } }', None),
]


@pytest.mark.parametrize(("query", "variables"), NUL_CASES)
async def test_a_string_holding_nul_is_bad_user_input_never_an_internal_error(
    send: Any, owner: Any, query: str, variables: Any
) -> None:
    """PostgreSQL's text cannot hold U+0000: such a string is refused as input, before anything runs."""
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        response = await send(ADMIN, "RECORD_ACCESS", query, variables, accept=accept)
        assert response.status_code in (200, 400), response.text
        body = response.json()
        assert error_codes(body) == ["BAD_USER_INPUT"], body
        assert body.get("data") is None and "U+0000" in body["errors"][0]["message"]
        assert await entries_of(owner, response) == []


@pytest.mark.parametrize("at", ["9999-12-31T20:00:00-05:00", "0001-01-01T00:30:00+01:00"])
async def test_a_datetime_outside_years_1_to_9999_in_utc_is_bad_user_input_never_an_internal_error(
    send: Any, at: str
) -> None:
    """Valid ISO 8601, but no instant PostgreSQL (or Python) can hold once in UTC."""
    query = "query($f: AuditFilter) { auditLog(filter: $f) { nodes { id } } }"
    for variables in ({"f": {"from": at}}, {"f": {"to": at}}):
        response = await send(ADMIN, "RECORD_ACCESS", query, variables)
        assert response.status_code == 400, response.text
        assert error_codes(response.json()) == ["BAD_USER_INPUT"]
        assert "outside years 1 to 9999 once in UTC" in response.json()["errors"][0]["message"]
    literal = await send(
        TEACHER,
        "INSTRUCTION",
        f'{{ me {{ role }} s: student(id: "{uuid.uuid4()}") {{ activity(since: "{at}") {{ id }} }} }}',
    )
    assert literal.status_code == 400 and error_codes(literal.json()) == ["BAD_USER_INPUT"], literal.text


@pytest.mark.parametrize(
    ("user", "purpose", "mutation", "field"),
    [
        (STUDENT, "STUDENT_LEARNING", "submitResponse", "input.answer"),
        (ADMIN, "RECORD_ACCESS", "openSupportGrant", "input.ticket"),
    ],
)
async def test_a_mutation_given_nul_refuses_it_by_field_and_audits_the_attempt(
    send: Any, owner: Any, user: str, purpose: str, mutation: str, field: str
) -> None:
    if mutation == "submitResponse":
        item = await owner.fetchval("SELECT id FROM items WHERE practice ORDER BY id LIMIT 1")
        query = "mutation($i: SubmitResponseInput!) { submitResponse(input: $i) { response { id } } }"
        variables = {"i": {"itemId": str(item), "answer": "B\u0000"}}
    else:
        query = "mutation($i: SupportGrantInput!) { openSupportGrant(input: $i) { id } }"
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
        variables = {"i": {"ticket": "T-1\u0000", "expiresAt": expires}}
    response = await send(user, purpose, query, variables)
    body = response.json()
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert body["errors"][0]["extensions"]["field"] == field
    assert [e["decision"] for e in await entries_of(owner, response)] == ["DENY"]


# ----------------------------------------------------------------- item 14b


@pytest_asyncio.fixture
async def tight_client(settings: Settings, db: DatabaseUrls) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(dataclasses.replace(settings, rate_limit_per_minute=1, rate_limit_burst=3), db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            yield http


async def test_hammering_the_privacy_page_of_a_district_is_rate_limited_by_address(
    tight_client: httpx.AsyncClient, owner: Any
) -> None:
    district = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    statuses = [(await tight_client.get(f"/privacy/{district}")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = await tight_client.get(f"/privacy/{uuid.uuid4()}")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "Northwind" not in limited.text
