"""submitResponse throughput with the audit, on one uvicorn worker. A benchmark, not a test.

    .venv/bin/python bench/submit_bench.py [--concurrency 16] [--warmup 5] [--duration 20]

What it does:

1. starts the embedded PostgreSQL under a fresh temporary data dir (removed
   afterwards) or ``--data-dir`` (kept), migrates it and seeds the demo data;
2. starts ``uvicorn server.asgi:app --workers 1`` as a subprocess on that
   database (the app role, row-level security, the audit writer: the
   production request path), with the rate limit lifted;
3. runs the load generator in a separate process (this file with
   ``--generate``): an asyncio httpx client holding ``--concurrency``
   keep-alive connections, each sending submitResponse mutations back to back
   for the warm-up and then the counted period. Every request is a different
   demo student's token (round robin over the students with an assignment),
   submits one item of one of that student's assignments with its own
   Idempotency-Key, and selects correct, feedback and the response's id,
   correctness, score and submission time;
4. prints requests per second and latency percentiles of the counted period,
   and checks them against the database: responses stored and audit entries
   written during the run.

A request counts as failed when its status is not 200 or its body has an
``errors`` member. The load generator shares the machine's cores with the
server and PostgreSQL: figures are for this machine, not a capacity plan.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MUTATION = (
    "mutation Submit($input: SubmitResponseInput!) { submitResponse(input: $input) "
    "{ correct feedback response { id correct score submittedAt } } }"
)
BENCH_SECRET = "bench-secret-not-for-production-0123456789abcdef"


# --------------------------------------------------------------- load generator


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


async def _generate(spec: dict[str, Any]) -> dict[str, Any]:
    import httpx

    url: str = spec["url"]
    calls: list[dict[str, Any]] = spec["calls"]
    concurrency: int = spec["concurrency"]
    warmup: float = spec["warmup"]
    duration: float = spec["duration"]
    counted: list[float] = []
    failures: dict[str, int] = {}
    next_call = 0

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
        start = time.perf_counter()
        counting_from = start + warmup
        stop_at = counting_from + duration

        async def worker() -> None:
            nonlocal next_call
            while True:
                began = time.perf_counter()
                if began >= stop_at:
                    return
                call = calls[next_call % len(calls)]
                next_call += 1
                headers = {**call["headers"], "Idempotency-Key": uuid.uuid4().hex}
                try:
                    response = await client.post(url, content=call["body"], headers=headers)
                    ok = response.status_code == 200 and b'"errors"' not in response.content
                    reason = "ok" if ok else f"status {response.status_code}: {response.content[:200]!r}"
                except httpx.HTTPError as error:
                    ok, reason = False, type(error).__name__
                ended = time.perf_counter()
                if began >= counting_from and ended <= stop_at:
                    if ok:
                        counted.append(ended - began)
                    else:
                        failures[reason] = failures.get(reason, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    counted.sort()
    return {
        "requests": len(counted),
        "failed": sum(failures.values()),
        "failures": dict(sorted(failures.items(), key=lambda kv: -kv[1])[:5]),
        "seconds": duration,
        "rps": len(counted) / duration,
        "p50_ms": 1000 * _percentile(counted, 0.50),
        "p95_ms": 1000 * _percentile(counted, 0.95),
        "p99_ms": 1000 * _percentile(counted, 0.99),
        "max_ms": 1000 * counted[-1] if counted else float("nan"),
    }


# ------------------------------------------------------------------ orchestrator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _prepare(settings: Any) -> tuple[Any, list[dict[str, Any]]]:
    from server.auth import mint_token
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
        rows = await owner.fetch(
            "SELECT DISTINCT ON (u.id) u.id AS student_id, a.id AS assignment_id, "
            "  array_agg(i.id ORDER BY i.position) AS items, array_agg(i.choices[1] ORDER BY i.position) AS answers "
            "FROM users u JOIN enrollments e ON e.district_id = u.district_id AND e.student_id = u.id "
            "  AND e.begin_date <= current_date AND (e.end_date IS NULL OR e.end_date >= current_date) "
            "JOIN assignments a ON a.district_id = e.district_id AND a.class_id = e.class_id "
            "JOIN items i ON i.assessment_id = a.assessment_id "
            "WHERE u.role = 'STUDENT' AND NOT u.disabled GROUP BY u.id, a.id ORDER BY u.id, a.id"
        )
    finally:
        await owner.close()
    rng = random.Random(20200401)
    calls = []
    for row in rows:
        token = mint_token(settings, row["student_id"], ["STUDENT_LEARNING"], 3600)
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Purpose": "STUDENT_LEARNING",
            "Content-Type": "application/json",
        }
        k = rng.randrange(len(row["items"]))
        variables = {
            "input": {
                "itemId": str(row["items"][k]),
                "assignmentId": str(row["assignment_id"]),
                "answer": row["answers"][k],
                "timeSpentSeconds": rng.randint(5, 240),
            }
        }
        calls.append({"headers": headers, "body": json.dumps({"query": MUTATION, "variables": variables})})
    rng.shuffle(calls)
    return urls, calls


async def _stored_counts(owner_url: str) -> tuple[int, int]:
    from server.db import connect

    owner = await connect(owner_url)
    try:
        responses = await owner.fetchval("SELECT count(*) FROM responses")
        audit = await owner.fetchval("SELECT count(*) FROM audit_entries")
    finally:
        await owner.close()
    return int(responses), int(audit)


def _cpu_ticks(pid: int) -> int:
    """user + system clock ticks of one process (Linux /proc); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _postgres_pids(pgdata: Path) -> list[int]:
    """The embedded server's postmaster and its current children (backends, writers)."""
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _cpu_snapshot(server_pid: int, pgdata: Path) -> tuple[int, dict[int, int]]:
    return _cpu_ticks(server_pid), {pid: _cpu_ticks(pid) for pid in _postgres_pids(pgdata)}


