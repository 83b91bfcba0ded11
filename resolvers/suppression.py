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

Where a student can fall in several groups of one dimension (ETHNICITY, and
the dimensions counted per response or event: CLASS, SUBJECT, ASSESSMENT,
SKILL, WEEK), a partition's children add up to more than their parent: the
children minus the parent describe the students counted more than once (the
*overlap group*), and a caller who sees every child and the parent can
compute it, students, responses, minutes and sessions (POLICY.md section 5).
So each such partition also holds its overlap group, sized by the distinct
students counted more than once:

4. A small overlap group (0 < students < k) hides the partition's smallest
   shown cell, and then, by rule 2, the next one: its value never follows
   from the cells, and no cell follows from it.
5. A partition with one hidden cell keeps needing a second hidden *cell*:
   the unknown overlap group does not count, because some measures add up
   exactly even where students do not (each response has one skill).
6. The overlap groups of a table add up, along each other dimension, to the
   overlap group of the table without it (exactly for the students' own
   attributes, approximately otherwise; treated as exact, which
   over-protects). Those sums are partitions too: an overlap group that
   cannot be computed (its partition has a hidden cell) may not be the only
   one of its line, nor the only one hidden below a parent that cannot.

No combination of the cells may isolate fewer than k students either
(POLICY.md section 5, "more generally"), and two more combinations can:

7. A shown cell and a shown cell it lies within (the same values, fewer
   dimensions: a row and the total, a cell and its row) differ by the
   students of the outer one who are not in the inner one. Where a student
   has one value of each dimension those are the inner cell's siblings, which
   rules 1 to 3 protect; where a student can fall in several groups (a class
   of 23 of whom 21 practised one assessment) they are a group of their own,
   so a difference of 0 < students < k hides the inner cell (and then, by
   rule 2, another).
8. The hidden cells of a partition whose children split their parent exactly
   (a dimension each student has one value of) add up to the shown parent
   less its shown cells: hidden cells of fewer than k students together hide
   the next-smallest shown cell, until they hold at least k.

What this protects: the cells of one report's lattice (every table of its
dimensions, the total included, which the same report without a dimension
gives), the overlap groups of its multi-valued dimensions, and their sums.
The additive measures are protected as if every partition summed exactly,
which over-protects the non-additive counts and never under-protects the
additive ones. It does not model a report under another caller's universe
(another scope or k): those are other lattices, suppressed on their own.
The one exception is the analyst's, who can ask the same report under two
purposes whose districts may differ: ``suppress_jointly`` decides one hidden
set for both universes and their differences. The roster's structure links
lattices: a class is in one school, a school in one district, so a school's
row is also a cell of the school-by-district table. resolvers/reports.py
adds those ancestors to the lattice and reads a row's flags from both.

