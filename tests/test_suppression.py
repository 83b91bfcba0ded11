"""The suppression algorithm on plain data: no database, no GraphQL."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolvers.suppression import Count, Key, Reason, View, positions, suppress, suppress_jointly

S = Reason.SMALL_GROUP
C = Reason.COMPLEMENTARY


def lattice(records: Sequence[tuple[int, Sequence[str | None]]], n: int) -> dict[int, dict[Key, Count]]:
    """Every table over n dimensions from (student, values) records: distinct students per group."""
    groups: dict[int, dict[Key, set[int]]] = {m: {} for m in range(1 << n)}
    for student, values in records:
        for mask in range(1 << n):
            key = tuple(values[i] for i in positions(mask, n))
            groups[mask].setdefault(key, set()).add(student)
    return {m: {k: Count(len(s)) for k, s in t.items()} for m, t in groups.items()}


def people(counts: dict[tuple[str, ...], int]) -> list[tuple[int, tuple[str, ...]]]:
    """One record per student, ``counts[values]`` students with those values."""
    out: list[tuple[int, tuple[str, ...]]] = []
    for values, count in counts.items():
        first = len(out)  # each student once: the ids continue from the last group's
        out.extend((first + i, values) for i in range(count))
    return out


def one_way(counts: dict[str, int], k: int) -> dict[str, Reason]:
    tables = lattice(people({(v,): c for v, c in counts.items()}), 1)
    return {key[0] or "": reason for key, reason in suppress(tables, 1, k)[1].items()}


def test_a_single_small_group_is_hidden_with_the_next_smallest_of_its_partition() -> None:
    assert one_way({"north": 20, "south": 12, "east": 3}, k=5) == {"east": S, "south": C}


def test_two_small_groups_hide_each_other_and_nothing_else() -> None:
    assert one_way({"north": 30, "south": 3, "east": 2}, k=5) == {"south": S, "east": S}


def test_groups_at_or_above_k_are_shown() -> None:
    assert one_way({"north": 5, "south": 6, "east": 50}, k=5) == {}


def test_ties_for_the_next_smallest_are_broken_by_the_group_value() -> None:
    assert one_way({"b": 12, "a": 12, "c": 2, "d": 40}, k=5) == {"c": S, "a": C}


def test_a_small_total_is_hidden_and_so_is_every_group_within_it() -> None:
    tables = lattice(people({("a",): 2, ("b",): 3}), 1)
    hidden = suppress(tables, 1, 10)
    assert hidden[0] == {(): S}
    assert hidden[1] == {("a",): S, ("b",): S}


def test_an_empty_total_is_not_a_small_group() -> None:
    assert suppress({0: {(): Count(0)}}, 1, 10) == {0: {}, 1: {}}


def test_a_two_by_two_table_with_one_small_cell_hides_all_four_cells() -> None:
    # With both margins known, any one shown cell gives the small one back.
    tables = lattice(people({("P", "F"): 10, ("P", "M"): 3, ("Q", "F"): 12, ("Q", "M"): 11}), 2)
    hidden = suppress(tables, 2, 5)
    assert hidden[1] == {} and hidden[2] == {}
    assert hidden[3] == {("P", "M"): S, ("P", "F"): C, ("Q", "M"): C, ("Q", "F"): C}


def test_a_small_cell_alone_in_its_row_and_column_takes_a_partner_in_each() -> None:
    cells = {
        ("P", "4"): 10,
        ("P", "5"): 3,
        ("P", "6"): 12,
        ("Q", "4"): 8,
        ("Q", "5"): 9,
        ("Q", "6"): 15,
    }
    hidden = suppress(lattice(people(cells), 2), 2, 5)
    assert hidden[3] == {("P", "5"): S, ("P", "4"): C, ("Q", "5"): C, ("Q", "4"): C}
    # Every row and column now hides none or at least two cells.
    for row in ("P", "Q"):
        assert sum((row, g) in hidden[3] for g in "456") in (0, 2, 3)
    for grade in "456":
        assert sum((s, grade) in hidden[3] for s in "PQ") in (0, 2)


def test_a_hidden_group_is_never_the_sum_of_shown_subgroups() -> None:
    # east is small and south hidden beside it in the one-way table. In the
    # two-way table east's cells hide each other and no row or column has
    # exactly one hidden cell, yet south's two large cells would add back up
    # to south, and total - north - south gives east. So south's cells go too,
    # and then north's, which now share their columns with one hidden cell.
    # Columns 6 and 7 (east's, 2 students each) are 4 students together, the
    # total less columns 4 and 5: column 4 is hidden beside them.
    cells = {
        ("east", "6"): 2,
        ("east", "7"): 2,
        ("south", "4"): 12,
        ("south", "5"): 14,
        ("north", "4"): 30,
        ("north", "5"): 30,
    }
    hidden = suppress(lattice(people(cells), 2), 2, 5)
    assert hidden[1] == {("east",): S, ("south",): C}
    assert hidden[2] == {("6",): S, ("7",): S, ("4",): C}
    assert hidden[3] == {
        ("east", "6"): S,
        ("east", "7"): S,
        ("south", "4"): C,
        ("south", "5"): C,
        ("north", "4"): C,
        ("north", "5"): C,
    }


def test_hidden_groups_hold_at_least_k_students_together() -> None:
    # south and east are small, and 4 students together: the total less north
    # and west. So west is hidden too.
    assert one_way({"north": 30, "west": 20, "south": 2, "east": 2}, k=5) == {"south": S, "east": S, "west": C}
    assert one_way({"north": 30, "west": 20, "south": 3, "east": 2}, k=5) == {"south": S, "east": S}


def test_a_group_of_a_multi_valued_dimension_a_few_short_of_the_total_is_hidden() -> None:
    # 23 students, 21 of whom practised both assessments and 2 only A: every
    # group is large, but the total less B is the 2 who never practised B.
    records = [(s, ("A",)) for s in range(23)] + [(s, ("B",)) for s in range(21)]
    tables = lattice(records, 1)
    assert tables[0][()].students == 23 and tables[1][("B",)].students == 21
    hidden = suppress(tables, 1, 10, {1: {0: {(): 21}}})
    assert hidden[1] == {("B",): C, ("A",): C}
    # Everyone practised both: nobody is isolated, nothing is hidden.
    both = lattice([(s, (v,)) for s in range(23) for v in "AB"], 1)
    assert suppress(both, 1, 10, {1: {0: {(): 23}}}) == {0: {}, 1: {}}


def _check_differences(tables: dict[int, dict[Key, Count]], hidden: dict[int, dict[Key, Reason]], n: int) -> None:
    """No shown cell is fewer than k students short of a shown cell it lies within (k = 4)."""
    for mask in range(1, 1 << n):
        dims = positions(mask, n)
        for key, count in tables[mask].items():
            if key in hidden[mask]:
                continue
            for sub in range(mask):
                if sub & ~mask:
                    continue
                within = tuple(key[i] for i, d in enumerate(dims) if sub >> d & 1)
                if within in tables[sub] and within not in hidden[sub]:
                    difference = tables[sub][within].students - count.students
                    assert difference == 0 or difference >= 4, (mask, key, sub, within, difference)


def test_hiding_a_cell_repeats_until_no_partition_has_exactly_one_hidden() -> None:
    cells = {(a, b): 20 for a in "PQR" for b in "xyz"}
    cells[("P", "x")] = 2
    hidden = suppress(lattice(people(cells), 2), 2, 5)[3]
    for a in "PQR":
        assert sum((a, b) in hidden for b in "xyz") != 1
    for b in "xyz":
        assert sum((a, b) in hidden for a in "PQR") != 1
    assert hidden[("P", "x")] is S


def test_k_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        suppress({0: {(): Count(3)}}, 0, 0)


# ------------------------------------------------------------ properties

VALUES = st.sampled_from(["a", "b", "c", None])


def _records(n: int) -> st.SearchStrategy[list[tuple[int, tuple[str | None, ...]]]]:
    row = st.tuples(st.integers(0, 40), st.tuples(*[VALUES] * n))
    return st.lists(row, min_size=1, max_size=80)


def _check_partitions(tables: dict[int, dict[Key, Count]], hidden: dict[int, dict[Key, Reason]], n: int) -> None:
    total_hidden = () in hidden[0]
    for mask in range(1, 1 << n):
        shown_cells = tables[mask]
        h = hidden[mask]
        for key, count in shown_cells.items():
            if 0 < count.students < 4:
                assert h.get(key) is S
        partitions: list[tuple[bool, list[Key]]] = [(total_hidden, list(shown_cells))]
        dims = positions(mask, n)
        for drop, d in enumerate(dims):
            if len(dims) == 1:
                break
            groups: dict[Key, list[Key]] = {}
            for key in shown_cells:
                groups.setdefault(key[:drop] + key[drop + 1 :], []).append(key)
            parents = hidden[mask & ~(1 << d)]
            partitions.extend((parent in parents, children) for parent, children in groups.items())
        for parent_hidden, children in partitions:
            n_hidden = sum(c in h for c in children)
            if len(children) > 1:
                assert n_hidden != 1, (mask, children, h)
            if parent_hidden:
                assert n_hidden >= min(2, len(children)), (mask, children, h)


@settings(max_examples=150, deadline=None)
@given(_records(2))
def test_no_partition_of_a_two_way_table_is_left_with_exactly_one_hidden_cell(records: list) -> None:
    tables = lattice(records, 2)
    _check_partitions(tables, suppress(tables, 2, 4), 2)


@settings(max_examples=100, deadline=None)
@given(_records(3))
def test_no_partition_of_a_three_way_table_is_left_with_exactly_one_hidden_cell(records: list) -> None:
    tables = lattice(records, 3)
    _check_partitions(tables, suppress(tables, 3, 4), 3)


@settings(max_examples=100, deadline=None)
@given(_records(3))
def test_a_table_is_suppressed_the_same_way_whichever_report_holds_it(records: list) -> None:
    # The tables over (A, B) are part of the lattice over (A, B, C): their
    # hidden cells must not depend on whether C was asked for too.
    big = lattice(records, 3)
    small = lattice([(s, v[:2]) for s, v in records], 2)
    hidden_big = suppress(big, 3, 4)
    hidden_small = suppress(small, 2, 4)
    for mask in range(4):
        assert hidden_big[mask] == hidden_small[mask]


@settings(max_examples=60, deadline=None)
@given(_records(2))
def test_the_order_of_the_cells_does_not_change_what_is_hidden(records: list) -> None:
    tables = lattice(records, 2)
    reversed_tables = {m: dict(reversed(list(t.items()))) for m, t in tables.items()}
    assert suppress(tables, 2, 4) == suppress(reversed_tables, 2, 4)


@settings(max_examples=100, deadline=None)
@given(_records(2))
def test_no_shown_cell_is_a_few_students_short_of_a_shown_cell_it_lies_within(records: list) -> None:
    tables = lattice(records, 2)
    _check_differences(tables, suppress(tables, 2, 4), 2)


def test_subtracting_the_shown_groups_from_the_total_never_isolates_one_hidden_group() -> None:
    # For every one-way table of up to five groups with sizes 1..12 and k = 5:
    # the hidden groups number zero or at least two.
    for sizes in itertools.product([1, 4, 5, 12], repeat=4):
        hidden = one_way({f"g{i}": s for i, s in enumerate(sizes)}, k=5)
        assert len(hidden) != 1


def test_a_small_group_counted_twice_hides_two_cells_of_its_partition() -> None:
    # 30 students; A has 20 and B 15: 5 students are in both, so A + B - total
    # would describe them. With k = 10 that group is small.
    tables = {0: {(): Count(30)}, 1: {("A",): Count(20), ("B",): Count(15)}}
    assert suppress(tables, 1, 10) == {0: {}, 1: {}}
    hidden = suppress(tables, 1, 10, {1: {0: {(): 5}}})
    assert hidden[1] == {("A",): Reason.COMPLEMENTARY, ("B",): Reason.COMPLEMENTARY}


def test_a_group_counted_twice_of_at_least_k_students_hides_nothing() -> None:
    tables = {0: {(): Count(30)}, 1: {("A",): Count(20), ("B",): Count(20)}}
    assert suppress(tables, 1, 10, {1: {0: {(): 10}}}) == {0: {}, 1: {}}


def test_no_one_counted_twice_is_no_group_to_protect() -> None:
    tables = {0: {(): Count(30)}, 1: {("A",): Count(20), ("B",): Count(10)}}
    assert suppress(tables, 1, 10, {1: {0: {(): 0}}}) == {0: {}, 1: {}}


def test_the_groups_counted_twice_of_one_line_cannot_be_subtracted_from_their_sum() -> None:
    # By CLASS x GENDER with k = 5: 8 students are in both classes, 3 girls and
    # 5 boys. The girls' partition hides two cells; unless a boys' cell is
    # hidden too, 8 - 5 gives the 3 girls back.
    tables = {
        0: {(): Count(40)},
        1: {("A",): Count(24), ("B",): Count(24)},
        2: {("F",): Count(20), ("M",): Count(20)},
        3: {("A", "F"): Count(12), ("B", "F"): Count(11), ("A", "M"): Count(12), ("B", "M"): Count(13)},
    }
    overlaps = {1: {0: {(): 8}}, 3: {0: {("F",): 3, ("M",): 5}}}
    hidden = suppress(tables, 2, 5, overlaps)
    assert hidden[1] == {} and hidden[2] == {}
    assert {key for key, _ in hidden[3].items() if key[1] == "F"} == {("A", "F"), ("B", "F")}
    assert any(key[1] == "M" for key in hidden[3])


def _overlaps(records: Sequence[tuple[int, Sequence[str | None]]], n: int) -> dict[int, dict[int, dict[Key, int]]]:
    """For every table and dimension in it: per parent, the students in two or more of its children."""
    out: dict[int, dict[int, dict[Key, int]]] = {}
    for mask in range(1, 1 << n):
        for d in positions(mask, n):
            rest = [i for i in positions(mask, n) if i != d]
            seen: dict[Key, dict[int, set[str | None]]] = {}
            for student, values in records:
                parent = tuple(values[i] for i in rest)
                seen.setdefault(parent, {}).setdefault(student, set()).add(values[d])
            out.setdefault(mask, {})[d] = {
                parent: sum(1 for groups in students.values() if len(groups) > 1) for parent, students in seen.items()
            }
    return out


# Mostly distinct students, a few of them twice: small groups counted twice.
_FEW_TWICE = st.lists(
    st.tuples(st.integers(0, 120), st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["x", "y", "z"]))),
    min_size=10,
    max_size=90,
)


@settings(max_examples=200, deadline=None)
@given(_FEW_TWICE)
def test_no_small_group_counted_twice_and_no_overlap_of_a_line_is_left_alone(records: list) -> None:
    # Students repeat with other values: every dimension here is multi-valued.
    k = 4
    tables = lattice(records, 2)
    overlaps = _overlaps(records, 2)
    hidden = suppress(tables, 2, k, overlaps)
    _check_partitions(tables, hidden, 2)
    unknown: dict[int, set[tuple[int, Key]]] = {}
    for mask in range(1, 4):
        dims = positions(mask, 2)
        unknown[mask] = set()
        for drop, d in enumerate(dims):
            children: dict[Key, list[Key]] = {}
            for key in tables[mask]:
                children.setdefault(key[:drop] + key[drop + 1 :], []).append(key)
            for parent, keys in children.items():
                n_hidden = sum(key in hidden[mask] for key in keys)
                if n_hidden:
                    unknown[mask].add((d, parent))
                if 0 < overlaps[mask][d][parent] < k and len(keys) > 1:
                    assert n_hidden >= 2, (mask, d, parent, hidden[mask])
    # The two-way table's overlap groups along one dimension, summed along the other.
    for d in (0, 1):
        line = [(d, parent) for parent in overlaps[3][d]]
        if len(line) > 1:
            n_unknown = sum(group in unknown[3] for group in line)
            assert n_unknown != 1, (d, line, unknown[3])
            if (d, ()) in unknown[1 << d]:
                assert n_unknown >= 2


# --------------------------------------------- one report over two universes
#
# An analyst's report under REPORTING counts the districts of parts A and B,
# the same report under PRODUCT_ANALYTICS those of A and C (POLICY.md 4.1):
# suppressed jointly, with the differences B and C as views of their own.

PARTS = st.sampled_from("AABC")


def _views(records: Sequence[tuple[int, str, tuple[str | None, ...]]], n: int, first: str) -> list[View]:
    def of(parts: str) -> View:
        return View(lattice([(s, v) for s, p, v in records if p in parts], n), {})

    return [of("AB"), of("AC"), of("B"), of("C")] if first == "R" else [of("AC"), of("AB"), of("C"), of("B")]


def _parted(n: int) -> st.SearchStrategy[list[tuple[int, str, tuple[str | None, ...]]]]:
    # A student belongs to one district, so to one part.
    row = st.tuples(st.integers(0, 40), st.tuples(*[VALUES] * n))
    return st.lists(row, min_size=1, max_size=80).flatmap(
        lambda rows: st.lists(PARTS, min_size=len(rows), max_size=len(rows)).map(
            lambda parts: [(s, part, v) for (s, v), part in zip(rows, parts, strict=True)]
        )
    )


def _one_part_per_student(records: list[tuple[int, str, tuple[str | None, ...]]]) -> list:
    part_of: dict[int, str] = {}
    return [(s, part_of.setdefault(s, p), v) for s, p, v in records]


@settings(max_examples=150, deadline=None)
@given(_parted(2))
def test_an_analysts_two_purposes_hide_the_same_cells_and_no_shown_pair_differs_by_a_small_group(records: list) -> None:
    records = _one_part_per_student(records)
    k = 4
    reporting = suppress_jointly(_views(records, 2, "R"), 2, k)
    analytics = suppress_jointly(_views(records, 2, "P"), 2, k)
    for mask in range(1 << 2):
        assert set(reporting[mask]) == set(analytics[mask])
    for view in _views(records, 2, "R"):
        for mask, cells in view.tables.items():
            for key, count in cells.items():
                if key not in reporting[mask]:
                    # Shown: in no universe, difference included, a small group.
                    assert not 0 < count.students < k, (mask, key, count)
        # Within every universe, suppression is closed: no partition has
        # exactly one hidden cell of that universe's.
        tables = {m: dict(t) for m, t in view.tables.items()}
        hidden = {
            m: {key: S if 0 < tables[m][key].students < k else C for key in reporting[m] if key in tables[m]}
            for m in tables
        }
        _check_partitions(tables, hidden, 2)


def test_suppressed_alone_the_reporting_report_minus_the_analytics_report_isolates_a_small_group() -> None:
    """The hole suppress_jointly closes: each report suppressed on its own."""
    records = _one_part_per_student(
        [(i, "A", ("x", "f")) for i in range(10)]
        + [(10 + i, "A", ("y", "f")) for i in range(10)]
        + [(20 + i, "B", ("x", "f")) for i in range(2)]
    )
    reporting, analytics, *_ = _views(records, 2, "R")
    alone_r = suppress(reporting.tables, 2, 4)
    alone_p = suppress(analytics.tables, 2, 4)
    key = ("x", "f")
    assert key not in alone_r[3] and key not in alone_p[3]
    assert reporting.tables[3][key].students - analytics.tables[3][key].students == 2  # two students singled out
    joint = suppress_jointly(_views(records, 2, "R"), 2, 4)
    assert key in joint[3] and joint[3][key] is C
