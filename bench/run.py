"""The benchmark: one command, a fresh database, pledgeql against PostGraphile and the limit.

    .venv/bin/python bench/run.py [--students 68000] [--duration 10] [--warmup 3]
                                  [--concurrency 16] [--workers 1,N] [--quick] [--reuse]

1. builds a fresh database: an embedded PostgreSQL under ``bench/.work/``
   (or the server of ``PLEDGEQL_DATABASE_URL``), database ``pledgeql_bench``
   dropped and created, migrated, seeded with ``server.commands.seed.seed_demo``
   (30 responses per student) and analysed;
2. picks the scenarios' users and subjects (bench/scenarios.py);
3. serves pledgeql with uvicorn (``server.asgi:app``) in its own process, one
   worker and then one per core, each worker on a socket of its own
   (server/workers.py, as ``pledgeql serve``), and drives S1-S5 from a separate
   load-generator process (wrk when installed, else bench/loadgen.py): a
   warm-up, then a counted run at fixed concurrency;
4. side by side, on the same database: pledgeql built without permission
   checks and audit writes (bench/unenforced_app.py), PostGraphile 4
   (bench/postgraphile/, skipped when node or the package is absent) and the
   physical limit (bench/limit.py), each with the S1 query;
5. the corpus scenario (``--scenarios CORPUS``, bench/corpus.py): every query
   of ``../shared/operations`` at one worker, between two compiled baselines
   measured at the start and at the end, each operation's speed against
   them, PostGraphile equivalents of three teacher screens, and issue 13's
   done-when rows;
6. prints the table and the ratios and writes them to ``bench/RESULTS.md``.

Each server runs alone: nothing else is served while one is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import corpus, limit, scenarios  # noqa: E402
from bench.loadgen import Call, LoadResult, LoadSpec, run_load, wrk_available  # noqa: E402
from server.auth import mint_token  # noqa: E402
from server.db import (  # noqa: E402
    APP_ROLE,
    DatabaseUrls,
    _replace_database,
    _replace_user,
    asyncpg_dsn,
    connect,
    start_embedded,
)
from server.settings import Settings  # noqa: E402
from server.workers import READY  # noqa: E402

BENCH = ROOT / "bench"
POSTGRAPHILE_DIR = BENCH / "postgraphile"
DEFAULT_STUDENTS = 68_000  # 34,000 a district: a district report reads 1,020,000 responses
MARK = "pledgeql bench: {students} students, migrations {migrations}"

PLEDGEQL = "pledgeql"
UNENFORCED = "pledgeql unenforced"
POSTGRAPHILE = "PostGraphile 4"
BASELINE = "pledgeql baseline"  # another commit of pledgeql (--baseline), on the same database
LIMIT = "limit (asyncpg+orjson)"
SYSTEMS = ("pledgeql", "unenforced", "limit", "postgraphile")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ options


@dataclass(frozen=True)
class Options:
    students: int = DEFAULT_STUDENTS
    duration: float = 10.0
    warmup: float = 3.0
    concurrency: int = 16
    workers: tuple[int, ...] = (1, os.cpu_count() or 1)
    quick: bool = False
    reuse: bool = False
    engine: str = "wrk"
    postgraphile: bool = True
    database: str = "pledgeql_bench"
    work_dir: Path = BENCH / ".work"
    out: Path = BENCH / "RESULTS.md"
    latency_runs: bool = True
    scenarios: tuple[str, ...] = ("S1", "S2", "S3", "S4", "S5", "CORPUS")
    systems: tuple[str, ...] = SYSTEMS
    limit_calls: int = 200
    rounds: int = 3
    baseline: str | None = None
    operations: tuple[str, ...] = ()


def parse_options(argv: list[str] | None) -> Options:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--students", type=int, default=None, help=f"seeded students (default {DEFAULT_STUDENTS})")
    parser.add_argument("--duration", type=float, default=None, help="seconds of each counted run (default 10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up before each (default 3)")
    parser.add_argument("--concurrency", type=int, default=None, help="open connections of the load (default 16)")
    parser.add_argument("--workers", default=None, help=f"comma-separated worker counts (default 1,{cores})")
    parser.add_argument("--quick", action="store_true", help="tiny settings: 240 students, 1 s runs, one worker")
    parser.add_argument("--reuse", action="store_true", help="keep the bench database when it has the same seed")
    parser.add_argument("--engine", choices=("wrk", "asyncio"), default=None, help="load generator (default wrk)")
    parser.add_argument("--no-postgraphile", action="store_true", help="skip PostGraphile")
    parser.add_argument(
        "--scenarios", default="S1,S2,S3,S4,S5,CORPUS", help="pledgeql's scenarios to run (default all)"
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"systems to run (default {','.join(SYSTEMS)})")
    parser.add_argument("--no-latency", action="store_true", help="skip the concurrency-1 latency runs")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds of the S1 comparison (3)")
    parser.add_argument(
        "--database", default=None, help="database name, dropped and created (pledgeql_bench; --quick: _quick)"
    )
    parser.add_argument("--work-dir", type=Path, default=BENCH / ".work", help="embedded server, logs (git-ignored)")
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md", help="where the table is written")
    parser.add_argument(
        "--baseline",
        default=None,
        help="also serve this commit (a git revision with the same migrations) and compare S1, S2 and the corpus",
    )
    parser.add_argument("--operations", default="", help="the corpus's shared queries to run, by name (default all)")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    if args.workers:
        try:
            workers = tuple(int(w) for w in args.workers.split(",") if w.strip())
        except ValueError:
            parser.error("--workers takes comma-separated integers, e.g. 1,2")
        if not workers or min(workers) < 1:
            parser.error("--workers takes counts of 1 or more")
    else:
        workers = (1,) if quick else tuple(sorted({1, cores}))
    engine = args.engine or ("wrk" if wrk_available() else "asyncio")
    if engine == "wrk" and not wrk_available():
        parser.error("wrk is not installed (apt-get install -y wrk); or use --engine asyncio")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be 1 or more")
    chosen = tuple(x.strip().upper() for x in args.scenarios.split(",") if x.strip())
    if not chosen or set(chosen) - {"S1", "S2", "S3", "S4", "S5", "CORPUS"}:
        parser.error("--scenarios takes a comma-separated subset of S1,S2,S3,S4,S5,CORPUS")
    systems = tuple(x.strip().lower() for x in args.systems.split(",") if x.strip())
    if not systems or set(systems) - set(SYSTEMS):
        parser.error(f"--systems takes a comma-separated subset of {','.join(SYSTEMS)}")
    if args.no_postgraphile:
        systems = tuple(x for x in systems if x != "postgraphile")
    return Options(
        students=args.students or (240 if quick else DEFAULT_STUDENTS),
        duration=args.duration if args.duration is not None else (2.0 if quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if quick else 3.0),
        concurrency=args.concurrency if args.concurrency is not None else (4 if quick else 16),
        workers=workers,
        quick=quick,
        reuse=bool(args.reuse),
        engine=engine,
        postgraphile="postgraphile" in systems,
        database=args.database or ("pledgeql_bench_quick" if quick else "pledgeql_bench"),
        work_dir=args.work_dir.resolve(),
        out=args.out.resolve(),
        latency_runs=not quick and not args.no_latency,
        scenarios=chosen,
        systems=systems,
        limit_calls=20 if quick else 200,
        rounds=args.rounds if args.rounds is not None else (1 if quick else 3),
        baseline=args.baseline,
        operations=tuple(x.strip() for x in args.operations.split(",") if x.strip()),
    )


# ----------------------------------------------------------------- database


def database_urls(options: Options) -> DatabaseUrls:
    configured = os.environ.get("PLEDGEQL_DATABASE_URL")
    if configured:
        owner = _replace_database(asyncpg_dsn(configured.replace("+asyncpg", "")), options.database)
    else:
        owner = _replace_database(start_embedded(options.work_dir), options.database)
    app_configured = os.environ.get("PLEDGEQL_APP_DATABASE_URL")
    app = (
        _replace_database(asyncpg_dsn(app_configured.replace("+asyncpg", "")), options.database)
        if app_configured
        else _replace_user(owner, APP_ROLE)
    )
    return DatabaseUrls(owner=owner, app=app)


def migrations_digest(root: Path = ROOT) -> str:
    """A digest of the migration files: a reused database must have been built by
    the same migrations (a reserved migration may change in place while an area is built)."""
    digest = hashlib.sha256()
    for path in sorted((root / "migrations" / "versions").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


async def _database_mark(urls: DatabaseUrls) -> str | None:
    admin = await connect(_replace_database(urls.owner, "postgres"))
    try:
        mark: str | None = await admin.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", urls.database
        )
        return mark
    finally:
        await admin.close()


async def build_database(urls: DatabaseUrls, options: Options) -> dict[str, Any]:
    from server.commands.migrate import migrate
    from server.commands.seed import seed_demo

    mark = MARK.format(students=options.students, migrations=migrations_digest())
    if options.reuse and await _database_mark(urls) == mark:
        log(f"reusing database {urls.database} ({mark})")
        await migrate(urls)
        return {"reused": True, "seconds": 0.0}
    admin = await connect(_replace_database(urls.owner, "postgres"))
    try:
        quoted = '"' + urls.database.replace('"', '""') + '"'
        await admin.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await admin.close()
    started = time.perf_counter()
    log(f"migrating a fresh database {urls.database}")
    await migrate(urls)
    log(f"seeding {options.students} students (30 responses each)")
    summary = await seed_demo(urls.owner, options.students)
    conn = await connect(urls.owner)
    try:
        await conn.execute("ANALYZE")
        quoted = '"' + urls.database.replace('"', '""') + '"'
        await conn.execute(f"COMMENT ON DATABASE {quoted} IS '{mark}'")
    finally:
        await conn.close()
    seconds = time.perf_counter() - started
    log(f"seeded {summary.students} students, {summary.responses} responses in {seconds:.0f} s")
    return {"reused": False, "seconds": seconds}


def embedded_postmaster(options: Options) -> int | None:
    """The embedded server's postmaster, whose backends' CPU the rows report; None for a configured server."""
    if os.environ.get("PLEDGEQL_DATABASE_URL"):
        return None
    try:
        return int((options.work_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    stacks: frozenset[tuple[str, str]] = frozenset()  # (loop, http) as its workers logged them


def _http(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


@contextlib.contextmanager
def serve(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    ready: Callable[[str], bool],
    options: Options,
    started: tuple[str, int] | None = None,
    cwd: Path = ROOT,
) -> Iterator[Server]:
    """Start ``command`` in a session of its own; yield once ``ready(base_url)`` and,
    with ``started=(line, n)``, once its log shows ``line`` n times (every worker
    up, not just the first); then stop it and its workers."""
    logs = options.work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / (name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "_") + ".log")
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(name, process, f"http://127.0.0.1:{port}", log_path)
    began = time.monotonic()
    try:
        deadline = began + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log_path}:\n{_tail(log_path)}")
            try:
                if ready(server.base_url) and (
                    started is None or log_path.read_text(errors="replace").count(started[0]) >= started[1]
                ):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready within 120 s; see {log_path}")
            time.sleep(0.1)
        log(f"{name} ready in {time.monotonic() - began:.1f} s")
        server.stacks = served_with(log_path)
        yield server
    finally:
        stopping = time.monotonic()
        _stop(process)
        log(f"{name} stopped in {time.monotonic() - stopping:.1f} s")


def answers(path: str) -> Callable[[str], bool]:
    """Ready when GET ``path`` is 200."""
    return lambda base: _http(base + path)[0] == 200


def answers_graphql(base: str) -> bool:
    return _http(base + "/graphql", b'{"query": "{ __typename }"}', {"Content-Type": "application/json"})[0] == 200


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # The server runs in a session of its own: its group is it and its workers.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def server_env(urls: DatabaseUrls, options: Options, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEQL_")}
    env.update(
        {
            "PLEDGEQL_DATABASE_URL": urls.owner,
            "PLEDGEQL_APP_DATABASE_URL": urls.app,
            "PLEDGEQL_DATA_DIR": str(options.work_dir / "server"),
            "PLEDGEQL_ENV": "development",
            "PLEDGEQL_JWT_SECRET": secret,
            # The load comes from one address and a few users: no request budget applies.
            "PLEDGEQL_RATE_LIMIT_PER_MINUTE": "1000000000",
            "PLEDGEQL_RATE_LIMIT_BURST": "1000000000",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def uvicorn_command(app: str, port: int, workers: int) -> list[str]:
    """``app`` under uvicorn the way ``pledgeql serve`` runs it (server/workers.py):
    more than one worker, each with a socket of its own, so that the kernel
    spreads the load's connections over them."""
    return [
        sys.executable,
        "-m",
        "server.workers",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "info",
    ]


