"""The runtime's bad-input catalogue: every case ends in a clear EdgelmError (or its documented outcome).

The cases are in bad_input_cases.py; tests/BAD_INPUTS.md lists what each did before the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys

import pytest

import edgelm
from tests.catalogue import classify, record
from tests.runtime.bad_input_cases import CASES, EXPECTED


class Ctx:
    """What a case may use: the tiny llama model, its folder, copies of it, the pipeline and the CLI."""

    def __init__(self, folder, model, tmp_path, monkeypatch):
        self.folder, self.model, self.tmp_path, self.monkeypatch = folder, model, tmp_path, monkeypatch
        self._copies = 0
        self._pipeline = None

    def copy(self, edit=None, template=None):
        """A copy of the model folder; `edit(manifest dict) -> new manifest` rewrites its edgelm.json."""
        self._copies += 1
        folder = self.tmp_path / f"copy{self._copies}" / "model"
        shutil.copytree(self.folder, folder)
        if edit is not None:
            data = edit(json.loads((folder / "edgelm.json").read_text()))
            (folder / "edgelm.json").write_text(json.dumps(data))
        if template is not None:
            (folder / "chat_template.jinja").write_text(template)
        return folder

    def pipeline(self, *args, **kwargs):
        if self._pipeline is None:
            self._pipeline = edgelm.pipeline("text-generation", model=str(self.folder))
        return self._pipeline(*args, **kwargs)

    def regular_file(self):
        path = self.tmp_path / "notes.txt"
        path.write_text("not a model")
        return path

    def resolve_file(self):
        self._forbid_export()
        return edgelm.resolve_model(str(self.regular_file()))

    def _forbid_export(self):
        from tests.catalogue import SlowWorkStarted

        def slow(*args, **kwargs):
            raise SlowWorkStarted()

        try:
            import edgelm.export as export

            self.monkeypatch.setattr(export, "export_model", slow)
        except ImportError:
            pass

    def cli(self, *argv) -> str:
        """Runs `edgelm ARGV` in this process; names the outcome like classify() does."""
        from edgelm.cli import main

        self._forbid_export()
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(argv))
        except SystemExit as exc:  # argparse's own usage error: one line and exit 2
            code = exc.code
        return _cli_outcome(code, out.getvalue(), err.getvalue())

    def cli_pipe_closed(self, *argv) -> str:
        """`edgelm ARGV | head -c 1`: the reader goes away after one byte."""
        command = [sys.executable, "-m", "edgelm.cli", *argv]
        writer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        writer.stdout.read(1)
        writer.stdout.close()
        err = writer.stderr.read().decode()
        code = writer.wait(timeout=120)
        if "Traceback" in err or "Exception ignored" in err:
            return "traceback"
        return "ok" if err.strip() == "" or code in (0, 141) else "silent"


def _cli_outcome(code, out: str, err: str) -> str:
    if "Traceback" in err:
        return "traceback"
    if code == 0:
        return "silent"
    lines = [line for line in err.splitlines() if line.strip()]
    if out:
        return "late"  # the prompt was echoed before the error
    return "error" if len(lines) <= 2 and lines and ("error" in lines[-1]) else "traceback"


@pytest.fixture(scope="module")
def folder(exported):
    return exported("llama", "fp32")


@pytest.fixture(scope="module")
def model(folder):
    return edgelm.load(folder)


@pytest.mark.parametrize("case_id,case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_id, case, folder, model, tmp_path, monkeypatch):
    ctx = Ctx(folder, model, tmp_path, monkeypatch)
    outcome = classify(lambda: case(ctx))
    record(f"runtime::{case_id}", outcome)
    assert outcome == EXPECTED[case_id]
