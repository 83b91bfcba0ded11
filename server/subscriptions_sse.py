"""Subscriptions over Server-Sent Events: the ``graphql-sse`` protocol, distinct connections mode.

What the ``graphql-sse`` client does by default: one ``POST /graphql`` per
subscription with ``Accept: text/event-stream`` and the usual JSON body,
``Authorization`` and ``X-Purpose`` as request headers, checked as for any
request. A refusal before the stream starts is an ordinary GraphQL-over-HTTP
error response (JSON, with its status); after that, each event is ``event:
next`` with the execution result as data, and the stream ends with ``event:
complete`` (after a ``next`` carrying the errors when the subscription ended
with one). A comment line keeps an idle stream open through proxies.
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
from server.subscriptions import LiveService, OperationErrors, error_payload

log = logging.getLogger("pledgeql.live.sse")

COMPLETE = b"event: complete\ndata:\n\n"
# Refusals of the subscription itself, once the request is admitted: sent in the stream, as a result.
IN_STREAM = frozenset({"NOT_FOUND", "FORBIDDEN"})


def wants_event_stream(request: Request) -> bool:
    return request.method == "POST" and "text/event-stream" in request.headers.get("accept", "")


def _next(body: dict[str, Any]) -> bytes:
    return b"event: next\ndata: " + orjson.dumps(body) + b"\n\n"


async def serve_sse(service: LiveService, request: Request) -> Response:
    endpoint = service.endpoint
    request_id = request_id_of(request)
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1)

    async def deliver(body: dict[str, Any]) -> None:
        await outbox.put(body)  # waits while the client reads slowly

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
        return Response(
            orjson.dumps({"errors": errors.errors}),
            status_code=400,
            media_type="application/json",
            headers={"x-request-id": request_id, "cache-control": "no-store"},
        )
    except RequestError as error:
        if error.code not in IN_STREAM:
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
        # The request was admitted but the class is not the caller's to watch: a result, as graphql-sse sends one.
        refusal = _next({"errors": error_payload(error)}) + COMPLETE
        return Response(
            refusal, media_type="text/event-stream", headers={"x-request-id": request_id, "cache-control": "no-store"}
        )

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
                    yield _next({"errors": error_payload(ended)})
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
