"""``pledgeql serve --workers 2``: connections spread over the workers, and a signal ends them all.

Which worker holds a connection is read from /proc (the socket inodes behind
each worker's file descriptors, matched with /proc/net/tcp), not asked of the
server: it tells clients nothing about its processes.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.db import DatabaseUrls
from server.workers import spreads_connections

pytestmark = pytest.mark.skipif(not spreads_connections(), reason="SO_REUSEPORT spreads connections on Linux only")

CONNECTIONS = 16
READY = re.compile(r"Worker \[(\d+)\] ready: loop (\S+), http (\S+)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Serving:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_listening(self, workers: int, timeout: float = 60) -> list[int]:
        """The workers' pids, once each of them has logged that it listens."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [int(m.group(1)) for m in READY.finditer(self.output())]
            if len(pids) >= workers:
                return pids
            assert self.process.poll() is None, f"serve exited with {self.process.returncode}:\n{self.output()}"
            time.sleep(0.1)
        raise AssertionError(f"not every worker was listening within {timeout} s:\n{self.output()}")


@contextlib.contextmanager
def serve(db: DatabaseUrls, tmp_path: Path, workers: int) -> Iterator[Serving]:
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "PLEDGEQL_DATABASE_URL": db.owner,
        "PLEDGEQL_APP_DATABASE_URL": db.app,
        "PLEDGEQL_DATA_DIR": str(tmp_path),
        "PLEDGEQL_JWT_SECRET": "workers-test-secret-of-enough-length-0123456789",
    }
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 (our own console entry point)
            [sys.executable, "-m", "server.cli", "serve", "--workers", str(workers), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        yield Serving(process, port, log)
    finally:
        if process.poll() is None:  # the test failed before it stopped the server
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _session(session: int) -> list[int]:
    """The live processes of a session: the supervisor, its workers and whatever they started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()  # state ppid pgrp session ...
        if fields[3] == str(session) and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _gone_within(session: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _session(session)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _server_inodes(port: int, client_ports: set[int]) -> set[str]:
    """The inodes of the server's ends of the given client connections (/proc/net/tcp, IPv4)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state == "01" and int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) in client_ports:
            inodes.add(inode)
    return inodes


def _sockets_of(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def test_two_workers_each_answer_some_of_sixteen_keep_alive_connections_and_sigterm_ends_every_process(
    db: DatabaseUrls, tmp_path: Path
) -> None:
    with serve(db, tmp_path, workers=2) as serving:
        workers = serving.wait_until_listening(2)
        assert len(set(workers)) == 2
        for match in READY.finditer(serving.output()):
            assert match.group(2, 3) == ("uvloop", "httptools")

        connections = []
        try:
            for _ in range(CONNECTIONS):
                connection = http.client.HTTPConnection("127.0.0.1", serving.port, timeout=10)
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                assert response.status == 200
                response.read()
                connections.append(connection)  # kept open: HTTP/1.1 keep-alive
            client_ports = {c.sock.getsockname()[1] for c in connections if c.sock is not None}
            assert len(client_ports) == CONNECTIONS
            held = _server_inodes(serving.port, client_ports)
            per_worker = {pid: len(held & _sockets_of(pid)) for pid in workers}
            assert sum(per_worker.values()) == CONNECTIONS, per_worker
            # Hashed over two sockets, all 16 land on one with a chance of 2 in 65,536.
            assert all(count > 0 for count in per_worker.values()), per_worker

            # SIGTERM with the connections still open: idle keep-alive connections do not hold it up.
            began = time.monotonic()
            serving.process.send_signal(signal.SIGTERM)
            assert serving.process.wait(timeout=15) == 0, serving.output()
            assert time.monotonic() - began < 10
        finally:
            for connection in connections:
                connection.close()
        assert _gone_within(serving.process.pid, 5) == [], "processes left after the supervisor exited"


def test_a_worker_that_dies_stops_the_others_and_the_supervisor_exits_non_zero(
    db: DatabaseUrls, tmp_path: Path
) -> None:
    with serve(db, tmp_path, workers=2) as serving:
        first, second = serving.wait_until_listening(2)[:2]
        os.kill(first, signal.SIGKILL)
        try:
            status = serving.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve did not exit after its worker died:\n{serving.output()}") from None
        assert status != 0
        assert f"Worker [{first}] exited" in serving.output()
        assert f"Finished server process [{second}]" in serving.output()  # stopped gracefully
        assert _gone_within(serving.process.pid, 5) == []
