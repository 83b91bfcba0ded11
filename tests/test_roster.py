"""`pledgeql roster import`: OneRoster 1.1 and 1.2 packages written here to the specification."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from server.auth import mint_token
from server.commands.cli import main as cli_main
from server.commands.roster import import_package
from server.db import DatabaseUrls, connect
from server.settings import Settings
from tests.conftest import run_as_owner

STAMP = "2025-08-01T10:00:00.000Z"
LATER = "2025-09-01T10:00:00.000Z"
EARLIER = "2025-07-01T10:00:00.000Z"
MANIFEST_FILES = (
    "academicSessions",
    "categories",
    "classes",
    "classResources",
    "courses",
    "courseResources",
    "demographics",
    "enrollments",
    "lineItems",
    "orgs",
    "resources",
    "results",
    "users",
)
ORGS = ["sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parentSourcedId"]
CLASSES = [
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
]
USERS_11 = [
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
USERS_12 = [
    "sourcedId",
    "status",
    "dateLastModified",
    "enabledUser",
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
    "userMasterIdentifier",
    "resourceSourcedIds",
    "preferredGivenName",
    "preferredMiddleName",
    "preferredFamilyName",
    "primaryOrgSourcedId",
    "pronouns",
]
ROLES = [
    "sourcedId",
    "status",
    "dateLastModified",
    "userSourcedId",
    "roleType",
    "role",
    "beginDate",
    "endDate",
    "orgSourcedId",
    "userProfileSourcedId",
]
ENROLLMENTS = [
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
]
DEMOGRAPHICS = [
    "sourcedId",
    "status",
    "dateLastModified",
    "birthDate",
    "sex",
    "americanIndianOrAlaskaNative",
    "asian",
    "blackOrAfricanAmerican",
    "nativeHawaiianOrOtherPacificIslander",
    "white",
    "demographicRaceTwoOrMoreRaces",
    "hispanicOrLatinoEthnicity",
    "countryOfBirthCode",
    "stateOfBirthAbbreviation",
    "cityOfBirth",
    "publicSchoolResidenceStatus",
]
SECRET = "Hunter2-secret-pw"


@pytest.fixture(autouse=True)
def _servers_data_dir(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command signs its audit entry with the server's key (kept in its data dir)."""
    monkeypatch.setenv("PLEDGEQL_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("PLEDGEQL_AUDIT_KEY", raising=False)


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def write_package(
    where: Path,
    files: dict[str, list[list[str]] | str],
    *,
    version: str = "1.1",
    mode: str = "bulk",
    modes: dict[str, str] | None = None,
    bom: bool = False,
    as_zip: bool = True,
    manifest: bool = True,
) -> Path:
    """A package: ``files`` maps a file name to its rows (header first) or its raw text."""
    texts = {name: rows if isinstance(rows, str) else _csv(rows) for name, rows in files.items()}
    if manifest:
        names = [*MANIFEST_FILES, *(("roles",) if version == "1.2" else ())]
        lines = [["propertyName", "value"], ["manifest.version", "1.0"], ["oneroster.version", version]]
        for name in names:
            present = f"{name}.csv" in texts
            lines.append([f"file.{name}", (modes or {}).get(name, mode) if present else "absent"])
        lines += [["source.systemName", "test SIS"], ["source.systemCode", "t"]]
        texts = {"manifest.csv": _csv(lines), **texts}
    data = {name: ("\ufeff" if bom else "") + text for name, text in texts.items()}
    if as_zip:
        path = where.with_suffix(".zip")
        with zipfile.ZipFile(path, "w") as archive:
            for name, text in data.items():
                archive.writestr(name, text.encode("utf-8"))
        return path
    where.mkdir(parents=True, exist_ok=True)
    for name, text in data.items():
        (where / name).write_text(text, encoding="utf-8", newline="")
    return where


def _fetch(db: DatabaseUrls, sql: str, *args: Any) -> list[Any]:
    return run_as_owner(db, lambda c: c.fetch(sql, *args))


def _val(db: DatabaseUrls, sql: str, *args: Any) -> Any:
    return run_as_owner(db, lambda c: c.fetchval(sql, *args))


def _new_district(db: DatabaseUrls, collect_demographics: bool = True) -> str:
    district = uuid.uuid4()
    run_as_owner(
        db,
        lambda c: c.execute(
            "INSERT INTO districts (id, name, collect_demographics) VALUES ($1, $2, $3)",
            district,
            f"Roster test {district.hex[:6]}",
            collect_demographics,
        ),
    )
    return str(district)


def _import(
    path: Path, district: str, db: DatabaseUrls, monkeypatch: pytest.MonkeyPatch, capsys: Any, *extra: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("PLEDGEQL_DATABASE_URL", db.owner)
    status = cli_main(["roster", "import", str(path), "--district", district, *extra])
    out = capsys.readouterr()
    return status, out.out, out.err


def _snapshot(db: DatabaseUrls, district: str) -> dict[str, list[tuple[Any, ...]]]:
    d = uuid.UUID(district)
    tables = {
        "schools": "SELECT id, name, sourced_id FROM schools WHERE district_id = $1 ORDER BY id",
        "classes": "SELECT id, school_id, name, subject, grade_level, sourced_id FROM classes WHERE district_id = $1 "
        "ORDER BY id",
        "users": "SELECT id, role, username, sourced_id, disabled, school_id, first_name, last_name, email, phone, "
        "preferred_name, grade_level, student_number, state_id, gender, birth_date, ethnicity, updated_at "
        "FROM users WHERE district_id = $1 ORDER BY id",
        "enrollments": "SELECT class_id, student_id, begin_date, end_date, sourced_id FROM enrollments "
        "WHERE district_id = $1 ORDER BY 1, 2",
        "class_teachers": "SELECT class_id, teacher_id FROM class_teachers WHERE district_id = $1 ORDER BY 1, 2",
        "guardian_links": "SELECT guardian_id, student_id, relationship FROM guardian_links WHERE district_id = $1 "
        "ORDER BY 1, 2",
    }
    return {name: [tuple(r) for r in _fetch(db, sql, d)] for name, sql in tables.items()}


def _user(db: DatabaseUrls, district: str, sourced_id: str) -> Any:
    rows = _fetch(db, "SELECT * FROM users WHERE district_id = $1 AND sourced_id = $2", uuid.UUID(district), sourced_id)
    return rows[0] if rows else None


def bulk_files(*, drop_student: bool = False, drop_enrollment: bool = False) -> dict[str, list[list[str]] | str]:
    """A small 1.1 bulk roster: a district, two schools, two classes, staff, students and guardians."""
    orgs = [
        ORGS,
        ["dist-1", "", "", "Test District", "district", "", ""],
        ["sch-1", "", "", "North School", "school", "N1", "dist-1"],
        ["sch-2", "", "", "South School", "school", "S1", "dist-1"],
        ["dep-1", "", "", "Maths Department", "department", "", "sch-1"],
    ]
    classes = [
        CLASSES,
        [
            "cls-1",
            "",
            "",
            "Algebra, period 1",
            "09,10",
            "",
            "ALG1",
            "scheduled",
            "",
            "sch-1",
            "",
            "Math, Algebra",
            "",
            "1",
        ],
        ["cls-2", "", "", "Biology", "10", "", "BIO", "homeroom", "", "dep-1", "", "Science", "", ""],
        ["cls-3", "", "", "Art", "11", "", "ART", "scheduled", "", "sch-2", "", "Art", "", ""],
    ]
    users = [
        USERS_11,
        [
            "tch-1",
            "",
            "",
            "true",
            "sch-1",
            "teacher",
            "t.one",
            "",
            "Tess",
            "One",
            "",
            "",
            "t1@x.example",
            "",
            "",
            "",
            "",
            SECRET,
        ],
        [
            "tch-2",
            "",
            "",
            "true",
            "sch-2",
            "teacher",
            "t.two",
            "",
            "Theo",
            "Two",
            "",
            "",
            "t2@x.example",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "stu-1",
            "",
            "",
            "true",
            "sch-1",
            "student",
            "s.one",
            "{state:ST-001},{LDAP:9}",
            "Sam",
            "One",
            "",
            "000111",
            "s1@x.example",
            "",
            "",
            "gdn-1",
            "09",
            SECRET,
        ],
        [
            "stu-2",
            "",
            "",
            "true",
            "dep-1",
            "student",
            "s.two",
            "",
            "Sky",
            "Two",
            "",
            "000222",
            "",
            "",
            "",
            "",
            "10",
            "",
        ],
        ["stu-3", "", "", "false", "sch-2", "student", "s.three", "", "Sol", "Three", "", "", "", "", "", "", "11", ""],
        [
            "gdn-1",
            "",
            "",
            "true",
            "dist-1",
            "parent",
            "p.one",
            "",
            "Pat",
            "One",
            "",
            "",
            "p1@x.example",
            "",
            "555-0101",
            "",
            "",
            SECRET,
        ],
        [
            "gdn-2",
            "",
            "",
            "true",
            "",
            "guardian",
            "g.two",
            "",
            "Gil",
            "Two",
            "",
            "",
            "",
            "555-0102",
            "",
            "stu-2,stu-3",
            "",
            "",
        ],
        ["aid-1", "", "", "true", "sch-1", "aide", "a.one", "", "Ada", "Aide", "", "", "", "", "", "", "", ""],
    ]
    enrollments = [
        ENROLLMENTS,
        ["e-t1", "", "", "cls-1", "sch-1", "tch-1", "teacher", "true", "2025-08-15", ""],
        ["e-t2", "", "", "cls-3", "sch-2", "tch-2", "teacher", "true", "2025-08-15", ""],
        ["e-s1", "", "", "cls-1", "sch-1", "stu-1", "student", "false", "2025-08-15", ""],
        ["e-s1b", "", "", "cls-2", "sch-1", "stu-1", "student", "false", "2025-08-15", ""],
        ["e-s2", "", "", "cls-2", "sch-1", "stu-2", "student", "false", "2025-08-15", ""],
        ["e-s3", "", "", "cls-3", "sch-2", "stu-3", "student", "false", "2025-08-15", "2026-06-15"],
        ["e-a1", "", "", "cls-1", "sch-1", "aid-1", "aide", "false", "", ""],
    ]
    if drop_student:
        users = [u for u in users if u[0] != "stu-2"]
        enrollments = [e for e in enrollments if e[5] != "stu-2"]
        users = [[*u[:15], "stu-3", *u[16:]] if u[0] == "gdn-2" else u for u in users]
    if drop_enrollment:
        enrollments = [e for e in enrollments if e[0] != "e-s1b"]
    return {"orgs.csv": orgs, "classes.csv": classes, "users.csv": users, "enrollments.csv": enrollments}


# ------------------------------------------------------------------- bulk


def test_a_bulk_package_imports_schools_classes_users_guardians_and_enrollments(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    status, out, err = _import(write_package(tmp_path / "bulk", bulk_files()), district, db, monkeypatch, capsys)
    assert status == 0, out + err
    assert "OneRoster 1.1" in out and "0 errors" in out
    d = uuid.UUID(district)
    assert _val(db, "SELECT sourced_id FROM districts WHERE id = $1", d) == "dist-1"
    schools = {r["sourced_id"]: r for r in _fetch(db, "SELECT * FROM schools WHERE district_id = $1", d)}
    assert set(schools) == {"sch-1", "sch-2"}  # a department is not a school
    classes = {r["sourced_id"]: r for r in _fetch(db, "SELECT * FROM classes WHERE district_id = $1", d)}
    assert classes["cls-1"]["name"] == "Algebra, period 1" and classes["cls-1"]["grade_level"] == "9,10"
    assert classes["cls-1"]["subject"] == "Math"
    assert classes["cls-2"]["school_id"] == schools["sch-1"]["id"]  # the department's parent school

    stu1, stu2, stu3 = (_user(db, district, s) for s in ("stu-1", "stu-2", "stu-3"))
    assert stu1["role"] == "STUDENT" and stu1["username"] == "s.one" and stu1["grade_level"] == "9"
    assert stu1["state_id"] == "ST-001" and stu1["student_number"] == "000111"
    assert stu2["school_id"] == schools["sch-1"]["id"] and stu3["disabled"] is True
    assert _user(db, district, "tch-1")["role"] == "TEACHER"
    guardian = _user(db, district, "gdn-1")
    assert guardian["role"] == "GUARDIAN" and guardian["school_id"] is None and guardian["phone"] == "555-0101"
    assert _user(db, district, "aid-1") is None and "role 'aide'" in out

    links = {
        (r["guardian_id"], r["student_id"]): r["relationship"]
        for r in _fetch(db, "SELECT * FROM guardian_links WHERE district_id = $1", d)
    }
    gdn2 = _user(db, district, "gdn-2")["id"]
    assert links == {
        (guardian["id"], stu1["id"]): "parent",
        (gdn2, stu2["id"]): "guardian",
        (gdn2, stu3["id"]): "guardian",
    }
    teachers = _fetch(db, "SELECT * FROM class_teachers WHERE district_id = $1", d)
    assert {(t["class_id"], t["teacher_id"]) for t in teachers} == {
        (classes["cls-1"]["id"], _user(db, district, "tch-1")["id"]),
        (classes["cls-3"]["id"], _user(db, district, "tch-2")["id"]),
    }
    enrollments = _fetch(db, "SELECT * FROM enrollments WHERE district_id = $1", d)
    assert len(enrollments) == 4 and {e["sourced_id"] for e in enrollments} == {"e-s1", "e-s1b", "e-s2", "e-s3"}
    assert {e["end_date"] for e in enrollments} == {None, dt.date(2026, 6, 15)}

    # Passwords are never stored: the value is nowhere in the district's rows.
    dump = str(_fetch(db, "SELECT u.* FROM users u WHERE district_id = $1", d))
    assert SECRET not in dump and SECRET not in out + err
    assert "passwords on 3 lines" in out


def test_importing_the_same_package_again_changes_nothing(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    path = write_package(tmp_path / "bulk", bulk_files())
    assert _import(path, district, db, monkeypatch, capsys)[0] == 0
    before = _snapshot(db, district)
    status, out, err = _import(path, district, db, monkeypatch, capsys)
    assert status == 0, (out, err)
    assert _snapshot(db, district) == before
    assert "users           created 0, updated 0, unchanged 7" in out
    assert "enrollments     created 0, updated 0, unchanged 4" in out


def test_records_missing_from_a_bulk_file_are_deactivated_and_the_output_says_so(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    assert _import(write_package(tmp_path / "one", bulk_files()), district, db, monkeypatch, capsys)[0] == 0
    status, out, _ = _import(
        write_package(tmp_path / "two", bulk_files(drop_student=True, drop_enrollment=True)),
        district,
        db,
        monkeypatch,
        capsys,
    )
    assert status == 0, out
    assert "roster records missing from users.csv, classes.csv, enrollments.csv were deactivated" in out
    assert "disabled (missing from the bulk file) 1" in out
    assert _user(db, district, "stu-2")["disabled"] is True
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    ended = _fetch(
        db,
        "SELECT sourced_id, end_date FROM enrollments WHERE district_id = $1 AND end_date = $2",
        uuid.UUID(district),
        yesterday,
    )
    assert {r["sourced_id"] for r in ended} == {"e-s1b", "e-s2"}
    # A guardian's row is their whole record: the link to the missing child is gone.
    gdn2 = _user(db, district, "gdn-2")["id"]
    assert {r["student_id"] for r in _fetch(db, "SELECT * FROM guardian_links WHERE guardian_id = $1", gdn2)} == {
        _user(db, district, "stu-3")["id"]
    }


# ------------------------------------------------------------------ delta


def _delta_12(user_status: str = "active", modified: str = LATER, first_name: str = "Samuel") -> dict[str, Any]:
    users = [
        USERS_12,
        [
            "stu-1",
            user_status,
            modified,
            "true",
            "s.one",
            "",
            first_name,
            "One",
            "",
            "000111",
            "",
            "",
            "",
            "gdn-1",
            "09",
            "",
            "",
            "",
            "Sammy",
            "",
            "",
            "sch-1",
            "",
        ],
        [
            "stu-2",
            "tobedeleted",
            LATER,
            "true",
            "s.two",
            "",
            "Sky",
            "Two",
            "",
            "",
            "",
            "",
            "",
            "",
            "10",
            "",
            "",
            "",
            "",
            "",
            "",
            "sch-1",
            "",
        ],
    ]
    roles = [
        ROLES,
        ["r-1", "active", LATER, "stu-1", "primary", "student", "", "", "sch-1", ""],
        ["r-2", "active", LATER, "stu-2", "primary", "student", "", "", "sch-1", ""],
    ]
    enrollments = [
        ENROLLMENTS,
        ["e-s1", "tobedeleted", LATER, "cls-1", "sch-1", "stu-1", "student", "false", "", ""],
        ["e-t1", "tobedeleted", LATER, "cls-1", "sch-1", "tch-1", "teacher", "false", "", ""],
    ]
    return {"users.csv": users, "roles.csv": roles, "enrollments.csv": enrollments}


def test_a_delta_package_updates_deactivates_tobedeleted_and_skips_older_rows(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    first = bulk_files()
    first["users.csv"] = [row if row[0] == "sourcedId" else [*row[:2], STAMP, *row[3:]] for row in first["users.csv"]]
    assert _import(write_package(tmp_path / "bulk", first), district, db, monkeypatch, capsys)[0] == 0
    d = uuid.UUID(district)

    status, out, _ = _import(
        write_package(tmp_path / "delta", _delta_12(), version="1.2", mode="delta"), district, db, monkeypatch, capsys
    )
    assert status == 0, out
    stu1 = _user(db, district, "stu-1")
    assert stu1["first_name"] == "Samuel" and stu1["preferred_name"] == "Sammy" and stu1["disabled"] is False
    assert _user(db, district, "stu-2")["disabled"] is True
    assert _user(db, district, "stu-3")["disabled"] is True  # untouched by a delta (it was imported disabled)
    assert _user(db, district, "tch-2")["disabled"] is False  # a delta deactivates nothing it does not name
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    assert _val(db, "SELECT end_date FROM enrollments WHERE district_id = $1 AND sourced_id = 'e-s1'", d) == yesterday
    assert _val(db, "SELECT count(*) FROM class_teachers WHERE district_id = $1", d) == 1

    # An older row for the same user is skipped; a newer one applies.
    status, out, _ = _import(
        write_package(tmp_path / "old", _delta_12(modified=EARLIER, first_name="Old"), version="1.2", mode="delta"),
        district,
        db,
        monkeypatch,
        capsys,
    )
    assert status == 0 and "older than the record last imported" in out
    assert _user(db, district, "stu-1")["first_name"] == "Samuel"
    newer = _delta_12(modified="2025-10-01T00:00:00Z", first_name="Sam")
    assert (
        _import(write_package(tmp_path / "new", newer, version="1.2", mode="delta"), district, db, monkeypatch, capsys)[
            0
        ]
        == 0
    )
    assert _user(db, district, "stu-1")["first_name"] == "Sam"


def test_closing_a_class_ends_its_enrollments_takes_its_teachers_off_and_counts_both(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    d = uuid.UUID(district)
    files = bulk_files()
    classes, enrollments = files["classes.csv"], files["enrollments.csv"]
    assert isinstance(classes, list) and isinstance(enrollments, list)
    enrollments[6][-1] = ""  # e-s3, in cls-3: open, whatever the day the test runs
    assert _import(write_package(tmp_path / "bulk", files), district, db, monkeypatch, capsys)[0] == 0
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)

    # A delta closes cls-1 (one student, one teacher), whatever else the package holds.
    closing = {"classes.csv": [CLASSES, ["cls-1", "tobedeleted", LATER, *classes[1][3:]]]}
    status, out, _ = _import(
        write_package(tmp_path / "close", closing, mode="delta"), district, db, monkeypatch, capsys
    )
    assert status == 0, out
    assert "  classes         created 0, updated 0, unchanged 0, closed (tobedeleted) 1\n" in out
    assert "  enrollments     ended (class tobedeleted) 1\n" in out
    assert "  teachers        removed (class tobedeleted) 1\n" in out
    assert "users" not in out.split("by kind:", 1)[1].split("Problems", 1)[0]

    # A bulk classes.csv without cls-3 closes it the same way, counted under the bulk rule.
    bulk = {"orgs.csv": files["orgs.csv"], "classes.csv": [c for c in classes if c[0] != "cls-3"]}
    status, out, _ = _import(write_package(tmp_path / "missing", bulk), district, db, monkeypatch, capsys)
    assert status == 0, out
    assert "  classes         created 0, updated 0, unchanged 2, closed (missing from the bulk file) 1\n" in out
    assert "  enrollments     ended (class missing from the bulk file) 1\n" in out
    assert "  teachers        removed (class missing from the bulk file) 1\n" in out
    ended = _fetch(db, "SELECT sourced_id FROM enrollments WHERE district_id = $1 AND end_date = $2", d, yesterday)
    assert {r["sourced_id"] for r in ended} == {"e-s1", "e-s3"}
    assert _val(db, "SELECT count(*) FROM class_teachers WHERE district_id = $1", d) == 0


# ------------------------------------------------------------- encodings


def test_utf8_with_a_byte_order_mark_and_quoted_values_with_commas_and_quotes(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    files = bulk_files()
    users = files["users.csv"]
    assert isinstance(users, list)
    users[3] = [*users[3][:8], "Zoë", 'O"Brien, Jr.', *users[3][10:]]
    path = write_package(tmp_path / "bom", files, bom=True, as_zip=False)
    assert (path / "users.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    status, out, _ = _import(path, district, db, monkeypatch, capsys)
    assert status == 0, out
    student = _user(db, district, "stu-1")
    assert student["first_name"] == "Zoë" and student["last_name"] == 'O"Brien, Jr.'
    assert _user(db, district, "tch-1")["username"] == "t.one"  # the first column read despite the BOM


# ------------------------------------------------------------------ errors


def test_a_malformed_line_is_reported_with_file_line_and_column_and_the_rest_is_imported(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    files = bulk_files()
    text = _csv(files["users.csv"])  # type: ignore[arg-type]
    lines = text.split("\r\n")
    # Line 5 (stu-2): a quoted value of column 9 with text after its closing quote.
    lines[4] = lines[4].replace(",Sky,", ',"Sk"y,')
    # Line 4 (stu-1): one value too many.
    lines[3] = lines[3] + ",extra"
    files["users.csv"] = "\r\n".join(lines)
    status, out, err = _import(write_package(tmp_path / "bad", files), district, db, monkeypatch, capsys)
    assert status == 1, out
    # The errors go to stderr (API.md section 4), with what to do; the report stays on stdout.
    assert "error   users.csv line 5, column 9: malformed CSV" in err and "malformed CSV" not in out
    assert "error   users.csv line 4, column 19:" in err and "19 values where the header has 18 columns" in err
    assert "lines not imported (the errors above); fix them in the package and import it again" in err
    assert "Problems: " in out
    assert _user(db, district, "stu-1") is None and _user(db, district, "stu-2") is None
    assert _user(db, district, "tch-1") is not None and _user(db, district, "stu-3") is not None
    # Their enrollments name users that were not imported: reported, not imported.
    assert "enrollments.csv line 4, column 6 (userSourcedId): the user on line 4 of users.csv was not imported" in err
    assert "Not deactivated: users.csv had lines that were not imported" in out


def test_a_row_that_breaks_a_rule_names_its_column(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    files = bulk_files()
    enrollments = files["enrollments.csv"]
    assert isinstance(enrollments, list)
    enrollments.append(["e-x1", "", "", "cls-9", "sch-1", "stu-1", "student", "", "", ""])
    enrollments.append(["e-x2", "", "", "cls-1", "sch-1", "tch-2", "student", "", "", ""])
    enrollments.append(["e-x3", "", "", "cls-3", "sch-2", "stu-1", "student", "", "2025-13-01", ""])
    enrollments.append(["e-s2", "", "", "cls-3", "sch-2", "stu-2", "student", "", "", ""])
    status, _, err = _import(write_package(tmp_path / "rules", files), district, db, monkeypatch, capsys)
    assert status == 1
    assert "enrollments.csv line 9, column 4 (classSourcedId): class 'cls-9' is not in classes.csv" in err
    assert "enrollments.csv line 10, column 7 (role): a student enrollment of a teacher" in err
    assert "enrollments.csv line 11, column 9 (beginDate): not a date" in err
    assert "enrollments.csv line 12, column 1 (sourcedId): the same sourcedId as line 6" in err
    assert _val(db, "SELECT count(*) FROM enrollments WHERE district_id = $1", uuid.UUID(district)) == 4


def test_a_name_that_is_not_one_line_of_at_most_100_characters_is_refused_and_never_quoted(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    files = bulk_files()
    users = files["users.csv"]
    assert isinstance(users, list)
    given, family = USERS_11.index("givenName"), USERS_11.index("familyName")
    rows = {row[0]: row for row in users}
    rows["stu-2"][given] = "Sky\u0007"  # a control character
    rows["stu-3"][family] = "T" * 101
    rows["stu-1"][given] = "Mahsa\u200cNur"  # a joiner is part of a name, not a control
    status, _, err = _import(write_package(tmp_path / "names", files), district, db, monkeypatch, capsys)
    assert status == 1
    line = {row[0]: number for number, row in enumerate(users, start=1)}
    assert f"users.csv line {line['stu-2']}, column {given + 1} (givenName): not one line of at most 100" in err
    assert f"users.csv line {line['stu-3']}, column {family + 1} (familyName): not one line of at most 100" in err
    assert "Sky" not in err and "T" * 101 not in err
    assert _user(db, district, "stu-2") is None and _user(db, district, "stu-3") is None
    assert _user(db, district, "stu-1")["first_name"] == "Mahsa\u200cNur"


def test_a_header_without_a_required_column_is_refused_and_nothing_is_written(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    files = bulk_files()
    files["users.csv"] = [row[:6] + row[7:] for row in files["users.csv"]]  # no username column
    status, out, err = _import(write_package(tmp_path / "nouser", files), district, db, monkeypatch, capsys)
    assert status == 2
    assert "users.csv line 1, column 1: the header lacks the column username" in out + err
    assert _snapshot(db, district) == {k: [] for k in _snapshot(db, district)}


def test_a_oneroster_1_0_package_is_refused_saying_what_it_is(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    v10_users = [
        [
            "sourcedId",
            "status",
            "dateLastModified",
            "orgSourcedIds",
            "role",
            "username",
            "userId",
            "givenName",
            "familyName",
            "identifier",
            "email",
            "sms",
            "phone",
            "agents",
        ],
        ["u-1", "active", STAMP, "sch-1", "student", "s.one", "", "Sam", "One", "", "", "", "", ""],
    ]
    path = write_package(
        tmp_path / "v10", {"users.csv": v10_users, "orgs.csv": bulk_files()["orgs.csv"]}, manifest=False
    )
    status, _, err = _import(path, district, db, monkeypatch, capsys)
    assert status == 2
    assert "OneRoster 1.0 package" in err and "userId and agents" in err and "1.1 or 1.2" in err
    declared = write_package(tmp_path / "v10m", bulk_files(), version="1.0")
    status, _, err = _import(declared, district, db, monkeypatch, capsys)
    assert status == 2 and "manifest.csv line 3, column 2 (value): this is a OneRoster 1.0 package" in err
    assert _snapshot(db, district)["users"] == []


def test_a_set_of_csv_files_that_is_not_oneroster_is_refused(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    path = write_package(
        tmp_path / "grades", {"grades.csv": [["student", "grade"], ["a", "B+"]]}, manifest=False, as_zip=False
    )
    status, _, err = _import(path, district, db, monkeypatch, capsys)
    assert status == 2 and "not a OneRoster package" in err and "grades.csv" in err
    (tmp_path / "notazip.zip").write_bytes(b"PK-not-really")
    status, _, err = _import(tmp_path / "notazip.zip", district, db, monkeypatch, capsys)
    assert status == 2 and "not a zip file" in err


def test_a_package_of_another_district_is_refused(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    assert _import(write_package(tmp_path / "one", bulk_files()), district, db, monkeypatch, capsys)[0] == 0
    other = bulk_files()
    other["orgs.csv"] = [[("dist-OTHER" if v == "dist-1" else v) for v in row] for row in other["orgs.csv"]]
    before = _snapshot(db, district)
    status, _, err = _import(write_package(tmp_path / "other", other), district, db, monkeypatch, capsys)
    assert status == 2 and "check --district" in err
    assert _snapshot(db, district) == before
    status, _, err = _import(write_package(tmp_path / "x", bulk_files()), str(uuid.uuid4()), db, monkeypatch, capsys)
    assert status == 2 and "no district has that id" in err


def test_a_dry_run_reports_what_would_happen_and_writes_nothing(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    district = _new_district(db)
    path = write_package(tmp_path / "dry", bulk_files())
    status, out, _ = _import(path, district, db, monkeypatch, capsys, "--dry-run")
    assert status == 0 and "Dry run: nothing was written" in out
    assert "users           created 7" in out
    assert _snapshot(db, district) == {k: [] for k in _snapshot(db, district)}
    assert _val(db, "SELECT sourced_id FROM districts WHERE id = $1", uuid.UUID(district)) is None


def test_demographics_are_imported_only_where_the_district_collects_them(
    db: DatabaseUrls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    files = bulk_files()
    files["demographics.csv"] = [
        DEMOGRAPHICS,
        [
            "stu-1",
            "",
            "",
            "2011-04-17",
            "female",
            "false",
            "true",
            "false",
            "false",
            "true",
            "false",
            "TRUE",
            "",
            "",
            "",
            "",
        ],
        ["tch-1", "", "", "1980-01-01", "male", "", "", "", "", "", "", "", "", "", "", ""],
    ]
    collecting = _new_district(db, collect_demographics=True)
    status, out, _ = _import(write_package(tmp_path / "demo", files), collecting, db, monkeypatch, capsys)
    assert status == 0, out
    student = _user(db, collecting, "stu-1")
    assert student["birth_date"] == dt.date(2011, 4, 17) and student["gender"] == "female"
    assert student["ethnicity"] == ["Asian", "Hispanic or Latino", "White"]
    assert "pledgeql keeps demographics of students only" in out
    # A demographic value is never quoted in the report ('TRUE' above is the race column of line 2).
    assert "demographics.csv line 2, column 12 (hispanicOrLatinoEthnicity): not the OneRoster spelling" in out
    assert "TRUE" not in out.split("demographics.csv", 1)[1]
    assert _user(db, collecting, "tch-1")["birth_date"] is None

    not_collecting = _new_district(db, collect_demographics=False)
    status, out, _ = _import(write_package(tmp_path / "demo2", files), not_collecting, db, monkeypatch, capsys)
    assert status == 0
    assert "does not collect demographic data (collectDemographics is off); 2 rows dropped" in out
    student = _user(db, not_collecting, "stu-1")
    assert student["birth_date"] is None and student["gender"] is None and student["ethnicity"] is None


async def test_imported_users_can_sign_in_and_see_what_their_roster_gives_them(
    db: DatabaseUrls, tmp_path: Path, settings: Settings, client: Any
) -> None:
    conn = await connect(db.owner)
    district = uuid.uuid4()
    try:
        await conn.execute("INSERT INTO districts (id, name) VALUES ($1, 'Signed in')", district)
        result = await import_package(
            db.owner, write_package(tmp_path / "api", bulk_files()), district, dry_run=False, key=settings.audit_key()
        )
        assert result.status == 0, result.problems.lines()
        ids = {
            r["sourced_id"]: r["id"] for r in await conn.fetch("SELECT * FROM users WHERE district_id = $1", district)
        }
    finally:
        await conn.close()

    async def ask(user: str, purpose: str, query: str) -> Any:
        token = mint_token(settings, ids[user], [purpose], 600)
        response = await client.post(
            "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}", "X-Purpose": purpose}
        )
        return response.json()

    body = await ask("tch-1", "INSTRUCTION", "{ students(first: 50) { nodes { id firstName } } }")
    assert {n["id"] for n in body["data"]["students"]["nodes"]} == {str(ids["stu-1"])}
    body = await ask("gdn-2", "REPORTING", "{ students(first: 50) { nodes { id } } }")
    assert {n["id"] for n in body["data"]["students"]["nodes"]} == {str(ids["stu-2"]), str(ids["stu-3"])}
    body = await ask("stu-3", "STUDENT_LEARNING", "{ me { id } }")
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"  # enabledUser false
