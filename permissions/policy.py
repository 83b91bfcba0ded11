"""The policy as versioned data: the documents, their loader and its checks.

Each version of the policy is one TOML file in ``permissions/policies``. The
loader refuses anything it does not understand, so that a typo in a policy
file fails at start-up with a message that says the fix, never as a silently
wider or narrower permission at run time.
"""

from __future__ import annotations

import datetime
import enum
import itertools
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from permissions.enums import AggregateScope, DataCategory, Purpose, Role, Scope

# Every operation a rule, the governance list or the public list may name. A
# new operation is added here when it is added to the schema, so that a typo
# in a policy file ("auditlog") cannot grant nothing silently.
KNOWN_OPERATIONS = frozenset(
    {
        "createAssignment",
        "auditLog",
        "accessLog",
        "dataRequests",
        "exportStudentRecord",
        "correctStudentRecord",
        "deleteStudentRecord",
        "setAnalyticsOptOut",
        "openDataRequest",
        "submitResponse",
        "recordActivity",
        "updateDistrictSettings",
        "acceptPolicyVersion",
        "openSupportGrant",
        "revokeSupportGrant",
        "supportGrants",
        "policy",
        "policyVersions",
    }
)

# Categories about a student, reached through the rule's student scope. STAFF
# is reached through the staff scope and CONTACT through the guardian scope.
STUDENT_CATEGORIES = frozenset(DataCategory) - {DataCategory.STAFF, DataCategory.CONTACT}

# The staff rows each student scope reaches for a staff member (POLICY.md
# section 2): the teachers of the classes, the staff of the school or district.
_SCOPE_STAFF = {Scope.CLASSES: Scope.CLASSES, Scope.SCHOOL: Scope.SCHOOL, Scope.DISTRICT: Scope.DISTRICT}
_STAFF_ROLES = frozenset({Role.TEACHER, Role.SCHOOL_ADMIN, Role.DISTRICT_ADMIN})

_E = TypeVar("_E", bound=enum.Enum)


class PolicyError(ValueError):
    """A policy document is invalid; the message says what to change."""


class UnknownPolicyVersion(KeyError):
    def __init__(self, version: str, known: Sequence[str]) -> None:
        super().__init__(version)
        self.version = version
        self.known = tuple(known)

    def __str__(self) -> str:
        return f"Unknown policy version {self.version!r}; the versions are: {', '.join(self.known)}"


@dataclass(frozen=True, slots=True)
class PurposeInfo:
    purpose: Purpose
    description: str


@dataclass(frozen=True, slots=True)
class CategoryInfo:
    category: DataCategory
    description: str


