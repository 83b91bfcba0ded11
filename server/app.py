"""The Starlette application: routes, lifespan, and the shared state they use."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import itertools
import logging
import math
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy.exc
import strawberry
from graphql import GraphQLSchema, OperationDefinitionNode, OperationType, parse
from graphql.execution.values import VariableValues
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute, request_response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from permissions.enums import DataCategory
from permissions.policy import PolicySet, load_policy_set
from resolvers.principal import notice_from_row, session_unknown
from schema.build import build_schema, graphql_schema
from schema.catalog import category_fields
from schema.compiled import CompiledReads, Planner, condition_variables
from server.audit_writer import AuditWriterGroups, StuckChainGuard, keep_audit_partitions
from server.auth import TokenVerifier
from server.cors import ApiCORSMiddleware, cors_options
from server.db import DatabaseUrls, server_urls, sqlalchemy_url
from server.documents import root_fields
from server.failures import is_connection_error
from server.graphiql import PREFIX, graphiql_asset, graphiql_page
from server.graphql_http import GraphQLEndpoint
from server.http_request import client_address
from server.limits import Limits
from server.notice_page import privacy_response
from server.operations import Checker, OperationRegistry, OperationsError
from server.ratelimit import RateLimiter, retry_after_header
from server.settings import Settings
from server.subscriptions import LiveHub, LiveLimits, LiveService
from server.subscriptions_sse import serve_sse, wants_event_stream
from server.subscriptions_ws import serve_websocket
from server.telemetry import Telemetry, TelemetryMiddleware, trace_root_fields

log = logging.getLogger("pledgeql.app")

# Roots a query may read without a plan of its own (issue 13): the aggregate reports
# are SQL already, the policy is answered from memory.
UNPLANNED_ROOTS = frozenset({"performanceReport", "usageReport", "policy", "policyVersions", "__typename"})
# Settings.extra key (never read from the environment): "resolvers" lets a query the
# planner refuses take the resolver path instead of stopping the server. For the tests
# of other features, until every read is compiled (issue 13); production never sets it.
UNPLANNED_OPERATIONS = "unplanned_operations"


@dataclass
class AppState:
    settings: Settings
    policies: PolicySet
    schema: strawberry.Schema
    engine: AsyncEngine | None = None
    endpoint: GraphQLEndpoint | None = None
    live: LiveService | None = None


# Per engine: when a pooled connection last failed with a connection error.
# Every connection the pool held before then is pinged at its next checkout.
_SUSPECT: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
PING_TIMEOUT = 2.0
# A transaction begins with the settings a request without one (a compiled query,
# server.graphql_http) leaves on its session reset, in the same round trip: no
# statement of this one runs under a previous request's row-level security.
BEGIN = "BEGIN; RESET pledgeql.district_ids; RESET plan_cache_mode"


class _EveryMethod:
    """An ASGI app that Starlette's Route hands every method (a function endpoint gets the
    methods listed, and Starlette answers the others itself, in plain text and without a code)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _mark_suspect(engine: AsyncEngine) -> None:
    _SUSPECT[engine.sync_engine] = time.monotonic()


async def _checkout(engine: AsyncEngine, begin: bool) -> tuple[AsyncConnection, Any, bool]:
    """A pooled connection known to be alive (and its transaction begun, with ``begin``).

    A connection whose socket asyncpg saw close is discarded without a round
    trip. After any connection error, every connection the pool held before it
    is suspect, whatever its socket says (one that received the backend's
    FATAL while idle still reads as open, and fails at its next statement with
    InternalClientError): each is pinged once before use and discarded if it
    fails. A BEGIN that fails with a connection error is retried on another
    connection: nothing has run yet. So the first request after the database
    returns gets a live connection, however many dead ones the pool held.
    """
    pool = engine.sync_engine.pool
    size = pool.size() if hasattr(pool, "size") else 10
    for _ in range(2 * size + 2):
        try:
            connection = await engine.connect()
        except sqlalchemy.exc.DBAPIError as error:
            # A new connection refused by the server (too many connections, the role
            # or database not accepting logins): unreachable for this request.
            raise ConnectionError("The database refused a new connection") from error
        try:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            checked = raw.info.setdefault("pledgeql_checked", time.monotonic())
            if driver is not None and not driver.is_closed():
                try:
                    if checked < _SUSPECT.get(engine.sync_engine, -math.inf):
                        await driver.execute("SELECT 1", timeout=PING_TIMEOUT)
                        raw.info["pledgeql_checked"] = time.monotonic()
                    if begin:
                        session_unknown(driver)  # BEGIN resets the session's setting
                        await driver.execute(BEGIN)
                    return connection, driver, begin
                except Exception as error:
                    if not (is_connection_error(error) or driver.is_closed()):
                        raise
                    _mark_suspect(engine)
            await connection.invalidate()
        except BaseException:
            await connection.close()
            raise
        await connection.close()
    raise ConnectionError("The database closed every pooled connection")


