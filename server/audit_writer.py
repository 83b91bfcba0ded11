"""Writing a request's audit entries, chained per district, before the response leaves.

At most two round trips per request, whatever the number of entries and
districts: ``pledgeql_audit_heads`` takes each district's chain lock and reads
its head (migrations 0004 and 0013), then one statement writes every record and
moves the heads. Both run in the request's own transaction, so a mutation and
its entry commit together and the lock is held only from the audit write to
the commit. The hashes are HMACs computed here (permissions/audit.py) under a
key the database never holds, which is why the head must come back to the
application before the INSERT. A worker that wrote a chain's last records
already knows its head: it chains onto that and writes in one round trip,
which checks the head under the lock first (``KnownHeads``, migration 0014).

Storage (migration 0013): a run of consecutive entries that share everything
but their subject is one record (``permissions.audit.runs``): a class view of
30 students is one row. Field and category names become codes in the same
statement (``pledgeql_audit_codes``), so a name seen for the first time is
added in the transaction that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from permissions.audit import (
    CATEGORY_VALUES,
    GENESIS,
    RECORD_COLUMNS,
    Anchor,
    PendingEntry,
    anchor_mac,
    record_values_hash,
    runs,
)
from server.context import RequestContext
from server.telemetry import current_trace_id

AuditWriter = Callable[[RequestContext], Awaitable[None]]
log = logging.getLogger("pledgeql.audit")

COLUMNS = (*RECORD_COLUMNS, "hash")
# The chain locks are waited for at most the lock_timeout set first, in the same
# statement (the function's argument depends on it, so it is set before any
# lock is asked for), for the rest of the transaction: a district whose chain
# lock is held (retention's trim, a stuck transaction) fails its own requests
# with AUDIT_UNAVAILABLE after that long, and they give their pooled
# connections back rather than starve every other district's requests.
HEADS = (
    "SELECT h.head_district, h.head_seq, h.head_hash FROM (SELECT set_config('lock_timeout', $2, true) AS t) s "
    "CROSS JOIN LATERAL pledgeql_audit_heads(CASE WHEN s.t IS NULL THEN NULL ELSE $1::uuid[] END) h"
)
LOCK_TIMEOUT = 1.0  # seconds; PLEDGEQL_AUDIT_LOCK_TIMEOUT
# The records travel as one JSON text (one parameter: an array per column cost
# asyncpg about 30 us a row to encode); the statement turns names into codes and
# hex into bytes.
RECORDS = """
WITH r AS (
    SELECT * FROM json_to_recordset($1::text::json) AS x(
        district_id uuid, seq bigint, id uuid, at timestamptz, request_id text, client_request_id text,
        trace_id text, actor_id uuid, actor_role text, purpose text, justification text, operation_name text,
        subjects uuid[], fields text[], categories text[], decision text, break_glass boolean,
        prev_hash text, hash text)
){extra}, written AS (
    INSERT INTO audit_records (district_id, seq, id, at, request_id, client_request_id, trace_id, actor_id,
        actor_role, purpose, justification, operation_name, subjects, fields, categories, decision, break_glass,
        prev_hash, hash)
    SELECT district_id, seq, id, at, request_id, client_request_id, trace_id, actor_id, actor_role, purpose,
        justification, operation_name, subjects, pledgeql_audit_codes(fields), pledgeql_audit_codes(categories),
        decision, break_glass, decode(prev_hash, 'hex'), decode(hash, 'hex')
    FROM r{where}
)
"""
# After HEADS: write the records and move each district's head to its last record.
INSERT = (
    RECORDS.format(extra="", where="")
    + """INSERT INTO audit_heads (district_id, seq, hash)
