"""Production serves registered subscriptions only, over SSE as over WebSocket (the same document checks)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from server.app import create_app
from server.db import DatabaseUrls
from server.settings import Settings
from tests.test_tokens import Keys, claims_for, make_keys, production, sign

TEACHER = "teacher1@northwind.example"
# What the teacher app ships (the copy of the shared operations in tests/operations), registered as it is.
REGISTERED = Path(__file__).with_name("operations") / "teacher-app" / "live.graphql"
LIVE = """subscription LiveClass($classId: ID!) {
  classActivity(classId: $classId) {
    kind
    at
    student { id firstName lastName }
    response { id correct score item { id skill } }
  }
}
"""
UNREGISTERED = "subscription Other($classId: ID!) { classActivity(classId: $classId) { response { answer } } }"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    keys = make_keys(tmp_path_factory.mktemp("live-production"))
    (keys.operations_dir / "live.graphql").write_text(REGISTERED.read_text())
    return keys


@pytest_asyncio.fixture(scope="module")
async def prod_client(settings: Settings, keys: Keys, db: DatabaseUrls) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(production(settings, keys), db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            yield http


def test_the_document_sent_is_the_teacher_apps_live_operation() -> None:
    assert " ".join(LIVE.split()) in " ".join(REGISTERED.read_text().split())


async def test_production_refuses_an_unregistered_subscription_and_admits_the_registered_one(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    token = sign(keys.rsa_private, claims_for(users[TEACHER], purposes=["INSTRUCTION"], exp=int(time.time()) + 600))
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION", "Accept": "text/event-stream"}
    variables = {"classId": str(uuid.uuid4())}

    # Unregistered: refused inside an accepted stream, as graphql-sse requires of every step before execution.
    refused = await prod_client.post("/graphql", json={"query": UNREGISTERED, "variables": variables}, headers=headers)
    assert in_stream(refused)["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"

    # Registered: admitted, and then refused for the class (which does not exist) inside the stream.
    admitted = await prod_client.post("/graphql", json={"query": LIVE, "variables": variables}, headers=headers)
    result = in_stream(admitted)
    assert result["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert result["extensions"] == {"purpose": "INSTRUCTION"}


def in_stream(response: httpx.Response) -> dict[str, Any]:
    """The one result of a stream refused before its first event: a next, then complete."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[0].startswith("event: next\ndata: ") and events[1] == "event: complete\ndata:", events
    result: dict[str, Any] = orjson.loads(events[0].split("data: ", 1)[1])
    return result


async def test_production_never_echoes_a_submitted_variable_value_in_a_subscriptions_coercion_error(
    prod_client: httpx.AsyncClient, keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    token = sign(keys.rsa_private, claims_for(users[TEACHER], purposes=["INSTRUCTION"], exp=int(time.time()) + 600))
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION", "Accept": "text/event-stream"}
    planted = {"email": "student1@northwind.example", "phone": "555-0100"}
    response = await prod_client.post(
        "/graphql", json={"query": LIVE, "variables": {"classId": planted}}, headers=headers
    )
    assert "555-0100" not in response.text and "student1" not in response.text, response.text
    errors = (
        orjson.loads(response.text)["errors"]
        if response.headers["content-type"].startswith("application/")
        else orjson.loads(response.text.split("data: ", 1)[1].split("\n", 1)[0])["errors"]
    )
    assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"], errors
    assert "$classId" in errors[0]["message"]
