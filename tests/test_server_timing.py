"""The Server-Timing header (issue 13): which path served a /graphql request and how long its
database, its audit and the whole request took; sent in development, in production only when
PLEDGEQL_SERVER_TIMING=1, and made of names and numbers alone."""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from bench.scenarios import CLASS_VIEW
from server.app import create_app
from server.db import DatabaseUrls
from server.graphql_http import Reply, server_timing
from server.settings import Settings
from tests.test_tokens import Keys, claims_for, make_keys, production, sign

TEACHER = "teacher1@northwind.example"
ADMIN = "admin@northwind.example"
# A teacher's roster with its teachers: not the shape the compiled path covers today.
WITH_TEACHERS = "query Mixed($id: ID!) { class(id: $id) { name teachers { firstName } students { id firstName } } }"
ME = "query Me { me { id role } }"
DURATION = r"\d+\.\d"
SERVED = re.compile(
    rf'plan;desc="(compiled|resolvers)", sql;dur={DURATION}, audit;dur={DURATION}, total;dur={DURATION}'
)
REFUSED = re.compile(rf"total;dur={DURATION}")


@pytest.fixture(scope="module")
async def roster(owner: Any, users: dict[str, uuid.UUID]) -> str:
    class_id = await owner.fetchval("SELECT class_id FROM class_teachers WHERE teacher_id = $1 LIMIT 1", users[TEACHER])
    return str(class_id)


@pytest.fixture(scope="module")
def as_teacher(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(TEACHER)}", "X-Purpose": "INSTRUCTION"}


async def test_a_compiled_read_in_development_names_its_plan_and_its_sql_audit_and_total_durations(
    client: httpx.AsyncClient, as_teacher: dict[str, str], roster: str
) -> None:
    response = await client.post(
        "/graphql", json={"query": CLASS_VIEW, "variables": {"id": roster}}, headers=as_teacher
    )
    assert response.status_code == 200 and response.json()["data"]["class"]["students"]
    header = response.headers["server-timing"]
    match = SERVED.fullmatch(header)
    assert match is not None, header
    assert match.group(1) == "compiled"


async def test_a_read_the_compiler_does_not_cover_says_the_resolvers_served_it(
    client: httpx.AsyncClient, as_teacher: dict[str, str], roster: str
) -> None:
    response = await client.post(
        "/graphql", json={"query": WITH_TEACHERS, "variables": {"id": roster}}, headers=as_teacher
    )
    assert response.status_code == 200 and response.json()["data"]["class"]["teachers"]
    match = SERVED.fullmatch(response.headers["server-timing"])
    assert match is not None and match.group(1) == "resolvers", response.headers["server-timing"]


async def test_a_request_refused_before_anything_ran_gives_its_total_time_and_no_plan(
    client: httpx.AsyncClient, roster: str
) -> None:
    response = await client.post("/graphql", json={"query": CLASS_VIEW, "variables": {"id": roster}})
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert REFUSED.fullmatch(response.headers["server-timing"]), response.headers["server-timing"]
    invalid = await client.post("/graphql", json={"query": "{ nope }"})
    assert REFUSED.fullmatch(invalid.headers["server-timing"]), invalid.headers["server-timing"]


async def test_the_header_carries_no_personal_data_nor_any_value_of_the_request(
    client: httpx.AsyncClient, as_teacher: dict[str, str], roster: str
) -> None:
    response = await client.post(
        "/graphql",
        json={"query": CLASS_VIEW, "variables": {"id": roster}},
        headers={**as_teacher, "X-Request-Id": "client-chosen-id-42"},
    )
    header = response.headers["server-timing"]
    body = response.json()["data"]["class"]
    # Nothing but the fixed names, the path and numbers: no name, id, token or header value can fit.
    assert SERVED.fullmatch(header), header
    values = [
        roster,
        body["name"],
        response.headers["x-request-id"],
        "client-chosen-id-42",
        as_teacher["Authorization"],
    ]
    for student in body["students"]:
        values += [student["id"], student["firstName"], student["lastName"]]
    assert not [value for value in values if value and value in header]
    assert "server-timing" in response.headers  # and it is the only timing header
    assert [h for h in response.headers if "timing" in h.lower()] == ["server-timing"]


