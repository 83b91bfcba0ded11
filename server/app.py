"""The Starlette application: routes, lifespan, and the shared state they use."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from permissions.enums import DataCategory, Purpose
from permissions.notice import DistrictNotice, render_privacy_html
from permissions.policy import PolicySet, load_policy_set
from schema.build import build_schema, category_fields
from server.audit_writer import make_audit_writer
from server.auth import TokenVerifier
from server.db import DatabaseUrls, create_engine, server_urls
from server.graphql_http import GraphQLEndpoint
from server.settings import Settings

log = logging.getLogger("pledgeql.app")

GRAPHIQL = """<!doctype html>
<html><head><meta charset="utf-8"><title>pledgeql GraphiQL</title>
<link rel="stylesheet" href="https://unpkg.com/graphiql@3/graphiql.min.css"></head>
<body style="margin:0"><div id="g" style="height:100vh"></div>
<script src="https://unpkg.com/react@18/umd/react.production.min.js"></script>
<script src="https://unpkg.com/react-dom@18/umd/react-dom.production.min.js"></script>
<script src="https://unpkg.com/graphiql@3/graphiql.min.js"></script>
<script>
const fetcher = GraphiQL.createFetcher({url: location.pathname});
ReactDOM.createRoot(document.getElementById('g')).render(React.createElement(GraphiQL, {
  fetcher, defaultHeaders: '{"Authorization": "Bearer <token>", "X-Purpose": "INSTRUCTION"}'}));
</script></body></html>"""


@dataclass
class AppState:
    settings: Settings
    policies: PolicySet
    schema: strawberry.Schema
    engine: AsyncEngine | None = None
    endpoint: GraphQLEndpoint | None = None


@contextlib.asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[Any]:
    """A pooled connection as asyncpg's own connection object."""
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        yield raw.driver_connection


def _category_fields() -> dict[DataCategory, list[str]]:
    return {DataCategory(k): v for k, v in category_fields().items()}


def create_app(settings: Settings | None = None, urls: DatabaseUrls | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    policies = load_policy_set(settings.policy_dirs)
    schema = build_schema(policies)
    state = AppState(settings=settings, policies=policies, schema=schema)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database = urls or server_urls(settings)
        engine = create_engine(database.app, pool_size=settings.pool_size)
        state.engine = engine

        state.endpoint = GraphQLEndpoint(
            schema=schema._schema,
            policies=policies,
            verifier=TokenVerifier(settings),
            acquire=lambda: driver_connection(engine),
            production=settings.is_production,
            audit_writer=make_audit_writer(settings.audit_key()),
            trusted_proxy_header=settings.trusted_proxy_header,
        )
        try:
            yield
        finally:
            await engine.dispose()

    async def graphql(request: Request) -> Response:
        if (
            request.method == "GET"
            and not settings.is_production
            and "text/html" in request.headers.get("accept", "")
            and "query" not in request.query_params
        ):
            return HTMLResponse(GRAPHIQL)
        if state.endpoint is None:
            return JSONResponse({"errors": [{"message": "Starting", "extensions": {"code": "INTERNAL"}}]}, 503)
        return await state.endpoint.handle(request)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        from server.migrate import head_revision

        if state.engine is None:
            return JSONResponse({"status": "starting"}, 503)
        try:
            async with driver_connection(state.engine) as connection:
                current = await connection.fetchval("SELECT version_num FROM alembic_version")
        except Exception as error:  # any failure to reach the database means not ready
            log.warning("Readiness check failed: %s", type(error).__name__)
            return JSONResponse({"status": "database unavailable"}, 503)
        if current != head_revision():
            return JSONResponse({"status": "migrations pending"}, 503)
        return JSONResponse({"status": "ready"})

    async def privacy(request: Request) -> Response:
        doc = policies.latest()
        return HTMLResponse(render_privacy_html(doc, _category_fields()))

    async def privacy_district(request: Request) -> Response:
        try:
            district_id = uuid.UUID(request.path_params["district_id"])
        except ValueError:
            return HTMLResponse("<!doctype html><title>Not found</title><p>No such district.</p>", 404)
        if state.engine is None:
            return HTMLResponse("<!doctype html><title>Starting</title>", 503)
        async with driver_connection(state.engine) as connection:
            row = await connection.fetchrow("SELECT * FROM districts WHERE id = $1", district_id)
        if row is None:
            return HTMLResponse("<!doctype html><title>Not found</title><p>No such district.</p>", 404)
        notice = DistrictNotice(
            name=row["name"],
            district_id=str(row["id"]),
            accepted_version=row["accepted_policy_version"],
            authorized_purposes=frozenset(Purpose(p) for p in row["authorized_purposes"] if p in Purpose.__members__),
            collect_usage=row["collect_usage"],
            collect_device=row["collect_device"],
            collect_demographics=row["collect_demographics"],
            direct_record_access=row["direct_record_access"],
            minimum_group_size=row["minimum_group_size"],
            responses_days=row["responses_days"],
            activity_days=row["activity_days"],
            device_days=row["device_days"],
            audit_days=row["audit_days"],
        )
        doc = policies.governing(row["accepted_policy_version"])
        return HTMLResponse(render_privacy_html(doc, _category_fields(), notice))

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/privacy", privacy),
            Route("/privacy/{district_id}", privacy_district),
        ],
        lifespan=lifespan,
    )
    app.state.pledgeql = state
    return app
