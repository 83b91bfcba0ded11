"""`pledgeql audit verify [--district ID]`: recompute every audit chain with the key.

Runs over the owner connection, in one REPEATABLE READ snapshot. Writers
append a district's entries under its chain lock and commit them whole, so
any snapshot holds a prefix of each chain: verifying never blocks requests
and never sees half a request. Prints one OK line per district (with its head,
which an operator can keep outside the database), or names, per district,
the first entry altered, deleted or reordered, and exits 1.

Retention: a chain may start after seq 1 only from its key-signed anchor in
``audit_anchors`` (written by ``resolvers.audit_retention.trim_chain``); entries
removed any other way are reported as deleted.

Storage (migration 0013): each chain runs through the entries chained one by
one before records existed (``audit_entries_v1``), then on through its
records (``audit_records``). Both are streamed through server-side cursors,
so memory stays bounded whatever the chain's length, and a line on stderr
reports progress every million entries.

The newest entries of a chain are the one thing a keyed chain cannot vouch
for by itself: removing them leaves a shorter chain that verifies. The head
its writers record (``audit_heads``, moved with the records) catches their
removal, unless it was moved back too. With
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
# Records with their codes as stored (names are looked up here, once per run)
# and their hashes in hex, as the chain compares them.
RECORD_COLUMNS = (
    "district_id, seq, id, at, request_id, client_request_id, trace_id, actor_id, actor_role, purpose, "
    "justification, operation_name, subjects, fields, categories, decision, break_glass, "
    "encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash"
)
DISTRICTS = """
SELECT district_id FROM audit_heads
UNION SELECT district_id FROM audit_anchors
UNION SELECT id FROM districts
ORDER BY 1
"""
LAST_SEQ = """
SELECT greatest(
    (SELECT max(seq) FROM audit_entries_v1 WHERE district_id = $1),
    (SELECT seq + cardinality(subjects) - 1 FROM audit_records WHERE district_id = $1 ORDER BY seq DESC LIMIT 1))
"""
# The head the writers recorded, in the transaction that wrote the chain's newest records.
RECORDED_HEAD = "SELECT seq FROM audit_heads WHERE district_id = $1"
# A progress line (on stderr) every this many entries of one chain.
PROGRESS_EVERY = 1_000_000


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
    conn: Any,
    key: bytes,
    district_id: uuid.UUID,
    known_head: tuple[int, str] | None = None,
    progress: TextIO | None = None,
) -> ChainReport:
    """One district's chain, inside the caller's snapshot: its entries chained
    one by one, then its records, streamed through cursors (bounded memory)."""
    anchor_row = await conn.fetchrow(
        "SELECT district_id, seq, hash, at, mac FROM audit_anchors WHERE district_id = $1", district_id
    )
    anchor = None if anchor_row is None else Anchor(**dict(anchor_row))
    last_seq = await conn.fetchval(LAST_SEQ, district_id)
    verifier = ChainVerifier(key, district_id, anchor, last_seq or 0, known_head)
    broken = verifier.start()
    if broken is None:
        names = {r["code"]: r["name"] for r in await conn.fetch("SELECT code, name FROM audit_names")}
        legacy = f"SELECT {ENTRY_COLUMNS} FROM audit_entries_v1 WHERE district_id = $1 ORDER BY seq"  # noqa: S608
        records = f"SELECT {RECORD_COLUMNS} FROM audit_records WHERE district_id = $1 ORDER BY seq"  # noqa: S608
        reported = 0
        for query, coded in ((legacy, False), (records, True)):
            async for row in conn.cursor(query, district_id, prefetch=2000):
                broken = verifier.feed(_named(row, names) if coded else row)
                if broken is not None:
                    break
                if progress is not None and verifier.count - reported >= PROGRESS_EVERY:
                    reported = verifier.count
                    print(f"district {district_id}: {verifier.count:,} entries verified", file=progress, flush=True)
            if broken is not None:
                break
        broken = verifier.finish()
    head_seq, head_hash = verifier.head
    if broken is None:
        broken = _short_of(district_id, head_seq, anchor, await conn.fetchval(RECORDED_HEAD, district_id))
    return ChainReport(
        district_id=district_id,
        entries=verifier.count,
        first_seq=verifier.first_seq,
        head_seq=head_seq,
        head_hash=head_hash,
        anchor_seq=anchor.seq if anchor else None,
        broken=broken,
    )


def _short_of(district_id: uuid.UUID, end: int, anchor: Anchor | None, recorded: int | None) -> ChainBreak | None:
    """A chain that ends before the head its writers recorded (``audit_heads``) lost its newest
    entries. Whoever removes them and moves that head back as well is caught by ``--heads``."""
    if recorded is None or recorded <= end or (anchor is not None and anchor.seq >= recorded):
        return None
    return ChainBreak(
        district_id,
        recorded,
        None,
        "deleted",
        f"the chain's recorded head is seq {recorded}; it now ends at seq {end}: its newest entries were removed",
    )


def _named(row: Any, names: dict[int, str]) -> dict[str, Any]:
    """A record with its field and category codes as names (a code the
    dictionary lacks reads as None, and the record's hash then fails)."""
    named = dict(row)
    named["fields"] = [names.get(c) for c in row["fields"]]
    named["categories"] = [names.get(c) for c in row["categories"]]
    return named


async def verify_chains(
    conn: Any,
    key: bytes,
    district_id: uuid.UUID | None = None,
    known_heads: dict[uuid.UUID, tuple[int, str]] | None = None,
    progress: TextIO | None = None,
) -> list[ChainReport]:
    """Every chain (or one district's) from one consistent snapshot."""
    known = known_heads or {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if district_id is not None:
            districts = [district_id]
        else:
            districts = sorted({r[0] for r in await conn.fetch(DISTRICTS)} | set(known))
        return [await verify_district(conn, key, d, known.get(d), progress) for d in districts]


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


# A district to verify: one of those DISTRICTS finds (a district, or a chain of one: the nil
# district's holds the entries about no district).
KNOWN_DISTRICT = (
    "SELECT EXISTS (SELECT 1 FROM audit_heads WHERE district_id = $1) "
    "OR EXISTS (SELECT 1 FROM audit_anchors WHERE district_id = $1) OR EXISTS (SELECT 1 FROM districts WHERE id = $1)"
)


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
        if district_id is not None and not await conn.fetchval(KNOWN_DISTRICT, district_id):
            print(
                f"pledgeql audit verify: no district {district_id} and no audit chain of it; "
                "leave out --district to verify every chain",
                file=err,
            )
            return 2
        reports = await verify_chains(conn, key, district_id, known, err)
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
        try:
            write_heads(heads_file, database, {**known, **{r.district_id: (r.head_seq, r.head_hash) for r in reports}})
        except OSError as error:
            print(
                f"pledgeql audit verify: every chain verified, but the heads file {heads_file} cannot be written "
                f"({error.strerror}); choose a path you can write",
                file=err,
            )
            return 2
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
