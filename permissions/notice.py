"""The plain-language privacy notice (/privacy), generated from a policy document.

Everything a parent reads here comes from the document (and, for one
district, from its settings); nothing about the policy is written twice.
This module says *what* the notice says, as plain text in a ``Notice``;
the page is ``server/templates/privacy.html``, rendered by Jinja2 with
autoescaping (server/notice_page.py).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from permissions.decide import DistrictConditions
from permissions.enums import AggregateScope, DataCategory, Purpose, Role
from permissions.policy import PolicyDocument, Rule


@dataclass(frozen=True, slots=True)
class Retention:
    """How many days a district keeps each kind of record."""

    responses_days: int
    activity_days: int
    device_days: int
    audit_days: int


@dataclass(frozen=True, slots=True)
class DistrictNotice:
    """What one district has chosen, shown on /privacy/{districtId}."""

    name: str
    conditions: DistrictConditions
    retention: Retention


# Display names only; what each role may do comes from the document's rules.
_ROLE_WORDS: dict[Role, str] = {
    Role.DISTRICT_ADMIN: "District administrators",
    Role.SCHOOL_ADMIN: "School administrators",
    Role.TEACHER: "Teachers",
    Role.STUDENT: "Students",
    Role.GUARDIAN: "Parents and guardians",
    Role.ANALYST: "Our analysts (company staff)",
    Role.SUPPORT: "Our support staff (company staff)",
}

_AGGREGATE_WORDS: dict[AggregateScope, str] = {
    AggregateScope.NONE: "No",
    AggregateScope.CLASSES: "For their own classes",
    AggregateScope.SCHOOL: "For their school",
    AggregateScope.DISTRICT: "For their district",
    AggregateScope.ALL_DISTRICTS: "Across all districts",
    AggregateScope.AUTHORIZING_DISTRICTS: ("Across the districts that allow it, leaving out students who opted out"),
}


def _words(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _date(value: datetime.date) -> str:
    return f"{value:%B} {value.day}, {value.year}"


def _duration(days: int) -> str:
    if days >= 365:
        years = days / 365.25
        rounded = round(years)
        if abs(years - rounded) < 0.05:
            return f"about {rounded} year{'s' if rounded != 1 else ''}"
        return f"about {years:.1f} years"
    if days >= 30:
        months = round(days / 30.44)
        return f"about {months} month{'s' if months != 1 else ''}"
    return f"{days} day{'s' if days != 1 else ''}"


@dataclass(frozen=True, slots=True)
class Item:
    """A category or a purpose: its anchor id, name, explanation, and (for a
    district) what it has switched off."""

    id: str
    name: str
    description: str
    off: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleRow:
    id: str
    who: str
    purpose_id: str
    purpose: str
    scope: str
    conditions: str | None
    categories: str
    aggregates: str
    justification: str


@dataclass(frozen=True, slots=True)
class Setting:
    id: str
    name: str
    state: str  # "on" or "off"
    words: str
    note: str | None = None


@dataclass(frozen=True, slots=True)
class DistrictPart:
    name: str
    accepted_version: str
    version_note: str | None
    purposes: tuple[Setting, ...]
    collects: tuple[Setting, ...]
    direct: str
    minimum_group_size: int
    rights: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Everything the page says, as plain text (the template escapes it)."""

    title: str
    version: str
    effective: str
    summary: str
    categories: tuple[Item, ...]
    purposes: tuple[Item, ...]
    rules: tuple[RuleRow, ...]
    purpose_names: str
    retention_intro: str
    retention: tuple[tuple[str, str], ...]
    retention_note: str
    rights_text: str
    district: DistrictPart | None = None


def _rule_row(rule: Rule) -> RuleRow:
    conditions: list[str] = []
    if rule.requires_justification:
        conditions.append("must give a reason, which is recorded")
    if rule.break_glass:
        conditions.append("each access is specially marked in the audit trail for review")
    if rule.requires_direct_access:
        conditions.append("only where the district allows direct access")
    if rule.role is Role.SUPPORT:
        conditions.append("only while the district has opened a support grant")
    return RuleRow(
        id=f"rule-{rule.role.value}-{rule.purpose.value}",
        who=_ROLE_WORDS.get(rule.role, _words(rule.role.value)),
        purpose_id=rule.purpose.value,
        purpose=_words(rule.purpose.value),
        scope=rule.scope_text,
        conditions="; ".join(conditions).capitalize() + "." if conditions else None,
        categories=", ".join(_words(c.value) for c in rule.sorted_categories) or "None (no individual records)",
        aggregates=_AGGREGATE_WORDS[rule.aggregates],
        justification=rule.justification,
    )


