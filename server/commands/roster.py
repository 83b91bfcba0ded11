"""`pledgeql roster import PATH --district ID [--dry-run]`: a OneRoster 1.1 or 1.2 CSV package.

PATH is a zip or a folder. The rules the import follows (bulk and delta,
tobedeleted, records missing from a bulk file, guardians, passwords,
demographics) are in ``server/commands/oneroster/plan.py``. Everything is written in
one transaction: a package that is refused, or a failure half-way, writes
nothing. ``--dry-run`` runs the same transaction and rolls it back, so its
report is exactly what the import would do.

An import is audited (API.md section 3): one entry in the district's chain,
written in the import's transaction (so it commits with the change),
actorRole OPERATOR, operationName ``pledgeql roster import``, purpose
INSTRUCTION, the roster tables as fields. A dry run writes none.

Exit status: 0 imported with no error (warnings are said); 1 imported, but
some lines had errors and were not imported (listed with file, line and
column); 2 refused, nothing written.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from permissions.enums import DataCategory, Purpose
from server.commands.oneroster.plan import Plan, make_plan
from server.commands.oneroster.problems import ERROR, NOTE, Problem, Problems, Refused
from server.commands.oneroster.reader import Package, open_package
from server.commands.oneroster.writer import LOCK, Counts, apply_plan, load_state
from server.commands.operator_audit import record_operator_command
from server.settings import Settings

BULK_RULE_FILES = ("users.csv", "classes.csv", "enrollments.csv")
# The tables an import reads and may change.
ROSTER_TABLES = ("schools", "classes", "users", "guardian_links", "enrollments", "class_teachers")


@dataclass
class ImportResult:
    package: Package | None = None
    district: str = ""
    plan: Plan | None = None
    counts: Counts = field(default_factory=dict)
    problems: Problems = field(default_factory=Problems)
    refused: Problem | None = None
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def status(self) -> int:
        if self.refused is not None:
            return 2
        return 1 if self.problems.errors else 0


def roster_categories(counts: Counts) -> list[DataCategory]:
    """What an import's users carry: names and ids of students, staff and guardians (and demographics when given)."""
    kinds = [DataCategory.DIRECTORY, DataCategory.IDENTIFIER, DataCategory.STAFF, DataCategory.CONTACT]
    return [*kinds, DataCategory.DEMOGRAPHIC] if "demographics" in counts else kinds


async def import_package(
    owner_url: str,
    path: Path,
    district_id: uuid.UUID,
    *,
    dry_run: bool,
    now: dt.datetime | None = None,
    key: bytes | None = None,
) -> ImportResult:
    """Read, check and write (or, dry, roll back) one package into one district.
    ``key`` (the audit key) is required unless ``dry_run``: the import's audit entry is chained with it."""
    import time

    from server.db import connect

    started = time.perf_counter()
    result = ImportResult(dry_run=dry_run)
    now = now or dt.datetime.now(dt.UTC)
    try:
        result.package = open_package(path, result.problems)
        conn = await connect(owner_url)
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.execute(LOCK, str(district_id))
                state = await load_state(conn, district_id, now.date())
                if state is None:
                    raise Refused(
                        Problem(ERROR, "--district", None, None, None, "no district has that id; nothing was imported")
                    )
                result.district = f"{state.name} ({district_id})"
                result.plan = make_plan(result.package, state, result.problems)
                result.counts = await apply_plan(conn, state, result.plan, now)
                if not dry_run:
                    if key is None:
                        raise ValueError("An import needs the audit key to record itself")
                    await record_operator_command(
                        conn,
                        key,
                        "pledgeql roster import",
                        Purpose.INSTRUCTION,
                        {district_id: ROSTER_TABLES},
                        {district_id: roster_categories(result.counts)},
                    )
            except BaseException:
                await transaction.rollback()
                raise
            if dry_run:
                await transaction.rollback()
            else:
                await transaction.commit()
        finally:
            await conn.close()
    except Refused as refusal:
        result.refused = refusal.problem
    result.seconds = time.perf_counter() - started
    return result


