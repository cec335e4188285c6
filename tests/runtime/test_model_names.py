"""A model name that is no folder, file, alias or hub id fails at once, naming what is accepted."""

import subprocess
import sys

import pytest

import edgelm
from edgelm.aliases import ALIASES
from edgelm.errors import EdgelmError
from edgelm.model_names import check_model_name, looks_like_hub_id


def test_a_typo_of_an_alias_names_the_known_aliases():
    with pytest.raises(EdgelmError) as caught:
        edgelm.load("smollm2")
    message = str(caught.value)
    assert "unknown alias or folder 'smollm2'" in message and "did you mean smollm2-135m?" in message
    assert "needs the exporter" not in message
    assert all(alias in message for alias in ALIASES)


def test_a_missing_local_path_is_named_before_any_hub_lookup(tmp_path, monkeypatch):
    from edgelm.export import sources

    def no_hub(repo_id):
        raise AssertionError(f"looked {repo_id} up on the hub")

    monkeypatch.setattr(sources, "download_from_hub", no_hub)
    missing = tmp_path / "models" / "my-model"
    for name in (str(missing), "./my-model-int4", "~/nowhere/model", "x.gguf"):
        with pytest.raises(EdgelmError, match="does not exist"):
            edgelm.load(name)
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgelmError, match="models/my-model does not exist"):  # its first part is a local folder
        edgelm.load("models/my-model")


def test_hub_ids_are_recognised():
    assert looks_like_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not looks_like_hub_id("gpt2")  # a bare name is taken for a mistyped alias or folder
    assert not looks_like_hub_id("a/b/c") and not looks_like_hub_id("owner/na me") and not looks_like_hub_id("o/..x")
    for name in ALIASES:
        check_model_name(name)  # no error


# Without the exporter (torch, transformers and optimum blocked), a hub id needs an install hint that
# works outside a checkout of edgelm's own repository too.
BLOCKED = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'optimum', 'onnx'):
            raise ImportError('blocked for this test: ' + name, name=name)
sys.meta_path.insert(0, Block())
import edgelm
try:
    edgelm.load("SomeOwner/some-model")
except edgelm.EdgelmError as exc:
    print(exc)
"""


def test_runtime_only_install_says_how_to_get_the_exporter(tmp_path):
    result = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=120,
                            env={"EDGELM_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "needs the exporter" in result.stdout and "export extra" in result.stdout
    assert "pip install torch==2.13.0" in result.stdout and "pip install '.[export]'" in result.stdout