def _wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"The server exited with status {server.returncode} before it was ready")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("The server did not become ready in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse a data dir (default: a fresh temp dir)")
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.generate:
        spec = json.loads(sys.stdin.read())
        print(json.dumps(asyncio.run(_generate(spec))))
        return 0

    from server.settings import Settings

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="pledgeql-bench-"))
    env = {
        **os.environ,
        "PLEDGEQL_DATA_DIR": str(data_dir),
        "PLEDGEQL_JWT_SECRET": BENCH_SECRET,
        "PLEDGEQL_RATE_LIMIT_PER_MINUTE": "100000000",
        "PLEDGEQL_RATE_LIMIT_BURST": "100000000",
    }
    env.pop("PLEDGEQL_DATABASE_URL", None)
    settings = dataclasses.replace(Settings.from_env(), data_dir=data_dir, jwt_secret=BENCH_SECRET, database_url=None)
    print(f"preparing the embedded database under {data_dir} ...", flush=True)
    urls, calls = asyncio.run(_prepare(settings))
    # The worker uses the embedded server this process started and keeps alive.
    env["PLEDGEQL_DATABASE_URL"] = urls.owner
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "server.asgi:app", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--workers", "1", "--log-level", "warning", "--no-access-log"],
        cwd=ROOT,
        env=env,
    )
    try:
        _wait_ready(port, server)
        responses_before, audit_before = asyncio.run(_stored_counts(urls.owner))
        cpu_before = _cpu_snapshot(server.pid, data_dir / "pgdata")
        spec = {
            "url": f"http://127.0.0.1:{port}/graphql",
            "calls": calls,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "duration": args.duration,
        }
        print(
            f"{len(calls)} students; concurrency {args.concurrency}; warm-up {args.warmup:g} s; "
            f"counted {args.duration:g} s ...",
            flush=True,
        )
        generator = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--generate"],
            input=json.dumps(spec).encode(),
            capture_output=True,
            check=True,
            cwd=ROOT,
        )
        result = json.loads(generator.stdout)
        cpu_after = _cpu_snapshot(server.pid, data_dir / "pgdata")
        responses_after, audit_after = asyncio.run(_stored_counts(urls.owner))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        from server.db import stop_embedded

        stop_embedded()
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)

    print(
        f"submitResponse, 1 worker, audit on: {result['rps']:.1f} requests/s; "
        f"p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"max {result['max_ms']:.1f} ms; {result['requests']} counted, {result['failed']} failed"
    )
    if result["failures"]:
        print(f"failures: {result['failures']}")
    print(
        f"stored during the whole run (warm-up included): {responses_after - responses_before} responses, "
        f"{audit_after - audit_before} audit entries"
    )
    # CPU per request does not depend on what else the machine runs (the
    # throughput above does): it bounds what one worker can serve.
    stored = max(1, responses_after - responses_before)
    tick = os.sysconf("SC_CLK_TCK")
    app_ms = 1000 * (cpu_after[0] - cpu_before[0]) / tick / stored
    pg_ms = 1000 * sum(t - cpu_before[1].get(pid, 0) for pid, t in cpu_after[1].items()) / tick / stored
    print(
        f"CPU per request over the whole run: app worker {app_ms:.2f} ms (one worker's ceiling "
        f"~{1000 / app_ms if app_ms else float('inf'):.0f} requests/s of CPU), PostgreSQL {pg_ms:.2f} ms"
    )
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
