"""District governance: settings, policy versions and support grants."""

from __future__ import annotations

from typing import TYPE_CHECKING

import strawberry
from strawberry.types import Info

from server.errors import NotAvailable

if TYPE_CHECKING:
    from schema.governance import DistrictSettingsInput, SupportGrant, SupportGrantInput
    from schema.types import District, DistrictSettings


async def update_district_settings(info: Info, input: DistrictSettingsInput) -> DistrictSettings:
    raise NotAvailable("updateDistrictSettings is not available in this release")


async def accept_policy_version(info: Info, version: str) -> District:
    raise NotAvailable("acceptPolicyVersion is not available in this release")


async def open_support_grant(info: Info, input: SupportGrantInput) -> SupportGrant:
    raise NotAvailable("openSupportGrant is not available in this release")


async def revoke_support_grant(info: Info, id: strawberry.ID) -> SupportGrant:
    raise NotAvailable("revokeSupportGrant is not available in this release")


async def support_grants(info: Info) -> list[SupportGrant]:
    raise NotAvailable("supportGrants is not available in this release")
