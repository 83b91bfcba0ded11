"""The Server-Timing header (API.md configuration; issue 13): how a request was
served, as a developer sees it in the browser's tools. On by default in
development (this app), off in production unless PLEDGEQL_SERVER_TIMING=1
(tests/test_production.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from bench.scenarios import CLASS_VIEW

TEACHER = "teacher1@northwind.example"
TIMING = re.compile(
    r'plan;desc="(compiled|resolvers)", sql;dur=(\d+\.\d{2}), audit;dur=(\d+\.\d{2}), total;dur=(\d+\.\d{2})'
)


async def _first_class(owner: Any) -> uuid.UUID:
    class_id: uuid.UUID = await owner.fetchval(
        "SELECT c.id FROM classes c JOIN class_teachers ct ON ct.class_id = c.id JOIN users u ON u.id = ct.teacher_id "
        "WHERE u.email = $1 ORDER BY c.name LIMIT 1",
        TEACHER,
    )
    return class_id


async def _timed(
    client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]
) -> tuple[httpx.Response, re.Match[str]]:
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"},
    )
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    match = TIMING.fullmatch(response.headers["server-timing"])
    assert match is not None, response.headers["server-timing"]
    return response, match


async def test_a_compiled_read_says_compiled_with_its_sql_audit_and_total_durations(
    client: httpx.AsyncClient, token_for: Callable[..., str], owner: Any
) -> None:
    _, match = await _timed(client, token_for(TEACHER), CLASS_VIEW, {"id": str(await _first_class(owner))})
    plan, sql, audit, total = match.groups()
    assert plan == "compiled"
    assert 0 < float(sql) <= float(total) and 0 < float(audit) <= float(total)


async def test_a_read_the_compiler_does_not_cover_says_resolvers(
    client: httpx.AsyncClient, token_for: Callable[..., str], owner: Any
) -> None:
    # A read beside the policy document, which the compiled reads do not answer.
    query = "query Named($id: ID!) { class(id: $id) { id } policy { version } }"
    _, match = await _timed(client, token_for(TEACHER), query, {"id": str(await _first_class(owner))})
    assert match.group(1) == "resolvers"


async def test_the_header_is_fixed_words_and_numbers_so_it_carries_no_value_of_the_response(
    client: httpx.AsyncClient, token_for: Callable[..., str], owner: Any
) -> None:
    response, _ = await _timed(client, token_for(TEACHER), CLASS_VIEW, {"id": str(await _first_class(owner))})
    header = response.headers["server-timing"]
    words = set(re.findall(r"[A-Za-z]+", header))
    assert words <= {"plan", "desc", "compiled", "resolvers", "sql", "dur", "audit", "total"}
    students = response.json()["data"]["class"]["students"]
    assert students and not any(s["firstName"] in header for s in students)


async def test_a_refused_request_still_gets_its_total(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ me { role } }"})
    assert response.status_code in (200, 401)
    assert re.fullmatch(r"total;dur=\d+\.\d{2}", response.headers["server-timing"])