@dataclass(frozen=True, slots=True)
class RetentionDefaults:
    responses_days: int
    activity_days: int
    device_days: int
    audit_days: int
    note: str


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the matrix: what ``role`` may use under ``purpose``."""

    role: Role
    purpose: Purpose
    student_scope: Scope
    staff_scope: Scope
    guardian_scope: Scope
    scope_text: str
    categories: frozenset[DataCategory]
    aggregates: AggregateScope
    operations: frozenset[str]
    requires_justification: bool
    break_glass: bool
    requires_direct_access: bool
    justification: str

    def scope_for(self, category: DataCategory) -> Scope:
        """Whose records a field of ``category`` can come from under this rule."""
        if category is DataCategory.STAFF:
            return self.staff_scope
        if category is DataCategory.CONTACT:
            return self.guardian_scope
        return self.student_scope

    @property
    def sorted_categories(self) -> tuple[DataCategory, ...]:
        return tuple(c for c in DataCategory if c in self.categories)


@dataclass(frozen=True)
class PolicyDocument:
    version: str
    effective_date: datetime.date
    material: bool
    summary: str
    purposes: tuple[PurposeInfo, ...]
    categories: tuple[CategoryInfo, ...]
    rules: tuple[Rule, ...]
    governance_operations: frozenset[str]
    governance_role: Role
    public_operations: frozenset[str]
    retention_defaults: RetentionDefaults
    rights_text: str
    _by_pair: dict[tuple[Role, Purpose], Rule] = field(init=False, repr=False, compare=False, default_factory=dict)
    _purposes_by_role: dict[Role, tuple[Purpose, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        by_pair: dict[tuple[Role, Purpose], Rule] = {}
        for rule in self.rules:
            pair = (rule.role, rule.purpose)
            if pair in by_pair:
                raise PolicyError(
                    f"Policy {self.version}: two rules for {rule.role.value}/{rule.purpose.value}; merge them into one"
                )
            by_pair[pair] = rule
        object.__setattr__(self, "_by_pair", by_pair)
        object.__setattr__(
            self,
            "_purposes_by_role",
            {role: tuple(p for p in Purpose if (role, p) in by_pair) for role in Role},
        )

    def rule(self, role: Role, purpose: Purpose) -> Rule | None:
        return self._by_pair.get((role, purpose))

    def purposes_for(self, role: Role) -> tuple[Purpose, ...]:
        """The purposes ``role`` may declare, in Purpose order."""
        return self._purposes_by_role[role]

    def purpose_description(self, purpose: Purpose) -> str:
        return next(p.description for p in self.purposes if p.purpose is purpose)

    def category_description(self, category: DataCategory) -> str:
        return next(c.description for c in self.categories if c.category is category)


class PolicySet:
    """Every known version, oldest first by (effective_date, version)."""

    def __init__(self, documents: Iterable[PolicyDocument]) -> None:
        docs = sorted(documents, key=lambda d: (d.effective_date, d.version))
        if not docs:
            raise PolicyError(
                "No policy documents were found; permissions/policies/ must hold at least "
                "one <version>.toml (is the package data installed?)"
            )
        by_version: dict[str, PolicyDocument] = {}
        for doc in docs:
            if doc.version in by_version:
                raise PolicyError(f"Policy version {doc.version} is defined twice; give each file its own version")
            by_version[doc.version] = doc
        for older, newer in itertools.pairwise(docs):
            if not newer.material:
                _check_non_material(older, newer)

        self._documents = tuple(docs)
        self._by_version = by_version
        self._in_effect: dict[datetime.date, PolicySet] = {}
        self._governing: dict[str, PolicyDocument] = {}
        self._newer: dict[str, tuple[PolicyDocument, ...]] = {}
        for index, doc in enumerate(docs):
            last = index
            while last + 1 < len(docs) and not docs[last + 1].material:
                last += 1
            self._governing[doc.version] = docs[last]
            self._newer[doc.version] = tuple(docs[index + 1 :])

    @property
    def documents(self) -> tuple[PolicyDocument, ...]:
        return self._documents

    def __iter__(self) -> Iterator[PolicyDocument]:
        return iter(self._documents)

    def __len__(self) -> int:
        return len(self._documents)

    def __contains__(self, version: object) -> bool:
        return version in self._by_version

    def versions(self) -> list[str]:
        return [d.version for d in self._documents]

    def get(self, version: str) -> PolicyDocument:
        try:
            return self._by_version[version]
        except KeyError:
            raise UnknownPolicyVersion(version, self.versions()) from None

    def latest(self) -> PolicyDocument:
        return self._documents[-1]

    def in_effect(self, on: datetime.date) -> PolicySet:
        """The versions in effect on ``on``: no version applies before its
        effective date (POLICY.md 4.7), so each request decides with the set
        of its own day. A district that accepted a version not yet in effect
        (only possible if the clock went back) is governed by the newest one
        that is."""
        view = self._in_effect.get(on)
        if view is None:
            docs = [d for d in self._documents if d.effective_date <= on]
            if len(docs) == len(self._documents):
                view = self
            else:
                if not docs:
                    raise PolicyError(
                        f"No policy version is in effect on {on.isoformat()}; the earliest is "
                        f"{self._documents[0].version}, effective {self._documents[0].effective_date.isoformat()}"
                    )
                view = PolicySet(docs)
                for doc in self._documents[len(docs) :]:
                    view._governing[doc.version] = view._documents[-1]
                    view._newer[doc.version] = ()
            if len(self._in_effect) > 64:
                self._in_effect.clear()
            self._in_effect[on] = view
        return view

    def governing(self, accepted_version: str) -> PolicyDocument:
        """The terms a district that accepted ``accepted_version`` is governed by:
        that version plus every newer non-material one up to the next material
        version, which needs the district's acceptance first."""
        try:
            return self._governing[accepted_version]
        except KeyError:
            raise UnknownPolicyVersion(accepted_version, self.versions()) from None

    def newer_than(self, version: str) -> tuple[PolicyDocument, ...]:
        try:
            return self._newer[version]
        except KeyError:
            raise UnknownPolicyVersion(version, self.versions()) from None


