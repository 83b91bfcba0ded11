"""Small-cell and complementary suppression (POLICY.md section 5), on plain data.

A report grouped by the dimensions D is one table of a *lattice*: for every
subset S of D there is the table grouped by S (S = {} is the total), and every
cell of the table S is the union of its children in each table S + {d}. Any
report a caller can ask for (another groupBy, a narrower scope, an assessment
filter) is a table or a slice of a table of that lattice, so suppression is
decided over the whole lattice, level by level, the smaller subsets first:

1. A cell with 0 < students < k is hidden: SMALL_GROUP.
2. For every cell P of a table T and every dimension d not in T, P and its
   children in T + {d} form a *partition* (a row or a column of a two-way
   table); so does the total with all cells of a table (the partition that
   sums to the total). Whenever exactly one child of a partition is hidden,
   the next-smallest child is hidden too (COMPLEMENTARY); and when the parent
   itself is hidden while all its children show, its smallest child is hidden,
   or adding the children up would give the hidden parent back.
3. Repeat until nothing changes: hiding a cell can leave another partition
   with exactly one hidden cell.

Complementary suppression only ever hides children, never a parent, so the
hidden cells of a table depend only on that table and the tables below it:
the table grouped by SCHOOL is suppressed the same way whether it is asked for
alone, under SCHOOL x GRADE_LEVEL, or as the total of one school's report.
That is what stops differencing between reports of the same data.

"Smallest" is by distinct students, then by the cell's values, so the choice
is the same every time (and the same in every request that holds the table).
Distinct-student counts do not add up across cells (one student answers in
several weeks or skills; a student with two ethnicities is in both groups);
the additive measures (responses, score sums, minutes, sessions) do, and they
are what subtraction would recover, so every partition is treated as if it
summed exactly. That over-protects the non-additive counts and never
under-protects the additive ones.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Key = tuple[str | None, ...]


class Reason(enum.StrEnum):
    SMALL_GROUP = "SMALL_GROUP"
    COMPLEMENTARY = "COMPLEMENTARY"


@dataclass(frozen=True, slots=True)
class Count:
    """What suppression needs of a cell: its distinct students."""

    students: int


def levels_of(n: int) -> list[int]:
    """Every subset of n dimensions as a bit mask, the smaller subsets first."""
    return sorted(range(1 << n), key=lambda m: (m.bit_count(), m))


def positions(mask: int, n: int) -> list[int]:
    """The dimension indexes in ``mask``, in increasing order (a key's order)."""
    return [i for i in range(n) if mask >> i & 1]


def _values(key: Key) -> tuple[tuple[bool, str], ...]:
    """A key's sort order: by its values, nulls last."""
    return tuple((v is None, v or "") for v in key)


def suppress(tables: Mapping[int, Mapping[Key, Count]], n: int, k: int) -> dict[int, dict[Key, Reason]]:
    """The hidden cells of every table of the lattice over ``n`` dimensions.

    ``tables[mask]`` holds the cells of the table grouped by the dimensions in
    ``mask`` (bit i = dimension i), keyed by their values in increasing
    dimension order; ``tables[0]`` holds the total under the key ``()``.
    Missing tables are empty. Returns, per mask, each hidden cell's reason.
    """
    if k < 1:
        raise ValueError("The minimum group size k must be at least 1")
    hidden: dict[int, dict[Key, Reason]] = {}
    for mask in levels_of(n):
        cells = tables.get(mask, {})
        hidden[mask] = _suppress_level(mask, n, cells, hidden, k)
    return hidden


def _suppress_level(
    mask: int,
    n: int,
    cells: Mapping[Key, Count],
    hidden: Mapping[int, Mapping[Key, Reason]],
    k: int,
) -> dict[Key, Reason]:
    out: dict[Key, Reason] = {key: Reason.SMALL_GROUP for key, c in cells.items() if 0 < c.students < k}
    if mask == 0 or not cells:
        return out

    # Partitions: (is the parent hidden?, the children, smallest first). They
    # are built and worked through in one fixed order, so the same table
    # always suppresses the same way.
    ordered = sorted(cells, key=lambda key: (cells[key].students, _values(key)))
    parent_flags: list[bool] = [() in hidden.get(0, {})]
    children_of: list[list[Key]] = [ordered]
    dims = positions(mask, n)
    if len(dims) > 1:
        for drop, d in enumerate(dims):
            parent_hidden = hidden.get(mask & ~(1 << d), {})
            groups: dict[Key, list[Key]] = {}
            for key in ordered:
                groups.setdefault(key[:drop] + key[drop + 1 :], []).append(key)
            for parent in sorted(groups, key=_values):
                parent_flags.append(parent in parent_hidden)
                children_of.append(groups[parent])

    member_of: dict[Key, list[int]] = {}
    hidden_in = [0] * len(children_of)
    for index, children in enumerate(children_of):
        for key in children:
            member_of.setdefault(key, []).append(index)
            if key in out:
                hidden_in[index] += 1
    first_shown = [0] * len(children_of)  # children before it are all hidden

    pending = deque(range(len(children_of)))
    queued = set(pending)
    while pending:
        index = pending.popleft()
        queued.discard(index)
        children = children_of[index]
        n_hidden = hidden_in[index]
        if n_hidden == len(children) or not (n_hidden == 1 or (parent_flags[index] and n_hidden == 0)):
            continue
        at = first_shown[index]
        while children[at] in out:
            at += 1
        first_shown[index] = at
        victim = children[at]
        out[victim] = Reason.COMPLEMENTARY
        for other in member_of[victim]:
            hidden_in[other] += 1
            if other not in queued:
                queued.add(other)
                pending.append(other)
    return out


def hidden_count(reasons: Iterable[Reason | None]) -> int:
    return sum(1 for r in reasons if r is not None)
