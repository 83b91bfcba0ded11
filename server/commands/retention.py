"""`pledgeql retention run [--dry-run]`: delete what is past each district's retention periods.

For every district: responses older than ``responses_days`` (by submission
time), activity events older than ``activity_days``, device sessions older
than ``device_days``, and audit entries older than ``audit_days``. Chains
that belong to no district (the nil district of internal analysts'
aggregate reports) keep the policy's default ``audit_days``. It prints, per
district and table, how many rows were (or, with ``--dry-run``, would be)
deleted.

Safe while the server serves: rows go in batches of a few thousand, each in
its own short transaction, so no lock is held for long and requests keep
their latency. Safe to run twice: what is already gone is not counted again.

Audit entries: only the oldest part of a chain is ever removed (a prefix).
First each district's key-signed anchor in ``audit_anchors`` moves past the
entries to go (``resolvers.audit_retention.trim_chain``); then every monthly
partition of ``audit_records`` whose records all lie before their district's
anchor is dropped whole, and what remains before the anchors is deleted in
batches. ``pledgeql audit verify`` starts each chain from its anchor: the
oldest remaining entry must link to it. This needs the audit key
(PLEDGEQL_AUDIT_KEY, or the data dir that holds it), exactly as verify does;
a dry run does not. Each run also creates the audit partitions of the
months ahead.

Runs over the owner connection (``server.db.server_urls(settings).owner``).

A run is audited (API.md section 3): one entry per district whose rows it
deleted, actorRole OPERATOR, operationName ``pledgeql retention run``,
purpose LEGAL_COMPLIANCE, the tables it deleted from as fields, appended to
the district's chain once its deletions are done. A dry run writes none.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from resolvers.audit_retention import CUT, ENTRIES_BETWEEN, drop_covered_partitions, remove_anchored, trim_chain
from resolvers.audit_store import PARTITIONS, PARTITIONS_AHEAD
from server.settings import Settings

BATCH = 5000
NIL = uuid.UUID(int=0)
# What each table's deleted rows held, for the run's audit entry.
TABLE_CATEGORIES = {
    "responses": ("PERFORMANCE", "WORK", "USAGE"),
    "activity_events": ("USAGE",),
    "device_sessions": ("DEVICE",),
    "audit_entries": (),
}
# (table, time column, district setting)
TABLES = (
    ("responses", "submitted_at", "responses_days"),
    ("activity_events", "occurred_at", "activity_days"),
    ("device_sessions", "started_at", "device_days"),
)
LOCK_TIMEOUT = "5s"
# Audit records are deleted AUDIT_STEP per transaction; the chain's lock (to move
# its anchor) is waited for at most TRIM_LOCK_WAIT each time (requests hold it
# for milliseconds).
AUDIT_STEP = 1000
TRIM_LOCK_WAIT = "200ms"
RETRIES = 5
T = TypeVar("T")

# Every chain: audit_heads holds one row per chain (migration 0013).
CHAINS = "SELECT district_id FROM audit_heads ORDER BY district_id"


@dataclass
class TableResult:
    table: str
    days: int
    before: dt.datetime
    rows: int = 0


@dataclass
class DistrictResult:
    district_id: uuid.UUID
    name: str
    tables: list[TableResult] = field(default_factory=list)


@dataclass
class RetentionReport:
    at: dt.datetime
    dry_run: bool
    districts: list[DistrictResult] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(t.rows for d in self.districts for t in d.tables)

    def counts(self) -> dict[tuple[uuid.UUID, str], int]:
        return {(d.district_id, t.table): t.rows for d in self.districts for t in d.tables}


async def _retrying(step: Callable[[], Awaitable[T]]) -> T:
    """One short transaction; a lock it cannot get within LOCK_TIMEOUT is tried
    again a little later, so the job never queues behind requests for long."""
    import asyncpg

    for attempt in range(RETRIES - 1):
        try:
            return await step()
        except asyncpg.exceptions.LockNotAvailableError:
            await asyncio.sleep(0.2 * (attempt + 1))
    return await step()


def _affected(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def _delete_old(
    conn: Any, table: str, column: str, district_id: uuid.UUID, before: dt.datetime, batch: int
) -> int:
    # Table and column names come from the constant TABLES above, never from input.
    sql = (
        f"WITH doomed AS (SELECT id FROM {table} WHERE district_id = $1 AND {column} < $2 LIMIT $3) "  # noqa: S608
        f"DELETE FROM {table} t USING doomed WHERE t.district_id = $1 AND t.id = doomed.id"
    )
    total = 0
    while True:
        removed = _affected(await _retrying(lambda: conn.execute(sql, district_id, before, batch)))
        total += removed
        if removed < batch:
            return total


def _cutoff(now: dt.datetime, days: int) -> dt.datetime:
    """What is older than this goes: ``days`` before ``now``, or the earliest time there
    is when that is further back (a period the API no longer accepts, kept from before)."""
    try:
        return now - dt.timedelta(days=days)
    except OverflowError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)


async def _count_old(conn: Any, table: str, column: str, district_id: uuid.UUID, before: dt.datetime) -> int:
    sql = f"SELECT count(*) FROM {table} WHERE district_id = $1 AND {column} < $2"  # noqa: S608
    return int(await conn.fetchval(sql, district_id, before))


async def _trim_audit(conn: Any, key: bytes, district_id: uuid.UUID, before: dt.datetime) -> int:
    """Move the district's anchor past its chain's prefix older than ``before``
    (one short transaction under the chain's lock, asked for with a short
    wait, TRIM_LOCK_WAIT, retried); the rows go afterwards (``_remove_audit``)."""
    await conn.execute(f"SET lock_timeout = '{TRIM_LOCK_WAIT}'")
    try:
        return await _retrying(functools.partial(trim_chain, conn, key, district_id, before, None, False))
    finally:
        await conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")


async def _count_audit(conn: Any, district_id: uuid.UUID, before: dt.datetime) -> int:
    """How many entries a run would take from the district's chain."""
    anchored = await conn.fetchval("SELECT seq FROM audit_anchors WHERE district_id = $1", district_id) or 0
    cut = await conn.fetchrow(CUT, district_id, before, anchored)
    return 0 if cut is None else int(await conn.fetchval(ENTRIES_BETWEEN, district_id, anchored, cut["seq"]))


