"""POST/GET /graphql: from an HTTP request to a GraphQL result, fail-closed.

Order of checks, cheapest and least trusting first: transport (method,
content type, body size, JSON shape; batches are refused), the caller's
identity (the bearer token, verified without the database) and its rate limit,
the production allow-list, the document (parse with the token limit, the
abuse limits, then full validation: all cached per document text), the
operation (GET mutations refused; page sizes from variables measured), the
purpose, the caller read from the database, the request-level policy
refusals; then execution inside one transaction whose settings carry the
request's districts for row-level security; then the audit, before the
response leaves.

Statuses: a client that accepts application/graphql-response+json gets the
API.md table's status for every error. A legacy application/json client gets
200 for GraphQL-level failures (document validation, variables, policy
refusals: the GraphQL-over-HTTP convention), and the real status for
failures of the transport, of authentication, of the abuse limits and of the
server (400 for malformed requests, 401, 405, 413, 415, 429, 503, 500, and
400 for QUERY_TOO_COMPLEX and OPERATION_NOT_ALLOWED).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import sqlalchemy.exc
from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableDefinitionNode,
    print_ast,
    specified_rules,
    validate,
)
from graphql import (
    execute as graphql_execute,
)
from graphql.error import GraphQLSyntaxError
from graphql.execution.values import VariableValues, get_variable_values
from starlette.requests import Request
from starlette.responses import Response

from permissions.admission import NIL_DISTRICT, admit
from permissions.decide import DecisionTable
from permissions.enums import Purpose, RequestRefusal, Role
from permissions.errors import STATUS, TRANSPORT_CODES, FieldError, RequestError
from permissions.policy import PolicySet
from resolvers.principal import load_conditions, load_principal, support_tickets
from resolvers.reads import Reads
from resolvers.scope import RowScope
from schema.compiled import CompiledReads, Plan, Planner
from server.auth import TokenClaims, TokenVerifier
from server.context import ClientInfo, PublicContext, RequestContext
from server.headers import HeaderError, client_request_id, justification_header, purpose_header
from server.limits import (
    Limits,
    Violation,
    canonical_hash,
    introspection_off_rule,
    limits_rule,
    measure_operation,
    parse_limited,
    sha256_hex,
    sized_by_variables,
    violations,
)
from server.operations import OperationRegistry
from server.ratelimit import RateLimiter, retry_after_header
from server.telemetry import Telemetry, operation_label

log = logging.getLogger("pledgeql.http")

GRAPHQL_RESPONSE = "application/graphql-response+json"
PUBLIC_ROOTS = frozenset({"policy", "policyVersions", "__typename", "__schema", "__type"})
# The methods /graphql serves; any other (HEAD included) is refused and runs nothing.
METHODS = ("GET", "POST")
# API.md: "printable" means no control characters (U+0000 to U+001F and U+007F).
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_CLIENT_HEADER = 128
SHA256 = re.compile(r"[0-9A-Fa-f]{64}")
# Texts learned under the hash they were sent with (development's Automatic Persisted Queries).
LEARNED_SIZE = 1000
# Codes whose status every client gets, beside the transport codes.
ALWAYS_STATUS = TRANSPORT_CODES | {"QUERY_TOO_COMPLEX", "OPERATION_NOT_ALLOWED"}

DIRECT_ACCESS_MESSAGE = (
    "Your school district has not turned on direct access to student records. "
    "Please contact your school district to see or correct your records."
)
REFUSAL_MESSAGES = {
    RequestRefusal.PURPOSE_NOT_ALLOWED: "This role or this token may not declare that purpose",
    RequestRefusal.JUSTIFICATION_REQUIRED: "LEGAL_COMPLIANCE needs an X-Justification header saying why",
    RequestRefusal.DIRECT_ACCESS_DISABLED: DIRECT_ACCESS_MESSAGE,
}
UNAVAILABLE_MESSAGE = "The database cannot be reached; try again shortly"
AUDIT_UNAVAILABLE_MESSAGE = "The audit trail cannot be written right now, so no data is returned; retry shortly"


class AuditUnavailable(Exception):
    """The audit entries of a request could not be written."""


class TransactionEnded(Exception):
    """A request's transaction ended without committing."""


