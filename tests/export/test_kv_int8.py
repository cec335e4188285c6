"""An int8 key/value cache (export/kv_int8.py, runtime/kv_quant.py) on tiny random models, sliding windows included.

Prompts attend in float32 on the prefill graph, so a prompt's int8 cache is exactly the float32
cache quantized; steps attend on the int8 cache, so their logits are close to, not equal to, float32's.
"""

from dataclasses import replace

import numpy as np
import pytest

import edgelm
from edgelm.errors import EdgelmError
from edgelm.kv_quant import float_copy, load_scales, quantize
from edgelm.model_info import describe
from edgelm.quality import kl_divergence
from edgelm.session import GraphRunner, float_cache_view

from .fused_models import LONG_PROMPT, export_fp32, save, tiny_model

FAMILIES = ["llama", "gemma3_text"]  # gemma3: windowed layers (window 4) beside a global one


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tmp_path_factory):
    """(int8-cache model, float32-cache model) exported from one tiny model."""
    torch_model = tiny_model(request.param)
    int8 = export_fp32(torch_model, tmp_path_factory.mktemp("int8"), kv_dtype="int8")
    return int8, export_fp32(torch_model, tmp_path_factory.mktemp("float32"))


def _prompted(pair, ids, chunk=None):
    """(int8 cache, float32 cache) after `ids` (1, seq) ran on each model of the pair."""
    caches = []
    for model in pair:
        caches.append(model.runner.new_cache())
        model.runner.prefill(ids, caches[-1], chunk=chunk)
    return caches


def _assert_quantized(model, cache, float_cache, tensors=None):
    """The int8 cache's codes are the float cache's values quantized (in every tensor, or those given)."""
    scales = load_scales(model.folder / "kv_scales.npy", model.manifest.kv)
    for i in tensors or range(len(cache.values)):
        rows = cache.resident_rows(cache.windows[i])
        assert cache.values[i].numpy().dtype == np.int8
        np.testing.assert_array_equal(cache.values[i].numpy()[:, :, :rows],
                                      quantize(float_cache.values[i].numpy()[:, :, :rows], scales[i]))


def test_the_manifest_names_the_int8_cache_its_scales_and_a_float_prefill_graph(pair):
    model, _ = pair
    kv = model.manifest.kv
    assert (kv.dtype, kv.prefill_dtype, kv.scales_file) == ("int8", "float32", "kv_scales.npy")
    # an fp32 folder has no prefill graph: the float32-cache twin of the decode graph is written and serves as one
    assert model.manifest.prefill_graph_file == kv.float_graph_file == "model-float-kv.onnx"
    assert model.manifest.prefill_logits
    assert model.manifest.quantization["kv_cache"]["calibration_tokens"] > 0
    assert "choice" not in model.manifest.quantization["kv_cache"]  # asked for: kept without the long-context check
    assert (model.folder / kv.float_graph_file).is_file() and kv.float_graph_file in model.manifest.files


def test_the_float_twin_runs_as_the_float32_cache_folder(pair):
    """float_cache=True (the default off the CPU) runs kv.float_graph_file on a float32 cache: the float folder's
    logits exactly, prompt and steps."""
    model, reference = pair
    runner = GraphRunner(model.folder, model.manifest, float_cache=True)
    assert runner.kv_dtype == np.float32 and runner.manifest.graph_file == "model-float-kv.onnx"
    ids = np.array([model.encode(LONG_PROMPT)])
    cache, float_cache = runner.new_cache(), reference.runner.new_cache()
    np.testing.assert_array_equal(runner.prefill(ids, cache), reference.runner.prefill(ids, float_cache))
    for token in (5, 9, 2):
        np.testing.assert_array_equal(runner.forward(np.array([[token]]), cache),
                                      reference.runner.forward(np.array([[token]]), float_cache))


def test_a_device_without_int8_attention_runs_the_twin_or_is_told_to_re_export(pair):
    model, _ = pair
    view = float_cache_view(model.manifest, "cuda")
    assert (view.graph_file, view.kv.dtype, view.kv.scales_file) == ("model-float-kv.onnx", "float32", None)
    assert model.manifest.kv.dtype == "int8"  # the folder's own manifest is left as it is
    older = replace(model.manifest, kv=replace(model.manifest.kv, float_graph_file=None))  # a folder without a twin
    with pytest.raises(EdgelmError, match="int8.*CPU only.*'cuda'.*--kv-dtype float32"):
        float_cache_view(older, "cuda")


