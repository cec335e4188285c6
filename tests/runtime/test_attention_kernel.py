"""An int8 cache's decode session takes onnxruntime's plain attention kernel; nothing else changes in the process."""

import os

import numpy as np
import pytest

import edgelm
import edgelm.session as session_module
from edgelm.attention_kernel import FLASH_SWITCH, _switching, flash_pays, plain_attention


@pytest.fixture
def no_switch(monkeypatch):
    monkeypatch.delenv(FLASH_SWITCH, raising=False)


@pytest.fixture(scope="module")
def int8_and_float(tmp_path_factory):
    from tests.export.fused_models import export_fp32, tiny_model

    torch_model = tiny_model("llama")
    return (export_fp32(torch_model, tmp_path_factory.mktemp("int8"), kv_dtype="int8"),
            export_fp32(torch_model, tmp_path_factory.mktemp("float32")))


def test_only_an_int8_cache_on_the_cpu_leaves_the_tiled_kernel():
    assert not flash_pays("int8", "cpu")
    assert flash_pays("float32", "cpu") and flash_pays("int8", "cuda")


def test_the_switch_is_set_while_a_session_is_made_and_removed_after(no_switch):
    with plain_attention():
        assert os.environ[FLASH_SWITCH] == "1"
    assert FLASH_SWITCH not in os.environ
    with pytest.raises(RuntimeError), plain_attention():
        raise RuntimeError("a session that fails to load")
    assert FLASH_SWITCH not in os.environ
    with plain_attention(enabled=False):
        assert FLASH_SWITCH not in os.environ


def test_a_session_keeping_the_tiled_kernel_is_made_under_the_same_lock(no_switch):
    """So it is never built while another thread's switch is set."""
    with plain_attention(enabled=False):
        assert _switching.locked() and FLASH_SWITCH not in os.environ
    assert not _switching.locked()


def test_a_value_the_user_set_is_left_alone(monkeypatch):
    monkeypatch.setenv(FLASH_SWITCH, "0")
    with plain_attention():
        assert os.environ[FLASH_SWITCH] == "0"
    assert os.environ[FLASH_SWITCH] == "0"


def _switch_at_construction(monkeypatch, folder, **load_args) -> list:
    """The switch's value each time onnxruntime built a session while `folder` loaded (prefill graph opened too)."""
    seen, real = [], session_module.ort.InferenceSession

    def spy(*args, **kwargs):
        seen.append(os.environ.get(FLASH_SWITCH))
        return real(*args, **kwargs)

    monkeypatch.setattr(session_module.ort, "InferenceSession", spy)
    model = edgelm.load(folder, **load_args)
    if model.runner.has_prefill_graph:
        model.runner.open_prefill_graph()
    return seen


def test_the_int8_decode_graph_is_built_with_the_plain_kernel_and_its_float_prefill_graph_is_not(
        int8_and_float, monkeypatch, no_switch):
    int8, float32 = int8_and_float
    assert int8.runner.has_prefill_graph  # the float32-cache twin runs the prompts
    assert _switch_at_construction(monkeypatch, int8.folder) == ["1", None]
    assert _switch_at_construction(monkeypatch, float32.folder) == [None]
    assert FLASH_SWITCH not in os.environ


def test_both_kernels_give_the_same_steps_on_an_int8_cache(int8_and_float, monkeypatch, no_switch):
    int8, _ = int8_and_float
    plain = int8.runner
    monkeypatch.setattr(session_module, "flash_pays", lambda *args: True)
    tiled = edgelm.load(int8.folder).runner
    ids = np.array([int8.encode("Machine learning is a field of study in artificial intelligence")])
    caches = [runner.new_cache() for runner in (plain, tiled)]
    for runner, cache in zip((plain, tiled), caches):
        runner.prefill(ids, cache)
    token = 3
    for _ in range(8):
        steps = [runner.forward(np.array([[token]]), cache)[0] for runner, cache in zip((plain, tiled), caches)]
        np.testing.assert_allclose(steps[0], steps[1], rtol=1e-4, atol=1e-4)
        token = int(steps[0].argmax())


def test_an_int8_cache_on_an_onnxruntime_too_old_for_it_is_refused_at_load(int8_and_float, monkeypatch):
    """1.25 and 1.26 load such a graph, then fail at its first run with a bare RuntimeError (measured)."""
    int8, float32 = (result.folder for result in int8_and_float)
    monkeypatch.setattr(session_module.ort, "__version__", "1.26.0")
    with pytest.raises(edgelm.EdgelmError, match=r"KV cache in int8, which onnxruntime runs from 1\.27 on, and this "
                                                 r"process has onnxruntime 1\.26\.0: pip install -U 'onnxruntime>=1\.27'"):
        edgelm.load(int8)
    assert isinstance(edgelm.load(float32).generate("Hello", max_new_tokens=2), str)  # a float cache is not refused