SELECT DISTINCT ON (district_id) district_id, seq + cardinality(subjects) - 1, decode(hash, 'hex')
FROM r ORDER BY district_id, seq DESC
ON CONFLICT (district_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash
"""
)
# Without HEADS, onto the heads this worker last wrote (KnownHeads): one statement
# that takes the chain locks, checks the heads are still those and moves them
# (migration 0014), and writes the records only if so. Answers whether it did.
ADVANCE = (
    RECORDS.format(  # noqa: S608 (constants only)
        extra=", moved AS (SELECT pledgeql_audit_advance($2::uuid[], $3::bigint[], $4::text[], $5::bigint[], "
        "$6::text[], $7) AS ok)",
        where=" WHERE (SELECT ok FROM moved)",
    )
    + "SELECT ok FROM moved"
)


def insert_args(rows: list[tuple[Any, ...]]) -> tuple[str]:
    """INSERT's one parameter: the records (COLUMNS order) as a JSON array of objects."""
    return (orjson.dumps([dict(zip(COLUMNS, row, strict=True)) for row in rows], default=str).decode(),)


def new_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs in their text form: what the record
    stores and its hash covers, made in one read of the system's randomness.
    Kept over ``uuid.uuid4()``, measured where it matters (the entries of one
    class view): 19 us for 30 ids against 75 us for 30 ``str(uuid.uuid4())``.
    ``tests/test_audit_chain.py`` checks they are version 4 UUIDs."""
    raw = bytearray(os.urandom(16 * count))
    out = []
    for start in range(0, 16 * count, 16):
        raw[start + 6] = raw[start + 6] & 0x0F | 0x40
        raw[start + 8] = raw[start + 8] & 0x3F | 0x80
        h = raw[start : start + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


@dataclass(frozen=True)
class Origin:
    """What every entry of one request (or one operator command) shares: when,
    which request, who, why. ``justifications`` overrides ``justification`` per
    district (SUPPORT's tickets are its grants' in the district concerned)."""

    at: dt.datetime
    request_id: str
    client_request_id: str | None
    actor_id: uuid.UUID
    actor_role: str
    purpose: str
    justification: str | None
    operation_name: str | None
    break_glass: bool
    justifications: Mapping[str, str] = field(default_factory=dict)

    def justification_in(self, district_key: str) -> str | None:
        return self.justifications.get(district_key, self.justification)


def origin_of(context: RequestContext) -> Origin:
    at = context.now.astimezone(dt.UTC) if context.now.tzinfo is not None else context.now.replace(tzinfo=dt.UTC)
    return Origin(
        at=at,
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


def origin_rows(
    origin: Origin,
    entries: list[PendingEntry],
    key: bytes,
    heads: dict[uuid.UUID, tuple[int, str]],
    trace_id: str | None,
) -> list[tuple[Any, ...]]:
    """Entries of one origin as records (INSERT rows, COLUMNS order), each chained onto its district's head."""
    at, actor, role, purpose = origin.at, origin.actor_id, origin.actor_role, origin.purpose
    operation, break_glass, client_request_id = origin.operation_name, origin.break_glass, origin.client_request_id
    districts: dict[str, uuid.UUID] = {}
    rows: list[tuple[Any, ...]] = []
    grouped = runs(entries)
    ids = new_ids(len(grouped))
    for run, record_id in zip(grouped, ids, strict=True):
        first = run[0]
        if not CATEGORY_VALUES.issuperset(first.categories):
            # Fail closed rather than store an entry the log could not show.
            raise ValueError("An audit entry names a category that is not a DataCategory value")
        district_id = districts.get(first.district_key)
        if district_id is None:
            district_id = districts[first.district_key] = uuid.UUID(first.district_key)
        seq, prev = heads.get(district_id, (0, GENESIS))
        seq += 1
        record = {
            "district_id": district_id,
            "seq": seq,
            "id": record_id,
            "at": at,
            "request_id": origin.request_id,
            "client_request_id": client_request_id,
            "trace_id": trace_id,
            "actor_id": actor,
            "actor_role": role,
            "purpose": purpose,
            "justification": origin.justification_in(first.district_key),
            "operation_name": operation,
            "subjects": [e.subject_id for e in run],
            "fields": first.fields,
            "categories": first.categories,
            "decision": "ALLOW" if first.allowed else "DENY",
            "break_glass": break_glass,
            "prev_hash": prev,
        }
        values = [record[c] for c in RECORD_COLUMNS]
        digest = record_values_hash(key, values)
        heads[district_id] = (seq + len(run) - 1, digest)
        rows.append((*values, digest))
    return rows


class KnownHeads:
    """The head of each district's chain as this worker last wrote (or read) it.

    A worker alone on a district's chain knows its head after each write, so
    its next records can be chained onto that head and written with ADVANCE,
    one statement instead of two. When another writer (another worker, an
    operator's command, retention) holds the chain lock or moved the head in
    between, ADVANCE writes nothing, without waiting, and the records are
    chained again onto the head HEADS reads once it has the lock. Each such miss
    makes the district's next writes skip the attempt, twice as many after
    each miss in a row (up to ``MAX_SKIP``): where workers take turns on one
    chain, nearly every write reads the head as it did before.
    """

    MAX_SKIP = 64

    def __init__(self) -> None:
        self._heads: dict[uuid.UUID, tuple[int, str]] = {}
        self._misses: dict[uuid.UUID, int] = {}
        self._skip: dict[uuid.UUID, int] = {}

    def expected(self, districts: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, str]] | None:
        """The heads to chain onto without reading them, or None: read them."""
        heads = {}
        trust = True
        for district in districts:
            skip = self._skip.get(district)
            if skip:
                self._skip[district] = skip - 1
                trust = False
            head = self._heads.get(district)
            if head is None:
                trust = False
            else:
                heads[district] = head
        return heads if trust else None

    def wrote(self, heads: Mapping[uuid.UUID, tuple[int, str]], districts: list[uuid.UUID], advanced: bool) -> None:
        """The districts' records were written (with ADVANCE if ``advanced``), leaving ``heads``."""
        for district in districts:
            self._heads[district] = heads[district]
            if advanced:
                self._misses.pop(district, None)

    def missed(self, districts: list[uuid.UUID]) -> None:
        for district in districts:
            misses = self._misses[district] = self._misses.get(district, 0) + 1
            self._skip[district] = min(2**misses, self.MAX_SKIP)


