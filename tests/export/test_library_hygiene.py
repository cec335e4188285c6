"""edgelm is a library: exporting leaves the host application's logging and warnings as they were."""

import subprocess
import sys

import pytest

# A host application with its own handler on the root logger at INFO. It exports a tiny model
# through edgelm.pipeline(), then checks that its logging and warnings still behave as it set them.
APP = r"""
import io, logging, sys, warnings
import numpy  # the runtime's own dependency adds its filters when first imported, in any numpy program
import edgelm

log = io.StringIO()
configure = lambda: logging.basicConfig(level=logging.INFO, stream=log, format="%(name)s:%(levelname)s:%(message)s")
if sys.argv[2] == "before":
    configure()
filters_before = list(warnings.filters)

generator = edgelm.pipeline("text-generation", model=sys.argv[1], precision="int4")
assert generator("Hi", max_new_tokens=2)[0]["generated_text"].startswith("Hi")
if sys.argv[2] == "after":  # an app that sets logging up late must still get its own configuration
    assert logging.getLogger().handlers == [], logging.getLogger().handlers
    configure()

logging.getLogger("app").info("still logging")
root = logging.getLogger()
assert root.level == logging.INFO, logging.getLevelName(root.level)
assert len(root.handlers) == 1, root.handlers
assert warnings.filters == filters_before, [f for f in warnings.filters if f not in filters_before]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("default")
    warnings.warn("old api", DeprecationWarning)
assert [str(w.message) for w in caught] == ["old api"]
for name in ("transformers", "optimum", "onnxruntime.quantization"):  # set to ERROR only while exporting
    assert logging.getLogger(name).level != logging.ERROR, name
print(log.getvalue())
"""


@pytest.mark.parametrize("logging_setup", ["before", "after"])
def test_export_leaves_the_apps_logging_and_warnings_alone(hf_folder, tmp_path, logging_setup):
    env = {"EDGELM_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", APP, str(hf_folder("gpt2")), logging_setup], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert "app:INFO:still logging" in result.stdout
    if logging_setup == "before":  # edgelm's own lines reached the app's handler through its named loggers
        assert "edgelm.export:INFO:[1/" in result.stdout
        assert "edgelm.text_pipeline:WARNING:edgelm: exporting" in result.stdout
    else:  # with no logging set up, only the one-time export notice shows (Python's last-resort handler)
        assert "edgelm: exporting" in result.stderr and "[1/" not in result.stderr


def test_quiet_libraries_restores_levels_and_filters():
    import logging
    import warnings

    from edgelm.export.progress import quiet_libraries

    optimum = logging.getLogger("optimum")
    optimum.setLevel(logging.DEBUG)
    before = list(warnings.filters)
    with quiet_libraries():
        assert optimum.level == logging.ERROR
        assert warnings.filters != before
    assert optimum.level == logging.DEBUG
    assert warnings.filters == before
    optimum.setLevel(logging.NOTSET)


def test_progress_bar_only_when_watched(monkeypatch):
    """A bar is drawn only for a terminal with edgelm.export at INFO; otherwise the items pass through untouched."""
    import io
    import logging
    import sys

    from edgelm.export.progress import progress_bar

    items = [1, 2, 3]
    assert progress_bar(items) is items  # pytest's stderr is no terminal
    fake = io.StringIO()
    fake.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", fake)
    logger = logging.getLogger("edgelm.export")
    original = logger.level
    try:  # setLevel, not the attribute: it also clears the loggers' level cache (an in-process `edgelm` command
        logger.setLevel(logging.WARNING)  # earlier in the session may have set "edgelm" to INFO)
        assert progress_bar(items) is items  # nobody asked for progress
        logger.setLevel(logging.INFO)
        assert list(progress_bar(items, description="x")) == items
        assert progress_bar(items, quiet=True) is items
    finally:
        logger.setLevel(original)


def test_transformers_progress_bars_restored():
    from transformers.utils import logging as hf_logging

    from edgelm.export.progress import quiet_libraries

    before = hf_logging.is_progress_bar_enabled()
    with quiet_libraries():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled() == before


def test_the_gguf_loaders_own_bar_is_hidden_then_restored(capfd):
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from edgelm.export.progress import gguf_bar_hidden

    original = gguf_utils.tqdm
    with gguf_bar_hidden():
        assert list(gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...")) == [0, 1, 2]
    assert "Converting" not in capfd.readouterr().err
    assert gguf_utils.tqdm is original
    list(gguf_utils.tqdm(range(3), desc="drawn again"))  # outside the block the library is as it was
    assert "drawn again" in capfd.readouterr().err


QUIET_APP = r"""
import sys
from edgelm.export import export_model

export_model(sys.argv[1], sys.argv[2], precision="int4", int4_method="rtn", check=False, quiet=True)
"""


def test_a_quiet_export_in_a_host_without_logging_prints_nothing(hf_folder, tmp_path):
    """onnxruntime's quantizer configures the root logger on import; edgelm's INFO lines then printed, quiet or not."""
    result = subprocess.run([sys.executable, "-c", QUIET_APP, str(hf_folder("llama")), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
