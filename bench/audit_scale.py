"""Audit storage at scale (issue 15): size per class view, and reads, verify and retention over millions of entries.

    .venv/bin/python bench/audit_scale.py [--entries 10000000] [--months 12]

Builds its own database (``pledgeql_audit_scale``) on the embedded server,
migrates it, and writes the entries through the server's own chaining
(``permissions.audit_chain.origin_rows`` and its INSERT): four districts, 90% of
entries from class views of 30 students (one record each), 10% from reads of
one student (in the first district, one read in five is of the same student,
its most-read), spread over ``--months`` months up to now. Then it measures,
and writes ``bench/AUDIT_SCALE.md``:

* bytes on disk per record of a 30-student class view and per entry, indexes
  included (``pg_total_relation_size`` of every partition);
* ``accessLog`` for one student, and for the most-read student (its first
  page and a page from the middle of its history), and ``auditLog`` filtered
  by actor: the page
  statement the server runs (``resolvers.audit_log.audit_page``), as the
  application role under row-level security, p50 of 50 calls;
* ``pledgeql audit verify`` over every chain, as the command runs, its time
  and its peak memory;
* retention of the oldest month (anchor, drop its partition, delete the rest
  the anchors cover), its time, and verify again afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from permissions.audit import PendingEntry
from permissions.audit_chain import Origin, origin_rows
from resolvers.audit_log import AuditFilters, audit_page
from resolvers.audit_retention import drop_covered_partitions, remove_anchored, trim_chain
from resolvers.audit_store import INSERT, insert_args
from server.commands.audit_cli import verify_chains
from server.commands.migrate import migrate
from server.db import connect, server_urls
from server.settings import Settings

DATABASE = "pledgeql_audit_scale"
KEY = b"audit-scale-bench-key-0123456789abcdef"
FIELDS = (
    "Student.id",
    "Student.firstName",
    "Student.lastName",
    "Student.gradeLevel",
    "Response.answer",
    "Response.correct",
    "Response.score",
    "Response.submittedAt",
)
CATEGORIES = ("DIRECTORY", "PERFORMANCE", "WORK")
BATCH = 2000  # records per INSERT
SAMPLE_VIEWS = 5000  # class views written first, alone, to measure their size
MOST_READ = 0.2  # of the first district's reads of one student, those of its most-read student
OUT = Path(__file__).resolve().parent / "AUDIT_SCALE.md"


@dataclasses.dataclass
class World:
    districts: list[uuid.UUID]
    students: dict[uuid.UUID, list[uuid.UUID]]  # per district
    teachers: dict[uuid.UUID, list[uuid.UUID]]
    view_bytes: float = 0.0  # on disk per class view of 30 (one record), indexes included


def world(rng: random.Random) -> World:
    districts = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(4)]
    return World(
        districts,
        {d: [uuid.UUID(int=rng.getrandbits(128)) for _ in range(15_000)] for d in districts},
        {d: [uuid.UUID(int=rng.getrandbits(128)) for _ in range(500)] for d in districts},
    )


async def build(owner: Any, entries: int, months: int, rng: random.Random, sample: int, size_sql: str) -> World:
    """Write ``entries`` entries; first ``sample`` class views alone, whose size on disk is measured."""
    w = world(rng)
    heads: dict[uuid.UUID, tuple[int, str]] = {}
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=30 * months)
    pending_rows: list[tuple[Any, ...]] = []
    started = time.perf_counter()
    # A partition for every month of the range, as the server would have made them ahead.
    month = dt.datetime(start.year, start.month, 1, tzinfo=dt.UTC)
    while month <= now:
        following = dt.datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=dt.UTC)
        await owner.execute(
            f"CREATE TABLE IF NOT EXISTS audit_records_{month:%Y_%m} PARTITION OF audit_records "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{following.isoformat()}')"
        )
        month = following
    empty = await owner.fetchval(size_sql)
    sample_rows: list[tuple[Any, ...]] = []
    for _ in range(sample):
        district = w.districts[0]
        offset = rng.randrange(0, len(w.students[district]) - 30)
        views = [
            PendingEntry(str(district), s, True, FIELDS, CATEGORIES) for s in w.students[district][offset : offset + 30]
        ]
        sample_rows += origin_rows(
            _origin(start, rng.choice(w.teachers[district]), "ClassRoster"), views, KEY, heads, None
        )
    for at in range(0, len(sample_rows), BATCH):
        await owner.execute(INSERT, *insert_args(sample_rows[at : at + BATCH]))
    await owner.execute("VACUUM audit_records")
    w.view_bytes = (await owner.fetchval(size_sql) - empty) / sample
    written = sample * 30
    while written < entries:
        district = rng.choice(w.districts)
        at = start + (now - start) * (written / entries)
        students = w.students[district]
        if rng.random() < 0.9 / (0.9 + 0.1 * 30):  # by entries: 90% from class views of 30
            offset = rng.randrange(0, len(students) - 30)
            subjects: list[uuid.UUID | None] = list(students[offset : offset + 30])
        elif district == w.districts[0] and rng.random() < MOST_READ:
            subjects = [w.students[district][0]]
        else:
            subjects = [rng.choice(students)]
        origin = _origin(at, rng.choice(w.teachers[district]), "ClassRoster" if len(subjects) > 1 else "StudentDetail")
        batch = [PendingEntry(str(district), s, True, FIELDS, CATEGORIES) for s in subjects]
        pending_rows += origin_rows(origin, batch, KEY, heads, None)
        written += len(subjects)
        if len(pending_rows) >= BATCH:
            await owner.execute(INSERT, *insert_args(pending_rows))
            pending_rows = []
            if written % 500_000 < 30:
                rate = written / (time.perf_counter() - started)
                print(f"  {written:,} entries written ({rate:,.0f}/s)", flush=True)
    if pending_rows:
        await owner.execute(INSERT, *insert_args(pending_rows))
    print(f"built {written:,} entries in {time.perf_counter() - started:.0f} s", flush=True)
    await owner.execute("VACUUM ANALYZE audit_records")
    return w


def _origin(at: dt.datetime, actor: uuid.UUID, operation: str) -> Origin:
    return Origin(
        at=at,
        request_id=uuid.uuid4().hex,
        client_request_id=None,
        actor_id=actor,
        actor_role="TEACHER",
        purpose="INSTRUCTION",
        justification=None,
        operation_name=operation,
        break_glass=False,
    )


def verify_command(owner_url: str) -> tuple[float, float, bool, int]:
    """``pledgeql audit verify`` as an operator runs it: its time, its peak memory, its verdict, its entries."""
    env = {**os.environ, "PLEDGEQL_DATABASE_URL": owner_url, "PLEDGEQL_AUDIT_KEY": KEY.decode()}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "server.commands.cli", "audit", "verify"], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    verified = sum(int(m) for m in re.findall(r": (\d+) entries", done.stdout))
    return seconds, rss_mib, done.returncode == 0, verified


async def p50(call: Any, times: int = 50) -> float:
    took = []
    for _ in range(times):
        t = time.perf_counter()
        await call()
        took.append((time.perf_counter() - t) * 1000)
    return statistics.median(took)


class _AppDb:
    """The application role's connection with the request's row-level security setting."""

    def __init__(self, conn: Any, district: uuid.UUID) -> None:
        self.conn, self.district = conn, district

    async def fetch(self, sql: str, *args: Any) -> Any:
        async with self.conn.transaction():
            await self.conn.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(self.district))
            return await self.conn.fetch(sql, *args)


async def run(args: argparse.Namespace) -> None:
    settings = dataclasses.replace(Settings.from_env(), env="test", data_dir=Path(args.data_dir))
    server = server_urls(settings)
    urls = server.with_database(DATABASE)
    admin = await connect(server.with_database("postgres").owner)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()
    await migrate(urls)
    owner = await connect(urls.owner)
    app = await connect(urls.app)
    rng = random.Random(15)
    lines: list[str] = []
    try:
        size_sql = (
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_records'::regclass"
        )
        w = await build(owner, args.entries, args.months, rng, sample=SAMPLE_VIEWS, size_sql=size_sql)
        total = await owner.fetchval("SELECT coalesce(sum(cardinality(subjects)), 0) FROM audit_records")
        records = await owner.fetchval("SELECT count(*) FROM audit_records")
        views = await owner.fetchval("SELECT count(*) FROM audit_records WHERE cardinality(subjects) = 30")
        size = await owner.fetchval(size_sql)
        per_entry = size / total
        lines += [
            f"Entries: {total:,} in {records:,} records ({views:,} class views of 30), {len(w.districts)} districts, "
            f"{args.months} months.",
            "",
            f"- Audit on disk, indexes included: {size / 2**20:,.0f} MiB, **{per_entry:.0f} bytes per entry**, "
            f"{size / records:,.0f} bytes per record on average",
            f"- A class view of 30 students (one record): **{w.view_bytes:,.0f} bytes** with its index entries "
            f"(measured over the first {SAMPLE_VIEWS:,} written, alone, after VACUUM)",
        ]
        district = w.districts[0]
        student = w.students[district][100]
        actor = w.teachers[district][7]
        db = _AppDb(app, district)
        student_ms = await p50(lambda: audit_page(db, district, AuditFilters(subject=student), None, 51))
        found = len(await audit_page(db, district, AuditFilters(subject=student), None, 51))
        actor_ms = await p50(lambda: audit_page(db, district, AuditFilters(actor=actor), None, 101))
        most_read = w.students[district][0]
        seqs = await owner.fetch(
            "SELECT seq FROM audit_records WHERE subjects @> ARRAY[$1::uuid] ORDER BY seq DESC", most_read
        )
        middle = seqs[len(seqs) // 2]["seq"]
        most_read_ms = await p50(lambda: audit_page(db, district, AuditFilters(subject=most_read), None, 51))
        middle_ms = await p50(lambda: audit_page(db, district, AuditFilters(subject=most_read), middle, 51))
        lines += [
            f"- accessLog for one student (first 50; {found} found): p50 **{student_ms:.1f} ms** (target < 20 ms)",
            f"- accessLog for the most-read student ({len(seqs):,} records): first 50 p50 **{most_read_ms:.1f} ms**, "
            f"50 from the middle of its history (a cursor) p50 **{middle_ms:.1f} ms**",
            f"- auditLog filtered by actor (first 100): p50 **{actor_ms:.1f} ms** (target < 50 ms)",
        ]
        verify_s, rss_mib, ok, verified = await asyncio.to_thread(verify_command, urls.owner)
        lines.append(
            f"- `pledgeql audit verify`, every chain: **{verify_s:.1f} s** for {verified:,} entries, "
            f"{'OK' if ok else 'FAILED'}, at most {rss_mib:.0f} MiB resident (the command's own process)"
        )
        oldest = await owner.fetchval("SELECT min(at) FROM audit_records")
        month_end = (oldest.replace(day=1) + dt.timedelta(days=32)).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        started = time.perf_counter()
        removed = 0
        for d in w.districts:
            removed += await trim_chain(owner, KEY, d, month_end, remove=False)
        dropped = await drop_covered_partitions(owner)
        for anchor in await owner.fetch("SELECT district_id, seq FROM audit_anchors"):
            await remove_anchored(owner, anchor["district_id"], anchor["seq"], 5000)
        retention_s = time.perf_counter() - started
        started = time.perf_counter()
        reports = await verify_chains(owner, KEY, None, None, None)
        after_s = time.perf_counter() - started
        ok = all(r.broken is None for r in reports)
        lines += [
            f"- Retention of the oldest month (before {month_end:%Y-%m-%d}): {removed:,} entries in "
            f"**{retention_s:.2f} s**, partitions dropped whole: {', '.join(dropped) or 'none'}",
            f"- audit verify afterwards: {after_s:.1f} s, {'OK' if ok else 'FAILED'}",
        ]
    finally:
        await owner.close()
        await app.close()
    text = "\n".join(
        [
            "# Audit storage at scale",
            "",
            f"Written by `bench/audit_scale.py --entries {args.entries} --months {args.months}` on "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
            "",
            *lines,
            "",
        ]
    )
    OUT.write_text(text, encoding="utf-8")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / ".work" / "audit-scale"))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