# server.workers.READY as a pattern: each worker's line once it listens.
_READY = re.compile(re.escape(READY).replace("%d", r"\d+").replace("%s", r"([\w.-]+)"))


def uvicorn_started(workers: int) -> tuple[str, int]:
    """Every worker listening, not just started."""
    return (READY.split("%s")[0].split("] ", 1)[1], workers)


def served_with(log_path: Path) -> frozenset[tuple[str, str]]:
    """The (event loop, HTTP parser) pairs a server's workers said they run."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return frozenset()
    return frozenset((m.group(1), m.group(2)) for m in _READY.finditer(text))


def uvicorn_stack(stacks: set[tuple[str, str]]) -> str:
    if not stacks:
        return "uvicorn (its workers did not say which loop and HTTP parser they ran)"
    return " / ".join(f"uvicorn (loop {loop}, http {http})" for loop, http in sorted(stacks))


# ---------------------------------------------------------------- the runs


@dataclass
class Row:
    system: str
    scenario: str
    workers: int
    concurrency: int
    status: str = "ok"
    result: LoadResult | None = None
    app_cpu_ms: float | None = None  # the server's processes' CPU time per counted request
    db_cpu_ms: float | None = None  # PostgreSQL's, when the bench started it
    round: int = 1
    connections: str = ""  # how the load's connections were spread over the workers, mid-run
    audit_bytes: float | None = None  # audit storage grown per counted request (pledgeql's S1), indexes included

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.result is not None


@dataclass
class CorpusRow:
    """One measured operation of the corpus scenario, with its response as probed before the load."""

    operation: corpus.Operation
    row: Row
    size: int  # response bytes
    served: str | None  # the Server-Timing plan: "compiled" or "resolvers" (pledgeql only)
    problem: str | None
    phase: str = ""  # "start" / "end" for the baselines
    answered: bool = False  # the response had data (field-level FORBIDDEN errors beside it or not)


@dataclass
class Report:
    options: Options
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    limit_call: limit.CallLatency | None = None
    notes: list[str] = field(default_factory=list)
    postmaster_pid: int | None = None
    owner_url: str = ""
    stacks: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # per system, as measured
    corpus: list[CorpusRow] = field(default_factory=list)

    def summary(self) -> list[tuple[Row, str]]:
        """One row per (system, scenario, workers, concurrency): of several rounds, the
        round with the median throughput, and a note of the spread."""
        groups: dict[tuple[str, str, int, int], list[Row]] = {}
        for row in self.rows:
            groups.setdefault((row.system, row.scenario, row.workers, row.concurrency), []).append(row)
        out: list[tuple[Row, str]] = []
        for rows in groups.values():
            measured = sorted((r for r in rows if r.ok and r.result), key=lambda r: r.result.rps if r.result else 0)
            if not measured:
                out.append((rows[0], ""))
                continue
            median = measured[(len(measured) - 1) // 2]
            spread = ""
            if len(rows) > 1:
                low, high = measured[0].result, measured[-1].result
                spread = f"median of {len(rows)} rounds"
                if low and high:
                    spread += f" ({low.rps:.1f}-{high.rps:.1f} req/s)"
                if len(measured) < len(rows):
                    spread += f"; {len(rows) - len(measured)} round(s) without a result"
            out.append((median, spread))
        order = {name: i for i, name in enumerate((PLEDGEQL, BASELINE, UNENFORCED, POSTGRAPHILE, LIMIT))}
        out.sort(key=lambda rs: (order.get(rs[0].system, 9), rs[0].workers, -rs[0].concurrency, rs[0].scenario))
        return out

    def find(self, system: str, scenario: str, workers: int, concurrency: int) -> Row | None:
        for row, _ in self.summary():
            if (row.system, row.scenario, row.workers, row.concurrency) == (system, scenario, workers, concurrency):
                return row
        return None


def graphql_call(label: str, request: scenarios.Request, token: str) -> Call:
    return Call(
        label=label,
        method="POST",
        path="/graphql",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "X-Purpose": request.purpose,
        },
        body=request.body.decode(),
    )


Checker = Callable[[dict[str, Any]], "str | None"]


def check_calls(server: Server, scenario: str, calls: list[Call], checker: Checker | None = None) -> str:
    """ "ok", "not available" (NOT_IMPLEMENTED) or what is wrong, from a few of the calls."""
    for call in calls[:3]:
        status, raw = _http(server.base_url + call.path, call.body.encode() or None, call.headers)
        try:
            body = json.loads(raw)
        except ValueError:
            return f"failed: HTTP {status}, not JSON"
        if scenarios.is_not_implemented(body):
            return "not available"
        problem = checker(body) if checker else scenarios.check_body(scenario, body)
        if status != 200 or problem:
            return f"failed: HTTP {status}" + (f", {problem}" if problem else "")
    return "ok"


def measure(
    report: Report, server: Server, system: str, scenario: str, calls: list[Call], workers: int, concurrency: int
) -> Row:
    options = report.options
    row = Row(system, scenario, workers, concurrency)
    report.stacks.setdefault(system, set()).update(server.stacks)
    spec = LoadSpec(
        base_url=server.base_url,
        calls=calls,
        concurrency=concurrency,
        duration=options.duration,
        warmup=options.warmup,
        threads=min(2, concurrency),
    )
    log(f"{system} {scenario} workers={workers} c={concurrency}: {options.warmup:g} s warm-up, {options.duration:g} s")
    postmaster = report.postmaster_pid
    try:
        if spec.warmup > 0:
            run_load(dataclasses.replace(spec, duration=spec.warmup, warmup=0), options.engine)
        weigh = system == PLEDGEQL and scenario == "S1" and bool(report.owner_url)
        audit_before = audit_bytes(report.owner_url) if weigh else 0
        app_before, db_before = session_cpu(server.process.pid), children_cpu(postmaster)
        spread = ConnectionSpread(server, options.duration / 2) if workers > 1 else None
        result = run_load(dataclasses.replace(spec, warmup=0), options.engine)
        if spread is not None:
            row.connections = spread.result()
        app_after, db_after = session_cpu(server.process.pid), children_cpu(postmaster)
        if weigh and result.requests:
            row.audit_bytes = (audit_bytes(report.owner_url) - audit_before) / result.requests
        if result.requests == 0:
            row.status = "no request completed within the run"
        else:
            row.result = result
            row.app_cpu_ms = (app_after - app_before) * 1000 / result.requests
            if postmaster is not None:
                row.db_cpu_ms = (db_after - db_before) * 1000 / result.requests
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        row.status = f"failed: {error}"[:200]
    report.rows.append(row)
    drain(report)
    if row.result is not None:
        r = row.result
        log(
            f"  {r.rps:.1f} req/s, p50 {r.p50_ms:.1f} ms, p95 {r.p95_ms:.1f} ms, {r.failures} failed; "
            f"CPU/request: server {_ms(row.app_cpu_ms)} ms, PostgreSQL {_ms(row.db_cpu_ms)} ms"
        )
    return row


class ConnectionSpread:
    """The load's established connections per server process, sampled once mid-run
    (``ss``): workers sharing one listening socket do not always share the load."""

    def __init__(self, server: Server, after: float) -> None:
        self.port = int(server.base_url.rsplit(":", 1)[1])
        self.counts: dict[str, int] = {}
        self.timer = threading.Timer(after, self._sample)
        self.timer.daemon = True
        if shutil.which("ss"):
            self.timer.start()

    def _sample(self) -> None:
        try:
            done = subprocess.run(
                ["ss", "-tnpH", "state", "established", f"( sport = :{self.port} )"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return
        for pid in re.findall(r"pid=(\d+)", done.stdout):
            self.counts[pid] = self.counts.get(pid, 0) + 1

    def result(self) -> str:
        self.timer.cancel()
        return "+".join(str(n) for n in sorted(self.counts.values(), reverse=True))


# CPU time, which other processes on a shared machine do not inflate the way
# they inflate wall time: read from /proc (Linux); 0 elsewhere.
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # After the command name in parentheses: state ppid pgrp session ... utime(14) stime(15).
    return raw[raw.rfind(")") + 2 :].split()


def _cpu_where(match: Callable[[list[str]], bool], reaped: bool = False) -> float:
    """CPU seconds of the live processes ``match`` selects; with ``reaped``, also
    of the children they have waited for (so that exited children still count)."""
    total = 0
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        fields = _stat(entry.name)
        if fields is not None and match(fields):
            total += int(fields[11]) + int(fields[12])
            if reaped:
                total += int(fields[13]) + int(fields[14])
    return total / _TICK


def session_cpu(session: int) -> float:
    """CPU seconds of a server and its workers (every process in its session)."""
    return _cpu_where(lambda f: f[3] == str(session), reaped=True)


def children_cpu(parent: int | None) -> float:
    """CPU seconds of PostgreSQL: the postmaster with the children it reaped
    (backends that closed, parallel workers) and its live children."""
    if parent is None:
        return 0.0
    own = 0.0
    fields = _stat(str(parent))
    if fields is not None:
        own = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / _TICK
    return own + _cpu_where(lambda f: f[1] == str(parent))


DRAIN = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active' AND backend_type = 'client backend'
"""


