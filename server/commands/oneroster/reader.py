"""Open a OneRoster CSV package (a zip or a folder) and read its files.

``manifest.csv`` is read first: it says which OneRoster version the package
is and, per file, whether it is a bulk file, a delta file or absent. A
package without one is either OneRoster 1.0 (which had no manifest) or not
OneRoster at all; both are refused, saying which. Files are UTF-8, with or
without a byte order mark. Every value keeps its line and column.
"""

from __future__ import annotations

import codecs
import csv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from server.commands.oneroster import spec
from server.commands.oneroster.problems import ERROR, NOTE, WARNING, Problem, Problems, Refused

MAX_FILE_BYTES = 1 << 30  # 1 GiB uncompressed per file
MAX_FILES = 200


@dataclass
class Record:
    line: int
    values: dict[str, str]


@dataclass
class CsvFile:
    name: str
    mode: str  # bulk | delta
    columns: dict[str, int]  # canonical column name -> 1-based position
    records: list[Record] = field(default_factory=list)
    # sourcedId -> line of lines that could not be read (as far as their first value can be)
    failed: dict[str, int] = field(default_factory=dict)

    def column(self, name: str) -> int | None:
        return self.columns.get(name)


@dataclass
class Package:
    source: str
    kind: str  # zip | folder
    version: str
    files: dict[str, CsvFile]
    unused: list[str]


def _refuse(
    file: str, message: str, line: int | None = None, column: int | None = None, name: str | None = None
) -> Refused:
    return Refused(Problem(ERROR, file, line, column, name, message))


class _Source:
    """The package's files by lower-cased name, wherever the zip put them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = "folder" if path.is_dir() else "zip"
        self._names: dict[str, str] = {}
        self._zip: zipfile.ZipFile | None = None
        if not path.exists():
            raise _refuse(str(path), "no such file or folder")
        if self.kind == "folder":
            for entry in sorted(path.iterdir()):
                if entry.is_file() and entry.suffix.lower() == ".csv":
                    self._names.setdefault(entry.name.lower(), entry.name)
        else:
            if not zipfile.is_zipfile(path):
                raise _refuse(path.name, "not a zip file or a folder of CSV files")
            self._zip = zipfile.ZipFile(path)
            members = [
                i
                for i in self._zip.infolist()
                if not i.is_dir() and not i.filename.startswith("__MACOSX/") and i.filename.lower().endswith(".csv")
            ]
            if len(members) > MAX_FILES:
                raise _refuse(path.name, f"the zip holds {len(members)} CSV files; a OneRoster package has at most 30")
            folders = {m.filename.rsplit("/", 1)[0] if "/" in m.filename else "" for m in members}
            if len(folders) > 1:
                raise _refuse(path.name, "the CSV files are in more than one folder of the zip; put them in one")
            for member in members:
                self._names.setdefault(member.filename.rsplit("/", 1)[-1].lower(), member.filename)

    def names(self) -> list[str]:
        return sorted(n.rsplit("/", 1)[-1] for n in self._names.values())

    def actual(self, canonical: str) -> str | None:
        stored = self._names.get(canonical.lower())
        return None if stored is None else stored.rsplit("/", 1)[-1]

    def read(self, canonical: str) -> bytes:
        stored = self._names[canonical.lower()]
        if self._zip is not None:
            info = self._zip.getinfo(stored)
            if info.file_size > MAX_FILE_BYTES:
                raise _refuse(canonical, "larger than 1 GiB uncompressed; split the export")
            with self._zip.open(info) as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        else:
            file = self.path / stored
            if file.stat().st_size > MAX_FILE_BYTES:
                raise _refuse(canonical, "larger than 1 GiB; split the export")
            data = file.read_bytes()
        if len(data) > MAX_FILE_BYTES:
            raise _refuse(canonical, "larger than 1 GiB uncompressed; split the export")
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def decode(name: str, data: bytes) -> str:
    """UTF-8 text, a byte order mark dropped; anything else is refused with where it breaks."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _refuse(name, "the file is UTF-16; OneRoster CSV files are UTF-8: export them again as UTF-8", 1, 1)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        raise _refuse(
            name,
            "not UTF-8 (a byte that UTF-8 does not allow); export the file again as UTF-8",
            line,
            column,
        ) from None


def _quote_problem_column(text: str) -> int:
    """The 1-based field where a record's quoting breaks (for the error's column)."""
    field_no, in_quotes, i, opened = 1, False, 0, 1
    start_of_field = True
    while i < len(text):
        ch = text[i]
        if in_quotes:
            if ch == '"':
                if i + 1 < len(text) and text[i + 1] == '"':
                    i += 1
                else:
                    in_quotes = False
                    nxt = text[i + 1] if i + 1 < len(text) else ","
                    if nxt not in ",\r\n":
                        return field_no
        elif ch == ",":
            field_no += 1
            start_of_field = True
            i += 1
            continue
        elif ch == '"':
            if not start_of_field:
                return field_no
            in_quotes = True
            opened = field_no
        start_of_field = False
        i += 1
    return opened if in_quotes else field_no


