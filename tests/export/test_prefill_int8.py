"""The int8 prefill graph: MatMulNBits weights read back exactly, re-rounded per column, int8 rows through MatMulInteger."""

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgelm
from edgelm.export.int4_blocks import Int4Matrix
from edgelm.export.prefill_int8 import (
    ActivationStats,
    choose_alpha,
    dequantize_nbits,
    quantize_columns,
    rewrite_as_int8,
    smoothing_scales,
    write_int8_prefill_graph,
)
from edgelm.export.prefill_graph import MIN_TOKENS
from edgelm.manifest import Manifest

MS = "com.microsoft"


def _node(name, k, n, bits, zero_points=True):
    inputs = ["x", name + ".B", name + ".S"] + ([name + ".Z"] if zero_points else [])
    return helper.make_node("MatMulNBits", inputs, [name], name=name, domain=MS, K=k, N=n, bits=bits, block_size=32,
                            accuracy_level=4)


@pytest.mark.parametrize("zeros", [True, False])
def test_4_bit_weights_read_back_as_the_blocks_define_them(zeros):
    rng = np.random.default_rng(0)
    n, k = 5, 96  # three blocks a row: the packed zero points are padded to whole bytes per row
    matrix = Int4Matrix(rng.integers(0, 16, (n, k), dtype=np.uint8), rng.random((n, 3), dtype=np.float32) - 0.5,
                        rng.integers(0, 16, (n, 3), dtype=np.uint8) if zeros else None)
    tensors = {"q.B": matrix.packed_levels(), "q.S": matrix.scales.reshape(-1)}
    if zeros:
        tensors["q.Z"] = matrix.packed_zeros()
    np.testing.assert_array_equal(dequantize_nbits(_node("q", k, n, 4, zeros), tensors), matrix.dequantize().T)


def test_8_bit_weights_read_back_with_the_implicit_zero_128():
    rng = np.random.default_rng(1)
    levels, scales = rng.integers(0, 256, (3, 2, 32), dtype=np.uint8), rng.random(6, dtype=np.float32)
    expected = (levels.astype(np.float32) - 128) * scales.reshape(3, 2, 1)
    weights = dequantize_nbits(_node("q", 64, 3, 8, zero_points=False), {"q.B": levels, "q.S": scales})
    np.testing.assert_array_equal(weights, expected.reshape(3, 64).T)


def test_columns_round_to_127_levels_and_smoothing_is_balanced():
    w = np.array([[1.0, -0.5], [0.25, 0.0], [-2.0, 0.0]], np.float32)  # (K=3, N=2)
    levels, scale = quantize_columns(w)
    np.testing.assert_allclose(scale, [2 / 127, 0.5 / 127], rtol=1e-6)
    assert levels[2, 0] == -127 and levels[0, 1] == -127 and np.abs(levels).max() == 127
    s = smoothing_scales(np.array([4.0, 0.0, 9.0]), np.array([1.0, 3.0, 0.0]))
    np.testing.assert_allclose(s, [2.0, 1.0, 1.0])  # sqrt(4 / 1); a channel never seen or without weight stays


def _three_linears(tmp_path, rng):
    """x (1, seq, k) -> (a, b) both reading x, c reading a, and an LM head of N=vocab reading c; 4-bit blocks with zeros."""
    k, vocab, nodes, inits = 64, 96, [], []
    for name, source, n in (("a", "x", 64), ("b", "x", 32), ("c", "a", 64), ("head", "c", vocab)):
        matrix = Int4Matrix(rng.integers(0, 16, (n, k), dtype=np.uint8), rng.random((n, 2), dtype=np.float32) / 50,
                            rng.integers(4, 12, (n, 2), dtype=np.uint8))
        inits += [numpy_helper.from_array(matrix.packed_levels(), name + ".B"),
                  numpy_helper.from_array(matrix.scales.reshape(-1), name + ".S"),
                  numpy_helper.from_array(matrix.packed_zeros(), name + ".Z")]
        nodes.append(helper.make_node("MatMulNBits", [source, name + ".B", name + ".S", name + ".Z"], [name], name=name,
                                      domain=MS, K=k, N=n, bits=4, block_size=32, accuracy_level=4))
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("b", "head")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, k])], outputs,
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    return model, k, vocab


