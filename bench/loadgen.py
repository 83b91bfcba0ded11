"""Fixed-concurrency HTTP load from a separate process: wrk, or an asyncio client.

One load is a ``LoadSpec``: a base URL, the calls (method, path, headers,
body, weight), a fixed number of connections, a warm-up and a counted run.
Calls with the same label form a group; the groups are interleaved by
weight into one schedule that every connection walks from its own offset,
and each group rotates through its calls (its users), so a mix keeps its
proportions at every moment.

Two engines run the same spec:

* ``wrk`` (Debian's package) with a generated Lua script: the warm-up is one
  wrk run whose figures are dropped, the counted run a second one. wrk takes
  whole seconds.
* this module run as a script (``python bench/loadgen.py SPEC.json``): an
  asyncio HTTP/1.1 keep-alive client, one coroutine per connection.

Either way a response counts as failed when its status is not 200 or its body
has a top-level GraphQL ``"errors"`` member; the latency percentiles cover
every counted request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MARKER = "BENCHJSON "


@dataclass(frozen=True)
class Call:
    label: str
    method: str
    path: str
    headers: dict[str, str]
    body: str = ""
    weight: int = 1


@dataclass(frozen=True)
class LoadSpec:
    base_url: str
    calls: list[Call]
    concurrency: int
    duration: float
    warmup: float
    threads: int = 2
    timeout: float = 60.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadSpec:
        raw = json.loads(text)
        raw["calls"] = [Call(**c) for c in raw["calls"]]
        return cls(**raw)


@dataclass
class LoadResult:
    engine: str
    requests: int
    seconds: float
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    socket_errors: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def groups(calls: list[Call]) -> tuple[list[list[int]], list[int]]:
    """The calls grouped by label (in order of first appearance) and each group's
    weight (its first call's)."""
    members: dict[str, list[int]] = {}
    weights: dict[str, int] = {}
    for i, c in enumerate(calls):
        members.setdefault(c.label, []).append(i)
        weights.setdefault(c.label, max(1, c.weight))
    return list(members.values()), list(weights.values())


def schedule(weights: list[int]) -> list[int]:
    """Group indexes spread by weight (smooth weighted round robin, weights
    reduced by their common divisor): 60/25/14/1 gives 100 slots in which no
    group comes in long runs."""
    if not weights:
        raise ValueError("a load needs at least one call")
    divisor = 0
    for w in weights:
        divisor = math.gcd(divisor, w)
    reduced = [w // divisor for w in weights]
    total = sum(reduced)
    current = [0] * len(reduced)
    out: list[int] = []
    for _ in range(total):
        for i, w in enumerate(reduced):
            current[i] += w
        best = max(range(len(reduced)), key=lambda i: current[i])
        current[best] -= total
        out.append(best)
    return out


class Rotation:
    """The next call: the schedule picks a group, each group rotates through its calls."""

    def __init__(self, calls: list[Call], offset: int) -> None:
        self.members, weights = groups(calls)
        self.order = schedule(weights)
        self.position = offset % len(self.order)
        self.cursors = [offset % len(m) for m in self.members]

    def next(self) -> int:
        group = self.order[self.position]
        self.position = (self.position + 1) % len(self.order)
        members = self.members[group]
        index = members[self.cursors[group]]
        self.cursors[group] = (self.cursors[group] + 1) % len(members)
        return index


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


# ---------------------------------------------------------------- wrk


def _lua_string(value: str) -> str:
    out = ['"']
    for byte in value.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    out.append('"')
    return "".join(out)


def lua_script(spec: LoadSpec) -> str:
    calls = []
    for c in spec.calls:
        headers = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in c.headers.items())
        calls.append(
            f"  {{method = {_lua_string(c.method)}, path = {_lua_string(c.path)}, "
            f"headers = {{{headers}}}, body = {_lua_string(c.body) if c.body else 'nil'}}}"
        )
    members, weights = groups(spec.calls)
    order = ", ".join(str(g + 1) for g in schedule(weights))
    grouped = ", ".join("{" + ", ".join(str(i + 1) for i in m) + "}" for m in members)
    return (
        "-- generated by bench/loadgen.py\n"
        "local calls = {\n" + ",\n".join(calls) + "\n}\n"
        f"local order = {{{order}}}\n"
        f"local groups = {{{grouped}}}\n"
        """
local threads = {}
local counter = 1
local cursors = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  failures = 0
  prepared = {}
  for i, c in ipairs(calls) do
    prepared[i] = wrk.format(c.method, c.path, c.headers, c.body)
  end
  local offset = (thread_index or 0) * 7
  counter = offset % #order + 1
  for g, m in ipairs(groups) do
    cursors[g] = offset % #m + 1
  end
end

function request()
  local g = order[counter]
  counter = counter % #order + 1
  local m = groups[g]
  local r = prepared[m[cursors[g]]]
  cursors[g] = cursors[g] % #m + 1
  return r
end

function response(status, headers, body)
  if status ~= 200 or (body ~= nil and string.find(body, '"errors"', 1, true)) then
    failures = failures + 1
    if failures == 1 then
      first_failure = "HTTP " .. status .. " " .. (body and string.match(body, '"code":%s*"([A-Z_]+)"') or "")
    end
  end
end

function done(summary, latency, requests)
  local failed = 0
  local example = ""
  for _, t in ipairs(threads) do
    failed = failed + (t:get("failures") or 0)
    if example == "" then example = t:get("first_failure") or "" end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "failures": %d, "socket_errors": %d, '
    .. '"p50_us": %d, "p95_us": %d, "p99_us": %d, "mean_us": %f, "example": "%s"}\\n',
    summary.requests, summary.duration, failed,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean, example))
end
"""
    )


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _wrk_once(spec: LoadSpec, script: Path, seconds: float) -> dict[str, Any]:
    duration = max(1, round(seconds))
    threads = max(1, min(spec.threads, spec.concurrency))
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{spec.concurrency}",
        f"-d{duration}s",
        f"--timeout={max(1, round(spec.timeout))}s",
        "-s",
        str(script),
        spec.base_url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + spec.timeout + 30, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            parsed: dict[str, Any] = json.loads(line[len(MARKER) :])
            return parsed
    raise RuntimeError(f"wrk printed no result (exit {done.returncode}): {done.stderr.strip()[:500]}")


def run_wrk(spec: LoadSpec) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="pledgeql-wrk-") as folder:
        script = Path(folder) / "load.lua"
        script.write_text(lua_script(spec))
        if spec.warmup > 0:
            _wrk_once(spec, script, spec.warmup)
        raw = _wrk_once(spec, script, spec.duration)
    return LoadResult(
        engine="wrk",
        requests=int(raw["requests"]),
        seconds=raw["duration_us"] / 1e6,
        failures=int(raw["failures"]),
        p50_ms=raw["p50_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        socket_errors=int(raw["socket_errors"]),
        notes=[f"first failure: {raw['example']}"] if raw.get("example") else [],
    )


# ------------------------------------------------------- asyncio client


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, payload: bytes) -> tuple[int, bytes]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        self.writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        else:
            body = await reader.read()
            await self.close()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.reader = None


