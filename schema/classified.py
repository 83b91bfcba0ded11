"""``@classified``: a field's data category, declared once where the field is.

The one declaration gives the printed SDL its directive, gives the field its
permission check (a synchronous lookup in the request's decision table), and
registers the field for the build-time checks and the notice at /privacy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import strawberry
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema_directive import Location
from strawberry.types.field import StrawberryField

from permissions.decide import Decision
from permissions.enums import DataCategory
from permissions.errors import Forbidden, refusal_message
from schema.base import Info, Resolver
from schema.enums import DataCategoryEnum

if TYPE_CHECKING:
    from graphql.pyutils.path import Path

    from server.context import RequestContext


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="classified",
    description=(
        "Marks a field whose value is personal information and names its category.\n"
        "Whether it resolves for a request is decided by the policy from the caller's\n"
        "role, the declared purpose, the caller's relationship to the subject, and the\n"
        "district's settings. Fields without it carry no personal information."
    ),
)
class Classified:
    category: DataCategoryEnum


class Resolve(Protocol):
    """What the check reads of one resolve.

    Strawberry's ``Info`` (the permission extension's path) and graphql-core's
    ``GraphQLResolveInfo`` (the direct resolvers' path, schema/direct.py) both
    offer it as public attributes.
    """

    @property
    def context(self) -> RequestContext: ...

    @property
    def field_name(self) -> str: ...

    # ``path.typename`` is the name of the type the field is resolved on.
    @property
    def path(self) -> Path: ...


class ClassifiedPermission(BasePermission):
    """Allows the field when the request's decision for its category allows it.

    Denied: the field is null with a FORBIDDEN error naming the category, the
    purpose and the reason. Either way the audit collector notes the resolve.
    """

    category: ClassVar[DataCategory]
    # The category's name, read once: an enum's ``.value`` is a descriptor
    # call, and this check runs for every resolve of every classified field.
    category_value: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        # "Type.field" per parent type name (one instance per field; a field
        # may be inherited by more than one type).
        self._names: dict[str | None, str] = {}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return self.check(source, info)

    def check(self, source: Any, resolve: Resolve) -> bool:
        """The check itself: True, or FORBIDDEN raised."""
        ctx = resolve.context
        district = source.district_key
        decision = ctx.decisions.lookup(district, self.category)
        parent = resolve.path.typename
        name = self._names.get(parent)
        if name is None:
            name = self._names[parent] = f"{parent}.{resolve.field_name}"
        ctx.audit.note(district, source.subject_id, name, self.category_value, decision.allowed)
        if decision.allowed is True:
            return True
        raise refusal(self.category_value, ctx.purpose.value, decision)


def refusal(category: str, purpose: str, decision: Decision) -> Forbidden:
    """The FORBIDDEN error of a classified field its request's decision denies."""
    reason = decision.reason.value if decision.reason is not None else "PURPOSE_NOT_ALLOWED_FOR_CATEGORY"
    return Forbidden(
        refusal_message(f"{category} data", purpose, reason), category=category, purpose=purpose, reason=reason
    )


_PERMISSIONS: dict[DataCategory, type[ClassifiedPermission]] = {
    category: type(
        f"May{category.value.title()}",
        (ClassifiedPermission,),
        {"category": category, "category_value": category.value},
    )
    for category in DataCategory
}


def classified(category: DataCategory, **field_args: Any) -> Callable[[Resolver], StrawberryField]:
    """Declare a resolver's field personal data of ``category``."""

    def wrap(resolver: Resolver) -> StrawberryField:
        return strawberry.field(
            resolver,
            directives=[Classified(category=category)],
            extensions=[PermissionExtension(permissions=[_PERMISSIONS[category]()], use_directives=False)],
            **field_args,
        )

    return wrap


def category_of(field: Any) -> DataCategory | None:
    """The category declared on a Strawberry field, or None."""
    for directive in getattr(field, "directives", ()):
        if isinstance(directive, Classified):
            value = directive.category
            return value if isinstance(value, DataCategory) else DataCategory(value)
    return None
