"""Type and range checks for public settings, each failing with one EdgelmError that names the fix.

`bool` is never accepted as an int (True is 1 to Python, but never what a user meant), NaN and
infinity are never accepted as numbers, and text must be a str that UTF-8 can encode.
"""

from __future__ import annotations

import math
import numbers

from .errors import EdgelmError

MAX_SEED = 2**63 - 1


def is_int(value) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, low: int | None = None, high: int | None = None, allowed: str | None = None) -> int:
    """`value` as an int in [low, high]; `name` and `allowed` go into the message."""
    ok = is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        raise EdgelmError(f"{name}={value!r} is invalid: use {allowed or _int_range(low, high)}")
    return int(value)


def check_number(name: str, value, low: float | None = None, high: float | None = None, allowed: str = "",
                 low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a finite float in the range; open ends exclude the bound itself."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise EdgelmError(f"{name}={value!r} is invalid: use {allowed or 'a finite number'}")
    return float(value)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise EdgelmError(f"{name}={value!r} is invalid: use True or False")
    return value


def check_seed(name: str, value) -> int | None:
    """None (a fresh seed each call) or an int in [0, 2**63 - 1]."""
    if value is None:
        return None
    return check_int(name, value, 0, MAX_SEED, f"None or an integer in [0, {MAX_SEED}]")


def check_text(name: str, value, allow_empty: bool = True) -> str:
    """A str that UTF-8 can encode (no lone surrogates); optionally not empty."""
    if not isinstance(value, str):
        raise EdgelmError(f"{name} must be a str, got {type(value).__name__} ({_short(value)})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EdgelmError(
            f"{name} holds a lone surrogate {value[exc.start]!r} at character {exc.start}, which is not text (an "
            "undecodable byte of the input, or half of a UTF-16 pair): replace or remove it (in Python: decode "
            "the input with errors='replace')"
        ) from None
    if not allow_empty and not value:
        raise EdgelmError(f"{name} is empty: give at least one character of text")
    return value


def check_strings(name: str, value) -> tuple[str, ...]:
    """A str or a list/tuple of str, as a tuple without empty strings."""
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
        raise EdgelmError(f"{name}={_short(value)} is invalid: use a string or a list of strings")
    for i, s in enumerate(items):
        check_text(f"{name}[{i}]", s)
    return tuple(s for s in items if s)


def check_token_ids(name: str, value, vocab_size: int) -> list[int]:
    """A list of int token ids, each in [0, vocab_size)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise EdgelmError(f"{name} must be a list of token ids, got {type(value).__name__}")
    ids = list(value)
    for i, token in enumerate(ids):
        if not is_int(token) or not 0 <= token < vocab_size:
            raise EdgelmError(
                f"{name}[{i}]={_short(token)} is not a token id of this model: use integers in [0, {vocab_size - 1}]"
            )
    return [int(t) for t in ids]


def _int_range(low, high) -> str:
    if low is not None and high is not None:
        return f"an integer in [{low}, {high}]"
    if low is not None:
        return f"an integer >= {low}"
    return "an integer"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
