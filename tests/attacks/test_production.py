"""Issue 14's production holes: a node that would chain under a key of its own,
and submitted variable values echoed back in coercion errors."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import pytest_asyncio

from server.app import create_app
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import error_codes
from tests.test_tokens import Keys, claims_for, make_keys, production, sign

GRAPHQL_RESPONSE = "application/graphql-response+json"
ADMIN = "admin@northwind.example"
REQUESTS = "query Requests($status: DataRequestStatus) { dataRequests(status: $status) { id } }"
STUDENT = "query Student($id: ID!, $first: Int) { student(id: $id) { responses(first: $first) { id } } }"
SECRET = "student1@northwind.example 555-0100"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    keys = make_keys(tmp_path_factory.mktemp("attacks-production"))
    keys.operations_dir.mkdir(exist_ok=True)
    (keys.operations_dir / "requests.graphql").write_text(REQUESTS)
    (keys.operations_dir / "student.graphql").write_text(STUDENT)
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


def test_a_production_node_without_the_audit_key_refuses_to_start_instead_of_chaining_under_its_own(
    prod_settings: Settings, db: DatabaseUrls, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PLEDGEQL_AUDIT_KEY", raising=False)
    keyless = dataclasses.replace(prod_settings, extra={}, data_dir=tmp_path)
    with pytest.raises(SystemExit, match="PLEDGEQL_AUDIT_KEY"):
        create_app(keyless, db)
    with pytest.raises(SystemExit, match="PLEDGEQL_AUDIT_KEY"):
        keyless.audit_key()
    # Nothing was generated: a key in the data dir would be a second chain key.
    assert not (tmp_path / "audit_key").exists()
    monkeypatch.setenv("PLEDGEQL_AUDIT_KEY", "the-one-key-every-node-shares")
    keyed = dataclasses.replace(keyless, audit_secret=Settings.from_env().audit_secret)
    assert keyed.audit_key() == b"the-one-key-every-node-shares"
    create_app(keyed, db)


@pytest.mark.parametrize(
    ("query", "variables", "name", "expected"),
    [
        (REQUESTS, {"status": SECRET}, "status", "DataRequestStatus"),
        (STUDENT, {"id": str(uuid.uuid4()), "first": SECRET}, "first", "Int"),
        (STUDENT, {"id": {"nested": SECRET}}, "id", "ID!"),
    ],
)
async def test_production_never_echoes_a_submitted_variable_value_in_a_coercion_error(
    prod_client: httpx.AsyncClient,
    keys: Keys,
    users: dict[str, uuid.UUID],
    query: str,
    variables: dict[str, object],
    name: str,
    expected: str,
) -> None:
    token = sign(keys.rsa_private, claims_for(users[ADMIN], purposes=["RECORD_ACCESS"], exp=int(time.time()) + 600))
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "RECORD_ACCESS", "Content-Type": "application/json"}
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        response = await prod_client.post(
            "/graphql",
            content=orjson.dumps({"query": query, "variables": variables}),
            headers={**headers, "Accept": accept},
        )
        body = response.json()
        assert error_codes(body) == ["BAD_USER_INPUT"], body
        assert "555-0100" not in response.text and "student1" not in response.text and "nested" not in response.text
        message = body["errors"][0]["message"]
        assert f"${name}" in message and expected in message