def test_the_header_is_built_from_the_replys_path_and_durations_in_milliseconds() -> None:
    reply = Reply({"data": None}, 200, served="compiled", timings={"sql": 0.0021, "audit": 0.00049})
    assert server_timing(reply, 0.0125) == 'plan;desc="compiled", sql;dur=2.1, audit;dur=0.5, total;dur=12.5'
    assert server_timing(Reply({}, 401), 0.001) == "total;dur=1.0"


@pytest.mark.parametrize(
    ("env", "raw", "expected"),
    [
        ("development", None, True),
        ("test", None, True),
        ("production", None, False),
        ("production", "1", True),
        ("production", "0", False),
        ("development", "0", False),
        ("production", "true", True),
    ],
)
def test_the_setting_defaults_on_outside_production_and_off_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: str, raw: str | None, expected: bool
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file of the checkout
    monkeypatch.setenv("PLEDGEQL_ENV", env)
    if raw is None:
        monkeypatch.delenv("PLEDGEQL_SERVER_TIMING", raising=False)
    else:
        monkeypatch.setenv("PLEDGEQL_SERVER_TIMING", raw)
    assert Settings.from_env().sends_server_timing is expected


def test_a_server_timing_setting_that_is_not_yes_or_no_stops_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLEDGEQL_SERVER_TIMING", "maybe")
    with pytest.raises(SystemExit, match="PLEDGEQL_SERVER_TIMING must be 1 or 0"):
        Settings.from_env()


# ----------------------------------------------------------------- production


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("server-timing"))


@pytest_asyncio.fixture(scope="module")
async def production_clients(
    settings: Settings, keys: Keys, db: DatabaseUrls
) -> AsyncIterator[dict[bool | None, httpx.AsyncClient]]:
    """Production apps with the setting unset, off and on."""
    clients: dict[bool | None, httpx.AsyncClient] = {}
    contexts = []
    try:
        for setting in (None, False, True):
            application = create_app(production(settings, keys, server_timing=setting), db)
            context = application.router.lifespan_context(application)
            await context.__aenter__()
            contexts.append(context)
            transport = httpx.ASGITransport(app=application)
            clients[setting] = httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test")
        yield clients
    finally:
        for http in clients.values():
            await http.aclose()
        for context in reversed(contexts):
            await context.__aexit__(None, None, None)


def _production_headers(keys: Keys, users: dict[str, uuid.UUID]) -> dict[str, str]:
    token = sign(keys.rsa_private, claims_for(users[ADMIN], purposes=["INSTRUCTION"], exp=int(time.time()) + 600))
    return {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"}


async def test_production_sends_no_server_timing_unless_configured(
    production_clients: dict[bool | None, httpx.AsyncClient], keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    headers = _production_headers(keys, users)
    for setting in (None, False):
        response = await production_clients[setting].post("/graphql", json={"query": ME}, headers=headers)
        assert response.status_code == 200 and response.json()["data"]["me"]["role"] == "DISTRICT_ADMIN"
        assert "server-timing" not in response.headers
        refused = await production_clients[setting].post("/graphql", json={"query": "query X { me { id } }"})
        assert refused.json()["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
        assert "server-timing" not in refused.headers


async def test_production_with_the_setting_on_sends_server_timing(
    production_clients: dict[bool | None, httpx.AsyncClient], keys: Keys, users: dict[str, uuid.UUID]
) -> None:
    response = await production_clients[True].post(
        "/graphql", json={"query": ME}, headers=_production_headers(keys, users)
    )
    assert response.status_code == 200 and response.json()["data"]["me"]["role"] == "DISTRICT_ADMIN"
    assert SERVED.fullmatch(response.headers["server-timing"]), response.headers["server-timing"]


def test_production_settings_keep_the_mode_default_when_unset(settings: Settings, keys: Keys) -> None:
    assert not production(settings, keys).sends_server_timing
    assert dataclasses.replace(production(settings, keys), server_timing=True).sends_server_timing
