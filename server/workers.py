"""Serve an ASGI app from N supervised worker processes, each listening on a socket of its own.

uvicorn's multi-process mode shares one listening socket between its workers,
and the kernel does not share that socket's connections out: whichever worker
is in accept() when a burst of connections arrives takes the whole burst. A
load generator's 16 keep-alive connections all landed on one of two workers
(bench/RESULTS.md), so the second worker added nothing. Here the supervisor
binds one socket per worker to the same address with SO_REUSEPORT, Linux
hashes each new connection to one of them, and each worker serves its socket.

The supervisor keeps the sockets open and the workers inherit them. A worker
that dies (a crash, the OOM killer, ``kill -9``) is replaced at once by a new
one on the same socket, while the others keep serving: connections hashed to
its socket meanwhile wait in the socket's queue for the replacement instead of
being refused. Workers that keep dying (CRASH_LIMIT deaths within
CRASH_WINDOW seconds) are a crash loop: the supervisor stops everything and
exits non-zero, saying so. SIGHUP is a rolling restart: for each socket in
turn a new worker starts, and only once it listens does the old one get
SIGTERM and finish its requests in flight. SIGINT and SIGTERM reach the
workers as SIGTERM: each one finishes its requests in flight, then exits; a
second SIGINT forces them.

    python -m server.workers server.asgi:app --port 8000 --workers 2 [--no-access-log]

is the same server for tools (bench/run.py) that serve other apps with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

log = logging.getLogger("uvicorn.error")

# Logged by each worker once it listens; bench/run.py counts it and reads it.
READY = "Worker [%d] ready: loop %s, http %s"

_PR_SET_PDEATHSIG = 1
# A crash loop: this many unasked worker deaths within this many seconds stop the server.
CRASH_LIMIT = 5
CRASH_WINDOW = 60.0
# How long a stopping worker keeps its open connections for their next request (see _Server.shutdown).
DRAIN_SECONDS = 1.0
# The collector's young generation is examined every 10,000 allocations rather than
# every 700: a request allocates thousands of short-lived containers, nearly all freed
# by their counts, and the default examined the live ones of 16 requests in flight
# over and over. A teacher's roster at 16 connections: 0.79 ms of worker CPU per
# request against 0.84 (medians of 6 alternated runs of 8 s).
GC_THRESHOLDS = (10_000, 20, 20)


def spreads_connections() -> bool:
    """Whether the kernel spreads connections over sockets sharing a port: Linux
    does; macOS and the BSDs accept SO_REUSEPORT but do not balance with it."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def loop_name() -> str:
    """The running event loop's library: ``uvloop`` or ``asyncio``."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


def http_name(config: uvicorn.Config) -> str:
    """The HTTP parser a loaded config serves with: ``httptools`` or ``h11`` (that of the
    uvicorn protocol class it is or extends)."""
    for cls in config.http_protocol_class.__mro__:
        if cls.__module__.startswith("uvicorn.protocols.http."):
            return cls.__module__.rpartition(".")[2].removesuffix("_impl")
    return config.http_protocol_class.__name__


class _Server(uvicorn.Server):
    """uvicorn's server, saying once it listens which event loop and HTTP parser it runs
    (and telling the supervisor, through ``ready``)."""

    def __init__(self, config: uvicorn.Config, ready: multiprocessing.connection.Connection | None = None) -> None:
        super().__init__(config)
        self.ready = ready

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's graceful shutdown, after a drain that spares keep-alive clients a failed request.

        uvicorn closes every idle keep-alive connection at once, and a client
        whose next request is already on its way gets a reset instead of a
        response. So first: stop accepting (a worker sharing the socket takes
        the new connections), and answer each open connection's next request
        with ``Connection: close`` (``draining``, read by
        ``server.read_guard``), for up to DRAIN_SECONDS or until every
        connection has closed. Only connections that sent nothing meanwhile
        are then closed by uvicorn.
        """
        for server in self.servers:
            server.close()
        state = self.server_state
        state.draining = True  # type: ignore[attr-defined]
        for connection in list(state.connections):
            cycle = getattr(connection, "cycle", None)
            if cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False
        deadline = asyncio.get_running_loop().time() + DRAIN_SECONDS
        while state.connections and not self.force_exit and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await super().shutdown(sockets=sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            # What start-up built (the schema, the plans, the pools) lives as long as the
            # worker: the garbage collector's full passes need not walk it again.
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            log.info(READY, os.getpid(), loop_name(), http_name(self.config))
            if self.ready is not None:
                with contextlib.suppress(OSError):
                    self.ready.send_bytes(b"ready")
                    self.ready.close()


class _Stopped(BaseException):
    """SIGTERM, once uvicorn has shut down gracefully."""


def _stopped(number: int, frame: FrameType | None) -> None:
    raise _Stopped


def _run(
    config: uvicorn.Config,
    sockets: list[socket.socket] | None = None,
    ready: multiprocessing.connection.Connection | None = None,
) -> int:
    """Serve in this process until a signal stops it; the exit status.

    uvicorn ends by raising the signal it stopped for again, under the handler
    it found. For SIGTERM the default handler kills the process on the spot,
    before its atexit handlers run: the embedded PostgreSQL's among them, which
    then outlives the server. Under this handler the process ends the ordinary
    way, as it does after Ctrl-C.
    """
    server = _Server(config, ready)
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        server.run(sockets=sockets)
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if server.started else STARTUP_FAILURE


def cannot_listen(host: str, port: int, error: OSError) -> str:
    said = f"Cannot listen on {host}:{port}: {error.strerror or error}"
    if error.errno == errno.EADDRINUSE:
        return f"{said} (another server listens there: stop it, or choose another port with --port)"
    return said


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


def _stop_with_parent(supervisor: int) -> None:
    """Have Linux send this worker SIGTERM when its parent dies, however it dies
    (SIGKILL, the OOM killer): a worker left behind would keep its socket in
    the port's group and take a share of the connections of the next server
    bound to the port. The parent is the fork server, which exits as soon as
    the supervisor does."""
    if not sys.platform.startswith("linux"):
        return
    # The fork server hands each child the write end of the pipe whose end
    # tells it the supervisor is gone: a worker holding it would keep the fork
    # server, and so itself, alive after the supervisor died.
    from multiprocessing import forkserver

    alive = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if alive is not None:
        with contextlib.suppress(OSError):
            os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None  # type: ignore[attr-defined]
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    try:  # it died before the request took effect
        os.kill(supervisor, 0)
    except ProcessLookupError:
        raise SystemExit(0) from None
    if os.getppid() == 1:
        raise SystemExit(0)


def _worker(
    app: str,
    options: dict[str, Any],
    sock: socket.socket,
    supervisor: int,
    ready: multiprocessing.connection.Connection | None = None,
) -> None:
    """A worker process: the app behind its socket."""
    try:
        _stop_with_parent(supervisor)
        status = _run(uvicorn.Config(app, **options), [sock], ready)
    except KeyboardInterrupt:  # Ctrl-C reached the worker before uvicorn was listening for it
        status = 0
    sys.exit(status)


@dataclass
class _Slot:
    """One listening socket and the worker serving it (and, during a rolling restart, its successor)."""

    index: int
    sock: socket.socket
    process: BaseProcess | None = None
    ready: multiprocessing.connection.Connection | None = None  # readable once the worker listens
    successor: BaseProcess | None = None
    successor_ready: multiprocessing.connection.Connection | None = None


class _Supervisor:
    """Starts a worker per socket, replaces one that dies, and restarts them one at a time on SIGHUP.

    The sockets stay open here for the supervisor's whole life: a worker only
    ever holds a copy. Connections the kernel hashes to a dead worker's socket
    wait in its queue until the replacement accepts them, rather than being
    refused. Workers are forked from a fork server that has imported the
    server's modules once, so a replacement listens a fraction of a second
    after its predecessor died.
    """

    def __init__(
        self,
        app: str,
        options: dict[str, Any],
        *,
        preload: Sequence[str] = (),
        crash_limit: int = CRASH_LIMIT,
        crash_window: float = CRASH_WINDOW,
    ) -> None:
        self.app = app
        self.options = options
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["uvicorn", *preload])
        self.crash_limit = crash_limit
        self.crash_window = crash_window
        self.slots: list[_Slot] = []
        self.retiring: list[BaseProcess] = []  # replaced during a rolling restart, draining
        self.deaths: deque[float] = deque()
        self.stopping = False
        self.forced = False
        self.rolling: deque[int] = deque()  # slots still to restart (SIGHUP)
        self.status = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -------------------------------------------------------------- signals

    def on_signal(self, number: int, frame: FrameType | None) -> None:
        if number == signal.SIGHUP:
            if not self.stopping:
                log.info("Received SIGHUP: restarting the %d worker(s) one at a time", len(self.slots))
                self.rolling.extend(s.index for s in self.slots if s.index not in self.rolling)
            return
        # SIGTERM is uvicorn's graceful stop whichever signal came; a repeated
        # SIGINT is its forced one.
        if self.stopping and number == signal.SIGINT:
            self.forced = True
        elif not self.stopping:
            log.info("Received %s: stopping %d worker(s)", signal.Signals(number).name, len(self.slots))
        self.stopping = True

    def _processes(self) -> list[BaseProcess]:
        found = [p for s in self.slots for p in (s.process, s.successor) if p is not None]
        return found + self.retiring

    def send(self, number: int) -> None:
        for process in self._processes():
            _kill(process, number)

    # -------------------------------------------------------------- workers

    def _start(self, slot: _Slot) -> tuple[BaseProcess, multiprocessing.connection.Connection]:
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker,
            args=(self.app, self.options, slot.sock, os.getpid(), writer),
            name=f"pledgeql-worker-{slot.index + 1}",
        )
        process.start()
        writer.close()
        return process, reader

    def _died(self, slot: _Slot, process: BaseProcess, *, successor: bool = False) -> None:
        """A worker exited unasked: replace it, unless workers keep dying.

        A successor that dies before it listens (a rolling restart) is not
        replaced here: its predecessor still serves, and the rolling restart
        starts another."""
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - self.crash_window:
            self.deaths.popleft()
        if len(self.deaths) >= self.crash_limit:
            log.error(
                "Worker [%s] exited with status %s: %d worker deaths within %d s is a crash loop, "
                "so the server stops (the messages above say why the workers died)",
                process.pid,
                process.exitcode,
                len(self.deaths),
                self.crash_window,
            )
            self.status = 1
            self.stopping = True
            return
        if successor:
            log.error("Worker [%s] exited with status %s before it listened", process.pid, process.exitcode)
            return
        log.error("Worker [%s] exited with status %s; starting a replacement", process.pid, process.exitcode)
        slot.process, slot.ready = self._start(slot)

    def _step_rolling(self) -> None:
        """The rolling restart's next step: a successor for the first slot in line,
        then, once it listens, the predecessor's graceful stop."""
        if not self.rolling or self.stopping:
            return
        slot = self.slots[self.rolling[0]]
        if slot.successor is None:
            slot.successor, slot.successor_ready = self._start(slot)
            return
        if slot.successor_ready is not None and slot.successor_ready.poll():
            old = slot.process
            slot.process, slot.ready = slot.successor, None
            slot.successor, slot.successor_ready = None, None
            if old is not None:
                log.info("Worker [%s] replaced by [%s]; stopping it gracefully", old.pid, slot.process.pid)
                _kill(old, signal.SIGTERM)
                self.retiring.append(old)
            self.rolling.popleft()
            if not self.rolling:
                log.info("Rolling restart done")
            self._step_rolling()

    # -------------------------------------------------------------- the loop

    def run(self, sockets: list[socket.socket]) -> int:
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {number: signal.signal(number, self.on_signal) for number in handled}
        previous_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            for index, sock in enumerate(sockets):
                if self.stopping:
                    break
                slot = _Slot(index, sock)
                slot.process, slot.ready = self._start(slot)
                self.slots.append(slot)
            self._supervise()
            return self._drain()
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for number, handler in previous.items():
                signal.signal(number, handler)
            for sock in sockets:
                sock.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _wait(self, timeout: float) -> list[Any]:
        waitables: list[Any] = [self._wake_r]
        waitables += [p.sentinel for p in self._processes()]
        waitables += [s.successor_ready for s in self.slots if s.successor_ready is not None]
        ready = multiprocessing.connection.wait(waitables, timeout=timeout)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        return ready

    def _supervise(self) -> None:
        """Keep every slot served until asked to stop (or a crash loop stops it)."""
        while not self.stopping:
            self._wait(1.0)
            for process in [p for p in self.retiring if _ended(p)]:
                self.retiring.remove(process)
            for slot in self.slots:
                if slot.successor is not None and _ended(slot.successor):
                    failed, slot.successor, slot.successor_ready = slot.successor, None, None
                    if not self.stopping:
                        self._died(slot, failed, successor=True)
                if slot.process is not None and _ended(slot.process) and not self.stopping:
                    self._died(slot, slot.process)
            self._step_rolling()

    def _drain(self) -> int:
        """SIGTERM to every worker; wait until each has exited (a repeated Ctrl-C forces them)."""
        self.send(signal.SIGTERM)
        forced = False
        while running := [p for p in self._processes() if not _ended(p)]:
            if self.forced and not forced:
                forced = True
                self.send(signal.SIGINT)
            multiprocessing.connection.wait([self._wake_r] + [p.sentinel for p in running], timeout=1.0)
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        if self.status:
            return self.status
        # Asked to stop: a worker whose status could not be read back (None) has
        # exited all the same, its sentinel said so.
        stopped = (0, -signal.SIGTERM, -signal.SIGINT, None)
        return 0 if all(s.process is None or s.process.exitcode in stopped for s in self.slots) else 1


