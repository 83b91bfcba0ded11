"""Benchmark (not a test): a district's performanceReport grouped by SCHOOL x GRADE_LEVEL.

Seeds the demo data set scaled up (``--students``, 30 responses each, split
over two districts) into its own database of its own embedded server, then
runs the report as Northwind's district admin N times in-process over ASGI
(httpx -> Starlette -> GraphQL -> SQL -> suppression -> audit write -> JSON)
and prints the median. The default 68,000 students give Northwind
1,020,000 responses. Seeding takes several minutes the first time; later
runs reuse the database while the migrations and the size are the same
(``--reseed`` builds it again anyway).

    .venv/bin/python bench/report_bench.py [--students 68000] [--runs 21]
    .venv/bin/python bench/report_bench.py --as-analyst [--withhold PRODUCT_ANALYTICS]

The cost of joint suppression (resolvers/suppression.py ``suppress_jointly``),
measured on 2 shared cores, default 68,000 students, ``--group-by
GRADE_LEVEL,GENDER --runs 11``: the analyst's REPORTING report with both
purposes in every district (one universe) median 299 ms; with Riverside
withholding PRODUCT_ANALYTICS (the report and three more universes: the
other purpose's and the two differences) median 553 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from server.app import create_app
from server.auth import mint_token
from server.commands.migrate import migrate
from server.commands.seed import seed_demo
from server.db import connect, server_urls
from server.settings import Settings

DATABASE = "pledgeql_report_bench"
QUERY = """
query Bench($input: ReportInput!) {
  performanceReport(input: $input) {
    minimumGroupSize suppressedRows
    rows { group { dimension value } suppressed suppressionReason students responses meanScore percentCorrect }
    total { students responses meanScore percentCorrect }
  }
}"""


def fingerprint(students: int) -> str:
    """What built the database: the migrations' text and the seed's size."""
    digest = hashlib.sha256(str(students).encode())
    for path in sorted((Path(__file__).resolve().parent.parent / "migrations" / "versions").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


async def prepare(settings: Settings, students: int, reseed: bool) -> Any:
    server = server_urls(settings)
    urls = server.with_database(DATABASE)
    built_by = fingerprint(students)
    admin = await connect(server.with_database("postgres").owner)
    try:
        found = await admin.fetchrow(
            "SELECT shobj_description(oid, 'pg_database') AS built_by FROM pg_database WHERE datname = $1", DATABASE
        )
        exists = found is not None
        if found is not None and (reseed or found["built_by"] != built_by):
            # A database built by other migrations (or another size) would
            # measure something else: build it again.
            await admin.execute(f'DROP DATABASE "{DATABASE}" WITH (FORCE)')
            exists = False
    finally:
        await admin.close()
    await migrate(urls)
    if not exists:
        started = time.perf_counter()
        summary = await seed_demo(urls.owner, students=students)
        seconds = time.perf_counter() - started
        print(f"seeded {summary.students} students, {summary.responses} responses in {seconds:.0f} s")
        owner = await connect(urls.owner)
        try:
            await owner.execute("VACUUM ANALYZE")
            await owner.execute(f"COMMENT ON DATABASE \"{DATABASE}\" IS '{built_by}'")
        finally:
            await owner.close()
    return urls


async def run(args: argparse.Namespace) -> None:
    settings = dataclasses.replace(
        Settings.from_env(),
        env="test",
        data_dir=Path(args.data_dir),
        jwt_secret="report-bench-secret-not-for-production-0123456789",
        rate_limit_per_minute=1_000_000,
        rate_limit_burst=1_000_000,
    )
    urls = await prepare(settings, args.students, args.reseed)
    owner = await connect(urls.owner)
    try:
        admin_id, district_id = await owner.fetchrow(
            "SELECT id, district_id FROM users WHERE username = 'admin@northwind.example'"
        )
        responses = await owner.fetchval("SELECT count(*) FROM responses WHERE district_id = $1", district_id)
        schools = await owner.fetchval("SELECT count(*) FROM schools WHERE district_id = $1", district_id)
        # How busy the machine is: a fixed piece of PostgreSQL work, timed
        # just before the runs, so figures from a shared machine can be read.
        started = time.perf_counter()
        await owner.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")
        calibration = time.perf_counter() - started
    finally:
        await owner.close()
    print(f"Northwind: {responses} responses, {schools} schools")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"machine: load average {load} on {os.cpu_count()} cores; calibration count(3M) {calibration * 1000:.0f} ms")

    group_by = args.group_by.split(",") if args.group_by else []
    scope: dict[str, Any] = {"districtId": str(district_id)}
    caller = admin_id
    if args.as_teacher:
        # teacher1's first class: the class's slice of the district's tables.
        owner = await connect(urls.owner)
        try:
            caller, class_id = await owner.fetchrow(
                "SELECT u.id, ct.class_id FROM users u JOIN class_teachers ct ON ct.district_id = u.district_id "
                "AND ct.teacher_id = u.id WHERE u.username = 'teacher1@northwind.example' ORDER BY ct.class_id LIMIT 1"
            )
        finally:
            await owner.close()
        scope = {"classId": str(class_id)}
    purpose = "REPORTING"
    if args.as_analyst:
        # The platform analyst over all districts under --purpose; with
        # --withhold, Riverside stops authorizing that purpose, so the two
        # analyst purposes cover different districts and the report is
        # suppressed jointly with the other purpose's (resolvers/suppression.py).
        purpose = args.purpose
        owner = await connect(urls.owner)
        try:
            caller = await owner.fetchval("SELECT id FROM platform_users WHERE username = 'analyst@pledgeql.example'")
            # The database outlives a run: both purposes back first.
            await owner.execute(
                "UPDATE districts SET authorized_purposes = "
                "ARRAY(SELECT DISTINCT unnest(authorized_purposes || $1::text[])) "
                "WHERE NOT authorized_purposes @> $1::text[]",
                ["REPORTING", "PRODUCT_ANALYTICS"],
            )
            if args.withhold is not None:
                await owner.execute(
                    "UPDATE districts SET authorized_purposes = array_remove(authorized_purposes, $1) "
                    "WHERE name = 'Riverside Unified'",
                    args.withhold,
                )
        finally:
            await owner.close()
        scope = {"allDistricts": True}
    variables: dict[str, Any] = {"input": {"scope": scope, "groupBy": group_by}}
    if args.start:
        variables["input"]["from"] = args.start
    app = create_app(settings, urls)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench.test", timeout=120) as client:
            token = mint_token(settings, caller, [purpose], 3600)
            headers = {"Authorization": f"Bearer {token}", "X-Purpose": purpose}

            async def once() -> tuple[float, dict[str, Any]]:
                started = time.perf_counter()
                response = await client.post("/graphql", json={"query": QUERY, "variables": variables}, headers=headers)
                elapsed = time.perf_counter() - started
                body: dict[str, Any] = response.json()
                if response.status_code != 200 or "errors" in body:
                    raise SystemExit(f"the report failed: {response.status_code} {body.get('errors')}")
                return elapsed, body

            for _ in range(args.warmup):
                await once()
            times: list[float] = []
            body: dict[str, Any] = {}
            for _ in range(args.runs):
                elapsed, body = await once()
                times.append(elapsed * 1000)
    report = body["data"]["performanceReport"]
    times.sort()
    print(
        f"performanceReport {next(iter(scope))} x groupBy {group_by}: {len(report['rows'])} rows, "
        f"{report['suppressedRows']} suppressed, total {report['total']['students']} students / "
        f"{report['total']['responses']} responses"
    )
    print(
        f"{args.runs} runs: median {statistics.median(times):.1f} ms, min {times[0]:.1f} ms, "
        f"p90 {times[int(0.9 * (len(times) - 1))]:.1f} ms, max {times[-1]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=68_000, help="total over both districts (30 responses each)")
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--group-by", default="SCHOOL,GRADE_LEVEL")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / ".work" / "report-bench"))
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--as-teacher", action="store_true", help="teacher1's class report instead of the district's")
    parser.add_argument("--as-analyst", action="store_true", help="the analyst's report over all districts")
    parser.add_argument("--purpose", default="REPORTING", choices=["REPORTING", "PRODUCT_ANALYTICS"])
    parser.add_argument(
        "--withhold",
        choices=["REPORTING", "PRODUCT_ANALYTICS"],
        help="with --as-analyst: Riverside stops authorizing this purpose (two universes, joint suppression)",
    )
    parser.add_argument("--from", dest="start", help="a window's start (ISO 8601), to time a windowed report")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
