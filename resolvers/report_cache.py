"""Computed reports, kept while what they count has not changed.

A report (resolvers/reports.py ``run_report``) is a function of its inputs
(the universe, dimensions, slice, k and counterpart universes) and of the rows
it reads, and nothing else: suppression decides the same way every time. So a
computed report can be given again to anyone whose plan (schema/reports.py)
arrives at the same inputs, as long as those rows have not changed.

Whether they have is one small statement: ``pledgeql_report_generation``
(migration 0016) sums counters that triggers bump, in the writing
transaction, for every committed change to what a report of that kind reads in
those districts. The sum is read before the report is computed, so a kept
report is never older than its sum; a later request that reads the same sum
gets it again, and any change committed in between gives another sum.

The reports hold no student's data: only suppressed aggregates, the same for
every caller with those inputs. Each request is audited as before (the entry
is recorded before the report is asked for). Requests that ask for the same
report at once while it is being computed wait for that one computation
rather than each running it; if it fails, each computes its own.

A kept report is also kept as the schema's objects (``shown``), made once per
report and labels (names of schools, classes, districts and assessments, read
for each request: they are not counted by the triggers), so that a district's
report of hundreds of rows is not built again for every request.

Per process (each worker keeps its own), and at most ``ENTRIES`` reports, the
least recently used dropped first.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from resolvers.db import Db
from resolvers.principal import CONFIRMING, confirm
from resolvers.reports import Kind, Report, Universe, run_report

ENTRIES = 128

# The tables whose changes a report of each kind reads (migration 0016 names
# each counter by its table).
SOURCES: dict[Kind, list[str]] = {
    Kind.PERFORMANCE: ["responses", "users", "consents", "assignments", "items", "assessments"],
    Kind.USAGE: ["activity_events", "users", "consents", "enrollments"],
}
# With the columns that confirm a kept standing (resolvers.principal.confirm).
GENERATION = f"SELECT pledgeql_report_generation($1::uuid[], $2::text[]), {CONFIRMING}"

T = TypeVar("T")
Inputs = tuple[Universe, tuple[str, ...], tuple[tuple[str, str], ...], int, tuple[Universe, ...]]


class ReportCache:
    """One server's computed reports (the module's docstring says when one is given again)."""

    def __init__(self, entries: int = ENTRIES) -> None:
        self._size = entries
        self._kept: OrderedDict[Inputs, tuple[int, Report]] = OrderedDict()
        self._running: dict[tuple[Inputs, int], asyncio.Future[Report | None]] = {}
        self._shown: OrderedDict[int, tuple[Report, Any, Any]] = OrderedDict()
        self.computed = 0  # reports computed rather than given again (the tests read it)

    async def report(
        self,
        db: Db,
        universe: Universe,
        group_by: Sequence[str],
        fixed: dict[str, str],
        k: int,
        counterparts: Sequence[Universe],
        standing: tuple[int, str] | None = None,
    ) -> Report:
        """``run_report`` of these inputs: kept, being computed, or computed now. With ``standing``
        (a kept standing's, ``RequestContext.confirm``), raises StaleStanding unless the statement
        that reads the counters confirms it."""
        inputs: Inputs = (universe, tuple(group_by), tuple(sorted(fixed.items())), k, tuple(counterparts))
        districts = sorted({d for u in (universe, *counterparts) for d in u.district_ids})
        row = await db.fetchrow(GENERATION, districts, SOURCES[universe.kind])
        if row is None:
            raise RuntimeError("The report counters' statement returned no row")
        confirm(standing, row[1], row[2])
        generation = int(row[0])
        kept = self._kept.get(inputs)
        if kept is not None and kept[0] == generation:
            self._kept.move_to_end(inputs)
            return kept[1]
        running = self._running.get((inputs, generation))
        if running is not None:
            shared = await asyncio.shield(running)
            if shared is not None:
                return shared
        return await self._compute(
            inputs, generation, lambda: run_report(db, universe, group_by, fixed, k, counterparts)
        )

    async def _compute(self, inputs: Inputs, generation: int, compute: Callable[[], Awaitable[Report]]) -> Report:
        at = (inputs, generation)
        future: asyncio.Future[Report | None] = asyncio.get_running_loop().create_future()
        mine = at not in self._running
        if mine:
            self._running[at] = future
        outcome: Report | None = None  # None: the waiters compute their own
        try:
            self.computed += 1
            report = outcome = await compute()
        finally:
            if mine:
                del self._running[at]
                future.set_result(outcome)
        kept = self._kept.get(inputs)
        if kept is None or kept[0] <= generation:
            self._keep(self._kept, inputs, (generation, report))
        return report

    def shown(self, report: Report, labels: Any, convert: Callable[[], T]) -> T:
        """``convert()``: the report as the schema's objects, made once per report and labels."""
        held = self._shown.get(id(report))
        if held is not None and held[0] is report and held[1] == labels:
            self._shown.move_to_end(id(report))
            shown: T = held[2]
            return shown
        made = convert()
        self._keep(self._shown, id(report), (report, labels, made))  # the report held: its id is not reused
        return made

    def _keep(self, store: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        """``store[key] = value`` as its most recently used, the least recently used
        dropped beyond the cache's size (none kept at size 0)."""
        if self._size <= 0:
            return
        store[key] = value
        store.move_to_end(key)
        while len(store) > self._size:
            store.popitem(last=False)
