"""Retention's audit SQL: moving a district's anchor past its oldest records,
removing what an anchor covers, dropping monthly partitions it covers whole."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from permissions.audit import Anchor, anchor_mac

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
"""
# The same cut within the chain's first $4 entries (but at least its first unit).
CUT_STEP = f"""
WITH chain AS (SELECT * FROM ({CHAIN}) c ORDER BY first LIMIT $4)
SELECT last AS seq, hash, at FROM chain
WHERE first < coalesce((SELECT min(first) FROM chain WHERE at >= $2), 9223372036854775807)
  AND (last <= $3 + $4 OR first = (SELECT min(first) FROM chain))
ORDER BY first DESC LIMIT 1
"""
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
            await conn.execute(f"DELETE FROM {table} WHERE district_id = $1 AND seq <= $2", district_id, through)
            continue
        while True:
            status: str = await conn.execute(
                f"DELETE FROM {table} WHERE (district_id, seq) IN (SELECT district_id, seq FROM {table} "
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
            f"SELECT EXISTS (SELECT 1 FROM {quoted}) AND NOT EXISTS (SELECT 1 FROM {quoted} r "
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
