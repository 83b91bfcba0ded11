"""S1's SQL statements, one by one: what each costs per request, and the compiled statement beside the limit's.

    .venv/bin/python bench/run.py ...                  # builds the bench database first
    .venv/bin/python bench/s1_statements.py [--requests 200] [--unenforced]

Serves S1 in-process on the bench database (httpx's ASGI transport, one
request at a time, after a warm-up) with asyncpg's query methods wrapped, and
prints every statement the requests sent with its p50 time and how many per
request. Then runs the compiled statement of the last request and the limit's
hand-written statement (bench/limit.py) alternately on one owner connection
and prints both p50s: the price of building the answer in one statement the
way pledgeql does, scope and audit columns included.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from bench import scenarios  # noqa: E402
from bench.run import Options, database_urls  # noqa: E402

Timings = dict[tuple[str, str], list[float]]


def wrap_asyncpg(timings: Timings) -> None:
    """Time every fetch/fetchrow/fetchval/execute of every asyncpg connection, by statement."""
    for name in ("fetch", "fetchrow", "fetchval", "execute"):
        original = getattr(asyncpg.connection.Connection, name)

        def timed(self: Any, query: str, *args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            async def run() -> Any:
                started = time.perf_counter()
                try:
                    return await _original(self, query, *args, **kw)
                finally:
                    timings[(_name, " ".join(query.split())[:80])].append(time.perf_counter() - started)

            return run()

        setattr(asyncpg.connection.Connection, name, timed)


async def main(args: argparse.Namespace) -> None:
    import schema.compiled as compiled
    from bench.limit import S1_SQL
    from bench.profile_s1 import serve_s1
    from server.db import connect

    last: dict[str, Any] = {}
    build = compiled.statement

    def keep(*a: Any, **kw: Any) -> Any:
        last["statement"] = built = build(*a, **kw)
        return built

    compiled.statement = keep  # the compiled reads look it up in their module at each request
    timings: Timings = collections.defaultdict(list)
    wrap_asyncpg(timings)
    walls: list[float] = []

    async def body(once: Callable[[], Awaitable[float]]) -> None:
        for _ in range(args.warmup):
            await once()
        timings.clear()
        for _ in range(args.requests):
            walls.append(await once())

    await serve_s1(args, body)  # the profiler's S1 loop: same app, token and response check
    build_name = "unenforced build" if args.unenforced else "production app"
    print(f"S1 in-process, {build_name}: {args.requests} requests, p50 {statistics.median(walls) * 1000:.2f} ms")
    for (method, text), values in sorted(timings.items(), key=lambda kv: -sum(kv[1])):
        per_request = len(values) / args.requests
        print(f"  {statistics.median(values) * 1000:6.2f} ms p50  x{per_request:.1f}/request  {method}: {text}")

    built = last.get("statement")
    if built is None:
        print("No compiled statement ran: S1 took the resolver path")
        return
    urls = database_urls(Options(database=args.database, work_dir=args.work_dir.resolve()))
    subjects = await scenarios.prepare_subjects(urls.owner)
    conn = await connect(urls.owner)
    try:
        runs: dict[str, list[float]] = {"compiled": [], "limit": []}
        for _ in range(args.requests):
            for label, sql, params in (
                ("compiled", built.sql, built.params),
                ("limit", S1_SQL, [subjects.district_id, subjects.class_id]),
            ):
                started = time.perf_counter()
                await conn.fetchrow(sql, *params)
                runs[label].append(time.perf_counter() - started)
    finally:
        await conn.close()
    print("One statement, alternately on one connection:")
    for label, values in runs.items():
        print(f"  {label}: p50 {statistics.median(values) * 1000:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", default="pledgeql_bench")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "bench" / ".work")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--unenforced", action="store_true", help="the build without checks and audit")
    asyncio.run(main(parser.parse_args()))
