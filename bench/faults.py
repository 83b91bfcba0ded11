"""The fault suite (issue 19): pledgeql under steady load while faults are injected, one per phase.

    .venv/bin/python bench/faults.py [--quick] [--workers 2] [--teachers 24] [--students 8] [--out FILE]

It starts ``pledgeql serve --workers N --demo`` on a fresh data folder (its
own embedded PostgreSQL, which ``serve`` owns and supervises), then drives a
steady load: teachers opening a class view (every student's name and their
newest responses) and students submitting answers, in both demo districts,
each virtual user on a keep-alive connection of its own, one request after
the other, with no retries. Each phase injects one fault:

* ``steady``: none;
* ``worker kill -9``: SIGKILL to one worker;
* ``rolling restart``: SIGHUP to ``serve``;
* ``postmaster kill -9``: SIGKILL to the embedded PostgreSQL's postmaster;
* ``immediate stop``: SIGQUIT to the postmaster (PostgreSQL's immediate
  shutdown, ``pg_ctl stop -m immediate``), which ``serve`` restarts;
* ``audit INSERT revoked``: ``REVOKE INSERT ON audit_records`` from the app
  role, granted back a few seconds later;
* ``chain lock held``: Northwind's audit chain lock held (35 s; 8 s quick)
  over an owner connection, as a long retention trim would;
* ``hostile connections``: 1,000 (200 quick) slowloris connections beside the
  load, each sending a header byte a second.

For each phase it reports the requests, the 200s that carried personal data,
those of them without committed audit entries (looked up by the server's
X-Request-Id), the submissions answered 200 but not stored, the failures by
status and code (``conn:`` for a connection error), the seconds from the
fault to the last failure, what the server logged (replacement, restart), and
whether ``pledgeql audit verify`` passes. The tables go to stdout and, with
``--out``, to a Markdown file.

Too slow for CI: about 6 minutes (``--quick``: about 2).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scenarios import CLASS_VIEW, SUBMIT  # noqa: E402
from server.auth import mint_token  # noqa: E402
from server.db import connect  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.workers import READY  # noqa: E402

READY_LINE = re.compile(READY.replace("[", r"\[").replace("]", r"\]").replace("%d", r"(\d+)").replace("%s", r"\S+"))
CONNECTION_ERRORS = (httpx.TransportError, OSError)


@dataclass
class Result:
    started: float
    ended: float
    district: str
    kind: str  # "class view" or "submission"
    status: int  # 0: no response
    codes: str = ""
    with_data: bool = False
    request_id: str = ""
    response_id: str = ""


@dataclass
class Phase:
    name: str
    duration: float
    inject_at: float
    inject: Callable[[Bench], Awaitable[str]]
    results: list[Result] = field(default_factory=list)
    injected: float = 0.0
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


class LogWatch:
    """serve's output, followed in a thread: when each interesting line appeared."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offset = 0
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                with self.path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                cut = chunk.rfind(b"\n") + 1
                offset += cut
                now = time.monotonic()
                for line in chunk[:cut].decode(errors="replace").splitlines():
                    self.lines.append((now, line))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()

    def since(self, moment: float, pattern: str) -> list[tuple[float, str]]:
        return [(t, line) for t, line in list(self.lines) if t >= moment and re.search(pattern, line)]

    def workers(self) -> list[int]:
        """The pids of the workers that said they listen and are still alive."""
        pids = [int(m.group(1)) for _, line in list(self.lines) if (m := READY_LINE.search(line))]
        return [pid for pid in pids if Path(f"/proc/{pid}").exists() and _not_zombie(pid)]


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work_dir).resolve()
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log: LogWatch | None = None
        self.users: list[tuple[str, str, str, bytes]] = []  # (district, kind, token, body)
        self.phase: Phase | None = None
        self.stop_load = asyncio.Event()
        self.hostile_closed: list[float] = []

    # ------------------------------------------------------------ the server

    @property
    def pgdata(self) -> Path:
        return self.work / "pgdata"

    def postmaster(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def owner_url(self) -> str:
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        socket_dir = lines[4].strip()
        from urllib.parse import urlencode

        return f"postgresql://postgres@/pledgeql?{urlencode({'host': socket_dir})}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEQL_")}
        env["PLEDGEQL_DATA_DIR"] = str(self.work)
        # Every user's budget far above this load: rate limiting is not a fault under test.
        env["PLEDGEQL_RATE_LIMIT_PER_MINUTE"] = env["PLEDGEQL_RATE_LIMIT_BURST"] = "1000000"
        return env

    def start(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        log_path = self.work / "serve.log"
        with log_path.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "server.commands.cli",
                    "serve",
                    "--demo",
                    "--workers",
                    str(self.args.workers),
                    "--port",
                    str(self.port),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=ROOT,
                start_new_session=True,
            )
        self.log = LogWatch(log_path)
        deadline = time.monotonic() + 300
        while len(self.log.workers()) < self.args.workers:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            status = self.process.wait()
        if self.log is not None:
            self.log.stop()
        return status

    async def prepare_users(self) -> None:
        settings = Settings(data_dir=self.work)
        conn = await connect(self.owner_url())
        try:
            teachers = await conn.fetch(
                "SELECT DISTINCT ON (ct.teacher_id) ct.teacher_id, ct.class_id, d.name FROM class_teachers ct "
                "JOIN districts d ON d.id = ct.district_id ORDER BY ct.teacher_id, ct.class_id"
            )
            students = await conn.fetch(
                """
                SELECT DISTINCT ON (u.id) u.id, d.name, a.id AS assignment_id, i.id AS item_id,
                       i.choices[1] AS answer
                FROM users u JOIN districts d ON d.id = u.district_id
                JOIN enrollments e ON e.district_id = u.district_id AND e.student_id = u.id
                JOIN assignments a ON a.district_id = e.district_id AND a.class_id = e.class_id
                JOIN items i ON i.assessment_id = a.assessment_id
                WHERE u.role = 'STUDENT' AND NOT u.disabled
                ORDER BY u.id, a.id, i.position
                """
            )
        finally:
            await conn.close()
        by_district: dict[str, list[Any]] = collections.defaultdict(list)
        for row in teachers:
            by_district[row["name"].split()[0]].append(row)
        chosen = _alternate(by_district, self.args.teachers)
        purposes = ["INSTRUCTION", "STUDENT_LEARNING"]
        for row in chosen:
            token = mint_token(settings, row["teacher_id"], purposes, 4 * 3600)
            body = orjson.dumps({"query": CLASS_VIEW, "variables": {"id": str(row["class_id"])}})
            self.users.append((row["name"].split()[0], "class view", token, body))
        by_district = collections.defaultdict(list)
        for row in students:
            by_district[row["name"].split()[0]].append(row)
        for row in _alternate(by_district, self.args.students):
            token = mint_token(settings, row["id"], purposes, 4 * 3600)
            variables = {
                "input": {
                    "itemId": str(row["item_id"]),
                    "assignmentId": str(row["assignment_id"]),
                    "answer": row["answer"],
                    "timeSpentSeconds": 30,
                }
            }
            self.users.append(
                (row["name"].split()[0], "submission", token, orjson.dumps({"query": SUBMIT, "variables": variables}))
            )

    # ------------------------------------------------------------ the load

    async def user(self, district: str, kind: str, token: str, body: bytes) -> None:
        purpose = "INSTRUCTION" if kind == "class view" else "STUDENT_LEARNING"
        headers = {"Authorization": f"Bearer {token}", "X-Purpose": purpose, "Content-Type": "application/json"}
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=self.base, timeout=60, limits=limits) as client:
            while not self.stop_load.is_set():
                phase = self.phase
                started = time.monotonic()
                result = Result(started, started, district, kind, 0)
                try:
                    response = await client.post("/graphql", content=body, headers=headers)
                except CONNECTION_ERRORS as error:
                    result.codes = f"conn:{type(error).__name__}"
                    await asyncio.sleep(0.05)
                else:
                    result.status = response.status_code
                    result.request_id = response.headers.get("x-request-id", "")
                    try:
                        parsed = orjson.loads(response.content)
                    except orjson.JSONDecodeError:
                        parsed = {}
                    errors = parsed.get("errors") or []
                    result.codes = ",".join(sorted({str((e.get("extensions") or {}).get("code")) for e in errors}))
                    data = parsed.get("data") or {}
                    if kind == "class view":
                        result.with_data = bool((data.get("class") or {}).get("students"))
                    else:
                        stored = (data.get("submitResponse") or {}).get("response") or {}
                        result.with_data = bool(stored)
                        result.response_id = str(stored.get("id") or "")
                    if response.status_code >= 500:
                        await asyncio.sleep(0.05)
                result.ended = time.monotonic()
                if phase is not None:
                    phase.results.append(result)

    # ------------------------------------------------------------ checks

    async def audit_gaps(self, results: list[Result]) -> tuple[int, int]:
        """200s with data whose request has no audit entry; submissions answered 200 but not stored."""
        ids = [r.request_id for r in results if r.with_data]
        responses = [uuid.UUID(r.response_id) for r in results if r.response_id]
        conn = await connect(self.owner_url())
        try:
            found = {
                row["request_id"]
                for row in await conn.fetch(
                    "SELECT DISTINCT request_id FROM audit_entries WHERE request_id = ANY($1::text[])", ids
                )
            }
            stored = await conn.fetchval("SELECT count(*) FROM responses WHERE id = ANY($1::uuid[])", responses)
        finally:
            await conn.close()
        return sum(1 for i in ids if i not in found), len(responses) - int(stored)

    def audit_verify(self) -> str:
        env = self.env() | {"PLEDGEQL_DATABASE_URL": self.owner_url()}
        done = subprocess.run(
            [sys.executable, "-m", "server.commands.cli", "audit", "verify"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return "passes" if done.returncode == 0 else f"FAILS: {(done.stdout + done.stderr).strip()[-200:]}"

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base, timeout=5) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)


