"""Writing audit records, chained per district, in the request's own transaction.

At most two round trips per request, whatever the number of entries and
districts: ``pledgeql_audit_heads`` takes each district's chain lock and reads
its head (migrations 0004 and 0013), then one statement writes every record and
moves the heads. So a mutation and its entry commit together and the lock is
held only from the audit write to the commit. The hashes are HMACs computed in
the application (``permissions.audit_chain``) under a key the database never
holds, which is why the head must come back to the application before the
INSERT. A worker that wrote a chain's last records already knows its head: it
chains onto that and writes in one round trip, which checks the head under the
lock first (``KnownHeads``, migration 0014). Field and category names become
codes in the same statement (``pledgeql_audit_codes``), so a name seen for the
first time is added in the transaction that uses it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from permissions.audit import PendingEntry
from permissions.audit_chain import COLUMNS, Batch, Origin, chain_batch
from resolvers.db import in_transaction

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
# asyncpg about 30 us a row to encode); the statement turns hex into bytes, and
# names into codes where the record does not carry them (KnownCodes).
RECORDS = """
WITH r AS (
    SELECT * FROM json_to_recordset($1::text::json) AS x(
        district_id uuid, seq bigint, id uuid, at timestamptz, request_id text, client_request_id text,
        trace_id text, actor_id uuid, actor_role text, purpose text, justification text, operation_name text,
        subjects uuid[], fields text[], categories text[], decision text, break_glass boolean,
        prev_hash text, hash text, field_codes smallint[], category_codes smallint[])
){extra}, written AS (
    INSERT INTO audit_records (district_id, seq, id, at, request_id, client_request_id, trace_id, actor_id,
        actor_role, purpose, justification, operation_name, subjects, fields, categories, decision, break_glass,
        prev_hash, hash)
    SELECT district_id, seq, id, at, request_id, client_request_id, trace_id, actor_id, actor_role, purpose,
        justification, operation_name, subjects, coalesce(field_codes, pledgeql_audit_codes(fields)),
        coalesce(category_codes, pledgeql_audit_codes(categories)),
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
    RECORDS.format(
        extra=", moved AS (SELECT pledgeql_audit_advance($2::uuid[], $3::bigint[], $4::text[], $5::bigint[], "
        "$6::text[], $7) AS ok)",
        where=" WHERE (SELECT ok FROM moved)",
    )
    + "SELECT ok FROM moved"
)


_FIELDS, _CATEGORIES = COLUMNS.index("fields"), COLUMNS.index("categories")


def insert_args(rows: list[tuple[Any, ...]], codes: Mapping[str, int] | None = None) -> tuple[str]:
    """INSERT's one parameter: the records (COLUMNS order) as a JSON array of
    objects; with ``codes``, each record whose field and category names all
    have one carries their codes as well (the statement then skips the lookup)."""
    records = []
    for row in rows:
        record = dict(zip(COLUMNS, row, strict=True))
        if codes is not None:
            try:
                record["field_codes"] = [codes[name] for name in row[_FIELDS]]
                record["category_codes"] = [codes[name] for name in row[_CATEGORIES]]
            except KeyError:
                record.pop("field_codes", None)
        records.append(record)
    return (orjson.dumps(records, default=str).decode(),)


class KnownCodes:
    """The codes of the audit's field and category names (``audit_names``), as
    this worker last read them.

    A name's code never changes once given, so a record whose names all have a
    known code is written with the codes, and the statement does not look them
    up (``pledgeql_audit_codes``, two calls a record). A write with a name not
    known here reads them all again first (one statement, in the request's
    transaction); a name still unknown then (seen for the first time) is
    written by name, which gives it its code, and read on the next write that
    has it."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    async def cover(self, db: Any, rows: list[tuple[Any, ...]]) -> Mapping[str, int]:
        codes = self.codes
        if not all(name in codes for row in rows for name in (*row[_FIELDS], *row[_CATEGORIES])):
            self.codes = codes = {r["name"]: r["code"] for r in await db.fetch(NAMES)}
        return codes


NAMES = "SELECT name, code FROM audit_names"


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


async def write_batch(
    db: Any,
    batch: Batch,
    key: bytes,
    lock_timeout: float | None = LOCK_TIMEOUT,
    known: KnownHeads | None = None,
    codes: KnownCodes | None = None,
) -> None:
    """Chain and insert the entries of one or more requests, in order, in
    ``db``'s transaction: one statement onto the heads ``known`` holds, or else
    two (HEADS, then INSERT). Without a transaction (a query's), the
    one statement commits itself and the two get a transaction of their own.
    A chain lock is waited for at most ``lock_timeout`` seconds (None: as long
    as it takes). With ``codes``, the records carry their names' codes where
    they are known."""
    districts = sorted(uuid.UUID(k) for k in {e.district_key for _, entries, _ in batch for e in entries})
    wait = "0" if lock_timeout is None else f"{max(1, round(lock_timeout * 1000))}ms"
    expected = known.expected(districts) if known is not None else None
    if known is not None and expected is not None:
        heads = dict(expected)
        rows = chain_batch(batch, key, heads)
        moved = await db.fetchval(
            ADVANCE,
            *insert_args(rows, None if codes is None else await codes.cover(db, rows)),
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
    # HEADS's chain locks must be held until INSERT commits.
    async with in_transaction(db):
        heads = {r["head_district"]: (r["head_seq"], r["head_hash"]) for r in await db.fetch(HEADS, districts, wait)}
        rows = chain_batch(batch, key, heads)
        await db.execute(INSERT, *insert_args(rows, None if codes is None else await codes.cover(db, rows)))
    if known is not None:
        known.wrote(heads, districts, advanced=False)


async def write_entries(
    db: Any, origin: Origin, entries: list[PendingEntry], key: bytes, trace_id: str | None = None
) -> None:
    """Chain and insert entries of one origin that is not a request (an operator
    command), in ``db``'s transaction: the same two statements as a request's."""
    if not entries:
        return
    districts = sorted({uuid.UUID(e.district_key) for e in entries})
    # pledgeql_audit_heads locks and answers for the transaction's own districts only.
    await db.execute("SELECT set_config('pledgeql.district_ids', $1, true)", ",".join(map(str, districts)))
    # An operator's command waits for the chain as long as it takes.
    await write_batch(db, [(origin, entries, trace_id)], key, lock_timeout=None)


# Audit partitions are kept this far ahead (the server checks every few hours, server.audit_writer).
PARTITIONS_AHEAD = 3  # months
PARTITIONS = "SELECT pledgeql_audit_partitions(now() + make_interval(months => $1))"
