"""Subscriptions over Server-Sent Events: the ``graphql-sse`` protocol, distinct connections mode.

What the ``graphql-sse`` client does by default: one ``POST /graphql`` per
subscription with ``Accept: text/event-stream`` and the usual JSON body,
``Authorization`` and ``X-Purpose`` as request headers, checked as for any
request. A refusal of the request itself (its headers, its token, its purpose,
a rate limit, an unavailable database) is an ordinary GraphQL-over-HTTP error
response (JSON, with its status). What is wrong with the document (it does not
validate, is too complex or not allowed, its variables do not coerce) and a
class that is not the caller's to watch are answered in an accepted stream, as
the protocol requires of every step before execution: a ``next`` carrying the
errors, then ``complete``. Otherwise each event is ``event: next`` with the
execution result as data, and the stream ends with ``event: complete`` (after
a ``next`` carrying the errors when the subscription ended with one). Every
result carries the declared purpose in ``extensions.purpose``. A comment line
keeps an idle stream open through proxies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from permissions.errors import STATUS, RequestError
from server.headers import authorization_header, client_request_id, purpose_header, single_header
from server.http_request import RateLimited, request_id_of
from server.ratelimit import retry_after_header
from server.subscriptions import Caller, LiveService, OperationErrors, error_payload

log = logging.getLogger("pledgeql.live.sse")

COMPLETE = b"event: complete\ndata:\n\n"
# Refusals of the document and of the subscription itself, once the request's headers and token
# passed: sent in the stream, as a result (graphql-sse: validation errors MUST be ``next`` events).
IN_STREAM = frozenset({"NOT_FOUND", "FORBIDDEN", "BAD_USER_INPUT", "QUERY_TOO_COMPLEX", "OPERATION_NOT_ALLOWED"})


def wants_event_stream(request: Request) -> bool:
    return request.method == "POST" and "text/event-stream" in request.headers.get("accept", "")


def _next(body: dict[str, Any]) -> bytes:
    return b"event: next\ndata: " + orjson.dumps(body) + b"\n\n"


def _refused_in_stream(errors: list[dict[str, Any]], caller: Caller, request_id: str) -> Response:
    """The errors as the stream's one result, then its end."""
    body = {"errors": errors, "extensions": {"purpose": caller.purpose.value}}
    return Response(
        _next(body) + COMPLETE,
        media_type="text/event-stream",
        headers={"x-request-id": request_id, "cache-control": "no-store"},
    )


async def serve_sse(service: LiveService, request: Request) -> Response:
    endpoint = service.endpoint
    request_id = request_id_of(request)
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1)

    async def deliver(body: dict[str, Any]) -> None:
        await outbox.put(body)  # waits while the client reads slowly

    caller: Caller | None = None
    try:
        gql = await endpoint.read_request(request)
        client = endpoint.client_info(request)
        caller = service.caller(
            authorization_header(request),
            purpose_header(request),
            single_header(request, "x-justification", "X-Justification"),
            client,
            client_request_id(request),
        )
        subscription = await service.start(caller, gql, deliver, request_id)
    except OperationErrors as errors:
        if caller is None:  # raised by start only, once the caller is known
            raise
        return _refused_in_stream(errors.errors, caller, request_id)
    except RequestError as error:
        if caller is not None and error.code in IN_STREAM:
            # The request passed its headers and token: the document or the class is refused, as a result.
            return _refused_in_stream(error_payload(error), caller, request_id)
        # The status API.md gives the code, whatever the Accept header: an event-stream client
        # (which accepts no JSON type at all) must not read a refusal as a 200.
        headers = {"x-request-id": request_id, "cache-control": "no-store"}
        if isinstance(error, RateLimited):
            headers["retry-after"] = retry_after_header(error.retry_after)
        return Response(
            orjson.dumps(error.body()),
            status_code=STATUS.get(error.code, 400),
            media_type="application/json",
            headers=headers,
        )

    purpose = caller.purpose.value

    async def produce() -> None:
        try:
            ended = await subscription.run()
        except Exception as error:
            log.error("Unexpected error in a subscription: %s", type(error).__name__)
            ended = RequestError("INTERNAL", "Internal error")
        await outbox.put({"ended": ended})

    async def stream() -> AsyncIterator[bytes]:
        runner = asyncio.create_task(produce())
        try:
            while True:
                try:
                    item = await asyncio.wait_for(outbox.get(), service.limits.ping_seconds)
                except TimeoutError:
                    yield b":\n\n"
                    continue
                if "ended" not in item:
                    yield _next(item)
                    continue
                ended = item["ended"]
                if ended is not None:
                    yield _next({"errors": error_payload(ended), "extensions": {"purpose": purpose}})
                elif service.closing:
                    return  # no complete: the client reconnects and subscribes again
                yield COMPLETE
                return
        finally:
            runner.cancel()
            with contextlib.suppress(BaseException):
                await runner

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={
            "x-request-id": request_id,
            "cache-control": "no-store",
            "connection": "keep-alive",
            "x-accel-buffering": "no",
        },
    )
