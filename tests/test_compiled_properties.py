"""Random documents within the compiled subset: both paths answer alike.

Hypothesis draws a caller and purpose, a root (a class or a student, by an id
that exists, that the caller may not reach, or that is malformed), a random
selection of the fields the compiled path knows (in random order, some
aliased, some repeated through a fragment, with ``__typename``) and
``responses`` arguments in and out of range. Each document is sent with the
compiled reads and without; bodies and audit entries must be equal.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ALL_PURPOSES
from tests.test_compiled import both_paths

EXAMPLES = int(os.environ.get("PLEDGEQL_COMPILED_EXAMPLES", "40"))

CALLERS = [
    ("teacher1@northwind.example", "INSTRUCTION"),
    ("teacher1@northwind.example", "REPORTING"),
    ("principal1@northwind.example", "REPORTING"),
    ("admin@northwind.example", "RECORD_ACCESS"),
    ("admin@northwind.example", "INSTRUCTION"),
    ("student1@northwind.example", "STUDENT_LEARNING"),
    ("guardian1@northwind.example", "REPORTING"),
    ("admin@riverside.example", "RECORD_ACCESS"),
]
STUDENT_FIELDS = [
    "id",
    "firstName",
    "lastName",
    "preferredName",
    "username",
    "gradeLevel",
    "studentNumber",
    "stateId",
    "email",
    "gender",
    "birthDate",
    "ethnicity",
    "englishLearner",
    "specialEducation",
    "economicallyDisadvantaged",
    "learningLevel",
    "lastActiveAt",
    "__typename",
]
RESPONSE_FIELDS = ["id", "answer", "correct", "score", "feedback", "submittedAt", "timeSpentSeconds", "__typename"]
CLASS_FIELDS = ["id", "name", "subject", "gradeLevel", "__typename"]


@st.composite
def selection(draw: Any, fields: list[str]) -> str:
    chosen = draw(st.lists(st.sampled_from(fields), min_size=1, max_size=len(fields), unique=True))
    parts = []
    for n, name in enumerate(chosen):
        parts.append(f"a{n}: {name}" if draw(st.booleans()) and name != "__typename" else name)
    return " ".join(parts)


@st.composite
def documents(draw: Any) -> tuple[str, str, dict[str, Any]]:
    first = draw(st.sampled_from(["", "(first: 0)", "(first: 3)", "(first: 20)", "(first: 501)", "(first: -1)"]))
    assignment = draw(st.sampled_from(["", ", assignmentId: $assignment"])) if first else ""
    if assignment:
        first = first[:-1] + assignment + ")"
    responses = f"responses{first} {{ {draw(selection(RESPONSE_FIELDS))} }}"
    student = draw(selection(STUDENT_FIELDS))
    if draw(st.booleans()):
        student = f"{student} {responses}"
    fragment = draw(st.booleans())
    spread = "...S" if fragment else ""
    root = draw(st.sampled_from(["class", "student"]))
    arguments = "$id: ID!" + (", $assignment: ID" if assignment else "")
    if root == "class":
        body = f"class(id: $id) {{ {draw(selection(CLASS_FIELDS))} students {{ {student} {spread} }} }}"
    else:
        body = f"student(id: $id) {{ {student} {spread} }}"
    fragment_text = "fragment S on Student { id lastName }" if fragment else ""
    document = f"query Q({arguments}) {{ {body} }} {fragment_text}"
    return root, document, {"assignment": draw(st.sampled_from(["assignment", "bad", None]))}


@pytest.fixture(scope="module")
async def targets(owner: Any, users: dict[str, uuid.UUID]) -> dict[str, list[str]]:
    classes = [
        str(r["class_id"])
        for r in await owner.fetch(
            "SELECT DISTINCT ct.class_id FROM class_teachers ct WHERE ct.teacher_id = $1",
            users["teacher1@northwind.example"],
        )
    ]
    other = await owner.fetchval(
        "SELECT c.id FROM classes c JOIN districts d ON d.id = c.district_id WHERE d.name = 'Riverside Unified' LIMIT 1"
    )
    students = [str(users["student1@northwind.example"])]
    students.append(
        str(
            await owner.fetchval(
                "SELECT student_id FROM guardian_links WHERE guardian_id = $1",
                users["guardian1@northwind.example"],
            )
        )
    )
    assignment = await owner.fetchval(
        "SELECT assignment_id FROM responses WHERE student_id = $1 AND assignment_id IS NOT NULL LIMIT 1",
        users["student1@northwind.example"],
    )
    return {
        "class": [*classes[:2], str(other), "not-an-id"],
        "student": [*students, str(uuid.uuid4())],
        "assignment": [str(assignment)],
    }


@pytest.fixture(scope="module")
def recording(app: Any) -> Any:
    from tests.test_compiled import Recording

    endpoint = app.state.pledgeql.endpoint
    recorder = Recording()
    endpoint.compiled = recorder
    return recorder


SERVED: list[bool] = []


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_random_documents_answer_alike_on_both_paths(
    data: st.DataObject,
    app: Any,
    client: httpx.AsyncClient,
    owner: Any,
    recording: Any,
    token_for: Any,
    targets: dict[str, list[str]],
) -> None:
    user, purpose = data.draw(st.sampled_from(CALLERS), label="caller")
    root, document, extra = data.draw(documents(), label="document")
    ids = targets[root]
    variables: dict[str, Any] = {"id": data.draw(st.sampled_from(ids), label="id")}
    if "$assignment" in document:
        choice = extra["assignment"]
        variables["assignment"] = targets["assignment"][0] if choice == "assignment" else choice
    (status, body), _, served = await both_paths(
        app, client, owner, recording, token_for(user, ALL_PURPOSES), purpose, document, variables
    )
    assert status < 500, body
    SERVED.append(served)


def test_the_random_documents_reached_both_paths() -> None:
    """Runs after the property (file order): its draws took the compiled path often, and the resolver path too."""
    assert SERVED, "the property test did not run"
    assert any(SERVED) and not all(SERVED)
