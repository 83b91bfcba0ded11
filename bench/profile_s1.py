"""Where S1's time goes: the class view served in-process, profiled.

    .venv/bin/pip install py-spy pyinstrument   # profiling tools, not dependencies
    .venv/bin/python bench/run.py ...           # builds the bench database first
    .venv/bin/python bench/profile_s1.py [--profiler py-spy|pyinstrument] [--requests 300] [--unenforced]

The production app (or the unenforced build) runs in one process on the bench
database; S1 is sent through httpx's ASGI transport one request at a time,
after a warm-up, and measured unprofiled (wall and CPU time per request).
Then it is profiled:

* ``py-spy`` (default): the same loop in a child process sampled from outside
  (``py-spy record --idle``), so the profiled code runs at full speed;
* ``pyinstrument``: in this process; its per-call hook slows call-heavy code
  (graphql-core) more than the rest, so its shares lean that way.

Prints the time by part (graphql-core, Strawberry's wrappers, the permission
check, the audit, SQL, JSON, HTTP, the event loop idle while PostgreSQL
works), each sample counted in the innermost part it is in, and the hottest
functions.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import scenarios  # noqa: E402
from bench.run import BENCH, Options, database_urls  # noqa: E402
from server.auth import mint_token  # noqa: E402
from server.settings import Settings  # noqa: E402

IDLE = "idle: the event loop waiting (PostgreSQL working)"
JSON = "JSON (orjson)"
# (part, path fragments): a sample belongs to the innermost frame that matches one.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (IDLE, ("/selectors.py",)),
    # asyncpg's protocol is compiled: reading and decoding rows shows as the
    # asyncio transport that feeds it (the only sockets in this process are PostgreSQL's).
    (
        "SQL (asyncpg: statements, socket reads, row decoding)",
        ("/asyncpg/", "/sqlalchemy/", "resolvers/db.py", "asyncio/selector_events.py"),
    ),
    (
        "audit (collector notes, chain, INSERT)",
        ("permissions/audit.py", "permissions/audit_chain.py", "resolvers/audit_store.py", "server/audit_writer.py"),
    ),
    (
        "permission check (PermissionExtension, decision lookup)",
        ("strawberry/permission.py", "schema/classified.py", "schema/direct.py", "permissions/decide.py"),
    ),
    ("Strawberry resolver wrappers (Info, arguments, extensions)", ("/strawberry/",)),
    ("graphql-core execution", ("/graphql/",)),
    ("pledgeql resolvers and loaders", ("/schema/", "/resolvers/")),
    ("request handling (endpoint, principal, context)", ("/server/", "/permissions/")),
    ("HTTP (Starlette, httpx test transport)", ("/starlette/", "/httpx/", "/anyio/", "/httpcore/")),
    ("event loop", ("/asyncio/",)),
)
SETUP_FRAMES = ("_find_and_load", "prepare_subjects", "create_app", "create_unenforced_app", "lifespan")


def part_of(function: str, path: str) -> str | None:
    path = path.replace("\\", "/")
    if function == "respond" or (path == "<built-in>" and function in ("dumps", "loads")):
        return JSON
    for part, fragments in PARTS:
        if any(f in path for f in fragments):
            return part
    return None


def print_parts(parts: dict[str, float], requests: int, unit_per_request: float) -> None:
    total = sum(parts.values()) or 1.0
    print("\nTime by part (innermost matching frame):")
    for part, amount in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {amount / total * 100:5.1f}%  {amount * unit_per_request / requests:6.2f} ms/request  {part}")


# ------------------------------------------------------------- the loop


async def serve_s1(args: argparse.Namespace, body: Callable[[Callable[[], Awaitable[float]]], Awaitable[None]]) -> None:
    """Start the app on the bench database and hand ``body`` a function sending one S1."""
    import httpx

    from bench.unenforced_app import create_unenforced_app
    from server.app import create_app

    options = Options(database=args.database, work_dir=args.work_dir.resolve())
    urls = database_urls(options)
    subjects = await scenarios.prepare_subjects(urls.owner)
    settings = dataclasses.replace(
        Settings.from_env(),
        env="development",
        jwt_secret=secrets.token_urlsafe(32),
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

            await body(once)


async def measured_loop(args: argparse.Namespace) -> None:
    """Warm up, then time ``--requests`` requests: wall per request and CPU of this process."""

    async def body(once: Callable[[], Awaitable[float]]) -> None:
        for _ in range(args.warmup):
            await once()
        wall: list[float] = []
        cpu_started = time.process_time()
        for _ in range(args.requests):
            wall.append(await once())
        cpu = (time.process_time() - cpu_started) / args.requests
        build = "unenforced build" if args.unenforced else "production app (enforced, audited)"
        print(f"S1 in-process, {build}: {args.requests} requests, one at a time")
        print(
            f"  p50 {statistics.median(wall) * 1000:.1f} ms, min {min(wall) * 1000:.1f} ms wall; "
            f"{cpu * 1000:.1f} ms CPU of this process per request (app, test client, asyncpg's side)",
            flush=True,
        )

    await serve_s1(args, body)


# --------------------------------------------------------------- py-spy


def collapsed_parts(lines: Iterable[str]) -> tuple[dict[str, float], Counter[str], int]:
    """Parts and leaf functions from py-spy's raw (collapsed) stacks, setup left out."""
    parts: dict[str, float] = defaultdict(float)
    leaves: Counter[str] = Counter()
    kept = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if any(frame.startswith(SETUP_FRAMES) for frame in frames):
            continue
        count = int(count_text)
        kept += count
        part = "other"
        for frame in reversed(frames):
            function, _, where = frame.partition(" (")
            found = part_of(function, where.rsplit(":", 1)[0])
            if found:
                part = found
                break
        parts[part] += count
        leaves[frames[-1]] += count
    return dict(parts), leaves, kept