def print_result(result: ImportResult, out: TextIO, err: TextIO | None = None) -> None:
    """The import's report on ``out``; its errors (lines not imported) on ``err`` when given."""
    package = result.package
    if package is not None:
        print(
            f"OneRoster {package.version} package {Path(package.source).name} ({package.kind})"
            + (f" into district {result.district}" if result.district else ""),
            file=out,
        )
        files = ", ".join(f"{name} ({f.mode}, {len(f.records)} rows)" for name, f in package.files.items())
        print(f"Files read: {files or 'none'}", file=out)
        if package.unused:
            print(f"Not used by pledgeql: {', '.join(package.unused)}", file=out)
    if result.refused is not None:
        # An error: the command says it on stderr (``command``); a report without ``err`` says it here.
        if err is None:
            print(f"Refused, nothing was imported: {result.refused.describe()}", file=out)
    elif result.plan is not None:
        done = "would be" if result.dry_run else "were"
        print(
            ("Dry run: nothing was written. " if result.dry_run else "") + f"Records that {done} written, by kind:",
            file=out,
        )
        for kind, numbers in result.counts.items():
            print(f"  {kind:<15} " + ", ".join(f"{label} {n}" for label, n in numbers.items()), file=out)
        plan = result.plan
        bulk = [n for n in BULK_RULE_FILES if plan.modes.get(n) == "bulk"]
        applied = [n for n in bulk if n not in plan.bulk_skipped]
        if applied:
            print(
                "Bulk files are the whole roster: roster records missing from "
                + ", ".join(applied)
                + " were deactivated (users disabled, enrollments ended yesterday, teachers taken off classes).",
                file=out,
            )
        for name in plan.bulk_skipped:
            print(
                f"Not deactivated: {name} had lines that were not imported, so records missing from it were kept "
                "as they are; fix those lines and import again.",
                file=out,
            )
        if any(plan.stale.values()):
            print(
                "Skipped as older than what was last imported: "
                + ", ".join(f"{n} {name}" for name, n in plan.stale.items()),
                file=out,
            )
    problems = result.problems
    notes = problems.counts[NOTE]
    print(
        f"Problems: {problems.errors} error{'s' if problems.errors != 1 else ''} (lines not imported), "
        f"{problems.warnings} warning{'s' if problems.warnings != 1 else ''} (read by the rule they state), "
        f"{notes} note{'s' if notes != 1 else ''}",
        file=out,
    )
    for line in problems.lines():
        print(f"  {line}", file=err if err is not None and line.startswith(ERROR) else out)
    print(f"Took {result.seconds:.1f}s.", file=out)


def command(settings: Settings, args: argparse.Namespace) -> int:
    from server.db import server_urls

    try:
        district_id = uuid.UUID(args.district)
    except ValueError:
        print("pledgeql roster import: --district must be a district id (a UUID)", file=sys.stderr)
        return 2
    try:
        url = server_urls(settings).owner
        dry_run = bool(args.dry_run)
        key = None if dry_run else settings.audit_key()
        result = asyncio.run(import_package(url, Path(args.path), district_id, dry_run=dry_run, key=key))
    except (OSError, ConnectionError) as error:
        print(
            f"pledgeql roster import: cannot reach the database ({type(error).__name__}); "
            "check PLEDGEQL_DATABASE_URL and that the server is running; nothing was imported",
            file=sys.stderr,
        )
        return 2
    except Exception as error:
        import asyncpg

        if isinstance(error, asyncpg.PostgresError):
            print(
                f"pledgeql roster import: the database refused the import ({type(error).__name__}: "
                f"{getattr(error, 'detail', None) or 'see the server log'}); nothing was imported",
                file=sys.stderr,
            )
            return 2
        raise
    print_result(result, sys.stdout, sys.stderr)
    if result.refused is not None:
        print(f"pledgeql roster import: refused, nothing was imported: {result.refused.describe()}", file=sys.stderr)
    elif result.problems.errors:
        errors = result.problems.errors
        print(
            f"pledgeql roster import: {errors} line{'s' if errors != 1 else ''} not imported (the errors above); "
            "fix them in the package and import it again",
            file=sys.stderr,
        )
    return result.status
