"""CPU per request of this checkout against a baseline commit: in process, the builds alternating.

    .venv/bin/python bench/run.py --reuse ...     # builds the bench database first
    .venv/bin/python bench/compare_cpu.py --baseline c6b24fa [--rounds 6] [--requests 300]
                                          [--operations S1,TeacherHome] [--out bench/COMPARE_CPU.md]

Throughput over HTTP on a shared two-core machine moves by several percent
between runs of the same code, more than a refactoring's difference. Here each
build serves the operations (S1, the small read, the denied S1 and every shared
query; S2's submissions when named, on their own, since they change what the
reads answer) in a process of its own, through httpx's ASGI transport, one
request at a time after a warm-up, and that process's CPU time per request is
taken (the client's share is in both builds' figures alike). The builds
alternate for ``--rounds`` rounds, each round's first build the other one's
last; the median and the minimum over the rounds are compared. The baseline is
checked out as ``bench/run.py --baseline`` does (same migrations, same
database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "c6b24fa"


# ------------------------------------------------------------------ the child


class Request:
    """One operation's requests (its calls in turn, each as its user under a token of the
    operation's purpose), and every (status, size, errors or not) they were answered with.
    ``errors_expected`` True: an answer without GraphQL errors is refused (the denied S1);
    False: an answer with errors is refused (S1, the small read, S2); None: either is taken
    (a shared query may be denied a field by the policy, as MyChildren is), and the table
    compares the two builds' answers."""

    def __init__(self, client: Any, settings: Any, operation: dict[str, Any]) -> None:
        import uuid

        from server.auth import mint_token

        self.client = client
        self.name: str = operation["name"]
        self.errors_expected: bool | None = operation["errors_expected"]
        purpose = operation["purpose"]
        self.calls = [
            (
                call["body"],
                {
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {mint_token(settings, uuid.UUID(call['user']), [purpose], 3600)}",
                    "X-Purpose": purpose,
                },
            )
            for call in operation["calls"]
        ]
        self.sent = 0
        self.answers: set[tuple[int, int, bool]] = set()

    async def once(self) -> float:
        body, headers = self.calls[self.sent % len(self.calls)]
        self.sent += 1
        started = time.perf_counter()
        response = await self.client.post("/graphql", content=body, headers=headers)
        elapsed = time.perf_counter() - started
        # "errors": with its quotes unescaped is the response's own key (no document here
        # aliases a field "errors"; inside a string value the quotes would be escaped).
        errors = b'"errors":' in response.content
        if self.errors_expected is not None and errors != self.errors_expected:
            raise SystemExit(f"{self.name}: {'no' if self.errors_expected else 'an'} error in the answer")
        self.answers.add((response.status_code, len(response.content), errors))
        return elapsed


