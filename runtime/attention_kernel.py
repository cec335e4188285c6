"""Which of onnxruntime's CPU attention kernels a session's GroupQueryAttention nodes take.

onnxruntime's CPU GroupQueryAttention has a tiled "flash" kernel (online softmax over blocks of the
cache) beside its plain one (all scores of a head, then softmax, then the values), and takes the
tiled one whenever it can. With a float32 cache that pays at one token a step (SmolLM2 int4 at
depth 2,048: 62.7 against 48.6 tok/s in the harness). With an int8 cache it does not: the tiled kernel
dequantizes blocks of values per query head, and the plain one multiplies the int8 cache directly.
Harness (`python -m benchmarks compare --also "LABEL=FOLDER,attention=tiled|plain"`, a session of
each kernel made the same way, 2-core AMD EPYC, onnxruntime 1.32): SmolLM2 int4 with its int8 cache
at depth 2,048 82.8 against 69.4 tok/s, at depth 0 level (128.0 against 127.2); Gemma 3 270M, whose
sliding-window layers keep short rows, 79.6 against 73.5 at depth 2,048, level at depth 0. At depth
4,096 SmolLM2's default decodes 71.1 against 62.6 tok/s for the tiled kernel.

onnxruntime's only switch is an environment variable read when a session builds its kernels
(`ORT_GQA_DISABLE_FLASH_ATTENTION`), so it is set for the length of that session's construction,
under a lock that every edgelm session is made under, and removed after; a value the user set is
left alone. (Another library building onnxruntime sessions in another thread at that moment would
see it too: its attention would take the plain kernel, slower at depth on a float cache, not wrong.)
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

FLASH_SWITCH = "ORT_GQA_DISABLE_FLASH_ATTENTION"
_switching = threading.Lock()


def flash_pays(kv_dtype: str, device: str) -> bool:
    """Whether a graph with this cache type on this device should keep onnxruntime's tiled attention."""
    return not (kv_dtype == "int8" and device == "cpu")


@contextmanager
def plain_attention(enabled: bool = True) -> Iterator[None]:
    """Sessions made inside take the plain attention kernel (when `enabled` and the user set no switch).

    Every edgelm session is made under the lock, so one that keeps the tiled kernel is never built
    while another thread's switch is set; a switch seen under the lock is the user's (ours is
    always removed before the lock is released).
    """
    with _switching:
        ours = enabled and FLASH_SWITCH not in os.environ
        if ours:
            os.environ[FLASH_SWITCH] = "1"
        try:
            yield
        finally:
            if ours:
                os.environ.pop(FLASH_SWITCH, None)
