"""POST/GET /graphql: from an HTTP request to a GraphQL result, fail-closed.

Order of checks: transport (method, content type, size, JSON), the document
(parse, validate: both cached), the token, the purpose, the caller read from
the database, the request-level policy refusals; then execution inside one
transaction whose settings carry the request's districts for row-level
security; then the audit, before the response leaves.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    parse,
    validate,
)
from graphql import (
    execute as graphql_execute,
)
from graphql.error import GraphQLSyntaxError
from starlette.requests import Request
from starlette.responses import Response

from permissions.decide import DecisionTable, DistrictConditions, Relationship, check_request
from permissions.enums import Purpose, RequestRefusal, Role
from permissions.policy import PolicySet
from permissions.principal import Principal
from resolvers.db import Db
from resolvers.principal import load_conditions, load_principal
from resolvers.reads import Reads
from resolvers.scope import RowScope
from server.auth import TokenVerifier
from server.context import ClientInfo, PublicContext, RequestContext
from server.errors import STATUS, TRANSPORT_CODES, FieldError, RequestError

log = logging.getLogger("pledgeql.http")

GRAPHQL_RESPONSE = "application/graphql-response+json"
PUBLIC_ROOTS = frozenset({"policy", "policyVersions", "__typename", "__schema", "__type"})
NIL = uuid.UUID(int=0)

DIRECT_ACCESS_MESSAGE = (
    "Your school district has not turned on direct access to student records. "
    "Please contact your school district to see or correct your records."
)
REFUSAL_MESSAGES = {
    RequestRefusal.PURPOSE_NOT_ALLOWED: "This role or this token may not declare that purpose",
    RequestRefusal.JUSTIFICATION_REQUIRED: "LEGAL_COMPLIANCE needs an X-Justification header saying why",
    RequestRefusal.DIRECT_ACCESS_DISABLED: DIRECT_ACCESS_MESSAGE,
}


class AuditUnavailable(Exception):
    """The audit entries of a request could not be written."""


@dataclass(frozen=True)
class Prepared:
    document: DocumentNode
    errors: tuple[GraphQLError, ...]


class DocumentCache:
    """Parsed and validated documents by their text: parse and validate once."""

    def __init__(self, schema: GraphQLSchema, size: int = 512) -> None:
        self.schema = schema
        self.size = size
        self._entries: OrderedDict[str, Prepared] = OrderedDict()

    def get(self, query: str) -> Prepared:
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
            return entry
        try:
            document = parse(query)
        except GraphQLSyntaxError as error:
            raise RequestError("BAD_USER_INPUT", f"The query does not parse: {error.message}") from None
        errors = tuple(validate(self.schema, document))
        entry = Prepared(document, errors)
        self._entries[query] = entry
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry


@dataclass
class GraphQLRequest:
    query: str
    operation_name: str | None
    variables: dict[str, Any] | None


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


def _root_fields(operation: OperationDefinitionNode) -> set[str]:
    return {s.name.value for s in operation.selection_set.selections if hasattr(s, "name")}


def _wants_graphql_response(request: Request) -> bool:
    return GRAPHQL_RESPONSE in request.headers.get("accept", "")


def _respond(request: Request, body: dict[str, Any], status: int, request_id: str) -> Response:
    media = GRAPHQL_RESPONSE if _wants_graphql_response(request) else "application/json"
    return Response(orjson.dumps(body), status_code=status, media_type=media, headers={"x-request-id": request_id})


def error_response(request: Request, error: RequestError, request_id: str) -> Response:
    status = STATUS.get(error.code, 400)
    if not _wants_graphql_response(request) and error.code not in TRANSPORT_CODES:
        status = 200 if status < 500 else status
    return _respond(request, error.body(), status, request_id)


def format_error(error: GraphQLError, mask: bool) -> dict[str, Any]:
    original = error.original_error
    out: dict[str, Any] = {"message": error.message}
    if error.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path:
        out["path"] = list(error.path)
    if isinstance(original, FieldError):
        out["extensions"] = dict(original.extensions)
    elif original is None:
        # A GraphQL-level error: validation or variable coercion.
        out["extensions"] = {"code": "BAD_USER_INPUT"}
    else:
        log.error("Unexpected error in a resolver: %s", type(original).__name__)
        out["message"] = "Internal error" if mask else f"Internal error: {type(original).__name__}"
        out["extensions"] = {"code": "INTERNAL"}
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
    ) -> None:
        self.trusted_proxy_header = trusted_proxy_header
        self.schema = schema
        self.policies = policies
        self.verifier = verifier
        self.acquire = acquire
        self.production = production
        self.clock = clock
        self.audit_writer = audit_writer
        self.documents = DocumentCache(schema)

    # ------------------------------------------------------------ transport

    async def read_request(self, request: Request) -> GraphQLRequest:
        if request.method == "GET":
            params = request.query_params
            query = params.get("query")
            variables_raw = params.get("variables")
            variables = None
            if variables_raw:
                try:
                    variables = orjson.loads(variables_raw)
                except orjson.JSONDecodeError:
                    raise RequestError("BAD_USER_INPUT", "'variables' is not valid JSON") from None
            payload: Any = {"query": query, "operationName": params.get("operationName"), "variables": variables}
        else:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                raise RequestError("UNSUPPORTED_MEDIA_TYPE", "Send the request as Content-Type: application/json")
            body = await request.body()
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise RequestError("BAD_USER_INPUT", "The request body is not valid JSON") from None
        if isinstance(payload, list):
            raise RequestError("BAD_USER_INPUT", "Batched requests are not accepted: send one operation per request")
        if not isinstance(payload, dict):
            raise RequestError("BAD_USER_INPUT", "The request body must be a JSON object with a 'query'")
        query = payload.get("query")
        if not isinstance(query, str) or not query.strip():
            raise RequestError("BAD_USER_INPUT", "The request has no 'query'")
        operation_name = payload.get("operationName")
        if operation_name is not None and not isinstance(operation_name, str):
            raise RequestError("BAD_USER_INPUT", "'operationName' must be a string")
        variables = payload.get("variables")
        if variables is not None and not isinstance(variables, dict):
            raise RequestError("BAD_USER_INPUT", "'variables' must be a JSON object")
        return GraphQLRequest(query, operation_name, variables)

    @staticmethod
    def parse_purpose(raw: str | None) -> Purpose:
        if raw is None or not raw.strip():
            raise RequestError("PURPOSE_REQUIRED", "Declare why the data is used in the X-Purpose header")
        value = raw.strip()
        if value not in Purpose.__members__:
            raise RequestError("PURPOSE_UNKNOWN", "X-Purpose must be exactly one Purpose value of the schema")
        return Purpose(value)

    def client_info(self, request: Request) -> ClientInfo:
        ip = request.client.host if request.client else None
        if self.trusted_proxy_header:
            forwarded = request.headers.get(self.trusted_proxy_header)
            if forwarded:
                ip = forwarded.split(",")[0].strip() or ip
        return ClientInfo(
            ip_address=ip,
            user_agent=request.headers.get("user-agent"),
            referrer=request.headers.get("referer"),
            idempotency_key=request.headers.get("idempotency-key"),
            session_id=request.headers.get("x-session-id"),
        )

    @staticmethod
    def rls_districts(
        principal: Principal, purpose: Purpose, conditions: dict[str, DistrictConditions], scope: RowScope
    ) -> list[uuid.UUID]:
        """The districts whose rows the request's transaction may touch at all."""
        if principal.district_id is not None or principal.role is not Role.ANALYST:
            return [d for d in scope.district_ids if isinstance(d, uuid.UUID)]
        # Analysts: only districts that authorize the declared purpose.
        return [uuid.UUID(key) for key, c in conditions.items() if purpose in c.authorized_purposes]

    # ------------------------------------------------------------ execution

    async def handle(self, request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        if len(request_id) > 128 or not request_id.isprintable():
            request_id = uuid.uuid4().hex
        try:
            return await self._handle(request, request_id)
        except RequestError as error:
            return error_response(request, error, request_id)
        except Exception as error:
            # Never a traceback and never a value: the type name is all that is logged.
            log.error("Unexpected error serving a request: %s", type(error).__name__)
            return error_response(request, RequestError("INTERNAL", "Internal error"), request_id)

    async def _handle(self, request: Request, request_id: str) -> Response:
        gql = await self.read_request(request)
        prepared = self.documents.get(gql.query)
        if prepared.errors:
            body = {"errors": [format_error(e, self.production) for e in prepared.errors]}
            status = 400 if _wants_graphql_response(request) else 200
            return _respond(request, body, status, request_id)
        operation = _select_operation(prepared.document, gql.operation_name)
        if request.method == "GET" and operation.operation is not OperationType.QUERY:
            raise RequestError("METHOD_NOT_ALLOWED", "Mutations are accepted over POST only")

        authorization = request.headers.get("authorization")
        if authorization is None and _root_fields(operation) <= PUBLIC_ROOTS:
            public = PublicContext(policies=self.policies, request_id=request_id)
            return await self._execute(request, prepared, gql, public, request_id)

        claims = self.verifier.verify(authorization)
        purpose = self.parse_purpose(request.headers.get("x-purpose"))
        token_purposes = frozenset(Purpose(p) for p in claims.purposes if p in Purpose.__members__)
        justification = request.headers.get("x-justification")
        now = self.clock()

        try:
            connection = self.acquire()
            async with connection as raw, raw.transaction():
                db = Db(raw)
                principal = await load_principal(db, claims.user_id, token_purposes, now)
                if principal is None:
                    raise RequestError("UNAUTHENTICATED", "Sign in again: this account is unknown or disabled")
                if principal.district_id is not None:
                    conditions = await load_conditions(db, [principal.district_id])
                elif principal.role is Role.SUPPORT:
                    conditions = await load_conditions(db, list(principal.granted_district_ids))
                else:
                    # Internal analysts read aggregates across districts: every
                    # district's settings decide whether it takes part.
                    conditions = await load_conditions(db, None)
                home = conditions.get(str(principal.district_id)) if principal.district_id else None
                refusal = check_request(self.policies, principal.role, purpose, token_purposes, justification, home)
                if refusal is not None:
                    raise RequestError(refusal.value, REFUSAL_MESSAGES[refusal])
                document = self.policies.governing(home.accepted_version) if home else self.policies.latest()
                rule = document.rule(principal.role, purpose)
                if rule is None:
                    raise RequestError("PURPOSE_NOT_ALLOWED", REFUSAL_MESSAGES[RequestRefusal.PURPOSE_NOT_ALLOWED])
                granted = set(map(str, principal.granted_district_ids))
                relationships = {
                    key: Relationship(support_grant_active=principal.role is Role.SUPPORT and key in granted)
                    for key in conditions
                }
                scope = RowScope(
                    principal=principal,
                    students_scope=rule.student_scope,
                    staff_scope=rule.staff_scope,
                    guardians_scope=rule.guardian_scope,
                    today=now.date(),
                )
                settable = ",".join(str(d) for d in [*self.rls_districts(principal, purpose, conditions, scope), NIL])
                await db.execute("SELECT set_config('pledgeql.district_ids', $1, true)", settable)
                context = RequestContext(
                    principal=principal,
                    purpose=purpose,
                    rule=rule,
                    policies=self.policies,
                    decisions=DecisionTable(self.policies, principal.role, purpose, relationships, conditions),
                    conditions=conditions,
                    reads=Reads(db, scope),
                    db=db,
                    request_id=request_id,
                    now=now,
                    justification=justification.strip() if justification else None,
                    operation_name=gql.operation_name or (operation.name.value if operation.name else None),
                    client=self.client_info(request),
                )
                body, status = await self._run(request, prepared, gql, context)
                # Fail closed: the response leaves only once its audit entries are
                # written in this transaction; if they cannot be, nothing is returned.
                try:
                    await self.audit_writer(context)
                except Exception as error:
                    log.error("Audit write failed: %s", type(error).__name__)
                    raise AuditUnavailable from None
            return _respond(request, body, status, request_id)
        except AuditUnavailable:
            raise RequestError(
                "AUDIT_UNAVAILABLE",
                "The audit trail cannot be written right now, so no data is returned; retry shortly",
            ) from None
        except RequestError:
            raise
        except (OSError, ConnectionError) as error:
            log.warning("Database unreachable: %s", type(error).__name__)
            raise RequestError("DATABASE_UNAVAILABLE", "The database cannot be reached; try again shortly") from None

    async def _execute(
        self, request: Request, prepared: Prepared, gql: GraphQLRequest, context: Any, request_id: str
    ) -> Response:
        body, status = await self._run(request, prepared, gql, context)
        return _respond(request, body, status, request_id)

    async def _run(
        self, request: Request, prepared: Prepared, gql: GraphQLRequest, context: Any
    ) -> tuple[dict[str, Any], int]:
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
            body["errors"] = [format_error(e, self.production) for e in result.errors]
        body["data"] = result.data
        status = 200
        if result.data is None and _wants_graphql_response(request):
            codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
            status = 400 if codes <= {"BAD_USER_INPUT"} else 200
        return body, status
