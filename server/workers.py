"""Serve an ASGI app from N worker processes, each listening on a socket of its own.

uvicorn's multi-process mode shares one listening socket between its workers,
and the kernel does not share that socket's connections out: whichever worker
is in accept() when a burst of connections arrives takes the whole burst. A
load generator's 16 keep-alive connections all landed on one of two workers
(bench/RESULTS.md), so the second worker added nothing. Here every worker
binds the same address with SO_REUSEPORT, and Linux hashes each new connection
to one of the sockets: connections spread over the workers.

The supervisor restarts nothing. A worker that dies takes the others down and
the supervisor exits non-zero, for whatever runs it (systemd, Kubernetes) to
restart the whole. SIGINT and SIGTERM reach the workers as SIGTERM: each one
finishes its requests in flight, then exits; a second SIGINT forces them.

    python -m server.workers server.asgi:app --port 8000 --workers 2 [--no-access-log]

is the same server for tools (bench/run.py) that serve other apps with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from collections.abc import Sequence
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

log = logging.getLogger("uvicorn.error")

# Logged by each worker once it listens; bench/run.py counts it and reads it.
READY = "Worker [%d] ready: loop %s, http %s"

_PR_SET_PDEATHSIG = 1


def spreads_connections() -> bool:
    """Whether the kernel spreads connections over sockets sharing a port: Linux
    does; macOS and the BSDs accept SO_REUSEPORT but do not balance with it."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def loop_name() -> str:
    """The running event loop's library: ``uvloop`` or ``asyncio``."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


def http_name(config: uvicorn.Config) -> str:
    """The HTTP parser a loaded config serves with: ``httptools`` or ``h11``."""
    return config.http_protocol_class.__module__.rpartition(".")[2].removesuffix("_impl")


class _Server(uvicorn.Server):
    """uvicorn's server, saying once it listens which event loop and HTTP parser it runs."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            log.info(READY, os.getpid(), loop_name(), http_name(self.config))


class _Stopped(BaseException):
    """SIGTERM, once uvicorn has shut down gracefully."""


def _stopped(number: int, frame: FrameType | None) -> None:
    raise _Stopped


def _run(config: uvicorn.Config, sockets: list[socket.socket] | None = None) -> int:
    """Serve in this process until a signal stops it; the exit status.

    uvicorn ends by raising the signal it stopped for again, under the handler
    it found. For SIGTERM the default handler kills the process on the spot,
    before its atexit handlers run: the embedded PostgreSQL's among them, which
    then outlives the server. Under this handler the process ends the ordinary
    way, as it does after Ctrl-C.
    """
    server = _Server(config)
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        server.run(sockets=sockets)
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if server.started else STARTUP_FAILURE