# What a write holds: each request's (or command's) origin, entries and trace id.
Batch = list[tuple[Origin, list[PendingEntry], str | None]]


def chain_batch(batch: Batch, key: bytes, heads: dict[uuid.UUID, tuple[int, str]]) -> list[tuple[Any, ...]]:
    """The batch's entries as INSERT rows, in order, chained onto ``heads`` (which move along)."""
    rows: list[tuple[Any, ...]] = []
    for origin, entries, trace_id in batch:
        rows += origin_rows(origin, entries, key, heads, trace_id)
    return rows


async def write_batch(
    db: Any, batch: Batch, key: bytes, lock_timeout: float | None = LOCK_TIMEOUT, known: KnownHeads | None = None
) -> None:
    """Chain and insert the entries of one or more requests, in order, in
    ``db``'s transaction: one statement onto the heads ``known`` holds, or else
    two (HEADS, then INSERT). A chain lock is waited for at most
    ``lock_timeout`` seconds (None: as long as it takes)."""
    districts = sorted(uuid.UUID(k) for k in {e.district_key for _, entries, _ in batch for e in entries})
    wait = "0" if lock_timeout is None else f"{max(1, round(lock_timeout * 1000))}ms"
    expected = known.expected(districts) if known is not None else None
    if known is not None and expected is not None:
        heads = dict(expected)
        rows = chain_batch(batch, key, heads)
        moved = await db.fetchval(
            ADVANCE,
            *insert_args(rows),
            districts,
            [expected[d][0] for d in districts],
            [expected[d][1] for d in districts],
            [heads[d][0] for d in districts],
            [heads[d][1] for d in districts],
            wait,
        )
        if moved:
            known.wrote(heads, districts, advanced=True)
            return
        known.missed(districts)
    heads = {r["head_district"]: (r["head_seq"], r["head_hash"]) for r in await db.fetch(HEADS, districts, wait)}
    rows = chain_batch(batch, key, heads)
    await db.execute(INSERT, *insert_args(rows))
    if known is not None:
        known.wrote(heads, districts, advanced=False)


