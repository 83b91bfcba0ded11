"""Aggregate reports with small-cell and complementary suppression."""

from __future__ import annotations

from typing import TYPE_CHECKING

from strawberry.types import Info

from server.errors import NotAvailable

if TYPE_CHECKING:
    from schema.governance import AggregateReport, ReportInput


async def performance_report(info: Info, input: ReportInput) -> AggregateReport:
    raise NotAvailable("performanceReport is not available in this release")


async def usage_report(info: Info, input: ReportInput) -> AggregateReport:
    raise NotAvailable("usageReport is not available in this release")
