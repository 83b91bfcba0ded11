"""The audit writer of the serving app: group commit for queries, and a guard
that fails a district's requests at once while its chain lock is stuck.

The records are chained in ``permissions.audit_chain`` and written by
``resolvers.audit_store``, in the request's own transaction (a compiled
query's: its write statement, which commits itself), before the
response leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from permissions.audit import PendingEntry
from permissions.audit_chain import Origin, in_utc
from resolvers.audit_store import LOCK_TIMEOUT, PARTITIONS, PARTITIONS_AHEAD, KnownCodes, KnownHeads, write_batch
from server.context import RequestContext
from server.telemetry import current_trace_id

AuditWriter = Callable[[RequestContext], Awaitable[None]]
log = logging.getLogger("pledgeql.audit")
PARTITIONS_EVERY = 6 * 3600.0  # seconds between checks that the partitions ahead exist


def origin_of(context: RequestContext) -> Origin:
    return Origin(
        at=in_utc(context.now),
        request_id=context.request_id,
        client_request_id=context.client_request_id,
        actor_id=context.principal.user_id,
        actor_role=context.principal.role.value,
        purpose=context.purpose.value,
        justification=context.justification,
        operation_name=context.operation_name,
        break_glass=bool(context.rule.break_glass),
        justifications=context.justifications,
    )


class _Waiting:
    """A query's entries waiting for a leader's transaction to write them."""

    __slots__ = ("context", "entries", "future", "trace_id")

    def __init__(self, context: RequestContext, entries: list[PendingEntry], trace_id: str | None) -> None:
        self.context = context
        self.entries = entries
        self.trace_id = trace_id
        self.future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()


class _Group:
    __slots__ = ("busy", "queue")

    def __init__(self) -> None:
        self.busy = False
        self.queue: list[_Waiting] = []


LEAD, WRITTEN = True, False


class AuditWriterGroups:
    """The audit writer, with group commit for queries.

    A mutation writes its entries in its own transaction, which commits them
    with its change. A query's entries join a queue (per worker, per set of
    districts its transaction may touch): the first query to reach an idle
    queue leads, writing its own entries and every waiting query's in its own
    transaction; the others wait. Each waiting query is released only once
    the leader's transaction has committed (``RequestContext.after_commit``),
    or fails with it: no response leaves before its entries are durable, as
    when each request wrote its own. Under load a district's chain is locked,
    appended to and committed once per batch rather than once per request;
    alone, a query leads at once and costs what it did before.
    """

    def __init__(self, key: bytes, lock_timeout: float = LOCK_TIMEOUT) -> None:
        if not key:
            raise ValueError("The audit key is empty; set PLEDGEQL_AUDIT_KEY or let the data dir hold a generated one")
        self.key = key
        self.lock_timeout = lock_timeout
        self._groups: dict[str, _Group] = {}
        self.known = KnownHeads()
        self.codes = KnownCodes()

    async def __call__(self, context: RequestContext) -> None:
        entries = context.audit.entries()
        if not entries:
            return
        if not context.read_only:
            await self.write_own(context.db, origin_of(context), entries)
            return
        group = self._groups.get(context.rls_key)
        if group is None:
            group = self._groups[context.rls_key] = _Group()
        mine = _Waiting(context, entries, current_trace_id())
        group.queue.append(mine)
        if group.busy:
            try:
                role = await mine.future
            except asyncio.CancelledError:
                if mine.future.done() and not mine.future.cancelled() and mine.future.result() is LEAD:
                    self._hand_on(group)  # the lead came, but this request is gone
                raise
            if role is WRITTEN:
                return
        # Lead: write everything waiting, in this request's transaction (or its one statement).
        group.busy = True
        batch, group.queue = group.queue, []
        try:
            await write_batch(
                context.db,
                [(origin_of(w.context), w.entries, w.trace_id) for w in batch],
                self.key,
                self.lock_timeout,
                self.known,
                self.codes,
            )
        except BaseException as error:
            self._release(group, batch, mine, error)
            raise
        context.after_commit.append(lambda error: self._release(group, batch, mine, error))

    async def write_own(self, db: Any, origin: Origin, entries: list[PendingEntry]) -> None:
        """Entries written in ``db``'s own transaction, which commits them (a mutation's, or a
        mutation refused before it ran: ``GraphQLEndpoint.admit``)."""
        batch = [(origin, entries, current_trace_id())]
        await write_batch(db, batch, self.key, self.lock_timeout, self.known, self.codes)

    @classmethod
    def _release(cls, group: _Group, batch: list[_Waiting], leader: _Waiting, error: BaseException | None) -> None:
        """The leader's transaction ended: release its followers, hand the lead on."""
        for waiting in batch:
            if waiting is leader or waiting.future.done():
                continue
            if error is None:
                waiting.future.set_result(WRITTEN)
            else:
                waiting.future.set_exception(AuditBatchFailed())
        cls._hand_on(group)

    @staticmethod
    def _hand_on(group: _Group) -> None:
        """The first request still waiting leads next (the group stays busy), or the group is idle."""
        for waiting in group.queue:
            if not waiting.future.done():
                waiting.future.set_result(LEAD)
                return
        group.busy = False


