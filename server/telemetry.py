"""OpenTelemetry: what the server does, never what it returns.

Spans: one per HTTP request (method and route template: never the query
string, headers or client address), one per GraphQL operation (its name, type
and the sha256 of its canonical document: never its text or variables), one
per root field, one per database statement (the SQL text, which carries only
numbered placeholders: values travel as bind parameters and are never
recorded), and one for the audit write. Below the root there are no per-field
spans: a classified field's check is a dictionary lookup, and a span per field
would cost more than the field.

Exceptions are never recorded on spans (their messages can carry values): a
failed span carries the exception's type name only.

Metrics: requests (by route, method, status) and their duration, errors by
code, denials by reason, audit entries written and the audit write's latency.

Export: OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or the per-signal
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / _METRICS_ENDPOINT) is set, configured by
the standard OTEL_ variables; otherwise nothing is recorded at all.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from graphql import GraphQLField, GraphQLSchema, default_field_resolver
from opentelemetry import metrics, trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode

from resolvers.db import Db

log = logging.getLogger("pledgeql.telemetry")

ROUTES = ("/graphql", "/healthz", "/readyz", "/privacy")
# Request-level refusals counted as denials, beside FORBIDDEN's reasons.
REFUSALS = frozenset({"PURPOSE_NOT_ALLOWED", "DIRECT_ACCESS_DISABLED", "JUSTIFICATION_REQUIRED", "UNAUTHENTICATED"})
SAFE_NAME = re.compile(r"[^A-Za-z0-9_]")
Attributes = Mapping[str, str | int | float | bool]

_current: contextvars.ContextVar[Telemetry | None] = contextvars.ContextVar("pledgeql_telemetry", default=None)


def _exporting(env: Mapping[str, str], signal: str) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))


def route_of(path: str) -> str:
    """The route template: a path's variable parts are not recorded."""
    if path.startswith("/privacy/"):
        return "/privacy/{district_id}"
    return path if path in ROUTES else "other"


def operation_label(name: str | None) -> str:
    """An operation name as an identifier only, at most 100 characters."""
    return SAFE_NAME.sub("_", name)[:100] if name else "anonymous"