# The audit's storage on disk, indexes included: every partition of the records
# (the heads and the names dictionary do not grow with requests).
AUDIT_BYTES = """
SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i
WHERE i.inhparent = 'audit_records'::regclass
"""


def audit_bytes(owner_url: str) -> int:
    async def size() -> int:
        conn = await connect(owner_url)
        try:
            return int(await conn.fetchval(AUDIT_BYTES))
        finally:
            await conn.close()

    return asyncio.run(size())


def drain(report: Report, limit_seconds: float = 180.0) -> None:
    """Wait until the database runs none of the last load's statements: a server
    keeps executing what was in flight when the load generator stopped (16 district
    reports, say), which would otherwise weigh on the next measurement."""

    async def wait() -> float:
        started = time.monotonic()
        conn = await connect(report.owner_url)
        try:
            while await conn.fetchval(DRAIN) and time.monotonic() - started < limit_seconds:
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
        return time.monotonic() - started

    if report.owner_url:
        waited = asyncio.run(wait())
        if waited > 1:
            log(f"  waited {waited:.0f} s for the database to finish the statements still running")


def pledgeql_server(env: dict[str, str], options: Options) -> Callable[[int], Any]:
    def start(workers: int) -> Any:
        port = free_port()
        command = uvicorn_command("server.asgi:app", port, workers)
        return serve(f"pledgeql-{workers}w", command, env, port, answers("/readyz"), options, uvicorn_started(workers))

    return start