class AuditBatchFailed(Exception):
    """The transaction that was to write this request's entries did not commit."""


class ChainLockBusy(Exception):
    """A district's chain lock is held by someone else and another request is already waiting for it."""


class StuckChainGuard:
    """Fails a district's requests at once while its chain lock is known to be stuck.

    Each wait for a chain lock is bounded (``LOCK_TIMEOUT``), but a request
    waiting holds a pooled connection, and a busy district has many requests:
    all of them waiting the full bound would still take the pool from the
    other districts. Once a wait has timed out for a set of districts
    (``RequestContext.rls_key``), one request at a time waits for the lock
    again (a probe) and the others get AUDIT_UNAVAILABLE without waiting, until
    a request gets the lock. So a stuck chain costs its district its audited
    requests and every other district nothing.
    """

    def __init__(self, writer: AuditWriter) -> None:
        self.writer = writer
        self._stuck: set[str] = set()
        self._probing: set[str] = set()

    async def __call__(self, context: RequestContext) -> None:
        # The districts whose chain locks the write takes: the request's row-level security
        # setting, or (a context without one: a subscription's event) its entries' districts.
        key = context.rls_key or ",".join(sorted({e.district_key for e in context.audit.entries()}))
        probe = key in self._stuck
        if probe:
            if key in self._probing:
                raise ChainLockBusy
            self._probing.add(key)
        try:
            await self.writer(context)
        except Exception as error:
            if _lock_timed_out(error):
                self._stuck.add(key)
            raise
        else:
            self._stuck.discard(key)
        finally:
            if probe:
                self._probing.discard(key)


def _lock_timed_out(error: BaseException | None) -> bool:
    import asyncpg

    while error is not None:
        if isinstance(error, asyncpg.exceptions.LockNotAvailableError):
            return True
        error = error.__cause__ or error.__context__
    return False


async def keep_audit_partitions(
    connection: Callable[[], contextlib.AbstractAsyncContextManager[Any]], every: float = PARTITIONS_EVERY
) -> None:
    """Create the monthly audit partitions ahead of time, at start and then
    every ``every`` seconds, for as long as the server runs. A failure (the
    database down) is logged and tried again next time: records of a month
    without its partition wait in the default partition meanwhile."""
    while True:
        try:
            async with connection() as conn:
                made = await conn.fetchval(PARTITIONS, PARTITIONS_AHEAD)
            if made:
                log.info("audit: created %d monthly partition(s)", made)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("audit: could not create the partitions ahead (%s); trying again later", type(error).__name__)
        await asyncio.sleep(every)


def make_audit_writer(key: bytes, lock_timeout: float = LOCK_TIMEOUT) -> AuditWriter:
    return StuckChainGuard(AuditWriterGroups(key, lock_timeout))
