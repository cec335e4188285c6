"""Interleaving: rotation order, and the schedule of samples across rows and tests."""

from edgelm.benchmarks.rounds import rotated, schedule


def test_each_round_starts_one_row_later():
    rows = ["a", "b", "c"]
    assert [rotated(rows, r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert rotated([], 3) == []


def test_every_test_visits_every_row_each_repetition_in_rotated_order():
    tests = [{"key": "pp", "reps": 2}, {"key": "tg", "reps": 2}, {"key": "sweep", "reps": 1}]
    order = [(t["key"], rep, row) for t, rep, row in schedule(tests, ["a", "b"])]
    assert order == [("pp", 0, "a"), ("pp", 0, "b"), ("tg", 0, "a"), ("tg", 0, "b"), ("sweep", 0, "a"),
                     ("sweep", 0, "b"), ("pp", 1, "b"), ("pp", 1, "a"), ("tg", 1, "b"), ("tg", 1, "a")]
    assert list(schedule([], ["a"])) == [] and list(schedule(tests, [])) == []