@pytest.mark.parametrize("group_channels", [1024, 32])
def test_the_int8_chain_computes_what_the_blocks_do(tmp_path, monkeypatch, group_channels):
    from edgelm.export import prefill_int8

    monkeypatch.setattr(prefill_int8, "GROUP_CHANNELS", group_channels)  # K = 64: one run of 64, or two of 32
    rng = np.random.default_rng(2)
    model, k, vocab = _three_linears(tmp_path, rng)
    x = rng.standard_normal((1, 40, k)).astype(np.float32)
    x[..., 5] *= 30  # an outlier channel, as real activations have: smoothing moves it into the weights
    reference = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    targets = [n for n in model.graph.node if n.name != "head"]
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    stats = ActivationStats(np.abs(x).reshape(-1, k).max(0), x.reshape(-1, k)[::2])
    alpha, s, error = choose_alpha(stats, [dequantize_nbits(n, tensors) for n in targets if n.input[0] == "x"])
    assert alpha in prefill_int8.ALPHAS and 0 < error < 1e-3
    rewrite_as_int8(model, tmp_path, targets, {"x": s})  # "a" has no scales: its channels stay unscaled
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulNBits") == 1 and ops.count("MatMulIntegerToFloat") == 3
    assert ops.count("ReduceMax") == 2  # one quantizer per activation: a and b share x's
    assert ops.count("Sum") == (3 if group_channels == 32 else 0)  # the groups' products summed
    names = {t.name for t in model.graph.initializer}
    assert "head.B" in names and not {"a.B", "b.B", "c.B", "a.Z"} & names  # the replaced blocks are gone
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    for want, have in zip(reference, got):
        assert np.abs(have - want).max() < 0.03 * np.abs(want).max()


@pytest.fixture(scope="module")
def int8_folder(exported, tmp_path_factory):
    """A copy of the tiny llama int4 export (float32 cache) whose prefill graph is the int8 one, whatever the timing
    said."""
    folder = tmp_path_factory.mktemp("int8-prefill") / "model"
    shutil.copytree(exported("llama", "int4", kv_dtype="float32"), folder)
    manifest = Manifest.load(folder)
    for name in ("prefill.onnx", "prefill.onnx.data"):
        (folder / name).unlink(missing_ok=True)
    manifest.prefill_graph_file = write_int8_prefill_graph(folder, manifest, "prefill.onnx")
    manifest.prefill_min_tokens = MIN_TOKENS["int8"]
    manifest.prefill_logits = True  # as written here, before the export drops its logits: the tests read them
    manifest.files = {}  # the digests no longer fit the copy
    manifest.save(folder)
    return folder


def test_a_folder_with_the_int8_graph_generates_close_to_the_decode_graph(int8_folder):
    from edgelm.session import PREFILL_GRAPH_MIN_TOKENS

    graph = onnx.load(str(int8_folder / "prefill.onnx"), load_external_data=False).graph
    assert {n.op_type for n in graph.node} >= {"MatMulIntegerToFloat", "MatMulNBits"}  # the LM head stays 4-bit
    with_graph, without = edgelm.load(int8_folder), edgelm.load(int8_folder, prefill_graph=False)
    assert with_graph.runner.prefill_session is not None and without.runner.prefill_session is None
    text = "A prompt long enough to take the prefill graph, then steps on the decode graph. " * 4
    ids = np.array([with_graph.encode(text)], dtype=np.int64)
    assert ids.shape[1] >= PREFILL_GRAPH_MIN_TOKENS
    a = with_graph.runner.forward(ids, with_graph.runner.new_cache(), all_logits=True)[0]
    b = without.runner.forward(ids, without.runner.new_cache(), all_logits=True)[0]
    assert np.abs(a - b).max() < 0.1 * np.abs(b).max()
    assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.9
    assert len(with_graph.generate(text, max_new_tokens=8, temperature=0.0)) > 0


