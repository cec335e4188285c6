"""Progress lines for the long export steps, and third-party noise kept out of the way while exporting.

edgelm is a library first: it never configures the root logger, adds no handlers, and leaves
the global warnings filters as it found them. Progress lines go to the `edgelm.export` logger
(the `edgelm` command shows them on stderr; an application shows them by logging at INFO).
transformers, optimum and the ONNX quantizer log advice meant for their own developers; their
own named loggers are set to ERROR, and their deprecation warnings ignored, only for the
duration of `quiet_libraries()`. A library that configures the root logger while we export
(onnxruntime's int4 quantizer calls `logging.basicConfig(level=INFO)` when it is first imported:
imported first thing and undone at once) is undone on the way out, so the application's own
`basicConfig` still works afterwards; a quiet export prints nothing.
"""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager

logger = logging.getLogger("edgelm.export")

# The third-party loggers that talk during an export (each library's own top-level or module logger).
NOISY_LOGGERS = (
    "transformers",
    "optimum",
    "onnxruntime.quantization",
    "onnxruntime.quantization.matmul_nbits_quantizer",
    "onnx_ir",
    "onnxscript",
    "torch.onnx",
    "accelerate",
)


@contextmanager
def quiet_libraries():
    """Within the block: third-party loggers at ERROR and their Future/DeprecationWarnings ignored.

    Everything is restored on the way out (also on an error): the loggers' own levels, the
    warnings filters, and the root logger's handlers and level if a library changed them.
    Usable as a decorator too.

    Example:
        with quiet_libraries():
            main_export(...)
    """
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    with warnings.catch_warnings():  # also drops the filters torch, sympy and urllib3 add when first imported
        _import_int4_quantizer()
        _restore_root(root_handlers, root_level)  # at once: else the host's root prints our INFO lines meanwhile
        bars_were_on = _transformers_progress_bars(False)  # edgelm's step lines say what the bars would
        loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
        saved = [(one, one.level) for one in loggers]
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # its int4 rounding divides by the zero scales of all-zero blocks before np.where drops the result
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"onnxruntime\.quantization")
        for one in loggers:
            one.setLevel(logging.ERROR)
        try:
            yield
        finally:
            _transformers_progress_bars(bars_were_on)
            for one, level in saved:
                one.setLevel(level)
            _restore_root(root_handlers, root_level)  # a library's basicConfig


def _import_int4_quantizer() -> None:
    """Imports onnxruntime's int4 quantizer, whose first import calls `logging.basicConfig(level=INFO)`.

    Done at the start of `quiet_libraries()` so that the root logger can be put back before the
    export logs anything: a host that never configured logging would otherwise print edgelm's
    INFO lines (with that module's format) for the rest of the export, quiet or not.
    """
    try:
        import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401
    except ImportError:  # the runtime-only install has no exporter to quieten
        pass


def _restore_root(handlers: list, level: int) -> None:
    root = logging.getLogger()
    if root.handlers != handlers or root.level != level:
        root.handlers[:] = handlers
        root.setLevel(level)


@contextmanager
def swapped(owner, name: str, value):
    """Within the block `owner.name` is `value` (a third-party module's function or class); the original after."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextmanager
def gguf_bar_hidden():
    """Within the block, transformers' GGUF loader draws no bar of its own (edgelm's step line says it).

    Its tensor loop uses a bare `tqdm` (transformers 4.57), which `disable_progress_bar()` does not
    reach: a log of `edgelm export model.gguf` got 272 bar updates.
    """
    import functools

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        gguf_utils = None
    if getattr(gguf_utils, "tqdm", None) is None:
        yield
        return
    with swapped(gguf_utils, "tqdm", functools.partial(gguf_utils.tqdm, disable=True)):
        yield


def _transformers_progress_bars(on: bool) -> bool:
    """Turns transformers' tqdm bars on or off; returns whether they were on.

    Also makes transformers set its logger's level (it does so the first time it logs) before we set ours.
    """
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return True
    hf_logging.get_logger("transformers")
    was_on = hf_logging.is_progress_bar_enabled()
    if on != was_on:
        hf_logging.enable_progress_bar() if on else hf_logging.disable_progress_bar()
    return was_on


def progress_bar(items, total: int | None = None, description: str = "", quiet: bool = False):
    """`items` wrapped in a tqdm bar on stderr when someone is watching, else `items` unchanged.

    Watching means: `edgelm.export` logs at INFO (the `edgelm` command, or an application that
    asked for it) and stderr is a terminal, so that logs written to files stay one line per step.
    """
    import sys

    if quiet or not logger.isEnabledFor(logging.INFO) or not sys.stderr.isatty():
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=description, leave=False, file=sys.stderr, dynamic_ncols=True)


class Progress:
    """Logs `[2/5] exporting ONNX graph ... done in 20.7 s` to `edgelm.export`. `quiet=True` silences it."""

    def __init__(self, total_steps: int, quiet: bool = False):
        self.total = total_steps
        self.current = 0
        self.quiet = quiet
        self.durations: dict[str, float] = {}

    def say(self, text: str) -> None:
        if not self.quiet:
            logger.info(text)

    @contextmanager
    def step(self, name: str):
        self.current += 1
        self.say(f"[{self.current}/{self.total}] {name} ...")
        start = time.perf_counter()
        yield
        self.durations[name] = round(time.perf_counter() - start, 2)
        self.say(f"[{self.current}/{self.total}] {name}: done in {self.durations[name]:.1f} s")