@contextlib.asynccontextmanager
async def driver_connection(engine: AsyncEngine, *, transaction: bool = False) -> AsyncIterator[Any]:
    """A pooled connection as asyncpg's own connection object (in a transaction, with ``transaction``:
    committed when the block ends, rolled back when it raises).

    A connection that fails with a connection error while in use is
    invalidated, so that the pool never hands it out again, and makes the
    rest of the pool suspect (``_checkout``). Together they let the server
    recover from an outage without a restart, at no cost per request while
    nothing fails (``PLEDGEQL_DB_POOL_PRE_PING`` adds SQLAlchemy's ping, a
    round trip per checkout, for networks that drop connections silently).
    """
    connection, driver, begun = await _checkout(engine, transaction)
    try:
        try:
            yield driver
        except BaseException:
            if begun and not driver.is_closed():
                await driver.execute("ROLLBACK")
            raise
        if begun:
            await driver.execute("COMMIT")
    except BaseException as error:
        if is_connection_error(error) or driver.is_closed():
            _mark_suspect(engine)
            await connection.invalidate()
        elif driver.is_in_transaction():
            # Its ROLLBACK failed (a statement still in flight when the request was cancelled): a
            # connection with a transaction open may hold a chain lock, and never goes back to the pool.
            await connection.invalidate()
        raise
    finally:
        await connection.close()


def create_serving_engine(url: str, settings: Settings) -> AsyncEngine:
    """The app role's pool, with timeouts short enough that an outage fails fast.

    It keeps every connection it opens, up to ``PLEDGEQL_POOL_SIZE`` per worker:
    none "overflows". An overflow connection is closed as soon as it is given
    back while the pool is full, so under a steady load above the kept size a
    new connection was opened and closed every few requests, each costing
    PostgreSQL a backend's start and each statement's preparation again
    (a student's detail at 16 connections: 4.3 ms of PostgreSQL CPU per
    request with 10 kept and 10 of overflow, 1.3 to 1.5 ms with 20 kept).
    """
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=settings.pool_size,
        max_overflow=0,
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_recycle=1800,
        pool_timeout=settings.db_pool_timeout,
        connect_args={
            # Dates are UTC dates in the database as in the server (a request's day, an enrollment's).
            "server_settings": {"application_name": "pledgeql", "jit": "off", "timezone": "UTC"},
            "timeout": settings.db_connect_timeout,
            "command_timeout": settings.db_command_timeout,
        },
    )