def with_py_spy(args: argparse.Namespace) -> int:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy (or use --profiler pyinstrument)")
    with tempfile.TemporaryDirectory(prefix="pledgeql-pyspy-") as folder:
        raw = Path(folder) / "s1.txt"
        child = [sys.executable, str(Path(__file__).resolve()), "--loop", *args.child_args]
        command = [py_spy, "record", "--format", "raw", "--full-filenames", "--idle", "--rate", str(args.rate)]
        done = subprocess.run([*command, "-o", str(raw), "--", *child], capture_output=True, text=True, check=False)
        print(done.stdout.strip())
        if done.returncode != 0 or not raw.exists():
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        parts, leaves, kept = collapsed_parts(raw.read_text().splitlines())
    print(f"\npy-spy: {kept} samples at {args.rate} per second while serving (setup left out)")
    print_parts(parts, args.requests + args.warmup, 1000 / args.rate)
    print("\nHottest functions (innermost frame):")
    for frame, count in leaves.most_common(args.top):
        print(f"  {count / max(kept, 1) * 100:5.1f}%  {frame.replace(str(ROOT) + '/', '')}")
    return 0


# ---------------------------------------------------------- pyinstrument


def _tree_parts(root: Any) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)

    def walk(frame: Any, current: str) -> None:
        here = part_of(getattr(frame, "function", ""), getattr(frame, "file_path", None) or "") or current
        totals[here] += max(0.0, frame.time - sum(child.time for child in frame.children))
        for child in frame.children:
            walk(child, here)

    walk(root, "other")
    return dict(totals)


async def with_pyinstrument(args: argparse.Namespace) -> int:
    from pyinstrument import Profiler

    await measured_loop(args)
    profiler = Profiler(interval=0.001, async_mode="disabled")

    async def body(once: Callable[[], Awaitable[float]]) -> None:
        for _ in range(args.warmup):
            await once()
        profiler.start()
        for _ in range(args.requests):
            await once()
        profiler.stop()

    await serve_s1(args, body)
    session = profiler.last_session
    root = session.root_frame() if session is not None else None
    if root is None:
        return 1
    print("\npyinstrument (its per-call hook weighs most on call-heavy code):")
    print_parts({k: v * 1000 for k, v in _tree_parts(root).items()}, args.requests, 1.0)
    print()
    print(profiler.output_text(unicode=False, color=False, show_all=False)[: args.text_chars])
    if args.html:
        args.html.write_text(profiler.output_html())
        print(f"HTML profile: {args.html}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/profile_s1.py", description="Profile S1 in-process.")
    parser.add_argument("--profiler", choices=("py-spy", "pyinstrument"), default="py-spy")
    parser.add_argument("--database", default="pledgeql_bench")
    parser.add_argument("--work-dir", type=Path, default=BENCH / ".work")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--unenforced", action="store_true", help="profile the build without checks and audit")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25, help="hottest functions to print")
    parser.add_argument("--html", type=Path, default=None, help="pyinstrument's HTML report")
    parser.add_argument("--text-chars", type=int, default=12_000)
    parser.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)  # the py-spy child
    args = parser.parse_args(argv)
    args.child_args = [
        "--database",
        args.database,
        "--work-dir",
        str(args.work_dir),
        "--requests",
        str(args.requests),
        "--warmup",
        str(args.warmup),
        *(["--unenforced"] if args.unenforced else []),
    ]
    if args.loop:
        asyncio.run(measured_loop(args))
        return 0
    if args.profiler == "py-spy":
        return with_py_spy(args)
    return asyncio.run(with_pyinstrument(args))


if __name__ == "__main__":
    sys.exit(main())
