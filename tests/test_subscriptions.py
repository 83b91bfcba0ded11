"""classActivity subscriptions over a live server: graphql-transport-ws (the `websockets` client) and graphql-sse.

The subscriber talks to the app served by uvicorn; students write through a
second instance of the app (the module's ASGI client) on the same database,
so every event here crossed from one app instance to another through
PostgreSQL's NOTIFY, as between workers or nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.app import create_app
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import Gql

TEACHER = "teacher1@northwind.example"
STUDENT = "student1@northwind.example"
STUDENT2 = "student2@northwind.example"
RIVERSIDE_TEACHER = "teacher1@riverside.example"
LIVE = """
subscription LiveClass($classId: ID!) {
  classActivity(classId: $classId) {
    kind
    at
    student { id firstName lastName }
    response { id correct score item { id skill } }
  }
}"""
WITH_ANSWER = """
subscription LiveAnswers($classId: ID!) {
  classActivity(classId: $classId) { kind student { id firstName } response { id answer correct } }
}"""
SUBMIT = """
mutation Submit($input: SubmitResponseInput!) { submitResponse(input: $input) { response { id } } }"""
RECORD = """
mutation Record($events: [ActivityEventInput!]!) { recordActivity(events: $events) { accepted } }"""
SUBPROTOCOL = "graphql-transport-ws"
QUIET = 1.5  # seconds to wait for an event that must not come


@dataclasses.dataclass(frozen=True)
class Facts:
    klass: uuid.UUID  # a class teacher1 teaches, with student1 in it
    other_class: uuid.UUID  # student2's class, which teacher1 does not teach
    riverside_class: uuid.UUID
    item: uuid.UUID  # open for practice
    student: uuid.UUID
    student2: uuid.UUID


@pytest_asyncio.fixture(scope="module")
async def facts(owner: Any, users: dict[str, uuid.UUID]) -> Facts:
    teacher, student, student2 = users[TEACHER], users[STUDENT], users[STUDENT2]
    klass = await owner.fetchval(
        "SELECT ct.class_id FROM class_teachers ct JOIN enrollments e ON e.class_id = ct.class_id "
        "WHERE ct.teacher_id = $1 AND e.student_id = $2 ORDER BY ct.class_id LIMIT 1",
        teacher,
        student,
    )
    other = await owner.fetchval(
        "SELECT class_id FROM enrollments WHERE student_id = $1 AND class_id NOT IN "
        "(SELECT class_id FROM class_teachers WHERE teacher_id = $2) ORDER BY class_id LIMIT 1",
        student2,
        teacher,
    )
    riverside = await owner.fetchval(
        "SELECT class_id FROM class_teachers WHERE teacher_id = $1 ORDER BY class_id LIMIT 1", users[RIVERSIDE_TEACHER]
    )
    item = await owner.fetchval("SELECT id FROM items WHERE practice ORDER BY id LIMIT 1")
    return Facts(klass, other, riverside, item, student, student2)


@pytest.fixture(scope="module")
def live_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        extra={
            **settings.extra,
            "PLEDGEQL_LIVE_RECHECK_SECONDS": "1",
            "PLEDGEQL_LIVE_PER_CONNECTION": "3",
            "PLEDGEQL_LIVE_INIT_TIMEOUT_SECONDS": "1",
            "PLEDGEQL_LIVE_QUEUE": "20",
        },
    )


@pytest.fixture(scope="module")
def served(live_settings: Settings, db: DatabaseUrls) -> Iterator[tuple[str, Any]]:
    """The app served by uvicorn in a thread, on a free loopback port: (base URL, the app)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(live_settings, db)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        threading.Event().wait(0.05)
    if not server.started:
        server.should_exit = True
        raise RuntimeError("uvicorn did not start within 20 seconds")
    try:
        yield f"127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def address(served: tuple[str, Any]) -> str:
    return served[0]


def init_message(token: str, purpose: str) -> str:
    return orjson.dumps(
        {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}", "X-Purpose": purpose}}
    ).decode()


def subscribe_message(sid: str, query: str, klass: uuid.UUID | str) -> str:
    return orjson.dumps(
        {"type": "subscribe", "id": sid, "payload": {"query": query, "variables": {"classId": str(klass)}}}
    ).decode()


async def receive(ws: ClientConnection, timeout: float = 15.0) -> dict[str, Any]:
    """The next message other than a ping."""
    while True:
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] == "ping":
            await ws.send('{"type":"pong"}')
            continue
        return message