class RequestIdMiddleware:
    """Every response carries X-Request-Id: the server's own id for the request, never the client's.

    The client's X-Request-Id is checked and kept (as the audit's
    clientRequestId) by the GraphQL endpoint."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers["x-request-id"] = request_id
                headers.setdefault("x-content-type-options", "nosniff")
                if headers.get("content-type", "").startswith("text/html"):
                    # No page of the server (the notice, GraphiQL) is meant to be framed by another
                    # site, nor to tell another where its reader came from.
                    headers.setdefault("x-frame-options", "DENY")
                    headers.setdefault("content-security-policy", "frame-ancestors 'none'")
                    headers.setdefault("referrer-policy", "no-referrer")
            elif message["type"] == "websocket.accept":
                # The handshake's response: its subscriptions' audit requestIds begin with it.
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def load_registry(settings: Settings, schema: GraphQLSchema) -> OperationRegistry | None:
    """The persisted operations, every one valid and within the limits; production refuses to start without."""
    if settings.operations_dir is not None:
        checker = Checker(schema, Limits.from_settings(settings), settings.is_production)
        try:
            return OperationRegistry(settings.operations_dir, checker)
        except OperationsError as error:
            raise SystemExit(
                "PLEDGEQL_OPERATIONS_DIR holds operations that are not valid against the schema and the limits; "
                "fix them (nothing is served until every one is):\n" + "\n".join(error.problems)
            ) from None
    if settings.is_production:
        raise SystemExit(
            "Production runs registered operations only: set PLEDGEQL_OPERATIONS_DIR to the folder "
            "of the .graphql documents the clients ship"
        )
    return None


# An operation with more variables in its @include / @skip than this is planned at
# startup with all of them false and with all true, not with every combination.
MAX_PLANNED_CONDITIONS = 6


def plan_operations(registry: OperationRegistry, planner: Planner, *, strict: bool = True) -> int:
    """Plan every registered query, as production serves it: the number planned.

    Mutations and subscriptions are not read documents (they keep their resolvers);
    a query reading only the reports or the policy needs no plan. A query the
    planner refuses stops the server, named by its file and operation (with
    ``strict=False`` it is logged and takes the resolver path)."""
    planned = 0
    problems: list[str] = []
    for registered in registry.operations:
        document = parse(registered.text)
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        operation = next(
            (o for o in operations if o.name is not None and o.name.value == registered.name), operations[0]
        )
        if operation.operation is not OperationType.QUERY or root_fields(document, operation) <= UNPLANNED_ROOTS:
            continue
        # One plan per set of values of the variables its @include / @skip read: each must plan.
        conditions = condition_variables(document)
        if len(conditions) <= MAX_PLANNED_CONDITIONS:
            assignments = list(itertools.product((False, True), repeat=len(conditions)))
        else:
            assignments = [(False,) * len(conditions), (True,) * len(conditions)]
        plan = None
        for values in assignments:
            try:
                coerced = dict(zip(conditions, values, strict=True))
                plan = planner.plan(document, operation, VariableValues({}, coerced))
            except Exception as error:  # a planner failure names the operation, never a value
                log.error("Planning %s (%s) failed: %s", registered.name, registered.source, type(error).__name__)
                plan = None
            if plan is None:
                break
        if plan is None:
            problems.append(f"{registered.source}: operation {registered.name} cannot be planned as one statement")
        else:
            planned += 1
    if problems and strict:
        raise SystemExit(
            "PLEDGEQL_OPERATIONS_DIR holds queries that cannot be planned; the server does not start until "
            "every query is served by one statement:\n" + "\n".join(problems)
        )
    for problem in problems:
        log.warning("Served field by field: %s", problem)
    log.info("Planned %d of %d persisted operations at startup", planned, len(registry))
    return planned


def check_audit_key(settings: Settings) -> None:
    """Production chains under a configured key only: a key generated per node
    would give each node a chain no other node's key verifies."""
    if settings.is_production and not settings.configured_audit_key():
        raise SystemExit(
            "Production needs PLEDGEQL_AUDIT_KEY: set it to the audit chain's secret key, the same on every node "
            "(and for pledgeql audit verify); it is never generated in production"
        )


def _category_fields() -> dict[DataCategory, list[str]]:
    return {DataCategory(k): v for k, v in category_fields().items()}


