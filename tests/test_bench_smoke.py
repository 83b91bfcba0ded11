"""The benchmark harness, CI-sized: it must keep running end to end, so it cannot rot.

No timing is asserted: only that bench/run.py builds its database, serves
every system, drives every scenario and writes its table; and that the
benchmark-only unenforced build is what it says it is (and leaves the
production schema enforcing).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from strawberry.permission import PermissionExtension

from bench.corpus import fit, operations_folder, shared_queries, speed
from bench.run import POSTGRAPHILE_DIR, postgraphile_missing
from bench.unenforced_app import _definitions, build_unenforced_schema, create_unenforced_app
from schema.classified import category_of
from schema.mutation import Mutation
from schema.query import Query
from server.db import DatabaseUrls, connect
from server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("S1", "S2", "S3", "S4", "S5")
SMOKE_DATABASE = "t_bench_smoke"


def _table(text: str) -> list[list[str]]:
    """The rows of the results table (the corpus has a table of its own), as cells."""
    rows = []
    for line in text.split("## Corpus")[0].splitlines():
        if line.startswith("| ") and not line.startswith("| system"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


async def test_the_harness_runs_end_to_end_and_writes_a_table_with_every_scenario(server: DatabaseUrls) -> None:
    work = Path(tempfile.mkdtemp(prefix="pledgeql-bench-smoke-"))
    out = work / "RESULTS.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEQL_")}
    env["PLEDGEQL_DATABASE_URL"] = server.owner  # the test session's PostgreSQL: no second server to start
    command = [
        str(ROOT / "bench" / "run.py"),
        "--quick",
        "--database",
        SMOKE_DATABASE,
        "--duration",
        "1",
        "--warmup",
        "0",
        "--concurrency",
        "2",
        "--work-dir",
        str(work),
        "--out",
        str(out),
    ]
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=600)
        assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
        text = out.read_text()
        # The CPU comparison against a baseline, on the same database: this checkout against itself.
        compare_out = work / "COMPARE_CPU.md"
        compare = [str(ROOT / "bench" / "compare_cpu.py"), "--baseline-tree", str(ROOT), "--database", SMOKE_DATABASE]
        compare += ["--rounds", "1", "--requests", "2", "--warmup", "1", "--seconds", "0.2"]
        compare += ["--work-dir", str(work), "--out", str(compare_out)]
        process = await asyncio.create_subprocess_exec(
            sys.executable, *compare, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=600)
        assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
        compared = compare_out.read_text()
        # S2 writes, so it runs only when named.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *compare,
            "--operations",
            "S2",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=600)
        assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
        compared_s2 = compare_out.read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        admin = await connect(server.with_database("postgres").owner)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{SMOKE_DATABASE}" WITH (FORCE)')
        finally:
            await admin.close()

    assert "`nproc` = " in text
    assert "## Ratios" in text
    rows = _table(text)
    systems = {(row[0], row[1].split(" ")[0]) for row in rows}
    for scenario in SCENARIOS:
        assert ("pledgeql", scenario) in systems, f"no pledgeql {scenario} row"
    assert ("pledgeql unenforced", "S1") in systems
    assert ("limit (asyncpg+orjson)", "S1") in systems
    if postgraphile_missing() is None:
        assert ("PostGraphile 4", "S1") in systems
    else:
        assert "PostGraphile: " in text
    # A scenario may be "not available" (NOT_IMPLEMENTED), or finish no request
    # within a one-second run on a busy machine; but no request may fail.
    for row in rows:
        failed, note = row[7], row[-1]
        assert failed in ("0", "-") and not note.startswith("failed"), row
    # The corpus (issue 13): a row per shared query between the baselines, and the done-when rows.
    corpus = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.split("## Corpus")[1].splitlines()
        if line.startswith("| ") and not line.startswith("| operation")
    ]
    measured = {(row[0], row[3]) for row in corpus}
    for _, name, _, _ in shared_queries(operations_folder()):
        assert (name, "pledgeql") in measured, f"no corpus row for {name}"
    assert [row[-1] for row in corpus if row[0] == "S1" and row[3] == "pledgeql"] == [
        "baseline (start)",
        "baseline (end)",
    ]
    assert {row[4] for row in corpus if row[0] in ("S1", "Small") and row[3] == "pledgeql"} == {"compiled"}
    # The section's list: the paragraph after its heading (later sections have lists of their own).
    done = "\n" + text.split("### Done when (issue 13)")[1].strip().split("\n\n")[0]
    assert done.count("\n- ") == 7 and "Every shared query has speed >= 0.7" in done

    # Every shared query compared (each child refuses an answer that is not HTTP 200), and the mean.
    compared_rows = {line.split("|")[1].strip() for line in compared.splitlines() if line.startswith("| ")}
    for _, name, _, _ in shared_queries(operations_folder()):
        assert name in compared_rows, f"no comparison row for {name}"
    assert {"S1", "Small", "geometric mean of the ratios"} <= compared_rows and "S2" not in compared_rows
    rows_s2 = {line.split("|")[1].strip() for line in compared_s2.splitlines() if line.startswith("| ")}
    assert rows_s2 == {"operation", "S2", "geometric mean of the ratios"}


def test_the_speed_line_is_fitted_to_the_baselines_and_is_one_on_them() -> None:
    # 100 req/s at 10,000 bytes and 400 req/s at 1,000: 10 ms and 2.5 ms a request.
    line = fit([(100.0, 10_000.0), (400.0, 1_000.0)])
    assert line is not None
    a, b = line
    assert abs(b - 7.5e-3 / 9_000) < 1e-12 and abs(a + b * 1_000 - 2.5e-3) < 1e-12
    assert abs(speed(100.0, 10_000, line) - 1.0) < 1e-9 and abs(speed(400.0, 1_000, line) - 1.0) < 1e-9
    assert abs(speed(50.0, 10_000, line) - 0.5) < 1e-9  # half as fast as the compiled path at that size
    assert fit([(100.0, 10_000.0), (120.0, 10_000.0)]) is None  # one size: no line


def test_the_corpus_is_every_named_query_of_the_shared_operations_with_its_purpose() -> None:
    queries = {name: (source, purpose) for source, name, purpose, _ in shared_queries(operations_folder())}
    assert queries["ClassRoster"] == ("teacher-app/class.graphql", "INSTRUCTION")
    assert queries["PlatformSkills"][1] == "PRODUCT_ANALYTICS"
    assert "SubmitAnswer" not in queries and "LiveClass" not in queries  # a mutation, a subscription
    assert len(queries) == 20


def test_postgraphile_is_pinned_to_version_4() -> None:
    package = (POSTGRAPHILE_DIR / "package.json").read_text()
    assert re.search(r'"postgraphile": "4\.\d+\.\d+"', package)


async def _post(app: Any, token: str, query: str, variables: dict[str, Any], request_id: str) -> dict[str, Any]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench.test") as client:
            response = await client.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION", "X-Request-Id": request_id},
            )
    body: dict[str, Any] = response.json()
    return body


GENDER = "query Gender($id: ID!) { student(id: $id) { firstName gender } }"


async def test_the_unenforced_build_resolves_denied_fields_and_writes_no_audit_while_production_still_denies(
    settings: Settings,
    db: DatabaseUrls,
    users: dict[str, uuid.UUID],
    token_for: Callable[..., str],
    owner: Any,
    gql: Callable[..., Any],
) -> None:
    student = str(users["student1@northwind.example"])
    token = token_for("teacher1@northwind.example", ["INSTRUCTION"])
    request_id = "bench-unenforced-" + uuid.uuid4().hex

    unenforced = await _post(create_unenforced_app(settings, db), token, GENDER, {"id": student}, request_id)

    assert "errors" not in unenforced
    assert unenforced["data"]["student"]["gender"] is not None
    written = await owner.fetchval("SELECT count(*) FROM audit_entries WHERE client_request_id = $1", request_id)
    assert written == 0

    # The production app of this process, built before and used after: it still
    # denies DEMOGRAPHIC to a teacher under INSTRUCTION, and audits the read.
    enforced_id = "bench-enforced-" + uuid.uuid4().hex
    enforced = await gql(
        "teacher1@northwind.example",
        "INSTRUCTION",
        GENDER,
        {"id": student},
        headers={"X-Request-Id": enforced_id},
    )
    assert enforced["data"]["student"]["gender"] is None
    assert [e["extensions"]["code"] for e in enforced["errors"]] == ["FORBIDDEN"]
    assert enforced["data"]["student"]["firstName"] == unenforced["data"]["student"]["firstName"]
    audited = await owner.fetchval("SELECT count(*) FROM audit_entries WHERE client_request_id = $1", enforced_id)
    assert audited > 0


def test_building_the_unenforced_schema_puts_every_permission_extension_back() -> None:
    classified = [
        field
        for root in (Query, Mutation)
        for definition in _definitions(root)
        for field in definition.fields
        if category_of(field) is not None
    ]
    assert classified

    build_unenforced_schema()

    for field in classified:
        assert any(isinstance(e, PermissionExtension) for e in field.extensions), field.name
