"""Subscriptions: ``classActivity`` events, each decided and audited like a query.

Events come from PostgreSQL: a trigger (migration 0011) notifies the
district's channel in the writing transaction, so a notification exists only
once the response or the session event has committed, and every app node and
worker that listens gets it, with no other broker. A notification carries ids
only. ``LiveHub`` holds one listening connection per process and hands each
notification to the subscriptions of the classes it names.

A subscription is admitted like a request (token, purpose, the caller read
from the database, the request-level policy checks, through
``GraphQLEndpoint.admit``) and must reach the class it names as reading the
class does (POLICY.md section 3): another district's class answers NOT_FOUND
exactly like a class that does not exist, and the events it hears are those
of the class's students within the caller's row scope. Then, for each
event, in a transaction of its own: the caller is admitted again (so its
standing is never older than the event), the class checked again, the
student and the event read back under the caller's row scope, the selection
executed against the schema with the event as its root value (so every
classified field is decided and noted as in a query), and the audit entries
written (group commit) before the event is sent. With no events, the standing
is re-read every ``recheck_seconds`` (at most 60). A subscription ends with
an error when its caller loses access (UNAUTHENTICATED, PURPOSE_NOT_ALLOWED,
NOT_FOUND for the class, FORBIDDEN when the district stops authorizing the
purpose), when its token expires (UNAUTHENTICATED), when its audit cannot be
written (AUDIT_UNAVAILABLE: that event is not sent), when the database cannot
be reached (DATABASE_UNAVAILABLE), or when more than ``queue`` events wait
for a slow consumer (SLOW_CONSUMER: the waiting events are dropped unread and
unaudited).

The transports (server/subscriptions_ws.py, server/subscriptions_sse.py) only
move messages.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from graphql import DocumentNode, FieldNode, GraphQLError, OperationDefinitionNode, OperationType
from graphql import execute as graphql_execute
from graphql.execution.values import VariableValues, get_argument_values

from permissions.enums import DenyReason, Purpose
from permissions.errors import RequestError, refusal_message
from resolvers import live
from resolvers.db import Db
from resolvers.reads import Row
from schema.enums import ActivityKind
from schema.subscription import ClassActivity
from schema.types import Response, Student
from server.auth import TokenClaims
from server.context import ClientInfo, RequestContext
from server.db import connect
from server.documents import select_operation
from server.failures import (
    UNAVAILABLE_MESSAGE,
    AuditUnavailable,
    end_transaction,
    is_connection_error,
    unavailable,
)
from server.graphql_http import GraphQLEndpoint
from server.headers import checked_justification
from server.http_request import GraphQLRequest
from server.replies import format_error

log = logging.getLogger("pledgeql.live")

CHANNEL_PREFIX = "pledgeql_live_"
Send = Callable[[dict[str, Any]], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True)
class LiveLimits:
    """Subscription limits; ``PLEDGEQL_LIVE_*`` variables (or ``Settings.extra``) override the defaults."""

    per_connection: int = 10
    per_user: int = 20
    queue: int = 100
    recheck_seconds: float = 60.0
    ping_seconds: float = 15.0
    init_timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, extra: Mapping[str, str] | None = None) -> LiveLimits:
        values: dict[str, str] = {**os.environ, **(extra or {})}
        defaults = cls()

        def number(name: str, default: float) -> float:
            raw = values.get(f"PLEDGEQL_LIVE_{name}", "").strip()
            if not raw:
                return default
            # Which variable and why, never its value (as every other configuration error).
            try:
                value = float(raw)
            except ValueError:
                raise SystemExit(f"Invalid configuration: PLEDGEQL_LIVE_{name} must be a number") from None
            if not value > 0 or value == float("inf"):
                raise SystemExit(f"Invalid configuration: PLEDGEQL_LIVE_{name} must be a positive number")
            return value

        return cls(
            per_connection=int(number("PER_CONNECTION", defaults.per_connection)),
            per_user=int(number("PER_USER", defaults.per_user)),
            queue=int(number("QUEUE", defaults.queue)),
            # The contract: standing is read again at least every 60 seconds.
            recheck_seconds=min(number("RECHECK_SECONDS", defaults.recheck_seconds), 60.0),
            ping_seconds=number("PING_SECONDS", defaults.ping_seconds),
            init_timeout_seconds=number("INIT_TIMEOUT_SECONDS", defaults.init_timeout_seconds),
        )


class OperationErrors(Exception):
    """A document that does not validate, or variables that do not coerce: GraphQL errors, no subscription."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("operation errors")
        self.errors = errors