async def serve(tree: Path, plan: dict[str, Any], requests: int, warmup: int, seconds: float) -> None:
    """Serve each operation of ``plan`` with the app of ``tree``; one JSON line per operation."""
    import dataclasses
    import secrets

    import httpx

    import server
    from server.app import create_app
    from server.db import DatabaseUrls
    from server.settings import Settings

    served_from = Path(server.__file__).resolve().parent.parent
    if served_from != tree.resolve():
        raise SystemExit(f"the app was imported from {served_from}, not {tree}")
    settings = dataclasses.replace(
        Settings.from_env(),
        env="development",
        jwt_secret=secrets.token_urlsafe(32),
        data_dir=Path(plan["data_dir"]),
        rate_limit_per_minute=1_000_000_000,
        rate_limit_burst=1_000_000_000,
    )
    app = create_app(settings, DatabaseUrls(owner=plan["owner"], app=plan["app"]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            requests_of = [Request(client, settings, operation) for operation in plan["operations"]]
            # Every operation warmed up first, then each measured: the first one measured
            # would otherwise pay for the process's own warm-up (pool, caches, plans).
            # Up to ``warmup`` and ``requests`` requests, within ``seconds`` of wall time each:
            # the reports' aggregates take PostgreSQL a second or more.
            for request in requests_of:
                stop = time.perf_counter() + seconds
                for _ in range(warmup):
                    if time.perf_counter() > stop:
                        break
                    await request.once()
            for request in requests_of:
                wall: list[float] = []
                stop = time.perf_counter() + seconds
                cpu_started = time.process_time()
                while len(wall) < requests and (len(wall) < 3 or time.perf_counter() < stop):
                    wall.append(await request.once())
                cpu = (time.process_time() - cpu_started) / len(wall)
                statuses = sorted({status for status, _, _ in request.answers})
                if statuses != [200]:
                    raise SystemExit(f"{request.name}: answered with HTTP {statuses}")
                sizes = sorted({size for _, size, _ in request.answers})
                line = {
                    "operation": request.name,
                    "cpu_ms": cpu * 1000,
                    "p50_ms": statistics.median(wall) * 1000,
                    "requests": len(wall),
                    "statuses": statuses,
                    "bytes": [sizes[0], sizes[-1]],
                    "errors": sorted({errors for _, _, errors in request.answers}),
                }
                print(json.dumps(line), flush=True)


# ----------------------------------------------------------------- the parent


def prepare_plan(args: argparse.Namespace) -> dict[str, Any]:
    """The bench database's URLs and the operations' request bodies, from this checkout's bench
    (``main`` put this checkout first on the path)."""
    from bench import corpus, scenarios
    from bench.run import Options, database_urls

    options = Options(database=args.database, work_dir=args.work_dir.resolve())
    urls = database_urls(options)

    async def operations() -> tuple[Any, list[Any]]:
        subjects = await scenarios.prepare_subjects(urls.owner)
        ids = await corpus.prepare_ids(urls.owner, subjects)
        return subjects, [*corpus.baselines(subjects), corpus.denied(subjects), *corpus.operations(subjects, ids)]

    subjects, chosen = asyncio.run(operations())
    plan = [
        {
            "name": o.name,
            "purpose": o.purpose,
            "errors_expected": True if o.name == corpus.DENIED else False if o.name in ("S1", "Small") else None,
            "calls": [{"user": str(o.user_id), "body": json.dumps({"query": o.query, "variables": o.variables})}],
        }
        for o in chosen
    ]
    # S2, the student's submitResponse: each call a response of another student, in turn. It
    # writes, and its responses change the reports' and the submitting students' answers from
    # one run to the next, so it runs only when named (on its own: --operations S2).
    submits = scenarios.scenario_requests(subjects)["S2"]
    plan.insert(
        2,
        {
            "name": "S2",
            "purpose": submits[0].purpose,
            "errors_expected": False,
            "calls": [{"user": str(r.user_id), "body": r.body.decode()} for r in submits],
        },
    )
    wanted = [name.strip() for name in args.operations.split(",") if name.strip()]
    unknown = sorted(set(wanted) - {o["name"] for o in plan})
    if unknown:
        raise SystemExit(f"unknown operations: {', '.join(unknown)}")
    plan = [o for o in plan if o["name"] in wanted] if wanted else [o for o in plan if o["name"] != "S2"]
    return {"owner": urls.owner, "app": urls.app, "data_dir": str(options.work_dir / "server"), "operations": plan}


def run_child(tree: Path, plan_file: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(tree), str(plan_file)]
    command += ["--requests", str(args.requests), "--warmup", str(args.warmup), "--seconds", str(args.seconds)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    print(f"{tree}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    if done.returncode != 0:
        raise SystemExit(f"the build at {tree} failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def table(rows: dict[str, dict[str, list[dict[str, Any]]]], labels: tuple[str, str]) -> list[str]:
    this, baseline = labels
    out = [
        f"| operation | {this} CPU ms/req (median, min) | {baseline} CPU ms/req (median, min) "
        "| ratio of medians | ratio of minimums | p50 ms ratio | requests per round | answers alike |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    medians: list[float] = []
    minimums: list[float] = []
    for name, by_build in rows.items():
        ours, theirs = by_build[this], by_build[baseline]
        ours_cpu = [r["cpu_ms"] for r in ours]
        theirs_cpu = [r["cpu_ms"] for r in theirs]
        p50 = statistics.median(r["p50_ms"] for r in ours) / statistics.median(r["p50_ms"] for r in theirs)
        alike = {(tuple(r["statuses"]), tuple(r["bytes"]), tuple(r["errors"])) for r in ours} == {
            (tuple(r["statuses"]), tuple(r["bytes"]), tuple(r["errors"])) for r in theirs
        }
        medians.append(statistics.median(ours_cpu) / statistics.median(theirs_cpu))
        minimums.append(min(ours_cpu) / min(theirs_cpu))
        out.append(
            f"| {name} | {statistics.median(ours_cpu):.3f}, {min(ours_cpu):.3f} "
            f"| {statistics.median(theirs_cpu):.3f}, {min(theirs_cpu):.3f} "
            f"| {statistics.median(ours_cpu) / statistics.median(theirs_cpu):.3f} "
            f"| {min(ours_cpu) / min(theirs_cpu):.3f} | {p50:.3f} "
            f"| {min(r['requests'] for r in ours + theirs)}-{max(r['requests'] for r in ours + theirs)} "
            f"| {'yes' if alike else 'NO'} |"
        )
    if medians:
        out.append(
            f"| geometric mean of the ratios | | | {statistics.geometric_mean(medians):.3f} "
            f"| {statistics.geometric_mean(minimums):.3f} | | | |"
        )
    return out


def compare(args: argparse.Namespace) -> int:
    from bench.run import Options, baseline_tree

    plan = prepare_plan(args)
    if args.baseline_tree is not None:
        commit, tree = args.baseline_tree.name, args.baseline_tree.resolve()
    else:
        commit, tree = baseline_tree(Options(database=args.database, work_dir=args.work_dir.resolve()), args.baseline)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    labels = (f"this checkout ({head})", f"baseline ({commit})")
    plan_file = args.work_dir.resolve() / "compare_cpu_plan.json"
    plan_file.write_text(json.dumps(plan))
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for round_number in range(1, args.rounds + 1):
        builds = list(zip(labels, (ROOT, tree), strict=True))
        # Which build goes first alternates too.
        for label, build in builds if round_number % 2 else builds[::-1]:
            for line in run_child(build, plan_file, args):
                rows.setdefault(line["operation"], {labels[0]: [], labels[1]: []})[label].append(line)
        print(f"round {round_number} of {args.rounds} done", file=sys.stderr, flush=True)
    lines = [
        "# CPU per request: this checkout against a baseline",
        "",
        f"Written by `bench/compare_cpu.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"`nproc` = {os.cpu_count()}; {args.rounds} alternating rounds, {args.requests} requests "
        f"per operation and round after {args.warmup} warm-up requests (each within {args.seconds:g} s, "
        "at least 3), one at a time, in process "
        "(httpx's ASGI transport); CPU of the serving process (app, client and asyncpg's side).",
        "",
        *table(rows, labels),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="a git revision with the same migrations")
    parser.add_argument(
        "--baseline-tree", type=Path, default=None, help="a checkout to compare against instead (its migrations alike)"
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=3.0, help="wall-time cap of each operation's warm-up and run")
    parser.add_argument(
        "--operations", default="", help="comma-separated operation names (default every read; S2 only when named)"
    )
    parser.add_argument("--database", default="pledgeql_bench")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "bench" / ".work")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("TREE", "PLAN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        tree, plan_file = (Path(p) for p in args.child)
        asyncio.run(serve(tree, json.loads(plan_file.read_text()), args.requests, args.warmup, args.seconds))
        return 0
    sys.path.insert(0, str(ROOT))
    return compare(args)


if __name__ == "__main__":
    raise SystemExit(main())
