"""POST/GET /graphql: from an HTTP request to a GraphQL result, fail-closed.

The endpoint runs the request's steps in this order, cheapest and least
trusting first, each step's pieces in its own module:

1. transport (``server/http_request.py``): method, content type, body size,
   JSON shape (batches are refused), the client's headers;
2. the caller's identity (the bearer token, verified without the database)
   and its rate limit;
3. documents and limits (``server/documents.py``): the persisted operation,
   the production allow-list, parse with the token limit, the abuse limits,
   then full validation (all cached per document text); the operation (GET
   mutations refused); its variables (page sizes from variables measured);
4. admission: the purpose, the caller read from the database, then the
   request-level policy refusals (``permissions/admission.py``, pure);
5. execution under settings that carry the request's districts for
   row-level security: the compiled plan (each statement its own, no
   transaction) or the resolvers (one transaction);
6. the audit, written before the response leaves (``server/failures.py``
   says what a failure is answered with);
7. the reply (``server/replies.py``): the status, the errors' format, the
   response and its headers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from graphql import (
    Executor,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
)
from graphql import execute as graphql_execute
from graphql.execution.collect_fields import FieldDetailsList
from graphql.execution.values import VariableValues
from graphql.pyutils import Path
from starlette.requests import Request
from starlette.responses import Response

from permissions.admission import NIL_DISTRICT, admit
from permissions.audit import PendingEntry
from permissions.audit_chain import Origin, in_utc
from permissions.decide import DecisionTable
from permissions.enums import Purpose, RequestRefusal, Role
from permissions.errors import RequestError
from permissions.policy import PolicySet
from permissions.principal import Principal
from resolvers.principal import (
    StaleStanding,
    Standings,
    load_conditions,
    load_principal,
    session_set,
    support_tickets,
)
from resolvers.reads import Reads
from resolvers.report_cache import ReportCache
from resolvers.scope import RowScope
from schema.compiled import CompiledReads, Plan, Planner
from schema.direct import PLAIN, Fallback, PlainCompletion
from server.auth import TokenClaims, TokenVerifier
from server.context import ClientInfo, PublicContext, RequestContext
from server.documents import (
    PUBLIC_ROOTS,
    DocumentCache,
    PersistedOperations,
    Prepared,
    root_fields,
    select_operation,
)
from server.failures import (
    UNAVAILABLE_MESSAGE,
    AuditUnavailable,
    end_transaction,
    is_connection_error,
    unavailable,
)
from server.headers import authorization_header, client_request_id, justification_header, purpose_header
from server.http_request import (
    GraphQLRequest,
    RateLimited,
    check_method,
    client_info_of,
    read_graphql_request,
    request_id_of,
)
from server.limits import Limits
from server.operations import OperationRegistry
from server.ratelimit import RateLimiter
from server.replies import (
    ALWAYS_STATUS,
    Reply,
    at_path,
    error_reply,
    format_error,
    respond,
    server_timing,
    wants_graphql_response,
    with_purpose,
)
from server.telemetry import Telemetry, operation_label

log = logging.getLogger("pledgeql.http")

DIRECT_ACCESS_MESSAGE = (
    "Your school district has not turned on direct access to student records. "
    "Please contact your school district to see or correct your records."
)
REFUSAL_MESSAGES = {
    RequestRefusal.PURPOSE_NOT_ALLOWED: "This role or this token may not declare that purpose",
    RequestRefusal.JUSTIFICATION_REQUIRED: "LEGAL_COMPLIANCE needs an X-Justification header saying why",
    RequestRefusal.DIRECT_ACCESS_DISABLED: DIRECT_ACCESS_MESSAGE,
}


# The selections of plain types made for the document being executed (``GraphQLEndpoint._run``).
_SELECTIONS: ContextVar[dict[Any, Any] | None] = ContextVar("pledgeql_plain_selections", default=None)


class SerialRoots(Executor[Any]):
    """graphql-core's executor, completing a query's root fields one after
    another, as it does a mutation's. A request's statements share one
    connection, so its roots never ran side by side; in turn, the order of
    its audit entries is the order of its roots in the document, whatever
    each awaits, which the compiled path reproduces (schema.compiled). The
    values of plain types (schema.direct) are completed in one pass."""

    def execute_operation(self, serially: bool | None = None) -> Any:
        result = super().execute_operation(True if serially is None else serially)
        if not self.is_awaitable(result):
            self._let_go()
            return result

        async def then_let_go() -> Any:
            try:
                return await result
            finally:
                self._let_go()

        return then_let_go()

    def _let_go(self) -> None:
        """Once the operation's result is built: drop graphql-core's helpers, bound
        methods of this executor, so that the executor, the request's context
        and all they hold are freed as soon as the request lets go of them
        rather than when the garbage collector finds the cycle."""
        del self.async_helpers

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        """A plain type's value in one pass (schema.direct), else graphql-core's completion."""
        plain = return_type.extensions.get(PLAIN)
        if plain is not None:
            try:
                completion = PlainCompletion(self.collect_subfields, _SELECTIONS.get())
                return completion.object(return_type, plain, field_details_list, result)
            except Fallback:
                pass
        return super().complete_object_value(return_type, field_details_list, info, path, result, position_context)


@dataclass(frozen=True, slots=True)
class Call:
    """One operation ready to serve: the HTTP request it came in, its ids, the
    GraphQL request, its checked document and operation, its coerced
    variables and where it came from."""

    request: Request
    request_id: str
    client_request_id: str | None
    gql: GraphQLRequest
    prepared: Prepared
    operation: OperationDefinitionNode
    variables: VariableValues | None
    client: ClientInfo

    @property
    def operation_name(self) -> str | None:
        return self.gql.operation_name or (self.operation.name.value if self.operation.name else None)


class GraphQLEndpoint:
    """Everything one /graphql request needs, built once per app."""

    def __init__(
        self,
        *,
        schema: GraphQLSchema,
        policies: PolicySet,
        verifier: TokenVerifier,
        acquire: Callable[..., Any],
        production: bool,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        audit_writer: Callable[[RequestContext], Awaitable[None]],
        refusal_writer: Callable[[Any, Origin, list[PendingEntry]], Awaitable[None]] | None = None,
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
        # Writes the DENY entry of a mutation refused at admission, in its own transaction.
        self.refusal_writer = refusal_writer
        self.limits = limits or Limits()
        self.registry = registry
        self.persisted = PersistedOperations(registry, production)
        self.rate_limiter = rate_limiter
        self.telemetry = telemetry or Telemetry()
        self.max_body_bytes = max_body_bytes
        self.documents = DocumentCache(schema, limits=self.limits, production=production, registry=registry)
        self.compiled = compiled
        self.planner = Planner(schema)
        self.reports = ReportCache()
        self.standings = Standings()

    # ------------------------------------------------------------ the request, top-down

    async def handle(self, request: Request) -> Response:
        """The response to one /graphql request: every failure answered, never a traceback."""
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
        try:
            return respond(request, reply, request_id)
        except Exception as error:  # a body that cannot be written: masked like any other failure
            log.error("Unexpected error writing a response: %s", type(error).__name__)
            return respond(request, error_reply(request, RequestError("INTERNAL", "Internal error")), request_id)

    async def _handle(self, request: Request, request_id: str) -> Reply:
        """Transport, identity, document, operation and variables checked in turn; then the operation served."""
        check_method(request)
        client_id = client_request_id(request)
        gql = await self.read_request(request)
        client = self.client_info(request)
        claims = self.identify(request, client)
        prepared = self._prepare(gql)
        if prepared.errors:
            body = {"errors": [format_error(e, self.production) for e in prepared.errors]}
            codes = {e["extensions"]["code"] for e in body["errors"]}
            status = 400 if wants_graphql_response(request) or codes & ALWAYS_STATUS else 200
            return Reply(body, status)
        operation = self._operation(request, prepared, gql)
        variables = self.coerce_variables(prepared, operation, gql.variables)
        if isinstance(variables, list):
            return Reply({"errors": variables}, 400 if wants_graphql_response(request) else 200)
        call = Call(request, request_id, client_id, gql, prepared, operation, variables, client)
        return await self._serve(call, claims)

    async def _serve(self, call: Call, claims: TokenClaims | None) -> Reply:
        """The operation served in its span: public fields without a token, else the authenticated path."""
        operation, prepared = call.operation, call.prepared
        attributes = {
            "graphql.operation.name": operation_label(operation.name.value if operation.name else None),
            "graphql.operation.type": operation.operation.value,
            "graphql.document.sha256": prepared.digest,
        }
        with self.telemetry.span(f"graphql {operation.operation.value}", attributes) as span:
            if claims is None:
                if root_fields(prepared.document, operation) <= PUBLIC_ROOTS:
                    public = PublicContext(
                        policies=self.policies.in_effect(self.clock().date()), request_id=call.request_id
                    )
                    return await self._run(call.request, prepared, call.gql, public)
                raise RequestError("UNAUTHENTICATED", "Sign in: this request needs a bearer token")
            reply = await self._authenticated(call, claims)
            if span is not None:
                span.set_attribute("http.response.status_code", reply.status)
            return reply

    # ------------------------------------------------------------ transport and identity

    async def read_request(self, request: Request) -> GraphQLRequest:
        """The GraphQL request read from HTTP, its body at most ``max_body_bytes``."""
        return await read_graphql_request(request, self.max_body_bytes)

    def client_info(self, request: Request) -> ClientInfo:
        """Where the request came from, its address read through the trusted proxy's header."""
        return client_info_of(request, self.trusted_proxy_header)

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
        by_address = f"ip:{client.ip_address or 'unknown'}"
        try:
            authorization = authorization_header(request)
        except RequestError:
            self._limit(by_address)
            raise
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

    # ------------------------------------------------------------ documents and limits

    def resolve_persisted(self, gql: GraphQLRequest) -> str:
        """The document's text: sent, or named by its sha256 (Automatic Persisted Queries)."""
        return self.persisted.text(gql)

    def _prepare(self, gql: GraphQLRequest) -> Prepared:
        """The request's document parsed, measured and validated (cached); a valid text sent with its hash kept."""
        prepared = self.documents.get(self.resolve_persisted(gql))
        self.persisted.remember(gql, prepared)
        return prepared

    @staticmethod
    def _operation(request: Request, prepared: Prepared, gql: GraphQLRequest) -> OperationDefinitionNode:
        """The operation to run; a subscription, or a mutation sent with GET, is refused."""
        operation = select_operation(prepared.document, gql.operation_name)
        if operation.operation is OperationType.SUBSCRIPTION:
            raise RequestError(
                "BAD_USER_INPUT",
                "Subscriptions are served over WebSocket (graphql-transport-ws) or Server-Sent Events (graphql-sse)",
            )
        if request.method == "GET" and operation.operation is not OperationType.QUERY:
            raise RequestError("METHOD_NOT_ALLOWED", "Mutations are accepted over POST only")
        return operation

    def coerce_variables(
        self, prepared: Prepared, operation: OperationDefinitionNode, raw: dict[str, Any] | None
    ) -> VariableValues | list[dict[str, Any]] | None:
        """The operation's variables coerced (None when it declares none), or their formatted errors."""
        return self.documents.coerce_variables(prepared, operation, raw)

    # ------------------------------------------------------------ admission

    @staticmethod
    def parse_purpose(raw: str | None) -> Purpose:
        # Only HTTP's own whitespace (space, tab) around the value: a no-break space is part of it.
        value = raw.strip(" \t") if raw is not None else ""
        if not value:
            raise RequestError("PURPOSE_REQUIRED", "Declare why the data is used in the X-Purpose header")
        if value not in Purpose.__members__:
            raise RequestError("PURPOSE_UNKNOWN", "X-Purpose must be exactly one Purpose value of the schema")
        return Purpose(value)

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
        session: bool = False,
        client_request_id: str | None = None,
        keep: bool = False,
        use_kept: bool = False,
    ) -> RequestContext:
        """The caller read from the database and admitted under ``purpose``: the context its reads run in.

        Raises the refusal (UNAUTHENTICATED for an unknown or disabled user,
        PURPOSE_NOT_ALLOWED, JUSTIFICATION_REQUIRED, DIRECT_ACCESS_DISABLED).
        Every transport admits through here: a request over HTTP, and each
        event of a subscription (server/subscriptions.py).

        With ``keep``, the standing read is kept (``resolvers.principal.Standings``).
        With ``use_kept`` (a query's compiled read, or its reports, whose
        statement confirms it), the caller's standing may be the one kept: the context then carries what
        its statement must confirm (``RequestContext.confirm``), and a refusal
        from it raises ``StaleStanding`` (decided again on a standing read anew)."""
        token_purposes = frozenset(Purpose(p) for p in claims.purposes if p in Purpose.__members__)
        day = in_utc(now).date()
        standing = self.standings.get(claims.user_id, token_purposes, day) if use_kept else None
        provisional = standing is not None
        if standing is None:
            standing = await load_principal(
                db, claims.user_id, token_purposes, now, NIL_DISTRICT, generic_plans=generic_plans, session=session
            )
            if standing is None:
                if keep:
                    self.standings.forget(claims.user_id, token_purposes, day)
                raise RequestError("UNAUTHENTICATED", "Sign in again: this account is unknown or disabled")
            if keep:
                self.standings.keep(token_purposes, day, standing)
        principal = standing.principal
        if principal.district_id is not None:
            conditions = {str(principal.district_id): standing.home} if standing.home else {}
        elif principal.role is Role.SUPPORT:
            conditions = await load_conditions(db, list(principal.granted_district_ids))
        else:
            # Internal analysts read aggregates across districts: every
            # district's settings (read with the principal) decide whether it takes part.
            conditions = standing.every_district or {}
        # No version applies before its effective date: decide with today's.
        policies = self.policies.in_effect(now.date())
        admission = admit(policies, principal, purpose, token_purposes, justification, conditions)
        if isinstance(admission, RequestRefusal):
            if provisional:
                raise StaleStanding
            refusal = RequestError(admission.value, REFUSAL_MESSAGES[admission])
            if not read_only:
                raise _RefusedMutation(refusal, principal)  # attempted: audited, then refused
            raise refusal
        rule = admission.rule
        scope = RowScope(
            principal=principal,
            students_scope=rule.student_scope,
            staff_scope=rule.staff_scope,
            guardians_scope=rule.guardian_scope,
            today=now.date(),
        )
        settable = ",".join(map(str, admission.rls_districts))
        confirming: tuple[int, str] | None = None
        if provisional:
            if standing.generation is None:  # never kept without one (Standings.keep)
                raise StaleStanding
            confirming = (standing.generation, settable)
            await self.standings.settle(db, settable, generic_plans)
        elif settable != standing.district_ids:  # set with the principal for district users
            await db.execute("SELECT set_config('pledgeql.district_ids', $1, $2)", settable, not session)
            if session:
                session_set(db.connection, settable, generic_plans)
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
            reports=self.reports,
            confirm=confirming,
        )

    # ------------------------------------------------------------ execution and audit

    async def _authenticated(self, call: Call, claims: TokenClaims) -> Reply:
        """Admit, execute and audit; the reply is returned only once the audit entries have committed.

        A mutation runs in one transaction. A query runs without one: its
        principal, its statements and its audit write are each a statement of
        their own, and the write's commit is its own (two round trips fewer:
        no BEGIN, no COMMIT). Each statement under read committed had its own
        snapshot already, and the row-level security setting the principal's
        statement makes lasts for the session until the next checkout sets or
        resets it (``server.app.BEGIN``). Statements that need a transaction
        (a report's, which share its ``work_mem``; the audit's HEADS and
        INSERT) open their own (``resolvers.db.in_transaction``).

        Fail closed: if the audit entries cannot be written, nothing is
        returned (AUDIT_UNAVAILABLE); if the database cannot be reached,
        DATABASE_UNAVAILABLE (``server.failures.unavailable``).
        """
        purpose = self.parse_purpose(purpose_header(call.request))
        justification = justification_header(call.request, purpose)
        now = self.clock()
        plan = self._plan(call.prepared, call.operation, call.variables)
        # A query runs without a transaction, a mutation in one.
        read_only = call.operation.operation is OperationType.QUERY
        # A query's compiled read, or its reports, may use the standing kept for its caller, which
        # the statement it reads with (the reports': the one that reads their counters) confirms.
        keep = use_kept = read_only and (plan is not None or _reports_only(call))
        retried = False
        for _ in range(3):
            context: RequestContext | None = None
            committed = False
            try:
                connection = self.acquire(transaction=not read_only)
                refused: RequestError | None = None
                async with connection as raw:  # server.app.driver_connection
                    db = self.telemetry.database(raw)
                    try:
                        try:
                            # A compiled statement is planned once, generically, not again for each
                            # request's values (which cost as much as running it).
                            context = await self.admit(
                                db,
                                claims,
                                purpose,
                                justification,
                                now,
                                request_id=call.request_id,
                                client_request_id=call.client_request_id,
                                operation_name=call.operation_name,
                                client=call.client,
                                read_only=read_only,
                                generic_plans=plan is not None,
                                session=read_only,
                                keep=keep,
                                use_kept=use_kept,
                            )
                            # With a kept standing, the compiled statement may be the first.
                            reply = await self._execute(call, plan, context)
                        except _RefusedMutation as attempt:
                            # Its DENY entry commits with this transaction; then the refusal is answered.
                            refused = attempt.refusal
                            await self._write_refusal(db, call, attempt.principal, purpose, justification, now)
                        except Exception as error:
                            if read_only and not retried and _first_statement_lost(error, db):
                                retried = True
                                raise _Retry from error
                            raise
                        else:
                            reply.sql_seconds = db.seconds
                            reply.audit_seconds = await self._write_audit(context)
                    finally:
                        # Nothing touches this connection once it goes back to the pool, not even a
                        # resolver task still running after its field was cancelled (a DataLoader batch):
                        # wait for the statement in flight, then refuse every later one.
                        await db.close()
                committed = True
                if refused is not None:
                    raise refused
                return reply
            except _Retry:
                continue  # the dead connection is discarded and the pool suspect (driver_connection)
            except StaleStanding:
                use_kept = False  # served again, on a standing read anew (and kept)
                continue
            except Exception as error:
                refusal = unavailable(error)
                if refusal is None:
                    raise
                raise refusal from None
            finally:
                if context is not None:
                    end_transaction(context.after_commit, committed)
        raise RequestError("DATABASE_UNAVAILABLE", UNAVAILABLE_MESSAGE)

    async def _execute(self, call: Call, plan: Plan | None, context: RequestContext) -> Reply:
        """The reply from the compiled plan, else from the resolvers, marked with the path that served it."""
        reply = await self._compiled(plan, call.variables, context)
        if reply is None:
            if context.confirm is not None and plan is not None:
                raise StaleStanding  # the resolver path runs on a standing confirmed, or on none kept
            made = call.prepared.selections.setdefault(_plan_key(call.prepared, call.operation, call.variables), {})
            reply = await self._run(call.request, call.prepared, call.gql, context, made)
            reply.served = "resolvers"
        else:
            reply.served = "compiled"
        return reply

    async def _write_audit(self, context: RequestContext) -> float:
        """Write the request's audit entries, or raise AuditUnavailable; the seconds the write took."""
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
        seconds = asyncio.get_running_loop().time() - started
        self.telemetry.record_audit(entries, seconds)
        return seconds

    async def _write_refusal(
        self,
        db: Any,
        call: Call,
        principal: Principal,
        purpose: Purpose,
        justification: str | None,
        now: dt.datetime,
    ) -> None:
        """A mutation refused at admission is an attempt all the same (API.md section 3): one
        DENY entry naming its root fields, about no student, in the caller's district's chain
        (the nil district's for internal users). Written or nothing is answered (AUDIT_UNAVAILABLE)."""
        if self.refusal_writer is None:
            return
        district = principal.district_id if principal.district_id is not None else NIL_DISTRICT
        roots = root_fields(call.prepared.document, call.operation)
        fields = tuple(sorted(f"Mutation.{name}" for name in roots if not name.startswith(("__", "..."))))
        origin = Origin(
            at=in_utc(now),
            request_id=call.request_id,
            client_request_id=call.client_request_id,
            actor_id=principal.user_id,
            actor_role=principal.role.value,
            purpose=purpose.value,
            # SUPPORT's justification is only ever its grants' tickets, which a refusal does not read.
            justification=None if principal.role is Role.SUPPORT else justification,
            operation_name=call.operation_name,
            break_glass=False,
        )
        try:
            await self.refusal_writer(db, origin, [PendingEntry(str(district), None, False, fields, ())])
        except Exception as error:
            log.error("Audit write failed: %s", type(error).__name__)
            raise AuditUnavailable from None

    def _plan(
        self, prepared: Prepared, operation: OperationDefinitionNode, variables: VariableValues | None
    ) -> Plan | None:
        """The operation's compiled plan (made once per document and values of the variables
        its @include / @skip read), or None for the resolver path."""
        if self.compiled is None:
            return None
        key = _plan_key(prepared, operation, variables)
        plans = prepared.plans
        if key in plans:
            return plans[key]
        plan = plans[key] = self.planner.plan(prepared.document, operation, variables)
        return plan

    async def _compiled(
        self, plan: Plan | None, variables: VariableValues | None, context: RequestContext
    ) -> Reply | None:
        """The reply from the operation's compiled plan, or None for the resolver path."""
        if plan is None or self.compiled is None:
            return None
        # The plan as a string attribute: spans carry no other non-string values than counts and statuses.
        roots = [f"resolve {m.name}" for m in plan.members if m.typename is None]
        with self.telemetry.sibling_spans(roots, {"pledgeql.plan": "compiled"}):
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
                errors.append(at_path(shared, path))
            return Reply({"errors": errors, "data": compiled.data}, 200)
        return Reply({"data": compiled.data}, 200)

    async def _run(
        self,
        request: Request,
        prepared: Prepared,
        gql: GraphQLRequest,
        context: Any,
        selections: dict[Any, Any] | None = None,
    ) -> Reply:
        """The reply from graphql-core's execution; with ``selections`` (the document's own, for
        these values of its conditions' variables), its plain types' selections are made once."""
        made = _SELECTIONS.set(selections)
        try:
            result = graphql_execute(
                self.schema,
                prepared.document,
                context_value=context,
                variable_values=gql.variables,
                operation_name=gql.operation_name,
                hide_suggestions=self.production,
                executor_class=SerialRoots,
            )
            if hasattr(result, "__await__"):
                result = await result
        finally:
            _SELECTIONS.reset(made)
        if result.errors and any(is_connection_error(e.original_error) for e in result.errors):
            # A statement failed because the database went away: no partial data.
            raise RequestError("DATABASE_UNAVAILABLE", UNAVAILABLE_MESSAGE)
        if getattr(context, "confirm", None) is not None:
            raise StaleStanding  # a kept standing none of its statements confirmed: nothing of it leaves
        body: dict[str, Any] = {}
        if result.errors:
            body["errors"] = [format_error(e, self.production) for e in result.errors]
        body["data"] = result.data
        status = 200
        if result.data is None and wants_graphql_response(request):
            codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
            status = 400 if codes <= {"BAD_USER_INPUT"} else 200
        return Reply(body, status)


