"""Group commit of queries' audit entries (server/audit_writer.py).

Concurrent queries of one district share the transaction that writes their
entries; each is answered only once that transaction has committed, and if
it fails, every query in it fails with AUDIT_UNAVAILABLE and no data. A
mutation still writes its entry in its own transaction, with its change.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from server.commands.audit_cli import verify_chains
from server.settings import Settings
from tests.conftest import ALL_PURPOSES, TEST_POLICIES

TEACHER = "teacher1@northwind.example"
ROSTER = """query Roster($id: ID!) {
  class(id: $id) { id students { id firstName responses(first: 3) { score } } }
}"""
CREATE = """mutation Create($input: CreateAssignmentInput!) { createAssignment(input: $input) { id } }"""


@pytest.fixture(scope="module")
def settings(base_settings: Settings) -> Settings:
    # These tests hold a chain lock while requests queue behind it: far longer than
    # the default bounded wait (1 s) on a loaded machine.
    return dataclasses.replace(base_settings, policy_dirs=(TEST_POLICIES,), audit_lock_timeout=60.0)


@pytest.fixture(scope="module")
async def subjects(owner: Any, users: dict[str, uuid.UUID]) -> dict[str, Any]:
    northwind = await owner.fetchval("SELECT id FROM districts WHERE name = 'Northwind Unified'")
    klass = await owner.fetchval(
        "SELECT ct.class_id FROM class_teachers ct JOIN enrollments e ON e.class_id = ct.class_id "
        "WHERE ct.teacher_id = $1 AND e.student_id = $2 LIMIT 1",
        users[TEACHER],
        users["student1@northwind.example"],
    )
    assessment = await owner.fetchval("SELECT id FROM assessments LIMIT 1")
    return {"northwind": northwind, "class": klass, "assessment": assessment}


def roster_request(client: httpx.AsyncClient, token: str, klass: uuid.UUID, request_id: str) -> Any:
    return client.post(
        "/graphql",
        json={"query": ROSTER, "variables": {"id": str(klass)}},
        headers={"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION", "X-Request-Id": request_id},
    )


def _roster_numbered(client: httpx.AsyncClient, token: str, klass: uuid.UUID, prefix: str, n: int) -> Any:
    return roster_request(client, token, klass, f"{prefix}-{n}")


@contextlib.asynccontextmanager
async def queued_behind_the_chain_lock(
    owner: Any, district: uuid.UUID, send: Callable[[int], Any], count: int
) -> AsyncIterator[list[asyncio.Task[Any]]]:
    """``count`` queries sent while the district's audit chain lock is held here:
    the first waits for it in its audit write, the others queue behind it.
    The lock is released when the block ends."""
    await owner.execute("SELECT pg_advisory_lock(pledgeql_audit_lock_key($1))", district)
    try:
        tasks = [asyncio.create_task(send(n)) for n in range(count)]
        for _ in range(200):
            if await owner.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("no request came to wait for the audit chain lock")
        await asyncio.sleep(0.3)
        yield tasks
    finally:
        await owner.execute("SELECT pg_advisory_unlock(pledgeql_audit_lock_key($1))", district)


async def test_concurrent_queries_share_a_transaction_and_each_is_answered_after_it_commits(
    client: httpx.AsyncClient, owner: Any, token_for: Any, subjects: dict[str, Any], settings: Settings
) -> None:
    token = token_for(TEACHER, ALL_PURPOSES)
    size = await owner.fetchval(
        "SELECT count(DISTINCT student_id) FROM enrollments WHERE class_id = $1 AND begin_date <= now()::date "
        "AND (end_date IS NULL OR end_date >= now()::date)",
        subjects["class"],
    )
    tag = uuid.uuid4().hex[:8]
    # Hold Northwind's chain: the first query waits for it in its audit write, the rest queue behind it.
    send = functools.partial(_roster_numbered, client, token, subjects["class"], f"group-{tag}")
    async with queued_behind_the_chain_lock(owner, subjects["northwind"], send, 12) as tasks:
        assert not any(t.done() for t in tasks), "no query may be answered before its entries are written"
        assert (
            await owner.fetchval("SELECT count(*) FROM audit_entries WHERE client_request_id LIKE $1", f"group-{tag}-%")
            == 0
        )
    responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [200] * 12
    assert all(len(r.json()["data"]["class"]["students"]) == size for r in responses)
    rows = await owner.fetch(
        "SELECT client_request_id, cardinality(subjects) AS entries, xmin::text AS tx FROM audit_records "
        "WHERE client_request_id LIKE $1",
        f"group-{tag}-%",
    )
    per_request: dict[str, int] = {}
    for row in rows:
        per_request[row["client_request_id"]] = per_request.get(row["client_request_id"], 0) + row["entries"]
    assert per_request == {f"group-{tag}-{n}": size for n in range(12)}
    requests_per_transaction: dict[str, set[str]] = {}
    for row in rows:
        requests_per_transaction.setdefault(row["tx"], set()).add(row["client_request_id"])
    # The first query's transaction wrote its own; those that queued meanwhile went in together.
    assert len(requests_per_transaction) < 12
    assert max(len(r) for r in requests_per_transaction.values()) > 1
    reports = await verify_chains(owner, settings.audit_key(), subjects["northwind"])
    assert [r.broken for r in reports] == [None]


async def test_when_the_shared_write_fails_every_query_in_it_fails_without_data(
    client: httpx.AsyncClient, owner: Any, token_for: Any, subjects: dict[str, Any], settings: Settings
) -> None:
    token = token_for(TEACHER, ALL_PURPOSES)
    tag = uuid.uuid4().hex[:8]
    before = await owner.fetchval("SELECT count(*) FROM audit_entries")
    send = functools.partial(_roster_numbered, client, token, subjects["class"], f"fail-{tag}")
    async with queued_behind_the_chain_lock(owner, subjects["northwind"], send, 6) as tasks:
        await owner.execute("REVOKE INSERT ON audit_records FROM pledgeql_app")
    try:
        responses = await asyncio.gather(*tasks)
    finally:
        await owner.execute("GRANT INSERT ON audit_records TO pledgeql_app")
    for response in responses:
        assert response.status_code == 503, response.text
        body = response.json()
        assert [e["extensions"]["code"] for e in body["errors"]] == ["AUDIT_UNAVAILABLE"]
        assert body.get("data") is None
    assert await owner.fetchval("SELECT count(*) FROM audit_entries") == before
    # And the next query leads a group of its own again.
    again = await roster_request(client, token, subjects["class"], f"after-{tag}")
    assert again.status_code == 200 and "errors" not in again.json()
    reports = await verify_chains(owner, settings.audit_key(), subjects["northwind"])
    assert [r.broken for r in reports] == [None]


async def test_a_mutation_writes_its_entry_in_its_own_transaction_with_its_change(
    client: httpx.AsyncClient, owner: Any, token_for: Any, subjects: dict[str, Any]
) -> None:
    token = token_for(TEACHER, ALL_PURPOSES)
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"}
    queries = [roster_request(client, token, subjects["class"], f"beside-{uuid.uuid4().hex[:8]}-{n}") for n in range(6)]
    request_id = f"mutation-{uuid.uuid4().hex[:8]}"
    mutation = client.post(
        "/graphql",
        json={
            "query": CREATE,
            "variables": {
                "input": {
                    "classId": str(subjects["class"]),
                    "assessmentId": str(subjects["assessment"]),
                    "title": "Group commit check",
                }
            },
        },
        headers={**headers, "X-Request-Id": request_id},
    )
    *answered, created = await asyncio.gather(*queries, mutation)
    assert all(r.status_code == 200 for r in answered)
    assert created.status_code == 200 and "errors" not in created.json(), created.text
    assignment = uuid.UUID(created.json()["data"]["createAssignment"]["id"])
    change = await owner.fetchval("SELECT xmin::text FROM assignments WHERE id = $1", assignment)
    entries = await owner.fetch("SELECT xmin::text AS tx FROM audit_records WHERE client_request_id = $1", request_id)
    assert entries and {e["tx"] for e in entries} == {change}
