"""Transport: a GraphQL request read from HTTP, and who sent it.

The method, the content type, the body's size and its JSON shape are checked
before anything else is read (batches are refused); the client's optional
headers are checked as API.md's header table says. Nothing here touches the
document or the database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request

from permissions.errors import RequestError, is_printable
from server.context import ClientInfo

# The methods /graphql serves; any other (HEAD included) is refused and runs nothing.
METHODS = ("GET", "POST")
MAX_CLIENT_HEADER = 128


class MalformedRequest(RequestError):
    """Not a GraphQL-over-HTTP request at all: 400 for every client."""

    def __init__(self, message: str) -> None:
        super().__init__("BAD_USER_INPUT", message)


class RateLimited(RequestError):
    def __init__(self, retry_after: float) -> None:
        super().__init__("RATE_LIMITED", "Too many requests; retry after the number of seconds in Retry-After")
        self.retry_after = retry_after


@dataclass
class GraphQLRequest:
    query: str
    operation_name: str | None
    variables: dict[str, Any] | None
    extensions: dict[str, Any] = field(default_factory=dict)


def check_method(request: Request) -> None:
    if request.method not in METHODS:
        raise RequestError("METHOD_NOT_ALLOWED", "/graphql accepts GET (queries) and POST only")


async def read_graphql_request(request: Request, max_body_bytes: int) -> GraphQLRequest:
    """The GraphQL request of a GET's query string or a POST's JSON body, its shape checked."""
    if request.method == "GET":
        params = request.query_params
        if len(str(request.url.query)) > max_body_bytes:
            raise RequestError("PAYLOAD_TOO_LARGE", f"The query string is over {max_body_bytes} bytes")
        payload: Any = {
            "query": params.get("query"),
            "operationName": params.get("operationName"),
            "variables": _json_param(params.get("variables"), "variables"),
            "extensions": _json_param(params.get("extensions"), "extensions"),
        }
    else:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise RequestError("UNSUPPORTED_MEDIA_TYPE", "Send the request as Content-Type: application/json")
        body = await _body(request, max_body_bytes)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MalformedRequest("The request body is not valid JSON") from None
    if isinstance(payload, list):
        # Batching is off: one operation, one transaction, one audit per request.
        raise RequestError(
            "QUERY_TOO_COMPLEX",
            "Batched requests are not accepted (the limit (batch) is 0): send one operation per request",
            limit="batch",
            maximum=0,
            measured=len(payload),
        )
    if not isinstance(payload, dict):
        raise MalformedRequest("The request body must be a JSON object with a 'query'")
    extensions = payload.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise MalformedRequest("'extensions' must be a JSON object")
    query = payload.get("query")
    if query is not None and not isinstance(query, str):
        raise MalformedRequest("'query' must be a string")
    operation_name = payload.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise MalformedRequest("'operationName' must be a string")
    variables = payload.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise MalformedRequest("'variables' must be a JSON object")
    return GraphQLRequest(query or "", operation_name, variables, extensions or {})


async def _body(request: Request, max_body_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
        raise RequestError("PAYLOAD_TOO_LARGE", f"The request body is over {max_body_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body_bytes:
            raise RequestError("PAYLOAD_TOO_LARGE", f"The request body is over {max_body_bytes} bytes")
    return bytes(body)


def _json_param(raw: str | None, name: str) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedRequest(f"'{name}' is not valid JSON") from None


def request_id_of(request: Request) -> str:
    """The request's id: always the server's own (the one the middleware made, else a new one).

    The client's X-Request-Id is kept apart, as the audit's clientRequestId."""
    settled = getattr(request.state, "request_id", None)
    if isinstance(settled, str):
        return settled
    return uuid.uuid4().hex


def client_address(request: Request, trusted_proxy_header: str | None) -> str | None:
    """The client's address: the trusted proxy's header when configured and set, else the peer's."""
    ip = request.client.host if request.client else None
    if trusted_proxy_header:
        forwarded = request.headers.get(trusted_proxy_header)
        if forwarded:
            ip = forwarded.split(",")[0].strip() or ip
    return ip


def client_header(request: Request, name: str) -> str | None:
    """An optional client header of API.md: at most 128 printable characters, once; empty counts as absent."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise MalformedRequest(f"Send the {name} header once")
    value = values[0].strip() if values else ""
    if not value:
        return None
    if len(value) > MAX_CLIENT_HEADER or not is_printable(value):
        raise MalformedRequest(f"The {name} header must be at most {MAX_CLIENT_HEADER} printable characters")
    return value


def client_info_of(request: Request, trusted_proxy_header: str | None) -> ClientInfo:
    """Where the request came from (for device sessions, never for decisions), its client headers checked."""
    return ClientInfo(
        ip_address=client_address(request, trusted_proxy_header),
        user_agent=request.headers.get("user-agent"),
        referrer=request.headers.get("referer"),
        idempotency_key=client_header(request, "Idempotency-Key"),
        session_id=client_header(request, "X-Session-Id"),
    )