def _ended(process: BaseProcess) -> bool:
    """Whether a worker has exited: its sentinel (a pipe it holds open) is ready, even
    if its exit status cannot be read back (a process reaped by something else leaves
    ``exitcode`` at None for ever)."""
    if process.exitcode is not None:
        return True
    return bool(multiprocessing.connection.wait([process.sentinel], timeout=0))


def _kill(process: BaseProcess, number: int) -> None:
    # Never a process known to have ended: its pid may be another's by now.
    if process.pid is not None and not _ended(process):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, number)


def listen(host: str, port: int, workers: int) -> list[socket.socket] | None:
    """The workers' sockets, bound (port 0: a free port, the same for each),
    where ``serve`` gives each worker a socket of its own; None elsewhere (the
    server binds as it starts). Raises OSError when the address is taken: a
    caller that binds first can say so before it says where it serves."""
    return _bind_each(host, port, workers) if spreads_connections() else None


def serve(
    app: str,
    *,
    host: str,
    port: int,
    workers: int = 1,
    preload: Sequence[str] = (),
    sockets: list[socket.socket] | None = None,
    **options: Any,
) -> int:
    """Serve ``app`` (an import string) until SIGINT or SIGTERM; the exit status.

    On Linux every worker is a process of its own with its own socket, under a
    supervisor that replaces a worker that dies and restarts them one at a time
    on SIGHUP (elsewhere: one worker in this process, or uvicorn's shared
    socket). Each worker imports ``app``, and so builds its own app from the
    environment; ``preload`` names modules to import once, before any worker
    starts. ``sockets`` are ``listen``'s, when the caller bound them already.
    ``options`` are uvicorn.Config's.
    """
    config = uvicorn.Config(app, host=host, port=port, **options)  # also sets up logging
    if not spreads_connections():
        if workers <= 1:
            return _run(config)
        log.warning("No SO_REUSEPORT balancing here: the %d workers share one socket (uvicorn's own mode)", workers)
        uvicorn.run(app, host=host, port=port, workers=workers, **options)
        return 0
    if sockets is None:
        try:
            sockets = _bind_each(host, port, workers)
        except OSError as error:
            log.error(cannot_listen(host, port, error))
            return STARTUP_FAILURE
    bound = sockets[0].getsockname()
    log.info(
        "Listening on http://%s:%d with %d worker(s), each on a socket of its own (SO_REUSEPORT) "
        "(Press CTRL+C to quit; SIGHUP restarts the workers one at a time)",
        bound[0],
        bound[1],
        workers,
    )
    status = _Supervisor(app, options, preload=preload).run(sockets)
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