class MalformedRequest(RequestError):
    """Not a GraphQL-over-HTTP request at all: 400 for every client."""

    def __init__(self, message: str) -> None:
        super().__init__("BAD_USER_INPUT", message)


class RateLimited(RequestError):
    def __init__(self, retry_after: float) -> None:
        super().__init__("RATE_LIMITED", "Too many requests; retry after the number of seconds in Retry-After")
        self.retry_after = retry_after


def _during(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``error`` was raised while handling (or because of) an error of ``kind``."""
    seen: BaseException | None = error
    for _ in range(10):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
    return False


def is_connection_error(error: BaseException | None) -> bool:
    """Whether ``error`` means the database cannot be reached (as opposed to a bug or a refusal)."""
    while error is not None:
        if isinstance(
            error,
            OSError
            | asyncio.TimeoutError
            | asyncpg.exceptions.PostgresConnectionError
            | asyncpg.exceptions.CannotConnectNowError
            | asyncpg.exceptions.AdminShutdownError
            | asyncpg.exceptions.CrashShutdownError
            | asyncpg.exceptions.TooManyConnectionsError
            | sqlalchemy.exc.TimeoutError,
        ):
            return True
        if isinstance(error, asyncpg.exceptions.InterfaceError) and "connection" in str(error).lower():
            return True
        if isinstance(error, asyncpg.exceptions.InternalClientError):
            # The protocol is in a state no statement can leave (for one, "cannot switch to
            # state 15; another operation (2) is in progress": the backend's FATAL arrived
            # while the connection sat idle): the connection is gone, whatever is_closed() says.
            return True
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return True
        error = error.__cause__ or getattr(error, "orig", None)
    return False


@dataclass(frozen=True)
class Prepared:
    document: DocumentNode
    errors: tuple[GraphQLError, ...]
    digest: str = ""
    variable_sizes: bool = False
    # Compiled plans by operation name (None: the operation takes the resolver path).
    plans: dict[str | None, Plan | None] = field(default_factory=dict)
    # The registry's generation it was allowed under (production): a reload checks it again.
    generation: int = 0


class DocumentCache:
    """Parsed and validated documents by their text: parse, measure and validate once.

    The rules (the abuse limits first, alone, so that an abusive document never
    reaches the costlier standard rules; then the standard rules) are built
    once, here, not per request.
    """

    def __init__(
        self,
        schema: GraphQLSchema,
        size: int = 512,
        *,
        limits: Limits | None = None,
        production: bool = False,
        registry: OperationRegistry | None = None,
    ) -> None:
        self.schema = schema
        self.size = size
        self.limits = limits or Limits()
        self.production = production
        # Production serves the registered operations only.
        self.registry = registry if production else None
        self.limit_rules: tuple[type[ASTValidationRule], ...] = (limits_rule(self.limits),)
        extra = (introspection_off_rule(),) if production else ()
        self.rules: tuple[type[ASTValidationRule], ...] = (*specified_rules, *extra)
        self._entries: OrderedDict[str, Prepared] = OrderedDict()

    def get(self, query: str) -> Prepared:
        entry = self._entries.get(query)
        generation = self.registry.generation if self.registry is not None else 0
        if entry is not None and entry.generation == generation:
            self._entries.move_to_end(query)
            return entry
        try:
            document = parse_limited(query, self.limits)
        except GraphQLSyntaxError as error:
            raise RequestError("BAD_USER_INPUT", f"The query does not parse: {error.message}") from None
        except GraphQLError as error:
            raise RequestError("QUERY_TOO_COMPLEX", error.message, **_limit_extensions(error)) from None
        digest = canonical_hash(document)
        if self.registry is not None and not self.registry.allows(query, document):
            # Not cached: unregistered documents must not push registered ones out.
            raise RequestError("OPERATION_NOT_ALLOWED", "This operation is not registered with the server")
        generation = self.registry.generation if self.registry is not None else 0
        errors = validate(self.schema, document, self.limit_rules, hide_suggestions=self.production)
        if not errors:
            errors = validate(self.schema, document, self.rules, hide_suggestions=self.production)
        variable_sizes = not errors and any(
            sized_by_variables(self.schema, document, d)
            for d in document.definitions
            if isinstance(d, OperationDefinitionNode)
        )
        entry = Prepared(document, tuple(errors), digest, variable_sizes, generation=generation)
        self._entries[query] = entry
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry


@dataclass
class GraphQLRequest:
    query: str
    operation_name: str | None
    variables: dict[str, Any] | None
    extensions: dict[str, Any] = field(default_factory=dict)


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


def server_timing(reply: Reply, total_seconds: float) -> str:
    """The Server-Timing header: the path that served the operation, and the
    durations of its SQL, its audit write and the whole request, in ms."""
    parts = [f'plan;desc="{reply.served}"'] if reply.served else []
    if reply.served:
        parts += [f"sql;dur={reply.sql_seconds * 1000:.2f}", f"audit;dur={reply.audit_seconds * 1000:.2f}"]
    parts.append(f"total;dur={total_seconds * 1000:.2f}")
    return ", ".join(parts)


def _limit_extensions(source: GraphQLError | Violation) -> dict[str, Any]:
    """A QUERY_TOO_COMPLEX error's limit, maximum and measure."""
    extensions = source.extensions() if isinstance(source, Violation) else dict(source.extensions or {})
    return {k: v for k, v in extensions.items() if k != "code"}


def persisted_hash(gql: GraphQLRequest) -> str | None:
    """The lower-case sha256 of ``extensions.persistedQuery``, or None when the request has none."""
    persisted = gql.extensions.get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, dict) or persisted.get("version", 1) != 1:
        raise MalformedRequest('\'extensions.persistedQuery\' must be {"version": 1, "sha256Hash": ...}')
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not SHA256.fullmatch(digest):
        raise MalformedRequest("'extensions.persistedQuery.sha256Hash' must be 64 hexadecimal digits")
    return digest.lower()


