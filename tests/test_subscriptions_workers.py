"""Subscriptions under ``pledgeql serve --workers 2``: events cross workers; SIGTERM closes with protocol codes."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.auth import mint_token
from server.db import DatabaseUrls
from server.settings import Settings
from server.workers import spreads_connections
from tests.test_workers import _server_inodes, _sockets_of, serve

pytestmark = pytest.mark.skipif(not spreads_connections(), reason="SO_REUSEPORT spreads connections on Linux only")

SECRET = "workers-test-secret-of-enough-length-0123456789"  # what tests.test_workers.serve configures
SUBSCRIBERS = 12
LIVE = "subscription W($c: ID!) { classActivity(classId: $c) { kind student { id } response { id } } }"
SUBMIT = "mutation S($input: SubmitResponseInput!) { submitResponse(input: $input) { response { id } } }"


async def next_message(ws: ClientConnection, timeout: float = 15.0) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] != "ping":
            return message


async def test_an_event_written_through_one_worker_reaches_subscribers_on_both_and_sigterm_closes_them(
    db: DatabaseUrls, tmp_path: Path, settings: Settings, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    signing = dataclasses.replace(settings, jwt_secret=SECRET)
    teacher = mint_token(signing, users["teacher1@northwind.example"], ["INSTRUCTION"], 600)
    student = mint_token(signing, users["student1@northwind.example"], ["STUDENT_LEARNING"], 600)
    klass = await owner.fetchval(
        "SELECT ct.class_id FROM class_teachers ct JOIN enrollments e ON e.class_id = ct.class_id "
        "WHERE ct.teacher_id = $1 AND e.student_id = $2 ORDER BY ct.class_id LIMIT 1",
        users["teacher1@northwind.example"],
        users["student1@northwind.example"],
    )
    item = await owner.fetchval("SELECT id FROM items WHERE practice ORDER BY id LIMIT 1")

    with serve(db, tmp_path, workers=2) as serving:
        workers = await asyncio.to_thread(serving.wait_until_listening, 2)
        url = f"ws://127.0.0.1:{serving.port}/graphql"
        sockets: list[ClientConnection] = []
        for n in range(SUBSCRIBERS):
            ws = await connect(url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
            sockets.append(ws)
            init = {"Authorization": f"Bearer {teacher}", "X-Purpose": "INSTRUCTION"}
            await ws.send(orjson.dumps({"type": "connection_init", "payload": init}).decode())
            assert (await next_message(ws))["type"] == "connection_ack"
            payload = {"query": LIVE, "variables": {"c": str(klass)}}
            await ws.send(orjson.dumps({"type": "subscribe", "id": str(n), "payload": payload}).decode())
        client_ports = {ws.local_address[1] for ws in sockets}
        held = _server_inodes(serving.port, client_ports)
        per_worker = {pid: len(held & _sockets_of(pid)) for pid in workers}
        # Hashed over two sockets, all 12 land on one with a chance of 1 in 2,048.
        assert all(count > 0 for count in per_worker.values()), per_worker
        await asyncio.sleep(1.0)

        headers = {"Authorization": f"Bearer {student}", "X-Purpose": "STUDENT_LEARNING"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{serving.port}", timeout=15) as http:
            body = (
                await http.post(
                    "/graphql",
                    json={"query": SUBMIT, "variables": {"input": {"itemId": str(item), "answer": "A"}}},
                    headers=headers,
                )
            ).json()
            response_id = body["data"]["submitResponse"]["response"]["id"]
            # Every subscriber, on either worker, gets the event (so one of them crossed from the other worker).
            for ws in sockets:
                message = await next_message(ws)
                assert message["type"] == "next", message
                assert message["payload"]["data"]["classActivity"]["response"]["id"] == response_id

            sse_headers = {**headers, "Authorization": f"Bearer {teacher}", "X-Purpose": "INSTRUCTION"}
            sse_headers["Accept"] = "text/event-stream"
            sse_body = {"query": LIVE, "variables": {"c": str(klass)}}
            async with http.stream("POST", "/graphql", json=sse_body, headers=sse_headers) as stream:
                assert stream.status_code == 200
                await asyncio.sleep(0.5)
                began = time.monotonic()
                serving.process.send_signal(signal.SIGTERM)
                # The stream ends at once, without `complete` (the client reconnects), not at the 20 s timeout.
                text = b""
                try:
                    async with asyncio.timeout(10):
                        async for chunk in stream.aiter_bytes():
                            text += chunk
                except TimeoutError:
                    raise AssertionError(f"the stream did not end: {text!r}\n{serving.output()[-3000:]}") from None
                assert b"event: complete" not in text

        for ws in sockets:
            with pytest.raises(ConnectionClosed) as closed:
                await next_message(ws, 10.0)
            assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1012), closed.value.rcvd
        assert await asyncio.to_thread(serving.process.wait, 15) == 0, serving.output()
        assert time.monotonic() - began < 10