def _payloads(spec: LoadSpec) -> list[bytes]:
    host = urlsplit(spec.base_url).netloc
    out = []
    for c in spec.calls:
        body = c.body.encode()
        lines = [f"{c.method} {c.path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
        lines += [f"{k}: {v}" for k, v in c.headers.items()]
        if body or c.method != "GET":
            lines.append(f"Content-Length: {len(body)}")
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return out


async def _drive(spec: LoadSpec, seconds: float, record: bool) -> tuple[list[float], int, int, float, list[str]]:
    parts = urlsplit(spec.base_url)
    payloads = _payloads(spec)
    latencies: list[float] = []
    failures = 0
    examples: list[str] = []
    socket_errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(index: int) -> None:
        nonlocal failures, socket_errors
        connection = _Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        rotation = Rotation(spec.calls, index * 7)
        try:
            while time.perf_counter() < deadline:
                payload = payloads[rotation.next()]
                t0 = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(connection.request(payload), spec.timeout)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                    socket_errors += 1
                    await connection.close()
                    continue
                if record:
                    latencies.append(time.perf_counter() - t0)
                    if status != 200 or b'"errors"' in body:
                        failures += 1
                        if not examples:
                            code = re.search(rb'"code":\s*"([A-Z_]+)"', body)
                            examples.append(f"HTTP {status} {code.group(1).decode() if code else ''}".strip())
        finally:
            await connection.close()

    await asyncio.gather(*(worker(i) for i in range(spec.concurrency)))
    return latencies, failures, socket_errors, time.perf_counter() - started, examples


async def run_client(spec: LoadSpec) -> LoadResult:
    if spec.warmup > 0:
        await _drive(spec, spec.warmup, record=False)
    latencies, failures, socket_errors, elapsed, examples = await _drive(spec, spec.duration, record=True)
    latencies.sort()
    ms = [v * 1000 for v in latencies]
    return LoadResult(
        engine="asyncio",
        requests=len(ms),
        seconds=elapsed,
        failures=failures,
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / len(ms) if ms else math.nan,
        socket_errors=socket_errors,
        notes=[f"first failure: {examples[0]}"] if examples else [],
    )


def run_client_process(spec: LoadSpec) -> LoadResult:
    """This module's client, in a process of its own."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="pledgeql-load-", delete=False) as handle:
        handle.write(spec.to_json())
        path = Path(handle.name)
    try:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), str(path)],
            capture_output=True,
            text=True,
            timeout=spec.warmup + spec.duration + spec.timeout + 60,
            check=False,
        )
    finally:
        path.unlink(missing_ok=True)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return LoadResult(**json.loads(line[len(MARKER) :]))
    raise RuntimeError(f"the load generator printed no result (exit {done.returncode}): {done.stderr.strip()[:500]}")


def run_load(spec: LoadSpec, engine: str) -> LoadResult:
    """``engine``: "wrk" or "asyncio"; each runs in a process of its own."""
    if engine == "wrk":
        return run_wrk(spec)
    if engine == "asyncio":
        return run_client_process(spec)
    raise ValueError(f"unknown load engine {engine!r}; use wrk or asyncio")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one load spec with the asyncio client; print its result.")
    parser.add_argument("spec", help="a JSON file written by LoadSpec.to_json()")
    args = parser.parse_args(argv)
    spec = LoadSpec.from_json(Path(args.spec).read_text())
    result = asyncio.run(run_client(spec))
    print(MARKER + json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
