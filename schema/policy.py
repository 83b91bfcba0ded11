"""The public policy document, generated from the policy data."""

from __future__ import annotations

import datetime as dt

import strawberry

from permissions.policy import PolicyDocument as PolicyData
from schema.enums import DataCategoryEnum, PurposeEnum, RoleEnum


@strawberry.type
class PurposeDescription:
    purpose: PurposeEnum
    description: str


@strawberry.type
class CategoryDescription:
    category: DataCategoryEnum
    description: str
    fields: list[str]


@strawberry.type
class PolicyRule:
    role: RoleEnum
    purpose: PurposeEnum
    categories: list[DataCategoryEnum]
    scope: str = strawberry.field(
        description="Plain words: whose records, e.g. 'students enrolled in the teacher's classes'."
    )
    aggregates: bool
    requires_justification: bool


@strawberry.type
class PolicyDocument:
    version: str
    effective_date: dt.date
    material: bool
    summary: str
    purposes: list[PurposeDescription]
    categories: list[CategoryDescription]
    rules: list[PolicyRule]

    @classmethod
    def from_data(cls, doc: PolicyData, category_fields: dict[str, list[str]]) -> PolicyDocument:
        from permissions.enums import AggregateScope

        return cls(
            version=doc.version,
            effective_date=doc.effective_date,
            material=doc.material,
            summary=doc.summary,
            purposes=[PurposeDescription(purpose=p.purpose, description=p.description) for p in doc.purposes],
            categories=[
                CategoryDescription(
                    category=c.category,
                    description=c.description,
                    fields=category_fields.get(c.category.value, []),
                )
                for c in doc.categories
            ],
            rules=[
                PolicyRule(
                    role=r.role,
                    purpose=r.purpose,
                    categories=list(r.sorted_categories),
                    scope=r.scope_text,
                    aggregates=r.aggregates is not AggregateScope.NONE,
                    requires_justification=r.requires_justification,
                )
                for r in doc.rules
            ],
        )
