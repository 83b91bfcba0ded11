"""What the audit trail costs. A benchmark, not a test.

    .venv/bin/python bench/audit_overhead.py [--requests 300] [--data-dir DIR] [--skip-roster]

Three measurements, one run:

1. **collector**: nanoseconds per ``AuditCollector.note()`` call, in the
   pattern of the roster below (30 students x 63 classified resolves);
2. **writer**: milliseconds to chain and write N entries in one request's
   transaction, as the server does it: onto the head the worker knows (one
   statement, ``pledgeql_audit_advance``), or after reading it
   (``pledgeql_audit_heads``, one call that locks and reads the heads, then one
   INSERT) and, for comparison, as it did first (lock, head SELECT, INSERT:
   three round trips); each on a chain of its own;
3. **roster**: the teacher's roster query (a class of 30 students, each with
   their last 20 responses: answer, correct, score) over ASGI in-process,
   alternating between the production app and the same build whose audit
   writer is replaced by a no-op, and the ratio of the medians.

The no-op writer exists only here: this script starts ``create_app`` and then
swaps the writer on its own endpoint object. Nothing in the server reads a
setting or variable that could turn the audit off.

The database is an embedded PostgreSQL under a fresh temporary data dir (or
``--data-dir``), migrated and seeded with the demo data; teacher1's first
class is topped up to 30 students with active enrollments of its school.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from permissions.audit import AuditCollector
from permissions.audit_chain import origin_rows
from resolvers.audit_store import INSERT, insert_args, write_batch
from server.audit_writer import make_audit_writer, origin_of
from server.telemetry import current_trace_id

ROSTER = """
query Roster($id: ID!) {
  class(id: $id) {
    students { id firstName lastName responses(first: 20) { answer correct score } }
  }
}
"""
CLASS_SIZE = 30


# ------------------------------------------------------------------ collector


class _NoCollector:
    """The cost of calling a method with five arguments and doing nothing: the floor."""

    def note(self, district_key: str, subject_id: Any, field: str, category: str, allowed: bool) -> None:
        return None


def bench_collector(rounds: int = 300) -> tuple[float, float]:
    """(ns per note(), ns per empty call), a roster's worth of notes per fresh collector.

    As in a request: subjects are asyncpg's UUID objects, one per row (each
    response row carries its own copy of its student's id), and each row's
    district key is its own string. CPU time of this process, best of 7."""
    from asyncpg.pgproto.pgproto import UUID as PgUUID

    district = uuid.uuid4()
    calls: list[tuple[str, Any, str, str, bool]] = []
    for _ in range(CLASS_SIZE):
        student = uuid.uuid4()
        s, key = PgUUID(str(student)), str(district)
        calls += [
            (key, s, "Student.firstName", "DIRECTORY", True),
            (key, s, "Student.lastName", "DIRECTORY", True),
            (key, s, "Student.responses", "PERFORMANCE", True),
        ]
        for _ in range(20):
            r, rkey = PgUUID(str(student)), str(district)
            calls += [
                (rkey, r, "Response.answer", "WORK", True),
                (rkey, r, "Response.correct", "PERFORMANCE", True),
                (rkey, r, "Response.score", "PERFORMANCE", True),
            ]

    def best(make: Any) -> float:
        fastest = float("inf")
        for _ in range(7):
            started = time.process_time_ns()
            for _ in range(rounds):
                note = make().note
                for c in calls:
                    note(*c)
            fastest = min(fastest, (time.process_time_ns() - started) / (rounds * len(calls)))
        return fastest

    collector = AuditCollector()
    for c in calls:
        collector.note(*c)
    if len(collector) != CLASS_SIZE:
        raise SystemExit("the collector did not group the roster per student")
    return best(AuditCollector), best(_NoCollector)


# --------------------------------------------------------------------- writer


def _context(conn: Any, n: int, district: uuid.UUID, actor: uuid.UUID) -> Any:
    from permissions.enums import Purpose, Role
    from resolvers.db import Db

    audit = AuditCollector()
    for _ in range(n):
        audit.note(str(district), uuid.uuid4(), "Student.firstName", "DIRECTORY", True)
    return SimpleNamespace(
        audit=audit,
        db=Db(conn),
        now=dt.datetime.now(dt.UTC),
        request_id=uuid.uuid4().hex,
        principal=SimpleNamespace(user_id=actor, role=Role.TEACHER),
        purpose=Purpose.INSTRUCTION,
        justification=None,
        justifications={},
        client_request_id=None,
        operation_name="Bench",
        rule=SimpleNamespace(break_glass=False),
        rls_key=str(district),
        read_only=False,  # written in the bench's own transaction, as a mutation's entries are
        after_commit=[],
    )


async def three_round_trips(context: Any, key: bytes) -> None:
    """The writer as it was: lock, then read the head, then insert."""
    from permissions.audit import GENESIS

    entries = context.audit.entries()
    heads: dict[uuid.UUID, tuple[int, str]] = {}
    for district in sorted({uuid.UUID(e.district_key) for e in entries}):
        await context.db.execute("SELECT pg_advisory_xact_lock(pledgeql_audit_lock_key($1))", district)
        row = await context.db.fetchrow(
            "SELECT seq, encode(hash, 'hex') AS hash FROM audit_heads WHERE district_id = $1", district
        )
        heads[district] = (row["seq"], row["hash"]) if row else (0, GENESIS)
    rows = origin_rows(origin_of(context), entries, key, heads, current_trace_id())
    await context.db.execute(INSERT, *insert_args(rows))


async def bench_writer(urls: Any, key: bytes, sizes: tuple[int, ...], repeat: int = 60) -> dict[str, dict[int, float]]:
    from server.db import connect

    writer = make_audit_writer(key)  # knows each chain's head after its first write there

    async def heads_then_insert(context: Any) -> None:
        batch = [(origin_of(context), context.audit.entries(), current_trace_id())]
        await write_batch(context.db, batch, key)  # no known heads: always reads them

    variants: dict[str, Any] = {
        "known head, one statement (1 round trip)": writer,
        "heads function + INSERT (2 round trips)": heads_then_insert,
        "lock, SELECT, INSERT (3)": lambda c: three_round_trips(c, key),
    }
    results: dict[str, dict[int, float]] = {label: {} for label in variants}
    conn = await connect(urls.app)
    actor = uuid.uuid4()
    # A chain per variant, so that no variant moves another's head.
    chains = {label: uuid.uuid4() for label in variants}
    try:
        for n in sizes:
            timings: dict[str, list[float]] = {k: [] for k in results}
            for i in range(repeat):
                for label, write in variants.items():
                    district = chains[label]
                    async with conn.transaction():
                        await conn.execute("SELECT set_config('pledgeql.district_ids', $1, true)", str(district))
                        context = _context(conn, n, district, actor)
                        started = time.perf_counter()
                        await write(context)
                        if i >= 5:
                            timings[label].append((time.perf_counter() - started) * 1000)
            for label, values in timings.items():
                results[label][n] = statistics.median(values)
    finally:
        await conn.close()
    return results


# --------------------------------------------------------------------- roster


async def _prepare(settings: Any) -> tuple[Any, uuid.UUID, uuid.UUID]:
    from server.commands.migrate import migrate
    from server.commands.seed import seed_demo
    from server.db import connect, ensure_database, server_urls

    urls = server_urls(settings)
    await ensure_database(urls)
    await migrate(urls)
    owner = await connect(urls.owner)
    try:
        if not await owner.fetchval("SELECT count(*) FROM districts"):
            await seed_demo(urls.owner)
        teacher = await owner.fetchval("SELECT id FROM users WHERE username = 'teacher1@northwind.example'")
        klass = await owner.fetchrow(
            "SELECT c.district_id, c.id, c.school_id FROM class_teachers ct JOIN classes c ON c.id = ct.class_id "
            "WHERE ct.teacher_id = $1 ORDER BY c.name LIMIT 1",
            teacher,
        )
        active = "e.begin_date <= current_date AND (e.end_date IS NULL OR e.end_date >= current_date)"
        enrolled = await owner.fetchval(
            f"SELECT count(DISTINCT e.student_id) FROM enrollments e WHERE e.class_id = $1 AND {active}", klass["id"]
        )
        if enrolled < CLASS_SIZE:
            await owner.execute(
                "INSERT INTO enrollments (district_id, class_id, student_id, begin_date) "
                "SELECT u.district_id, $2, u.id, current_date - 1 FROM users u "
                "WHERE u.district_id = $1 AND u.school_id = $3 AND u.role = 'STUDENT' AND NOT EXISTS "
                "(SELECT 1 FROM enrollments e WHERE e.class_id = $2 AND e.student_id = u.id) "
                "ORDER BY u.id LIMIT $4",
                klass["district_id"],
                klass["id"],
                klass["school_id"],
                CLASS_SIZE - enrolled,
            )
    finally:
        await owner.close()
    return urls, teacher, klass["id"]


async def bench_roster(settings: Any, urls: Any, teacher: uuid.UUID, klass: uuid.UUID, requests: int) -> None:
    import httpx

    from server.app import create_app
    from server.auth import mint_token

    async def write_nothing(context: Any) -> None:
        return None

    audited = create_app(settings, urls)
    unaudited = create_app(settings, urls)
    token = mint_token(settings, teacher, ["INSTRUCTION"], 3600)
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"}
    payload = {"query": ROSTER, "variables": {"id": str(klass)}}
    times: dict[str, list[float]] = {"audit on": [], "audit writer no-op": []}
    cpu: dict[str, list[float]] = {"audit on": [], "audit writer no-op": []}
    writes: list[float] = []
    async with audited.router.lifespan_context(audited), unaudited.router.lifespan_context(unaudited):
        unaudited.state.pledgeql.endpoint.audit_writer = write_nothing  # this build only
        production_writer = audited.state.pledgeql.endpoint.audit_writer

        async def timed_writer(context: Any) -> None:
            started = time.perf_counter()
            await production_writer(context)
            writes.append((time.perf_counter() - started) * 1000)

        audited.state.pledgeql.endpoint.audit_writer = timed_writer  # the same writer, timed
        clients = {
            "audit on": httpx.AsyncClient(transport=httpx.ASGITransport(app=audited), base_url="http://bench"),
            "audit writer no-op": httpx.AsyncClient(
                transport=httpx.ASGITransport(app=unaudited), base_url="http://bench"
            ),
        }
        try:
            check = (await clients["audit on"].post("/graphql", json=payload, headers=headers)).json()
            students = check["data"]["class"]["students"]
            answers = sum(len(s["responses"]) for s in students)
            if "errors" in check or len(students) != CLASS_SIZE or answers != CLASS_SIZE * 20:
                raise SystemExit(f"unexpected roster: {len(students)} students, {answers} responses")
            for i in range(requests + 20):
                order = list(clients.items()) if i % 2 else list(reversed(clients.items()))
                for label, client in order:
                    started, started_cpu = time.perf_counter(), time.process_time()
                    response = await client.post("/graphql", json=payload, headers=headers)
                    elapsed = (time.perf_counter() - started) * 1000
                    elapsed_cpu = (time.process_time() - started_cpu) * 1000
                    if response.status_code != 200:
                        raise SystemExit(f"{label}: HTTP {response.status_code}")
                    if i >= 20:  # warm-up
                        times[label].append(elapsed)
                        cpu[label].append(elapsed_cpu)
        finally:
            for client in clients.values():
                await client.aclose()
    on, off = statistics.median(times["audit on"]), statistics.median(times["audit writer no-op"])
    print(f"roster ({CLASS_SIZE} students x 20 responses, {requests} requests each, alternating):")
    for label, values in times.items():
        q = statistics.quantiles(values, n=10)
        print(
            f"  {label:20s} median {statistics.median(values):7.2f} ms   p10 {q[0]:7.2f}   p90 {q[-1]:7.2f}"
            f"   (this process's CPU: median {statistics.median(cpu[label]):7.2f} ms)"
        )
    print(f"  audit writer inside the audited requests: median {statistics.median(writes[20:]):.2f} ms for 30 entries")
    print(f"  audit overhead: median ratio {on / off:.3f} ({(on / off - 1) * 100:+.1f}%), {on - off:+.2f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--skip-roster", action="store_true")
    args = parser.parse_args()

    ns, floor = bench_collector()
    print(
        f"collector: {ns:.0f} ns per note() ({ns - floor:.0f} ns above an empty 5-argument method call "
        f"at {floor:.0f} ns on this machine); {CLASS_SIZE * 63} notes per roster = {ns * CLASS_SIZE * 63 / 1e6:.2f} ms"
    )
    if args.skip_roster and args.data_dir is None:
        return

    from server.settings import Settings

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="pledgeql-audit-bench-"))
    settings = dataclasses.replace(
        Settings.from_env(),
        data_dir=data_dir,
        database_url=None,
        extra={"audit_key": "bench-audit-key-" + "x" * 32},
        rate_limit_per_minute=10**9,
        rate_limit_burst=10**9,
    )
    from server.db import stop_embedded

    try:
        urls, teacher, klass = await _prepare(settings)
        results = await bench_writer(urls, settings.audit_key(), (1, 30, 50, 200))
        print("writer (median ms per request's write, in its transaction):")
        for label, by_size in results.items():
            print(f"  {label:42s} " + "   ".join(f"{n:3d} entries {ms:6.3f}" for n, ms in by_size.items()))
        if not args.skip_roster:
            await bench_roster(settings, urls, teacher, klass, args.requests)
    finally:
        stop_embedded()
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