@pytest_asyncio.fixture
async def socket_for(address: str, token_for: Callable[..., str]) -> AsyncIterator[Callable[..., Any]]:
    """Open acknowledged graphql-transport-ws connections as a user under a purpose; closed after the test."""
    opened: list[ClientConnection] = []

    async def open_as(username: str, purpose: str, token: str | None = None) -> ClientConnection:
        ws = await connect(f"ws://{address}/graphql", subprotocols=[SUBPROTOCOL])  # type: ignore[list-item]
        opened.append(ws)
        await ws.send(init_message(token or token_for(username), purpose))
        ack = await receive(ws)
        assert ack == {"type": "connection_ack"}, ack
        return ws

    yield open_as
    for ws in opened:
        await ws.close()


async def submit(gql: Gql, facts: Facts, username: str = STUDENT, answer: str = "B") -> str:
    body = await gql(username, "STUDENT_LEARNING", SUBMIT, {"input": {"itemId": str(facts.item), "answer": answer}})
    assert "errors" not in body, body
    response_id: str = body["data"]["submitResponse"]["response"]["id"]
    return response_id


async def subscribed(ws: ClientConnection, sid: str, query: str, klass: uuid.UUID | str) -> None:
    """Subscribe, then give the server a moment to start listening before anything is written."""
    await ws.send(subscribe_message(sid, query, klass))
    await asyncio.sleep(0.5)


async def no_message(ws: ClientConnection, seconds: float = QUIET) -> None:
    try:
        message = await receive(ws, seconds)
    except TimeoutError:
        return
    raise AssertionError(f"expected nothing, got {message}")


async def test_a_teacher_subscribed_over_websocket_sees_a_submitted_response_with_the_fields_instruction_allows(
    socket_for: Callable[..., Any], gql: Gql, facts: Facts, owner: Any
) -> None:
    ws = await socket_for(TEACHER, "INSTRUCTION")
    await subscribed(ws, "1", LIVE, facts.klass)
    response_id = await submit(gql, facts)

    message = await receive(ws)
    assert message["type"] == "next" and message["id"] == "1", message
    assert "errors" not in message["payload"], message
    event = message["payload"]["data"]["classActivity"]
    assert event["kind"] == "ANSWER"
    assert event["student"]["id"] == str(facts.student)
    assert event["student"]["firstName"] and event["student"]["lastName"]
    assert event["response"]["id"] == response_id
    assert isinstance(event["response"]["correct"], bool)
    assert event["response"]["item"]["id"] == str(facts.item)

    # Audited as a query reading the same fields would be: one entry about the student, before it was sent.
    entries = await owner.fetch(
        "SELECT * FROM audit_entries WHERE operation_name = 'LiveClass' AND subject_student_id = $1", facts.student
    )
    assert len(entries) == 1, entries
    entry = entries[0]
    assert entry["decision"] == "ALLOW" and entry["purpose"] == "INSTRUCTION" and entry["actor_role"] == "TEACHER"
    assert set(entry["fields"]) == {
        "ClassActivity.kind",
        "ClassActivity.at",
        "Student.firstName",
        "Student.lastName",
        "Response.correct",
        "Response.score",
    }
    assert set(entry["categories"]) == {"USAGE", "DIRECTORY", "PERFORMANCE"}


async def test_a_practice_session_start_and_end_arrive_as_their_kinds(
    socket_for: Callable[..., Any], gql: Gql, facts: Facts
) -> None:
    ws = await socket_for(TEACHER, "INSTRUCTION")
    await subscribed(ws, "s", LIVE, facts.klass)
    now = dt.datetime.now(dt.UTC)
    events = [
        {"kind": "SESSION_START", "occurredAt": (now - dt.timedelta(seconds=30)).isoformat()},
        {"kind": "VIEW", "target": "/practice", "occurredAt": (now - dt.timedelta(seconds=20)).isoformat()},
        {"kind": "SESSION_END", "occurredAt": now.isoformat()},
    ]
    body = await gql(STUDENT, "STUDENT_LEARNING", RECORD, {"events": events})
    assert body["data"]["recordActivity"]["accepted"] == 3, body
    kinds = [(await receive(ws))["payload"]["data"]["classActivity"] for _ in range(2)]
    assert sorted(k["kind"] for k in kinds) == ["SESSION_END", "SESSION_START"]
    assert all(k["response"] is None and k["student"]["id"] == str(facts.student) for k in kinds)
    await no_message(ws)  # the VIEW is not class activity


