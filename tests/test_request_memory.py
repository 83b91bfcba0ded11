"""A served request's own objects are freed when it ends, by reference counting alone.

A reference cycle through a request's context keeps the context and everything
it holds (rows, audit entries, the executor's fields) until the garbage
collector finds it; under load that is most of what the collector does. Each
request below is served with the collector's findings kept (DEBUG_SAVEALL),
and none of the request's own objects may be among them.
"""

from __future__ import annotations

import gc
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import Gql
from tests.test_report_cache import PERFORMANCE, SUBMIT, district_of

TEACHER = "teacher1@northwind.example"
STUDENT = "student1@northwind.example"
ADMIN = "admin@northwind.example"
# The request's own classes: a cycle through any of them holds the request.
OWN = {
    "RequestContext",
    "AuditCollector",
    "Reads",
    "Db",
    "SerialRoots",
    "PlainCompletion",
    "_Selection",
    "_Waiting",
    "DecisionTable",
}
CLASS_VIEW = """
query View {
  me { classes { id name students { id firstName responses(first: 5) { id answer score } } } }
}"""


async def left_in_cycles(serve: Callable[[], Awaitable[dict[str, Any]]]) -> Counter[str]:
    """The request's own objects that only the garbage collector would have freed."""
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        body = await serve()
        assert "errors" not in body, body["errors"]
        gc.collect()
        return Counter(type(o).__name__ for o in gc.garbage if type(o).__name__ in OWN)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_a_compiled_read_leaves_no_cycle(gql: Gql) -> None:
    assert await left_in_cycles(lambda: gql(TEACHER, "INSTRUCTION", CLASS_VIEW)) == Counter()


async def test_a_report_served_by_the_resolvers_leaves_no_cycle(
    gql: Gql, owner: Any, users: dict[str, uuid.UUID]
) -> None:
    district = await district_of(owner, users)
    variables = {"input": {"scope": {"districtId": str(district)}, "groupBy": ["SCHOOL"]}}
    # Computed once, then given again from the report cache: both completions of its plain types.
    for _ in range(2):
        assert await left_in_cycles(lambda: gql(ADMIN, "REPORTING", PERFORMANCE, variables)) == Counter()


async def test_a_mutation_leaves_no_cycle(gql: Gql, owner: Any, users: dict[str, uuid.UUID]) -> None:
    own = await owner.fetchrow(
        "SELECT a.id AS assignment, i.id AS item FROM assignments a "
        "JOIN enrollments e ON e.district_id = a.district_id AND e.class_id = a.class_id "
        "JOIN items i ON i.assessment_id = a.assessment_id WHERE e.student_id = $1 ORDER BY a.id, i.position LIMIT 1",
        users[STUDENT],
    )
    variables = {"input": {"itemId": str(own["item"]), "assignmentId": str(own["assignment"]), "answer": "A"}}
    assert await left_in_cycles(lambda: gql(STUDENT, "STUDENT_LEARNING", SUBMIT, variables)) == Counter()