def test_a_prompt_fills_the_int8_cache_with_the_float_caches_values_quantized(pair):
    model, reference = pair
    ids = np.array([model.encode(LONG_PROMPT)])
    assert ids.shape[1] >= model.runner.prefill_min_tokens  # the prompt takes the prefill graph
    cache, float_cache = model.runner.new_cache(), reference.runner.new_cache()
    np.testing.assert_array_equal(model.runner.forward(ids, cache), reference.runner.forward(ids, float_cache))
    _assert_quantized(model, cache, float_cache)


def test_a_prompt_in_chunks_attends_on_float_values_throughout(pair):
    """Each chunk after the first reads the float copy the one before left, not dequantized codes: the
    cache ends as the float32 cache of the same chunks, quantized."""
    model, _ = pair
    ids = np.array([model.encode(LONG_PROMPT + " " + LONG_PROMPT[::-1])])
    chunk = model.runner.prefill_min_tokens
    assert ids.shape[1] > chunk  # two chunks, both on the prefill graph
    _assert_quantized(model, *_prompted(pair, ids, chunk))


def test_a_step_quantizes_its_position_as_the_runtime_does(pair):
    """Layer 0's new key and value do not depend on attention: the op's codes equal kv_quant.quantize's."""
    model, reference = pair
    cache, float_cache = _prompted(pair, np.array([model.encode(LONG_PROMPT)]))
    model.runner.forward(np.array([[5]]), cache)
    reference.runner.forward(np.array([[5]]), float_cache)
    _assert_quantized(model, cache, float_cache, tensors=(0, 1))  # layer 0's key and value


def test_steps_on_the_int8_cache_stay_close_to_the_float_caches(pair):
    model, reference = pair
    cache, float_cache = _prompted(pair, np.array([model.encode(LONG_PROMPT)]))
    got, expected = [], []
    for token in model.encode("Deep networks learn features")[:16]:  # teacher-forced: both read the same tokens
        got.append(model.runner.forward(np.array([[token]]), cache))
        expected.append(reference.runner.forward(np.array([[token]]), float_cache))
    got, expected = np.stack(got, axis=1), np.stack(expected, axis=1)
    assert kl_divergence(expected, got) < 1e-3
    assert np.abs(got - expected).max() < 0.5 * expected.std()


def test_a_long_continuation_runs_on_a_float_copy_of_the_int8_cache(pair):
    """A second long prompt after the first: every buffer, windowed ones too (whose rows the op moves), ends
    as the float copy's run quantized, and the first prompt's rows of a full-length buffer stay as they were."""
    model, _ = pair
    runner = model.runner
    first, second = (np.array([model.encode(text)]) for text in (LONG_PROMPT, LONG_PROMPT.upper()))
    cache = runner.new_cache()
    runner.forward(first, cache)
    runner.forward(np.array([[5]]), cache)  # a step, as after a chat turn: the prompt's float copy is gone
    assert cache.float_twin is None
    kept = [value.numpy()[:, :, : first.shape[1]].copy() for value in cache.values]
    scales = load_scales(model.folder / "kv_scales.npy", model.manifest.kv)
    staged = float_copy(cache, scales)  # what the runtime does, by hand: the prefill graph on a float copy
    cache.float_twin = None
    runner._run(runner.prefill_session, second, staged, logits=model.manifest.prefill_logits)
    runner.forward(second, cache)
    assert cache.length == first.shape[1] + 1 + second.shape[1]
    assert cache.tokens == first[0].tolist() + [5] + second[0].tolist()
    for old, value, expected, window, scale in zip(kept, cache.values, staged.values, cache.windows, scales):
        rows = cache.resident_rows(window)
        np.testing.assert_array_equal(value.numpy()[:, :, :rows], quantize(expected.numpy()[:, :, :rows], scale))
        if not window:
            np.testing.assert_array_equal(value.numpy()[:, :, : first.shape[1]], old)


