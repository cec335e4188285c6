"""Helpers for the bad-input catalogues: run one case, name what happened.

Outcomes:
    error      an EdgelmError (or a one-line CLI error with a non-zero exit), nothing else happened
    warned     the call went through and a warning was given (logging or warnings)
    ok         the call went through and its own checks passed (the correct outcome for some cases)
    silent     the call went through without a word (a silent wrong answer for a bad input)
    traceback  any other exception escaped (or the CLI printed a traceback)
    late       the error came only after slow work began (or after the CLI echoed the prompt)
    hang       the call did not return within HANG_SECONDS
    lost       a file the user owned was deleted
    leftover   a folder that should have been removed is still there

With EDGELM_CATALOGUE_LOG=path set, every case appends `id<TAB>outcome` to that file; that is
how tests/BAD_INPUTS.md was made, before and after the fix.
"""

from __future__ import annotations

import logging
import os
import signal
import warnings

from edgelm.errors import EdgelmError

HANG_SECONDS = 30


class SlowWorkStarted(Exception):
    """Raised by a stand-in for the first slow step, to tell an early refusal from a late one."""


class _Hang(BaseException):
    pass


class _Catcher(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def classify(fn) -> str:
    """Runs `fn()` and names its outcome; `fn` returns "ok" when it checked a correct result itself."""
    catcher = _Catcher()
    edgelm_logger = logging.getLogger("edgelm")
    edgelm_logger.addHandler(catcher)

    def alarm(signum, frame):
        raise _Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn()
    except _Hang:
        return "hang"
    except EdgelmError:
        return "error"
    except SlowWorkStarted:
        return "late"
    except RecursionError:
        return "traceback"
    except Exception:  # noqa: BLE001 - the point is to see what escapes
        return "traceback"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        edgelm_logger.removeHandler(catcher)
    if result in ("lost", "leftover", "late", "traceback", "error", "silent"):
        return result
    if catcher.records or [w for w in caught if not issubclass(w.category, (DeprecationWarning, ResourceWarning))]:
        return "warned"
    return "ok" if result == "ok" else "silent"


def record(case_id: str, outcome: str) -> None:
    path = os.environ.get("EDGELM_CATALOGUE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{case_id}\t{outcome}\n")
