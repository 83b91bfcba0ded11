"""What /graphql answers: GraphQL errors formatted for clients, the status, the response.

Statuses: a client that accepts application/graphql-response+json gets the
API.md table's status for every error. A legacy application/json client gets
200 for GraphQL-level failures (document validation, variables, policy
refusals: the GraphQL-over-HTTP convention), and the real status for
failures of the transport, of authentication, of the abuse limits and of the
server (400 for malformed requests, 401, 405, 413, 415, 429, 503, 500, and
400 for QUERY_TOO_COMPLEX and OPERATION_NOT_ALLOWED).

A resolver's unexpected error is logged by its type name only and answered
INTERNAL; in production its message names no type either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import FieldNode, GraphQLError
from starlette.requests import Request
from starlette.responses import Response

from permissions.enums import Purpose
from permissions.errors import STATUS, TRANSPORT_CODES, FieldError, RequestError
from server.headers import HeaderError
from server.http_request import METHODS, MalformedRequest, RateLimited
from server.ratelimit import retry_after_header

log = logging.getLogger("pledgeql.http")

GRAPHQL_RESPONSE = "application/graphql-response+json"
# Codes whose status every client gets, beside the transport codes: the abuse limits, the
# allow-list, and the header errors (API.md: "Header errors answer 400 whatever the Accept
# header"), a missing or unknown X-Purpose and LEGAL_COMPLIANCE without X-Justification
# among them, as well as the header rules' own refusals (``HeaderError``).
HEADER_CODES = frozenset({"PURPOSE_REQUIRED", "PURPOSE_UNKNOWN", "JUSTIFICATION_REQUIRED"})
ALWAYS_STATUS = TRANSPORT_CODES | HEADER_CODES | {"QUERY_TOO_COMPLEX", "OPERATION_NOT_ALLOWED"}


@dataclass
class Reply:
    body: dict[str, Any]
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    # How the operation was served (Server-Timing): "compiled" or "resolvers",
    # and the seconds spent in its SQL and in its audit write.
    served: str | None = None
    sql_seconds: float = 0.0
    audit_seconds: float = 0.0


def wants_graphql_response(request: Request) -> bool:
    return GRAPHQL_RESPONSE in request.headers.get("accept", "")


# ------------------------------------------------------------ errors


def format_error(error: GraphQLError, mask: bool) -> dict[str, Any]:
    original = error.original_error
    out: dict[str, Any] = {"message": error.message}
    if error.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path:
        out["path"] = list(error.path)
    if isinstance(original, FieldError):
        out["extensions"] = _refusal_extensions(error, original)
    elif original is None or isinstance(original, GraphQLError):
        # A GraphQL-level error: validation, limits or variable coercion.
        extensions = dict(error.extensions or {})
        out["extensions"] = {**extensions, "code": extensions.get("code") or "BAD_USER_INPUT"}
    else:
        log.error("Unexpected error in a resolver: %s", type(original).__name__)
        out["message"] = "Internal error" if mask else f"Internal error: {type(original).__name__}"
        out["extensions"] = {"code": "INTERNAL"}
    return out


def _refusal_extensions(error: GraphQLError, original: FieldError) -> dict[str, Any]:
    """A field error's extensions; a FORBIDDEN that denied no category names the operation refused."""
    extensions = dict(original.extensions)
    if extensions.get("code") == "FORBIDDEN" and "category" not in extensions and "operation" not in extensions:
        node = error.nodes[0] if error.nodes else None
        if isinstance(node, FieldNode):
            extensions["operation"] = node.name.value
    return extensions


def at_path(formatted: dict[str, Any], path: list[str | int]) -> dict[str, Any]:
    """A formatted error at ``path``, its keys in format_error's order."""
    out: dict[str, Any] = {"message": formatted["message"]}
    if "locations" in formatted:
        out["locations"] = formatted["locations"]
    out["path"] = path
    out["extensions"] = formatted["extensions"]
    return out


def error_reply(request: Request, error: RequestError) -> Reply:
    status = STATUS.get(error.code, 400)
    legacy = not wants_graphql_response(request)
    if legacy and error.code not in ALWAYS_STATUS and not isinstance(error, MalformedRequest | HeaderError):
        status = 200 if status < 500 else status
    headers = {"retry-after": retry_after_header(error.retry_after)} if isinstance(error, RateLimited) else {}
    if error.code == "METHOD_NOT_ALLOWED":
        headers["allow"] = ", ".join(METHODS)
    return Reply(error.body(), status, headers)


# ------------------------------------------------------------ the response


def with_purpose(request: Request, reply: Reply) -> None:
    """Every response to an authenticated request carries its declared purpose, for client caches to key on."""
    if not request.headers.get("authorization", "").strip():
        return
    declared = request.headers.get("x-purpose", "").strip()
    if declared in Purpose.__members__:
        extensions = reply.body.setdefault("extensions", {})
        if isinstance(extensions, dict):
            extensions["purpose"] = declared


def server_timing(reply: Reply, total_seconds: float) -> str:
    """The Server-Timing header: the path that served the operation, and the
    durations of its SQL, its audit write and the whole request, in ms."""
    parts = [f'plan;desc="{reply.served}"'] if reply.served else []
    if reply.served:
        parts += [f"sql;dur={reply.sql_seconds * 1000:.2f}", f"audit;dur={reply.audit_seconds * 1000:.2f}"]
    parts.append(f"total;dur={total_seconds * 1000:.2f}")
    return ", ".join(parts)


def respond(request: Request, reply: Reply, request_id: str) -> Response:
    media = GRAPHQL_RESPONSE if wants_graphql_response(request) else "application/json"
    headers = {"x-request-id": request_id, "cache-control": "no-store", **reply.headers}
    return Response(orjson.dumps(reply.body), status_code=reply.status, media_type=media, headers=headers)