async def test_under_reporting_the_same_event_arrives_with_answer_forbidden(
    socket_for: Callable[..., Any], gql: Gql, facts: Facts
) -> None:
    ws = await socket_for(TEACHER, "REPORTING")
    await subscribed(ws, "r", WITH_ANSWER, facts.klass)
    await submit(gql, facts)
    message = await receive(ws)
    assert message["type"] == "next", message
    payload = message["payload"]
    assert payload["extensions"] == {"purpose": "REPORTING"}
    event = payload["data"]["classActivity"]
    assert event["response"]["answer"] is None
    assert isinstance(event["response"]["correct"], bool)
    assert event["student"]["firstName"]
    assert event["kind"] is None  # USAGE is not part of REPORTING for a teacher
    forbidden = {tuple(e["path"]): e["extensions"] for e in payload["errors"]}
    assert forbidden[("classActivity", "response", "answer")]["code"] == "FORBIDDEN"
    assert forbidden[("classActivity", "response", "answer")]["category"] == "WORK"
    assert forbidden[("classActivity", "kind")]["category"] == "USAGE"


async def heard_only(ws: ClientConnection, sid: str, gql: Gql, facts: Facts, unheard: str, heard: str) -> Any:
    """``unheard`` submits and nothing comes; ``heard`` submits and its event comes: the event."""
    await submit(gql, facts, unheard)
    await no_message(ws)
    await submit(gql, facts, heard)
    message = await receive(ws)
    assert message["type"] == "next" and message["id"] == sid, message
    return message["payload"]["data"]["classActivity"]


async def test_a_student_of_another_class_produces_no_event(
    socket_for: Callable[..., Any], gql: Gql, facts: Facts
) -> None:
    ws = await socket_for(TEACHER, "INSTRUCTION")
    await subscribed(ws, "o", LIVE, facts.klass)
    event = await heard_only(ws, "o", gql, facts, STUDENT2, STUDENT)
    assert event["student"]["id"] == str(facts.student)


async def test_another_districts_class_fails_exactly_like_a_missing_one(
    socket_for: Callable[..., Any], facts: Facts
) -> None:
    ws = await socket_for(TEACHER, "INSTRUCTION")
    answers = []
    for sid, klass in (("a", facts.riverside_class), ("b", uuid.uuid4()), ("c", "not-an-id")):
        await ws.send(subscribe_message(sid, LIVE, klass))
        message = await receive(ws)
        assert message["type"] == "error" and message["id"] == sid, message
        answers.append(message["payload"])
    assert all(a == answers[0] for a in answers), answers
    assert answers[0][0]["extensions"] == {"code": "NOT_FOUND"}


READ_CLASS = "query($c: ID!) { class(id: $c) { id students { id } } }"
SHARED_STUDENT = (
    "SELECT u.username FROM enrollments e JOIN users u ON u.id = e.student_id "
    "WHERE e.class_id = $1 AND u.id = ANY($2::uuid[]) AND e.begin_date <= current_date "
    "AND (e.end_date IS NULL OR e.end_date >= current_date) ORDER BY u.username LIMIT 1"
)