def _plan_key(
    prepared: Prepared, operation: OperationDefinitionNode, variables: VariableValues | None
) -> tuple[str | None, tuple[Any, ...]]:
    """An operation's key among its document's plans: its name, and the values of the
    variables the document's @include / @skip read."""
    coerced = variables.coerced if variables is not None else {}
    return (operation.name.value if operation.name else None, tuple(coerced.get(n) for n in prepared.conditions))


# The reports: the statement that reads their counters confirms a kept standing.
_REPORTS = frozenset({"performanceReport", "usageReport", "__typename"})


def _reports_only(call: Call) -> bool:
    """Whether the operation selects reports and nothing else (``__typename`` aside)."""
    roots = root_fields(call.prepared.document, call.operation)
    return roots <= _REPORTS and bool(roots - {"__typename"})


class _RefusedMutation(Exception):
    """A mutation its caller may not run under the declared purpose (``admit``): audited, then refused."""

    def __init__(self, refusal: RequestError, principal: Principal) -> None:
        super().__init__(refusal.code)
        self.refusal = refusal
        self.principal = principal


class _Retry(Exception):
    """A compiled query's first statement found its connection dead: served again on another."""


def _first_statement_lost(error: Exception, db: Any) -> bool:
    """Whether ``error`` is the loss of the connection at the request's first statement, before
    anything ran: what a failed BEGIN is for a request in a transaction (retried on another
    connection, ``server.app._checkout``). A timeout is not retried: the database is there but slow."""
    return db.statements == 1 and is_connection_error(error) and not isinstance(error, asyncio.TimeoutError)
