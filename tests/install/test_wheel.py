"""The built wheel, installed into a fresh venv with that Python's own pip, runs the runtime (check_wheel.sh)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("check_wheel.sh")


@pytest.mark.install
def test_wheel_installs_and_runs_in_a_fresh_venv():
    result = subprocess.run(["bash", str(SCRIPT), sys.executable], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    lines = result.stdout.splitlines()
    assert lines[-1] == "install check: ok"
    assert any(line.startswith("pip ") and "edgelm-install-check" in line for line in lines)  # the fresh venv's own pip
    assert "load, generate, stream, chat: ok" in lines
