"""Production mode: registered operations only (by text or by sha256), no
introspection, no GraphiQL, no suggestions, masked unexpected errors, no token
minting, and no start at all with an unsafe configuration."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from graphql import GraphQLError

from schema.build import graphql_schema
from server.app import create_app
from server.auth import mint_token
from server.commands.cli import main as cli_main
from server.db import DatabaseUrls
from server.documents import DocumentCache
from server.replies import format_error
from server.settings import Settings
from tests.conftest import error_codes
from tests.test_tokens import Keys, claims_for, make_keys, production, sign

GRAPHQL_RESPONSE = "application/graphql-response+json"
TEACHER = "teacher1@northwind.example"
ADMIN = "admin@northwind.example"
ME = "query Me { me { id role } }"
REQUESTS = "query Requests($status: DataRequestStatus) { dataRequests(status: $status) { id } }"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    keys = make_keys(tmp_path_factory.mktemp("production"))
    (keys.operations_dir / "teacher").mkdir()
    (keys.operations_dir / "teacher" / "requests.graphql").write_text(REQUESTS)
    (keys.operations_dir / "public.graphql").write_text("query Versions { policyVersions }")
    return keys


@pytest.fixture(scope="module")
def prod_settings(settings: Settings, keys: Keys) -> Settings:
    return production(settings, keys)


@pytest_asyncio.fixture(scope="module")
async def prod_client(prod_settings: Settings, db: DatabaseUrls) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(prod_settings, db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            yield http


@pytest.fixture(scope="module")
def headers(keys: Keys, users: dict[str, uuid.UUID]) -> dict[str, str]:
    token = sign(
        keys.rsa_private, claims_for(users[ADMIN], purposes=["REPORTING", "INSTRUCTION"], exp=int(time.time()) + 3600)
    )
    return {"Authorization": f"Bearer {token}", "X-Purpose": "REPORTING", "Accept": GRAPHQL_RESPONSE}


async def post(client: httpx.AsyncClient, headers: dict[str, str], payload: dict[str, Any]) -> tuple[int, Any]:
    response = await client.post(
        "/graphql", content=orjson.dumps(payload), headers={**headers, "Content-Type": "application/json"}
    )
    return response.status_code, response.json()


async def test_a_registered_operation_runs(prod_client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    status, body = await post(prod_client, headers, {"query": ME})
    assert status == 200, body
    assert body["data"]["me"]["role"] == "DISTRICT_ADMIN"


async def test_a_registered_operation_runs_whatever_its_whitespace_and_comments(
    prod_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    status, body = await post(
        prod_client, headers, {"query": "# the dashboard\nquery Me {\n  me {\n    id\n    role\n  }\n}\n"}
    )
    assert status == 200, body


async def test_a_registered_operation_runs_by_its_sha256_alone(
    prod_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": sha256(REQUESTS)}}
    status, body = await post(prod_client, headers, {"extensions": persisted, "variables": {"status": "OPEN"}})
    assert status == 200, body
    # It ran: the policy, not the allow-list, answers (dataRequests is not a REPORTING operation).
    assert "data" in body and error_codes(body) == ["FORBIDDEN"]
    response = await prod_client.get(
        "/graphql",
        params={
            "extensions": orjson.dumps({"persistedQuery": {"version": 1, "sha256Hash": sha256(ME + "\n")}}).decode()
        },
        headers=headers,
    )
    assert response.status_code == 200 and response.json()["data"]["me"]["role"] == "DISTRICT_ADMIN"


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, "application/json"])
async def test_an_unregistered_operation_is_not_allowed(
    prod_client: httpx.AsyncClient, headers: dict[str, str], accept: str
) -> None:
    status, body = await post(
        prod_client, {**headers, "Accept": accept}, {"query": "query Me { me { id role purpose } }"}
    )
    assert status == 400
    assert error_codes(body) == ["OPERATION_NOT_ALLOWED"]
    assert "data" not in body


async def test_an_unknown_hash_is_persisted_query_not_found_and_its_unregistered_text_is_not_allowed(
    prod_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    text = "{ me { id } }"
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": sha256(text)}}
    status, body = await post(prod_client, headers, {"extensions": persisted})
    assert status == 404 and error_codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert body["errors"][0]["message"] == "PersistedQueryNotFound" and "data" not in body
    status, body = await post(prod_client, {**headers, "Accept": "application/json"}, {"extensions": persisted})
    assert status == 200 and error_codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]
    # The retry with the text: production accepts registered operations only.
    status, body = await post(prod_client, headers, {"query": text, "extensions": persisted})
    assert status == 400 and error_codes(body) == ["OPERATION_NOT_ALLOWED"]
    status, body = await post(prod_client, headers, {"extensions": persisted})
    assert status == 404 and error_codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_a_hash_that_is_not_the_querys_is_bad_user_input(
    prod_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": sha256(REQUESTS)}}
    status, body = await post(prod_client, headers, {"query": ME, "extensions": persisted})
    assert status == 400 and error_codes(body) == ["BAD_USER_INPUT"]


async def test_introspection_is_not_allowed_in_production(
    prod_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for query in ("{ __schema { types { name } } }", '{ __type(name: "Student") { fields { name } } }'):
        status, body = await post(prod_client, headers, {"query": query})
        assert status == 400 and error_codes(body) == ["OPERATION_NOT_ALLOWED"]
        status, body = await post(prod_client, {"Accept": GRAPHQL_RESPONSE}, {"query": query})
        assert status == 400 and error_codes(body) == ["OPERATION_NOT_ALLOWED"]


def test_production_validation_refuses_introspection_even_for_a_registered_document(app: Any) -> None:
    schema = graphql_schema(app.state.pledgeql.schema)
    cache = DocumentCache(schema, production=True)
    errors = cache.get("{ __schema { queryType { name } } }").errors
    assert errors and errors[0].extensions == {"code": "BAD_USER_INPUT"}
    assert "Introspection is off" in errors[0].message
    assert not DocumentCache(schema, production=False).get("{ __schema { queryType { name } } }").errors


@pytest.mark.parametrize(
    "query",
    [
        "{ s: __schema { ...Types } } fragment Types on __Schema { types { name fields { name } } }",
        '{ me { role } t: __type(name: "Student") { ... on __Type { fields { name type { name } } } } }',
    ],
)
def test_production_validation_refuses_introspection_under_an_alias_or_fragment_once_per_entry(
    app: Any, query: str
) -> None:
    schema = graphql_schema(app.state.pledgeql.schema)
    errors = DocumentCache(schema, production=True).get(query).errors
    assert len(errors) == 1 and errors[0].extensions == {"code": "BAD_USER_INPUT"}


def test_production_validation_still_answers_typename(app: Any) -> None:
    schema = graphql_schema(app.state.pledgeql.schema)
    assert not DocumentCache(schema, production=True).get("{ __typename me { __typename role } }").errors


def test_production_validation_messages_suggest_nothing(app: Any) -> None:
    schema = graphql_schema(app.state.pledgeql.schema)
    message = DocumentCache(schema, production=True).get("{ me { rol } }").errors[0].message
    assert "Cannot query field 'rol'" in message and "Did you mean" not in message
    assert "Did you mean" in DocumentCache(schema, production=False).get("{ me { rol } }").errors[0].message


async def test_variable_errors_suggest_nothing_in_production(
    prod_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    status, body = await post(prod_client, headers, {"query": REQUESTS, "variables": {"status": "OPNE"}})
    assert status == 400 and error_codes(body) == ["BAD_USER_INPUT"]
    assert "Did you mean" not in str(body)


async def test_the_public_policy_needs_registration_too(prod_client: httpx.AsyncClient) -> None:
    status, body = await post(prod_client, {"Accept": GRAPHQL_RESPONSE}, {"query": "query Versions { policyVersions }"})
    assert status == 200 and "2020-04-01" in body["data"]["policyVersions"]
    status, body = await post(prod_client, {"Accept": GRAPHQL_RESPONSE}, {"query": "{ policyVersions }"})
    assert status == 400 and error_codes(body) == ["OPERATION_NOT_ALLOWED"]


async def test_graphiql_is_not_served_in_production(prod_client: httpx.AsyncClient) -> None:
    response = await prod_client.get("/graphql", headers={"Accept": "text/html,application/xhtml+xml"})
    assert "GraphiQL" not in response.text and "<script" not in response.text
    assert response.status_code == 400
    assert (await prod_client.get("/graphiql/graphiql.min.js")).status_code == 404


def test_unexpected_errors_are_masked_in_production() -> None:
    error = GraphQLError("boom", original_error=RuntimeError("student Ada Lovelace, row 42"))
    masked = format_error(error, mask=True)
    assert masked == {"message": "Internal error", "extensions": {"code": "INTERNAL"}}
    assert "Ada" not in str(format_error(error, mask=False))


def test_tokens_are_not_minted_in_production(prod_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="off in production"):
        mint_token(prod_settings, uuid.uuid4(), ["INSTRUCTION"])


def test_the_token_command_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PLEDGEQL_ENV", "production")
    monkeypatch.setenv("PLEDGEQL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PLEDGEQL_JWKS_FILE", str(keys.jwks_file))
    status = cli_main(["token", "--user-id", str(uuid.uuid4()), "--purposes", "INSTRUCTION"])
    assert status != 0
    captured = capsys.readouterr()
    assert captured.out == "" and "production" in captured.err


def test_production_does_not_start_without_an_operations_folder(prod_settings: Settings, db: DatabaseUrls) -> None:
    with pytest.raises(SystemExit, match="PLEDGEQL_OPERATIONS_DIR"):
        create_app(dataclasses.replace(prod_settings, operations_dir=None), db)


def test_production_does_not_start_with_an_invalid_registered_operation(
    prod_settings: Settings, db: DatabaseUrls, tmp_path: Path
) -> None:
    (tmp_path / "intro.graphql").write_text("query Intro { __schema { queryType { name } } }")
    with pytest.raises(SystemExit, match=r"intro\.graphql"):
        create_app(dataclasses.replace(prod_settings, operations_dir=tmp_path), db)
    (tmp_path / "intro.graphql").write_text("query Deep { me { rol } }")
    with pytest.raises(SystemExit, match="not valid"):
        create_app(dataclasses.replace(prod_settings, operations_dir=tmp_path), db)


def test_production_does_not_start_with_cors_open_to_every_origin(prod_settings: Settings, db: DatabaseUrls) -> None:
    with pytest.raises(SystemExit, match="CORS"):
        create_app(dataclasses.replace(prod_settings, cors_origins=("*",)), db)


async def test_production_sends_no_server_timing_by_default(
    prod_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await prod_client.post("/graphql", json={"query": ME}, headers=headers)
    assert response.status_code == 200
    assert "server-timing" not in response.headers


async def test_production_sends_server_timing_when_the_operator_turns_it_on(
    prod_settings: Settings, db: DatabaseUrls, headers: dict[str, str]
) -> None:
    application = create_app(dataclasses.replace(prod_settings, server_timing=True), db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            response = await http.post("/graphql", json={"query": ME}, headers=headers)
    assert response.status_code == 200
    assert response.headers["server-timing"].startswith('plan;desc="')
