"""How long a OneRoster import of 20,000 users with their enrollments takes.

Writes a OneRoster 1.1 bulk package (1 district, 20 schools, 800 classes,
18,000 students in 4 classes each, 700 teachers, 1,300 guardians linked
through agentSourcedIds: 20,000 users, 72,800 enrollments) to a temporary
folder and as a zip, imports it into a new, empty district, then imports it
again (nothing should change), and prints the times.

    .venv/bin/python bench/roster_bench.py [--users 20000] [--keep]

Uses PLEDGEQL_DATABASE_URL, or the embedded server under PLEDGEQL_DATA_DIR
(default ./.pledgeql), in a database of its own (pledgeql_roster_bench) that
it drops at the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

from server.commands.migrate import migrate
from server.commands.roster import import_package
from server.db import connect, server_urls
from server.settings import Settings

SCHOOLS = 20
CLASSES_PER_SCHOOL = 40
CLASSES_PER_STUDENT = 4
TEACHERS = 700
GUARDIANS = 1300
MANIFEST = {
    "academicSessions": "absent",
    "categories": "absent",
    "classes": "bulk",
    "classResources": "absent",
    "courses": "absent",
    "courseResources": "absent",
    "demographics": "absent",
    "enrollments": "bulk",
    "lineItems": "absent",
    "orgs": "bulk",
    "resources": "absent",
    "results": "absent",
    "users": "bulk",
}


def write_package(folder: Path, users: int) -> dict[str, int]:
    students = users - TEACHERS - GUARDIANS
    stamp = "2025-08-01T00:00:00.000Z"

    def write(name: str, header: list[str], rows: list[list[str]]) -> None:
        with (folder / name).open("w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle, lineterminator="\r\n")
            out.writerow(header)
            out.writerows(rows)

    with (folder / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, lineterminator="\r\n")
        out.writerow(["propertyName", "value"])
        out.writerow(["manifest.version", "1.0"])
        out.writerow(["oneroster.version", "1.1"])
        out.writerows([[f"file.{k}", v] for k, v in MANIFEST.items()])
        out.writerow(["source.systemName", "roster_bench"])
    orgs = [["dist-1", "", stamp, "Bench District", "district", "", ""]]
    orgs += [[f"sch-{s}", "", stamp, f"Bench School {s}", "school", "", "dist-1"] for s in range(SCHOOLS)]
    write(
        "orgs.csv", ["sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parentSourcedId"], orgs
    )
    classes = [
        [
            f"cls-{s}-{c}",
            "",
            stamp,
            f"Class {s}-{c}",
            "07",
            "",
            "",
            "scheduled",
            "",
            f"sch-{s}",
            "term-1",
            "Math",
            "",
            "",
        ]
        for s in range(SCHOOLS)
        for c in range(CLASSES_PER_SCHOOL)
    ]
    write(
        "classes.csv",
        [
            "sourcedId",
            "status",
            "dateLastModified",
            "title",
            "grades",
            "courseSourcedId",
            "classCode",
            "classType",
            "location",
            "schoolSourcedId",
            "termSourcedIds",
            "subjects",
            "subjectCodes",
            "periods",
        ],
        classes,
    )
    header = [
        "sourcedId",
        "status",
        "dateLastModified",
        "enabledUser",
        "orgSourcedIds",
        "role",
        "username",
        "userIds",
        "givenName",
        "familyName",
        "middleName",
        "identifier",
        "email",
        "sms",
        "phone",
        "agentSourcedIds",
        "grades",
        "password",
    ]
    rows = []
    for t in range(TEACHERS):
        rows.append(
            [
                f"tch-{t}",
                "",
                stamp,
                "true",
                f"sch-{t % SCHOOLS}",
                "teacher",
                f"teacher{t}",
                "",
                "Tea",
                f"Cher{t}",
                "",
                "",
                f"teacher{t}@bench.example",
                "",
                "",
                "",
                "",
                "",
            ]
        )
    for n in range(students):
        guardians = f"gdn-{n % GUARDIANS}" if n < 2 * GUARDIANS else ""
        rows.append(
            [
                f"stu-{n}",
                "",
                stamp,
                "true",
                f"sch-{n % SCHOOLS}",
                "student",
                f"student{n}",
                f"{{state:S{n:07d}}}",
                "Stu",
                f"Dent{n}",
                "",
                f"{n:07d}",
                f"student{n}@bench.example",
                "",
                "",
                guardians,
                "07",
                "",
            ]
        )
    for g in range(GUARDIANS):
        rows.append(
            [
                f"gdn-{g}",
                "",
                stamp,
                "true",
                "dist-1",
                "parent",
                f"guardian{g}",
                "",
                "Guar",
                f"Dian{g}",
                "",
                "",
                f"guardian{g}@bench.example",
                "",
                "555-0100",
                "",
                "",
                "",
            ]
        )
    write("users.csv", header, rows)
    enrollments = []
    for c, klass in enumerate(classes):
        enrollments.append(
            [f"enr-t-{c}", "", stamp, klass[0], klass[9], f"tch-{c % TEACHERS}", "teacher", "true", "2025-08-15", ""]
        )
    for n in range(students):
        school = n % SCHOOLS
        for k in range(CLASSES_PER_STUDENT):
            c = (n // SCHOOLS + k * 7) % CLASSES_PER_SCHOOL
            enrollments.append(
                [
                    f"enr-{n}-{k}",
                    "",
                    stamp,
                    f"cls-{school}-{c}",
                    f"sch-{school}",
                    f"stu-{n}",
                    "student",
                    "false",
                    "2025-08-15",
                    "",
                ]
            )
    write(
        "enrollments.csv",
        [
            "sourcedId",
            "status",
            "dateLastModified",
            "classSourcedId",
            "schoolSourcedId",
            "userSourcedId",
            "role",
            "primary",
            "beginDate",
            "endDate",
        ],
        enrollments,
    )
    return {"users": len(rows), "enrollments": len(enrollments), "classes": len(classes)}


async def run(users: int, keep: bool) -> int:
    urls = server_urls(Settings.from_env()).with_database("pledgeql_roster_bench")
    admin = await connect(urls.with_database("postgres").owner)
    try:
        await admin.execute('DROP DATABASE IF EXISTS "pledgeql_roster_bench" WITH (FORCE)')
    finally:
        await admin.close()
    await migrate(urls)
    conn = await connect(urls.owner)
    district = uuid.uuid4()
    await conn.execute("INSERT INTO districts (id, name) VALUES ($1, 'Bench District')", district)
    await conn.close()
    work = Path(tempfile.mkdtemp(prefix="roster-bench-"))
    try:
        folder = work / "package"
        folder.mkdir()
        started = time.perf_counter()
        sizes = write_package(folder, users)
        archive = work / "package.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for file in sorted(folder.iterdir()):
                z.write(file, file.name)
        print(
            f"package: {sizes} written in {time.perf_counter() - started:.1f}s ({archive.stat().st_size} bytes zipped)"
        )
        for label, path in (("first import (zip)", archive), ("second import, same package", archive)):
            result = await import_package(urls.owner, path, district, dry_run=False)
            if result.refused is not None or result.problems.errors:
                print(f"{label}: failed: {result.refused or result.problems.lines()[:5]}", file=sys.stderr)
                return 1
            print(f"{label}: {result.seconds:.2f}s  {dict(result.counts)}")
        conn = await connect(urls.owner)
        try:
            stored = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM users WHERE district_id = $1) AS users, "
                "(SELECT count(*) FROM enrollments WHERE district_id = $1) AS enrollments, "
                "(SELECT count(*) FROM class_teachers WHERE district_id = $1) AS teachers, "
                "(SELECT count(*) FROM guardian_links WHERE district_id = $1) AS links",
                district,
            )
        finally:
            await conn.close()
        print(f"stored: {dict(stored)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not keep:
            admin = await connect(urls.with_database("postgres").owner)
            try:
                await admin.execute('DROP DATABASE IF EXISTS "pledgeql_roster_bench" WITH (FORCE)')
            finally:
                await admin.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()
    return asyncio.run(run(args.users, args.keep))


if __name__ == "__main__":
    sys.exit(main())
