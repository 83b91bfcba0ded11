"""What enforcing the policy costs per field resolve (a measurement, not a test).

Three tiny Strawberry types with the same string fields, executed in-process
over the same list of objects by graphql-core (no HTTP, no database):

* plain:      ``@strawberry.field``;
* trivial:    a permission class whose check returns True;
* classified: ``@classified(DataCategory.DIRECTORY)``, the real permission
  class, with the real per-request DecisionTable (policy 2020-04-01) and
  AuditCollector, exactly as a request resolves a roster.

The per-field cost is the difference of the median run times divided by the
number of field resolves. Run from the repository root:

    .venv/bin/python -m bench.field_cost [--objects 1000] [--fields 10] [--repeat 25]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import strawberry
from graphql import execute, parse
from strawberry.permission import BasePermission, PermissionExtension

from permissions.audit import AuditCollector
from permissions.decide import DecisionTable, DistrictConditions, Relationship
from permissions.enums import DataCategory, Purpose, Role
from permissions.policy import load_policy_set
from schema.build import graphql_schema
from schema.classified import classified

DISTRICT = str(uuid.UUID(int=1))
FIELDS = 10


class AlwaysAllowed(BasePermission):
    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return True


def _trivial() -> Any:
    return strawberry.field(extensions=[PermissionExtension(permissions=[AlwaysAllowed()], use_directives=False)])


@strawberry.type
class PlainRow:
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]
    value: strawberry.Private[str]

    @strawberry.field
    def f0(self) -> str | None:
        return self.value

    @strawberry.field
    def f1(self) -> str | None:
        return self.value

    @strawberry.field
    def f2(self) -> str | None:
        return self.value

    @strawberry.field
    def f3(self) -> str | None:
        return self.value

    @strawberry.field
    def f4(self) -> str | None:
        return self.value

    @strawberry.field
    def f5(self) -> str | None:
        return self.value

    @strawberry.field
    def f6(self) -> str | None:
        return self.value

    @strawberry.field
    def f7(self) -> str | None:
        return self.value

    @strawberry.field
    def f8(self) -> str | None:
        return self.value

    @strawberry.field
    def f9(self) -> str | None:
        return self.value


@strawberry.type
class TrivialRow:
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]
    value: strawberry.Private[str]

    @_trivial()
    def f0(self) -> str | None:
        return self.value

    @_trivial()
    def f1(self) -> str | None:
        return self.value

    @_trivial()
    def f2(self) -> str | None:
        return self.value

    @_trivial()
    def f3(self) -> str | None:
        return self.value

    @_trivial()
    def f4(self) -> str | None:
        return self.value

    @_trivial()
    def f5(self) -> str | None:
        return self.value

    @_trivial()
    def f6(self) -> str | None:
        return self.value

    @_trivial()
    def f7(self) -> str | None:
        return self.value

    @_trivial()
    def f8(self) -> str | None:
        return self.value

    @_trivial()
    def f9(self) -> str | None:
        return self.value


@strawberry.type
class ClassifiedRow:
    district_key: strawberry.Private[str]
    subject_id: strawberry.Private[uuid.UUID]
    value: strawberry.Private[str]

    @classified(DataCategory.DIRECTORY)
    def f0(self) -> str | None:
        return self.value

    @classified(DataCategory.DIRECTORY)
    def f1(self) -> str | None:
        return self.value

    @classified(DataCategory.DIRECTORY)
    def f2(self) -> str | None:
        return self.value

    @classified(DataCategory.DIRECTORY)
    def f3(self) -> str | None:
        return self.value

    @classified(DataCategory.DIRECTORY)
    def f4(self) -> str | None:
        return self.value

    @classified(DataCategory.DIRECTORY)
    def f5(self) -> str | None:
        return self.value

    @classified(DataCategory.DIRECTORY)
    def f6(self) -> str | None:
        return self.value

    @classified(DataCategory.DIRECTORY)
    def f7(self) -> str | None:
        return self.value

    @classified(DataCategory.DIRECTORY)
    def f8(self) -> str | None:
        return self.value

    @classified(DataCategory.DIRECTORY)
    def f9(self) -> str | None:
        return self.value


@dataclass
class BenchContext:
    """What the permission check reads from a request's context."""

    decisions: DecisionTable
    purpose: Purpose
    audit: AuditCollector = field(default_factory=AuditCollector)


