"""A query runs without a transaction (server.graphql_http, ``_authenticated``).

Its principal, its statements and its audit write are statements of their own,
and the write commits itself: no BEGIN, no COMMIT. What that asks of the rest
is checked here: the audit entries have committed when the answer arrives; the
settings the query leaves on its connection's session (its row-level security
districts, generic plans) are gone before a transaction's first statement, and
a query without generic plans does not run under a previous query's; a
chain head this worker does not know is read and written in a transaction of
the write's own, and a report's statements in one of the report's own, under
its ``work_mem``; and a pooled connection found dead at the query's first
statement is replaced, as a failed BEGIN is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from permissions.audit import PendingEntry
from resolvers.audit_store import ADVANCE, HEADS, INSERT, NAMES, write_entries
from resolvers.principal import SETTLE
from server.app import create_app, driver_connection
from server.auth import mint_token
from server.commands.audit_cli import verify_chains
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import ALL_PURPOSES
from tests.test_audit_storage import _origin
from tests.test_report_cache import ADMIN, GENERATION
from tests.test_reports import PERFORMANCE
from tests.test_statement_count import watching

TEACHER = "teacher1@northwind.example"
ROSTER = "query Roster($id: ID!) { class(id: $id) { id name students { id firstName lastName } } }"
# Viewer.allowedPurposes has no compiled reading: the resolvers serve it.
UNCOMPILED = "{ me { id allowedPurposes } }"
# Any mutation takes a transaction, whatever its resolver then decides.
MUTATION = "mutation { recordActivity(events: []) { accepted } }"


@pytest_asyncio.fixture(scope="module")
async def served(settings: Settings, db: DatabaseUrls) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """An app of its own (its pool is this module's alone) and a client of it."""
    application = create_app(dataclasses.replace(settings, pool_size=2), db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            yield application, http


async def post(client: httpx.AsyncClient, settings: Settings, user: uuid.UUID, query: str, **variables: Any) -> Any:
    token = mint_token(settings, user, ALL_PURPOSES)
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"}
    return await client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)


async def teachers_class(owner: Any, teacher: uuid.UUID) -> uuid.UUID:
    class_id: uuid.UUID = await owner.fetchval(
        "SELECT class_id FROM class_teachers WHERE teacher_id = $1 ORDER BY class_id LIMIT 1", teacher
    )
    return class_id


async def test_a_compiled_query_has_no_transaction_and_its_entries_have_committed_when_it_answers(
    served: tuple[Any, httpx.AsyncClient], settings: Settings, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    app, client = served
    class_id = await teachers_class(owner, users[TEACHER])
    await post(client, settings, users[TEACHER], ROSTER, id=str(class_id))  # the chain's head now known
    async with watching(app) as seen:
        response = await post(client, settings, users[TEACHER], ROSTER, id=str(class_id))
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    students = response.json()["data"]["class"]["students"]
    assert students
    (checkout,) = seen
    assert checkout.transaction is False and checkout.in_transaction is False
    # The statement and the audit write (the names' codes are read once per worker, KnownCodes;
    # the principal's standing is the one kept from the request before, tests/test_kept_standing.py,
    # and its setting is sent when the request before left this connection another);
    # no BEGIN or COMMIT among them.
    statements = [s for s in checkout.statements if s not in (NAMES, SETTLE)]
    assert len(statements) == 2, checkout.statements
    assert statements[0].startswith("SELECT json_build_object(")
    assert statements[-1] == ADVANCE
    assert not any(s.strip().upper() in ("BEGIN", "COMMIT") for s in checkout.statements)
    # Committed before the answer: another connection reads one entry per student at once.
    request_id = response.headers["x-request-id"]
    subjects = await owner.fetch("SELECT subject_student_id FROM audit_entries WHERE request_id = $1", request_id)
    assert sorted(str(r["subject_student_id"]) for r in subjects) == sorted(s["id"] for s in students)

    # A query the resolvers serve has none either.
    async with watching(app) as seen:
        response = await post(client, settings, users[TEACHER], UNCOMPILED)
    assert response.status_code == 200 and response.json()["data"]["me"]["allowedPurposes"], response.text
    (checkout,) = seen
    assert checkout.transaction is False and checkout.in_transaction is False
    assert not any(s.strip().upper() in ("BEGIN", "COMMIT") for s in checkout.statements)

    # A mutation keeps its transaction: its change commits with its entries.
    async with watching(app) as seen:
        response = await post(client, settings, users[TEACHER], MUTATION)
    assert response.status_code == 200, response.text
    (checkout,) = seen
    assert checkout.transaction is True and checkout.in_transaction is True


async def test_what_a_compiled_query_leaves_on_its_session_is_reset_before_a_transaction_runs_anything(
    served: tuple[Any, httpx.AsyncClient], settings: Settings, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    app, client = served
    engine = app.state.pledgeql.engine
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", users[TEACHER])
    class_id = await teachers_class(owner, users[TEACHER])
    async with watching(app) as seen:
        response = await post(client, settings, users[TEACHER], ROSTER, id=str(class_id))
    assert response.status_code == 200, response.text
    (checkout,) = seen
    assert checkout.in_transaction is False

    settings_of = (
        "SELECT pg_backend_pid() AS pid, current_setting('pledgeql.district_ids', true) AS districts, "
        "current_setting('plan_cache_mode') AS plans"
    )
    # Without a transaction, the query's session still holds its settings (what the reset is for) ...
    left: dict[int, Any] = {}
    for _ in range(4):  # the pool hands its connections out in turn: each is seen
        async with driver_connection(engine) as connection:
            row = await connection.fetchrow(settings_of)
            left[row["pid"]] = row
    assert checkout.pid in left
    assert left[checkout.pid]["districts"] == str(district)
    assert left[checkout.pid]["plans"] == "force_generic_plan"
    # ... and a transaction's first statement runs with neither, on every pooled connection.
    begun: dict[int, Any] = {}
    for _ in range(4):
        async with driver_connection(engine, transaction=True) as connection:
            row = await connection.fetchrow(settings_of)
            begun[row["pid"]] = row
            # Row-level security with the districts reset: no district's rows.
            assert await connection.fetchval("SELECT count(*) FROM users") == 0
    assert checkout.pid in begun
    assert all(row["districts"] in ("", None) and row["plans"] == "auto" for row in begun.values()), begun


async def test_a_chain_head_another_writer_moved_is_read_and_written_in_a_transaction_of_the_writes_own(
    served: tuple[Any, httpx.AsyncClient], settings: Settings, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    app, client = served
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", users[TEACHER])
    class_id = await teachers_class(owner, users[TEACHER])
    await post(client, settings, users[TEACHER], ROSTER, id=str(class_id))  # the head known
    # An operator's command moves Northwind's head: the one this worker knows is stale.
    async with owner.transaction():
        entry = PendingEntry(str(district), None, True, ("users",), ("DIRECTORY",))
        await write_entries(owner, _origin(dt.datetime.now(dt.UTC)), [entry], settings.audit_key())
    async with watching(app) as seen:
        response = await post(client, settings, users[TEACHER], ROSTER, id=str(class_id))
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    (checkout,) = seen
    writes = [s for s in checkout.statements if s in (ADVANCE, HEADS, INSERT) or s.strip() in ("BEGIN", "COMMIT")]
    # ADVANCE writes nothing; the head is read under its lock and the records written, then committed.
    assert writes == [ADVANCE, "BEGIN", HEADS, INSERT, "COMMIT"], writes
    request_id = response.headers["x-request-id"]
    assert await owner.fetchval("SELECT count(*) FROM audit_entries WHERE request_id = $1", request_id) == len(
        response.json()["data"]["class"]["students"]
    )
    (report,) = await verify_chains(owner, settings.audit_key(), district)
    assert report.broken is None


async def test_a_pooled_connection_found_dead_at_a_compiled_querys_first_statement_is_replaced(
    served: tuple[Any, httpx.AsyncClient], settings: Settings, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    app, client = served
    class_id = await teachers_class(owner, users[TEACHER])
    for round_ in range(5):
        warm = await asyncio.gather(
            *(post(client, settings, users[TEACHER], ROSTER, id=str(class_id)) for _ in range(2))
        )
        assert [r.status_code for r in warm] == [200, 200]
        terminated = await owner.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE usename = 'pledgeql_app' AND datname = current_database()"
        )
        assert terminated >= 1
        # At once: the pooled connections may not know yet that they are dead.
        async with watching(app) as seen:
            response = await post(client, settings, users[TEACHER], ROSTER, id=str(class_id))
        assert response.status_code == 200 and "errors" not in response.json(), (round_, response.text)
        assert seen[-1].transaction is False


async def test_a_connection_left_in_a_transaction_by_a_failure_never_goes_back_to_the_pool(
    served: tuple[Any, httpx.AsyncClient], owner: Any
) -> None:
    app, _ = served
    engine = app.state.pledgeql.engine

    class Failed(Exception):
        pass

    # A failure while a transaction of the request's own is open (a write's ROLLBACK that could not run).
    try:
        async with driver_connection(engine) as connection:
            left = connection.get_server_pid()
            await connection.execute("BEGIN")
            raise Failed
    except Failed:
        pass
    for _ in range(50):  # its backend ends once the connection is closed
        if not await owner.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", left):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the connection left in a transaction is still open")
    for _ in range(4):
        async with driver_connection(engine) as connection:
            assert connection.get_server_pid() != left
            assert not connection.is_in_transaction()


async def test_a_report_runs_in_a_transaction_of_its_own_and_leaves_neither_its_work_mem_nor_generic_plans(
    served: tuple[Any, httpx.AsyncClient], settings: Settings, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    app, client = served
    engine = app.state.pledgeql.engine
    class_id = await teachers_class(owner, users[TEACHER])
    for _ in range(4):  # every pooled connection's session left with generic plans
        response = await post(client, settings, users[TEACHER], ROSTER, id=str(class_id))
        assert response.status_code == 200, response.text
    admin = users[ADMIN]
    district = await owner.fetchval("SELECT district_id FROM users WHERE id = $1", admin)
    headers = {"Authorization": f"Bearer {mint_token(settings, admin, ALL_PURPOSES)}", "X-Purpose": "REPORTING"}
    variables = {"input": {"scope": {"districtId": str(district)}, "groupBy": ["SUBJECT", "GRADE_LEVEL"]}}
    computed = app.state.pledgeql.endpoint.reports.computed
    async with watching(app) as seen:
        response = await client.post("/graphql", json={"query": PERFORMANCE, "variables": variables}, headers=headers)
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    assert app.state.pledgeql.endpoint.reports.computed == computed + 1  # computed, not given again
    (checkout,) = seen
    assert checkout.transaction is False and checkout.in_transaction is False
    statements = [s.strip() for s in checkout.statements]
    # The report's statements, and only they, between a BEGIN and a COMMIT of its own.
    assert statements.count("BEGIN") == 1 and statements.count("COMMIT") == 1, statements
    begin, commit = statements.index("BEGIN"), statements.index("COMMIT")
    assert "work_mem" in statements[begin + 1] and begin + 2 < commit, statements
    assert statements.index(GENERATION) < begin and statements[-1] == ADVANCE.strip()
    # What the report's connection holds afterwards: the default work_mem and plans.
    defaults = await owner.fetchrow("SELECT current_setting('work_mem') AS memory")
    after: dict[int, Any] = {}
    for _ in range(4):
        async with driver_connection(engine) as connection:
            row = await connection.fetchrow(
                "SELECT pg_backend_pid() AS pid, current_setting('work_mem') AS memory, "
                "current_setting('plan_cache_mode') AS plans"
            )
            after[row["pid"]] = row
    assert checkout.pid in after
    assert after[checkout.pid]["memory"] == defaults["memory"] != "64MB"
    assert after[checkout.pid]["plans"] == "auto"