def test_generation_on_the_int8_cache_runs_through_the_pipeline(pair):
    model, _ = pair
    text = model.generate(LONG_PROMPT, max_new_tokens=12)
    assert isinstance(text, str) and len(model.encode(text)) > 0


def test_an_int8_cache_needs_the_fused_graph(tmp_path):
    from edgelm.export import export_model

    folder = save(tiny_model("llama"), tmp_path / "hf")
    with pytest.raises(EdgelmError, match="kv_dtype='int8' needs edgelm's fused graph"):
        export_model(str(folder), tmp_path / "out", precision="fp32", graph="optimum", kv_dtype="int8", check=False,
                     quiet=True)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def int4_source(tmp_path_factory):
    return save(tiny_model("llama"), tmp_path_factory.mktemp("hf"))


def _export_int4(source, out, **settings):
    from edgelm.export import export_model

    export_model(str(source), out, precision="int4", check=False, quiet=True, **settings)
    return edgelm.load(out)


def test_int4_gets_the_int8_cache_where_it_keeps_the_model(int4_source, tmp_path):
    """kv_dtype None (the default): the long-context check runs and, on this model, keeps the int8 cache."""
    model = _export_int4(int4_source, tmp_path / "int4")
    record = model.manifest.quantization["kv_cache"]
    choice = record["choice"]
    assert choice["kept"] == "int8" and model.manifest.kv.dtype == "int8"
    assert choice["kld"]["int8"] <= choice["kld"]["float32"] + choice["tolerance"]
    assert choice["positions"] > 0 and 0 < choice["top1_int8_vs_float32"] <= 1
    assert "KV cache at long context: mean KLD against fp32" in describe(model.folder)
    assert len(model.encode(model.generate(LONG_PROMPT, max_new_tokens=8))) > 0


def test_an_int8_cache_that_moves_the_model_too_far_is_not_kept(int4_source, tmp_path, monkeypatch):
    """A tolerance nothing meets: the folder keeps its float32 cache, with no scales or twin left behind, and
    says what was measured."""
    from edgelm.export import kv_int8

    monkeypatch.setattr(kv_int8, "KV_INT8_TOLERANCE", -1.0)
    model = _export_int4(int4_source, tmp_path / "int4")
    kv = model.manifest.kv
    assert (kv.dtype, kv.scales_file, kv.prefill_dtype, kv.float_graph_file) == ("float32", None, None, None)
    assert model.manifest.quantization["kv_cache"]["choice"]["kept"] == "float32"
    assert not (model.folder / "kv_scales.npy").exists() and not (model.folder / "model-float-kv.onnx").exists()
    assert sorted(model.manifest.files) == sorted(p.name for p in model.folder.iterdir() if p.name != "edgelm.json")
    assert model.manifest.prefill_graph_file != "model-float-kv.onnx"
    assert len(model.encode(model.generate(LONG_PROMPT, max_new_tokens=8))) > 0


def test_float32_asked_for_gets_no_int8_cache(int4_source, tmp_path):
    model = _export_int4(int4_source, tmp_path / "int4", kv_dtype="float32")
    assert model.manifest.kv.dtype == "float32" and "kv_cache" not in model.manifest.quantization


def test_the_float_caches_share_counts_windowed_layers_at_their_window():
    """gguf folders take the int8 cache only where the float32 one is a large share of a step's bytes at depth."""
    from types import SimpleNamespace

    from edgelm.export.kv_int8 import MIN_CACHE_SHARE, float_cache_share
    from edgelm.manifest import KVCacheSpec

    def manifest(layers, heads, dim, windows=None):  # the share reads only the cache's shape
        return SimpleNamespace(kv=KVCacheSpec(num_layers=layers, num_kv_heads=heads, head_dim=dim, windows=windows))

    smollm2 = float_cache_share(manifest(30, 3, 64), 118_829_844)
    assert round(smollm2, 2) == 0.79 and smollm2 >= MIN_CACHE_SHARE  # 94 MB of cache at 2,048 positions
    gemma = float_cache_share(manifest(18, 1, 256, ([512] * 5 + [0]) * 3), 330_000_000)
    assert gemma == (3 * 2048 + 15 * 512) * 2 * 256 * 4 / 330_000_000 < MIN_CACHE_SHARE