async def write_entries(db: Any, origin: Origin, entries: list[PendingEntry], key: bytes) -> None:
    """Chain and insert entries of one origin that is not a request (an operator
    command), in ``db``'s transaction: the same two statements as a request's."""
    if not entries:
        return
    districts = sorted({uuid.UUID(e.district_key) for e in entries})
    # pledgeql_audit_heads locks and answers for the transaction's own districts only.
    await db.execute("SELECT set_config('pledgeql.district_ids', $1, true)", ",".join(map(str, districts)))
    # An operator's command waits for the chain as long as it takes.
    await write_batch(db, [(origin, entries, current_trace_id())], key, lock_timeout=None)


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

    async def __call__(self, context: RequestContext) -> None:
        entries = context.audit.entries()
        if not entries:
            return
        if not context.read_only:
            own = [(origin_of(context), entries, current_trace_id())]
            await write_batch(context.db, own, self.key, self.lock_timeout, self.known)
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
        # Lead: write everything waiting, in this request's transaction.
        group.busy = True
        batch, group.queue = group.queue, []
        try:
            await write_batch(
                context.db,
                [(origin_of(w.context), w.entries, w.trace_id) for w in batch],
                self.key,
                self.lock_timeout,
                self.known,
            )
        except BaseException as error:
            self._release(group, batch, mine, error)
            raise
        context.after_commit.append(lambda error: self._release(group, batch, mine, error))

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


# Audit partitions are kept this far ahead, checked this often (and at start).
PARTITIONS_AHEAD = 3  # months
PARTITIONS = "SELECT pledgeql_audit_partitions(now() + make_interval(months => $1))"
PARTITIONS_EVERY = 6 * 3600.0


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


# ------------------------------------------------------------------ retention