def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _bind_each(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to one address with SO_REUSEPORT.

    A plain bind first: SO_REUSEPORT would let these sockets join a group that
    another server of the same user already listens in (a second ``pledgeql
    serve`` on the port), and the two would share its connections without a
    word. A plain bind fails then, as uvicorn's does. It also turns port 0
    into the one port every worker binds.
    """
    with _bind(host, port, reuse_port=False) as probe:
        port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(_bind(host, port, reuse_port=True))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _stop_with_parent(parent: int) -> None:
    """Have Linux send this worker SIGTERM when the supervisor dies, however it
    dies (SIGKILL, the OOM killer): a worker left behind would keep its socket
    in the port's group and take a share of the connections of the next server
    bound to the port."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        raise SystemExit(0)


def _worker(app: str, options: dict[str, Any], sock: socket.socket, parent: int) -> None:
    """A worker process: the app behind its own socket."""
    try:
        _stop_with_parent(parent)
        status = _run(uvicorn.Config(app, **options), [sock])
    except KeyboardInterrupt:  # Ctrl-C reached the worker before uvicorn was listening for it
        status = 0
    sys.exit(status)


class _Supervisor:
    def __init__(self, app: str, options: dict[str, Any]) -> None:
        self.app = app
        self.options = options
        self.processes: list[SpawnProcess] = []
        self.ended: set[int] = set()  # id() of the workers whose sentinel said they exited
        self.stopping = False

    def on_signal(self, number: int, frame: FrameType | None) -> None:
        # SIGTERM is uvicorn's graceful stop whichever signal came; a repeated
        # SIGINT is its forced one.
        forced = self.stopping and number == signal.SIGINT
        if not self.stopping:
            log.info("Received %s: stopping %d worker(s)", signal.Signals(number).name, len(self.processes))
        self.stopping = True
        self.send(signal.SIGINT if forced else signal.SIGTERM)

    def send(self, number: int) -> None:
        for process in self.processes:
            # Never a process known to have ended: its pid may be another's by now.
            if process.pid is not None and process.exitcode is None and id(process) not in self.ended:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, number)

    def run(self, sockets: list[socket.socket]) -> int:
        context = multiprocessing.get_context("spawn")
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {number: signal.signal(number, self.on_signal) for number in handled}
        try:
            for index, sock in enumerate(sockets):
                if self.stopping:
                    break
                process = context.Process(
                    target=_worker,
                    args=(self.app, self.options, sock, os.getpid()),
                    name=f"pledgeql-worker-{index + 1}",
                )
                process.start()
                self.processes.append(process)
            if self.stopping:  # a signal came while they were starting
                self.send(signal.SIGTERM)
        finally:
            for sock in sockets:  # each worker holds its own copy now
                sock.close()
        try:
            return self.wait()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def wait(self) -> int:
        """Until every worker has exited; stops the others when one exits unasked.

        A worker has exited when its sentinel (a pipe it holds open) is ready,
        even if its exit status cannot be read back: a process reaped by
        something else leaves ``exitcode`` at None for ever, and waiting for
        that alone would wait for ever."""
        failed: int | None = None
        ended = self.ended
        while True:
            running = [p for p in self.processes if p.exitcode is None and id(p) not in ended]
            if not running:
                break
            ready = multiprocessing.connection.wait([p.sentinel for p in running], timeout=1.0)
            for process in running:
                if process.sentinel not in ready and process.exitcode is None:
                    continue
                ended.add(id(process))
                if self.stopping:
                    continue
                log.error(
                    "Worker [%s] exited with status %s; stopping the others and exiting",
                    process.pid,
                    process.exitcode,
                )
                failed = process.exitcode if process.exitcode and process.exitcode > 0 else 1
                self.stopping = True
                self.send(signal.SIGTERM)
        if failed is not None:
            return failed
        # Asked to stop: a worker whose status could not be read back (None) has
        # exited all the same, its sentinel said so.
        stopped = (0, -signal.SIGTERM, -signal.SIGINT, None)
        return 0 if all(p.exitcode in stopped for p in self.processes) else 1


def serve(app: str, *, host: str, port: int, workers: int = 1, **options: Any) -> int:
    """Serve ``app`` (an import string) until SIGINT or SIGTERM; the exit status.

    One worker serves in this process. More are processes of their own, each
    with its own socket (on Linux; elsewhere uvicorn's shared socket). Each
    worker imports ``app``, and so builds its own app from the environment.
    ``options`` are uvicorn.Config's.
    """
    config = uvicorn.Config(app, host=host, port=port, **options)  # also sets up logging
    if workers <= 1:
        return _run(config)
    if not spreads_connections():
        log.warning("No SO_REUSEPORT balancing here: the %d workers share one socket (uvicorn's own mode)", workers)
        uvicorn.run(app, host=host, port=port, workers=workers, **options)
        return 0
    try:
        sockets = _bind_each(host, port, workers)
    except OSError as error:
        log.error("Cannot listen on %s:%d: %s", host, port, error.strerror or error)
        return STARTUP_FAILURE
    bound = sockets[0].getsockname()
    log.info(
        "Listening on http://%s:%d with %d workers, each on a socket of its own (SO_REUSEPORT) (Press CTRL+C to quit)",
        bound[0],
        bound[1],
        workers,
    )
    status = _Supervisor(app, options).run(sockets)
    log.info("Stopped %d worker(s)", workers)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.workers", description=__doc__.split("\n\n")[0])
    parser.add_argument("app", help="the ASGI app as an import string, module:attribute")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers takes 1 or more")
    return serve(
        args.app,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=args.access_log,
        log_level=args.log_level,
    )


if __name__ == "__main__":
    sys.exit(main())
