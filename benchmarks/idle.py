"""Samples taken on a quiet machine: wait until no one else uses the CPU, redo a sample if someone did.

On two shared cores one other busy process halves a backend's speed or worse (llama.cpp fell
from 73 to 2 tok/s when its second thread lost its core), and nothing in the sample's own
numbers says so. /proc/stat counts every core's busy time; the process's own CPU time
(`os.times()`, its threads and waited-for children included) is subtracted, and what is left
is other load. A sample during which others used more than `threshold` cores on average is
redone (up to `max_redos` times); before each sample the machine is watched in short windows
until one is quiet (up to `max_wait_s`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

IDLE_FIELDS = (3, 4)  # idle, iowait: the other fields of a /proc/stat cpu line are busy time


def read_proc_stat() -> str:
    with open("/proc/stat") as f:
        return f.read()


def busy_seconds(stat_text: str, ticks_per_s: float) -> float:
    """CPU seconds all cores have spent busy since boot, from the text of /proc/stat."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
            return sum(v for i, v in enumerate(values) if i not in IDLE_FIELDS) / ticks_per_s
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class IdleGuard:
    """Waits for a quiet machine before a sample and tells whether others used the CPU during it.

    The readers are parameters so that tests can feed a fake /proc/stat and a fake clock.
    """

    threshold: float = 0.1  # cores of other load allowed on average during a sample (0.1 = 10 % of one core)
    slack_s: float = 0.05  # other CPU seconds always allowed: /proc/stat counts in 10 ms ticks
    window_s: float = 0.5  # length of one quiet-check window while waiting
    max_wait_s: float = 120.0  # wait at most this long for a quiet machine, then measure anyway
    max_redos: int = 5  # redo a disturbed sample at most this many times, then keep the last one
    read_stat: Callable[[], str] = read_proc_stat
    own_cpu: Callable[[], float] = own_cpu_seconds
    clock: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep
    ticks_per_s: float = field(default_factory=lambda: float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0)

    def mark(self) -> tuple[float, float, float]:
        """(wall, all cores' busy seconds, own CPU seconds) now."""
        return self.clock(), busy_seconds(self.read_stat(), self.ticks_per_s), self.own_cpu()

    def others(self, start: tuple[float, float, float], end: tuple[float, float, float]) -> tuple[float, float]:
        """(other processes' CPU seconds, wall seconds) between two marks."""
        wall = end[0] - start[0]
        other = (end[1] - start[1]) - (end[2] - start[2])
        return max(0.0, other), wall

    def quiet(self, start, end) -> bool:
        other, wall = self.others(start, end)
        return other <= self.threshold * wall + self.slack_s

    def wait(self) -> float:
        """Blocks until one window of `window_s` is quiet or `max_wait_s` passed; returns the seconds waited."""
        began = self.clock()
        while True:
            start = self.mark()
            self.sleep(self.window_s)
            end = self.mark()
            if self.quiet(start, end) or end[0] - began >= self.max_wait_s:
                return end[0] - began

    def sample(self, measure: Callable[[], object]) -> tuple[object, dict]:
        """Runs `measure()` on a quiet machine, redoing it while others disturbed it.

        Returns (the kept result, {'redone': n, 'waited_s': s, 'disturbed': whether the kept one was
        disturbed too, 'other_cores': other load during the kept one, in cores}).
        """
        redone, waited = 0, 0.0
        while True:
            waited += self.wait()
            start = self.mark()
            result = measure()
            end = self.mark()
            other, wall = self.others(start, end)
            disturbed = not self.quiet(start, end)
            if not disturbed or redone >= self.max_redos:
                return result, {"redone": redone, "waited_s": waited, "disturbed": disturbed,
                                "other_cores": other / wall if wall > 0 else 0.0}
            redone += 1


class NoGuard(IdleGuard):
    """Measures at once, whatever the load (for tests and `--no-idle-wait`)."""

    def mark(self) -> tuple[float, float, float]:
        return self.clock(), 0.0, 0.0

    def wait(self) -> float:
        return 0.0

    def quiet(self, start, end) -> bool:
        return True