def test_runs_from_the_folders_own_length_take_the_prefill_graph(int8_folder):
    """The int8 graph beats the decode graph from fewer rows up: its folder names 32 tokens, not the default 64."""
    from dataclasses import replace

    from edgelm.session import PREFILL_GRAPH_MIN_TOKENS, GraphRunner

    model = edgelm.load(int8_folder)
    shortest = model.manifest.prefill_min_tokens
    assert shortest == model.runner.prefill_min_tokens == MIN_TOKENS["int8"] < PREFILL_GRAPH_MIN_TOKENS
    runners = {graph: GraphRunner(int8_folder, replace(model.manifest, graph_file=graph, prefill_graph_file=None))
               for graph in ("prefill.onnx", "model.onnx")}
    ids = np.arange(1, shortest + 1, dtype=np.int64)[None]
    for run, graph in ((ids, "prefill.onnx"), (ids[:, :-1], "model.onnx")):
        expected = runners[graph].forward(run, runners[graph].new_cache())
        np.testing.assert_array_equal(model.runner.forward(run, model.runner.new_cache()), expected)


def test_the_kept_graph_names_its_shortest_run(tmp_path):
    from types import SimpleNamespace

    from edgelm.export.prefill_graph import _keep

    for name in ("prefill.onnx", "prefill.onnx.data", "prefill-fp32.onnx"):
        (tmp_path / name).write_bytes(b"x")
    manifest = SimpleNamespace(prefill_graph_file=None, prefill_min_tokens=None)
    _keep(tmp_path, manifest, "int8", {"int8": "prefill.onnx", "fp32": "prefill-fp32.onnx"})
    assert (manifest.prefill_graph_file, manifest.prefill_min_tokens) == ("prefill.onnx", MIN_TOKENS["int8"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefill.onnx", "prefill.onnx.data"]


def test_the_export_records_each_candidate_and_keeps_the_fastest_that_passes(exported):
    from edgelm.export.prefill_graph import INT8_SHARES, MIN_SPEEDUP, QUALITY_TOLERANCE

    folder = exported("llama", "int4")
    manifest = Manifest.load(folder)
    decided = manifest.quantization["prefill_graph"]
    candidates = decided["candidates"]
    assert decided["measured"] and "fp32" in candidates
    int8 = candidates.get("int8") or decided["int8_rejected"]
    tries = int8["tries"]
    assert [t["share"] for t in tries] == list(INT8_SHARES[: len(tries)]) and int8["tolerance"] == QUALITY_TOLERANCE
    within = [t["kld"] <= int8["decode_graph_kld"] + QUALITY_TOLERANCE for t in tries]
    assert within == [False] * (len(tries) - 1) + [("int8" in candidates)]  # the first share within it is the one
    for entry in candidates.values():  # rounded figures: a margin where they sit on the threshold
        if entry["passes"]:
            assert entry["speedup"] >= MIN_SPEEDUP - 0.002
        else:
            assert entry["speedup"] <= MIN_SPEEDUP + 0.002
    passing = {kind: entry["seconds"] for kind, entry in candidates.items() if entry["passes"]}
    kept = min(passing, key=passing.get) if passing else None
    assert decided["compute"] == kept and decided["kept"] == (kept is not None)
    assert (manifest.prefill_graph_file == "prefill.onnx") == (folder / "prefill.onnx").exists() == (kept is not None)
    assert (folder / "prefill.onnx.data").exists() == (kept == "int8")
    assert not (folder / "prefill-fp32.onnx").exists()  # a candidate not kept leaves nothing behind
