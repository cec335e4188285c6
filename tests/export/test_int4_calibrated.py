"""int4 `calibrated`: GPTQ levels and scales in MatMulNBits' format, checked in numpy and in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import edgelm
from edgelm.export.calibration import calibration_text, scoring_text
from edgelm.export.gptq import gptq_int4, output_error
from edgelm.export.int4_blocks import Int4Matrix, rtn_int4
from edgelm.export.int4_calibrated import gather_block_quantized, matmul_nbits
from edgelm.manifest import Manifest
from edgelm.quality import reference_text


def _activations(rng, rows: int, k: int, loud=slice(0, 3)) -> np.ndarray:
    """Correlated inputs with a few loud channels, as a transformer's are; the same distribution on every call."""
    mix = np.random.default_rng(99).standard_normal((k, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((rows, k)).astype(np.float32) @ (np.eye(k, dtype=np.float32) + 0.5 * mix)
    x[:, loud] *= 8
    return x


def _unpack(q: Int4Matrix) -> tuple[np.ndarray, np.ndarray | None]:
    """Levels and zeros read back from the packed bytes, nibble by nibble."""
    packed = q.packed_levels()  # (N, blocks, block // 2)
    levels = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(q.levels.shape)
    if q.zeros is None:
        return levels, None
    per_row = q.packed_zeros().reshape(q.zeros.shape[0], -1)
    zeros = np.stack([per_row & 0x0F, per_row >> 4], axis=-1).reshape(q.zeros.shape[0], -1)[:, : q.zeros.shape[1]]
    return levels, zeros


@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_output_error_on_held_out_inputs_below_rtn(symmetric):
    rng = np.random.default_rng(0)
    k, n = 128, 48
    weight = rng.standard_normal((k, n)).astype(np.float32) * 0.05  # MatMul's (K, N)
    calibration, held_out = _activations(rng, 1024, k), _activations(rng, 1024, k)
    hessian = calibration.T.astype(np.float64) @ calibration
    held = held_out.T.astype(np.float64) @ held_out
    rtn = output_error(weight, rtn_int4(weight, symmetric), held)
    gptq = output_error(weight, gptq_int4(weight, hessian, symmetric), held)
    assert gptq < 0.8 * rtn


@pytest.mark.parametrize("symmetric", [True, False])
def test_act_order_beats_in_order_when_loud_inputs_are_scattered(symmetric):
    """Rounding the loudest inputs first (static block scales) leaves less output error on held-out inputs."""
    rng = np.random.default_rng(2)
    k, n = 128, 48
    loud = rng.choice(k, 6, replace=False)  # a transformer's outlier channels sit anywhere along K
    weight = rng.standard_normal((k, n)).astype(np.float32) * 0.05
    calibration, held_out = (_activations(rng, 1024, k, loud) for _ in range(2))
    hessian = calibration.T.astype(np.float64) @ calibration
    held = held_out.T.astype(np.float64) @ held_out
    act = output_error(weight, gptq_int4(weight, hessian, symmetric, act_order=True), held)
    in_order = output_error(weight, gptq_int4(weight, hessian, symmetric, act_order=False), held)
    assert act < 0.97 * in_order


@pytest.mark.parametrize("symmetric", [True, False])
def test_levels_scales_and_zeros_in_range(symmetric):
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((96, 40)).astype(np.float32)
    x = _activations(rng, 256, 96)
    q = gptq_int4(weight, x.T.astype(np.float64) @ x, symmetric)
    assert q.levels.dtype == np.uint8 and q.levels.shape == (40, 96) and q.levels.max() <= 15
    assert q.scales.shape == (40, 3) and np.isfinite(q.scales).all()
    if symmetric:
        assert q.zeros is None
    else:
        assert q.zeros.dtype == np.uint8 and q.zeros.shape == (40, 3) and q.zeros.max() <= 15


@pytest.mark.parametrize("symmetric", [True, False])
def test_packing_decodes_to_the_quantized_matrix(symmetric):
    rng = np.random.default_rng(2)
    q = rtn_int4(rng.standard_normal((96, 6)).astype(np.float32), symmetric)  # 3 blocks: odd, so zeros pad
    levels, zeros = _unpack(q)
    np.testing.assert_array_equal(levels, q.levels)
    if not symmetric:
        np.testing.assert_array_equal(zeros, q.zeros)
    # the same bytes in onnxruntime's MatMulNBits (float compute) give x @ dequantized W
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    new, inits = matmul_nbits(node, q, "w", accuracy_level=0)
    graph = helper.make_graph([new], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 96])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    x = rng.standard_normal((2, 96)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ q.dequantize().T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("hidden", [32, 64])  # one block a row (zero points padded to a byte), two blocks
def test_embedding_gather_returns_the_quantized_rows(symmetric, hidden):
    """onnxruntime's GatherBlockQuantized on the written table (with its zero points when asymmetric) gives q's rows."""
    table = np.random.default_rng(3).standard_normal((50, hidden)).astype(np.float32)
    q = rtn_int4(table.T, symmetric, None, 32)
    lookup = helper.make_node("Gather", ["table", "ids"], ["rows"])
    node, inits = gather_block_quantized(lookup, q, "table")
    assert (len(node.input) == 4) != symmetric
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [3, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    ids = np.array([0, 17, 49])
    rows = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    np.testing.assert_allclose(rows, q.dequantize()[ids], rtol=1e-6, atol=1e-6)


def test_calibration_and_scoring_texts_are_held_out():
    evaluation = reference_text()
    calibration, scoring = calibration_text(), scoring_text()
    for a, b in ((calibration, evaluation), (scoring, evaluation), (calibration, scoring)):
        assert a[1000:1200] not in b and b[1000:1200] not in a


def test_calibrated_export_loads_generates_and_records_settings(hf_folder, tmp_path):
    from edgelm.export import export_model

    out = tmp_path / "model"
    export_model(str(hf_folder("llama")), out, precision="int4", int4_method="calibrated", symmetric=False,
                 check=False, quiet=True)
    manifest = Manifest.load(out)
    settings = manifest.quantization
    assert settings["int4_method"] == "calibrated" and settings["symmetric"] is False
    assert settings["gptq_matmuls"] == 2 * 4 + 1 and not settings["float_matmuls"]  # 4 per layer + the LM head
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert "MatMul" not in ops and ops.count("GatherBlockQuantized") == 1
    assert all(a.i == 4 for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level")
    model = edgelm.load(out)
    tokens = list(model.generate_ids(model.encode("Machine learning is"), model.config(max_new_tokens=8)))
    assert len(tokens) <= 8 and all(0 <= t < manifest.vocab_size for t in tokens)