def _alternate(by_district: dict[str, list[Any]], count: int) -> list[Any]:
    """``count`` rows taken from each district in turn (the same user again once a district's run out)."""
    order = sorted(d for d in by_district if by_district[d])
    return (
        [
            by_district[order[n % len(order)]][(n // len(order)) % len(by_district[order[n % len(order)]])]
            for n in range(count)
        ]
        if order
        else []
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ------------------------------------------------------------ the faults


async def no_fault(bench: Bench) -> str:
    return "none"


async def kill_worker(bench: Bench) -> str:
    assert bench.log is not None
    victim = bench.log.workers()[0]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    for _ in range(400):
        ready = bench.log.since(killed, r"Worker \[\d+\] ready")
        if ready:
            return f"worker {victim} killed; its replacement listened {ready[0][0] - killed:.2f} s later"
        await asyncio.sleep(0.025)
    return f"worker {victim} killed; no replacement within 10 s"


async def rolling_restart(bench: Bench) -> str:
    assert bench.process is not None and bench.log is not None
    sent = time.monotonic()
    bench.process.send_signal(signal.SIGHUP)
    for _ in range(1200):
        done = bench.log.since(sent, "Rolling restart done")
        if done:
            return f"SIGHUP; every worker replaced in {done[0][0] - sent:.2f} s"
        await asyncio.sleep(0.05)
    return "SIGHUP; the rolling restart did not finish within 60 s"


async def _postmaster_signal(bench: Bench, number: signal.Signals) -> str:
    assert bench.log is not None
    pid = bench.postmaster()
    os.kill(pid, number)
    sent = time.monotonic()
    for _ in range(1200):
        restarted = bench.log.since(sent, "embedded PostgreSQL restarted")
        if restarted:
            return f"postmaster {pid} sent {number.name}; serve restarted it {restarted[0][0] - sent:.2f} s later"
        await asyncio.sleep(0.05)
    return f"postmaster {pid} sent {number.name}; no restart logged within 60 s"


async def kill_postmaster(bench: Bench) -> str:
    return await _postmaster_signal(bench, signal.SIGKILL)


async def immediate_stop(bench: Bench) -> str:
    return await _postmaster_signal(bench, signal.SIGQUIT)


async def revoke_audit_insert(bench: Bench) -> str:
    seconds = 3 if bench.args.quick else 5
    conn = await connect(bench.owner_url())
    try:
        await conn.execute("REVOKE INSERT ON audit_records FROM pledgeql_app")
        await asyncio.sleep(seconds)
        await conn.execute("GRANT INSERT ON audit_records TO pledgeql_app")
    finally:
        await conn.close()
    return f"INSERT on audit_entries revoked for {seconds} s, then granted back"


async def hold_chain_lock(bench: Bench) -> str:
    seconds = 8 if bench.args.quick else 35
    conn = await connect(bench.owner_url())
    try:
        northwind = await conn.fetchval("SELECT id FROM districts WHERE name LIKE 'Northwind%'")
        await conn.execute("SELECT pg_advisory_lock(pledgeql_audit_lock_key($1))", northwind)
        await asyncio.sleep(seconds)
        await conn.execute("SELECT pg_advisory_unlock(pledgeql_audit_lock_key($1))", northwind)
    finally:
        await conn.close()
    return f"Northwind's audit chain lock held {seconds} s"


async def hostile_connections(bench: Bench) -> str:
    count = 200 if bench.args.quick else 1000
    hold = 12.0 if bench.args.quick else 25.0
    closed: list[float] = []
    opened = time.monotonic()

    async def slowloris() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", bench.port)
        except OSError:
            closed.append(0.0)
            return
        began = time.monotonic()
        try:
            writer.write(b"POST /graphql HTTP/1.1\r\nHost: x\r\nX-A: ")
            while time.monotonic() - began < hold:
                try:
                    await asyncio.wait_for(reader.read(1024), timeout=1.0)
                except TimeoutError:
                    writer.write(b"a")  # one more header byte a second
                    await writer.drain()
                    continue
                closed.append(time.monotonic() - began)  # a 408, or the end of the connection
                return
        except OSError:
            closed.append(time.monotonic() - began)
        finally:
            writer.close()

    await asyncio.gather(*(slowloris() for _ in range(count)))
    took = sorted(closed)
    median = took[len(took) // 2] if took else float("nan")
    longest = took[-1] if took else float("nan")
    return (
        f"{count} slowloris connections (a header byte a second), all open within "
        f"{time.monotonic() - opened - longest:.1f} s or so; {len(closed)} closed by the server, after "
        f"{median:.1f} s (median) and at most {longest:.1f} s (the header timeout being 10 s)"
    )


def phases(quick: bool) -> list[Phase]:
    q = quick
    return [
        Phase("steady load", 8 if q else 30, 0, no_fault),
        Phase("worker kill -9", 10 if q else 30, 3 if q else 10, kill_worker),
        Phase("rolling restart (SIGHUP)", 12 if q else 40, 3 if q else 10, rolling_restart),
        Phase("postmaster kill -9", 15 if q else 40, 3 if q else 10, kill_postmaster),
        Phase("immediate stop and restart", 15 if q else 40, 3 if q else 10, immediate_stop),
        Phase("audit INSERT revoked", 10 if q else 30, 3 if q else 10, revoke_audit_insert),
        Phase("chain lock held", 14 if q else 55, 3 if q else 10, hold_chain_lock),
        Phase("hostile connections", 16 if q else 40, 2 if q else 5, hostile_connections),
    ]


# ------------------------------------------------------------ the run


async def run_phase(bench: Bench, phase: Phase) -> None:
    await bench.wait_ready()
    began = time.monotonic()
    bench.phase = phase
    await asyncio.sleep(phase.inject_at)
    phase.injected = time.monotonic()
    note = await phase.inject(bench)
    phase.notes.append(note)
    left = phase.duration - (time.monotonic() - began)
    if left > 0:
        await asyncio.sleep(left)
    bench.phase = None
    await asyncio.sleep(0.5)  # the requests in flight land in this phase
    await summarise(bench, phase)


async def summarise(bench: Bench, phase: Phase) -> None:
    results = phase.results
    failures = [r for r in results if r.status != 200 or r.codes]
    by_code: collections.Counter[str] = collections.Counter()
    for r in failures:
        by_code[f"{r.status or ''} {r.codes}".strip()] += 1
    last_failure = max((r.ended for r in failures), default=None)
    recovered = 0.0 if last_failure is None else max(0.0, last_failure - phase.injected)
    missing, unstored = await bench.audit_gaps(results)
    by_district: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in results:
        by_district[r.district]["requests"] += 1
        if r.status != 200 or r.codes:
            by_district[r.district]["failed"] += 1
    phase.summary = {
        "full_throughput": full_throughput(phase),
        "requests": len(results),
        "with_data": sum(1 for r in results if r.with_data),
        "missing_audit": missing,
        "unstored": unstored,
        "failures": dict(by_code),
        "fivexx": sum(1 for r in failures if r.status >= 500),
        "five_hundreds": sum(1 for r in failures if r.status == 500),
        "recovered": recovered,
        "districts": {d: dict(c) for d, c in by_district.items()},
        "verify": bench.audit_verify(),
    }
    print(f"\n## {phase.name}\n{render_phase(phase)}", flush=True)


def full_throughput(phase: Phase) -> float | None:
    """Seconds from the fault until a one-second window serves 90% of the rate before it (None: never)."""
    served = sorted(r.ended for r in phase.results if r.status == 200 and not r.codes)
    before = [t for t in served if t < phase.injected]
    if not before or phase.injected - before[0] < 1.0:
        return None
    rate = len(before) / (phase.injected - before[0])
    start = phase.injected
    end = served[-1] if served else start
    while start + 1.0 <= end:
        count = sum(1 for t in served if start <= t < start + 1.0)
        if count >= 0.9 * rate:
            return start - phase.injected
        start += 0.1
    return None


def render_phase(phase: Phase) -> str:
    s = phase.summary
    failures = ", ".join(f"{k}: {v}" for k, v in sorted(s["failures"].items())) or "none"
    districts = "; ".join(
        f"{d} {c.get('failed', 0)} failed of {c['requests']}" for d, c in sorted(s["districts"].items())
    )
    return "\n".join(
        [
            f"- fault: {'; '.join(phase.notes)}",
            f"- requests {s['requests']}, 200 with personal data {s['with_data']}, 200s without audit entries "
            f"{s['missing_audit']}, submissions answered 200 but not stored {s['unstored']}",
            f"- failures by status and code: {failures} (500s: {s['five_hundreds']})",
            f"- by district: {districts}",
            f"- seconds from the fault to the last failure: {s['recovered']:.2f}; to a second at 90% of the "
            f"throughput before it: {_seconds(s['full_throughput'])}",
            f"- audit verify: {s['verify']}",
        ]
    )


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def render_table(all_phases: list[Phase]) -> str:
    head = (
        "| fault | requests | 200 with data | 200 without entries | 5xx (500) | failures by code "
        "| s to recover | audit verify |\n|---|---:|---:|---:|---:|---|---:|---|"
    )
    rows = []
    for phase in all_phases:
        s = phase.summary
        failures = ", ".join(f"{k}: {v}" for k, v in sorted(s["failures"].items())) or "none"
        rows.append(
            f"| {phase.name} | {s['requests']} | {s['with_data']} | {s['missing_audit']} | "
            f"{s['fivexx']} ({s['five_hundreds']}) | {failures} | {s['recovered']:.2f} | {s['verify']} |"
        )
    return "\n".join([head, *rows])


async def main_async(args: argparse.Namespace) -> int:
    bench = Bench(args)
    print(f"Starting pledgeql serve --workers {args.workers} --demo under {bench.work} ...", flush=True)
    await asyncio.to_thread(bench.start)
    try:
        await bench.prepare_users()
        print(f"{len(bench.users)} virtual users on {bench.base}", flush=True)
        loads = [asyncio.create_task(bench.user(*u)) for u in bench.users]
        await asyncio.sleep(2)  # warm up
        done: list[Phase] = []
        for phase in phases(args.quick):
            if args.only and not any(word in phase.name for word in args.only.split(",")):
                continue
            await run_phase(bench, phase)
            done.append(phase)
        bench.stop_load.set()
        await asyncio.gather(*loads, return_exceptions=True)
    finally:
        status = await asyncio.to_thread(bench.stop)
    table = render_table(done)
    print(f"\n{table}\n\nserve exited with status {status}")
    if args.out:
        command = "python bench/faults.py " + " ".join(sys.argv[1:])
        text = [
            "# The fault suite (bench/faults.py)",
            "",
            "Written by `bench/faults.py --out` (the module's docstring says what each fault does and how each "
            "figure is counted). A failure is any response other than a 200 without errors, or no response "
            '(`conn:`). "s to recover" is from the fault to the last failure.',
            "",
            f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores: `{command}` "
            f"({args.workers} workers, {args.teachers} teachers' class views and {args.students} students' "
            "submissions, each a keep-alive connection sending one request after the other, no retries).",
            "",
            table,
            "",
        ]
        text += [f"### {p.name}\n{render_phase(p)}\n" for p in done]
        Path(args.out).write_text("\n".join(text))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases, fewer users and hostile connections")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--teachers", type=int, default=None, help="class-view users (24; 8 with --quick)")
    parser.add_argument("--students", type=int, default=None, help="submitting users (8; 4 with --quick)")
    parser.add_argument("--only", default="", help="comma-separated words: run only the phases whose name has one")
    parser.add_argument("--work-dir", default=str(ROOT / "bench" / ".work" / "faults"))
    parser.add_argument("--out", default=None, help="also write the results to this Markdown file")
    args = parser.parse_args(argv)
    args.teachers = args.teachers or (8 if args.quick else 24)
    args.students = args.students or (4 if args.quick else 8)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
