"""The timing options `python -m benchmarks compare` and `edgelm bench` share, and the settings they make.

Kept free of heavy imports: `edgelm --help` builds its parser from here.
"""

from __future__ import annotations

import argparse

from edgelm.errors import EdgelmError

DEPTH = 2048  # the depth test: tg after this much context, and TTFT of a prompt this long
IDLE_THRESHOLD = 0.1  # cores of other load during a sample that make it redone
MAX_WAIT_S = 120.0  # longest wait for a quiet machine before one sample
MAX_REDOS = 5  # a sample disturbed this many times is kept, and counted as disturbed


def settings_from(args) -> dict:
    for name in ("pp", "tg", "reps"):
        if getattr(args, name, 1) < 1:
            raise EdgelmError(f"--{name} must be at least 1, got {getattr(args, name)}")
    depth = getattr(args, "depth", DEPTH)
    if depth < 0:
        raise EdgelmError(f"--depth must be 0 (no depth test) or more, got {depth}")
    scaling = not getattr(args, "no_scaling", True)
    return {
        "pp": args.pp, "tg": args.tg, "reps": args.reps, "threads": args.threads or _default_threads(),
        "depth": depth,  # tg at this depth and the TTFT of a prompt this long, beside pp and tg
        "depths": [0, 512, 2048] if scaling else [], "prompt_lengths": [128, 512, 2048] if scaling else [],
        "scaling_tokens": 32, "scaling_reps": 2, "perplexity_tokens": 512,
        "idle": idle_settings(args),
    }


def idle_settings(args) -> dict | None:
    """The IdleGuard settings (benchmarks/idle.py), or None with --no-idle-wait."""
    if getattr(args, "no_idle_wait", False):
        return None
    threshold = getattr(args, "idle_threshold", IDLE_THRESHOLD)
    max_wait = getattr(args, "max_wait", MAX_WAIT_S)
    if not 0 < threshold <= 64 or max_wait < 0:
        raise EdgelmError(f"--idle-threshold must be in (0, 64] cores and --max-wait >= 0 s, got {threshold}, {max_wait}")
    return {"threshold": threshold, "max_wait_s": max_wait, "max_redos": MAX_REDOS}


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `compare` and `edgelm bench` share."""
    parser.add_argument("--pp", type=int, default=512, help="prompt tokens for the pp test (default 512)")
    parser.add_argument("--tg", type=int, default=128, help="new tokens for the tg test (default 128)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions after a warm-up (default 5)")
    parser.add_argument("--depth", type=int, default=DEPTH,
                        help=f"also tg after this many tokens of context, and the TTFT of a prompt this long "
                             f"(default {DEPTH}; 0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: one per core)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the depth and prompt-length sweeps")
    parser.add_argument("--idle-threshold", type=float, default=IDLE_THRESHOLD,
                        help=f"redo a sample if other processes used more than this many cores during it "
                             f"(default {IDLE_THRESHOLD})")
    parser.add_argument("--max-wait", type=float, default=MAX_WAIT_S,
                        help=f"seconds to wait for a quiet machine before each sample (default {MAX_WAIT_S:.0f})")
    parser.add_argument("--no-idle-wait", action="store_true",
                        help="measure at once, whatever else runs (samples are not checked for other load)")


def _default_threads() -> int:
    from .prepare import default_threads

    return default_threads()