def _check_non_material(older: PolicyDocument, newer: PolicyDocument) -> None:
    """A non-material version governs without the district's acceptance, so it
    may narrow what the previous version allows but never widen it."""
    widened: list[str] = []
    for rule in newer.rules:
        pair = f"{rule.role.value}/{rule.purpose.value}"
        before = older.rule(rule.role, rule.purpose)
        if before is None:
            widened.append(f"adds the rule {pair}")
            continue
        added = rule.categories - before.categories
        if added:
            names = ", ".join(sorted(c.value for c in added))
            widened.append(f"gives {pair} the categories {names}")
        added_ops = rule.operations - before.operations
        if added_ops:
            widened.append(f"gives {pair} the operations {', '.join(sorted(added_ops))}")
        for name in ("student_scope", "staff_scope", "guardian_scope"):
            now, then = getattr(rule, name), getattr(before, name)
            if now is not then and now is not Scope.NONE:
                widened.append(f"changes {pair} {name} from {then.value} to {now.value}")
        if rule.aggregates is not before.aggregates and rule.aggregates is not AggregateScope.NONE:
            widened.append(f"changes {pair} aggregates from {before.aggregates.value} to {rule.aggregates.value}")
        for name in ("requires_justification", "break_glass", "requires_direct_access"):
            if getattr(before, name) and not getattr(rule, name):
                widened.append(f"drops {name} from {pair}")
    added_gov = newer.governance_operations - older.governance_operations
    if added_gov:
        widened.append(f"adds the governance operations {', '.join(sorted(added_gov))}")
    if newer.governance_role is not older.governance_role:
        widened.append("changes the governance role")
    added_public = newer.public_operations - older.public_operations
    if added_public:
        widened.append(f"adds the public operations {', '.join(sorted(added_public))}")
    if widened:
        raise PolicyError(
            f"Policy {newer.version} is marked material = false but it "
            f"{'; '.join(widened)} compared with {older.version}. A new use of data "
            "needs the district's acceptance: set material = true"
        )


# ------------------------------------------------------------------ parsing

_TOP_KEYS = frozenset(
    {
        "version",
        "effective_date",
        "material",
        "summary",
        "governance_role",
        "governance_operations",
        "public_operations",
        "rights_text",
        "retention_defaults",
        "purposes",
        "categories",
        "rules",
    }
)
_RETENTION_KEYS = frozenset({"responses_days", "activity_days", "device_days", "audit_days", "note"})
_PURPOSE_KEYS = frozenset({"purpose", "description"})
_CATEGORY_KEYS = frozenset({"category", "description"})
_RULE_KEYS = frozenset(
    {
        "role",
        "purpose",
        "student_scope",
        "staff_scope",
        "guardian_scope",
        "scope_text",
        "categories",
        "aggregates",
        "operations",
        "requires_justification",
        "break_glass",
        "requires_direct_access",
        "justification",
    }
)


