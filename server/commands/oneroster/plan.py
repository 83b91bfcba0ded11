"""From the package's records to what the import writes, checking every value.

Rules where the specification leaves a choice, or where real exports stray:

- A record is keyed by its ``sourcedId``, unique per district, so importing
  the same package twice changes nothing the second time.
- A row with an error (a missing required value, a reference to nothing, a
  value that cannot be read) is not imported, nor is what depends on it; the
  rest is. A row with a warning is imported as the warning says.
- Delta files: ``tobedeleted`` deactivates (users disabled, student
  enrollments ended yesterday, teachers taken off the class, a class's
  enrollments ended). A delta row older (``dateLastModified``) than what was
  last imported for the record is skipped.
- Bulk files are the whole roster: a roster record (one with a sourcedId)
  missing from a bulk file is deactivated the same way; a ``tobedeleted``
  row in a bulk file counts as missing. A bulk file with a row that could
  not be imported deactivates nothing (the missing row might be that one).
  District administrators are never deactivated or created by an import.
- Schools are orgs of type ``school``; a ``department`` stands for its parent
  school. Schools are never deleted by an import.
- Guardians are users with role parent, guardian or relative, linked to
  students through ``agentSourcedIds`` (from either side). A user's row is
  their whole record: their links become exactly the ones the package names.
- Passwords are never read into the database. Demographics are imported only
  where the district collects them.
- Grades are stored without a leading zero ("09" becomes "9").
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from permissions.errors import MAX_NAME, is_plain_text
from server.commands.oneroster import spec
from server.commands.oneroster.problems import ERROR, NOTE, WARNING, Problem, Problems, Refused
from server.commands.oneroster.reader import CsvFile, Package, Record

STAFF_WITH_SCHOOL = ("STUDENT", "TEACHER", "SCHOOL_ADMIN")
STATE_ID_TYPES = frozenset({"state", "stateid", "state_id", "statestudentid", "ssid", "sasid"})
USER_ID = re.compile(r"^\{\s*([^:{}]+?)\s*:\s*([^{}]*?)\s*\}$")


@dataclass
class Existing:
    id: uuid.UUID
    modified: dt.datetime | None
    role: str | None = None
    school_id: uuid.UUID | None = None
    pair: tuple[uuid.UUID, uuid.UUID] | None = None


@dataclass
class DistrictState:
    """What the district already holds that the plan needs, keyed by sourcedId."""

    district_id: uuid.UUID
    name: str
    sourced_id: str | None
    collect_demographics: bool
    schools: dict[str, Existing]
    classes: dict[str, Existing]
    users: dict[str, Existing]
    usernames: dict[str, str | None]  # username -> its user's sourcedId (None: not a roster user)
    enrollments: dict[str, Existing]
    today: dt.date


@dataclass
class SchoolRow:
    id: uuid.UUID
    sourced_id: str
    name: str
    modified: dt.datetime | None
    new: bool


@dataclass
class ClassRow:
    id: uuid.UUID
    school_id: uuid.UUID
    name: str
    subject: str | None
    grade_level: str | None
    sourced_id: str
    modified: dt.datetime | None
    new: bool


USER_COLUMNS = (
    "username",
    "disabled",
    "school_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "preferred_name",
    "grade_level",
    "student_number",
    "state_id",
)


@dataclass
class UserRow:
    id: uuid.UUID
    role: str
    sourced_id: str
    values: dict[str, Any]  # USER_COLUMNS
    modified: dt.datetime | None
    new: bool


@dataclass(slots=True)
class EnrollmentRow:
    class_id: uuid.UUID
    student_id: uuid.UUID
    begin_date: dt.date | None
    end_date: dt.date | None
    sourced_id: str
    modified: dt.datetime | None


@dataclass
class Plan:
    version: str
    modes: dict[str, str]
    district_sourced_id: str | None = None
    schools: list[SchoolRow] = field(default_factory=list)
    classes: list[ClassRow] = field(default_factory=list)
    classes_closed: list[uuid.UUID] = field(default_factory=list)
    users: list[UserRow] = field(default_factory=list)
    user_columns: tuple[str, ...] = ()
    users_disabled: list[uuid.UUID] = field(default_factory=list)
    demographics: list[tuple[uuid.UUID, str | None, dt.date | None, list[str] | None]] = field(default_factory=list)
    enrollments: list[EnrollmentRow] = field(default_factory=list)
    enrollments_ended: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    teachers: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    teachers_removed: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    linked_users: list[uuid.UUID] = field(default_factory=list)
    links: list[tuple[uuid.UUID, uuid.UUID, str]] = field(default_factory=list)
    # sourcedIds a bulk file keeps (None: no bulk rule for that file)
    bulk_users: list[str] | None = None
    bulk_classes: list[str] | None = None
    bulk_enrollments: list[str] | None = None
    bulk_teachers: list[tuple[uuid.UUID, uuid.UUID]] | None = None
    bulk_skipped: list[str] = field(default_factory=list)
    rows_read: dict[str, int] = field(default_factory=dict)
    stale: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@functools.cache
def _lower_map(allowed: tuple[str, ...]) -> dict[str, str]:
    return {a.lower(): a for a in allowed}


def normalize_grade(raw: str) -> str:
    value = raw.strip()
    if value.isdigit():
        return value.lstrip("0") or "0"
    return value


class _File:
    """Reading one file's values, reporting problems at their line and column."""

    def __init__(self, file: CsvFile, problems: Problems) -> None:
        self.file = file
        self.name = file.name
        self.problems = problems
        self.delta = file.mode == "delta"
        # Values of this file are personal (sex, race): messages never quote them.
        self.private = file.name == "demographics.csv"
        self.seen: dict[str, int] = {}
        self._times: dict[str, dt.datetime] = {}  # well-formed dateLastModified values, parsed once
        self._dates: dict[str, dt.date | None] = {}

    def report(self, severity: str, rec: Record, column: str | None, message: str, kind: str | None = None) -> None:
        position = self.file.column(column) if column else None
        self.problems.add(severity, self.name, rec.line, position, column, message, kind)

    def error(self, rec: Record, column: str | None, message: str, kind: str | None = None) -> None:
        self.report(ERROR, rec, column, message, kind)

    def warn(self, rec: Record, column: str | None, message: str, kind: str | None = None) -> None:
        self.report(WARNING, rec, column, message, kind)

    @staticmethod
    def value(rec: Record, column: str) -> str:
        return rec.values.get(column, "")

    def required(self, rec: Record, column: str) -> str | None:
        value = self.value(rec, column)
        if not value:
            self.error(rec, column, "required and empty; the line is not imported", kind="required and empty")
            return None
        return value

    def person_name(self, rec: Record, column: str, required: bool = True) -> str | None:
        """A name: one line of at most MAX_NAME characters. A required one that is not refuses
        the line; an optional one is left out, with a warning (the value is never quoted)."""
        value = self.required(rec, column) if required else self.value(rec, column)
        if not value or (len(value) <= MAX_NAME and is_plain_text(value)):
            return value or None
        problem = f"not one line of at most {MAX_NAME} characters (a control character or line break, or too long)"
        if required:
            self.error(rec, column, f"{problem}; the line is not imported", kind="name")
        else:
            self.warn(rec, column, f"{problem}; left out", kind="name")
        return None

    def sourced_id(self, rec: Record) -> str | None:
        sid = self.required(rec, "sourcedId")
        if sid is None:
            return None
        first = self.seen.get(sid)
        if first is not None:
            self.error(rec, "sourcedId", f"the same sourcedId as line {first}; this line is not imported")
            return None
        self.seen[sid] = rec.line
        return sid

    def rows(self) -> Iterator[tuple[Record, str, str, dt.datetime | None]]:
        """(record, sourcedId, status, dateLastModified) of each line with a usable sourcedId.

        Status and dateLastModified are read on every line, used or not, so
        their problems are reported wherever they occur.
        """
        for rec in self.file.records:
            sid = self.sourced_id(rec)
            if sid is not None:
                yield rec, sid, self.status(rec), self.modified(rec)

    def status(self, rec: Record) -> str:
        raw = rec.values.get("status", "")
        if raw == "active" or (not raw and not self.delta):
            return "active"
        value = raw.lower()
        if not raw:
            if self.delta:
                self.warn(rec, "status", "empty in a delta file; read as active", kind="empty status")
            return "active"
        if value == "inactive":
            self.warn(rec, "status", "'inactive' is OneRoster 1.0; read as tobedeleted", kind="status inactive")
            value = "tobedeleted"
        elif value not in spec.STATUSES:
            self.warn(rec, "status", f"{raw!r} is not active or tobedeleted; read as active", kind=f"status {raw}")
            return "active"
        elif value != raw:
            self.warn(rec, "status", f"{raw!r} read as {value!r}", kind=f"status {raw}")
        if value == "tobedeleted" and not self.delta:
            self.warn(
                rec,
                "status",
                "tobedeleted in a bulk file: the record is treated as missing from the roster",
                kind="tobedeleted in bulk",
            )
        return value

    def modified(self, rec: Record) -> dt.datetime | None:
        raw = rec.values.get("dateLastModified", "")
        if not raw:
            return None
        known = self._times.get(raw)
        if known is not None:
            return known
        text = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
        try:
            if len(text) == 10:
                day = dt.date.fromisoformat(text)
                self.warn(
                    rec,
                    "dateLastModified",
                    "a date without a time; read as midnight UTC",
                    kind="dateLastModified without time",
                )
                return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            value = dt.datetime.fromisoformat(text)
            value = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
            self._times[raw] = value
        except ValueError:
            self.warn(
                rec,
                "dateLastModified",
                "not an ISO 8601 date and time (2024-01-31T12:00:00Z); read as empty",
                kind="dateLastModified unreadable",
            )
            return None
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)

    def enum(self, rec: Record, column: str, allowed: tuple[str, ...], *, required: bool) -> str | None:
        raw = rec.values.get(column, "")
        if raw in allowed:
            return raw
        if not raw:
            if required:
                self.error(rec, column, "required and empty; the line is not imported", kind="required and empty")
            return None
        value = _lower_map(allowed).get(raw.lower())
        shown = "the value" if self.private else repr(raw)
        kind = f"{column} value" if self.private else f"{column} {raw}"
        if value is None:
            message = f"{shown} is not one of {', '.join(allowed)}"
            if required:
                self.error(rec, column, message + "; the line is not imported", kind=kind)
            else:
                self.warn(rec, column, message + "; read as empty", kind=kind)
            return None
        if value != raw:
            read = "by its lower-case spelling" if self.private else f"as {value!r}"
            self.warn(rec, column, f"{shown} is not the OneRoster spelling; read {read}", kind=kind)
        return value

    def boolean(self, rec: Record, column: str) -> bool | None:
        raw = self.value(rec, column)
        if not raw:
            return None
        if raw in ("true", "false"):
            return raw == "true"
        if raw.lower() in ("true", "false"):
            if self.private:
                self.warn(
                    rec,
                    column,
                    "not the OneRoster spelling of true or false; read by its lower-case spelling",
                    kind="bool case",
                )
            else:
                self.warn(
                    rec, column, f"{raw!r} is not the OneRoster spelling; read as {raw.lower()!r}", kind=f"bool {raw}"
                )
            return raw.lower() == "true"
        shown = "the value" if self.private else repr(raw)
        self.warn(rec, column, f"{shown} is not true or false; read as empty", kind=f"bool {column}")
        return None

    def date(self, rec: Record, column: str) -> tuple[bool, dt.date | None]:
        """(readable, value): an empty value is readable and None."""
        raw = rec.values.get(column, "")
        if not raw:
            return True, None
        if raw in self._dates:
            day = self._dates[raw]
            return day is not None, day
        try:
            day = dt.date.fromisoformat(raw[:10] if len(raw) > 10 and raw[10] == "T" else raw)
        except ValueError:
            day = None
        self._dates[raw] = day
        return day is not None, day

    def items(self, rec: Record, column: str) -> list[str]:
        return [v.strip() for v in self.value(rec, column).split(",") if v.strip()]