async def _remove_audit(conn: Any, batch: int) -> None:
    """Drop the partitions the anchors cover whole, then delete what else they cover, in batches."""
    await drop_covered_partitions(conn)
    for anchor in await conn.fetch("SELECT district_id, seq FROM audit_anchors ORDER BY district_id"):
        await _retrying(functools.partial(remove_anchored, conn, anchor["district_id"], anchor["seq"], batch))


async def run_retention(
    owner_url: str,
    *,
    now: dt.datetime,
    dry_run: bool,
    key: bytes | None,
    default_audit_days: int,
    batch: int = BATCH,
) -> RetentionReport:
    """Apply (or, dry, count) every district's retention as of ``now``."""
    from server.db import connect

    if not dry_run and key is None:
        raise ValueError("Removing audit entries needs the audit key")
    report = RetentionReport(at=now, dry_run=dry_run)
    conn = await connect(owner_url)
    try:
        await conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        districts = await conn.fetch("SELECT * FROM districts ORDER BY name, id")
        known = {d["id"] for d in districts}
        chains = [r["district_id"] for r in await conn.fetch(CHAINS)]
        targets: list[tuple[uuid.UUID, str, dict[str, int]]] = [
            (
                d["id"],
                d["name"],
                {name: int(d[name]) for name in ("responses_days", "activity_days", "device_days", "audit_days")},
            )
            for d in districts
        ]
        for chain in chains:
            if chain not in known:
                label = "internal reports (no district)" if chain == NIL else "a district that no longer exists"
                targets.append((chain, label, {"audit_days": default_audit_days}))
        for district_id, name, days in targets:
            result = DistrictResult(district_id, name)
            for table, column, setting in TABLES:
                if setting not in days:
                    continue
                before = _cutoff(now, days[setting])
                rows = (
                    await _count_old(conn, table, column, district_id, before)
                    if dry_run
                    else await _delete_old(conn, table, column, district_id, before, batch)
                )
                result.tables.append(TableResult(table, days[setting], before, rows))
            before = _cutoff(now, days["audit_days"])
            if dry_run:
                rows = await _count_audit(conn, district_id, before)
            else:
                rows = await _trim_audit(conn, key or b"", district_id, before)
            result.tables.append(TableResult("audit_entries", days["audit_days"], before, rows))
            report.districts.append(result)
            if not dry_run:
                await _audit_run(conn, key or b"", result)
        if not dry_run:
            await _remove_audit(conn, min(batch, AUDIT_STEP))
            await conn.execute(PARTITIONS, PARTITIONS_AHEAD)
    finally:
        await conn.close()
    return report


async def _audit_run(conn: Any, key: bytes, result: DistrictResult) -> None:
    """The run's entry in the district's chain, when it deleted anything there."""
    from permissions.enums import DataCategory, Purpose
    from server.commands.operator_audit import record_operator_command

    tables = [t.table for t in result.tables if t.rows > 0]
    if not tables:
        return
    categories = [DataCategory(c) for t in tables for c in TABLE_CATEGORIES.get(t, ())]
    async with conn.transaction():
        await record_operator_command(
            conn,
            key,
            "pledgeql retention run",
            Purpose.LEGAL_COMPLIANCE,
            {result.district_id: tables},
            {result.district_id: categories},
        )


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def print_report(report: RetentionReport, out: TextIO) -> None:
    verb = "would be deleted" if report.dry_run else "deleted"
    heading = "Retention dry run" if report.dry_run else "Retention run"
    print(f"{heading} at {_iso(report.at)}" + (" (nothing was deleted)" if report.dry_run else ""), file=out)
    for district in report.districts:
        print(f"{district.name} ({district.district_id})", file=out)
        for t in district.tables:
            print(
                f"  {t.table:<16} kept {t.days:>5} days, older than {_iso(t.before)}: {t.rows} {verb}",
                file=out,
            )
    print(f"Total: {report.total} rows {verb}.", file=out)


def command(settings: Settings, args: argparse.Namespace) -> int:
    from permissions.policy import load_policy_set
    from server.db import server_urls

    dry_run = bool(getattr(args, "dry_run", False))
    key = None
    if not dry_run:
        if not settings.has_audit_key():
            print(
                "pledgeql retention run: no audit key, so audit entries cannot be removed with a valid anchor; "
                "set PLEDGEQL_AUDIT_KEY (or PLEDGEQL_DATA_DIR) to the one the server signs with, "
                "or use --dry-run to see what would be deleted",
                file=sys.stderr,
            )
            return 2
        key = settings.audit_key()
    default_days = load_policy_set(settings.policy_dirs).latest().retention_defaults.audit_days
    try:
        url = server_urls(settings).owner
        report = asyncio.run(
            run_retention(url, now=dt.datetime.now(dt.UTC), dry_run=dry_run, key=key, default_audit_days=default_days)
        )
    except (OSError, ConnectionError) as error:
        print(
            f"pledgeql retention run: cannot reach the database ({type(error).__name__}); "
            "check PLEDGEQL_DATABASE_URL and that the server is running",
            file=sys.stderr,
        )
        return 2
    print_report(report, sys.stdout)
    return 0
