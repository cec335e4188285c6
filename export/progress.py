"""Progress lines for the long export steps, on stderr so stdout stays clean."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def quiet_libraries() -> None:
    """transformers, optimum and the ONNX quantizer log advice meant for their own developers; keep errors only."""
    import logging
    import warnings

    for name in ("transformers", "optimum", "onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer",
                 "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


class Progress:
    """Prints `[2/5] exporting ONNX graph ... done in 20.7 s`. Pass `quiet=True` to silence it."""

    def __init__(self, total_steps: int, quiet: bool = False, stream=None):
        self.total = total_steps
        self.current = 0
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.durations: dict[str, float] = {}

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    @contextmanager
    def step(self, name: str):
        self.current += 1
        self.say(f"[{self.current}/{self.total}] {name} ...")
        start = time.perf_counter()
        yield
        self.durations[name] = round(time.perf_counter() - start, 2)
        self.say(f"[{self.current}/{self.total}] {name}: done in {self.durations[name]:.1f} s")
