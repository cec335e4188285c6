"""Interleaving: every row's samples taken in turn (A B C, then B C A, ...), not one row after another.

The machine drifts (other load, clock, thermal) by up to 20 % over minutes; rows measured one
after the other can differ by that much for no reason of their own. With every row loaded in its
own warm worker, repetition r runs each test on every row in the order rotated by r, so any
drift falls on all rows alike and the ratios between rows hold.
"""

from __future__ import annotations

from collections.abc import Iterator


def rotated(items: list, round_index: int) -> list:
    """The round's order: round r starts at item r (mod len)."""
    if not items:
        return []
    shift = round_index % len(items)
    return items[shift:] + items[:shift]


def schedule(tests: list[dict], rows: list) -> Iterator[tuple[dict, int, object]]:
    """(test, repetition, row) in the order to measure: for each repetition, each test on every row, rotated.

    A test with fewer repetitions (its "reps") drops out of the later ones.
    """
    for rep in range(max((t["reps"] for t in tests), default=0)):
        for test in tests:
            if rep < test["reps"]:
                for row in rotated(rows, rep):
                    yield test, rep, row
