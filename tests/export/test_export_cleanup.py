"""An export stopped by SIGTERM or SIGKILL leaves nothing behind (the next export removes a killed one's folders)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from edgelm.errors import EdgelmError
from edgelm.export import export_model

# Runs an export whose quantize step announces itself and then waits to be stopped.
CHILD = """
import sys, time
from pathlib import Path
from edgelm.export import export_model
from edgelm.export import quantize

def waiting(src, dst, **kwargs):
    Path(sys.argv[3]).write_text("started")
    time.sleep(600)

quantize.QUANTIZERS["fp32"] = waiting
export_model(sys.argv[1], sys.argv[2], precision="fp32", check=False, quiet=True)
"""


def _start_and_wait(hf_folder, tmp_path):
    out, flag = tmp_path / "out" / "model", tmp_path / "started"
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(hf_folder("gpt2")), str(out), str(flag)], env=env,
                             stderr=subprocess.PIPE)
    for _ in range(1200):  # wait for the export to reach the quantize step (at most 10 minutes)
        if flag.exists() or child.poll() is not None:
            break
        time.sleep(0.5)
    assert flag.exists(), child.stderr.read().decode()[-2000:]
    return child, out


def _leftovers(tmp_path):
    """edgelm's staging and work folders still there (other libraries' temp files are not counted)."""
    names = [p.name for folder in (tmp_path / "out", tmp_path / "tmp") if folder.exists() for p in folder.iterdir()]
    return [n for n in names if n.startswith((".model.partial-", "edgelm-export-", "model"))]


def test_sigterm_cleans_up_like_ctrl_c(hf_folder, tmp_path):
    child, _ = _start_and_wait(hf_folder, tmp_path)
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=120)
    assert child.returncode != 0
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "out").exists()  # the parent folder the export made is gone too


def test_the_next_export_removes_what_a_killed_one_left(hf_folder, tmp_path, monkeypatch):
    child, out = _start_and_wait(hf_folder, tmp_path)
    child.kill()
    child.wait(timeout=60)
    assert any(name.startswith(".model.partial-") for name in _leftovers(tmp_path))
    assert any(name.startswith("edgelm-export-") for name in _leftovers(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    with pytest.raises(EdgelmError, match="does not exist"):
        export_model(str(tmp_path / "missing.gguf"), out, quiet=True)
    assert _leftovers(tmp_path) == []


def test_force_replaces_an_edgelm_folder(hf_folder, tmp_path):
    out = tmp_path / "model"
    export_model(str(hf_folder("gpt2")), out, precision="fp32", check=False, quiet=True)
    first = (out / "edgelm.json").stat().st_mtime_ns
    export_model(str(hf_folder("gpt2")), out, precision="fp32", check=False, quiet=True, force=True)
    assert (out / "edgelm.json").stat().st_mtime_ns != first
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