def baseline_tree(options: Options, revision: str) -> tuple[str, Path]:
    """The short commit of ``revision`` and its files, checked out in a worktree of their own
    under the work dir; refused if its migrations differ from this checkout's (same database)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", f"{revision}^{{commit}}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = options.work_dir / f"baseline-{commit}"
    if not (tree / "server").is_dir():
        subprocess.run(["git", "worktree", "add", "--force", "--detach", str(tree), commit], cwd=ROOT, check=True)
    ours, theirs = migrations_digest(), migrations_digest(tree)
    if ours != theirs:
        raise SystemExit(
            f"--baseline {revision}: its migrations differ from this checkout's; it needs a database of its own"
        )
    return commit, tree


def baseline_server(env: dict[str, str], options: Options, revision: str) -> Callable[[int], Any]:
    """pledgeql as it was at ``revision`` (``baseline_tree``), served by this environment's
    Python against the same database."""
    commit, tree = baseline_tree(options, revision)
    baseline_env = dict(env, PYTHONPATH=str(tree))

    def start(workers: int) -> Any:
        port = free_port()
        command = uvicorn_command("server.asgi:app", port, workers)
        name = f"baseline-{commit}-{workers}w"
        return serve(name, command, baseline_env, port, answers("/readyz"), options, uvicorn_started(workers), tree)

    return start


def run_pledgeql(
    report: Report,
    calls: dict[str, list[Call]],
    start: Callable[[int], Any],
    system: str = PLEDGEQL,
    only: tuple[str, ...] = ("S2", "S3", "S4", "S5"),
) -> None:
    """S2-S5 (or ``only`` these) on pledgeql at each worker count (S1 runs side by side with the other systems)."""
    options = report.options
    wanted = [s for s in only if s in options.scenarios]
    if not wanted:
        return
    for workers in options.workers:
        with start(workers) as server:
            available: dict[str, list[Call]] = {}
            for scenario in ("S1", "S2", "S3", "S4"):
                status = check_calls(server, scenario, calls[scenario])
                if status == "ok":
                    available[scenario] = calls[scenario]
                    if scenario in wanted:
                        measure(report, server, system, scenario, calls[scenario], workers, options.concurrency)
                elif scenario in wanted:
                    log(f"{system} {scenario}: {status}")
                    report.rows.append(Row(system, scenario, workers, options.concurrency, status=status))
            mixed = [
                dataclasses.replace(c, weight=scenarios.MIX[s])
                for s in scenarios.MIX
                if s in available
                for c in available[s]
            ]
            if "S5" not in wanted:
                pass
            elif mixed:
                measure(report, server, system, "S5", mixed, workers, options.concurrency)
                missing = [s for s in scenarios.MIX if s not in available]
                if missing and workers == options.workers[0]:
                    report.notes.append(f"S5 ran without {', '.join(missing)} (not available), reweighted")
            else:
                report.rows.append(Row(system, "S5", workers, options.concurrency, status="not available"))
            if options.latency_runs and workers == 1 and "S3" in available and "S3" in wanted:
                measure(report, server, system, "S3", available["S3"], workers, 1)


@dataclass(frozen=True)
class System:
    name: str
    start: Callable[[int], Any]
    calls: list[Call]
    checker: Checker | None = None


def run_side_by_side(report: Report, systems: list[System]) -> None:
    """S1 on every system, at each worker count: all of them started at once (an
    idle server costs nothing), then measured one at a time in interleaved rounds,
    so that whatever else runs on the machine weighs on each system alike."""
    options = report.options
    for workers in options.workers:
        with contextlib.ExitStack() as stack:
            ready: list[tuple[System, Server]] = []
            for system in systems:
                try:
                    server = stack.enter_context(system.start(workers))
                except RuntimeError as error:
                    log(f"{system.name}: {error}")
                    report.rows.append(Row(system.name, "S1", workers, options.concurrency, status=f"failed: {error}"))
                    continue
                status = check_calls(server, "S1", system.calls, system.checker)
                if status == "ok":
                    ready.append((system, server))
                else:
                    log(f"{system.name} S1: {status}")
                    report.rows.append(Row(system.name, "S1", workers, options.concurrency, status=status))
            concurrencies = [options.concurrency]
            if options.latency_runs and workers == 1 and options.concurrency != 1:
                concurrencies.append(1)
            for concurrency in concurrencies:
                for round_number in range(1, options.rounds + 1):
                    for system, server in ready:
                        row = measure(report, server, system.name, "S1", system.calls, workers, concurrency)
                        row.round = round_number


# ------------------------------------------------------------- PostGraphile


def postgraphile_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (POSTGRAPHILE_DIR / "node_modules" / "postgraphile" / "cli.js").exists():
        return "the package is not installed (cd bench/postgraphile && npm install)"
    return None


POSTGRAPHILE_S1 = """query ClassView($districtId: UUID!, $id: UUID!) {
  classByDistrictIdAndId(districtId: $districtId, id: $id) {
    id
    name
    enrollmentsByDistrictIdAndClassIdList(orderBy: STUDENT_ID_ASC) {
      userByDistrictIdAndStudentId {
        id
        firstName
        lastName
        responsesByDistrictIdAndStudentIdList(orderBy: [SUBMITTED_AT_DESC, ID_DESC], first: 20) {
          answer
          correct
          score
        }
      }
    }
  }
}"""


def check_postgraphile_s1(body: dict[str, Any]) -> str | None:
    if body.get("errors"):
        return "errors " + "; ".join(str(e.get("message"))[:120] for e in body["errors"])
    enrollments = ((body.get("data") or {}).get("classByDistrictIdAndId") or {}).get(
        "enrollmentsByDistrictIdAndClassIdList"
    ) or []
    if len(enrollments) != scenarios.CLASS_SIZE:
        return f"{len(enrollments)} students instead of {scenarios.CLASS_SIZE}"
    for e in enrollments:
        if len(e["userByDistrictIdAndStudentId"]["responsesByDistrictIdAndStudentIdList"]) != 20:
            return "a student with fewer than 20 responses"
    return None


def postgraphile_server(urls: DatabaseUrls, env: dict[str, str], options: Options) -> Callable[[int], Any]:
    def start(workers: int) -> Any:
        port = free_port()
        command = [
            "node",
            str(POSTGRAPHILE_DIR / "node_modules" / "postgraphile" / "cli.js"),
            "--connection",
            urls.owner,
            "--schema",
            "public",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--simple-collections",
            "only",
            "--disable-default-mutations",
            "--disable-graphiql",
            "--disable-query-log",
        ]
        if workers > 1:
            command += ["--cluster-workers", str(workers)]
        return serve(
            f"postgraphile-{workers}w", command, env, port, answers_graphql, options, ("listening on port", workers)
        )

    return start


# ------------------------------------------------------------------ corpus


def probe(server: Server, call: Call, checker: Checker | None = None) -> tuple[int, str | None, str | None, bool]:
    """One request before the load: its response's bytes, the plan that served it (Server-Timing),
    what is wrong with it, if anything, and whether it answered data (a screen whose fields the
    policy denies answers the rest, with their FORBIDDEN errors; a refused request answers none)."""
    request = urllib.request.Request(
        server.base_url + call.path, data=call.body.encode(), headers=call.headers, method=call.method
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, raw, timing = int(response.status), response.read(), response.headers.get("server-timing", "")
    except urllib.error.HTTPError as error:
        status, raw, timing = int(error.code), error.read(), error.headers.get("server-timing", "")
    plan = re.search(r'plan;desc="(\w+)"', timing or "")
    try:
        body = json.loads(raw)
    except ValueError:
        return len(raw), None, f"HTTP {status}, not JSON", False
    problem = checker(body) if checker else None
    if problem is None and body.get("errors"):
        problem = "errors " + ",".join(sorted({str(e.get("extensions", {}).get("code")) for e in body["errors"]}))
    if problem is None and status != 200:
        problem = f"HTTP {status}"
    answered = status == 200 and isinstance(body, dict) and body.get("data") is not None
    return len(raw), plan.group(1) if plan else None, problem, answered


def run_corpus(
    report: Report,
    start: Callable[[int], Any],
    start_postgraphile: Callable[[int], Any] | None,
    subjects: scenarios.Subjects,
    ids: corpus.Ids,
    token: Callable[[Any, str], str],
    start_baseline: Callable[[int], Any] | None = None,
) -> None:
    """Every shared query at one worker, between the two compiled baselines at the start and the end
    (and each, with ``start_baseline``, on the baseline commit right after)."""
    options = report.options

    def pledgeql_call(op: corpus.Operation) -> Call:
        request = scenarios.Request(op.name, op.user_id, op.purpose, scenarios.body_of(op.query, op.variables))
        return graphql_call(op.name, request, token(op.user_id, op.purpose))

    with contextlib.ExitStack() as stack:
        server = stack.enter_context(start(1))
        graphile = None
        if start_postgraphile is not None:
            try:
                graphile = stack.enter_context(start_postgraphile(1))
            except RuntimeError as error:
                report.notes.append(f"Corpus: PostGraphile did not start: {error}")
        before = stack.enter_context(start_baseline(1)) if start_baseline is not None else None
        targets = {PLEDGEQL: server, POSTGRAPHILE: graphile, BASELINE: before}

        def one(op: corpus.Operation, phase: str = "", system: str = PLEDGEQL, call: Call | None = None) -> None:
            target = targets[system]
            if target is None:
                return
            call = call or pledgeql_call(op)
            checker = corpus.check_postgraphile if system == POSTGRAPHILE else None
            size, served, problem, answered = probe(target, call, checker)
            row = measure(report, target, system, f"corpus {op.name}", [call], 1, options.concurrency)
            report.rows.remove(row)  # the corpus has a table of its own
            report.corpus.append(
                CorpusRow(op, row, size, served if system == PLEDGEQL else None, problem, phase, answered)
            )

        def postgraphile_call(name: str, query: str, variables: dict[str, str]) -> Call:
            body = json.dumps({"query": query, "variables": variables})
            return Call(name, "POST", "/graphql", {"Content-Type": "application/json"}, body)

        first = corpus.baselines(subjects)
        for op in first:
            one(op, "start")
        one(corpus.denied(subjects))
        s1_variables = {"districtId": str(subjects.district_id), "id": str(subjects.class_id)}
        one(first[0], system=POSTGRAPHILE, call=postgraphile_call("S1", POSTGRAPHILE_S1, s1_variables))
        for op in corpus.operations(subjects, ids):
            if options.operations and op.name not in options.operations:
                continue
            graphile_call = None
            if op.name in corpus.POSTGRAPHILE and graphile is not None:
                variables = corpus.postgraphile_variables(op.name, subjects, ids)
                graphile_call = postgraphile_call(op.name, corpus.POSTGRAPHILE[op.name], variables)
            # Against PostGraphile or a baseline, in interleaved rounds as S1's: one run of each is
            # not steady enough (done_when and baseline_section take each system's median round).
            compared = before is not None or graphile_call is not None
            for _ in range(options.rounds if compared else 1):
                one(op)
                one(op, system=BASELINE)
                if graphile_call is not None:
                    one(op, system=POSTGRAPHILE, call=graphile_call)
        for op in first:
            one(op, "end")


def corpus_line(report: Report) -> tuple[float, float] | None:
    points = [
        (c.row.result.rps, float(c.size))
        for c in report.corpus
        if c.phase and c.row.ok and c.row.result is not None and c.problem is None
    ]
    return corpus.fit(points)


def corpus_rps(report: Report, name: str, system: str = PLEDGEQL) -> list[float]:
    return [
        c.row.result.rps
        for c in report.corpus
        if c.operation.name == name and c.row.system == system and c.row.ok and c.row.result is not None
    ]


def corpus_section(report: Report) -> list[str]:
    line = corpus_line(report)
    lines = [
        "## Corpus: every shared query (issue 13)",
        "",
        f"One worker, {report.options.concurrency} connections. Baselines S1 and `Small` (compiled) at the start "
        "and at the end; seconds/request = a + b x response bytes fitted to them"
        + (f": a = {line[0] * 1000:.3f} ms, b = {line[1] * 1e6:.4f} us/byte." if line else ": not determined.")
        + " Speed = req/s x (a + b x the operation's bytes); 1.0 is as fast as the compiled path."
        + f" An operation compared with PostGraphile runs in {report.options.rounds} interleaved round(s) with it;"
        " the done-when rows take each system's median round.",
        "",
        "| operation | file | purpose | system | served | req/s | p50 ms | CPU ms/req server | "
        "CPU ms/req PostgreSQL | bytes | speed | note |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in report.corpus:
        r = c.row.result
        rate = f"{r.rps:.1f}" if r else "-"
        p50 = _ms(r.p50_ms) if r else "-"
        fast = f"{corpus.speed(r.rps, c.size, line):.2f}" if r and line and c.row.system == PLEDGEQL else "-"
        notes = (f"baseline ({c.phase})" if c.phase else "", c.problem or "", "" if c.row.ok else c.row.status)
        note = "; ".join(x for x in notes if x)
        lines.append(
            f"| {c.operation.name} | {c.operation.source} | {c.operation.purpose} | {c.row.system} | {c.served or '-'} "
            f"| {rate} | {p50} | {_ms(c.row.app_cpu_ms)} | {_ms(c.row.db_cpu_ms)} | {c.size:,} | {fast} | {note} |"
        )
    lines += ["", "### Done when (issue 13)", "", *done_when(report, line), ""]
    return lines


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "not met")


def done_when(report: Report, line: tuple[float, float] | None) -> list[str]:
    shared = [
        c for c in report.corpus if not c.phase and c.row.system == PLEDGEQL and c.operation.name != corpus.DENIED
    ]
    # An operation run in several rounds counts with its median round.
    rounds: dict[str, list[CorpusRow]] = {}
    for c in shared:
        rounds.setdefault(c.operation.name, []).append(c)
    speeds = {}
    for name, runs in rounds.items():
        median = median_round([c.row for c in runs])
        if line and median is not None and median.result is not None:
            speeds[name] = corpus.speed(median.result.rps, runs[0].size, line)
    slow = [n for n, v in speeds.items() if v < corpus.TARGET_SPEED]
    # Measured: an answer with data, whose denied fields (the policy's FORBIDDEN) are part of it.
    slow += [c.operation.name for c in shared if c.operation.name not in speeds or not c.answered]
    every = None if not shared or not line else not slow
    out = [
        f"- Every shared query has speed >= {corpus.TARGET_SPEED}: **{_verdict(every)}**"
        + (f" (below, or not measured: {', '.join(sorted(set(slow)))})" if slow else "")
    ]
    for name in corpus.POSTGRAPHILE:
        ours, theirs = corpus_rps(report, name), corpus_rps(report, name, POSTGRAPHILE)
        ratio = statistics.median(ours) / statistics.median(theirs) if ours and theirs else None
        shown = f"{ratio:.2f}x" if ratio is not None else "n/a"
        spread = f" (medians of {len(ours)} and {len(theirs)} interleaved rounds)" if len(theirs) > 1 else ""
        out.append(
            f"- {name} >= 1.0x its PostGraphile equivalent: **{shown}**{spread}, "
            f"{_verdict(None if ratio is None else ratio >= 1.0)}"
        )
    s1, graphile = corpus_rps(report, "S1"), corpus_rps(report, "S1", POSTGRAPHILE)
    ratio = (sum(s1) / len(s1)) / graphile[0] if s1 and graphile else None
    out.append(
        f"- S1 >= 1.0x PostGraphile at 1 worker (this run's baselines, mean of start and end): "
        f"**{f'{ratio:.2f}x' if ratio is not None else 'n/a'}**, {_verdict(None if ratio is None else ratio >= 1.0)}"
    )
    denied = next((c for c in report.corpus if c.operation.name == corpus.DENIED), None)
    if denied is not None and denied.row.result is not None and line and s1:
        baseline = next(c for c in report.corpus if c.operation.name == "S1")
        allowed = corpus.speed(sum(s1) / len(s1), baseline.size, line)
        ratio = corpus.speed(denied.row.result.rps, denied.size, line) / allowed
        out.append(
            f"- {corpus.DENIED} >= 0.75x the speed of the allowed S1, errors included: **{ratio:.2f}x**, "
            f"{_verdict(ratio >= 0.75)}"
        )
    else:
        out.append(f"- {corpus.DENIED} >= 0.75x the speed of the allowed S1: **not measured**")
    out.append('- The README\'s "How a read is served" describes one path: not measured by the bench (read the README)')
    return out


def median_round(rows: list[Row] | None) -> Row | None:
    """The round with the median req/s (the S1 table's rule)."""
    measured = sorted((r for r in rows or [] if r.ok and r.result), key=lambda r: r.result.rps if r.result else 0)
    return measured[len(measured) // 2] if measured else None


def baseline_section(report: Report) -> list[str]:
    """This commit against the baseline commit, each figure from the same run."""
    revision = report.facts["baseline"]
    out = [
        f"## Against the baseline ({revision})",
        "",
        f"pledgeql at {report.facts.get('code')} and at {revision}, served alike against the same database in "
        "this run: S1 side by side in interleaved rounds, S2 one after the other, each corpus operation on one "
        "then the other. Ratio = this commit's req/s / the baseline's (>= 1.0: no slower).",
        "",
        "| scenario | workers | conc. | this commit req/s | baseline req/s | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ratios: list[float] = []

    def add(label: str, ours: Row | None, theirs: Row | None, workers: int, concurrency: int) -> None:
        a = ours.result.rps if ours and ours.ok and ours.result else None
        b = theirs.result.rps if theirs and theirs.ok and theirs.result else None
        if a is not None and b:
            ratios.append(a / b)
        shown = (f"{a:.1f}" if a is not None else "-", f"{b:.1f}" if b is not None else "-")
        out.append(f"| {label} | {workers} | {concurrency} | {shown[0]} | {shown[1]} | {_ratio(a, b)} |")

    options = report.options
    for scenario in ("S1", "S2"):
        for workers in options.workers:
            for concurrency in sorted({options.concurrency, 1}, reverse=True):
                ours = report.find(PLEDGEQL, scenario, workers, concurrency)
                theirs = report.find(BASELINE, scenario, workers, concurrency)
                if ours or theirs:
                    add(scenario, ours, theirs, workers, concurrency)
    by_name: dict[str, dict[str, list[Row]]] = {}
    for c in report.corpus:
        if not c.phase:
            by_name.setdefault(c.operation.name, {}).setdefault(c.row.system, []).append(c.row)

    for name, rows in by_name.items():
        if BASELINE in rows:
            ours, theirs = median_round(rows.get(PLEDGEQL)), median_round(rows[BASELINE])
            add(f"corpus {name} (median of {len(rows[BASELINE])})", ours, theirs, 1, options.concurrency)
    if ratios:
        out += [
            "",
            f"Over {len(ratios)} figures: lowest ratio **{min(ratios):.2f}x**, median "
            f"**{statistics.median(ratios):.2f}x**, highest {max(ratios):.2f}x.",
        ]
    return [*out, ""]


# -------------------------------------------------------------------- main


async def _prepare(options: Options) -> tuple[DatabaseUrls, scenarios.Subjects, dict[str, Any]]:
    urls = database_urls(options)
    built = await build_database(urls, options)
    subjects = await scenarios.prepare_subjects(urls.owner)
    conn = await connect(urls.owner)
    try:
        built["postgres"] = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return urls, subjects, built


def run(options: Options) -> Report:
    report = Report(options)
    report.facts["code"] = code_version()
    load_before = os.getloadavg()
    started = time.monotonic()
    urls, subjects, built = asyncio.run(_prepare(options))
    report.postmaster_pid = embedded_postmaster(options)
    report.owner_url = urls.owner
    report.facts.update(
        {
            "students": options.students,
            "district_responses": subjects.district_responses,
            "total_responses": subjects.total_responses,
            "class": "created (no class of exactly 30)" if subjects.class_created else "an existing class of 30",
            "postgres": built.get("postgres"),
            "seed_seconds": built.get("seconds"),
            "reused": built.get("reused"),
        }
    )
    secret = secrets.token_urlsafe(32)
    settings = dataclasses.replace(Settings(), env="development", jwt_secret=secret)
    tokens: dict[tuple[Any, str], str] = {}

    def token(user_id: Any, purpose: str) -> str:
        key = (user_id, purpose)
        if key not in tokens:
            tokens[key] = mint_token(settings, user_id, [purpose], 4 * 3600)
        return tokens[key]

    requests = scenarios.scenario_requests(subjects)
    calls = {s: [graphql_call(s, r, token(r.user_id, r.purpose)) for r in rs] for s, rs in requests.items() if rs}
    for s in ("S1", "S2", "S3", "S4"):
        calls.setdefault(s, [])
    env = server_env(urls, options, secret)

    start_pledgeql = pledgeql_server(env, options)
    start_baseline = None
    if options.baseline:
        start_baseline = baseline_server(env, options, options.baseline)
        report.facts["baseline"] = options.baseline
        run_pledgeql(report, calls, start_baseline, BASELINE, only=("S2",))
    if "pledgeql" in options.systems:
        run_pledgeql(report, calls, start_pledgeql)

    def corpus_run(missing: str | None) -> None:
        if "CORPUS" in options.scenarios and "pledgeql" in options.systems:
            ids = asyncio.run(corpus.prepare_ids(urls.owner, subjects))
            graphile = None if missing else postgraphile_server(urls, env, options)
            run_corpus(report, start_pledgeql, graphile, subjects, ids, token, start_baseline)

    if "S1" not in options.scenarios:
        corpus_run(postgraphile_missing() if options.postgraphile else "not run")
        report.facts["load_before"] = load_before
        report.facts["load_after"] = os.getloadavg()
        report.facts["minutes"] = (time.monotonic() - started) / 60
        return report

    side: list[System] = []
    if "pledgeql" in options.systems:
        side.append(System(PLEDGEQL, start_pledgeql, calls["S1"]))
    if start_baseline is not None:
        side.append(System(BASELINE, start_baseline, calls["S1"]))

    # (c) the same server without permission checks and audit writes.
    def unenforced(workers: int) -> Any:
        port = free_port()
        command = uvicorn_command("bench.unenforced_app:app", port, workers)
        return serve(
            f"unenforced-{workers}w", command, env, port, answers("/readyz"), options, uvicorn_started(workers)
        )

    if "unenforced" in options.systems:
        side.append(System(UNENFORCED, unenforced, calls["S1"]))

    # (b) the physical limit: in-process, then behind a minimal endpoint.
    limit_env = dict(env, **{limit.DSN_VARIABLE: urls.owner})

    def limit_server(workers: int) -> Any:
        port = free_port()
        command = uvicorn_command("bench.limit:app", port, workers)
        return serve(
            f"limit-{workers}w", command, limit_env, port, answers("/healthz"), options, uvicorn_started(workers)
        )

    if "limit" in options.systems:
        report.limit_call = asyncio.run(
            limit.measure(urls.owner, subjects.district_id, subjects.class_id, options.limit_calls)
        )
        path = f"/s1?district={subjects.district_id}&class={subjects.class_id}"
        side.append(System(LIMIT, limit_server, [Call("S1", "GET", path, {"Accept": "application/json"})]))

    # (a) PostGraphile 4.
    missing = postgraphile_missing() if options.postgraphile else "not run (--no-postgraphile or --systems)"
    if missing:
        report.notes.append(f"PostGraphile: {missing}")
        log(f"PostGraphile: {missing}")
    else:
        variables = {"districtId": str(subjects.district_id), "id": str(subjects.class_id)}
        pg_body = json.dumps({"query": POSTGRAPHILE_S1, "variables": variables})

        postgraphile = postgraphile_server(urls, env, options)
        pg_call = Call("S1", "POST", "/graphql", {"Content-Type": "application/json"}, pg_body)
        side.append(System(POSTGRAPHILE, postgraphile, [pg_call], check_postgraphile_s1))

    run_side_by_side(report, side)

    corpus_run(missing)

    report.facts["load_before"] = load_before
    report.facts["load_after"] = os.getloadavg()
    report.facts["minutes"] = (time.monotonic() - started) / 60
    return report


# -------------------------------------------------------------- the table


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else (f"{value:.1f}" if value < 100 else f"{value:.0f}")


def table(report: Report) -> str:
    lines = [
        "| system | scenario | workers | conc. | req/s | p50 ms | p95 ms | failed "
        "| CPU ms/req server | CPU ms/req PostgreSQL | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row, spread in report.summary():
        r = row.result
        title = scenarios.SCENARIO_TITLES.get(row.scenario, "")
        if r is None:
            lines.append(
                f"| {row.system} | {row.scenario} {title} | {row.workers} | {row.concurrency} | "
                f"- | - | - | - | - | - | {row.status} |"
            )
            continue
        note = "" if row.status == "ok" else row.status
        if r.socket_errors:
            note = (note + f" {r.socket_errors} socket errors").strip()
        if r.failures and r.notes:
            note = (note + " " + "; ".join(r.notes)).strip()
        if row.connections:
            note = (note + f" connections per worker mid-run: {row.connections}").strip()
        if spread:
            note = (note + " " + spread).strip()
        if row.audit_bytes is not None:
            note = (note + f" audit on disk {row.audit_bytes:,.0f} bytes/request").strip()
        lines.append(
            f"| {row.system} | {row.scenario} {title} | {row.workers} | {row.concurrency} | {r.rps:.1f} | "
            f"{_ms(r.p50_ms)} | {_ms(r.p95_ms)} | {r.failures} | "
            f"{_ms(row.app_cpu_ms)} | {_ms(row.db_cpu_ms)} | {note} |"
        )
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.2f}x"


def ratios(report: Report) -> list[str]:
    options = report.options
    c = options.concurrency
    out: list[str] = []

    def rps(system: str, w: int) -> float | None:
        row = report.find(system, "S1", w, c)
        return row.result.rps if row and row.ok and row.result else None

    def p50(system: str, scenario: str, w: int, conc: int) -> float | None:
        row = report.find(system, scenario, w, conc)
        return row.result.p50_ms if row and row.ok and row.result else None

    def cpu(system: str, w: int, conc: int) -> float | None:
        """Server plus PostgreSQL CPU per S1 request."""
        row = report.find(system, "S1", w, conc)
        if row is None or not row.ok or row.app_cpu_ms is None:
            return None
        return row.app_cpu_ms + (row.db_cpu_ms or 0.0)

    for w in options.workers:
        out.append(
            f"- S1 throughput pledgeql/PostGraphile, {w} worker(s) each, concurrency {c}: "
            f"**{_ratio(rps(PLEDGEQL, w), rps(POSTGRAPHILE, w))}** (target >= 1.0x)"
        )
    lat = 1 if options.latency_runs else c
    for w in (1,) if 1 in options.workers else options.workers[:1]:
        out.append(
            f"- S1 p50 latency pledgeql/limit over HTTP, concurrency {lat}: "
            f"**{_ratio(p50(PLEDGEQL, 'S1', w, lat), p50(LIMIT, 'S1', w, lat))}**"
        )
        if report.limit_call is not None:
            in_process = report.limit_call.p50_ms
            out.append(
                f"- S1 p50 latency pledgeql (HTTP, concurrency {lat}) / limit in-process call "
                f"({in_process:.2f} ms): **{_ratio(p50(PLEDGEQL, 'S1', w, lat), in_process)}**"
            )
        out.append(
            f"- S1 p50 latency enforced/unenforced, concurrency {lat}: "
            f"**{_ratio(p50(PLEDGEQL, 'S1', w, lat), p50(UNENFORCED, 'S1', w, lat))}** (target <= 1.3x)"
        )
        if lat != c:
            out.append(
                f"- S1 p50 latency enforced/unenforced, concurrency {c}: "
                f"**{_ratio(p50(PLEDGEQL, 'S1', w, c), p50(UNENFORCED, 'S1', w, c))}**"
            )
        out.append(
            f"- S1 CPU per request (server + PostgreSQL), concurrency {lat}: enforced/unenforced "
            f"**{_ratio(cpu(PLEDGEQL, w, lat), cpu(UNENFORCED, w, lat))}**, pledgeql/PostGraphile "
            f"**{_ratio(cpu(PLEDGEQL, w, lat), cpu(POSTGRAPHILE, w, lat))}**, pledgeql/limit "
            f"**{_ratio(cpu(PLEDGEQL, w, lat), cpu(LIMIT, w, lat))}** (steadier than wall time on a shared machine)"
        )
        weighed = [r for r in report.rows if r.system == PLEDGEQL and r.scenario == "S1" and r.audit_bytes is not None]
        if weighed:
            grown = statistics.median(r.audit_bytes or 0.0 for r in weighed)
            out.append(
                f"- Audit bytes on disk per S1 request, indexes included (median of {len(weighed)} S1 runs): "
                f"**{grown:,.0f}** (target <= 2,048: {'met' if grown <= 2048 else 'missed'})"
            )
        s3 = p50(PLEDGEQL, "S3", w, lat)
        if s3 is not None:
            responses = int(report.facts.get("district_responses") or 0)
            if responses >= 1_000_000:
                verdict = "target < 500 ms: " + ("met" if s3 < 500 else "missed")
            else:
                verdict = f"the < 500 ms target is for >= 1,000,000 responses; this district has {responses:,}"
            out.append(f"- S3 p50 at concurrency {lat}: **{s3:.0f} ms** ({verdict})")
    return out


def code_version() -> str:
    """The commit measured, and whether the working tree differed from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (" with uncommitted changes in the working tree" if dirty else "")


def other_stacks(report: Report) -> str:
    """The Python servers that ran on another loop or parser than pledgeql, if any."""
    ours = report.stacks.get(PLEDGEQL, set())
    others = [
        f"{system} by {uvicorn_stack(stacks)}"
        for system, stacks in report.stacks.items()
        if system in (UNENFORCED, LIMIT) and stacks != ours
    ]
    return (" (" + "; ".join(others) + ")") if others else ""


def markdown(report: Report) -> str:
    o, f = report.options, report.facts
    lc = report.limit_call
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run.py` on {when}; `nproc` = {os.cpu_count()}; {platform.python_implementation()} "
        f"{platform.python_version()}; PostgreSQL {f.get('postgres')}; load generator {o.engine}; pledgeql served by "
        f"{uvicorn_stack(report.stacks.get(PLEDGEQL, set()))}{other_stacks(report)}; "
        f"code at {report.facts.get('code', code_version())}.",
        "",
        f"Data: {f.get('students'):,} students, {f.get('total_responses'):,} responses "
        f"({f.get('district_responses'):,} in the reporting district); S1 class: {f.get('class')}.",
        f"Runs: {o.warmup:g} s warm-up, then {o.duration:g} s counted, {o.concurrency} connections "
        f"(and 1 for the latency rows); workers {', '.join(map(str, o.workers))}. S1 runs on every system "
        f"side by side: all started together, measured one at a time in {o.rounds} interleaved round(s); "
        "the table shows the median round.",
        f"Load average before/after: {' '.join(f'{x:.2f}' for x in f.get('load_before', ()))} / "
        f"{' '.join(f'{x:.2f}' for x in f.get('load_after', ()))} (the load generator shares the machine).",
        "",
        table(report),
        "",
        "## Ratios",
        "",
        *ratios(report),
        "",
    ]
    if lc is not None:
        lines += [
            "## The limit in-process",
            "",
            f"S1 in one SQL statement + orjson, {lc.calls} calls on one connection: p50 {lc.p50_ms:.2f} ms, "
            f"p95 {lc.p95_ms:.2f} ms (SQL p50 {lc.sql_p50_ms:.2f} ms, orjson p50 {lc.encode_p50_ms:.3f} ms), "
            f"{lc.response_bytes:,} bytes.",
            "",
        ]
    if report.corpus:
        lines += corpus_section(report)
    if report.facts.get("baseline"):
        lines += baseline_section(report)
    if report.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in report.notes), ""]
    lines += [
        "Scenarios: " + "; ".join(f"{k} {v}" for k, v in scenarios.SCENARIO_TITLES.items()) + ".",
        "A request counts as failed when its status is not 200 or its body has GraphQL errors. "
        "CPU ms/req: the CPU time of the server's processes (and of PostgreSQL's backends, when the bench "
        "started PostgreSQL) during the counted run, divided by the requests completed: steadier than wall "
        "time on a shared machine.",
        "",
    ]
    return "\n".join(lines)


def _stop_on_signal() -> None:
    """SIGTERM and SIGINT unwind the stack, so that every server started is stopped
    (a background job may have inherited SIGINT ignored)."""

    def leave(number: int, frame: Any) -> None:
        raise SystemExit(128 + number)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    _stop_on_signal()
    options.work_dir.mkdir(parents=True, exist_ok=True)
    report = run(options)
    text = markdown(report)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(text)
    print(text)
    log(f"written to {options.out} in {report.facts['minutes']:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