class Ended(Exception):
    """The subscription ends with this error."""

    def __init__(self, error: RequestError) -> None:
        super().__init__(error.code)
        self.error = error


def error_payload(error: RequestError) -> list[dict[str, Any]]:
    """A refusal as the GraphQL errors a transport sends."""
    return [{"message": error.message, "extensions": error.extensions_dict()}]


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One notification: ids only."""

    table: str  # "r": a response; "a": an activity event
    row_id: uuid.UUID
    student_id: uuid.UUID
    # The classes it is in; None when the notification left them out (read back to decide).
    classes: frozenset[uuid.UUID] | None
    received: float  # time.time() when this process received it

    @classmethod
    def parse(cls, payload: str) -> LiveEvent:
        data = orjson.loads(payload)
        classes = data.get("c")
        return cls(
            table="r" if data["t"] == "r" else "a",
            row_id=uuid.UUID(data["id"]),
            student_id=uuid.UUID(data["s"]),
            classes=None if classes is None else frozenset(uuid.UUID(c) for c in classes),
            received=time.time(),
        )


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an orphaned transaction's failure is not logged as never retrieved


async def shielded(work: Awaitable[T]) -> T:
    """``work`` (a transaction) run to its end even if the subscription is cancelled meanwhile.

    A cancellation delivered inside a transaction's rollback or commit would
    hand the connection back to the pool still in a transaction: a client that
    goes away only stops what comes after."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieved)
    return await asyncio.shield(task)


def channel(district_id: uuid.UUID) -> str:
    return CHANNEL_PREFIX + district_id.hex


