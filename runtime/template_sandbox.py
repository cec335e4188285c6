"""A Jinja2 sandbox with a budget, so a chat template from a downloaded model cannot freeze the app.

Jinja2's sandbox already blocks unsafe attributes; it does not bound work. Here every call,
attribute and item lookup, loop step over `range()`, and intercepted operator counts against
a budget, and every count also looks at the clock: past either limit the render raises
`TemplateBudgetExceeded` from inside the template's own Python code, so a CPU-bound render
stops without threads or signals. `*` and `**` are checked before they run, so `'x' * 10**9`
or `10 ** 10 ** 10` never start.
"""

from __future__ import annotations

import math
import threading
import time

from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OPERATIONS = 2_000_000  # calls, lookups and loop steps in one render; real templates use thousands
MAX_SECONDS = 5.0  # wall-clock limit of one render
MAX_INT_BITS = 4096  # results of ** larger than this are refused before they are computed
MAX_SEQUENCE = 1_000_000  # longest string or list a * may build


class TemplateBudgetExceeded(Exception):
    """The template did too much work, ran too long, or built something too large."""


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment that counts work per render (per thread) and stops runaway templates."""

    intercepted_binops = frozenset({"*", "**", "//", "%"})

    def __init__(self, *args, max_operations: int = MAX_OPERATIONS, max_seconds: float = MAX_SECONDS, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_operations, self.max_seconds = max_operations, max_seconds
        self._state = threading.local()
        self.globals["range"] = self._range

    def start(self) -> None:
        """Resets this thread's budget: call before each render."""
        self._state.operations = 0
        self._state.deadline = time.monotonic() + self.max_seconds

    def tick(self, cost: int = 1) -> None:
        state = self._state
        state.operations = getattr(state, "operations", 0) + cost
        if state.operations > self.max_operations:
            raise TemplateBudgetExceeded(f"it did more than {self.max_operations:,} operations")
        if time.monotonic() > getattr(state, "deadline", math.inf):
            raise TemplateBudgetExceeded(f"it ran longer than {self.max_seconds:g} s")

    # -- every way a template does work --------------------------------------------------------
    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja2's own signature
        __self.tick()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj, attribute):
        self.tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        self.tick()
        return super().getitem(obj, argument)

    def call_binop(self, context, operator, left, right):
        self.tick()
        if operator == "**" and _is_number(left) and _is_number(right):
            _check_power(left, right)
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        return super().call_binop(context, operator, left, right)

    def _range(self, *args) -> "CountedRange":
        rng = range(*args)
        if len(rng) > MAX_SEQUENCE:
            raise TemplateBudgetExceeded(f"range() of {len(rng):,} items is too long")
        return CountedRange(rng, self.tick)


class CountedRange:
    """A range whose every loop step counts against the render's budget."""

    def __init__(self, rng: range, tick):
        self.rng, self.tick = rng, tick

    def __iter__(self):
        for value in self.rng:
            self.tick()
            yield value

    def __reversed__(self):
        return iter(CountedRange(self.rng[::-1], self.tick))

    def __len__(self) -> int:
        return len(self.rng)

    def __getitem__(self, index):
        item = self.rng[index]
        return CountedRange(item, self.tick) if isinstance(item, range) else item

    def __contains__(self, value) -> bool:
        return value in self.rng


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_power(base, exponent) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise TemplateBudgetExceeded(f"{base} ** {exponent} is too large to compute")


def _check_repeat(sequence, count) -> None:
    if isinstance(sequence, (str, list, tuple)) and isinstance(count, int) and len(sequence) * count > MAX_SEQUENCE:
        raise TemplateBudgetExceeded(f"repeating a sequence of {len(sequence):,} items {count:,} times is too large")