def _select_operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        if len(operations) != 1:
            raise RequestError("BAD_USER_INPUT", "Name the operation to run with 'operationName'")
        return operations[0]
    for operation in operations:
        if operation.name is not None and operation.name.value == name:
            return operation
    raise RequestError("BAD_USER_INPUT", "'operationName' names no operation of the document")


def root_fields(document: DocumentNode, operation: OperationDefinitionNode) -> set[str]:
    """The root fields an operation selects, through inline fragments and fragment
    spreads at any depth (a fragment on the root type hides no field)."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    names: set[str] = set()
    seen: set[str] = set()
    pending: list[SelectionSetNode] = [operation.selection_set]
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                names.add(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is None:
                    names.add(f"...{name}")  # an unknown fragment: never public
                elif name not in seen:
                    seen.add(name)
                    pending.append(fragment.selection_set)
    return names


def _wants_graphql_response(request: Request) -> bool:
    return GRAPHQL_RESPONSE in request.headers.get("accept", "")


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


def check_method(request: Request) -> None:
    if request.method not in METHODS:
        raise RequestError("METHOD_NOT_ALLOWED", "/graphql accepts GET (queries) and POST only")


def _respond(request: Request, reply: Reply, request_id: str) -> Response:
    media = GRAPHQL_RESPONSE if _wants_graphql_response(request) else "application/json"
    headers = {"x-request-id": request_id, "cache-control": "no-store", **reply.headers}
    return Response(orjson.dumps(reply.body), status_code=reply.status, media_type=media, headers=headers)


def client_header(request: Request, name: str) -> str | None:
    """An optional client header of API.md: at most 128 printable characters, once; empty counts as absent."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise MalformedRequest(f"Send the {name} header once")
    value = values[0].strip() if values else ""
    if not value:
        return None
    if len(value) > MAX_CLIENT_HEADER or CONTROL.search(value):
        raise MalformedRequest(f"The {name} header must be at most {MAX_CLIENT_HEADER} printable characters")
    return value