@strawberry.type
class Query:
    @strawberry.field
    def plain(self, n: int) -> list[PlainRow]:
        return [PlainRow(district_key=DISTRICT, subject_id=uuid.UUID(int=i + 2), value="v") for i in range(n)]

    @strawberry.field
    def trivial(self, n: int) -> list[TrivialRow]:
        return [TrivialRow(district_key=DISTRICT, subject_id=uuid.UUID(int=i + 2), value="v") for i in range(n)]

    @strawberry.field
    def classified(self, n: int) -> list[ClassifiedRow]:
        return [ClassifiedRow(district_key=DISTRICT, subject_id=uuid.UUID(int=i + 2), value="v") for i in range(n)]


def context(role: Role, purpose: Purpose) -> BenchContext:
    policies = load_policy_set()
    conditions = DistrictConditions(
        district_id=DISTRICT,
        authorized_purposes=frozenset(Purpose),
        collect_usage=True,
        collect_device=True,
        collect_demographics=True,
        direct_record_access=False,
        accepted_version="2020-04-01",
    )
    table = DecisionTable(policies, role, purpose, {DISTRICT: Relationship()}, {DISTRICT: conditions})
    return BenchContext(decisions=table, purpose=purpose)


VARIANTS = (
    ("plain", "plain", Purpose.INSTRUCTION),
    ("trivial", "trivial", Purpose.INSTRUCTION),
    ("allowed", "classified", Purpose.INSTRUCTION),
    # TEACHER/PERSONALIZATION has no DIRECTORY: every field is denied, null, with a FORBIDDEN error.
    ("denied", "classified", Purpose.PERSONALIZATION),
)


def once(schema: Any, document: Any, purpose: Purpose) -> tuple[float, int]:
    """Seconds of one execution as a fresh request (decisions and audit start empty), and its errors."""
    ctx = context(Role.TEACHER, purpose)
    started = time.perf_counter()
    result = execute(schema, document, context_value=ctx)
    elapsed = time.perf_counter() - started
    if hasattr(result, "__await__"):
        raise RuntimeError("the benchmark's resolvers must all be synchronous")
    return elapsed, len(result.errors or ())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()

    schema = graphql_schema(strawberry.Schema(query=Query))
    resolves = args.objects * FIELDS
    selection = " ".join(f"f{i}" for i in range(FIELDS))
    documents = {root: parse(f"{{ {root}(n: {args.objects}) {{ {selection} }} }}") for _, root, _ in VARIANTS}
    times: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
    expected_errors = {"plain": 0, "trivial": 0, "allowed": 0, "denied": resolves}
    for round_number in range(args.repeat + 2):
        # Interleaved, so that a change in the machine's load touches every variant alike;
        # the first two rounds warm the caches and are not counted.
        for name, root, purpose in VARIANTS:
            elapsed, errors = once(schema, documents[root], purpose)
            if errors != expected_errors[name]:
                raise SystemExit(f"{name}: {errors} errors, expected {expected_errors[name]}")
            if round_number >= 2:
                times[name].append(elapsed)

    def per_field(seconds: float) -> float:
        return seconds / resolves * 1e6

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.objects} objects x {FIELDS} fields = {resolves} resolves per execution, median of {args.repeat}")
    print(f"  plain field                     {per_field(median['plain']):7.2f} us/field")
    print(f"  trivial permission class        {per_field(median['trivial']):7.2f} us/field")
    print(f"  @classified, allowed            {per_field(median['allowed']):7.2f} us/field")
    print(f"  @classified, denied (FORBIDDEN) {per_field(median['denied']):7.2f} us/field")
    for name in ("allowed", "denied"):
        cost = per_field(median[name] - median["plain"])
        print(f"  enforcement cost, {name + ':':9s}{cost:+7.2f} us per field resolve over a plain field")


if __name__ == "__main__":
    main()
