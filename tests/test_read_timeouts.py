"""Read timeouts and the connection cap (server/read_guard.py), on a live uvicorn.

A connection that sends nothing, headers a byte at a time (slowloris) or a
body that never ends is closed once its limit passes; a connection beyond the
cap is closed at once; ordinary requests are served meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest_asyncio
import uvicorn

from server.read_guard import GuardedHttpToolsProtocol, guarded_protocol

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
MAX_CONNECTIONS = 20


@pytest_asyncio.fixture(scope="module")
async def port(app: Any) -> AsyncIterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free: int = probe.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free,
        lifespan="off",  # the app fixture runs its lifespan
        log_level="warning",
        http=guarded_protocol(HEADER_TIMEOUT, BODY_TIMEOUT, MAX_CONNECTIONS),
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.025)
    assert server.started
    yield free
    server.should_exit = True
    await asyncio.wait_for(serving, timeout=15)


async def _until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[bytes, float]:
    """What the server sent before closing, and after how many seconds it closed."""
    began = time.monotonic()
    received = b""
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(4096), timeout=max(0.1, limit - (time.monotonic() - began)))
        except ConnectionResetError:
            break
        except TimeoutError:
            raise AssertionError(f"the connection was still open after {limit} s") from None
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - began


async def test_a_silent_connection_gets_408_and_is_closed_after_the_header_timeout(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received, took = await _until_closed(reader, HEADER_TIMEOUT + 5)
    writer.close()
    assert received.startswith(b"HTTP/1.1 408 ")
    assert took >= HEADER_TIMEOUT * 0.8
    # Like every response: the server's request id, and the error with its code.
    head, _, body = received.partition(b"\r\n\r\n")
    assert re.search(rb"\r\nx-request-id: [0-9a-f]{32}\r\n", head)
    assert orjson.loads(body)["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_slowloris_headers_sent_a_byte_at_a_time_are_cut_off_by_the_header_timeout(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    request = b"GET /healthz HTTP/1.1\r\nHost: pledgeql.test\r\n" + b"X-Padding: " + b"a" * 200

    async def trickle() -> None:
        for byte in request:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    dripping = asyncio.create_task(trickle())
    try:
        received, _ = await _until_closed(reader, HEADER_TIMEOUT + 5)
    finally:
        dripping.cancel()
        writer.close()
    took = time.monotonic() - began
    assert received.startswith(b"HTTP/1.1 408 ")
    assert took < HEADER_TIMEOUT + 4  # kept busy, but not kept open


async def test_a_body_that_never_ends_is_closed_after_the_body_timeout_without_a_response(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: pledgeql.test\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"query": "'
    )
    await writer.drain()
    received, took = await _until_closed(reader, BODY_TIMEOUT + 5)
    writer.close()
    assert received == b""
    assert took >= BODY_TIMEOUT * 0.8


async def test_at_the_cap_a_new_connection_takes_the_place_of_the_oldest_one_still_waiting_for_headers(
    port: int,
) -> None:
    """A client holding every slot with connections that never send their headers (slowloris)
    locks no one else out: each new connection closes the oldest of them and is served."""
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
    try:
        await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for _ in range(3):
                assert (await client.get("/healthz")).status_code == 200
        # The oldest held connections were closed to make room, the newest are still open.
        closed, _ = await _until_closed(held[0][0], 1.0)
        assert closed == b""
        assert not held[-1][1].is_closing() and not held[-1][0].at_eof()
    finally:
        for _, w in held:
            w.close()


async def test_at_the_cap_with_every_connection_in_a_request_a_new_one_is_closed_at_once(port: int) -> None:
    """Connections whose requests are under way (headers read, a body awaited) are not taken over."""
    busy = []
    for _ in range(MAX_CONNECTIONS):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: pledgeql.test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        busy.append((reader, writer))
    try:
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        received, took = await _until_closed(reader, 1.0)
        writer.close()
        assert received == b"" and took < 1.0
    finally:
        for _, w in busy:
            w.close()
    # The busy ones gone, requests are served again; and a kept-alive connection serves several.
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(3):
            assert (await client.get("/healthz")).status_code == 200


async def test_headers_past_64_kib_get_431_as_json_and_the_connection_is_closed(port: int) -> None:
    """Nothing else bounds what the parser keeps of headers that never end until the header timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: pledgeql.test\r\nAuthorization: Bearer ")
    for _ in range(20):  # 20 x 8 KiB of a header that never ends
        if writer.is_closing():
            break
        writer.write(b"a" * 8192)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    received, _ = await _until_closed(reader, HEADER_TIMEOUT / 2)
    writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), received[:200]
    assert re.search(rb"\r\nx-request-id: [0-9a-f]{32}\r\n", head)
    assert orjson.loads(body)["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT"}
    # Headers under the limit are served as always, also on a kept-alive connection.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        for _ in range(2):
            assert (await client.get("/healthz", headers={"X-Padding": "a" * 32_000})).status_code == 200


async def test_ordinary_requests_are_served_while_slow_connections_wait_for_their_timeouts(port: int) -> None:
    slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(5):
                assert (await client.get("/healthz")).status_code == 200
                await asyncio.sleep(0.3)  # across the header timeout of the slow ones
    finally:
        for _, w in slow:
            w.close()


def test_the_settings_give_the_documented_defaults_and_read_the_environment(monkeypatch: Any) -> None:
    from server.settings import Settings

    defaults = Settings()
    assert (defaults.header_timeout, defaults.body_timeout, defaults.max_connections) == (10.0, 30.0, 1000)
    monkeypatch.setenv("PLEDGEQL_HEADER_TIMEOUT", "2.5")
    monkeypatch.setenv("PLEDGEQL_BODY_TIMEOUT", "7")
    monkeypatch.setenv("PLEDGEQL_MAX_CONNECTIONS", "50")
    read = Settings.from_env()
    assert (read.header_timeout, read.body_timeout, read.max_connections) == (2.5, 7.0, 50)
    monkeypatch.setattr(GuardedHttpToolsProtocol, "header_timeout", None)
    GuardedHttpToolsProtocol.configure_from_settings()
    assert GuardedHttpToolsProtocol.header_timeout == 2.5
    assert GuardedHttpToolsProtocol.body_timeout == 7.0
    assert GuardedHttpToolsProtocol.max_connections == 50


async def test_a_header_with_a_control_character_is_bad_user_input_as_json_with_a_request_id(port: int) -> None:
    """The HTTP parser refuses it before the app sees it; the answer still has the API's error shape."""
    for header in (b"X-Request-Id: a\x01b", b"X-Purpose: INSTRUCTION\x7f", b"X-Justification: a\x00b"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: pledgeql.test\r\nContent-Type: application/json\r\n"
            + header
            + b"\r\nContent-Length: 2\r\n\r\n{}"
        )
        await writer.drain()
        received, _ = await _until_closed(reader, 5)
        writer.close()
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        assert lines[0] == "HTTP/1.1 400 Bad Request", received
        assert headers["content-type"] == "application/json" and len(headers["x-request-id"]) == 32
        assert orjson.loads(body)["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT"}