def _check_keys(table: object, expected: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise PolicyError(f"{where} must be a table")
    unknown = sorted(set(table) - expected)
    if unknown:
        raise PolicyError(
            f"{where} has the unknown key(s) {', '.join(unknown)}; the keys are {', '.join(sorted(expected))}"
        )
    missing = sorted(expected - set(table))
    if missing:
        raise PolicyError(f"{where} lacks {', '.join(missing)}; add it")
    return table


def _enum(cls: type[_E], value: object, where: str) -> _E:
    if isinstance(value, str) and value in cls.__members__:
        return cls[value]
    names = ", ".join(cls.__members__)
    raise PolicyError(f"{where}: unknown {cls.__name__} {value!r}; use one of {names}")


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(f"{where} must be a non-empty string")
    return value.strip()


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{where} must be true or false")
    return value


def _days(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PolicyError(f"{where} must be a positive number of days")
    return value


def _names(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where} must be a list of strings")
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise PolicyError(f"{where} lists {', '.join(duplicates)} twice; list each once")
    return list(value)


def _operations(value: object, where: str) -> frozenset[str]:
    names = _names(value, where)
    unknown = [n for n in names if n not in KNOWN_OPERATIONS]
    if unknown:
        raise PolicyError(
            f"{where}: unknown operation(s) {', '.join(unknown)}; use the GraphQL field name "
            "(a new operation is added to KNOWN_OPERATIONS in permissions/policy.py)"
        )
    return frozenset(names)


def _parse_rule(raw: object, where: str) -> Rule:
    table = _check_keys(raw, _RULE_KEYS, where)
    role = _enum(Role, table["role"], f"{where}.role")
    purpose = _enum(Purpose, table["purpose"], f"{where}.purpose")
    where = f"{where} ({role.value}/{purpose.value})"
    categories = frozenset(
        _enum(DataCategory, c, f"{where}.categories") for c in _names(table["categories"], f"{where}.categories")
    )
    rule = Rule(
        role=role,
        purpose=purpose,
        student_scope=_enum(Scope, table["student_scope"], f"{where}.student_scope"),
        staff_scope=_enum(Scope, table["staff_scope"], f"{where}.staff_scope"),
        guardian_scope=_enum(Scope, table["guardian_scope"], f"{where}.guardian_scope"),
        scope_text=_text(table["scope_text"], f"{where}.scope_text"),
        categories=categories,
        aggregates=_enum(AggregateScope, table["aggregates"], f"{where}.aggregates"),
        operations=_operations(table["operations"], f"{where}.operations"),
        requires_justification=_flag(table["requires_justification"], f"{where}.requires_justification"),
        break_glass=_flag(table["break_glass"], f"{where}.break_glass"),
        requires_direct_access=_flag(table["requires_direct_access"], f"{where}.requires_direct_access"),
        justification=_text(table["justification"], f"{where}.justification"),
    )
    _check_rule(rule, where)
    return rule


def _check_rule(rule: Rule, where: str) -> None:
    """Invariants of POLICY.md that hold for every version."""
    if rule.role is Role.ANALYST and rule.categories:
        raise PolicyError(f"{where}: ANALYST never reads row-level personal data; give it aggregates and no categories")
    reaches = {
        "student_scope": (rule.student_scope, bool(rule.categories & STUDENT_CATEGORIES)),
        "staff_scope": (rule.staff_scope, DataCategory.STAFF in rule.categories),
        "guardian_scope": (rule.guardian_scope, DataCategory.CONTACT in rule.categories),
    }
    # POLICY.md section 2: a scope's staff rows (the teachers of the classes,
    # the staff of the school or district) are reachable under every purpose
    # of the pair; their STAFF fields are then decided like any category.
    scope_staff = _SCOPE_STAFF.get(rule.student_scope) if rule.role in _STAFF_ROLES else None
    if scope_staff is not None and rule.staff_scope is not scope_staff:
        raise PolicyError(
            f"{where}: the {rule.student_scope.value} scope reaches its staff rows under every purpose "
            f"(POLICY.md section 2); set staff_scope = {scope_staff.value}"
        )
    for name, (scope, has_category) in reaches.items():
        if has_category and scope is Scope.NONE:
            raise PolicyError(
                f"{where} grants categories read through {name} but {name} is NONE; say whose records they are"
            )
        if name == "staff_scope" and scope is scope_staff:
            continue
        if not has_category and scope is not Scope.NONE:
            raise PolicyError(
                f"{where} sets {name} = {scope.value} but grants no category read through "
                "it; set it to NONE or add the category"
            )
        if scope is Scope.GRANT and rule.role is not Role.SUPPORT:
            raise PolicyError(f"{where}: only SUPPORT reaches records through a GRANT")
        if scope is Scope.CHILDREN and rule.role is not Role.GUARDIAN:
            raise PolicyError(f"{where}: only GUARDIAN reaches records through CHILDREN")
        if rule.role is Role.SUPPORT and scope not in (Scope.GRANT, Scope.NONE):
            raise PolicyError(
                f"{where}: SUPPORT reaches a district's records only under a grant; use GRANT or NONE for {name}"
            )
    if rule.purpose is Purpose.LEGAL_COMPLIANCE and not rule.requires_justification:
        raise PolicyError(f"{where}: LEGAL_COMPLIANCE must set requires_justification = true")
    if rule.break_glass and not rule.requires_justification:
        raise PolicyError(f"{where}: break_glass needs requires_justification = true")


def _parse_document(data: dict[str, Any], source: str) -> PolicyDocument:
    top = _check_keys(data, _TOP_KEYS, source)
    version = _text(top["version"], f"{source}: version")
    if any(ch.isspace() or ch in "/\\" for ch in version):
        raise PolicyError(f"{source}: version {version!r} must be one word, e.g. 2020-04-01")
    where = f"policy {version}"
    effective = top["effective_date"]
    if not isinstance(effective, datetime.date) or isinstance(effective, datetime.datetime):
        raise PolicyError(f"{where}: effective_date must be a bare TOML date, e.g. 2020-04-01")

    raw_purposes = top["purposes"]
    if not isinstance(raw_purposes, list):
        raise PolicyError(f"{where}: purposes must be an array of [[purposes]] tables")
    purposes: dict[Purpose, PurposeInfo] = {}
    for i, raw in enumerate(raw_purposes):
        table = _check_keys(raw, _PURPOSE_KEYS, f"{where}: purposes[{i}]")
        purpose = _enum(Purpose, table["purpose"], f"{where}: purposes[{i}].purpose")
        if purpose in purposes:
            raise PolicyError(f"{where}: purpose {purpose.value} is described twice; keep one")
        purposes[purpose] = PurposeInfo(purpose, _text(table["description"], f"{where}: purposes[{i}].description"))
    missing_purposes = [p.value for p in Purpose if p not in purposes]
    if missing_purposes:
        raise PolicyError(
            f"{where}: no description for the purpose(s) {', '.join(missing_purposes)}; "
            "add a [[purposes]] entry for each"
        )

    raw_categories = top["categories"]
    if not isinstance(raw_categories, list):
        raise PolicyError(f"{where}: categories must be an array of [[categories]] tables")
    categories: dict[DataCategory, CategoryInfo] = {}
    for i, raw in enumerate(raw_categories):
        table = _check_keys(raw, _CATEGORY_KEYS, f"{where}: categories[{i}]")
        category = _enum(DataCategory, table["category"], f"{where}: categories[{i}].category")
        if category in categories:
            raise PolicyError(f"{where}: category {category.value} is described twice; keep one")
        categories[category] = CategoryInfo(
            category, _text(table["description"], f"{where}: categories[{i}].description")
        )
    missing_categories = [c.value for c in DataCategory if c not in categories]
    if missing_categories:
        raise PolicyError(
            f"{where}: no description for the category(ies) {', '.join(missing_categories)}; "
            "add a [[categories]] entry for each"
        )

    raw_rules = top["rules"]
    if not isinstance(raw_rules, list) or not raw_rules:
        raise PolicyError(f"{where}: rules must be a non-empty array of [[rules]] tables")
    rules = tuple(_parse_rule(raw, f"{where}: rules[{i}]") for i, raw in enumerate(raw_rules))

    governance_role = _enum(Role, top["governance_role"], f"{where}: governance_role")
    if not any(r.role is governance_role for r in rules):
        raise PolicyError(
            f"{where}: governance_role {governance_role.value} has no rule, so it could "
            "never declare a purpose; add its rules or name another role"
        )
    governance = _operations(top["governance_operations"], f"{where}: governance_operations")
    public = _operations(top["public_operations"], f"{where}: public_operations")
    both = governance & public
    if both:
        raise PolicyError(
            f"{where}: {', '.join(sorted(both))} cannot be both governance and public; keep it in one list"
        )

    retention = _check_keys(top["retention_defaults"], _RETENTION_KEYS, f"{where}: [retention_defaults]")
    retention_defaults = RetentionDefaults(
        responses_days=_days(retention["responses_days"], f"{where}: responses_days"),
        activity_days=_days(retention["activity_days"], f"{where}: activity_days"),
        device_days=_days(retention["device_days"], f"{where}: device_days"),
        audit_days=_days(retention["audit_days"], f"{where}: audit_days"),
        note=_text(retention["note"], f"{where}: retention_defaults.note"),
    )

    return PolicyDocument(
        version=version,
        effective_date=effective,
        material=_flag(top["material"], f"{where}: material"),
        summary=_text(top["summary"], f"{where}: summary"),
        purposes=tuple(purposes[p] for p in Purpose),
        categories=tuple(categories[c] for c in DataCategory),
        rules=rules,
        governance_operations=governance,
        governance_role=governance_role,
        public_operations=public,
        retention_defaults=retention_defaults,
        rights_text=_text(top["rights_text"], f"{where}: rights_text"),
    )


def parse_policy(text: str, source: str = "<policy>") -> PolicyDocument:
    """Parse and validate one policy document (the text of a TOML file)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source} is not valid TOML: {exc}") from None
    return _parse_document(data, source)


def load_policy_set(extra_dirs: Sequence[Path] = ()) -> PolicySet:
    """The shipped policy versions plus every ``*.toml`` in ``extra_dirs``."""
    sources: list[tuple[str, str, str]] = []  # (source, file stem, text)
    shipped = resources.files("permissions").joinpath("policies")
    for entry in sorted(shipped.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            name = f"permissions/policies/{entry.name}"
            sources.append((name, entry.name.removesuffix(".toml"), entry.read_text("utf-8")))
    for directory in extra_dirs:
        path = Path(directory)
        if not path.is_dir():
            raise PolicyError(f"Policy directory {path} does not exist; pass an existing folder")
        for file in sorted(path.glob("*.toml")):
            sources.append((str(file), file.stem, file.read_text("utf-8")))

    documents = []
    for source, stem, text in sources:
        doc = parse_policy(text, source)
        if doc.version != stem:
            raise PolicyError(
                f"{source} declares version {doc.version!r}; name the file {doc.version}.toml or fix its version"
            )
        documents.append(doc)
    return PolicySet(documents)
