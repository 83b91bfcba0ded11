"""The corpus scenario (issue 13): every query the clients ship, measured against the compiled path.

Each query operation of ``../shared/operations`` runs with the bench's subjects as its variables,
as the user of its client under the purpose its comment names. Its *speed* compares it with what
the compiled path does: two compiled baselines (S1 and ``Small``), measured at the start and at
the end of the run, fit seconds per request = a + b x response bytes; an operation's speed is its
req/s x (a + b x its response bytes), 1.0 when it is served as fast as the compiled path would
serve an answer of that size.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphql import OperationDefinitionNode, OperationType, parse

from bench import scenarios
from server.commands.seed import demo_id
from server.db import connect

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "operations"
COPY = ROOT / "tests" / "operations"  # the repository's copy of it

SMALL = "query Small($id: ID!) { class(id: $id) { id name students { id firstName } } }"
# S1 under REPORTING, where `answer` (WORK) is denied: the same document with its FORBIDDEN errors.
DENIED = "S1 under REPORTING (answer denied)"
# Who sends each client's operations (the folder's first part).
CLIENTS = {
    "teacher-app": "teacher",
    "student-client": "student",
    "family": "guardian",
    "reporting": "admin",
    "district-admin": "admin",
}
SPREAD = re.compile(r"\.\.\.\s*([A-Za-z_]\w*)")
TARGET_SPEED = 0.7


def operations_folder() -> Path:
    return SHARED if SHARED.is_dir() else COPY


def shared_queries(folder: Path) -> list[tuple[str, str, str, str]]:
    """(file, operation, purpose, the operation's text with the fragments it spreads) for each
    named query of the folder; the purpose is the ``# purpose:`` comment right above it."""
    fragments: dict[str, str] = {}
    found: list[tuple[str, str, str, str]] = []
    for path in sorted(folder.rglob("*.graphql")):
        text = path.read_text()
        for definition in parse(text).definitions:
            start, end = (definition.loc.start, definition.loc.end) if definition.loc else (0, 0)
            source = text[start:end]
            if not isinstance(definition, OperationDefinitionNode):
                fragments[definition.name.value] = source  # type: ignore[attr-defined]
                continue
            if definition.operation is not OperationType.QUERY or definition.name is None:
                continue
            above = text[:start].rstrip().splitlines()
            purpose = above[-1].split(":", 1)[1].strip() if above and "purpose:" in above[-1] else "INSTRUCTION"
            found.append((str(path.relative_to(folder)), definition.name.value, purpose, source))
    return [(f, n, p, with_fragments(s, fragments)) for f, n, p, s in found]


def with_fragments(source: str, fragments: dict[str, str]) -> str:
    used: list[str] = []
    pending = SPREAD.findall(source)
    while pending:
        name = pending.pop()
        if name in fragments and name not in used:
            used.append(name)
            pending.extend(SPREAD.findall(fragments[name]))
    return "\n".join([source, *(fragments[n] for n in sorted(used))])


@dataclass(frozen=True)
class Ids:
    """The corpus's subjects beside the bench's: a student of the S1 class and its school (for the
    teacher's screens), a student with an assignment of their class (for the student client's),
    a guardian and their child, the platform's analyst."""

    student: uuid.UUID
    school: uuid.UUID
    learner: uuid.UUID
    assignment: uuid.UUID
    guardian: uuid.UUID
    child: uuid.UUID
    analyst: uuid.UUID


async def prepare_ids(owner_url: str, subjects: scenarios.Subjects) -> Ids:
    conn = await connect(owner_url)
    try:
        student = await conn.fetchval(
            "SELECT student_id FROM enrollments WHERE district_id = $1 AND class_id = $2 ORDER BY student_id LIMIT 1",
            subjects.district_id,
            subjects.class_id,
        )
        school = await conn.fetchval(
            "SELECT school_id FROM classes WHERE district_id = $1 AND id = $2", subjects.district_id, subjects.class_id
        )
        guardian, child = subjects.guardians[0]
        # A family reads its child's record of disclosures itself (WhoSawMyChild) only where the
        # district allows direct access (API.md): the child's district allows it for the corpus.
        await conn.execute(
            "UPDATE districts SET direct_record_access = true "
            "WHERE id = (SELECT district_id FROM users WHERE id = $1) AND NOT direct_record_access",
            child,
        )
    finally:
        await conn.close()
    learner = subjects.submissions[0]
    return Ids(
        student, school, learner.student_id, learner.assignment_id, guardian, child, demo_id("platform", "analyst")
    )


@dataclass(frozen=True)
class Operation:
    name: str
    source: str
    purpose: str
    user_id: uuid.UUID
    query: str
    variables: dict[str, Any]


def variables_for(name: str, subjects: scenarios.Subjects, ids: Ids) -> dict[str, Any]:
    roster = str(subjects.class_id)
    return {
        "ClassRoster": {"id": roster},
        "ClassResults": {"id": roster},
        "ClassProgress": {"id": roster},
        "StudentDetail": {"id": str(ids.student)},
        "StudentSearch": {"schoolId": str(ids.school)},
        "ChildProgress": {"id": str(ids.child)},
        "WhoSawMyChild": {"id": str(ids.child)},
        "AssignmentItems": {"id": str(ids.assignment)},
        "MyResponses": {},
        "DistrictPerformance": {"districtId": str(subjects.district_id)},
        "SchoolEquity": {"schoolId": str(ids.school)},
        "WeeklyUsage": {
            "districtId": str(subjects.district_id),
            "from": "2020-01-01T00:00:00Z",
            "to": "2030-01-01T00:00:00Z",
        },
    }.get(name, {})


def operations(subjects: scenarios.Subjects, ids: Ids, folder: Path | None = None) -> list[Operation]:
    users = {
        "teacher": subjects.teacher_id,
        "student": ids.learner,
        "guardian": ids.guardian,
        "admin": subjects.admin_id,
    }
    out = []
    for source, name, purpose, text in shared_queries(folder or operations_folder()):
        user = ids.analyst if purpose == "PRODUCT_ANALYTICS" else users[CLIENTS[source.split("/")[0]]]
        out.append(Operation(name, source, purpose, user, text, variables_for(name, subjects, ids)))
    return out


def baselines(subjects: scenarios.Subjects) -> list[Operation]:
    """The two compiled baselines: S1 and the small audited read."""
    roster = {"id": str(subjects.class_id)}
    return [
        Operation("S1", "bench/scenarios.py", "INSTRUCTION", subjects.teacher_id, scenarios.CLASS_VIEW, roster),
        Operation("Small", "issue 13", "INSTRUCTION", subjects.teacher_id, SMALL, roster),
    ]


def denied(subjects: scenarios.Subjects) -> Operation:
    roster = {"id": str(subjects.class_id)}
    return Operation(DENIED, "bench/scenarios.py", "REPORTING", subjects.teacher_id, scenarios.CLASS_VIEW, roster)


# ------------------------------------------------------------------ the fit


def fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Seconds per request = a + b x bytes, by least squares over (req/s, bytes) points of at
    least two sizes; None when they do not determine a line."""
    usable = [(1.0 / rps, float(size)) for rps, size in points if rps > 0 and size > 0]
    if len({size for _, size in usable}) < 2:
        return None
    n = len(usable)
    mean_t = sum(t for t, _ in usable) / n
    mean_x = sum(x for _, x in usable) / n
    spread = sum((x - mean_x) ** 2 for _, x in usable)
    b = sum((x - mean_x) * (t - mean_t) for t, x in usable) / spread
    return mean_t - b * mean_x, b


def speed(rps: float, size: int, line: tuple[float, float]) -> float:
    a, b = line
    return rps * (a + b * size)


# ------------------------------------------------------------------ PostGraphile

# The teacher app's three screens over PostGraphile 4's schema of the same tables (no policy, no
# audit). StudentDetail's progress and mastery are computed in pledgeql and have no column to read
# here: PostGraphile's StudentDetail reads the rest, so it does less work than pledgeql's.
POSTGRAPHILE = {
    "ClassRoster": """query ClassRoster($districtId: UUID!, $id: UUID!) {
  classByDistrictIdAndId(districtId: $districtId, id: $id) {
    id name subject gradeLevel
    schoolByDistrictIdAndSchoolId { id name }
    classTeachersByDistrictIdAndClassIdList { userByDistrictIdAndTeacherId { id firstName lastName } }
    enrollmentsByDistrictIdAndClassIdList(orderBy: STUDENT_ID_ASC) {
      userByDistrictIdAndStudentId { id firstName lastName preferredName gradeLevel learningLevel lastActiveAt }
    }
  }
}""",
    "ClassResults": """query ClassResults($districtId: UUID!, $id: UUID!) {
  classByDistrictIdAndId(districtId: $districtId, id: $id) {
    id name
    assignmentsByDistrictIdAndClassIdList { id title dueAt assessmentByAssessmentId { id title subject } }
    enrollmentsByDistrictIdAndClassIdList(orderBy: STUDENT_ID_ASC) {
      userByDistrictIdAndStudentId {
        id firstName lastName preferredName
        responsesByDistrictIdAndStudentIdList(orderBy: [SUBMITTED_AT_DESC, ID_DESC], first: 20) {
          id answer correct score submittedAt itemByItemId { id skill }
        }
      }
    }
  }
}""",
    "StudentDetail": """query StudentDetail($districtId: UUID!, $id: UUID!) {
  userByDistrictIdAndId(districtId: $districtId, id: $id) {
    id firstName lastName preferredName gradeLevel studentNumber learningLevel lastActiveAt
    enrollmentsByDistrictIdAndStudentIdList { classByDistrictIdAndClassId { id name } }
    responsesByDistrictIdAndStudentIdList(orderBy: [SUBMITTED_AT_DESC, ID_DESC], first: 50) {
      id answer correct score feedback submittedAt timeSpentSeconds
      itemByItemId { id prompt skill }
      assignmentByDistrictIdAndAssignmentId { id title }
    }
  }
}""",
}


def postgraphile_variables(name: str, subjects: scenarios.Subjects, ids: Ids) -> dict[str, str]:
    subject = ids.student if name == "StudentDetail" else subjects.class_id
    return {"districtId": str(subjects.district_id), "id": str(subject)}


def check_postgraphile(body: dict[str, Any]) -> str | None:
    if body.get("errors"):
        return "errors " + "; ".join(str(e.get("message"))[:120] for e in body["errors"])
    data = body.get("data") or {}
    if not any(data.values()):
        return "no data"
    return None