def with_purpose(request: Request, reply: Reply) -> None:
    """Every response to an authenticated request carries its declared purpose, for client caches to key on."""
    if not request.headers.get("authorization", "").strip():
        return
    declared = request.headers.get("x-purpose", "").strip()
    if declared in Purpose.__members__:
        extensions = reply.body.setdefault("extensions", {})
        if isinstance(extensions, dict):
            extensions["purpose"] = declared


def error_reply(request: Request, error: RequestError) -> Reply:
    status = STATUS.get(error.code, 400)
    legacy = not _wants_graphql_response(request)
    if legacy and error.code not in ALWAYS_STATUS and not isinstance(error, MalformedRequest | HeaderError):
        status = 200 if status < 500 else status
    headers = {"retry-after": retry_after_header(error.retry_after)} if isinstance(error, RateLimited) else {}
    if error.code == "METHOD_NOT_ALLOWED":
        headers["allow"] = ", ".join(METHODS)
    return Reply(error.body(), status, headers)


def error_response(request: Request, error: RequestError, request_id: str) -> Response:
    return _respond(request, error_reply(request, error), request_id)


def variable_error(error: GraphQLError, mask: bool) -> dict[str, Any]:
    """A variable coercion error; in production it names the variable and the type
    it expects, never the value that was sent."""
    node = error.nodes[0] if mask and error.nodes else None
    if not isinstance(node, VariableDefinitionNode):
        return format_error(error, mask)
    masked = GraphQLError(
        f"Variable '${node.variable.name.value}' got an invalid value; expected a value of type "
        f"'{print_ast(node.type)}'",
        nodes=error.nodes,
        extensions=error.extensions,
    )
    return format_error(masked, mask)


def _refusal_extensions(error: GraphQLError, original: FieldError) -> dict[str, Any]:
    """A field error's extensions; a FORBIDDEN that denied no category names the operation refused."""
    extensions = dict(original.extensions)
    if extensions.get("code") == "FORBIDDEN" and "category" not in extensions and "operation" not in extensions:
        node = error.nodes[0] if error.nodes else None
        if isinstance(node, FieldNode):
            extensions["operation"] = node.name.value
    return extensions


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


def _at_path(formatted: dict[str, Any], path: list[str | int]) -> dict[str, Any]:
    """A formatted error at ``path``, its keys in format_error's order."""
    out: dict[str, Any] = {"message": formatted["message"]}
    if "locations" in formatted:
        out["locations"] = formatted["locations"]
    out["path"] = path
    out["extensions"] = formatted["extensions"]
    return out


