"""`pledgeql audit verify [--district ID]`: recompute every audit chain with the key.

Runs over the owner connection, in one REPEATABLE READ snapshot. Writers
append a district's entries under its chain lock and commit them whole, so
any snapshot holds a prefix of each chain: verifying never blocks requests
and never sees half a request. Prints one OK line per district (with its head,
which an operator can keep outside the database), or names, per district,
the first entry altered, deleted or reordered, and exits 1.

Retention: a chain may start after seq 1 only from its key-signed anchor in
``audit_anchors`` (written by ``server.audit_writer.trim_chain``); entries
removed any other way are reported as deleted.

The newest entries of a chain are the one thing a keyed chain cannot vouch
for by itself: removing them leaves a shorter chain that verifies. With
``--heads FILE`` (kept outside the database, e.g. on the host that runs
verify from cron) each run checks that every chain still reaches the head the
previous run recorded, with the same hash, and records the new heads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from permissions.audit import Anchor, ChainBreak, ChainVerifier
from server.db import connect, server_urls
from server.settings import Settings

ENTRY_COLUMNS = (
    "district_id, seq, id, at, request_id, trace_id, actor_id, actor_role, purpose, justification, "
    "operation_name, subject_student_id, fields, categories, decision, break_glass, prev_hash, hash, client_request_id"
)
DISTRICTS = """
WITH RECURSIVE chains AS (
    (SELECT district_id FROM audit_entries ORDER BY district_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.district_id FROM audit_entries e WHERE e.district_id > c.district_id
            ORDER BY e.district_id LIMIT 1)
    FROM chains c WHERE c.district_id IS NOT NULL
)
SELECT district_id FROM chains WHERE district_id IS NOT NULL
UNION SELECT district_id FROM audit_anchors
UNION SELECT id FROM districts
ORDER BY 1
"""


@dataclass(frozen=True)
class ChainReport:
    district_id: uuid.UUID
    entries: int
    first_seq: int | None
    head_seq: int
    head_hash: str
    anchor_seq: int | None
    broken: ChainBreak | None

    def describe(self) -> str:
        if self.broken is not None:
            return "FAILED " + self.broken.describe()
        span = f"seq {self.first_seq}..{self.head_seq}" if self.entries else "no entries"
        start = f", continuing retention anchor at seq {self.anchor_seq}" if self.anchor_seq is not None else ""
        return f"OK district {self.district_id}: {self.entries} entries ({span}{start}), head {self.head_hash}"


async def verify_district(
    conn: Any, key: bytes, district_id: uuid.UUID, known_head: tuple[int, str] | None = None
) -> ChainReport:
    """One district's chain, inside the caller's snapshot."""
    anchor_row = await conn.fetchrow(
        "SELECT district_id, seq, hash, at, mac FROM audit_anchors WHERE district_id = $1", district_id
    )
    anchor = None if anchor_row is None else Anchor(**dict(anchor_row))
    last_seq = await conn.fetchval("SELECT max(seq) FROM audit_entries WHERE district_id = $1", district_id)
    verifier = ChainVerifier(key, district_id, anchor, last_seq or 0, known_head)
    broken = verifier.start()
    if broken is None:
        query = f"SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE district_id = $1 ORDER BY seq"  # noqa: S608
        async for row in conn.cursor(query, district_id, prefetch=2000):
            broken = verifier.feed(row)
            if broken is not None:
                break
        broken = verifier.finish()
    head_seq, head_hash = verifier.head
    return ChainReport(
        district_id=district_id,
        entries=verifier.count,
        first_seq=verifier.first_seq,
        head_seq=head_seq,
        head_hash=head_hash,
        anchor_seq=anchor.seq if anchor else None,
        broken=broken,
    )


async def verify_chains(
    conn: Any,
    key: bytes,
    district_id: uuid.UUID | None = None,
    known_heads: dict[uuid.UUID, tuple[int, str]] | None = None,
) -> list[ChainReport]:
    """Every chain (or one district's) from one consistent snapshot."""
    known = known_heads or {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if district_id is not None:
            districts = [district_id]
        else:
            districts = sorted({r[0] for r in await conn.fetch(DISTRICTS)} | set(known))
        return [await verify_district(conn, key, d, known.get(d)) for d in districts]


class HeadsFileError(Exception):
    """The --heads file cannot be used; the message says why."""


def read_heads(path: Path, database: str) -> dict[uuid.UUID, tuple[int, str]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("database") != database:
            raise HeadsFileError(
                f"{path} records the heads of database {data.get('database')!r}, not {database!r}; "
                "use one heads file per database"
            )
        return {uuid.UUID(k): (int(v["seq"]), str(v["hash"])) for k, v in data["heads"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise HeadsFileError(f"{path} is not a heads file written by pledgeql audit verify") from None


def write_heads(path: Path, database: str, heads: dict[uuid.UUID, tuple[int, str]]) -> None:
    data = {
        "database": database,
        "heads": {str(d): {"seq": seq, "hash": h} for d, (seq, h) in sorted(heads.items())},
    }
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)


async def run_verify(
    url: str, key: bytes, district_id: uuid.UUID | None, out: TextIO, err: TextIO, heads_file: Path | None = None
) -> int:
    conn = await connect(url)
    try:
        database = await conn.fetchval("SELECT current_database()")
        try:
            known = read_heads(heads_file, database) if heads_file else {}
        except HeadsFileError as error:
            print(f"pledgeql audit verify: {error}", file=err)
            return 2
        reports = await verify_chains(conn, key, district_id, known)
    finally:
        await conn.close()
    failed = False
    for report in reports:
        if report.broken is not None:
            failed = True
            print(report.describe(), file=err)
        else:
            print(report.describe(), file=out)
    if failed:
        print(
            "pledgeql audit verify: the audit trail was tampered with; keep this output and the database as they are "
            "and restore the named entries from a backup",
            file=err,
        )
        return 1
    if heads_file is not None:
        write_heads(heads_file, database, {**known, **{r.district_id: (r.head_seq, r.head_hash) for r in reports}})
    return 0


def command(settings: Settings, args: argparse.Namespace) -> int:
    raw = getattr(args, "district", None)
    district_id = None
    if raw:
        try:
            district_id = uuid.UUID(raw)
        except ValueError:
            print("pledgeql audit verify: --district must be a district id (a UUID)", file=sys.stderr)
            return 2
    if not settings.has_audit_key():
        print(
            "pledgeql audit verify: no audit key; set PLEDGEQL_AUDIT_KEY (or PLEDGEQL_DATA_DIR) to the one the server "
            "signs with",
            file=sys.stderr,
        )
        return 2
    key = settings.audit_key()
    try:
        url = server_urls(settings).owner
        heads = getattr(args, "heads", None)
        return asyncio.run(run_verify(url, key, district_id, sys.stdout, sys.stderr, Path(heads) if heads else None))
    except (OSError, ConnectionError) as error:
        print(
            f"pledgeql audit verify: cannot reach the database ({type(error).__name__}); "
            "check PLEDGEQL_DATABASE_URL and that the server is running",
            file=sys.stderr,
        )
        return 2