# A district's chain past its anchor ($3, 0 without one): the entries chained one
# by one, then the records, each a unit from its first entry's seq to its last.
# (A record lies wholly past the anchor or wholly before it: retention cuts
# between records.)
CHAIN = """
SELECT seq AS first, seq AS last, hash, at FROM audit_entries_v1 WHERE district_id = $1 AND seq > $3
UNION ALL
SELECT seq, seq + cardinality(subjects) - 1, encode(hash, 'hex'), at FROM audit_records
WHERE district_id = $1 AND seq > $3
"""
# The cut: the last unit such that it and every unit before it are older than $2.
CUT = f"""
WITH chain AS ({CHAIN})
SELECT last AS seq, hash, at FROM chain
WHERE first < coalesce((SELECT min(first) FROM chain WHERE at >= $2), 9223372036854775807)
ORDER BY first DESC LIMIT 1
"""  # noqa: S608 (constants only)
# The same cut within the chain's first $4 entries (but at least its first unit).
CUT_STEP = f"""
WITH chain AS (SELECT * FROM ({CHAIN}) c ORDER BY first LIMIT $4)
SELECT last AS seq, hash, at FROM chain
WHERE first < coalesce((SELECT min(first) FROM chain WHERE at >= $2), 9223372036854775807)
  AND (last <= $3 + $4 OR first = (SELECT min(first) FROM chain))
ORDER BY first DESC LIMIT 1
"""  # noqa: S608 (constants only)
ENTRIES_BETWEEN = """
SELECT (SELECT count(*) FROM audit_entries_v1 WHERE district_id = $1 AND seq > $2 AND seq <= $3)
     + (SELECT coalesce(sum(cardinality(subjects)), 0) FROM audit_records
        WHERE district_id = $1 AND seq > $2 AND seq <= $3)
"""
# Whole partitions whose every record the anchors already cover.
COVERED_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'audit_records'::regclass AND c.relname <> 'audit_records_default'
ORDER BY c.relname
"""


async def trim_chain(
    conn: Any, key: bytes, district_id: uuid.UUID, before: dt.datetime, step: int | None = None, remove: bool = True
) -> int:
    """Move a district's anchor past its oldest entries written before ``before``
    and (``remove``) delete them; return how many entries the anchor newly covers.

    With ``step``, at most that many entries (or the chain's first record, if
    it alone holds more), the first of the chain: retention trims in such
    steps, each a short transaction.

    For the retention job, over the owner connection (the app role cannot
    delete audit rows), inside a transaction the caller holds or one of its
    own. Only a prefix of the chain goes: from its start (or the current
    anchor) up to the last entry such that it and every entry before it are
    older than ``before``. That entry's seq and its record's hash become the
    district's key-signed anchor, from which ``pledgeql audit verify`` then
    checks the rest; removing entries any other way breaks the chain. With
    ``remove=False`` the rows stay until ``remove_anchored`` or a dropped
    partition takes them (verify passes over rows an anchor covers).
    """
    async with conn.transaction():
        # The chain's lock, as the writer takes it: one trim at a time.
        await conn.execute("SELECT pg_advisory_xact_lock(pledgeql_audit_lock_key($1))", district_id)
        current = await conn.fetchval("SELECT seq FROM audit_anchors WHERE district_id = $1", district_id) or 0
        if step is None:
            cut = await conn.fetchrow(CUT, district_id, before, current)
        else:
            cut = await conn.fetchrow(CUT_STEP, district_id, before, current, step)
        if cut is None:
            return 0
        covered = int(await conn.fetchval(ENTRIES_BETWEEN, district_id, current, cut["seq"]))
        if remove:
            await remove_anchored(conn, district_id, cut["seq"])
        anchor = Anchor(district_id, cut["seq"], cut["hash"], cut["at"], "")
        await conn.execute(
            """
            INSERT INTO audit_anchors (district_id, seq, hash, at, removed, mac) VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (district_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at,
                removed = audit_anchors.removed + excluded.removed, removed_at = now(), mac = excluded.mac
            """,
            district_id,
            anchor.seq,
            anchor.hash,
            anchor.at,
            covered,
            anchor_mac(key, district_id, anchor.seq, anchor.hash, anchor.at),
        )
        return covered


async def remove_anchored(conn: Any, district_id: uuid.UUID, through: int, batch: int | None = None) -> None:
    """Delete a district's rows up to seq ``through`` (which its anchor covers):
    with ``batch``, that many records per statement, each its own transaction."""
    for table in ("audit_entries_v1", "audit_records"):
        if batch is None:
            await conn.execute(f"DELETE FROM {table} WHERE district_id = $1 AND seq <= $2", district_id, through)  # noqa: S608
            continue
        while True:
            status: str = await conn.execute(
                f"DELETE FROM {table} WHERE (district_id, seq) IN (SELECT district_id, seq FROM {table} "  # noqa: S608
                "WHERE district_id = $1 AND seq <= $2 LIMIT $3)",
                district_id,
                through,
                batch,
            )
            if int(status.split()[-1]) < batch:
                break


async def drop_covered_partitions(conn: Any) -> list[str]:
    """Drop every monthly partition whose records all lie at or before their
    district's anchor: a month of audit goes at the cost of a catalog change."""
    dropped: list[str] = []
    for row in await conn.fetch(COVERED_PARTITIONS):
        name = row["relname"]
        # Names come from the catalog (audit_records_YYYY_MM), never from input.
        quoted = '"' + name.replace('"', '""') + '"'
        covered = await conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {quoted}) AND NOT EXISTS (SELECT 1 FROM {quoted} r "  # noqa: S608
            "LEFT JOIN audit_anchors a USING (district_id) "
            "WHERE a.seq IS NULL OR r.seq + cardinality(r.subjects) - 1 > a.seq)"
        )
        if not covered:  # empty (a month ahead), or holding records no anchor covers yet
            continue
        async with conn.transaction():
            await conn.execute(f"ALTER TABLE audit_records DETACH PARTITION {quoted}")
            await conn.execute(f"DROP TABLE {quoted}")
        dropped.append(name)
    return dropped