class Telemetry:
    """The app's tracer and instruments; ``enabled`` is False when nothing would be kept."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.enabled = tracer_provider is not None
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self.tracer = (tracer_provider or trace.NoOpTracerProvider()).get_tracer("pledgeql")
        meter = (meter_provider or metrics.NoOpMeterProvider()).get_meter("pledgeql")
        self.requests = meter.create_counter("pledgeql.http.requests", description="HTTP requests served")
        self.request_duration = meter.create_histogram(
            "pledgeql.http.duration", unit="s", description="HTTP request duration"
        )
        self.errors = meter.create_counter("pledgeql.errors", description="Errors returned, by extensions.code")
        self.denials = meter.create_counter(
            "pledgeql.denials", description="Denied fields (by FORBIDDEN reason) and refused requests (by code)"
        )
        self.audit_entries = meter.create_counter("pledgeql.audit.entries", description="Audit entries written")
        self.audit_duration = meter.create_histogram(
            "pledgeql.audit.write.duration", unit="s", description="Audit write latency"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Telemetry:
        """OTLP export when the standard OTEL_ variables ask for it; otherwise off."""
        env = os.environ if env is None else env
        traces, meters = _exporting(env, "TRACES"), _exporting(env, "METRICS")
        if not traces and not meters:
            return cls()
        from opentelemetry.sdk.resources import Resource

        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "pledgeql")})
        tracer_provider = None
        meter_provider = None
        if traces:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            sdk_tracer = TracerProvider(resource=resource)
            sdk_tracer.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            tracer_provider = sdk_tracer
        if meters:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            meter_provider = MeterProvider(
                resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
            )
        log.info("OpenTelemetry export on (traces: %s, metrics: %s)", traces, meters)
        return cls(tracer_provider, meter_provider)

    def shutdown(self) -> None:
        for provider in (self._tracer_provider, self._meter_provider):
            stop = getattr(provider, "shutdown", None)
            if stop is not None:
                stop()

    # ------------------------------------------------------------- spans

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        attributes: Attributes | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        parent: Context | None = None,
    ) -> Iterator[Any]:
        """A span that never records an exception's message, only its type
        (under ``parent``, a caller's trace context, when given)."""
        if not self.enabled:
            yield None
            return
        with self.tracer.start_as_current_span(
            name,
            context=parent,
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise

    @contextlib.contextmanager
    def sibling_spans(self, names: list[str], attributes: Attributes | None = None) -> Iterator[None]:
        """One span per name, siblings under the current span over the same time:
        the root fields one compiled statement serves. The first is current (the
        statement's span is its child)."""
        if not self.enabled or not names:
            yield
            return
        others = [
            self.tracer.start_span(n, attributes=attributes, record_exception=False, set_status_on_exception=False)
            for n in names[1:]
        ]
        try:
            with self.span(names[0], attributes):
                yield
        except BaseException as error:
            for other in others:
                other.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            for other in others:
                other.end()

    def activate(self) -> None:
        """Make this telemetry the one the root-field spans of the current request use."""
        _current.set(self if self.enabled else None)

    def database(self, connection: Any) -> Db:
        return TracedDb(connection, self) if self.enabled else Db(connection)

    # ----------------------------------------------------------- metrics

    def record_request(self, route: str, method: str, status: int, seconds: float) -> None:
        attributes: dict[str, str | int] = {
            "http.route": route,
            "http.request.method": method,
            "http.response.status_code": status,
        }
        self.requests.add(1, attributes)
        self.request_duration.record(seconds, attributes)

    def record_errors(self, errors: list[dict[str, Any]]) -> None:
        for error in errors:
            extensions = error.get("extensions") or {}
            code = str(extensions.get("code", "INTERNAL"))
            self.errors.add(1, {"code": code})
            if code == "FORBIDDEN":
                self.denials.add(1, {"reason": str(extensions.get("reason", "UNKNOWN"))})
            elif code in REFUSALS:
                self.denials.add(1, {"reason": code})

    def record_audit(self, entries: int, seconds: float) -> None:
        self.audit_entries.add(entries)
        self.audit_duration.record(seconds)


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits), for the audit entry; None when not tracing."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


# ------------------------------------------------------------- the database


def _statement_kind(sql: str) -> str:
    head = sql.lstrip().split(None, 1)
    return head[0].upper()[:16] if head else "SQL"


class TracedDb(Db):
    """The request's database handle with a span per statement (its SQL text, never its values)."""

    __slots__ = ("_telemetry",)

    def __init__(self, conn: Any, telemetry: Telemetry) -> None:
        super().__init__(conn)
        self._telemetry = telemetry

    def _span(self, sql: str) -> contextlib.AbstractContextManager[Any]:
        kind = _statement_kind(sql)
        return self._telemetry.span(
            f"db {kind}",
            {"db.system.name": "postgresql", "db.operation.name": kind, "db.query.text": sql},
            SpanKind.CLIENT,
        )

    async def fetch(self, sql: str, *args: Any) -> Any:
        with self._span(sql):
            return await super().fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        with self._span(sql):
            return await super().fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        with self._span(sql):
            return await super().fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        with self._span(sql):
            return await super().execute(sql, *args)

    async def copy_records(self, table: str, records: list[tuple[Any, ...]], columns: list[str]) -> None:
        with self._span(f"COPY {table}"):
            await super().copy_records(table, records, columns)


# ------------------------------------------------------------- root fields

_TRACED = "__pledgeql_traced__"


def _traced_resolver(resolve: Callable[..., Any], label: str) -> Callable[..., Any]:
    def traced(source: Any, info: Any, **args: Any) -> Any:
        telemetry = _current.get()
        if telemetry is None:
            return resolve(source, info, **args)
        span = telemetry.tracer.start_span(
            label, attributes={"graphql.field.name": info.field_name}, record_exception=False
        )
        try:
            result = resolve(source, info, **args)
        except BaseException as error:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()
            raise
        if not inspect.isawaitable(result):
            span.end()
            return result

        async def finish(awaitable: Awaitable[Any]) -> Any:
            with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
                try:
                    return await awaitable
                except BaseException as error:
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                    raise

        return finish(result)

    setattr(traced, _TRACED, True)
    return traced


def trace_root_fields(schema: GraphQLSchema) -> None:
    """Give each Query and Mutation field a span (once per schema; a no-op while not tracing)."""
    for root in (schema.query_type, schema.mutation_type):
        if root is None:
            continue
        for name, field in root.fields.items():
            if not isinstance(field, GraphQLField) or getattr(field.resolve, _TRACED, False):
                continue
            field.resolve = _traced_resolver(field.resolve or default_field_resolver, f"resolve {root.name}.{name}")


class _HeaderCarrier(dict[str, str]):
    """An ASGI request's headers as a propagator reads them (lower-case names)."""

    def __init__(self, scope: Any) -> None:
        super().__init__()
        for name, value in scope.get("headers", ()):
            key = name.decode("latin-1").lower()
            if key not in self:
                self[key] = value.decode("latin-1")


class TelemetryMiddleware:
    """A span and the request metrics around every HTTP request (ASGI middleware)."""

    def __init__(self, app: Any, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_of(scope.get("path", ""))
        method = scope.get("method", "GET")
        status = 500
        started = time.perf_counter()

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # A browser's or a gateway's trace continues here (W3C traceparent and
        # tracestate, or what OTEL_PROPAGATORS names); a malformed header is
        # ignored and the request starts a trace of its own.
        parent = None
        joined = None
        if self.telemetry.enabled:
            parent = extract(_HeaderCarrier(scope))
        elif any(name == b"traceparent" for name, _ in scope.get("headers", ())):
            # No spans are made here, but the request is still part of the caller's trace:
            # its audit entries carry that trace's id (``current_trace_id``).
            joined = attach(extract(_HeaderCarrier(scope)))
        try:
            with self.telemetry.span(
                f"{method} {route}",
                {"http.request.method": method, "http.route": route, "url.path": route},
                SpanKind.SERVER,
                parent,
            ) as span:
                await self.app(scope, receive, send_status)
                if span is not None:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR, str(status)))
        finally:
            if joined is not None:
                detach(joined)
            self.telemetry.record_request(route, method, status, time.perf_counter() - started)
