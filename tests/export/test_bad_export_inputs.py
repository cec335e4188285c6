"""The exporter's bad-input catalogue: no lost file, no leftover, refusals before the slow work.

tests/BAD_INPUTS.md lists what each case did before the fix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import edgelm.export as export
from edgelm.export import export_model
from tests.catalogue import SlowWorkStarted, classify, record


SRC = object()  # stands for the tiny model's folder


def _slow(*args, **kwargs):
    raise SlowWorkStarted()


class Ctx:
    def __init__(self, tmp_path, hf_folder, monkeypatch):
        self.tmp, self.monkeypatch = tmp_path, monkeypatch
        self.src = tmp_path / "models" / "tiny"
        shutil.copytree(hf_folder("gpt2"), self.src)
        self.keep = [self.src / "config.json"]

    def forbid_slow_work(self):
        """Refusals must come before the source is loaded: loading it stands for all slow work."""
        self.monkeypatch.setattr(export, "resolve_source", _slow)

    def export(self, source=SRC, output=None, **kwargs):
        kwargs.setdefault("precision", "fp32")
        kwargs.setdefault("check", False)
        export_model(str(self.src) if source is SRC else source, output, quiet=True, **kwargs)

    def lost(self) -> bool:
        return not all(p.is_file() for p in self.keep)


def _force_onto(where):
    def case(ctx):
        target = where(ctx)
        ctx.export(output=target, force=True)
    return case


def _force_cwd(ctx):
    work = ctx.tmp / "work"
    (work / "tiny").mkdir(parents=True)
    shutil.copytree(ctx.src, work / "tiny", dirs_exist_ok=True)
    ctx.keep.append(work / "tiny" / "config.json")
    ctx.monkeypatch.chdir(work)
    ctx.export(source="tiny", output=".", force=True)


def _force_user_folder(ctx):
    mine = ctx.tmp / "documents"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    ctx.keep.append(mine / "thesis.txt")
    ctx.export(output=mine, force=True)


def _force_home(ctx):
    home = ctx.tmp / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# mine")
    ctx.keep.append(home / ".bashrc")
    ctx.monkeypatch.setenv("HOME", str(home))
    ctx.export(output=home, force=True)


def _force_regular_file(ctx):
    path = ctx.tmp / "notes.txt"
    path.write_text("mine")
    ctx.keep.append(path)
    ctx.export(output=path, force=True)


def _refused_early(**kwargs):
    def case(ctx):
        ctx.forbid_slow_work()
        ctx.export(**{"output": ctx.tmp / "out", **kwargs})
    return case


def _source_regular_file(ctx):
    ctx.forbid_slow_work()
    path = ctx.tmp / "weights.bin"
    path.write_bytes(b"\0" * 16)
    ctx.export(source=str(path), output=ctx.tmp / "out")


def _read_only_place(ctx):
    ctx.forbid_slow_work()
    ctx.export(output=Path("/proc/edgelm-test-out/model"))


def _parents_left_behind(ctx):
    output = ctx.tmp / "a" / "b" / "c" / "out"
    try:
        ctx.export(source=str(ctx.tmp / "missing.gguf"), output=output)
    except Exception:
        pass
    return "leftover" if (ctx.tmp / "a").exists() else "error"


def _stale_staging_left(ctx):
    """A killed export left `.out.partial-*` (its process gone); the next export must remove it."""
    dead = _dead_pid()
    stale = ctx.tmp / f".out.partial-{dead}-x1y2"
    (stale / "junk").mkdir(parents=True)
    old_style = ctx.tmp / ".out.partial-abc123"  # the name before process ids were recorded
    old_style.mkdir()
    (old_style / "edgelm-staging.pid").write_text(str(dead))
    ctx.export(output=ctx.tmp / "out")
    return "leftover" if stale.exists() or old_style.exists() else "ok"


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


CASES = [
    ("force-onto-source", _force_onto(lambda ctx: ctx.src)),
    ("force-onto-parent-of-source", _force_onto(lambda ctx: ctx.src.parent)),
    ("force-onto-cwd", _force_cwd),
    ("force-onto-user-folder", _force_user_folder),
    ("force-onto-home", _force_home),
    ("force-onto-regular-file", _force_regular_file),
    ("output-read-only-place", _read_only_place),
    ("block-size-7", _refused_early(precision="int4", block_size=7)),
    ("block-size-0", _refused_early(precision="int4", block_size=0)),
    ("block-size-string", _refused_early(precision="int4", block_size="32")),
    ("block-size-bool", _refused_early(precision="int4", block_size=True)),
    ("accuracy-level-9", _refused_early(precision="int4", accuracy_level=9)),
    ("lm-head-bits-5", _refused_early(precision="int4", lm_head_bits=5)),
    ("graph-unknown", _refused_early(graph="bogus")),
    ("int8-method-unknown", _refused_early(precision="int8", int8_method="bogus")),
    ("symmetric-string", _refused_early(precision="int4", symmetric="yes")),
    ("check-string", _refused_early(check="no")),
    ("precision-none", _refused_early(precision=None)),
    ("source-none", _refused_early(source=None)),
    ("source-empty-string", _refused_early(source="")),
    ("source-regular-file-not-gguf", _source_regular_file),
    ("output-none", _refused_early(output=None)),
    ("failed-export-leaves-parents", _parents_left_behind),
    ("stale-staging-of-killed-export", _stale_staging_left),
]
EXPECTED = {case_id: "error" for case_id, _ in CASES}
EXPECTED["stale-staging-of-killed-export"] = "ok"


@pytest.mark.parametrize("case_id,case", CASES, ids=[c[0] for c in CASES])
def test_bad_export_input(case_id, case, tmp_path, hf_folder, monkeypatch):
    ctx = Ctx(tmp_path, hf_folder, monkeypatch)
    outcome = classify(lambda: case(ctx))
    if ctx.lost():
        outcome = "lost"
    record(f"export::{case_id}", outcome)
    assert outcome == EXPECTED[case_id]