def _state_id(f: _File, rec: Record) -> str | None:
    found = None
    for item in f.items(rec, "userIds"):
        match = USER_ID.match(item)
        if match is None:
            f.warn(rec, "userIds", "a userId is not of the form {type:identifier}; ignored", kind="userIds form")
            continue
        if match.group(1).strip().lower() in STATE_ID_TYPES and found is None:
            found = match.group(2).strip() or None
    return found


class Planner:
    def __init__(self, package: Package, state: DistrictState, problems: Problems) -> None:
        self.package = package
        self.state = state
        self.problems = problems
        self.plan = Plan(package.version, {name: f.mode for name, f in package.files.items()})
        self.orgs: dict[str, tuple[str, str, int]] = {}  # sourcedId -> (type, parent, line)
        self.schools: dict[str, uuid.UUID] = {}  # imported now
        self.classes: dict[str, tuple[uuid.UUID, uuid.UUID]] = {}  # imported now: (id, school)
        self.users: dict[str, tuple[uuid.UUID, str, str]] = {}  # imported now: (id, role, oneroster role)
        self.user_lines: dict[str, int] = {}  # every users.csv row by sourcedId, imported or not
        self.not_accounts: set[str] = set()  # users of roles pledgeql has no account for
        self.courses: dict[str, list[str]] = {}
        self.closed_classes: set[str] = set()  # tobedeleted in the package
        self.sessions: set[str] = set()
        self.roles: dict[str, list[tuple[str, str, str, int]]] = {}  # 1.2: see roles_file

    def _file(self, name: str) -> _File | None:
        file = self.package.files.get(name)
        if file is None:
            return None
        self.plan.rows_read[name] = len(file.records)
        return _File(file, self.problems)

    def _stale(self, f: _File, rec: Record, existing: Existing | None, modified: dt.datetime | None) -> bool:
        if not f.delta or existing is None or existing.modified is None or modified is None:
            return False
        if modified < existing.modified:
            self.plan.stale[f.name] += 1
            f.report(
                NOTE,
                rec,
                "dateLastModified",
                "older than the record last imported; skipped",
                kind="older than the record",
            )
            return True
        return False

    @staticmethod
    def _deactivate(f: _File, rec: Record, existing: Existing | None, into: list[uuid.UUID]) -> None:
        """A tobedeleted row of a delta file deactivates its record; in a bulk file it counts as missing."""
        if not f.delta:
            return
        if existing is not None:
            into.append(existing.id)
        else:
            f.report(NOTE, rec, "status", "tobedeleted, and never imported: nothing to do")

    def _bulk_rule_applies(self, f: _File, *needed: str) -> bool:
        """Whether a bulk file deactivates what it does not name: not if a line of it, or of a file
        it needs, was not imported (the missing record might be that line)."""
        if f.delta:
            return False
        failed = sorted({f.name, *needed} & self.problems.files_with_errors)
        self.plan.bulk_skipped.extend(failed)
        return not failed

    # ------------------------------------------------------------------ orgs

    def orgs_file(self, f: _File) -> None:
        district_orgs: list[tuple[str, int]] = []
        for rec, sid, status, modified in f.rows():
            kind = f.enum(rec, "type", spec.ORG_TYPES, required=True)
            name = f.required(rec, "name")
            if kind is None or name is None:
                continue
            self.orgs[sid] = (kind, f.value(rec, "parentSourcedId"), rec.line)
            if kind == "district":
                district_orgs.append((sid, rec.line))
            if kind != "school":
                continue
            existing = self.state.schools.get(sid)
            if status == "tobedeleted":
                if f.delta:
                    f.warn(rec, "status", "schools are kept: remove their classes and users in their own files")
                continue
            if self._stale(f, rec, existing, modified):
                continue
            school_id = existing.id if existing else uuid.uuid4()
            self.plan.schools.append(SchoolRow(school_id, sid, name, modified, existing is None))
            self.schools[sid] = school_id
        for _kind, parent, line in self.orgs.values():
            if (
                parent
                and parent not in self.orgs
                and parent not in self.state.schools
                and parent != self.state.sourced_id
            ):
                self.problems.add(
                    WARNING,
                    "orgs.csv",
                    line,
                    f.file.column("parentSourcedId"),
                    "parentSourcedId",
                    f"the parent org {parent!r} is not in orgs.csv nor already imported",
                )
        if len(district_orgs) > 1:
            self.problems.add(
                WARNING,
                "orgs.csv",
                district_orgs[1][1],
                f.file.column("type"),
                "type",
                "a second org of type district; the package goes into the one district named on the command line",
            )
        if district_orgs:
            sid, line = district_orgs[0]
            if self.state.sourced_id and all(s != self.state.sourced_id for s, _ in district_orgs):
                raise Refused(
                    Problem(
                        ERROR,
                        "orgs.csv",
                        line,
                        f.file.column("sourcedId"),
                        "sourcedId",
                        f"this package is the roster of district org {sid!r}, but district {self.state.name!r} "
                        f"was imported from {self.state.sourced_id!r}: check --district",
                    )
                )
            if not self.state.sourced_id:
                self.plan.district_sourced_id = sid

    def school_of(self, org: str, depth: int = 0) -> tuple[uuid.UUID | None, str]:
        """The school an org stands for, or None and why not."""
        if org in self.schools:
            return self.schools[org], ""
        info = self.orgs.get(org)
        if info is not None and info[0] == "department" and depth < 3:
            parent = info[1]
            if not parent:
                return None, f"org {org!r} is a department without a parent school"
            school, why = self.school_of(parent, depth + 1)
            if school is None:
                return None, f"org {org!r} is a department whose parent school {parent!r} " + (
                    "is not in orgs.csv nor already imported" if parent not in self.orgs else f"cannot be used: {why}"
                )
            return school, ""
        existing = self.state.schools.get(org)
        if existing is not None:
            return existing.id, ""
        if info is not None:
            if info[0] == "school":
                return None, f"org {org!r} was not imported (see its line {info[2]} in orgs.csv)"
            return None, f"org {org!r} is a {info[0]}, not a school"
        return None, f"org {org!r} is not in orgs.csv nor already imported"

    # -------------------------------------------------- sessions and courses

    def sessions_file(self, f: _File) -> None:
        for rec, sid, _, _ in f.rows():
            f.enum(rec, "type", ("gradingPeriod", "semester", "schoolYear", "term"), required=False)
            for column in ("startDate", "endDate"):
                readable, _ = f.date(rec, column)
                if not readable:
                    f.warn(rec, column, "not a date (YYYY-MM-DD); not used", kind=f"{column} unreadable")
            self.sessions.add(sid)

    def courses_file(self, f: _File) -> None:
        for rec, sid, _, _ in f.rows():
            org = f.value(rec, "orgSourcedId")
            if org and org not in self.orgs and org not in self.state.schools:
                f.warn(rec, "orgSourcedId", f"org {org!r} is not in orgs.csv nor already imported")
            self.courses[sid] = f.items(rec, "subjects")

    # --------------------------------------------------------------- classes

    def classes_file(self, f: _File) -> None:
        kept: list[str] = []
        for rec, sid, status, modified in f.rows():
            title = f.required(rec, "title")
            school_ref = f.required(rec, "schoolSourcedId")
            f.enum(rec, "classType", spec.CLASS_TYPES, required=False)
            course = f.value(rec, "courseSourcedId")
            if course and "courses.csv" in self.package.files and course not in self.courses:
                f.warn(rec, "courseSourcedId", f"course {course!r} is not in courses.csv", kind="unknown course")
            if "academicSessions.csv" in self.package.files:
                for term in f.items(rec, "termSourcedIds"):
                    if term not in self.sessions:
                        f.warn(rec, "termSourcedIds", f"term {term!r} is not in academicSessions.csv", kind="term")
            if status == "tobedeleted":
                self.closed_classes.add(sid)
            if title is None or school_ref is None:
                continue
            if status == "tobedeleted" and not f.delta:
                continue
            school, why = self.school_of(school_ref)
            if school is None:
                f.error(rec, "schoolSourcedId", why + "; the class is not imported", kind="class school")
                continue
            existing = self.state.classes.get(sid)
            if status == "tobedeleted":
                self._deactivate(f, rec, existing, self.plan.classes_closed)
                continue
            if existing is not None and self._stale(f, rec, existing, modified):
                self.classes[sid] = (existing.id, existing.school_id or school)
                kept.append(sid)
                continue
            subjects = f.items(rec, "subjects") or self.courses.get(course, [])
            grades = [normalize_grade(g) for g in f.items(rec, "grades")]
            class_id = existing.id if existing else uuid.uuid4()
            self.plan.classes.append(
                ClassRow(
                    class_id,
                    school,
                    title,
                    subjects[0] if subjects else None,
                    ",".join(grades) or None,
                    sid,
                    modified,
                    existing is None,
                )
            )
            self.classes[sid] = (class_id, school)
            kept.append(sid)
        if self._bulk_rule_applies(f):
            self.plan.bulk_classes = kept

    # ----------------------------------------------------------------- users

    def roles_file(self, f: _File) -> None:
        """1.2 users' roles (the reader drops roles.csv from a 1.1 package), read before users.csv takes
        each user's role and school from them: user sourcedId -> [(roleType, role, org, line)], primary first."""
        found: dict[str, list[tuple[str, str, str, int]]] = defaultdict(list)
        roles = tuple(spec.ROLE_SPELLING.get(r, r) for r in spec.USER_ROLES)
        for rec, _, status, _ in f.rows():
            user = f.required(rec, "userSourcedId")
            org = f.required(rec, "orgSourcedId")
            role = f.enum(rec, "role", roles, required=True)
            role_type = f.enum(rec, "roleType", spec.ROLE_TYPES, required=False) or "primary"
            if user is None or org is None or role is None or status == "tobedeleted":
                continue
            found[user].append((role_type, role, org, rec.line))
        for entries in found.values():
            entries.sort(key=lambda e: (e[0] != "primary", e[3]))
        self.roles = found
        if found and "users.csv" not in self.package.files:
            self.problems.add(WARNING, "roles.csv", None, None, None, "without users.csv; not used")

    def users_file(self, f: _File) -> None:
        v12 = self.package.version == "1.2"
        columns = set(f.file.columns)
        present = {
            "username",
            "disabled",
            "school_id",
            "first_name",
            "last_name",
            *(("email",) if "email" in columns else ()),
            *(("phone",) if {"phone", "sms"} & columns else ()),
            *(("preferred_name",) if "preferredGivenName" in columns else ()),
            *(("grade_level",) if "grades" in columns else ()),
            *(("student_number",) if "identifier" in columns else ()),
            *(("state_id",) if "userIds" in columns else ()),
        }
        self.plan.user_columns = tuple(c for c in USER_COLUMNS if c in present)
        passwords: list[int] = []
        agents: list[tuple[Record, str, list[str]]] = []
        kept: list[str] = []
        usernames: dict[str, int] = {}
        self.user_lines.update(f.file.failed)
        for rec, sid, status, modified in f.rows():
            self.user_lines[sid] = rec.line
            if f.value(rec, "password"):
                passwords.append(rec.line)
            role_column = "role"
            if v12:
                entries = self.roles.get(sid, [])
                if not entries:
                    f.error(rec, "sourcedId", "the user has no role in roles.csv; not imported", kind="no role")
                    continue
                if sum(1 for e in entries if e[0] == "primary") > 1:
                    f.warn(rec, "sourcedId", "more than one primary role in roles.csv; the first is used", kind="roles")
                raw_role = entries[0][1]
                primary_org = f.value(rec, "primaryOrgSourcedId")
                orgs = [*([primary_org] if primary_org else []), *(e[2] for e in entries)]
                org_column = "primaryOrgSourcedId" if primary_org else "sourcedId"
            else:
                found = f.enum(rec, "role", tuple(spec.USER_ROLES), required=True)
                if found is None:
                    continue
                raw_role = found
                orgs = f.items(rec, "orgSourcedIds")
                org_column = "orgSourcedIds"
            role = spec.USER_ROLES.get(raw_role.lower())
            if role is None:
                self.not_accounts.add(sid)
                kept.append(sid)
                f.warn(
                    rec,
                    role_column if not v12 else "sourcedId",
                    f"role {raw_role!r}: pledgeql has no such accounts (district administrators are set up by the "
                    "platform operator); not imported",
                    kind=f"role {raw_role}",
                )
                continue
            existing = self.state.users.get(sid)
            if status == "tobedeleted":
                self._deactivate(f, rec, existing, self.plan.users_disabled)
                continue
            if existing is not None and existing.role != role:
                f.error(
                    rec,
                    role_column if not v12 else "sourcedId",
                    f"the user is a {existing.role} here and {raw_role!r} in the roster; an import does not change "
                    "roles: change it by hand",
                    kind="role change",
                )
                continue
            username = f.value(rec, "username")
            if not username and v12 and f.value(rec, "email"):
                username = f.value(rec, "email")
                f.warn(rec, "username", "empty; the email is used as the username", kind="username from email")
            if not username:
                f.error(rec, "username", "required and empty; the line is not imported", kind="required and empty")
                continue
            first = f.person_name(rec, "givenName")
            last = f.person_name(rec, "familyName")
            if first is None or last is None:
                continue
            enabled = f.boolean(rec, "enabledUser")
            if enabled is None and not f.value(rec, "enabledUser"):
                f.warn(rec, "enabledUser", "empty; read as true", kind="enabledUser empty")
            school = None
            if role in STAFF_WITH_SCHOOL:
                reasons = []
                for org in orgs:
                    school, why = self.school_of(org)
                    if school is not None:
                        break
                    reasons.append(why)
                if school is None:
                    f.error(
                        rec,
                        org_column,
                        (reasons[0] if reasons else "no org")
                        + f"; a {role.lower().replace('_', ' ')} needs a school, so the user is not imported",
                        kind="user school",
                    )
                    continue
            owner_line = usernames.get(username)
            if owner_line is not None:
                f.error(rec, "username", f"the same username as line {owner_line}; not imported", kind="username dup")
                continue
            if username in self.state.usernames and self.state.usernames[username] != sid:
                f.error(rec, "username", "taken by another user of the district; not imported", kind="username taken")
                continue
            usernames[username] = rec.line
            if self._stale(f, rec, existing, modified):
                kept.append(sid)
                if existing is not None:
                    self.users[sid] = (existing.id, role, raw_role.lower())
                continue
            grades = [normalize_grade(g) for g in f.items(rec, "grades")]
            values: dict[str, Any] = {
                "username": username,
                "disabled": enabled is False,
                "school_id": school,
                "first_name": first,
                "last_name": last,
                "email": f.value(rec, "email") or None,
                "phone": f.value(rec, "phone") or f.value(rec, "sms") or None,
                "preferred_name": f.person_name(rec, "preferredGivenName", required=False),
                "grade_level": (",".join(grades) or None) if role == "STUDENT" else None,
                "student_number": (f.value(rec, "identifier") or None) if role == "STUDENT" else None,
                "state_id": _state_id(f, rec) if role == "STUDENT" else None,
            }
            user_id = existing.id if existing else uuid.uuid4()
            self.plan.users.append(UserRow(user_id, role, sid, values, modified, existing is None))
            self.users[sid] = (user_id, role, raw_role.lower())
            kept.append(sid)
            if f.value(rec, "agentSourcedIds") or role in ("STUDENT", "GUARDIAN"):
                agents.append((rec, sid, f.items(rec, "agentSourcedIds")))
        if passwords:
            self.problems.add(
                WARNING,
                f.name,
                passwords[0],
                f.file.column("password"),
                "password",
                f"passwords on {len(passwords)} line{'s' if len(passwords) > 1 else ''} (the first is this one): "
                "not read, never stored; remove passwords from the export",
            )
        self._links(f, agents)
        if self._bulk_rule_applies(f, *(("roles.csv",) if v12 else ())):
            self.plan.bulk_users = kept

    def _user(self, sid: str) -> tuple[uuid.UUID, str, str] | None:
        if sid in self.users:
            return self.users[sid]
        existing = self.state.users.get(sid)
        if existing is not None and existing.role is not None and sid not in self.user_lines:
            return existing.id, existing.role, existing.role.lower()
        return None

    def _links(self, f: _File, agents: list[tuple[Record, str, list[str]]]) -> None:
        links: dict[tuple[uuid.UUID, uuid.UUID], str] = {}
        for rec, sid, agent_ids in agents:
            me = self.users[sid]
            if me[1] in ("STUDENT", "GUARDIAN"):
                self.plan.linked_users.append(me[0])
            for agent in agent_ids:
                other = self._user(agent)
                if other is None:
                    where = self.user_lines.get(agent)
                    f.warn(
                        rec,
                        "agentSourcedIds",
                        (
                            f"the agent on line {where} was not imported"
                            if where
                            else "an agent is not in users.csv nor already imported"
                        )
                        + "; that link is not made",
                        kind="agent unknown",
                    )
                    continue
                if me[1] == "STUDENT" and other[1] == "GUARDIAN":
                    links[(other[0], me[0])] = (
                        other[2] if other[2] in ("parent", "guardian", "relative") else "guardian"
                    )
                elif me[1] == "GUARDIAN" and other[1] == "STUDENT":
                    links.setdefault(
                        (me[0], other[0]), me[2] if me[2] in ("parent", "guardian", "relative") else "guardian"
                    )
                else:
                    f.warn(
                        rec,
                        "agentSourcedIds",
                        f"a {me[1].lower().replace('_', ' ')} with a {other[1].lower().replace('_', ' ')} as agent: "
                        "pledgeql links only students and their guardians; ignored",
                        kind="agent role",
                    )
        self.plan.links = [(g, s, rel) for (g, s), rel in links.items()]

    # ---------------------------------------------------------- demographics

    def demographics_file(self, f: _File) -> None:
        if not self.state.collect_demographics:
            self.problems.add(
                NOTE,
                f.name,
                None,
                None,
                None,
                f"not imported: this district does not collect demographic data (collectDemographics is off); "
                f"{len(f.file.records)} rows dropped",
            )
            return
        for rec, sid, status, _ in f.rows():
            user = self._user(sid)
            if user is None or user[1] != "STUDENT":
                f.warn(
                    rec,
                    "sourcedId",
                    "not a student imported now or before; pledgeql keeps demographics of students only; ignored",
                    kind="demographics not a student",
                )
                continue
            if status == "tobedeleted":
                self.plan.demographics.append((user[0], None, None, None))
                continue
            readable, birth = f.date(rec, "birthDate")
            if not readable:
                f.warn(rec, "birthDate", "not a date (YYYY-MM-DD); read as empty", kind="birthDate unreadable")
            sex = f.enum(rec, "sex", spec.SEXES, required=False)
            races = [label for column, label in spec.RACES.items() if f.boolean(rec, column)]
            self.plan.demographics.append((user[0], sex, birth, sorted(races) or None))

    # ----------------------------------------------------------- enrollments

    def enrollments_file(self, f: _File) -> None:
        kept: list[str] = []
        teachers: list[tuple[uuid.UUID, uuid.UUID]] = []
        pairs: dict[tuple[uuid.UUID, uuid.UUID], int] = {}
        package_classes = self.package_class_ids()
        school_cache: dict[str, uuid.UUID | None] = {}
        for rec, sid, status, modified in f.rows():
            class_ref = f.required(rec, "classSourcedId")
            user_ref = f.required(rec, "userSourcedId")
            role = f.enum(rec, "role", spec.ENROLLMENT_ROLES, required=True)
            if class_ref is None or user_ref is None or role is None:
                continue
            if role not in ("student", "teacher"):
                f.report(
                    NOTE, rec, "role", f"{role} enrollments are not used by pledgeql; ignored", kind=f"role {role}"
                )
                continue
            if class_ref in self.closed_classes:
                f.report(
                    NOTE,
                    rec,
                    "classSourcedId",
                    "the class is tobedeleted: its enrollments end with it; not imported",
                    kind="class tobedeleted",
                )
                continue
            klass = self.classes.get(class_ref)
            if klass is None and class_ref in self.state.classes and class_ref not in package_classes:
                existing_class = self.state.classes[class_ref]
                if existing_class.school_id is not None:
                    klass = (existing_class.id, existing_class.school_id)
            if klass is None:
                f.error(
                    rec, "classSourcedId", self._missing(class_ref, class_ref in package_classes), kind="class missing"
                )
                continue
            if user_ref in self.not_accounts:
                f.report(NOTE, rec, "userSourcedId", "the user's role has no pledgeql account; ignored")
                continue
            user = self._user(user_ref)
            if user is None:
                where = self.user_lines.get(user_ref)
                f.error(
                    rec,
                    "userSourcedId",
                    (
                        f"the user on line {where} of users.csv was not imported"
                        if where
                        else "names no user in users.csv nor already imported"
                    )
                    + "; the enrollment is not imported",
                    kind="user missing",
                )
                continue
            school_ref = f.value(rec, "schoolSourcedId")
            if school_ref:
                if school_ref not in school_cache:
                    school_cache[school_ref] = self.school_of(school_ref)[0]
                school = school_cache[school_ref]
                if school is not None and school != klass[1]:
                    f.warn(rec, "schoolSourcedId", "not the school of the class; the class's school is used")
            ok_begin, begin = f.date(rec, "beginDate")
            ok_end, end = f.date(rec, "endDate")
            if not ok_begin or not ok_end:
                f.error(
                    rec,
                    "beginDate" if not ok_begin else "endDate",
                    "not a date (YYYY-MM-DD); the enrollment is not imported",
                    kind="enrollment date",
                )
                continue
            if begin is not None and end is not None and end < begin:
                f.error(rec, "endDate", "before beginDate; the enrollment is not imported", kind="end before begin")
                continue
            if role == "teacher":
                if user[1] not in ("TEACHER", "SCHOOL_ADMIN"):
                    f.error(
                        rec, "role", f"a teacher enrollment of a {user[1].lower()}; not imported", kind="teacher role"
                    )
                    continue
                if status == "tobedeleted":
                    if f.delta:
                        self.plan.teachers_removed.append((klass[0], user[0]))
                    continue
                teachers.append((klass[0], user[0]))
                continue
            if user[1] != "STUDENT":
                f.error(
                    rec,
                    "role",
                    f"a student enrollment of a {user[1].lower().replace('_', ' ')}; not imported",
                    kind="student role",
                )
                continue
            if status == "tobedeleted":
                if f.delta:
                    self.plan.enrollments_ended.append((klass[0], user[0]))
                continue
            pair = (klass[0], user[0])
            if pair in pairs:
                f.warn(rec, "sourcedId", f"the same class and student as line {pairs[pair]}; ignored", kind="dup pair")
                continue
            pairs[pair] = rec.line
            existing = self.state.enrollments.get(sid)
            kept.append(sid)
            if self._stale(f, rec, existing, modified):
                continue
            self.plan.enrollments.append(EnrollmentRow(klass[0], user[0], begin, end, sid, modified))
        self.plan.teachers = sorted(set(teachers))
        if self._bulk_rule_applies(f):
            self.plan.bulk_enrollments = kept
            self.plan.bulk_teachers = self.plan.teachers

    def package_class_ids(self) -> set[str]:
        file = self.package.files.get("classes.csv")
        if file is None:
            return set()
        return {r.values.get("sourcedId", "") for r in file.records}

    @staticmethod
    def _missing(ref: str, in_package: bool) -> str:
        if in_package:
            return f"class {ref!r} of classes.csv was not imported; the enrollment is not imported"
        return f"class {ref!r} is not in classes.csv nor already imported; the enrollment is not imported"

    def run(self) -> Plan:
        # In dependency order: a file's rows name records of the files before it.
        files = (
            ("orgs.csv", self.orgs_file),
            ("academicSessions.csv", self.sessions_file),
            ("courses.csv", self.courses_file),
            ("classes.csv", self.classes_file),
            ("roles.csv", self.roles_file),
            ("users.csv", self.users_file),
            ("demographics.csv", self.demographics_file),
            ("enrollments.csv", self.enrollments_file),
        )
        for name, read in files:
            f = self._file(name)
            if f is not None:
                read(f)
        return self.plan


def make_plan(package: Package, state: DistrictState, problems: Problems) -> Plan:
    return Planner(package, state, problems).run()