class GraphQLEndpoint:
    """Everything one /graphql request needs, built once per app."""

    def __init__(
        self,
        *,
        schema: GraphQLSchema,
        policies: PolicySet,
        verifier: TokenVerifier,
        acquire: Callable[[], Any],
        production: bool,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        audit_writer: Callable[[RequestContext], Awaitable[None]],
        trusted_proxy_header: str | None = None,
        limits: Limits | None = None,
        registry: OperationRegistry | None = None,
        rate_limiter: RateLimiter | None = None,
        telemetry: Telemetry | None = None,
        max_body_bytes: int = 256 * 1024,
        compiled: CompiledReads | None = None,
        server_timing: bool = False,
    ) -> None:
        self.trusted_proxy_header = trusted_proxy_header
        self.server_timing = server_timing
        self.schema = schema
        self.policies = policies
        self.verifier = verifier
        self.acquire = acquire
        self.production = production
        self.clock = clock
        self.audit_writer = audit_writer
        self.limits = limits or Limits()
        self.registry = registry
        self.learned: OrderedDict[str, str] = OrderedDict()
        self.rate_limiter = rate_limiter
        self.telemetry = telemetry or Telemetry()
        self.max_body_bytes = max_body_bytes
        self.documents = DocumentCache(schema, limits=self.limits, production=production, registry=registry)
        self.compiled = compiled
        self.planner = Planner(schema)

    # ------------------------------------------------------------ transport

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            raise RequestError("PAYLOAD_TOO_LARGE", f"The request body is over {self.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise RequestError("PAYLOAD_TOO_LARGE", f"The request body is over {self.max_body_bytes} bytes")
        return bytes(body)

    @staticmethod
    def _json_param(raw: str | None, name: str) -> Any:
        if not raw:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise MalformedRequest(f"'{name}' is not valid JSON") from None

    async def read_request(self, request: Request) -> GraphQLRequest:
        if request.method == "GET":
            params = request.query_params
            if len(str(request.url.query)) > self.max_body_bytes:
                raise RequestError("PAYLOAD_TOO_LARGE", f"The query string is over {self.max_body_bytes} bytes")
            payload: Any = {
                "query": params.get("query"),
                "operationName": params.get("operationName"),
                "variables": self._json_param(params.get("variables"), "variables"),
                "extensions": self._json_param(params.get("extensions"), "extensions"),
            }
        else:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                raise RequestError("UNSUPPORTED_MEDIA_TYPE", "Send the request as Content-Type: application/json")
            body = await self._body(request)
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

    def resolve_persisted(self, gql: GraphQLRequest) -> str:
        """The document's text: sent, or named by its sha256 (Automatic Persisted Queries)."""
        if self.registry is not None:
            self.registry.refresh()
        digest = persisted_hash(gql)
        if digest is None:
            if not gql.query.strip():
                raise MalformedRequest("The request has no 'query'")
            return gql.query
        if gql.query.strip():
            if sha256_hex(gql.query) != digest:
                raise MalformedRequest("'persistedQuery.sha256Hash' is not the sha256 of 'query'")
            return gql.query
        text = self.registry.text_for_hash(digest) if self.registry is not None else None
        if text is None and not self.production:
            text = self.learned.get(digest)
        if text is None:
            # The clients' persisted-query links retry with the text on this message or code.
            raise RequestError("PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")
        return text

    def remember_persisted(self, gql: GraphQLRequest, prepared: Prepared) -> None:
        """Serve a valid text sent with its hash under that hash from now on.

        In production only a registered text gets this far (the allow-list
        refused the others); in development any valid text does.
        """
        digest = persisted_hash(gql)
        if digest is None or not gql.query.strip() or prepared.errors:
            return
        if self.production and self.registry is not None:
            self.registry.learn(digest, gql.query)
            return
        self.learned[digest] = gql.query
        self.learned.move_to_end(digest)
        while len(self.learned) > LEARNED_SIZE:
            self.learned.popitem(last=False)

    @staticmethod
    def parse_purpose(raw: str | None) -> Purpose:
        if raw is None or not raw.strip():
            raise RequestError("PURPOSE_REQUIRED", "Declare why the data is used in the X-Purpose header")
        value = raw.strip()
        if value not in Purpose.__members__:
            raise RequestError("PURPOSE_UNKNOWN", "X-Purpose must be exactly one Purpose value of the schema")
        return Purpose(value)

    def client_info(self, request: Request) -> ClientInfo:
        return ClientInfo(
            ip_address=client_address(request, self.trusted_proxy_header),
            user_agent=request.headers.get("user-agent"),
            referrer=request.headers.get("referer"),
            idempotency_key=client_header(request, "Idempotency-Key"),
            session_id=client_header(request, "X-Session-Id"),
        )

    def _limit(self, key: str) -> None:
        if self.rate_limiter is None:
            return
        wait = self.rate_limiter.take(key)
        if wait > 0:
            raise RateLimited(wait)

    def identify(self, request: Request, client: ClientInfo) -> TokenClaims | None:
        """The verified token's claims (None without a token), charging the caller's rate limit.

        A caller is keyed by the token's subject once verified, and by its
        address without a token or with one that fails verification.
        """
        # An empty header counts as absent (GraphiQL starts with one).
        authorization = request.headers.get("authorization", "").strip() or None
        by_address = f"ip:{client.ip_address or 'unknown'}"
        if authorization is None:
            self._limit(by_address)
            return None
        try:
            claims = self.verifier.verify(authorization)
        except RequestError:
            self._limit(by_address)
            raise
        self._limit(f"sub:{claims.user_id}")
        return claims

    # ------------------------------------------------------------ execution

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = request_id_of(request)
        self.telemetry.activate()
        try:
            reply = await self._handle(request, request_id)
        except RequestError as error:
            reply = error_reply(request, error)
        except Exception as error:
            # Never a traceback and never a value: the type name is all that is logged.
            log.error("Unexpected error serving a request: %s", type(error).__name__)
            reply = error_reply(request, RequestError("INTERNAL", "Internal error"))
        if "errors" in reply.body:
            self.telemetry.record_errors(reply.body["errors"])
        with_purpose(request, reply)
        if self.server_timing:
            reply.headers["server-timing"] = server_timing(reply, time.perf_counter() - started)
        return _respond(request, reply, request_id)

    async def _handle(self, request: Request, request_id: str) -> Reply:
        check_method(request)
        client_id = client_request_id(request)
        gql = await self.read_request(request)
        client = self.client_info(request)
        claims = self.identify(request, client)
        query = self.resolve_persisted(gql)
        prepared = self.documents.get(query)
        self.remember_persisted(gql, prepared)
        if prepared.errors:
            body = {"errors": [format_error(e, self.production) for e in prepared.errors]}
            codes = {e["extensions"]["code"] for e in body["errors"]}
            status = 400 if _wants_graphql_response(request) or codes & ALWAYS_STATUS else 200
            return Reply(body, status)
        operation = _select_operation(prepared.document, gql.operation_name)
        if operation.operation is OperationType.SUBSCRIPTION:
            raise RequestError(
                "BAD_USER_INPUT",
                "Subscriptions are served over WebSocket (graphql-transport-ws) or Server-Sent Events (graphql-sse)",
            )
        if request.method == "GET" and operation.operation is not OperationType.QUERY:
            raise RequestError("METHOD_NOT_ALLOWED", "Mutations are accepted over POST only")
        variables = self.coerce_variables(prepared, operation, gql.variables)
        if isinstance(variables, list):
            return Reply({"errors": variables}, 400 if _wants_graphql_response(request) else 200)

        attributes = {
            "graphql.operation.name": operation_label(operation.name.value if operation.name else None),
            "graphql.operation.type": operation.operation.value,
            "graphql.document.sha256": prepared.digest,
        }
        with self.telemetry.span(f"graphql {operation.operation.value}", attributes) as span:
            if claims is None:
                if root_fields(prepared.document, operation) <= PUBLIC_ROOTS:
                    public = PublicContext(policies=self.policies.in_effect(self.clock().date()), request_id=request_id)
                    return await self._run(request, prepared, gql, public)
                raise RequestError("UNAUTHENTICATED", "Sign in: this request needs a bearer token")
            reply = await self._authenticated(
                request, (request_id, client_id), gql, prepared, operation, variables, claims, client
            )
            if span is not None:
                span.set_attribute("http.response.status_code", reply.status)
            return reply

    async def _authenticated(
        self,
        request: Request,
        ids: tuple[str, str | None],
        gql: GraphQLRequest,
        prepared: Prepared,
        operation: OperationDefinitionNode,
        variables: VariableValues | None,
        claims: TokenClaims,
        client: ClientInfo,
    ) -> Reply:
        request_id, client_id = ids
        purpose = self.parse_purpose(purpose_header(request))
        justification = justification_header(request, purpose)
        now = self.clock()

        context: RequestContext | None = None
        committed = False
        plan = self._plan(prepared, operation)
        try:
            connection = self.acquire()
            async with connection as raw:  # in its transaction (server.app.driver_connection)
                db = self.telemetry.database(raw)
                try:
                    # A compiled statement is planned once, generically, not again for each
                    # request's values (which cost as much as running it).
                    context = await self.admit(
                        db,
                        claims,
                        purpose,
                        justification,
                        now,
                        request_id=request_id,
                        client_request_id=client_id,
                        operation_name=gql.operation_name or (operation.name.value if operation.name else None),
                        client=client,
                        read_only=operation.operation is OperationType.QUERY,
                        generic_plans=plan is not None,
                    )
                    reply = await self._compiled(plan, variables, context)
                    if reply is None:
                        reply = await self._run(request, prepared, gql, context)
                        reply.served = "resolvers"
                    else:
                        reply.served = "compiled"
                    reply.sql_seconds = db.seconds
                    # Fail closed: the response leaves only once its audit entries are
                    # written, in this transaction or (a query's, under load) in the
                    # transaction of the query leading its group, once that has
                    # committed; if they cannot be, nothing is returned.
                    entries = len(context.audit)
                    started = asyncio.get_running_loop().time()
                    try:
                        with self.telemetry.span("audit write", {"pledgeql.audit.entries": entries}):
                            await self.audit_writer(context)
                    except Exception as error:
                        log.error("Audit write failed: %s", type(error).__name__)
                        raise AuditUnavailable from None
                    reply.audit_seconds = asyncio.get_running_loop().time() - started
                    self.telemetry.record_audit(entries, reply.audit_seconds)
                finally:
                    # Nothing touches this connection once it goes back to the pool, not even a
                    # resolver task still running after its field was cancelled (a DataLoader batch):
                    # wait for the statement in flight, then refuse every later one.
                    await db.close()
            committed = True
            return reply
        except AuditUnavailable:
            raise RequestError("AUDIT_UNAVAILABLE", AUDIT_UNAVAILABLE_MESSAGE) from None
        except RequestError:
            raise
        except Exception as error:
            if _during(error, AuditUnavailable):
                # Ending the transaction failed too (the database went away while
                # the request was failing for want of its audit).
                raise RequestError("AUDIT_UNAVAILABLE", AUDIT_UNAVAILABLE_MESSAGE) from None
            if not is_connection_error(error):
                raise
            log.warning("Database unreachable: %s", type(error).__name__)
            raise RequestError("DATABASE_UNAVAILABLE", UNAVAILABLE_MESSAGE) from None
        finally:
            if context is not None:
                # Queries whose audit entries this transaction wrote wait for it to end.
                outcome = None if committed else TransactionEnded()
                for callback in context.after_commit:
                    callback(outcome)

    def coerce_variables(
        self, prepared: Prepared, operation: OperationDefinitionNode, raw: dict[str, Any] | None
    ) -> VariableValues | list[dict[str, Any]] | None:
        """The operation's variables coerced against their types (None when it declares none),
        or the formatted errors (values masked in production); page sizes that come from
        variables are measured with these values (QUERY_TOO_COMPLEX raised)."""
        if not operation.variable_definitions:
            return None
        coerced = get_variable_values(
            self.schema,
            operation.variable_definitions,
            raw or {},
            max_errors=20,
            hide_suggestions=self.production,
        )
        if isinstance(coerced, list):
            return [variable_error(e, self.production) for e in coerced]
        if prepared.variable_sizes:
            measure = measure_operation(self.schema, prepared.document, operation, self.limits, coerced.coerced)
            for violation in violations(measure, self.limits):
                raise RequestError("QUERY_TOO_COMPLEX", violation.message, **_limit_extensions(violation))
        return coerced

    async def admit(
        self,
        db: Any,
        claims: TokenClaims,
        purpose: Purpose,
        justification: str | None,
        now: dt.datetime,
        *,
        request_id: str,
        operation_name: str | None,
        client: ClientInfo,
        read_only: bool,
        generic_plans: bool = False,
        client_request_id: str | None = None,
    ) -> RequestContext:
        """The caller read from the database and admitted under ``purpose``: the context its reads run in.

        Raises the refusal (UNAUTHENTICATED for an unknown or disabled user,
        PURPOSE_NOT_ALLOWED, JUSTIFICATION_REQUIRED, DIRECT_ACCESS_DISABLED).
        Every transport admits through here: a request over HTTP, and each
        event of a subscription (server/subscriptions.py)."""
        token_purposes = frozenset(Purpose(p) for p in claims.purposes if p in Purpose.__members__)
        standing = await load_principal(
            db, claims.user_id, token_purposes, now, NIL_DISTRICT, generic_plans=generic_plans
        )
        if standing is None:
            raise RequestError("UNAUTHENTICATED", "Sign in again: this account is unknown or disabled")
        principal = standing.principal
        if principal.district_id is not None:
            conditions = {str(principal.district_id): standing.home} if standing.home else {}
        elif principal.role is Role.SUPPORT:
            conditions = await load_conditions(db, list(principal.granted_district_ids))
        else:
            # Internal analysts read aggregates across districts: every
            # district's settings decide whether it takes part.
            conditions = await load_conditions(db, None)
        # No version applies before its effective date: decide with today's.
        policies = self.policies.in_effect(now.date())
        admission = admit(policies, principal, purpose, token_purposes, justification, conditions)
        if isinstance(admission, RequestRefusal):
            raise RequestError(admission.value, REFUSAL_MESSAGES[admission])
        rule = admission.rule
        scope = RowScope(
            principal=principal,
            students_scope=rule.student_scope,
            staff_scope=rule.staff_scope,
            guardians_scope=rule.guardian_scope,
            today=now.date(),
        )
        settable = ",".join(map(str, admission.rls_districts))
        if settable != standing.district_ids:  # set with the principal for district users
            await db.execute("SELECT set_config('pledgeql.district_ids', $1, true)", settable)
        # SUPPORT's justification is its grants' tickets in each district, never client text.
        tickets = await support_tickets(db, now) if principal.role is Role.SUPPORT else {}
        return RequestContext(
            principal=principal,
            purpose=purpose,
            rule=rule,
            policies=policies,
            decisions=DecisionTable(policies, principal.role, purpose, admission.relationships, conditions),
            conditions=conditions,
            reads=Reads(db, scope),
            db=db,
            request_id=request_id,
            now=now,
            justification=None if principal.role is Role.SUPPORT else justification,
            justifications=tickets,
            client_request_id=client_request_id,
            operation_name=operation_name,
            client=client,
            read_only=read_only,
            rls_key=settable,
        )

    def _plan(self, prepared: Prepared, operation: OperationDefinitionNode) -> Plan | None:
        """The operation's compiled plan (made once per document), or None for the resolver path."""
        if self.compiled is None:
            return None
        name = operation.name.value if operation.name else None
        plans = prepared.plans
        if name in plans:
            return plans[name]
        plan = plans[name] = self.planner.plan(prepared.document, operation)
        return plan

    async def _compiled(
        self, plan: Plan | None, variables: VariableValues | None, context: RequestContext
    ) -> Reply | None:
        """The reply from the operation's compiled plan, or None for the resolver path."""
        if plan is None or self.compiled is None:
            return None
        # The plan as a string attribute: spans carry no other non-string values than counts and statuses.
        with self.telemetry.span(f"resolve Query.{plan.root.name.split('.')[-1]}", {"pledgeql.plan": "compiled"}):
            compiled = await self.compiled.run(plan, context, variables)
        if compiled is None:
            return None
        # The data is JSON already (orjson.Fragment): the response carries it as it is.
        if compiled.errors:
            # Each field's error formatted once, as the resolver path formats it; each occurrence its path.
            formatted: dict[int, dict[str, Any]] = {}
            errors = []
            for error, path in compiled.errors:
                shared = formatted.get(id(error))
                if shared is None:
                    shared = formatted[id(error)] = format_error(error, self.production)
                errors.append(_at_path(shared, path))
            return Reply({"errors": errors, "data": compiled.data}, 200)
        return Reply({"data": compiled.data}, 200)

    async def _run(self, request: Request, prepared: Prepared, gql: GraphQLRequest, context: Any) -> Reply:
        result = graphql_execute(
            self.schema,
            prepared.document,
            context_value=context,
            variable_values=gql.variables,
            operation_name=gql.operation_name,
            hide_suggestions=self.production,
        )
        if hasattr(result, "__await__"):
            result = await result
        body: dict[str, Any] = {}
        if result.errors:
            if any(is_connection_error(e.original_error) for e in result.errors):
                # A statement failed because the database went away: no partial data.
                raise RequestError("DATABASE_UNAVAILABLE", UNAVAILABLE_MESSAGE)
            body["errors"] = [format_error(e, self.production) for e in result.errors]
        body["data"] = result.data
        status = 200
        if result.data is None and _wants_graphql_response(request):
            codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
            status = 400 if codes <= {"BAD_USER_INPUT"} else 200
        return Reply(body, status)