def create_app(
    settings: Settings | None = None, urls: DatabaseUrls | None = None, *, telemetry: Telemetry | None = None
) -> Starlette:
    settings = settings or Settings.from_env()
    policies = load_policy_set(settings.policy_dirs)
    schema = build_schema(policies)
    state = AppState(settings=settings, policies=policies, schema=schema)
    # Configuration errors stop the server here, before it serves anything.
    check_audit_key(settings)
    verifier = TokenVerifier(settings)
    registry = load_registry(settings, graphql_schema(schema))
    cors = cors_options(settings)
    telemetry = telemetry or Telemetry.from_env()
    if telemetry.enabled:
        trace_root_fields(graphql_schema(schema))
    rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    live_limits = LiveLimits.from_env(settings.extra)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.is_production and registry is not None:
            # Every query the clients ship is planned before anything is served.
            strict = settings.extra.get(UNPLANNED_OPERATIONS) != "resolvers"
            plan_operations(registry, Planner(graphql_schema(schema)), strict=strict)
        database = urls or server_urls(settings)
        engine = create_serving_engine(database.app, settings)
        state.engine = engine

        # One writer for every audit write of the worker (each chain's head known once).
        audit = AuditWriterGroups(settings.audit_key(), settings.audit_lock_timeout)
        state.endpoint = GraphQLEndpoint(
            schema=graphql_schema(schema),
            policies=policies,
            verifier=verifier,
            acquire=functools.partial(driver_connection, engine, transaction=True),
            production=settings.is_production,
            audit_writer=StuckChainGuard(audit),
            refusal_writer=audit.write_own,
            trusted_proxy_header=settings.trusted_proxy_header,
            limits=Limits.from_settings(settings),
            registry=registry,
            rate_limiter=rate_limiter,
            telemetry=telemetry,
            max_body_bytes=settings.max_body_bytes,
            compiled=CompiledReads(),
            server_timing=settings.sends_server_timing,
        )
        state.live = LiveService(state.endpoint, LiveHub(database.app), live_limits)
        undo_signals = state.live.on_shutdown_signal()
        upkeep = asyncio.create_task(keep_audit_partitions(lambda: driver_connection(engine, transaction=True)))
        try:
            yield
        finally:
            upkeep.cancel()
            undo_signals()
            await state.live.close()
            # Runs after the server has finished its in-flight requests (and
            # their audit writes): uvicorn's graceful shutdown comes first.
            await engine.dispose()
            telemetry.shutdown()

    async def graphql(request: Request) -> Response:
        if (
            request.method == "GET"
            and not settings.is_production
            and "text/html" in request.headers.get("accept", "")
            and "query" not in request.query_params
        ):
            return graphiql_page(settings.graphiql_token)
        if state.endpoint is None or state.live is None:
            return JSONResponse({"errors": [{"message": "Starting", "extensions": {"code": "INTERNAL"}}]}, 503)
        if wants_event_stream(request):
            return await serve_sse(state.live, request)
        return await state.endpoint.handle(request)

    async def graphql_ws(websocket: WebSocket) -> None:
        await serve_websocket(state.live, websocket)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        from server.commands.migrate import head_revision

        if state.engine is None:
            return JSONResponse({"status": "starting"}, 503)
        try:
            async with driver_connection(state.engine, transaction=True) as connection:
                current = await connection.fetchval("SELECT version_num FROM alembic_version")
        except Exception as error:  # any failure to reach the database means not ready
            log.warning("Readiness check failed: %s", type(error).__name__)
            return JSONResponse({"status": "database unavailable"}, 503)
        if current != head_revision():
            return JSONResponse({"status": "migrations pending"}, 503)
        return JSONResponse({"status": "ready"})

    def _policies_today() -> PolicySet:
        """The versions in effect by the requests' clock (no version applies before its date)."""
        today = state.endpoint.clock().date() if state.endpoint is not None else dt.datetime.now(dt.UTC).date()
        return policies.in_effect(today)

    async def privacy(request: Request) -> Response:
        doc = _policies_today().latest()
        return privacy_response(request, doc, _category_fields())

    async def privacy_district(request: Request) -> Response:
        # It reads the database: limited by client address, as requests without a token are.
        wait = rate_limiter.take(f"ip:{client_address(request, settings.trusted_proxy_header) or 'unknown'}")
        if wait > 0:
            return HTMLResponse(
                "<!doctype html><title>Too many requests</title><p>Too many requests; try again shortly.</p>",
                429,
                headers={"retry-after": retry_after_header(wait)},
            )
        try:
            district_id = uuid.UUID(request.path_params["district_id"])
        except ValueError:
            return HTMLResponse("<!doctype html><title>Not found</title><p>No such district.</p>", 404)
        if state.engine is None:
            return HTMLResponse("<!doctype html><title>Starting</title>", 503)
        try:
            async with driver_connection(state.engine, transaction=True) as connection:
                row = await connection.fetchrow("SELECT * FROM districts WHERE id = $1", district_id)
        except Exception as error:
            if not is_connection_error(error):
                raise
            log.warning("Privacy page without a database: %s", type(error).__name__)
            return HTMLResponse("<!doctype html><title>Unavailable</title><p>Try again shortly.</p>", 503)
        if row is None:
            return HTMLResponse("<!doctype html><title>Not found</title><p>No such district.</p>", 404)
        notice = notice_from_row(row)
        doc = _policies_today().governing(notice.conditions.accepted_version)
        return privacy_response(request, doc, _category_fields(), notice)

    middleware = [
        Middleware(TelemetryMiddleware, telemetry=telemetry),
        Middleware(RequestIdMiddleware),
        Middleware(ApiCORSMiddleware, **cors),
    ]
    app = Starlette(
        middleware=middleware,
        routes=[
            # Every method reaches the endpoint, which serves GET and POST and answers
            # any other (HEAD, TRACE, PROPFIND included) 405 without running anything.
            Route("/graphql", _EveryMethod(request_response(graphql))),
            WebSocketRoute("/graphql", graphql_ws),
            *(() if settings.is_production else (Route(f"{PREFIX}{{name}}", graphiql_asset),)),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/privacy", privacy),
            Route("/privacy/{district_id}", privacy_district),
        ],
        lifespan=lifespan,
    )
    # /graphql/ is not /graphql: no redirect that would echo the request's Host header back.
    app.router.redirect_slashes = False
    app.state.pledgeql = state
    return app
