"""Progress lines for the long export steps, on stderr so stdout stays clean."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def quiet_libraries() -> "_Quiet":
    """transformers, optimum and the ONNX quantizer log advice meant for their own developers; keep errors only.

    Applies at once; used as `with quiet_libraries():` it puts every logger level and warning
    filter back on exit, so the caller's own logging (and edgelm's warnings) work afterwards.
    """
    return _Quiet()


class _Quiet:
    NAMES = ("transformers", "optimum", "onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer",
             "root")

    def __init__(self):
        import logging
        import warnings

        self.levels = {name: logging.getLogger(name).level for name in self.NAMES}
        self.filters = list(warnings.filters)
        self.hf_verbosity = None
        for name in self.NAMES:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            from transformers.utils import logging as hf_logging

            self.hf_verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
        except ImportError:
            pass
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)

    def __enter__(self) -> "_Quiet":
        return self

    def __exit__(self, *exc) -> None:
        import logging
        import warnings

        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
        warnings.filters[:] = self.filters
        if self.hf_verbosity is not None:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity(self.hf_verbosity)


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
