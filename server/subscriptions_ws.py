"""Subscriptions over WebSocket at /graphql: the ``graphql-transport-ws`` protocol.

The protocol of the ``graphql-ws`` library (which Apollo Client and urql
use). ``connection_init`` carries ``Authorization`` and ``X-Purpose`` (and
``X-Justification``) in its payload; they are checked as for any request,
and the caller is admitted once before ``connection_ack``. Each ``subscribe``
is then validated (abuse limits and, in production, the allow-list included)
and admitted again. Close codes are the protocol's: 4400 a malformed
message, 4401 subscribe before ack, 4403 a refused connection_init (its
reason names the code, e.g. ``UNAUTHENTICATED``), 4406 another subprotocol,
4408 no connection_init in time, 4409 a subscription id in use, 4429 a second
connection_init, 4499 a client that stopped answering pings; uvicorn closes
open sockets with 1012 (service restart) when the server shuts down, and the
clients reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from permissions.errors import RequestError
from server.context import ClientInfo
from server.headers import HeaderError, checked_client_request_id, one_purpose
from server.http_request import GraphQLRequest, MalformedRequest
from server.subscriptions import Caller, LiveService, LiveSubscription, OperationErrors, error_payload

log = logging.getLogger("pledgeql.live.ws")

SUBPROTOCOL = "graphql-transport-ws"
MAX_MESSAGE_BYTES = 256 * 1024


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _header(payload: dict[str, Any], name: str) -> str | None:
    """A header from connection_init's payload, its name in any case: sent once,
    as a string (under two spellings of its name, or as a list, it is refused
    as a header sent twice is)."""
    values = [value for key, value in payload.items() if isinstance(key, str) and key.lower() == name]
    if len(values) > 1 or (values and isinstance(values[0], list)):
        raise HeaderError(f"{name.title()} may be sent once, with one value")
    return values[0] if values and isinstance(values[0], str) else None


def _client(websocket: WebSocket) -> ClientInfo:
    return ClientInfo(
        ip_address=websocket.client.host if websocket.client else None,
        user_agent=websocket.headers.get("user-agent"),
    )


class Connection:
    """One socket: its caller, its subscriptions by id, one writer at a time."""

    def __init__(self, service: LiveService, websocket: WebSocket) -> None:
        self.service = service
        self.websocket = websocket
        self.caller: Caller | None = None
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # The handshake's X-Request-Id (server.app.RequestIdMiddleware): the n-th subscription's
        # events are audited as requests <id>-<n>.<event>.
        self.request_id: str = websocket.scope.get("state", {}).get("request_id") or uuid.uuid4().hex
        self.subscribed = 0
        self.last_heard = time.monotonic()
        self._send_lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.websocket.send_text(orjson.dumps(message).decode())

    async def serve(self) -> None:
        limits = self.service.limits
        keepalive = asyncio.create_task(self._keepalive())
        try:
            try:
                first = await asyncio.wait_for(self._receive(), limits.init_timeout_seconds)
            except TimeoutError:
                raise Closed(4408, "Connection initialisation timeout") from None
            await self._init(first)
            while True:
                await self._handle(await self._receive())
        except Closed as closed:
            with contextlib.suppress(Exception):
                await self.websocket.close(closed.code, closed.reason[:120])
        except WebSocketDisconnect:
            pass
        finally:
            keepalive.cancel()
            for task in list(self.tasks.values()):
                task.cancel()
            await asyncio.gather(keepalive, *self.tasks.values(), return_exceptions=True)

    async def _receive(self) -> dict[str, Any]:
        received = await self.websocket.receive()
        if received["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(received.get("code", 1000), received.get("reason"))
        self.last_heard = time.monotonic()
        text = received.get("text")
        if not isinstance(text, str):  # a binary frame: the protocol's messages are JSON text
            raise Closed(4400, "Invalid message received: messages are JSON text, not binary")
        if len(text) > MAX_MESSAGE_BYTES:
            raise Closed(4400, f"Messages are at most {MAX_MESSAGE_BYTES} bytes")
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise Closed(4400, "Invalid message received: not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise Closed(4400, "Invalid message received: no type")
        return message

    async def _init(self, message: dict[str, Any]) -> None:
        if message["type"] != "connection_init":
            if message["type"] == "subscribe":
                raise Closed(4401, "Unauthorized")
            raise Closed(4400, "Invalid message received: expected connection_init")
        payload = message.get("payload") or {}
        if not isinstance(payload, dict):
            raise Closed(4400, "Invalid message received: connection_init payload must be an object")
        client = _client(self.websocket)
        try:
            caller = self.service.caller(
                _header(payload, "authorization"),
                one_purpose(_header(payload, "x-purpose")),
                _header(payload, "x-justification"),
                client,
                checked_client_request_id(_header(payload, "x-request-id")),
            )
            await self.service.check_connection(caller)
        except RequestError as error:
            raise Closed(4403, f"{error.code}: {error.message}") from None
        self.caller = caller
        await self.send({"type": "connection_ack"})

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "pong":
            return
        elif kind == "connection_init":
            raise Closed(4429, "Too many initialisation requests")
        elif kind == "subscribe":
            await self._subscribe(message)
        elif kind == "complete":
            task = self.tasks.pop(str(message.get("id")), None)
            if task is not None:
                task.cancel()
        else:
            raise Closed(4400, f"Invalid message received: unknown type {kind[:40]!r}")

    async def _subscribe(self, message: dict[str, Any]) -> None:
        sid = message.get("id")
        payload = message.get("payload")
        if not isinstance(sid, str) or not sid or not isinstance(payload, dict):
            raise Closed(4400, "Invalid message received: subscribe needs an id and a payload")
        if sid in self.tasks:
            raise Closed(4409, f"Subscriber for {sid[:64]} already exists")
        if len(self.tasks) >= self.service.limits.per_connection:
            limit = self.service.limits.per_connection
            error = RequestError(
                "RATE_LIMITED",
                f"At most {limit} subscriptions per connection: complete one first",
                limit="subscriptionsPerConnection",
                value=limit,
            )
            await self.send({"type": "error", "id": sid, "payload": error_payload(error)})
            return
        self.tasks[sid] = asyncio.create_task(self._run(sid, payload))

    async def _run(self, sid: str, payload: dict[str, Any]) -> None:
        if self.caller is None:
            raise RuntimeError("subscribe before connection_init was handled")
        try:
            self.service.charge(self.caller)
            gql = _request(payload)

            async def deliver(body: dict[str, Any]) -> None:
                await self.send({"type": "next", "id": sid, "payload": body})

            self.subscribed += 1
            request_id = f"{self.request_id}-{self.subscribed}"
            subscription: LiveSubscription = await self.service.start(self.caller, gql, deliver, request_id)
            ended = await subscription.run()
        except OperationErrors as errors:
            await self._finish(sid, {"type": "error", "id": sid, "payload": errors.errors})
            return
        except RequestError as error:
            await self._finish(sid, {"type": "error", "id": sid, "payload": error_payload(error)})
            return
        except asyncio.CancelledError:
            raise
        except (WebSocketDisconnect, WebSocketDisconnected, OSError):
            self.tasks.pop(sid, None)  # the client is gone: nothing to tell it
            return
        except Exception as error:
            log.error("Unexpected error in a subscription: %s", type(error).__name__)
            failure = RequestError("INTERNAL", "Internal error")
            await self._finish(sid, {"type": "error", "id": sid, "payload": error_payload(failure)})
            return
        if ended is None:
            if self.service.closing:
                # Shutting down: no complete (the client would not subscribe again); the socket closes
                # with 1012, on which graphql-ws reconnects and resubscribes.
                self.tasks.pop(sid, None)
                with contextlib.suppress(Exception):
                    await self.websocket.close(1012, "Service restart")
                return
            await self._finish(sid, {"type": "complete", "id": sid})
        else:
            await self._finish(sid, {"type": "error", "id": sid, "payload": error_payload(ended)})
            if ended.code == "UNAUTHENTICATED":
                # The connection's token is no good any more: the client connects again with a new one.
                with contextlib.suppress(Exception):
                    await self.websocket.close(4403, f"UNAUTHENTICATED: {ended.message}"[:120])

    async def _finish(self, sid: str, message: dict[str, Any]) -> None:
        self.tasks.pop(sid, None)
        with contextlib.suppress(Exception):
            await self.send(message)

    async def _keepalive(self) -> None:
        """Ping an idle client; one that has not answered by the next ping is gone."""
        interval = self.service.limits.ping_seconds
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_heard > 2 * interval:
                with contextlib.suppress(Exception):
                    await self.websocket.close(4499, "Terminated: no pong")
                return
            if time.monotonic() - self.last_heard >= interval:
                with contextlib.suppress(Exception):
                    await self.send({"type": "ping"})


def _request(payload: dict[str, Any]) -> GraphQLRequest:
    """A subscribe payload as a GraphQL request, shaped as over HTTP."""
    query = payload.get("query")
    operation_name = payload.get("operationName")
    variables = payload.get("variables")
    extensions = payload.get("extensions")
    if query is not None and not isinstance(query, str):
        raise MalformedRequest("'query' must be a string")
    if operation_name is not None and not isinstance(operation_name, str):
        raise MalformedRequest("'operationName' must be a string")
    if variables is not None and not isinstance(variables, dict):
        raise MalformedRequest("'variables' must be a JSON object")
    if extensions is not None and not isinstance(extensions, dict):
        raise MalformedRequest("'extensions' must be a JSON object")
    return GraphQLRequest(query or "", operation_name, variables, extensions or {})


async def serve_websocket(service: LiveService | None, websocket: WebSocket) -> None:
    """The /graphql WebSocket route."""
    offered = websocket.scope.get("subprotocols") or []
    if SUBPROTOCOL not in offered:
        await websocket.accept()
        await websocket.close(4406, "Subprotocol not acceptable: use graphql-transport-ws")
        return
    await websocket.accept(subprotocol=SUBPROTOCOL)
    if service is None or service.closing:
        await websocket.close(1012, "Service restart")
        return
    await Connection(service, websocket).serve()