What it does not protect (known): dimensions nested by the data alone (a
grade taught in one school only: SCHOOL x X less GRADE_LEVEL x X can give a
grade's hidden cell back), hidden cells of one partition that another
partition's hidden cells contain and that differencing the two recovers,
and the students counted in two weeks of a window.
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


Overlaps = Mapping[int, Mapping[int, Mapping[Key, int]]]


def suppress(
    tables: Mapping[int, Mapping[Key, Count]],
    n: int,
    k: int,
    overlaps: Overlaps | None = None,
    forced: Mapping[int, Mapping[Key, Reason]] | None = None,
) -> dict[int, dict[Key, Reason]]:
    """The hidden cells of every table of the lattice over ``n`` dimensions.

    ``tables[mask]`` holds the cells of the table grouped by the dimensions in
    ``mask`` (bit i = dimension i), keyed by their values in increasing
    dimension order; ``tables[0]`` holds the total under the key ``()``.
    Missing tables are empty. ``overlaps[mask][d][parent]``, for a dimension
    ``d`` in ``mask`` where a student can fall in several groups, is the
    number of distinct students counted in two or more of the children of
    ``parent`` (a key of the table ``mask`` without ``d``) along ``d``: the
    group that the children minus their parent describe. ``forced[mask]``
    names cells hidden whatever their size (see ``suppress_jointly``); those
    the table holds are hidden, COMPLEMENTARY unless small, before the
    partitions are worked through. Returns, per mask, each hidden cell's reason.
    """
    if k < 1:
        raise ValueError("The minimum group size k must be at least 1")
    hidden: dict[int, dict[Key, Reason]] = {}
    unknown: dict[int, set[tuple[int, Key]]] = {}
    for mask in levels_of(n):
        hidden[mask], unknown[mask] = _suppress_level(
            mask, n, tables, (overlaps or {}).get(mask, {}), hidden, unknown, k, (forced or {}).get(mask, {})
        )
    return hidden


@dataclass(frozen=True, slots=True)
class View:
    """One universe's lattice of a report: its tables and overlap groups."""

    tables: Mapping[int, Mapping[Key, Count]]
    overlaps: Overlaps


def suppress_jointly(views: list[View], n: int, k: int) -> dict[int, dict[Key, Reason]]:
    """One hidden set for the same report over several universes (the first is
    the caller's), such that every universe's lattice is suppressed by rules
    1 to 6 with exactly that set.

    An analyst can ask a report under REPORTING and under PRODUCT_ANALYTICS,
    whose districts may differ (POLICY.md 4.1): subtracting the two gives, per
    cell, the students of the districts in one universe and not the other.
    So the views are the caller's universe, the other purpose's, and those
    two differences (each counted alone), and a cell hidden in any view is
    hidden in all of them; complementary suppression is then run again in
    every view with that set forced, until nothing changes. Every view hides
    the same cells (the set does not depend on which universe is the
    caller's), every published cell is at least k or empty in every view,
    the differences included, and no view has a partition with one hidden
    cell. A cell a view does not hold (no student of it there) is not hidden
    in that view's partitions, as it is not there for its caller.

    The reasons are the first view's: SMALL_GROUP for its small cells,
    COMPLEMENTARY for every other hidden cell.
    """
    first = views[0]
    if len(views) == 1:
        return suppress(first.tables, n, k, first.overlaps)
    forced: dict[int, dict[Key, Reason]] = {}
    while True:
        union: dict[int, dict[Key, Reason]] = {mask: dict(cells) for mask, cells in forced.items()}
        for view in views:
            for mask, cells in suppress(view.tables, n, k, view.overlaps, forced).items():
                for key in cells:
                    union.setdefault(mask, {})[key] = Reason.COMPLEMENTARY
        if {m: set(c) for m, c in union.items() if c} == {m: set(c) for m, c in forced.items() if c}:
            break
        forced = union
    out: dict[int, dict[Key, Reason]] = {mask: {} for mask in levels_of(n)}
    for mask, cells in forced.items():
        own = first.tables.get(mask, {})
        for key in cells:
            count = own.get(key)
            small = count is not None and 0 < count.students < k
            out[mask][key] = Reason.SMALL_GROUP if small else Reason.COMPLEMENTARY
    return out


def _suppress_level(
    mask: int,
    n: int,
    tables: Mapping[int, Mapping[Key, Count]],
    overlaps: Mapping[int, Mapping[Key, int]],
    hidden: Mapping[int, Mapping[Key, Reason]],
    unknown: Mapping[int, set[tuple[int, Key]]],
    k: int,
    forced: Mapping[Key, Reason],
) -> tuple[dict[Key, Reason], set[tuple[int, Key]]]:
    """The hidden cells of the table ``mask``, and its overlap groups that a
    caller cannot compute (those whose partition has a hidden cell)."""
    cells = tables.get(mask, {})
    out: dict[Key, Reason] = {key: Reason.COMPLEMENTARY for key in forced if key in cells}
    out.update({key: Reason.SMALL_GROUP for key, c in cells.items() if 0 < c.students < k})
    if mask == 0 or not cells:
        return out, set()
    dims = positions(mask, n)
    # Rule 7: a shown cell and a shown cell it lies within (any table of fewer of
    # its dimensions) differ by the students of the one who are not in the other:
    # a group of its own, protected like any other.
    for key, count in cells.items():
        if key in out:
            continue
        for sub in range(mask):
            if sub & ~mask:
                continue
            within = tuple(key[i] for i, d in enumerate(dims) if sub >> d & 1)
            outer = tables.get(sub, {}).get(within)
            if outer is not None and within not in hidden.get(sub, {}) and 0 < outer.students - count.students < k:
                out[key] = Reason.COMPLEMENTARY
                break

    # Partitions of cells: (is the parent hidden?, the children, smallest
    # first, and the overlap group of a multi-valued dimension's partition).
    # They are built and worked through in one fixed order, so the same table
    # always suppresses the same way.
    ordered = sorted(cells, key=lambda key: (cells[key].students, _values(key)))
    parent_flags: list[bool] = []
    children_of: list[list[Key]] = []
    overlap_of: list[tuple[int, Key] | None] = []
    # The parent's students where its children split them exactly (a dimension
    # each student has one value of), else None: rule 8's partitions.
    exact_of: list[int | None] = []
    total = tables.get(0, {}).get(())
    if len(dims) > 1:
        parent_flags.append(() in hidden.get(0, {}))
        children_of.append(ordered)
        overlap_of.append(None)
        exact_of.append(None if total is None or any(d in overlaps for d in dims) else total.students)
    for drop, d in enumerate(dims):
        below = mask & ~(1 << d)
        parent_hidden = hidden.get(below, {})
        groups: dict[Key, list[Key]] = {}
        for key in ordered:
            groups.setdefault(key[:drop] + key[drop + 1 :], []).append(key)
        multi = d in overlaps
        for parent in sorted(groups, key=_values):
            parent_flags.append(parent in parent_hidden)
            children_of.append(groups[parent])
            overlap_of.append((d, parent) if multi else None)
            whole = tables.get(below, {}).get(parent)
            exact_of.append(None if multi or whole is None else whole.students)

    # Overlap groups: one per partition along a multi-valued dimension, sized
    # by the students counted more than once. Along every other dimension e
    # of the table they add up (exactly where e is the student's own,
    # approximately otherwise: treated as exact, which over-protects) to the
    # overlap group of the table without e, so they form partitions too.
    size: dict[tuple[int, Key], int] = {}
    partition_of: dict[tuple[int, Key], int] = {}
    for index, group in enumerate(overlap_of):
        if group is not None:
            size[group] = overlaps[group[0]].get(group[1], 0)
            partition_of[group] = index
    group_parent: list[bool] = []
    groups_of: list[list[tuple[int, Key]]] = []
    for d in dims:
        if d not in overlaps:
            continue
        own = sorted((g for g in size if g[0] == d), key=lambda g: (size[g], _values(g[1])))
        rest = [x for x in dims if x != d]
        for at, e in enumerate(rest):
            known_below = unknown.get(mask & ~(1 << e), set())
            lines: dict[Key, list[tuple[int, Key]]] = {}
            for group in own:
                lines.setdefault(group[1][:at] + group[1][at + 1 :], []).append(group)
            for parent in sorted(lines, key=_values):
                group_parent.append((d, parent) in known_below)
                groups_of.append(lines[parent])

    member_of: dict[Key, list[int]] = {}
    hidden_in = [0] * len(children_of)
    for index, children in enumerate(children_of):
        for key in children:
            member_of.setdefault(key, []).append(index)
            if key in out:
                hidden_in[index] += 1
    first_shown = [0] * len(children_of)  # children before it are all hidden

    cell_partitions = len(children_of)
    unknown_here: set[tuple[int, Key]] = {g for g, index in partition_of.items() if hidden_in[index]}
    group_member_of: dict[tuple[int, Key], list[int]] = {}
    unknown_in = [0] * len(groups_of)
    for index, members in enumerate(groups_of):
        for group in members:
            group_member_of.setdefault(group, []).append(index)
            if group in unknown_here:
                unknown_in[index] += 1

    pending = deque(range(cell_partitions + len(groups_of)))
    queued = set(pending)

    def hide(victim: Key) -> None:
        out[victim] = Reason.COMPLEMENTARY
        for other in member_of[victim]:
            hidden_in[other] += 1
            if other not in queued:
                queued.add(other)
                pending.append(other)
            group = overlap_of[other]
            if group is not None and group not in unknown_here:
                unknown_here.add(group)
                for line in group_member_of.get(group, ()):
                    unknown_in[line] += 1
                    if cell_partitions + line not in queued:
                        queued.add(cell_partitions + line)
                        pending.append(cell_partitions + line)

    def hidden_together(index: int) -> bool:
        """Rule 8: the hidden cells of an exact partition, together, are its
        shown parent less its shown cells; fewer than k students is a small group."""
        whole = exact_of[index]
        if whole is None:
            return False
        together = whole - sum(cells[key].students for key in children_of[index] if key not in out)
        return 0 < together < k

    def first_shown_child(index: int) -> Key:
        children = children_of[index]
        at = first_shown[index]
        while children[at] in out:
            at += 1
        first_shown[index] = at
        return children[at]

    while pending:
        index = pending.popleft()
        queued.discard(index)
        if index < cell_partitions:
            children = children_of[index]
            n_hidden = hidden_in[index]
            group = overlap_of[index]
            # A small overlap group is hidden like a small cell: it takes two
            # of the partition's cells with it, so that neither it nor any
            # cell follows from the others.
            small_overlap = group is not None and 0 < size[group] < k
            if n_hidden == len(children):
                continue
            alone = n_hidden == 1 or (n_hidden == 0 and (parent_flags[index] or small_overlap))
            if alone or (n_hidden > 1 and not parent_flags[index] and hidden_together(index)):
                hide(first_shown_child(index))
        else:
            line = index - cell_partitions
            members = groups_of[line]
            n_unknown = unknown_in[line]
            if n_unknown == len(members) or not (n_unknown == 1 or (n_unknown == 0 and group_parent[line])):
                continue
            victim_group = next(g for g in members if g not in unknown_here)
            hide(first_shown_child(partition_of[victim_group]))
    return out, unknown_here


def hidden_count(reasons: Iterable[Reason | None]) -> int:
    return sum(1 for r in reasons if r is not None)
