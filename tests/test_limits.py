"""Abuse limits: depth, aliases, tokens, cost, batches, body size, variables,
and the per-caller rate limit. Every violation is a 4xx with its code, never
a 500, and the limit rules are built once, not per request."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from graphql import OperationDefinitionNode, parse

from server.app import create_app
from server.db import DatabaseUrls
from server.graphql_http import GraphQLEndpoint
from server.limits import Limits, measure_operation, violations
from server.ratelimit import RateLimiter
from server.settings import Settings
from tests.conftest import error_codes

GRAPHQL_RESPONSE = "application/graphql-response+json"
TEACHER = "teacher1@northwind.example"
ADMIN = "admin@northwind.example"


async def send(
    client: httpx.AsyncClient,
    token: str | None,
    payload: Any,
    *,
    accept: str = GRAPHQL_RESPONSE,
    purpose: str = "INSTRUCTION",
) -> tuple[int, dict[str, Any]]:
    headers = {"Accept": accept, "Content-Type": "application/json", "X-Purpose": purpose}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = await client.post("/graphql", content=orjson.dumps(payload), headers=headers)
    return response.status_code, response.json()


def nested(depth: int) -> str:
    """{ student(id) { school { students { nodes { school ... } } } } } of about ``depth`` levels."""
    inner = "id"
    for _ in range((depth - 1) // 3):
        inner = f"school {{ students(first: 1) {{ nodes {{ {inner} }} }} }}"
    return f'{{ student(id: "{uuid.uuid4()}") {{ {inner} }} }}'


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, "application/json"])
async def test_a_query_fifty_levels_deep_is_too_complex_for_every_client(
    client: httpx.AsyncClient, token_for: Callable[..., str], accept: str
) -> None:
    status, body = await send(client, token_for(TEACHER), {"query": nested(50)}, accept=accept)
    assert status == 400
    assert "QUERY_TOO_COMPLEX" in error_codes(body)
    assert "data" not in body


async def test_a_query_past_the_depth_limit_is_measured_whole(
    client: httpx.AsyncClient, token_for: Callable[..., str], app: Any
) -> None:
    # API.md: QUERY_TOO_COMPLEX names "the document's measure", not where counting could stop.
    measured = {}
    for depth in (38, 41):
        status, body = await send(client, token_for(TEACHER), {"query": nested(depth)})
        assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"], body
        extensions = body["errors"][0]["extensions"]
        assert extensions["limit"] == "depth" and extensions["maximum"] == 12
        measured[depth] = extensions["measured"]
        assert f"nested {measured[depth]} levels deep" in body["errors"][0]["message"]
    # student { (school { students { nodes { ... } } }) x 12 or 13 id }: 2 + 3 levels each.
    assert measured == {38: 2 + 3 * 12, 41: 2 + 3 * 13}
    # The cost counts the levels past the limit as well.
    schema = app.state.pledgeql.endpoint.schema
    limits = Limits(max_cost=10**9)
    costs = [measure_operation(schema, d, d.definitions[0], limits).cost for d in map(parse, map(nested, (38, 41)))]
    assert costs[1] > costs[0]


async def test_a_query_nested_past_the_parsers_own_limit_is_too_deep_not_too_many_tokens(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    # About 260 levels in some 800 tokens: the parser stops at its nesting limit (200 levels).
    status, body = await send(client, token_for(TEACHER), {"query": nested(260)})
    assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"], body
    extensions = body["errors"][0]["extensions"]
    assert extensions["limit"] == "depth" and extensions["maximum"] == 12 and extensions["measured"] > 200
    assert body["errors"][0]["message"].startswith(f"The query is nested at least {extensions['measured']} levels")


async def test_a_query_within_the_depth_limit_runs(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    status, body = await send(client, token_for(TEACHER), {"query": nested(10)})
    assert status == 200, body
    assert error_codes(body) == ["NOT_FOUND"]  # a random id: the query ran


async def test_a_thousand_aliases_are_too_complex(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    query = "{ " + " ".join(f"a{i}: me {{ role }}" for i in range(1000)) + " }"
    status, body = await send(client, token_for(TEACHER), {"query": query})
    assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"]


async def test_thirty_one_aliases_are_too_complex_and_thirty_are_not(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    def query(n: int) -> str:
        return "{ " + " ".join(f"a{i}: me {{ role }}" for i in range(n)) + " }"

    status, body = await send(client, token_for(TEACHER), {"query": query(31)})
    assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"]
    assert "31 aliases" in body["errors"][0]["message"]
    status, body = await send(client, token_for(TEACHER), {"query": query(30)})
    assert status == 200 and body["data"]["a29"]["role"] == "TEACHER"


async def test_aliases_hidden_in_a_repeated_fragment_count_each_time(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    fragments = "fragment F on Query { " + " ".join(f"f{i}: me {{ role }}" for i in range(8)) + " } "
    fragments += "fragment G on Query { ...F } fragment H on Query { ...F } fragment I on Query { ...F }"
    # Three expansions of F are 24 aliases: allowed. Four are 32: refused.
    three = "{ ...F ...G ...H } " + fragments.replace(" fragment I on Query { ...F }", "")
    status, body = await send(client, token_for(TEACHER), {"query": three})
    assert status == 200, body
    status, body = await send(client, token_for(TEACHER), {"query": "{ ...F ...G ...H ...I } " + fragments})
    assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"]
    assert "32 aliases" in body["errors"][0]["message"]


async def test_ten_thousand_tokens_are_too_complex_before_validation(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    query = "{ me { " + " ".join(["role"] * 10_000) + " } }"
    started = time.perf_counter()
    status, body = await send(client, token_for(TEACHER), {"query": query})
    assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"]
    assert "the limit (tokens) is 5000" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": "tokens",
        "maximum": 5000,
        "measured": 10_005,
    }
    assert time.perf_counter() - started < 1.0


async def test_comments_count_against_the_token_limit(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    query = "#\n" * 6000 + "{ me { role } }"
    status, body = await send(client, token_for(TEACHER), {"query": query})
    assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"]
    extensions = body["errors"][0]["extensions"]
    assert extensions["limit"] == "comments" and extensions["maximum"] == 5000 and extensions["measured"] > 5000


async def test_page_sizes_multiply_into_the_cost(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    # 500 students x (1 + 500 responses x 2 fields) > 50,000
    query = "{ students(first: 500) { nodes { responses(first: 500) { id score } } } }"
    status, body = await send(client, token_for(TEACHER), {"query": query})
    assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"]
    assert "the limit (cost) is 50000" in body["errors"][0]["message"]
    extensions = body["errors"][0]["extensions"]
    # The document's whole cost (API.md: "the document's measure"), not where counting stopped:
    # 500 x (1 + nodes 1 x (1 + 500 x (1 + 2))).
    assert extensions["limit"] == "cost" and extensions["maximum"] == 50_000 and extensions["measured"] == 751_000
    assert "costs 751000 " in body["errors"][0]["message"]
    status, body = await send(
        client, token_for(TEACHER), {"query": "{ students(first: 50) { nodes { responses(first: 20) { id } } } }"}
    )
    assert status == 200, body


def test_a_document_with_more_fields_to_walk_than_the_cost_limit_is_measured_as_at_least_past_it(app: Any) -> None:
    schema = app.state.pledgeql.endpoint.schema
    fields = " ".join(f"v{i}: policyVersions {{ version }}" for i in range(6))
    document = parse("query { " + fields + " }")
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    limits = Limits(max_cost=10)
    measure = measure_operation(schema, document, operation, limits)
    assert measure.stopped and measure.cost == 11
    (violation,) = [v for v in violations(measure, limits) if v.limit == "cost"]
    assert "costs at least 11 " in violation.message
    # Within the walk's budget the whole cost is counted, however far past the limit.
    paged = parse("query { students(first: 1000) { totalCount } }")
    assert isinstance(paged.definitions[0], OperationDefinitionNode)
    whole = measure_operation(schema, paged, paged.definitions[0], limits)
    assert not whole.stopped and whole.cost == 2000


async def test_page_sizes_from_variables_are_measured_with_each_requests_values(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    query = "query Q($n: Int, $m: Int) { students(first: $n) { nodes { responses(first: $m) { id score } } } }"
    status, body = await send(client, token_for(TEACHER), {"query": query, "variables": {"n": 10, "m": 10}})
    assert status == 200, body
    status, body = await send(client, token_for(TEACHER), {"query": query, "variables": {"n": 500, "m": 500}})
    assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"]


async def test_a_hundred_batched_operations_are_refused(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    batch = [{"query": "{ me { role } }"}] * 100
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        status, body = await send(client, token_for(TEACHER), batch, accept=accept)
        assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"]
        assert "Batched requests are not accepted" in body["errors"][0]["message"]


async def test_a_single_batched_operation_is_refused_too(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    status, body = await send(client, token_for(TEACHER), [{"query": "{ me { role } }"}])
    assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"]


async def test_an_oversized_body_is_payload_too_large(client: httpx.AsyncClient, token_for: Callable[..., str]) -> None:
    padding = "x" * (256 * 1024 + 1)
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        status, body = await send(
            client, token_for(TEACHER), {"query": "{ me { role } }", "variables": {"pad": padding}}, accept=accept
        )
        assert status == 413 and error_codes(body) == ["PAYLOAD_TOO_LARGE"]


async def test_an_oversized_body_without_content_length_is_cut_off(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "{ me { role } }", "variables": {"pad": "'
        for _ in range(100):
            yield b"x" * 4096
        yield b'"}}'

    response = await client.post(
        "/graphql",
        content=chunks(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token_for(TEACHER)}"},
    )
    assert response.status_code == 413 and error_codes(response.json()) == ["PAYLOAD_TOO_LARGE"]


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query Q($id: ID!) { student(id: $id) { id } }", {"id": 5.5}),
        ("query Q($id: ID!) { student(id: $id) { id } }", {}),
        ("query Q($n: Int) { students(first: $n) { totalCount } }", {"n": "fifty"}),
        ("query Q($n: Int) { students(first: $n) { totalCount } }", {"n": 2**40}),
        (
            "query Q($since: DateTime) { students(first: 1) { nodes { activity(since: $since) { id } } } }",
            {"since": "not a date"},
        ),
        ("query Q($k: DataRequestKind!) { dataRequests { id } }", {"k": "NOT_A_KIND"}),
    ],
)
async def test_variables_are_checked_against_their_types(
    client: httpx.AsyncClient, token_for: Callable[..., str], query: str, variables: dict[str, Any]
) -> None:
    status, body = await send(client, token_for(ADMIN), {"query": query, "variables": variables}, purpose="REPORTING")
    assert status == 400, body
    assert set(error_codes(body)) == {"BAD_USER_INPUT"}
    assert body.get("data") is None


CORRECT = "mutation Fix($i: CorrectStudentInput!) { correctStudentRecord(input: $i) { id } }"
SUBMIT = "mutation Submit($i: SubmitResponseInput!) { submitResponse(input: $i) { correct } }"


@pytest.mark.parametrize(
    ("query", "variables", "said"),
    [
        # A birth date that is not a date, with a name in it: the path and the type, not the value.
        (
            CORRECT,
            {"i": {"studentId": str(uuid.uuid4()), "birthDate": "born 2014-03-02 Beatrix Oakhaven"}},
            "Variable '$i' has an invalid value at .birthDate: Expected a value of type 'Date'.",
        ),
        # An answer sent as an object.
        (
            SUBMIT,
            {"i": {"itemId": str(uuid.uuid4()), "answer": {"text": "Beatrix Oakhaven's answer"}}},
            "Variable '$i' has an invalid value at .answer: Expected a value of type 'String!'.",
        ),
        # In a list: the index and the field.
        (
            "mutation Record($e: [ActivityEventInput!]!) { recordActivity(events: $e) { accepted } }",
            {"e": [{"kind": "VIEW", "occurredAt": "2026-12-01T10:00:00Z"}, {"kind": "VIEW", "occurredAt": "Beatrix"}]},
            "Variable '$e' has an invalid value at [1].occurredAt: Expected a value of type 'DateTime!'.",
        ),
        # A required field missing: graphql-core's words, up to where they would print the object.
        (
            SUBMIT,
            {"i": {"answer": "Beatrix Oakhaven's answer"}},
            "Variable '$i' has an invalid value: Expected value of type 'SubmitResponseInput' to include "
            "required field 'itemId'.",
        ),
        # A list where an object belongs.
        (
            CORRECT,
            {"i": ["Beatrix Oakhaven", "beatrix@example.org"]},
            "Variable '$i' has an invalid value: Expected value of type 'CorrectStudentInput' to be an object.",
        ),
        # Literals in the document: the type expected where the literal stands.
        (
            'mutation { correctStudentRecord(input: {studentId: "x", birthDate: "Beatrix Oakhaven"}) { id } }',
            None,
            "Expected a value of type 'Date'.",
        ),
        (
            'query { students(first: "Beatrix Oakhaven") { totalCount } }',
            None,
            "Expected a value of type 'Int'.",
        ),
    ],
)
async def test_errors_about_input_values_never_repeat_the_value(
    client: httpx.AsyncClient, token_for: Callable[..., str], query: str, variables: Any, said: str
) -> None:
    # API.md: "Messages never contain personal data", in development as in production.
    request = {"query": query, "variables": variables}
    status, body = await send(client, token_for(ADMIN), request, purpose="RECORD_ACCESS")
    assert status == 400 and set(error_codes(body)) == {"BAD_USER_INPUT"}, body
    assert [e["message"] for e in body["errors"]] == [said]
    assert "Beatrix" not in str(body)


def test_a_variable_error_of_a_form_not_known_to_name_no_value_is_said_without_its_words(app: Any) -> None:
    from graphql import GraphQLError, parse

    from server.input_errors import variable_error

    schema = app.state.pledgeql.endpoint.documents.schema
    operation = parse("query Q($search: String) { me { role } }").definitions[0]
    assert isinstance(operation, OperationDefinitionNode) and operation.variable_definitions
    definition = operation.variable_definitions[0]
    unknown = GraphQLError("Variable '$search' got invalid value 'Beatrix Oakhaven'; whatever.", definition)
    assert variable_error(unknown, schema).message == (
        "Variable '$search' has an invalid value: Expected a value of type 'String'."
    )
    missing = GraphQLError("Variable '$search' of required type 'String!' was not provided.", definition)
    assert variable_error(missing, schema).message == missing.message


async def test_a_document_over_the_work_validation_may_take_is_too_complex_not_bad_input(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    # One field 800 times is within depth, aliases and tokens; graphql-core stops comparing its
    # occurrences before it is done: the document is too much work, not invalid.
    status, body = await send(client, token_for(TEACHER), {"query": "{ me { " + "id " * 800 + "} }"})
    assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"], body
    assert body["errors"][0]["extensions"]["limit"] == "validationWork"
    status, body = await send(client, token_for(TEACHER), {"query": "{ me { " + "id " * 100 + "} }"})
    assert status == 200 and "errors" not in body, body


async def test_a_page_size_over_the_maximum_is_bad_user_input_not_a_500(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    status, body = await send(client, token_for(TEACHER), {"query": "{ students(first: 100000) { totalCount } }"})
    assert status in (200, 400)
    assert set(error_codes(body)) <= {"BAD_USER_INPUT", "QUERY_TOO_COMPLEX"} and error_codes(body)


@pytest.mark.parametrize("first", ["2147483648", "9223372036854775808", "99999999999999999999", "-2147483649"])
async def test_a_page_size_literal_that_is_not_an_int_is_bad_user_input_not_a_cost_or_a_500(
    client: httpx.AsyncClient, token_for: Callable[..., str], first: str
) -> None:
    query = f"{{ students(first: {first}) {{ totalCount }} }}"
    status, body = await send(client, token_for(ADMIN), {"query": query}, purpose="REPORTING")
    assert status == 400 and error_codes(body) == ["BAD_USER_INPUT"], body
    assert body["errors"][0]["message"] == "Expected a value of type 'Int'."  # never the value itself


async def test_a_cost_past_what_json_numbers_hold_is_reported_at_that_bound(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    page = 2**31 - 1
    query = f"{{ students(first: {page}) {{ nodes {{ responses(first: {page}) {{ id }} }} }} }}"
    status, body = await send(client, token_for(TEACHER), {"query": query})
    assert status == 400 and error_codes(body) == ["QUERY_TOO_COMPLEX"], body
    assert body["errors"][0]["extensions"]["measured"] == 2**53 - 1


async def test_a_reply_that_cannot_be_written_is_a_masked_internal_error_with_the_request_id(
    app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.replies import Reply

    async def unwritable(request: Any, request_id: str) -> Reply:
        return Reply({"data": {"n": 2**70}}, 200)  # past what JSON's encoder writes

    monkeypatch.setattr(app.state.pledgeql.endpoint, "_handle", unwritable)
    response = await client.post(
        "/graphql", content=b'{"query": "{ __typename }"}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 500
    assert response.json() == {"errors": [{"message": "Internal error", "extensions": {"code": "INTERNAL"}}]}
    assert len(response.headers["x-request-id"]) == 32


def test_the_limit_rules_are_built_once_and_a_document_is_measured_once(app: Any) -> None:
    endpoint: GraphQLEndpoint = app.state.pledgeql.endpoint
    rules_before = (endpoint.documents.limit_rules, endpoint.documents.rules)
    query = "{ me { role } }"
    first = endpoint.documents.get(query)
    second = endpoint.documents.get(query)
    assert first is second
    assert (endpoint.documents.limit_rules, endpoint.documents.rules) == rules_before


# ------------------------------------------------------------- rate limiting


@pytest_asyncio.fixture(scope="module")
async def limited_client(settings: Settings, db: DatabaseUrls) -> AsyncIterator[httpx.AsyncClient]:
    strict = dataclasses.replace(settings, rate_limit_per_minute=60, rate_limit_burst=3)
    application = create_app(strict, db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("198.51.100.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            yield http


async def test_a_caller_over_its_budget_is_rate_limited_with_retry_after(
    limited_client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    token = token_for("teacher2@northwind.example")
    statuses = [(await send(limited_client, token, {"query": "{ me { role } }"}))[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        response = await limited_client.post(
            "/graphql",
            json={"query": "{ me { role } }"},
            headers={"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION", "Accept": accept},
        )
        assert response.status_code == 429
        assert error_codes(response.json()) == ["RATE_LIMITED"]
        assert 1 <= int(response.headers["retry-after"]) <= 2


async def test_callers_are_limited_by_their_token_subject_not_by_one_shared_budget(
    limited_client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    for _ in range(3):
        assert (await send(limited_client, token_for("principal1@northwind.example"), {"query": "{ me { role } }"}))[
            0
        ] == 200
    status, _ = await send(limited_client, token_for("principal1@northwind.example"), {"query": "{ me { role } }"})
    assert status == 429
    # Another user from the same address still has its own budget.
    status, body = await send(limited_client, token_for("teacher1@riverside.example"), {"query": "{ me { role } }"})
    assert status == 200, body


async def test_requests_without_a_valid_token_are_limited_by_address(limited_client: httpx.AsyncClient) -> None:
    statuses = []
    for _ in range(5):
        status, _body = await send(limited_client, "not-a-token", {"query": "{ me { role } }"})
        statuses.append(status)
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3:] == [429, 429]
    status, body = await send(limited_client, None, {"query": "{ policyVersions }"})
    assert status == 429 and error_codes(body) == ["RATE_LIMITED"]


def test_a_bucket_refills_at_the_configured_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert [limiter.take("a"), limiter.take("a")] == [0.0, 0.0]
    assert limiter.take("a") == pytest.approx(1.0)
    now[0] = 0.5
    assert limiter.take("a") == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.take("a") == 0.0
    now[0] = 100.0
    assert [limiter.take("a"), limiter.take("a"), limiter.take("a") > 0] == [0.0, 0.0, True]


def test_the_bucket_table_forgets_the_least_recently_used_callers() -> None:
    limiter = RateLimiter(per_minute=60, burst=1, max_keys=3, clock=lambda: 0.0)
    for key in "abcd":
        limiter.take(key)
    assert len(limiter) == 3
    assert limiter.take("a") == 0.0  # forgotten, so full again: no more than a new caller gets
    assert limiter.take("d") > 0
