"""Where S1's time goes: the class view served in-process under pyinstrument.

    .venv/bin/pip install pyinstrument   # a profiling tool, not a dependency
    .venv/bin/python bench/run.py ...    # builds the bench database first
    .venv/bin/python bench/profile_s1.py [--requests 200] [--unenforced] [--html bench/.work/s1.html]

The production app (or the unenforced build) runs in this process on the
bench database; S1 is sent through httpx's ASGI transport one request at a
time, after a warm-up, first unprofiled (wall and CPU time per request), then
under pyinstrument. Prints the time per request, the time by part
(graphql-core, Strawberry's wrappers, the permission check, the audit, SQL,
JSON, HTTP, and the event loop idle while PostgreSQL works), each sample
counted in the innermost part it is in, and pyinstrument's own tree. The
samples are of what the thread runs (async_mode disabled), so the parts add
up to the wall time of the requests.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import scenarios  # noqa: E402
from bench.run import BENCH, Options, database_urls  # noqa: E402
from server.auth import mint_token  # noqa: E402
from server.settings import Settings  # noqa: E402

# (part, path fragments): a sample belongs to the innermost frame that matches one.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle: the event loop waiting (PostgreSQL working)", ("/selectors.py",)),
    ("SQL (asyncpg, pool, waiting on PostgreSQL)", ("/asyncpg/", "/sqlalchemy/", "resolvers/db.py")),
    ("audit (collector notes, chain, INSERT)", ("permissions/audit.py", "server/audit_writer.py")),
    (
        "permission check (Strawberry PermissionExtension, decision lookup)",
        ("strawberry/permission.py", "schema/classified.py", "permissions/decide.py"),
    ),
    ("JSON (orjson)", ("/orjson/",)),
    ("Strawberry resolver wrappers (Info, arguments, extensions)", ("/strawberry/",)),
    ("graphql-core execution", ("/graphql/",)),
    ("pledgeql resolvers and loaders", ("/schema/", "/resolvers/")),
    ("request handling (endpoint, principal, context)", ("/server/", "/permissions/")),
    ("HTTP (Starlette, httpx test transport)", ("/starlette/", "/httpx/", "/anyio/", "/httpcore/")),
    ("event loop", ("/asyncio/",)),
)


def part_of(frame: Any) -> str | None:
    path = (getattr(frame, "file_path", None) or "").replace("\\", "/")
    if path == "<built-in>" and getattr(frame, "function", "") in ("dumps", "loads"):
        return "JSON (orjson)"
    for part, fragments in PARTS:
        if any(f in path for f in fragments):
            return part
    return None


def by_part(root: Any) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)

    def walk(frame: Any, current: str) -> None:
        here = part_of(frame) or current
        totals[here] += max(0.0, frame.time - sum(child.time for child in frame.children))
        for child in frame.children:
            walk(child, here)

    walk(root, "other")
    return dict(totals)


async def profile(args: argparse.Namespace) -> int:
    import httpx
    from pyinstrument import Profiler

    from bench.unenforced_app import create_unenforced_app
    from server.app import create_app

    options = Options(database=args.database, work_dir=args.work_dir.resolve())
    urls = database_urls(options)
    subjects = await scenarios.prepare_subjects(urls.owner)
    secret = secrets.token_urlsafe(32)
    settings = dataclasses.replace(
        Settings.from_env(),
        env="development",
        jwt_secret=secret,
        data_dir=options.work_dir / "server",
        rate_limit_per_minute=1_000_000_000,
        rate_limit_burst=1_000_000_000,
    )
    app = create_unenforced_app(settings, urls) if args.unenforced else create_app(settings, urls)
    request = scenarios.scenario_requests(subjects)["S1"][0]
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {mint_token(settings, request.user_id, [request.purpose], 3600)}",
        "X-Purpose": request.purpose,
    }
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def once() -> float:
                t0 = time.perf_counter()
                response = await client.post("/graphql", content=request.body, headers=headers)
                elapsed = time.perf_counter() - t0
                problem = scenarios.check_body("S1", response.json())
                if problem:
                    raise SystemExit(f"S1 did not answer in full: {problem}")
                return elapsed

            for _ in range(args.warmup):
                await once()
            # Unprofiled first: wall time and this process's CPU time per request
            # (the CPU time does not count the time other processes take the cores).
            plain: list[float] = []
            cpu_started = time.process_time()
            for _ in range(args.requests):
                plain.append(await once())
            cpu = (time.process_time() - cpu_started) / args.requests
            profiler = Profiler(interval=0.001, async_mode="disabled")
            times: list[float] = []
            profiler.start()
            for _ in range(args.requests):
                times.append(await once())
            profiler.stop()
    build = "unenforced build" if args.unenforced else "production app (enforced, audited)"
    print(f"S1 in-process, {build}: {args.requests} requests, one at a time")
    print(
        f"  unprofiled: p50 {statistics.median(plain) * 1000:.1f} ms, min {min(plain) * 1000:.1f} ms wall; "
        f"{cpu * 1000:.1f} ms CPU of this process per request (app, test client and PostgreSQL's client side)"
    )
    print(
        f"  profiled:   p50 {statistics.median(times) * 1000:.1f} ms, mean {statistics.fmean(times) * 1000:.1f} ms, "
        f"min {min(times) * 1000:.1f} ms wall"
    )
    session = profiler.last_session
    if session is None:
        return 1
    root = session.root_frame()
    if root is None:
        return 1
    parts = by_part(root)
    total = sum(parts.values()) or 1.0
    print("\nTime by part (innermost matching frame):")
    for part, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds / total * 100:5.1f}%  {seconds / args.requests * 1000:6.2f} ms/request  {part}")
    print()
    print(profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False)[: args.text_chars])
    if args.html:
        args.html.write_text(profiler.output_html())
        print(f"HTML profile: {args.html}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/profile_s1.py", description="Profile S1 in-process.")
    parser.add_argument("--database", default="pledgeql_bench")
    parser.add_argument("--work-dir", type=Path, default=BENCH / ".work")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--unenforced", action="store_true", help="profile the build without checks and audit")
    parser.add_argument("--html", type=Path, default=None)
    parser.add_argument("--text-chars", type=int, default=12_000)
    args = parser.parse_args(argv)
    return asyncio.run(profile(args))


if __name__ == "__main__":
    sys.exit(main())