async def test_a_colleague_s_class_is_subscribed_as_it_is_read_and_heard_only_about_the_teacher_s_students(
    socket_for: Callable[..., Any], gql: Gql, facts: Facts, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    """POLICY.md section 3: subscribing follows the same rows as reading the class. A
    class of the district the teacher does not teach is read (a class carries no
    personal data), with the students who are theirs too; so it is subscribed, and
    heard about those students alone."""
    read = await gql(TEACHER, "INSTRUCTION", READ_CLASS, {"c": str(facts.other_class)})
    assert read["data"]["class"]["id"] == str(facts.other_class), read
    reached = [uuid.UUID(s["id"]) for s in read["data"]["class"]["students"]]
    assert facts.student2 not in reached
    shared = await owner.fetchval(SHARED_STUDENT, facts.other_class, reached)
    assert shared in users, "the demo data has a student of the class who is one of the teacher's too"
    ws = await socket_for(TEACHER, "INSTRUCTION")
    await subscribed(ws, "c", LIVE, facts.other_class)
    event = await heard_only(ws, "c", gql, facts, STUDENT2, shared)
    assert event["student"]["id"] == str(users[shared])


async def test_a_teacher_taken_off_the_class_stops_hearing_about_its_students(
    socket_for: Callable[..., Any], gql: Gql, facts: Facts, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    ws = await socket_for(TEACHER, "INSTRUCTION")
    await subscribed(ws, "t", LIVE, facts.klass)
    row = await owner.fetchrow(
        "DELETE FROM class_teachers WHERE class_id = $1 AND teacher_id = $2 RETURNING *", facts.klass, users[TEACHER]
    )
    try:
        # The class is still read (as class(id:) reads it), its students are no longer the teacher's.
        read = await gql(TEACHER, "INSTRUCTION", READ_CLASS, {"c": str(facts.klass)})
        assert read["data"]["class"]["id"] == str(facts.klass) and str(facts.student) not in {
            s["id"] for s in read["data"]["class"]["students"]
        }, read
        await no_message(ws, 2.5)  # the standing is read again every second here: it does not end
        await submit(gql, facts)
        await no_message(ws)
    finally:
        await owner.execute(
            "INSERT INTO class_teachers SELECT * FROM json_populate_record(NULL::class_teachers, $1::json)",
            orjson.dumps(dict(row), default=str).decode(),
        )


async def test_a_disabled_teacher_is_ended_unauthenticated_at_the_next_event(
    socket_for: Callable[..., Any], gql: Gql, facts: Facts, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    ws = await socket_for(TEACHER, "INSTRUCTION")
    await subscribed(ws, "x", LIVE, facts.klass)
    await owner.execute("UPDATE users SET disabled = true WHERE id = $1", users[TEACHER])
    try:
        await submit(gql, facts)
        message = await receive(ws, 5.0)
        assert message["type"] == "error", message
        assert message["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    finally:
        await owner.execute("UPDATE users SET disabled = false WHERE id = $1", users[TEACHER])


async def test_a_district_that_stops_authorizing_the_purpose_ends_the_subscription_at_the_next_event(
    socket_for: Callable[..., Any], gql: Gql, facts: Facts, owner: Any
) -> None:
    ws = await socket_for(TEACHER, "INSTRUCTION")
    await subscribed(ws, "p", LIVE, facts.klass)
    district = await owner.fetchval("SELECT district_id FROM classes WHERE id = $1", facts.klass)
    before = await owner.fetchval("SELECT authorized_purposes FROM districts WHERE id = $1", district)
    await owner.execute(
        "UPDATE districts SET authorized_purposes = array_remove(authorized_purposes, 'INSTRUCTION') WHERE id = $1",
        district,
    )
    try:
        await submit(gql, facts)
        message = await receive(ws, 5.0)
    finally:
        await owner.execute("UPDATE districts SET authorized_purposes = $2 WHERE id = $1", district, before)
    assert message["type"] == "error", message
    assert message["payload"][0]["extensions"] == {
        "code": "FORBIDDEN",
        "purpose": "INSTRUCTION",
        "reason": "PURPOSE_NOT_AUTHORIZED_BY_DISTRICT",
    }


async def test_a_guardian_watching_the_class_hears_only_about_their_own_child(
    socket_for: Callable[..., Any], gql: Gql, facts: Facts, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    classmate = await owner.fetchval(
        "SELECT u.username FROM enrollments e JOIN users u ON u.id = e.student_id "
        "WHERE e.class_id = $1 AND e.student_id <> $2 ORDER BY u.username LIMIT 1",
        facts.klass,
        facts.student,
    )
    assert classmate in users
    ws = await socket_for("guardian1@northwind.example", "REPORTING")
    await subscribed(ws, "k", LIVE, facts.klass)
    event = await heard_only(ws, "k", gql, facts, classmate, STUDENT)
    assert event["student"]["id"] == str(facts.student) and event["student"]["firstName"]


async def test_an_expired_token_ends_the_subscription_with_unauthenticated(
    socket_for: Callable[..., Any], token_for: Callable[..., str], facts: Facts
) -> None:
    # Verified within the 30 s leeway, but a subscription ends at the token's own expiry.
    ws = await socket_for(TEACHER, "INSTRUCTION", token=token_for(TEACHER, ttl=2))
    await ws.send(subscribe_message("e", LIVE, facts.klass))
    message = await receive(ws, 6.0)
    assert message["type"] == "error" and message["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    with pytest.raises(ConnectionClosed) as closed:
        await receive(ws, 5.0)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_a_failed_audit_write_sends_nothing_and_ends_the_subscription(
    socket_for: Callable[..., Any], served: tuple[str, Any], gql: Gql, facts: Facts, owner: Any
) -> None:
    endpoint = served[1].state.pledgeql.endpoint
    working = endpoint.audit_writer

    async def failing(context: Any) -> None:
        raise OSError("the audit table is unreachable")

    ws = await socket_for(TEACHER, "INSTRUCTION")
    await subscribed(ws, "g", LIVE.replace("LiveClass", "LiveAuditFails"), facts.klass)
    endpoint.audit_writer = failing
    try:
        await submit(gql, facts)
        message = await receive(ws)
    finally:
        endpoint.audit_writer = working
    assert message == {
        "type": "error",
        "id": "g",
        "payload": [{"message": message["payload"][0]["message"], "extensions": {"code": "AUDIT_UNAVAILABLE"}}],
    }
    assert str(facts.student) not in orjson.dumps(message).decode()
    await submit(gql, facts)
    await no_message(ws)
    written = await owner.fetchval("SELECT count(*) FROM audit_entries WHERE operation_name = 'LiveAuditFails'")
    assert written == 0


async def test_a_burst_past_the_queue_ends_the_subscription_and_what_waited_is_never_audited(
    socket_for: Callable[..., Any], gql: Gql, facts: Facts, owner: Any
) -> None:
    ws = await socket_for(TEACHER, "INSTRUCTION")
    await subscribed(ws, "q", LIVE.replace("LiveClass", "LiveBurst"), facts.klass)
    response_id = await submit(gql, facts)
    await receive(ws)  # the submission's own event
    # 200 notifications of that response at once (each payload distinct, so none is folded), past the 20 queued.
    district = await owner.fetchval("SELECT district_id FROM classes WHERE id = $1", facts.klass)
    await owner.execute(
        "SELECT pg_notify($1, json_build_object('t', 'r', 'id', $2::uuid, 's', $3::uuid, 'c', ARRAY[$4::uuid], "
        "'n', n)::text) FROM generate_series(1, 200) AS n",
        "pledgeql_live_" + district.hex,
        uuid.UUID(response_id),
        facts.student,
        facts.klass,
    )
    delivered = 1
    while True:
        message = await receive(ws)
        if message["type"] != "next":
            break
        delivered += 1
    assert message["type"] == "error", message
    assert message["payload"][0]["extensions"] == {"code": "SLOW_CONSUMER", "limit": "subscriptionQueue", "value": 20}
    assert delivered < 200
    # Exactly the events sent were audited: none of those dropped from the queue.
    audited = await owner.fetchval("SELECT count(*) FROM audit_entries WHERE operation_name = 'LiveBurst'")
    assert audited == delivered


async def test_the_websocket_protocol_refuses_what_graphql_transport_ws_refuses(
    address: str, token_for: Callable[..., str], facts: Facts
) -> None:
    url = f"ws://{address}/graphql"
    async with connect(url) as ws:  # no subprotocol
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4406
    async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
        await ws.send(subscribe_message("1", LIVE, facts.klass))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    for token, purpose, code in (
        ("not-a-token", "INSTRUCTION", "UNAUTHENTICATED"),
        (token_for(TEACHER), "", "PURPOSE_REQUIRED"),
        (token_for(TEACHER), "ADVERTISING", "PURPOSE_UNKNOWN"),
        (token_for(TEACHER), "RECORD_ACCESS", "PURPOSE_NOT_ALLOWED"),
    ):
        async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
            await ws.send(init_message(token, purpose))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
            assert closed.value.rcvd.reason.startswith(code + ":"), closed.value.rcvd.reason
    async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()  # no connection_init within the (here 1 s) timeout
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
    # A binary frame, before connection_init or after the ack: the protocol's messages are JSON text.
    for acknowledged in (False, True):
        async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
            if acknowledged:
                await ws.send(init_message(token_for(TEACHER), "INSTRUCTION"))
                assert (await receive(ws))["type"] == "connection_ack"
            await ws.send(b"\x00")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400, closed.value


async def test_queries_oversized_documents_and_too_many_subscriptions_are_refused_per_subscription(
    socket_for: Callable[..., Any], facts: Facts
) -> None:
    ws = await socket_for(TEACHER, "INSTRUCTION")
    await ws.send(orjson.dumps({"type": "subscribe", "id": "q", "payload": {"query": "{ me { id } }"}}).decode())
    assert (await receive(ws))["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    nested = "classes { students { " * 6 + "id" + " } }" * 6
    deep = 'subscription { classActivity(classId: "x") { student { ' + nested + " } } }"
    await ws.send(orjson.dumps({"type": "subscribe", "id": "d", "payload": {"query": deep}}).decode())
    too_deep = await receive(ws)
    assert too_deep["payload"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX", too_deep
    for sid in ("1", "2", "3"):
        await ws.send(subscribe_message(sid, LIVE, facts.klass))
    await ws.send(subscribe_message("4", LIVE, facts.klass))
    refused = await receive(ws)
    assert refused["id"] == "4" and refused["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert refused["payload"][0]["extensions"]["limit"] == "subscriptionsPerConnection"


async def test_graphql_sse_delivers_the_event_and_refuses_a_request_without_a_token(
    address: str, token_for: Callable[..., str], gql: Gql, facts: Facts
) -> None:
    url = f"http://{address}/graphql"
    body = {"query": LIVE, "variables": {"classId": str(facts.klass)}}
    async with httpx.AsyncClient(timeout=15) as http:
        refused = await http.post(url, json=body, headers={"Accept": "text/event-stream"})
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        # Refusals keep API.md's status for an event-stream client too (never a 200 it would misread).
        for purpose, status, code in (("", 400, "PURPOSE_REQUIRED"), ("RECORD_ACCESS", 403, "PURPOSE_NOT_ALLOWED")):
            sent = {
                "Accept": "text/event-stream",
                "Authorization": f"Bearer {token_for(TEACHER)}",
                "X-Purpose": purpose,
            }
            refused = await http.post(url, json=body, headers=sent)
            assert refused.status_code == status
            assert refused.json()["errors"][0]["extensions"]["code"] == code
        headers = {
            "Accept": "text/event-stream",
            "Authorization": f"Bearer {token_for(TEACHER)}",
            "X-Purpose": "INSTRUCTION",
        }
        # A class not the caller's to watch: the stream's one result says so, and is not kept either.
        unknown = {"query": LIVE, "variables": {"classId": str(uuid.uuid4())}}
        refused = await http.post(url, json=unknown, headers=headers)
        assert refused.status_code == 200 and refused.headers["cache-control"] == "no-store"
        assert '"code":"NOT_FOUND"' in refused.text and "event: complete" in refused.text
        async with http.stream("POST", url, json=body, headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            await asyncio.sleep(0.5)
            response_id = await submit(gql, facts)
            lines = stream.aiter_lines()
            event = ""
            async with asyncio.timeout(15):
                async for line in lines:
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "next":
                        data = orjson.loads(line[6:])
                        assert data["data"]["classActivity"]["response"]["id"] == response_id
                        break


# ------------------------------------------------------------ the real clients

CLIENTS = Path(__file__).parent / "clients" / "live"


@pytest.fixture(scope="module")
def node_clients() -> Path:
    """tests/clients/live with its node_modules installed (npm install on first use)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(
            "node and npm are not installed, so the graphql-ws and graphql-sse clients cannot run (Node.js 18+)"
        )
    if not (CLIENTS / "node_modules" / "graphql-sse").is_dir():
        installed = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"],  # noqa: S607
            cwd=CLIENTS,
            capture_output=True,
            timeout=300,
            check=False,
        )
        if installed.returncode != 0:
            pytest.fail(f"npm install in {CLIENTS} failed: {installed.stderr.decode()[-500:]}")
    return CLIENTS


class NodeClient:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self, timeout: float = 20.0) -> dict[str, Any]:
        if self.process.stdout is None:
            raise RuntimeError("no stdout")
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            stderr = await self.process.stderr.read() if self.process.stderr else b""
            raise AssertionError(f"the node client exited: {stderr.decode()[-800:]}")
        parsed: dict[str, Any] = orjson.loads(raw)
        return parsed


@pytest_asyncio.fixture
async def node_client(node_clients: Path, address: str) -> AsyncIterator[Callable[..., Any]]:
    started: list[asyncio.subprocess.Process] = []

    async def start(transport: str, token: str, purpose: str, klass: uuid.UUID, query: str) -> NodeClient:
        url = f"{'ws' if transport == 'ws' else 'http'}://{address}/graphql"
        process = await asyncio.create_subprocess_exec(
            "node",
            str(node_clients / "live.mjs"),
            transport,
            url,
            token,
            purpose,
            str(klass),
            "1",
            query,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(process)
        return NodeClient(process)

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
        await process.wait()


@pytest.mark.parametrize("transport", ["ws", "sse"])
@pytest.mark.parametrize("purpose", ["INSTRUCTION", "REPORTING"])
async def test_the_real_client_receives_a_submitted_response_decided_by_purpose(
    node_client: Callable[..., Any],
    token_for: Callable[..., str],
    gql: Gql,
    facts: Facts,
    transport: str,
    purpose: str,
) -> None:
    client = await node_client(transport, token_for(TEACHER), purpose, facts.klass, WITH_ANSWER)
    assert await client.line() == {"ready": True}
    # Submit until the event arrives: the client subscribes asynchronously after it says it is ready.
    submitted: set[str] = set()
    message: dict[str, Any] = {}
    async with asyncio.timeout(30):
        while "next" not in message:
            submitted.add(await submit(gql, facts, answer="C"))
            with contextlib.suppress(TimeoutError):
                message = await client.line(0.7)
            assert "error" not in message, message
    result = message["next"]
    event = result["data"]["classActivity"]
    assert event["student"]["id"] == str(facts.student) and event["student"]["firstName"]
    assert event["response"]["id"] in submitted
    if purpose == "INSTRUCTION":
        assert event["response"]["answer"] == "C" and "errors" not in result
    else:
        assert event["response"]["answer"] is None
        assert {e["extensions"]["code"] for e in result["errors"]} == {"FORBIDDEN"}
        paths = sorted(e["path"] for e in result["errors"])
        assert paths == [["classActivity", "kind"], ["classActivity", "response", "answer"]]


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_the_real_client_is_refused_another_districts_class_like_a_missing_one(
    node_client: Callable[..., Any], token_for: Callable[..., str], facts: Facts, transport: str
) -> None:
    answers = []
    for klass in (facts.riverside_class, uuid.uuid4()):
        client = await node_client(transport, token_for(TEACHER), "INSTRUCTION", klass, LIVE)
        assert await client.line() == {"ready": True}
        message = await client.line()
        if "next" in message:  # graphql-sse: the errors as a result, then complete
            message = {"error": message["next"]["errors"]}
        answers.append(message)
    assert answers[0] == answers[1]
    assert answers[0]["error"][0]["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_the_real_client_reads_why_a_document_does_not_validate(
    node_client: Callable[..., Any], token_for: Callable[..., str], facts: Facts, transport: str
) -> None:
    """graphql-sse: "Validation steps that run before execution ... MUST report errors through an
    accepted SSE connection"; a 400 would reach the client as a bare status, its message lost."""
    wrong = "subscription Live($classId: ID!) { classActivity(classId: $classId) { nope } }"
    client = await node_client(transport, token_for(TEACHER), "INSTRUCTION", facts.klass, wrong)
    assert await client.line() == {"ready": True}
    message = await client.line()
    if transport == "sse":  # the errors as the stream's one result (then complete)
        assert message["next"]["extensions"] == {"purpose": "INSTRUCTION"}, message
        message = {"error": message["next"]["errors"]}
    errors = message["error"]
    assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"], message
    assert "Cannot query field 'nope' on type 'ClassActivity'" in errors[0]["message"]


async def init_refused(address: str, payload: dict[str, Any]) -> str:
    """A connection_init with this payload is refused: closed 4403; the close reason."""
    init = {"type": "connection_init", "payload": payload}
    async with connect(f"ws://{address}/graphql", subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
        await ws.send(orjson.dumps(init).decode())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403, closed.value
    return closed.value.rcvd.reason


async def test_a_justification_outside_legal_compliance_is_refused_at_subscribe_as_the_header_is_over_http(
    address: str, token_for: Callable[..., str], facts: Facts
) -> None:
    """A teacher cannot put "Court order" on a live view's audit entries through connection_init or SSE headers."""
    payload = {"Authorization": f"Bearer {token_for(TEACHER)}", "X-Purpose": "INSTRUCTION"}
    for text in ("Court order", "x" * 501):
        reason = await init_refused(address, {**payload, "X-Justification": text})
        assert reason.startswith("BAD_USER_INPUT:"), reason
    body = {"query": LIVE, "variables": {"classId": str(facts.klass)}}
    async with httpx.AsyncClient(timeout=15) as http:
        refused = await http.post(
            f"http://{address}/graphql",
            json=body,
            headers={"Accept": "text/event-stream", **payload, "X-Justification": "Court order"},
        )
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_two_x_purpose_headers_on_an_sse_subscription_are_bad_user_input(
    address: str, token_for: Callable[..., str], facts: Facts
) -> None:
    body = orjson.dumps({"query": LIVE, "variables": {"classId": str(facts.klass)}})
    headers = [
        ("Accept", "text/event-stream"),
        ("Content-Type", "application/json"),
        ("Authorization", f"Bearer {token_for(TEACHER)}"),
        ("X-Purpose", "INSTRUCTION"),
        ("X-Purpose", "REPORTING"),
    ]
    async with httpx.AsyncClient(timeout=15) as http:
        refused = await http.post(f"http://{address}/graphql", content=body, headers=headers)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    "purposes",
    [
        {"X-Purpose": "INSTRUCTION,REPORTING"},
        {"X-Purpose": "INSTRUCTION, REPORTING"},
        {"X-Purpose": "INSTRUCTION", "x-purpose": "REPORTING"},
        {"X-Purpose": ["INSTRUCTION"]},
    ],
)
async def test_a_list_or_two_x_purposes_in_connection_init_are_bad_user_input_as_over_http(
    address: str, token_for: Callable[..., str], purposes: dict[str, Any]
) -> None:
    reason = await init_refused(address, {"Authorization": f"Bearer {token_for(TEACHER)}", **purposes})
    assert reason.startswith("BAD_USER_INPUT:"), reason


async def test_a_subscriptions_client_request_id_follows_the_header_rules_and_reaches_every_events_entries(
    address: str, token_for: Callable[..., str], gql: Gql, facts: Facts, owner: Any
) -> None:
    url = f"http://{address}/graphql"
    body = {"query": LIVE, "variables": {"classId": str(facts.klass)}}
    sent = {"Accept": "text/event-stream", "Authorization": f"Bearer {token_for(TEACHER)}", "X-Purpose": "INSTRUCTION"}
    async with httpx.AsyncClient(timeout=15) as http:
        for bad in ("r" * 129, "a\tb"):
            refused = await http.post(url, json=body, headers={**sent, "X-Request-Id": bad})
            assert refused.status_code == 400
            assert refused.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        over_sse = f"sse-{uuid.uuid4().hex[:12]}"
        async with http.stream("POST", url, json=body, headers={**sent, "X-Request-Id": over_sse}) as stream:
            assert stream.status_code == 200
            server_id = stream.headers["x-request-id"]
            await asyncio.sleep(0.5)
            await submit(gql, facts)
            async with asyncio.timeout(15):
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        break
    # Over WebSocket the id travels in connection_init's payload, under the same rules.
    init = {"type": "connection_init", "payload": {"Authorization": sent["Authorization"], "X-Purpose": "INSTRUCTION"}}
    reason = await init_refused(address, {**init["payload"], "X-Request-Id": "r" * 129})
    assert reason.startswith("BAD_USER_INPUT:"), reason
    over_ws = f"ws-{uuid.uuid4().hex[:12]}"
    async with connect(f"ws://{address}/graphql", subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
        handshake_id = ws.response.headers["x-request-id"] if ws.response else None
        init["payload"]["X-Request-Id"] = over_ws
        await ws.send(orjson.dumps(init).decode())
        assert (await receive(ws))["type"] == "connection_ack"
        await subscribed(ws, "w", LIVE, facts.klass)
        await submit(gql, facts)
        assert (await receive(ws))["type"] == "next"
    for client_id in (over_sse, over_ws):
        rows = await owner.fetch(
            "SELECT operation_name, request_id FROM audit_entries WHERE client_request_id = $1", client_id
        )
        assert rows and all(r["operation_name"] == "LiveClass" for r in rows), (client_id, rows)
    # The SSE response's X-Request-Id is the audit's requestId of its events, each numbered after it.
    rows = await owner.fetch("SELECT request_id FROM audit_entries WHERE client_request_id = $1", over_sse)
    assert {r["request_id"].rsplit(".", 1)[0] for r in rows} == {server_id}, (server_id, rows)
    # The WebSocket handshake's X-Request-Id begins the audit's requestId of each subscription on it.
    rows = await owner.fetch("SELECT request_id FROM audit_entries WHERE client_request_id = $1", over_ws)
    assert {r["request_id"].rsplit(".", 1)[0] for r in rows} == {f"{handshake_id}-1"}, (handshake_id, rows)
