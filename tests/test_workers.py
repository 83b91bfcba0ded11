"""``pledgeql serve --workers 2``: connections spread over the workers, a signal ends them all, a
dead worker is replaced while the other serves, a crash loop stops the server, SIGHUP rolls the workers.

Which worker holds a connection is read from /proc (the socket inodes behind
each worker's file descriptors, matched with /proc/net/tcp), not asked of the
server: it tells clients nothing about its processes.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
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

    def failed(self, what: str, timeout: float = 120) -> str:
        """The output, once the server has exited non-zero within ``timeout`` (else ``what`` went wrong)."""
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{what}:\n{self.output()}") from None
        output = self.output()
        assert status != 0, output
        return output

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
def serve(
    db: DatabaseUrls | None,
    tmp_path: Path,
    workers: int,
    *,
    command: tuple[str, ...] = ("server.commands.cli", "serve"),
    port: int | None = None,
    **extra_env: str,
) -> Iterator[Serving]:
    """``pledgeql serve`` on the test database, or (``db`` None) on an embedded PostgreSQL of its own
    (``command``: another module run with ``--workers`` and ``--port``, the workers' own), on ``port``
    or a free one."""
    port = _free_port() if port is None else port
    log = tmp_path / "serve.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PLEDGEQL_")},
        "PLEDGEQL_DATA_DIR": str(tmp_path),
        "PLEDGEQL_JWT_SECRET": "workers-test-secret-of-enough-length-0123456789",
        **extra_env,
    }
    if db is not None:
        env |= {"PLEDGEQL_DATABASE_URL": db.owner, "PLEDGEQL_APP_DATABASE_URL": db.app}
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 (our own console entry point)
            [sys.executable, "-m", *command, "--workers", str(workers), "--port", str(port)],
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


class Load:
    """Requests in a thread until stopped, and what each got back: each on a connection of its
    own (so that each one meets the kernel's choice of socket afresh), or with ``keep_alive`` one
    after the other on one connection, opened again only when the server said it closes it."""

    def __init__(
        self, port: int, paths: tuple[str, ...] = ("/healthz", "/readyz"), *, keep_alive: bool = False
    ) -> None:
        self.port = port
        self.paths = paths
        self.keep_alive = keep_alive
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        index = 0
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        while not self._stop.is_set():
            path = self.paths[index % len(self.paths)]
            index += 1
            if not self.keep_alive:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            try:
                # http.client opens the connection again once a response said "Connection: close".
                connection.request("GET", path, headers={} if self.keep_alive else {"Connection": "close"})
                response = connection.getresponse()
                response.read()
                self.statuses.append(response.status)
            except OSError as error:  # refused, reset, timed out
                self.failures.append(f"{path}: {type(error).__name__}")
                connection.close()
            except http.client.HTTPException as error:  # closed before a response
                self.failures.append(f"{path}: {type(error).__name__}")
                connection.close()
            finally:
                if not self.keep_alive:
                    connection.close()
        connection.close()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def served_since(self, count: int) -> int:
        return len(self.statuses) - count


def _wait_for(predicate: Callable[[], bool], seconds: float, what: str, serving: Serving) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {seconds} s:\n{serving.output()}"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] != "Z"


def test_a_worker_killed_with_sigkill_is_replaced_on_its_socket_while_the_other_worker_keeps_serving(
    db: DatabaseUrls, tmp_path: Path
) -> None:
    with serve(db, tmp_path, workers=2) as serving:
        first, second = serving.wait_until_listening(2)[:2]
        with Load(serving.port) as load:
            _wait_for(lambda: len(load.statuses) >= 20, 30, "the load was not served", serving)
            os.kill(first, signal.SIGKILL)
            killed_at = time.monotonic()
            replacement = serving.wait_until_listening(3)[2]
            replaced_in = time.monotonic() - killed_at
            served = len(load.statuses)
            # Both sockets are served again: a run of fresh connections all succeed.
            _wait_for(
                lambda: load.served_since(served) >= 40, 30, "requests were not served after the replacement", serving
            )
        assert serving.process.poll() is None, "the supervisor stopped"
        assert f"Worker [{first}] exited with status -9; starting a replacement" in serving.output()
        assert replacement not in (first, second)
        assert _alive(second) and _alive(replacement) and not _alive(first)
        assert f"Finished server process [{second}]" not in serving.output()  # the other never stopped
        # Only a request in flight on the killed worker may fail; none was refused for want of a listener.
        assert len(load.failures) <= 1, load.failures
        assert set(load.statuses) == {200}
        # Generous for a loaded 2-core machine: the fork server makes it a fraction of a second when idle.
        assert replaced_in < 10, replaced_in
        serving.process.send_signal(signal.SIGTERM)
        assert serving.process.wait(timeout=30) == 0, serving.output()
        assert _gone_within(serving.process.pid, 5) == []


def test_a_configuration_mistake_stops_serve_once_before_any_worker_starts(db: DatabaseUrls, tmp_path: Path) -> None:
    # Production without its token key: said once, by serve, before any worker is started.
    with serve(db, tmp_path, workers=2, PLEDGEQL_ENV="production", PLEDGEQL_AUDIT_KEY="k" * 48) as serving:
        output = serving.failed("serve did not stop")
        assert output.count("PLEDGEQL_JWT_PUBLIC_KEY_FILE") == 1, output
        assert "serving at" not in output and "starting a replacement" not in output
        assert _gone_within(serving.process.pid, 5) == []


def test_a_port_in_use_stops_serve_with_what_to_do_before_it_says_where_it_serves(
    db: DatabaseUrls, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with serve(db, tmp_path, workers=2, port=taken.getsockname()[1]) as serving:
            output = serving.failed("serve did not stop")
    assert "Address already in use" in output and "--port" in output, output
    assert "serving at" not in output and "A token for" not in output, output
    assert _gone_within(serving.process.pid, 5) == []


def test_serve_on_port_0_says_the_port_it_listens_on(db: DatabaseUrls, tmp_path: Path) -> None:
    with serve(db, tmp_path, workers=2, port=0) as serving:
        serving.wait_until_listening(2)
        said = re.search(r"serving at http://127\.0\.0\.1:(\d+)/graphql", serving.output())
        assert said is not None, serving.output()
        port = int(said.group(1))
        assert port != 0
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/privacy")
            assert connection.getresponse().status == 200
        finally:
            connection.close()
        serving.process.send_signal(signal.SIGTERM)
        assert serving.process.wait(timeout=30) == 0


def test_workers_that_keep_dying_are_a_crash_loop_that_stops_serve_with_a_message_saying_so(
    db: DatabaseUrls, tmp_path: Path
) -> None:
    # Production without its token key, served by the workers' own module (which, unlike
    # serve, does not build the app first): every worker refuses to start.
    with serve(
        db,
        tmp_path,
        workers=2,
        command=("server.workers", "server.asgi:app"),
        PLEDGEQL_ENV="production",
        PLEDGEQL_AUDIT_KEY="k" * 48,
    ) as serving:
        output = serving.failed("serve kept restarting workers that cannot start")
        assert "5 worker deaths within 60 s is a crash loop, so the server stops" in output
        assert "PLEDGEQL_JWT_PUBLIC_KEY_FILE" in output  # the workers' own reason is in the log
        assert output.count("starting a replacement") == 4
        assert _gone_within(serving.process.pid, 5) == []


def test_sighup_restarts_the_workers_one_at_a_time_under_load_without_a_failed_request(
    db: DatabaseUrls, tmp_path: Path
) -> None:
    with serve(db, tmp_path, workers=2) as serving:
        old = serving.wait_until_listening(2)[:2]
        kept = [Load(serving.port, keep_alive=True) for _ in range(4)]  # whose connections the old workers hold
        with Load(serving.port) as load, kept[0], kept[1], kept[2], kept[3]:
            _wait_for(lambda: len(load.statuses) >= 20, 30, "the load was not served", serving)
            serving.process.send_signal(signal.SIGHUP)
            new = serving.wait_until_listening(4)[2:]
            _wait_for(
                lambda: "Rolling restart done" in serving.output(), 30, "the rolling restart did not end", serving
            )
            _wait_for(lambda: not any(_alive(pid) for pid in old), 30, "the old workers did not exit", serving)
            served = len(load.statuses)
            _wait_for(lambda: load.served_since(served) >= 20, 30, "the new workers did not serve", serving)
        output = serving.output()
        assert load.failures == []
        assert set(load.statuses) == {200}
        # Keep-alive clients too: each old worker answered their next request with "Connection: close".
        assert [k.failures for k in kept] == [[]] * 4
        assert all(set(k.statuses) == {200} and len(k.statuses) > 20 for k in kept)
        assert all(_alive(pid) for pid in new) and set(new).isdisjoint(old)
        # One at a time: the first old worker was told to stop before the second new one started.
        replaced = re.findall(r"Worker \[(\d+)\] replaced by \[(\d+)\]", output)
        assert sorted(int(a) for a, _ in replaced) == sorted(old)
        assert [int(b) for _, b in replaced] == new
        assert output.index("replaced by") < output.index(f"Worker [{new[1]}] ready")
        assert "exited with status" not in output
        serving.process.send_signal(signal.SIGTERM)
        assert serving.process.wait(timeout=30) == 0, output


def test_when_the_supervisor_is_killed_its_workers_and_their_fork_server_exit_too(
    db: DatabaseUrls, tmp_path: Path
) -> None:
    with serve(db, tmp_path, workers=2) as serving:
        workers = serving.wait_until_listening(2)[:2]
        os.kill(serving.process.pid, signal.SIGKILL)
        serving.process.wait(timeout=10)
        # A worker left behind would keep its socket in the port's group, and take a share of
        # the connections of the next server bound to the port.
        assert _gone_within(serving.process.pid, 15) == [], "processes left after the supervisor was killed"
        assert not any(_alive(pid) for pid in workers)


def test_serve_restarts_its_embedded_postgresql_after_a_kill_9_of_the_postmaster_and_serves_again() -> None:
    # A folder of its own, not pytest's rotating tmp dirs (another session may delete those).
    folder = Path(tempfile.mkdtemp(prefix="pledgeql-watch-"))
    try:
        with serve(None, folder, workers=1) as serving:
            serving.wait_until_listening(1, timeout=180)
            assert _get(serving.port, "/readyz") == 200
            postmaster = int((folder / "pgdata" / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGKILL)
            _wait_for(
                lambda: "The embedded PostgreSQL restarted" in serving.output(),
                60,
                "the embedded PostgreSQL was not restarted",
                serving,
            )
            assert f"The embedded PostgreSQL (pid {postmaster}) is gone; restarting it" in serving.output()
            _wait_for(lambda: _get(serving.port, "/readyz") == 200, 30, "the app did not recover", serving)
            restarted = int((folder / "pgdata" / "postmaster.pid").read_text().split()[0])
            assert restarted != postmaster and _alive(restarted)
            serving.process.send_signal(signal.SIGTERM)
            assert serving.process.wait(timeout=60) == 0, serving.output()
            # serve stopped the server it restarted, as it stops the one it started.
            assert _gone_within(serving.process.pid, 15) == []
            assert not _alive(restarted)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()
