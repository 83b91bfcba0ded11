"""classActivity under load: commit-to-delivery latency, audit per event, CPU per delivery. Not a test.

    .venv/bin/python bench/live.py [--students 5000] [--subscribers 200] [--rate 100] [--duration 20] [--workers 2]

1. starts the embedded PostgreSQL under a fresh temporary data dir, migrates
   it and seeds ``--students`` demo students (5000: about 200 classes);
2. serves ``pledgeql serve --workers N`` on it, with the rate limit lifted;
3. phase 1, the baseline: students submit responses to their assignments at
   ``--rate`` per second (paced, open loop) with nobody subscribed;
4. phase 2: ``--subscribers`` graphql-transport-ws connections (the
   ``websockets`` client, one process), each a teacher of a class watching it
   under INSTRUCTION (one subscriber per class, round robin over the classes
   when there are more subscribers than classes), then the same submissions;
5. prints, for phase 2: deliveries, p50/p95/p99 latency from the
   submission's commit (PostgreSQL's own commit timestamp of the response's
   transaction: the embedded server runs with ``track_commit_timestamp = on``)
   to each delivery (the subscriber's clock when the message arrived; one
   machine, one clock), audit entries written per delivered event, and CPU
   per delivery: the extra CPU of the app workers and of PostgreSQL in phase
   2 over phase 1, divided by the deliveries.

The load generators share the machine with the server and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.submit_bench import (  # noqa: E402
    BENCH_SECRET,
    _cpu_ticks,
    _free_port,
    _percentile,
    _postgres_pids,
    _wait_ready,
)

SUBSCRIPTION = (
    "subscription BenchLive($classId: ID!) { classActivity(classId: $classId) "
    "{ kind at student { id firstName lastName } response { id correct score submittedAt item { id skill } } } }"
)
MUTATION = "mutation Submit($input: SubmitResponseInput!) { submitResponse(input: $input) { response { id } } }"


# ------------------------------------------------------------------ subscribers


async def _subscribe(spec: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect

    received: list[tuple[float, str, str]] = []  # (receive time, submittedAt, response id)
    errors: list[str] = []
    ready = 0
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def one(url: str, token: str, class_id: str) -> None:
        nonlocal ready
        async with connect(url, subprotocols=["graphql-transport-ws"], max_queue=None) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps(
                    {
                        "type": "connection_init",
                        "payload": {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"},
                    }
                )
            )
            ack = json.loads(await ws.recv())
            if ack.get("type") != "connection_ack":
                errors.append(str(ack)[:200])
                return
            payload = {"query": SUBSCRIPTION, "variables": {"classId": class_id}}
            await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
            ready += 1
            while True:
                message = json.loads(await ws.recv())
                now = time.time()
                if message["type"] == "ping":
                    await ws.send('{"type":"pong"}')
                elif message["type"] == "next":
                    event = message["payload"]["data"]["classActivity"]
                    if event["response"] is not None:
                        received.append((now, event["response"]["submittedAt"], event["response"]["id"]))
                else:
                    errors.append(json.dumps(message)[:200])
                    return

    tasks = [asyncio.create_task(one(spec["url"], s["token"], s["class_id"])) for s in spec["subscribers"]]
    while ready < len(tasks) and not all(t.done() for t in tasks):
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # the last subscriptions reach the hub
    print(json.dumps({"ready": ready}), flush=True)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"received": received, "errors": errors[:10], "error_count": len(errors)}), flush=True)


# ------------------------------------------------------------------ submitter


async def _submit(spec: dict[str, Any]) -> dict[str, Any]:
    import httpx

    calls: list[dict[str, Any]] = spec["calls"]
    rate: float = spec["rate"]
    duration: float = spec["duration"]
    answered: dict[str, float] = {}
    durations: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        async def send(call: dict[str, Any]) -> None:
            nonlocal failures
            headers = {**call["headers"], "Idempotency-Key": os.urandom(12).hex()}
            began = time.perf_counter()
            try:
                response = await client.post(spec["url"], content=call["body"], headers=headers)
                body = response.json()
                answered[body["data"]["submitResponse"]["response"]["id"]] = time.time()
                durations.append(time.perf_counter() - began)
            except (httpx.HTTPError, KeyError, TypeError, ValueError):
                failures += 1

        start = time.perf_counter()
        pending = []
        total = int(rate * duration)
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(send(calls[i % len(calls)])))
        await asyncio.gather(*pending)
    durations.sort()
    return {
        "answered": answered,
        "failures": failures,
        "sent": total,
        "p50_ms": 1000 * _percentile(durations, 0.5),
        "p95_ms": 1000 * _percentile(durations, 0.95),
    }


# ----------------------------------------------------------------- orchestrator


async def _prepare(settings: Any, students: int, subscribers: int) -> tuple[Any, list[dict[str, Any]], list[Any]]:
    from bench.submit_bench import _prepare as submissions
    from server.auth import mint_token
    from server.commands.migrate import migrate
    from server.commands.seed import seed_demo
    from server.db import connect, ensure_database, server_urls

    urls = server_urls(settings)
    await ensure_database(urls)
    await migrate(urls)
    await seed_demo(urls.owner, students=students)
    _, calls = await submissions(settings)
    owner = await connect(urls.owner)
    try:
        await owner.execute("VACUUM ANALYZE")
        pairs = await owner.fetch(
            "SELECT DISTINCT ON (ct.class_id) ct.class_id, ct.teacher_id FROM class_teachers ct "
            "ORDER BY ct.class_id, ct.teacher_id"
        )
    finally:
        await owner.close()
    watched = len({str(p["class_id"]) for p in pairs[:subscribers]})
    print(f"{len(pairs)} classes, {watched} of them watched; {len(calls)} students with an assignment", flush=True)
    watchers = []
    for i in range(subscribers):
        pair = pairs[i % len(pairs)]
        token = mint_token(settings, pair["teacher_id"], ["INSTRUCTION"], 7200)
        watchers.append({"token": token, "class_id": str(pair["class_id"])})
    return urls, watchers, calls


def _tree_ticks(root: int) -> int:
    """CPU ticks of a process and its children (the serve supervisor and its workers)."""
    total = _cpu_ticks(root)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == root:
                total += _cpu_ticks(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


def _pg_ticks(pgdata: Path) -> int:
    return sum(_cpu_ticks(pid) for pid in _postgres_pids(pgdata))


def _run_submitter(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--submit"],
        input=json.dumps(spec).encode(),
        capture_output=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def _track_commits(owner_url: str) -> None:
    from server.db import connect

    owner = await connect(owner_url)
    try:
        await owner.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    finally:
        await owner.close()


async def _commit_times(owner_url: str, ids: list[str]) -> dict[str, float]:
    from server.db import connect

    owner = await connect(owner_url)
    try:
        rows = await owner.fetch(
            "SELECT id::text, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 AS at "
            "FROM responses WHERE id = ANY($1::uuid[])",
            ids,
        )
    finally:
        await owner.close()
    return {r["id"]: r["at"] for r in rows if r["at"] is not None}


async def _audit_count(owner_url: str) -> int:
    from server.db import connect

    owner = await connect(owner_url)
    try:
        return int(await owner.fetchval("SELECT count(*) FROM audit_entries WHERE operation_name = 'BenchLive'"))
    finally:
        await owner.close()


def _sample_waits(owner_url: str, stop: Any, counts: dict[str, int]) -> None:
    """What PostgreSQL's backends wait for, sampled every 50 ms (``--sample-waits``)."""

    async def sample() -> None:
        from server.db import connect

        owner = await connect(owner_url)
        try:
            while not stop.is_set():
                rows = await owner.fetch(
                    "SELECT coalesce(wait_event_type, '-') || ':' || coalesce(wait_event, '-') || ' ' || "
                    "coalesce(state, '-') || ' ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 50) AS what "
                    "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                    "AND state <> 'idle'"
                )
                for row in rows:
                    counts[row["what"]] = counts.get(row["what"], 0) + 1
                await asyncio.sleep(0.05)
        finally:
            await owner.close()

    asyncio.run(sample())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=5000)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-waits", action="store_true", help="print what PostgreSQL waited for in phase 2")
    parser.add_argument("--subscribe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--submit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscribe:
        asyncio.run(_subscribe(json.loads(sys.stdin.readline())))
        return 0
    if args.submit:
        print(json.dumps(asyncio.run(_submit(json.loads(sys.stdin.read())))))
        return 0

    from server.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="pledgeql-live-bench-"))
    env = {
        **os.environ,
        "PLEDGEQL_DATA_DIR": str(data_dir),
        "PLEDGEQL_JWT_SECRET": BENCH_SECRET,
        "PLEDGEQL_RATE_LIMIT_PER_MINUTE": "100000000",
        "PLEDGEQL_RATE_LIMIT_BURST": "100000000",
    }
    env.pop("PLEDGEQL_DATABASE_URL", None)
    settings = dataclasses.replace(Settings.from_env(), data_dir=data_dir, jwt_secret=BENCH_SECRET, database_url=None)
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (nproc {os.cpu_count()})")
    print(f"seeding {args.students} students under {data_dir} ...", flush=True)
    urls, watchers, calls = asyncio.run(_prepare(settings, args.students, args.subscribers))
    from server.db import server_urls, stop_embedded

    asyncio.run(_track_commits(urls.owner))
    stop_embedded()  # restarted with commit timestamps on
    urls = server_urls(settings)
    env["PLEDGEQL_DATABASE_URL"] = urls.owner
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "server.commands.cli", "serve", "--port", str(port), "--workers", str(args.workers)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    pgdata = data_dir / "pgdata"
    subscriber: subprocess.Popen[bytes] | None = None
    try:
        _wait_ready(port, server)
        spec = {"url": f"http://127.0.0.1:{port}/graphql", "calls": calls, "rate": args.rate}
        print(f"phase 1: {args.rate:g} submissions/s for {args.duration:g} s, nobody subscribed ...", flush=True)
        app0, pg0 = _tree_ticks(server.pid), _pg_ticks(pgdata)
        baseline = _run_submitter({**spec, "duration": args.duration})
        app1, pg1 = _tree_ticks(server.pid), _pg_ticks(pgdata)

        print(f"phase 2: {len(watchers)} subscribers, then the same submissions ...", flush=True)
        subscriber = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--subscribe"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert subscriber.stdin is not None and subscriber.stdout is not None
        subscriber.stdin.write(
            (json.dumps({"url": f"ws://127.0.0.1:{port}/graphql", "subscribers": watchers}) + "\n").encode()
        )
        subscriber.stdin.flush()
        ready = json.loads(subscriber.stdout.readline())["ready"]
        audit0 = asyncio.run(_audit_count(urls.owner))
        app2, pg2 = _tree_ticks(server.pid), _pg_ticks(pgdata)
        waits: dict[str, int] = {}
        stop_sampling = threading.Event()
        sampler = threading.Thread(target=_sample_waits, args=(urls.owner, stop_sampling, waits))
        if args.sample_waits:
            sampler.start()
        loaded = _run_submitter({**spec, "duration": args.duration})
        stop_sampling.set()
        if args.sample_waits:
            sampler.join()
            for what, count in sorted(waits.items(), key=lambda kv: -kv[1])[:15]:
                print(f"  {count:6d}  {what}")
        # The last deliveries: until no audit entry has been added for 2 s (at most 60 s).
        seen, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 60
        while time.monotonic() - quiet_since < 2.0 and time.monotonic() < deadline:
            count = asyncio.run(_audit_count(urls.owner))
            if count != seen:
                seen, quiet_since = count, time.monotonic()
            time.sleep(0.5)
        app3, pg3 = _tree_ticks(server.pid), _pg_ticks(pgdata)
        audit1 = asyncio.run(_audit_count(urls.owner))
        subscriber.send_signal(signal.SIGTERM)
        outcome = json.loads(subscriber.stdout.readline())
        committed = asyncio.run(_commit_times(urls.owner, [r[2] for r in outcome["received"]]))
    finally:
        if subscriber is not None and subscriber.poll() is None:
            subscriber.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        stop_embedded()
        shutil.rmtree(data_dir, ignore_errors=True)

    answered: dict[str, float] = loaded["answered"]
    from_commit, from_begin, from_answer = [], [], []
    for at, submitted_at, response_id in outcome["received"]:
        from_begin.append(at - dt.datetime.fromisoformat(submitted_at).timestamp())
        if response_id in committed:
            from_commit.append(at - committed[response_id])
        if response_id in answered:
            from_answer.append(at - answered[response_id])
    for values in (from_commit, from_begin, from_answer):
        values.sort()
    deliveries = len(outcome["received"])
    tick = os.sysconf("SC_CLK_TCK")
    extra_app = ((app3 - app2) - (app1 - app0)) / tick
    extra_pg = ((pg3 - pg2) - (pg1 - pg0)) / tick

    def ms(values: list[float], q: float) -> str:
        return f"{1000 * _percentile(values, q):.1f}"

    print(f"load average at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (nproc {os.cpu_count()})")
    print(f"subscribed {ready}/{len(watchers)}; subscriber errors {outcome['error_count']} {outcome['errors'][:3]}")
    print(
        f"submissions: phase 1 {baseline['sent'] - baseline['failures']}/{baseline['sent']} ok "
        f"(p50 {baseline['p50_ms']:.1f} ms, p95 {baseline['p95_ms']:.1f} ms), "
        f"phase 2 {loaded['sent'] - loaded['failures']}/{loaded['sent']} ok "
        f"(p50 {loaded['p50_ms']:.1f} ms, p95 {loaded['p95_ms']:.1f} ms)"
    )
    print(
        f"deliveries {deliveries} ({len(from_commit)} with a commit time); commit to delivery: "
        f"p50 {ms(from_commit, 0.5)} ms, p95 {ms(from_commit, 0.95)} ms, p99 {ms(from_commit, 0.99)} ms, "
        f"max {ms(from_commit, 1.0)} ms"
    )
    print(
        f"for comparison: mutation start (submittedAt) to delivery p50 {ms(from_begin, 0.5)} ms, "
        f"p95 {ms(from_begin, 0.95)} ms; the submitter's receipt of the mutation's answer to delivery "
        f"p50 {ms(from_answer, 0.5)} ms, p95 {ms(from_answer, 0.95)} ms"
    )
    entries = audit1 - audit0
    print(f"audit entries per delivered event: {entries / max(1, deliveries):.2f} ({entries} entries)")
    print(
        f"CPU per delivery (phase 2 minus phase 1): app workers {1000 * extra_app / max(1, deliveries):.2f} ms, "
        f"PostgreSQL {1000 * extra_pg / max(1, deliveries):.2f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