def _collected(district: DistrictNotice | None, category: DataCategory) -> bool | None:
    if district is None:
        return None
    switch = {
        DataCategory.USAGE: district.conditions.collect_usage,
        DataCategory.DEVICE: district.conditions.collect_device,
        DataCategory.DEMOGRAPHIC: district.conditions.collect_demographics,
    }
    return switch.get(category)


def _district_part(doc: PolicyDocument, district: DistrictNotice) -> DistrictPart:
    name = district.name
    version_note = None
    if district.conditions.accepted_version != doc.version:
        version_note = (
            f"The terms below are version {doc.version}, which applies to "
            f"{name} without a new acceptance because it adds no new use of data."
        )
    purposes = []
    for info in doc.purposes:
        if info.purpose is Purpose.LEGAL_COMPLIANCE:
            purposes.append(
                Setting(info.purpose.value, _words(info.purpose.value), "on", "always allowed", "(required by law)")
            )
        elif info.purpose in district.conditions.authorized_purposes:
            purposes.append(Setting(info.purpose.value, _words(info.purpose.value), "on", "allowed"))
        else:
            purposes.append(Setting(info.purpose.value, _words(info.purpose.value), "off", "not allowed"))
    switches = [
        (DataCategory.USAGE, district.conditions.collect_usage),
        (DataCategory.DEVICE, district.conditions.collect_device),
        (DataCategory.DEMOGRAPHIC, district.conditions.collect_demographics),
    ]
    collects = tuple(
        Setting(c.value, _words(c.value), "on" if on else "off", "collected" if on else "not collected")
        for c, on in switches
    )
    direct = (
        "Students and parents can see their records directly in the app."
        if district.conditions.direct_record_access
        else "Students and parents see their records by asking the district."
    )
    rights = (
        "lets students and parents see their records directly in the app, under record access."
        if district.conditions.direct_record_access
        else "does not offer direct access in the app: please contact the "
        "school district, which will answer your request."
    )
    return DistrictPart(
        name=name,
        accepted_version=district.conditions.accepted_version,
        version_note=version_note,
        purposes=tuple(purposes),
        collects=collects,
        direct=direct,
        minimum_group_size=district.conditions.minimum_group_size,
        rights=rights,
    )


def privacy_notice(
    doc: PolicyDocument,
    category_fields: Mapping[DataCategory, Sequence[str]],
    district: DistrictNotice | None = None,
) -> Notice:
    """What the notice says. ``category_fields`` lists, per category, the
    schema fields (``Type.field``) that carry it."""
    title = "How we protect student information"
    if district is not None:
        title = f"{title}: {district.name}"
    categories = []
    for cat_info in doc.categories:
        off = None
        if _collected(district, cat_info.category) is False and district is not None:
            off = f"{district.name} has turned off collecting this."
        categories.append(
            Item(
                id=cat_info.category.value,
                name=_words(cat_info.category.value),
                description=cat_info.description,
                off=off,
                fields=tuple(category_fields.get(cat_info.category, ())),
            )
        )
    purposes = []
    for info in doc.purposes:
        off = None
        if (
            district is not None
            and info.purpose is not Purpose.LEGAL_COMPLIANCE
            and info.purpose not in district.conditions.authorized_purposes
        ):
            off = f"{district.name} does not allow this use."
        purposes.append(
            Item(id=info.purpose.value, name=_words(info.purpose.value), description=info.description, off=off)
        )

    retention = doc.retention_defaults
    labels = (
        "Answers and scores",
        "Activity records",
        "Device information",
        "Audit trail (who looked at what, never the information itself)",
    )
    days = (retention.responses_days, retention.activity_days, retention.device_days, retention.audit_days)
    retention_intro = "Standard periods:"
    if district is not None:
        days = (
            district.retention.responses_days,
            district.retention.activity_days,
            district.retention.device_days,
            district.retention.audit_days,
        )
        retention_intro = f"{district.name} keeps information for these periods:"
    return Notice(
        title=title,
        version=doc.version,
        effective=_date(doc.effective_date),
        summary=doc.summary,
        categories=tuple(categories),
        purposes=tuple(purposes),
        rules=tuple(_rule_row(rule) for rule in doc.rules),
        purpose_names=", ".join(_words(p.purpose.value) for p in doc.purposes),
        retention_intro=retention_intro,
        retention=tuple((label, f"{n:,} days ({_duration(n)})") for label, n in zip(labels, days, strict=True)),
        retention_note=retention.note,
        rights_text=doc.rights_text,
        district=_district_part(doc, district) if district is not None else None,
    )