def rows(
    name: str, text: str, problems: Problems, failed: dict[str, int] | None = None
) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of every record; a malformed record is reported and skipped
    (and its first value, when it can be read, kept in ``failed``)."""
    lines = text.splitlines(keepends=True)
    reader = csv.reader(lines, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raw = "".join(lines[start - 1 : reader.line_num])
            column = _quote_problem_column(raw)
            first = raw.split(",", 1)[0].strip()
            if failed is not None and first and not first.startswith('"') and column > 1:
                failed.setdefault(first, start)
            problems.add(
                ERROR,
                name,
                start,
                column,
                None,
                f"malformed CSV ({error}); the line is not imported: quote values that hold commas, "
                'and double a quote inside a quoted value ("")',
                kind="malformed CSV",
            )
            continue
        yield start, fields


def read_manifest(source: _Source, problems: Problems) -> tuple[str, dict[str, str]]:
    """(OneRoster version, file name -> bulk|delta) from manifest.csv."""
    text = decode("manifest.csv", source.read("manifest.csv"))
    properties: dict[str, tuple[str, int]] = {}
    for number, (line, fields) in enumerate(rows("manifest.csv", text, problems)):
        if number == 0:
            if [f.strip() for f in fields[:2]] != ["propertyName", "value"]:
                raise _refuse("manifest.csv", "the header must be 'propertyName,value'", line, 1)
            continue
        if not fields or not any(f.strip() for f in fields):
            continue
        if len(fields) < 2:
            problems.add(WARNING, "manifest.csv", line, 2, "value", "no value; the property is read as empty")
            fields = [*fields, ""]
        properties[fields[0].strip()] = (fields[1].strip(), line)
    version, line = properties.get("oneroster.version", ("", 0))
    if version in ("1.0", "1"):
        raise _refuse(
            "manifest.csv",
            "this is a OneRoster 1.0 package; pledgeql imports OneRoster 1.1 and 1.2: "
            "ask the student information system for a 1.1 or 1.2 CSV export",
            line,
            2,
            "value",
        )
    if version not in spec.VERSIONS:
        raise _refuse(
            "manifest.csv",
            "oneroster.version must be 1.1 or 1.2" + (f", not {version!r}" if version else "; it is missing"),
            line or None,
            2 if line else None,
            "value" if line else None,
        )
    modes: dict[str, str] = {}
    for prop, (value, line) in properties.items():
        if not prop.startswith("file."):
            continue
        file = prop[5:] + ".csv"
        mode = value.lower()
        if mode not in spec.MODES:
            problems.add(
                WARNING,
                "manifest.csv",
                line,
                2,
                "value",
                f"{prop} must be bulk, delta or absent"
                + (f", not {value!r}" if value else ", and is empty")
                + "; read as absent",
            )
            mode = "absent"
        elif mode != value:
            problems.add(WARNING, "manifest.csv", line, 2, "value", f"{value!r} read as {mode!r}")
        canonical = next((k for k in spec.KNOWN_FILES if k.lower() == file.lower()), file)
        if mode != "absent":
            modes[canonical] = mode
    return version, modes


def _not_oneroster_11(source: _Source) -> Refused:
    names = source.names()
    known = [n for n in names if any(n.lower() == k.lower() for k in spec.KNOWN_FILES)]
    if not names:
        return _refuse(source.path.name, "holds no CSV files; a OneRoster package is a zip or folder of CSV files")
    if known:
        columns: set[str] = set()
        if source.actual("users.csv"):
            first = decode("users.csv", source.read("users.csv")).split("\n", 1)[0]
            columns = {c.strip().strip('"') for c in first.split(",")}
        if "enabledUser" in columns or "agentSourcedIds" in columns:
            return _refuse(
                "manifest.csv",
                "missing: a OneRoster 1.1 or 1.2 package starts with manifest.csv naming its version and files",
            )
        return _refuse(
            "manifest.csv",
            "missing: this is a OneRoster 1.0 package (1.0 had no manifest"
            + (", and its users.csv has the 1.0 columns userId and agents" if {"userId", "agents"} <= columns else "")
            + "); pledgeql imports OneRoster 1.1 and 1.2: ask the student information system for a 1.1 or 1.2 "
            "CSV export",
        )
    return _refuse(
        source.path.name,
        "not a OneRoster package: it has no manifest.csv and none of the OneRoster files (orgs.csv, users.csv, "
        f"classes.csv, enrollments.csv, ...); found {', '.join(names[:10])}" + (" ..." if len(names) > 10 else ""),
    )


def _header(name: str, version: str, fields: list[str], line: int, problems: Problems) -> tuple[dict[str, int], int]:
    """(canonical column -> position, the header's width without trailing unnamed columns)."""
    expected = spec.COLUMNS[version][name]
    by_lower = {c.lower(): c for c in expected}
    names = [f.strip() for f in fields]
    while names and not names[-1]:
        problems.add(WARNING, name, line, len(names), None, "the header ends with a column without a name; ignored")
        names.pop()
    columns: dict[str, int] = {}
    for position, raw in enumerate(names, start=1):
        if not raw:
            problems.add(WARNING, name, line, position, None, "a column without a name; its values are ignored")
            continue
        canonical = raw if raw in expected else by_lower.get(raw.lower())
        if canonical is None:
            problems.add(
                WARNING,
                name,
                line,
                position,
                raw,
                f"not a OneRoster {version} column of {name}; its values are ignored",
            )
            continue
        if canonical != raw:
            problems.add(WARNING, name, line, position, raw, f"read as {canonical!r} (column names are case-sensitive)")
        if canonical in columns:
            problems.add(WARNING, name, line, position, raw, "a second column of that name; ignored")
            continue
        columns[canonical] = position
    missing_required = [c for c in spec.REQUIRED_COLUMNS[version][name] if c not in columns]
    if missing_required:
        raise _refuse(
            name,
            f"the header lacks the column{'s' if len(missing_required) > 1 else ''} {', '.join(missing_required)}, "
            "without which the file cannot be read",
            line,
            1,
        )
    absent = [c for c in expected if c not in columns]
    if absent:
        problems.add(
            WARNING,
            name,
            line,
            None,
            None,
            f"the header lacks the OneRoster {version} column{'s' if len(absent) > 1 else ''} {', '.join(absent)}; "
            "read as empty",
        )
    return columns, len(names)


def read_csv(name: str, mode: str, version: str, text: str, problems: Problems) -> CsvFile:
    failed: dict[str, int] = {}
    records = rows(name, text, problems, failed)
    first = next(records, None)
    if first is None:
        raise _refuse(name, "the file is empty; it needs at least its header line", 1, 1)
    columns, header_width = _header(name, version, first[1], first[0], problems)
    width = max(columns.values(), default=0)
    file = CsvFile(name, mode, columns, failed=failed)
    # The common case, every header column known: values by position, zipped.
    order = [""] * header_width
    for column, position in columns.items():
        order[position - 1] = column
    dense = "" not in order
    for line, fields in records:
        if not any(f.strip() for f in fields):
            continue
        if len(fields) > header_width and not any(f.strip() for f in fields[header_width:]):
            fields = fields[:header_width]
        if len(fields) > header_width:
            problems.add(
                ERROR,
                name,
                line,
                header_width + 1,
                None,
                f"{len(fields)} values where the header has {header_width} columns; the line is not imported "
                "(quote values that hold commas)",
                kind="too many values",
            )
            if fields[0].strip():
                failed.setdefault(fields[0].strip(), line)
            continue
        if len(fields) < width:
            problems.add(
                WARNING,
                name,
                line,
                len(fields) + 1,
                None,
                f"{len(fields)} values where the header has {header_width} columns; the missing ones are read as empty",
                kind="too few values",
            )
        values: dict[str, str]
        if dense and len(fields) == header_width:
            values = dict(zip(order, map(str.strip, fields), strict=True))
        else:
            values = {c: (fields[p - 1].strip() if p <= len(fields) else "") for c, p in columns.items()}
        file.records.append(Record(line, values))
    return file


def open_package(path: Path, problems: Problems) -> Package:
    """Read the manifest and every file pledgeql uses; raises Refused for a package it cannot import."""
    source = _Source(path)
    try:
        if source.actual("manifest.csv") is None:
            raise _not_oneroster_11(source)
        if source.actual("manifest.csv") != "manifest.csv":
            problems.add(WARNING, "manifest.csv", None, None, None, f"named {source.actual('manifest.csv')!r}")
        version, modes = read_manifest(source, problems)
        files: dict[str, CsvFile] = {}
        for name, mode in modes.items():
            if source.actual(name) is None:
                raise _refuse(
                    "manifest.csv",
                    f"names {name} as a {mode} file, but the package has no {name}",
                )
        for name in source.names():
            canonical = next((k for k in (*spec.KNOWN_FILES, "manifest.csv") if k.lower() == name.lower()), None)
            if canonical is None:
                problems.add(WARNING, name, None, None, None, "not a OneRoster file; ignored")
            elif canonical != "manifest.csv" and canonical not in modes:
                problems.add(WARNING, name, None, None, None, "the manifest lists it as absent; ignored")
            elif canonical != name:
                problems.add(WARNING, name, None, None, None, f"read as {canonical} (file names are case-sensitive)")
        unused = []
        for name in spec.READ_FILES:
            if name not in modes:
                continue
            if name == "roles.csv" and version == "1.1":
                problems.add(WARNING, name, None, None, None, "roles.csv is a OneRoster 1.2 file; ignored in 1.1")
                continue
            text = decode(name, source.read(name))
            files[name] = read_csv(name, modes[name], version, text, problems)
        for name in spec.UNUSED_FILES:
            if name in modes:
                unused.append(name)
                problems.add(NOTE, name, None, None, None, "not used by pledgeql; not read")
        return Package(str(path), source.kind, version, files, unused)
    finally:
        source.close()
