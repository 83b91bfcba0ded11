"""The caller: ``me``."""

from __future__ import annotations

import strawberry

from permissions.decide import allowed_purposes
from permissions.enums import Role
from schema.base import Info, field
from schema.declare import Relation, reads, relationship
from schema.enums import PurposeEnum, RoleEnum
from schema.types import Class, District, Guardian, Staff, Student


@strawberry.type
class Viewer:
    # The caller, as the parameters of the request (schema.compiled._Builder.rows).
    @field(metadata=reads("{a}.id"))
    def id(self, info: Info) -> strawberry.ID:
        return strawberry.ID(str(info.context.principal.user_id))

    @field(metadata=reads("{a}.role"))
    def role(self, info: Info) -> RoleEnum:
        return info.context.principal.role

    @field(metadata=reads("{a}.purpose"))
    def purpose(self, info: Info) -> PurposeEnum:
        return info.context.purpose

    @field(description="Purposes this caller may declare: the role's purposes within the token's.")
    def allowed_purposes(self, info: Info) -> list[PurposeEnum]:
        ctx = info.context
        conditions = ctx.conditions.get(ctx.home_district_key)
        return allowed_purposes(ctx.policies, ctx.principal.role, ctx.principal.token_purposes, conditions)

    @relationship(Relation("viewer_district"))
    async def district(self, info: Info) -> District | None:
        district_id = info.context.principal.district_id
        if district_id is None:
            return None
        row = await info.context.reads.district(district_id)
        return None if row is None else District(row=row)

    @relationship(Relation("viewer_staff"))
    async def staff(self, info: Info) -> Staff | None:
        if info.context.principal.role not in (Role.TEACHER, Role.SCHOOL_ADMIN, Role.DISTRICT_ADMIN):
            return None
        row = await info.context.reads.self_row()
        return None if row is None else Staff.of(row)

    @relationship(Relation("viewer_student"))
    async def student(self, info: Info) -> Student | None:
        if info.context.principal.role is not Role.STUDENT:
            return None
        row = await info.context.reads.self_row()
        return None if row is None else Student.of(row)

    @relationship(Relation("viewer_guardian"))
    async def guardian(self, info: Info) -> Guardian | None:
        if info.context.principal.role is not Role.GUARDIAN:
            return None
        row = await info.context.reads.self_row()
        return None if row is None else Guardian.of(row, None)

    @relationship(
        Relation("viewer_classes", many=True, order="{a}.name, {a}.id"),
        description="The caller's own classes: those a teacher teaches, a student is enrolled in, "
        "a guardian's children are enrolled in. Empty for other roles.",
    )
    async def classes(self, info: Info) -> list[Class]:
        if info.context.principal.role not in (Role.TEACHER, Role.STUDENT, Role.GUARDIAN):
            return []
        return [Class(row=row) for row in await info.context.reads.classes_of_viewer()]