class LiveHub:
    """One LISTEN connection per process, listening to the districts that have subscribers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._by_district: dict[uuid.UUID, set[LiveSubscription]] = {}

    async def add(self, subscription: LiveSubscription) -> None:
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await connect(self.url)
                self._conn.add_termination_listener(self._lost)
            district = subscription.district_id
            subscribers = self._by_district.get(district)
            if subscribers is None:
                await self._conn.add_listener(channel(district), self._notified)
                subscribers = self._by_district[district] = set()
            subscribers.add(subscription)

    async def remove(self, subscription: LiveSubscription) -> None:
        async with self._lock:
            district = subscription.district_id
            subscribers = self._by_district.get(district)
            if subscribers is None or subscription not in subscribers:
                return
            subscribers.discard(subscription)
            if subscribers:
                return
            del self._by_district[district]
            if self._conn is not None and not self._conn.is_closed():
                with contextlib.suppress(Exception):
                    await self._conn.remove_listener(channel(district), self._notified)

    def _notified(self, conn: Any, pid: int, name: str, payload: str) -> None:
        try:
            district = uuid.UUID(hex=name.removeprefix(CHANNEL_PREFIX))
            event = LiveEvent.parse(payload)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("Ignored a live notification that is not pledgeql's")
            return
        for subscription in list(self._by_district.get(district, ())):
            if event.classes is None or subscription.class_id in event.classes:
                subscription.offer(event)

    def _lost(self, conn: Any) -> None:
        """The listening connection is gone: events may be missed, so every subscription ends."""
        if conn is not self._conn:
            return
        self._conn = None
        log.warning("The live events connection to the database was lost; subscriptions end")
        for subscribers in list(self._by_district.values()):
            for subscription in list(subscribers):
                subscription.end(RequestError("DATABASE_UNAVAILABLE", UNAVAILABLE_MESSAGE))
        self._by_district.clear()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)


@dataclass(frozen=True)
class Caller:
    """Who subscribes, as the transport presented them: checked again at every event."""

    claims: TokenClaims
    purpose: Purpose
    justification: str | None
    client: ClientInfo
    # The client's X-Request-Id (SSE: the request's header; WebSocket: connection_init's
    # payload), kept as clientRequestId on every event's audit entries.
    client_request_id: str | None = None


class LiveService:
    """Starts subscriptions and keeps the per-user count; one per app."""

    def __init__(self, endpoint: GraphQLEndpoint, hub: LiveHub, limits: LiveLimits) -> None:
        self.endpoint = endpoint
        self.hub = hub
        self.limits = limits
        self.per_user: collections.Counter[uuid.UUID] = collections.Counter()
        self.active: set[LiveSubscription] = set()
        self.closing = False

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Db]:
        """A read-only transaction on the app role's pool."""
        async with self.endpoint.acquire() as raw:  # in its transaction (server.app.driver_connection)
            db = self.endpoint.telemetry.database(raw)
            try:
                yield db
            finally:
                await db.close()

    def caller(
        self,
        authorization: str | None,
        purpose: str | None,
        justification: str | None,
        client: ClientInfo,
        client_request_id: str | None = None,
    ) -> Caller:
        """The token verified (and the caller's rate limit charged) and the purpose parsed, as for any request."""
        if authorization is None:
            raise RequestError("UNAUTHENTICATED", "Sign in: subscriptions need a bearer token")
        by_address = f"ip:{client.ip_address or 'unknown'}"
        try:
            claims = self.endpoint.verifier.verify(authorization)
        except RequestError:
            self.endpoint._limit(by_address)
            raise
        self.endpoint._limit(f"sub:{claims.user_id}")
        declared = self.endpoint.parse_purpose(purpose)
        return Caller(claims, declared, checked_justification(justification, declared), client, client_request_id)

    def charge(self, caller: Caller) -> None:
        """One more request against the caller's rate limit (each subscribe on a WebSocket is one)."""
        self.endpoint._limit(f"sub:{caller.claims.user_id}")

    async def admit(self, db: Db, caller: Caller, request_id: str, operation_name: str | None) -> RequestContext:
        if caller.claims.expires_at is not None and time.time() >= caller.claims.expires_at:
            raise RequestError("UNAUTHENTICATED", "Sign in again: the token has expired")
        context = await self.endpoint.admit(
            db,
            caller.claims,
            caller.purpose,
            caller.justification,
            self.endpoint.clock(),
            request_id=request_id,
            client_request_id=caller.client_request_id,
            operation_name=operation_name,
            client=caller.client,
            read_only=True,
        )
        home = context.conditions.get(context.home_district_key)
        if home is not None and caller.purpose not in home.authorized_purposes:
            reason = DenyReason.PURPOSE_NOT_AUTHORIZED_BY_DISTRICT.value
            raise RequestError(
                "FORBIDDEN",
                refusal_message("its data", caller.purpose.value, reason),
                purpose=caller.purpose.value,
                reason=reason,
            )
        return context

    async def check_connection(self, caller: Caller) -> None:
        """A WebSocket's connection_init: the caller admitted once, before anything is subscribed."""

        async def admitted() -> None:
            async with self.transaction() as db:
                await self.admit(db, caller, uuid.uuid4().hex, None)

        try:
            await shielded(admitted())
        except RequestError:
            raise
        except Exception as error:
            if not is_connection_error(error):
                raise
            raise RequestError("DATABASE_UNAVAILABLE", UNAVAILABLE_MESSAGE) from None

    async def start(
        self, caller: Caller, gql: GraphQLRequest, send: Send, request_id: str | None = None
    ) -> LiveSubscription:
        """Validate, admit and register one subscription; it delivers once ``run`` is awaited.
        Its events are audited as requests ``<request_id>.<n>`` (the SSE response's X-Request-Id;
        a WebSocket's subscriptions, many to a connection, each get an id of their own).

        Raises RequestError (a refusal) or OperationErrors (validation)."""
        if self.closing:
            raise RequestError("DATABASE_UNAVAILABLE", "The server is shutting down; subscribe again shortly")
        endpoint = self.endpoint
        prepared = endpoint.documents.get(endpoint.resolve_persisted(gql))
        if prepared.errors:
            raise OperationErrors([format_error(e, endpoint.production) for e in prepared.errors])
        operation = select_operation(prepared.document, gql.operation_name)
        if operation.operation is not OperationType.SUBSCRIPTION:
            raise RequestError(
                "BAD_USER_INPUT", "Only subscriptions are served here: send queries and mutations to POST /graphql"
            )
        variables = endpoint.coerce_variables(prepared, operation, gql.variables)
        if isinstance(variables, list):
            raise OperationErrors(variables)
        class_id = self._class_argument(operation, variables)
        if self.per_user[caller.claims.user_id] >= self.limits.per_user:
            raise RequestError(
                "RATE_LIMITED",
                f"At most {self.limits.per_user} subscriptions per user at once: complete one first",
                limit="subscriptionsPerUser",
                value=self.limits.per_user,
            )
        operation_name = gql.operation_name or (operation.name.value if operation.name else None)
        subscription = LiveSubscription(
            self, caller, gql, prepared.document, operation_name, class_id, send, request_id or uuid.uuid4().hex
        )

        async def admitted() -> uuid.UUID:
            async with self.transaction() as db:
                context = await self.admit(db, caller, subscription.id, operation_name)
                return await subscription.check_class(context)

        try:
            district = await shielded(admitted())
        except RequestError:
            raise
        except Exception as error:
            if not is_connection_error(error):
                raise
            raise RequestError("DATABASE_UNAVAILABLE", UNAVAILABLE_MESSAGE) from None
        subscription.district_id = district
        self.per_user[caller.claims.user_id] += 1
        self.active.add(subscription)
        try:
            await self.hub.add(subscription)
        except BaseException as error:
            self.release(subscription)
            if isinstance(error, Exception) and is_connection_error(error):
                raise RequestError("DATABASE_UNAVAILABLE", UNAVAILABLE_MESSAGE) from None
            raise
        return subscription

    def _class_argument(self, operation: OperationDefinitionNode, variables: VariableValues | None) -> uuid.UUID:
        selections = operation.selection_set.selections
        root = selections[0] if len(selections) == 1 else None
        if not isinstance(root, FieldNode) or root.name.value != "classActivity":
            raise RequestError("BAD_USER_INPUT", "Subscribe to classActivity, selected directly (not in a fragment)")
        subscription_type = self.endpoint.schema.subscription_type
        if subscription_type is None:
            raise RuntimeError("the schema has no Subscription type")
        try:
            arguments = get_argument_values(subscription_type.fields["classActivity"], root, variables)
        except GraphQLError as error:
            raise RequestError("BAD_USER_INPUT", error.message) from None
        try:
            return uuid.UUID(str(arguments["classId"]))
        except ValueError:
            raise RequestError("NOT_FOUND", "Class not found") from None

    def release(self, subscription: LiveSubscription) -> None:
        if subscription in self.active:
            self.active.discard(subscription)
            user = subscription.caller.claims.user_id
            self.per_user[user] -= 1
            if self.per_user[user] <= 0:
                del self.per_user[user]

    def shutdown(self) -> None:
        """Stop taking subscriptions and end the running ones, uncompleted: the transports close
        their connections (WebSocket 1012) so that the clients reconnect and subscribe again."""
        self.closing = True
        for subscription in list(self.active):
            subscription.end(None)

    def on_shutdown_signal(self) -> Callable[[], None]:
        """Chain onto the server's SIGTERM and SIGINT handlers: end subscriptions as uvicorn starts
        its graceful shutdown, instead of holding it until its timeout. Returns the undo.

        Only from the main thread (a worker process); elsewhere (a server in a test's thread) nothing
        is installed and subscriptions end when the app's lifespan closes."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}

        def handler(number: int, frame: Any) -> None:
            loop.call_soon_threadsafe(self.shutdown)
            chained = previous[signal.Signals(number)]
            if callable(chained):
                chained(number, frame)

        for number in previous:
            signal.signal(number, handler)

        def undo() -> None:
            for number, chained in previous.items():
                if signal.getsignal(number) is handler:
                    signal.signal(number, chained)

        return undo

    async def close(self) -> None:
        self.shutdown()
        await self.hub.close()


class LiveSubscription:
    """One subscriber's class: events in, decided and audited events out."""

    def __init__(
        self,
        service: LiveService,
        caller: Caller,
        gql: GraphQLRequest,
        document: DocumentNode,
        operation_name: str | None,
        class_id: uuid.UUID,
        send: Send,
        request_id: str,
    ) -> None:
        self.service = service
        self.caller = caller
        self.gql = gql
        self.document = document
        self.operation_name = operation_name
        self.class_id = class_id
        self.district_id = uuid.UUID(int=0)
        self.send = send
        self.id = request_id
        self.sequence = 0
        self.delivered = 0
        self._events: collections.deque[LiveEvent] = collections.deque()
        self._ready = asyncio.Event()
        self._ending: RequestError | None = None
        self._ended = False
        self._next_check = time.monotonic() + service.limits.recheck_seconds
        self._class_row: Row | None = None

    # ---------------------------------------------------------------- input

    def offer(self, event: LiveEvent) -> None:
        if self._ended:
            return
        if len(self._events) >= self.service.limits.queue:
            self.end(
                RequestError(
                    "SLOW_CONSUMER",
                    f"More than {self.service.limits.queue} events waited for this subscriber, which reads too "
                    "slowly; the subscription ends (the waiting events were not sent). Subscribe again",
                    limit="subscriptionQueue",
                    value=self.service.limits.queue,
                )
            )
            return
        self._events.append(event)
        self._ready.set()

    def end(self, error: RequestError | None) -> None:
        """End the subscription: with ``error``, or completed (None, at shutdown)."""
        if self._ended:
            return
        self._ended = True
        self._ending = error
        self._events.clear()  # never read, never audited, never sent
        self._ready.set()

    # ------------------------------------------------------------------ run

    async def run(self) -> RequestError | None:
        """Deliver events until the subscription ends; the error it ends with (None: completed)."""
        try:
            while True:
                if self._ended:
                    return self._ending
                if not self._events:
                    wait = self._next_check - time.monotonic()
                    expires = self.caller.claims.expires_at
                    if expires is not None:
                        wait = min(wait, expires - time.time())
                    if wait > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._ready.wait(), wait)
                    self._ready.clear()
                    if self._ended:
                        return self._ending
                    if not self._events:
                        await self.recheck()
                        continue
                await self.deliver(self._events.popleft())
        except Ended as ended:
            self.end(ended.error)
            return ended.error
        finally:
            self._ended = True
            self.service.release(self)
            await self.service.hub.remove(self)

    async def recheck(self) -> None:
        """The caller's standing read again while no events come: it must still reach the class."""

        async def admitted() -> None:
            async with self.service.transaction() as db:
                context = await self.service.admit(db, self.caller, f"{self.id}.check", self.operation_name)
                await self.check_class(context)

        try:
            await shielded(admitted())
        except RequestError as error:
            raise Ended(error) from None
        except Exception as error:
            if not is_connection_error(error):
                raise
            raise Ended(RequestError("DATABASE_UNAVAILABLE", UNAVAILABLE_MESSAGE)) from None
        self._next_check = time.monotonic() + self.service.limits.recheck_seconds

    async def check_class(self, context: RequestContext, *, read: bool = True) -> uuid.UUID:
        """The class's district when the caller may read the class as ``class(id:)`` reads it (a
        class of the request's districts: a class carries no personal data); else NOT_FOUND.
        Whose events the subscription hears is the row scope's (``read_event``): a teacher
        subscribed to a colleague's class hears about its students who are theirs too, as
        reading that class lists them.

        At an event (``read=False``) the class's row read at the last check is
        used again (a class does not change district); whether the caller, just
        admitted again, still reaches its district is decided anew (a support
        grant revoked)."""
        row = self._class_row if not read and self._class_row is not None else await context.reads.klass(self.class_id)
        if row is None or row["district_id"] not in context.reads.visible_district_ids():
            raise RequestError("NOT_FOUND", "Class not found")
        self._class_row = row
        district: uuid.UUID = row["district_id"]
        return district

    async def deliver(self, event: LiveEvent) -> None:
        """Read the event back under the caller's decisions, audit it, then send it; or end."""
        body = await shielded(self.decide(event))
        self._next_check = time.monotonic() + self.service.limits.recheck_seconds
        if body is None:
            return
        # Sent even if the subscription ended meanwhile (its queue overflowed): it is audited already.
        await self.send(body)
        self.delivered += 1

    async def decide(self, event: LiveEvent) -> dict[str, Any] | None:
        """The event as this subscriber may see it, its audit entries written; None when it is not theirs."""
        self.sequence += 1
        context: RequestContext | None = None
        committed = False
        body: dict[str, Any] | None = None
        endpoint = self.service.endpoint
        try:
            async with endpoint.acquire() as raw:  # in its transaction (server.app.driver_connection)
                db = endpoint.telemetry.database(raw)
                try:
                    context = await self.service.admit(
                        db, self.caller, f"{self.id}.{self.sequence}", self.operation_name
                    )
                    await self.check_class(context, read=False)
                    root = await self.read_event(context, event)
                    if root is not None:
                        body = await self.execute(context, root)
                        try:
                            await endpoint.audit_writer(context)
                        except Exception as error:
                            log.error("Audit write failed for a live event: %s", type(error).__name__)
                            raise AuditUnavailable from None
                finally:
                    await db.close()
            committed = True
        except Exception as error:
            # Fail closed as /graphql does (server.failures.unavailable); a refusal ends it as it is.
            refusal = error if isinstance(error, RequestError) else unavailable(error)
            if refusal is None:
                raise
            raise Ended(refusal) from None
        finally:
            if context is not None:
                end_transaction(context.after_commit, committed)
        return body

    async def read_event(self, context: RequestContext, event: LiveEvent) -> ClassActivity | None:
        """The event as the root value, or None when it is not this subscriber's to see.

        The student must be within the caller's row scope and actively enrolled
        in the class; a response to an assignment must be to this class's."""
        student = await live.student_in_class(
            context.db, context.reads.scope, self.district_id, event.student_id, self.class_id, context.now.date()
        )
        if student is None:
            return None
        if event.table == "r":
            row = await live.response_in_class(
                context.db, self.district_id, event.row_id, event.student_id, self.class_id
            )
            if row is None:
                return None
            kind, at, response = ActivityKind.ANSWER, row["submitted_at"], Response.of(row)
        else:
            row = await live.session_event(context.db, self.district_id, event.row_id, event.student_id)
            if row is None:
                return None
            kind, at, response = ActivityKind(row["kind"]), row["occurred_at"], None
        return ClassActivity(
            student_row=Student.of(student),
            event_kind=kind,
            event_at=at,
            response_row=response,
            district_key=str(self.district_id),
            subject_id=event.student_id,
        )

    async def execute(self, context: RequestContext, root: ClassActivity) -> dict[str, Any]:
        """The selection executed with the event as root value: every field decided and noted as in a query."""
        endpoint = self.service.endpoint
        result = graphql_execute(
            endpoint.schema,
            self.document,
            root_value=root,
            context_value=context,
            variable_values=self.gql.variables,
            operation_name=self.gql.operation_name,
            hide_suggestions=endpoint.production,
        )
        if hasattr(result, "__await__"):
            result = await result
        if result.errors and any(is_connection_error(e.original_error) for e in result.errors):
            raise RequestError("DATABASE_UNAVAILABLE", UNAVAILABLE_MESSAGE)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [format_error(e, endpoint.production) for e in result.errors]
        # As on every authenticated response: the declared purpose, for client caches to key on.
        body["extensions"] = {"purpose": self.caller.purpose.value}
        return body
