"""What the hardening costs per request: SQLAlchemy's pool pre-ping, and OpenTelemetry.

Starts a throwaway embedded PostgreSQL with the demo data, then times the same
roster query (teacher1's students with names: 30 rows, one audit write)
sequentially, over ASGI in process, under four configurations. Run:

    .venv/bin/python bench/hardening_overhead.py [REQUESTS]
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server.app import create_app
from server.auth import mint_token
from server.commands.migrate import migrate
from server.commands.seed import seed_demo
from server.db import connect, ensure_database, server_urls, stop_embedded
from server.settings import Settings
from server.telemetry import Telemetry

QUERY = "{ students(first: 30) { nodes { firstName lastName email } } }"


async def run(requests: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pledgeql-bench-"))
    try:
        settings = dataclasses.replace(
            Settings(), data_dir=folder, jwt_secret="bench-secret-0123456789-0123456789-0123", env="test"
        )
        settings = dataclasses.replace(settings, rate_limit_per_minute=10**9, rate_limit_burst=10**9)
        urls = server_urls(settings)
        await ensure_database(urls)
        await migrate(urls)
        await seed_demo(urls.owner)
        conn = await connect(urls.owner)
        teacher = await conn.fetchval("SELECT id FROM users WHERE username = 'teacher1@northwind.example'")
        await conn.close()
        token = mint_token(settings, teacher, ["INSTRUCTION"])
        headers = {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION"}

        def traced() -> Telemetry:
            provider = TracerProvider()
            provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
            return Telemetry(provider, MeterProvider(metric_readers=[InMemoryMetricReader()]))

        configurations = [
            ("baseline (no pre-ping, no telemetry)", settings, None),
            ("pool_pre_ping=True", dataclasses.replace(settings, db_pool_pre_ping=True), None),
            ("telemetry on (SDK, batch processor)", settings, traced),
        ]
        # The configurations take turns, in rounds, so that load from elsewhere on
        # the machine falls on all of them alike.
        async with contextlib.AsyncExitStack() as stack:
            clients = []
            for _label, config, telemetry in configurations:
                app = create_app(config, urls, telemetry=telemetry() if telemetry else None)
                await stack.enter_async_context(app.router.lifespan_context(app))
                client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
                clients.append(await stack.enter_async_context(client))
            timings: list[list[float]] = [[] for _ in configurations]
            for client in clients:
                for _ in range(50):  # warm the caches and the pool
                    await client.post("/graphql", json={"query": QUERY}, headers=headers)
            for _round in range(10):
                for index, client in enumerate(clients):
                    for _ in range(requests // 10):
                        started = time.perf_counter()
                        response = await client.post("/graphql", json={"query": QUERY}, headers=headers)
                        timings[index].append(time.perf_counter() - started)
                        if response.status_code != 200:
                            raise SystemExit(f"{response.status_code} {response.text[:200]}")
        for (label, _config, _telemetry), values in zip(configurations, timings, strict=True):
            values.sort()
            print(
                f"{label:40s} median {statistics.median(values) * 1000:6.2f} ms  "
                f"mean {statistics.fmean(values) * 1000:6.2f} ms  p90 {values[int(len(values) * 0.9)] * 1000:6.2f} ms"
            )
    finally:
        stop_embedded()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 500))
