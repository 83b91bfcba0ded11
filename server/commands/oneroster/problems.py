"""Problems found in a package, each naming its file, line and column."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

ERROR = "error"  # the row (and what depends on it) is not imported
WARNING = "warning"  # read with a defined rule, said here
NOTE = "note"  # not a problem of the package: what the import did instead

# Problems of one kind (file, column, wording) shown before the rest are counted.
SHOWN_PER_KIND = 20


@dataclass(frozen=True)
class Problem:
    severity: str
    file: str
    line: int | None
    column: int | None
    column_name: str | None
    message: str

    def describe(self) -> str:
        where = self.file
        if self.line is not None:
            where += f" line {self.line}"
        if self.column is not None:
            where += f", column {self.column}"
            if self.column_name:
                where += f" ({self.column_name})"
        return f"{self.severity:<7} {where}: {self.message}"


class Refused(Exception):
    """The package cannot be imported at all: nothing is written."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.describe())
        self.problem = problem


@dataclass
class Problems:
    shown: list[Problem] = field(default_factory=list)
    hidden: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    _per_kind: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    # Files that had a row not imported: a bulk file with one deactivates nothing.
    files_with_errors: set[str] = field(default_factory=set)

    def add(
        self,
        severity: str,
        file: str,
        line: int | None,
        column: int | None,
        column_name: str | None,
        message: str,
        kind: str | None = None,
    ) -> None:
        self.counts[severity] += 1
        if severity == ERROR:
            self.files_with_errors.add(file)
        key = (severity, file, column_name or "", kind or message)
        self._per_kind[key] += 1
        if self._per_kind[key] > SHOWN_PER_KIND:
            self.hidden[key] += 1
            return
        self.shown.append(Problem(severity, file, line, column, column_name, message))

    @property
    def errors(self) -> int:
        return self.counts[ERROR]

    @property
    def warnings(self) -> int:
        return self.counts[WARNING]

    def lines(self) -> list[str]:
        out = [p.describe() for p in self.shown]
        for (severity, file, column, kind), n in sorted(self.hidden.items()):
            about = f" in column {column}" if column else ""
            out.append(f"{severity:<7} {file}: {n} more like the above{about} ({kind})")
        return out
