"""The idle guard on a fake /proc/stat, a fake clock and fake own-CPU counter: no timed tests."""

import pytest

from edgelm.benchmarks.idle import IdleGuard, NoGuard, busy_seconds

STAT = "cpu  {user} 0 {system} {idle} 7 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1 2 3\n"


class FakeMachine:
    """A clock, /proc/stat and this process's CPU time that advance only when told to."""

    def __init__(self):
        self.now, self.busy_ticks, self.idle_ticks, self.own = 0.0, 1000, 5000, 0.0
        self.others_per_s = []  # cores of other load for each coming second of sleep or work

    def stat(self) -> str:
        return STAT.format(user=self.busy_ticks - 300, system=300, idle=self.idle_ticks)

    def run(self, seconds: float, own_cores: float, other_cores: float) -> None:
        """`seconds` pass with this process on `own_cores` and others on `other_cores` (100 ticks a second)."""
        self.now += seconds
        self.own += own_cores * seconds
        self.busy_ticks += round((own_cores + other_cores) * seconds * 100)
        self.idle_ticks += round((2 - own_cores - other_cores) * seconds * 100)

    def sleep(self, seconds: float) -> None:
        self.run(seconds, 0.0, self.others_per_s.pop(0) if self.others_per_s else 0.0)

    def guard(self, **settings) -> IdleGuard:
        return IdleGuard(read_stat=self.stat, own_cpu=lambda: self.own, clock=lambda: self.now, sleep=self.sleep,
                         ticks_per_s=100.0, **settings)


def test_busy_time_is_every_field_but_idle_and_iowait():
    assert busy_seconds("cpu  100 20 30 5000 70 1 2 3 0 0\n", 100.0) == pytest.approx(1.56)
    with pytest.raises(ValueError, match="no aggregate 'cpu' line"):
        busy_seconds("cpu0 1 2 3 4\n", 100.0)


def test_a_quiet_sample_is_kept_at_once():
    machine = FakeMachine()
    guard = machine.guard()
    result, record = guard.sample(lambda: machine.run(1.0, own_cores=2.0, other_cores=0.0) or "done")
    assert result == "done"
    assert record["redone"] == 0 and not record["disturbed"] and record["other_cores"] == pytest.approx(0)
    assert record["waited_s"] == pytest.approx(guard.window_s)  # one quiet window before it


def test_own_cpu_is_not_other_load():
    machine = FakeMachine()
    _, record = machine.guard().sample(lambda: machine.run(2.0, own_cores=1.9, other_cores=0.05))
    assert record["redone"] == 0 and record["other_cores"] == pytest.approx(0.05)


def test_a_disturbed_sample_is_redone_until_quiet():
    machine = FakeMachine()
    others = iter([1.0, 0.5, 0.0])  # the first two runs share the machine with another process

    def measure():
        machine.run(1.0, own_cores=1.0, other_cores=next(others))
        return machine.now

    _, record = machine.guard().sample(measure)
    assert record["redone"] == 2 and not record["disturbed"]


def test_a_sample_disturbed_every_time_is_kept_after_max_redos_and_flagged():
    machine = FakeMachine()
    _, record = machine.guard(max_redos=3).sample(lambda: machine.run(1.0, own_cores=1.0, other_cores=1.0))
    assert record["redone"] == 3 and record["disturbed"] and record["other_cores"] == pytest.approx(1.0)


def test_waits_for_a_quiet_window_before_measuring():
    machine = FakeMachine()
    machine.others_per_s = [1.0, 1.0, 1.0, 0.0]  # busy for three windows, then quiet
    guard = machine.guard(window_s=1.0)
    _, record = guard.sample(lambda: machine.run(1.0, own_cores=1.0, other_cores=0.0))
    assert record["waited_s"] == pytest.approx(4.0) and record["redone"] == 0


def test_stops_waiting_after_max_wait():
    machine = FakeMachine()
    machine.others_per_s = [1.0] * 100
    guard = machine.guard(window_s=1.0, max_wait_s=5.0)
    assert guard.wait() == pytest.approx(5.0)


def test_a_few_ticks_of_other_load_are_within_the_slack():
    machine = FakeMachine()
    guard = machine.guard(threshold=0.0, slack_s=0.05)
    _, record = guard.sample(lambda: machine.run(0.1, own_cores=2.0, other_cores=0.3))  # 3 ticks of others
    assert record["redone"] == 0


def test_no_guard_measures_at_once():
    calls = []
    result, record = NoGuard().sample(lambda: calls.append(1) or 7)
    assert result == 7 and calls == [1] and record["redone"] == 0 and record["waited_s"] == 0
