"""A tied embedding gathers the LM head's quantized rows: same values, one table."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgelm.export.tied_table import share_tied_table

MS = "com.microsoft"
VOCAB, HIDDEN = 64, 64


def _graph(bits: int, block: int, zero_points: bool) -> tuple[onnx.ModelProto, np.ndarray]:
    """ids -> Gather(float table) -> MatMulNBits LM head; returns the model and the head's dequantized (vocab, hidden)."""
    rng = np.random.default_rng(0)
    blocks = HIDDEN // block
    levels = rng.integers(0, 2**bits, (VOCAB, blocks, block)).astype(np.uint8)
    scales = rng.random((VOCAB, blocks)).astype(np.float32) + 0.1
    zeros = rng.integers(0, 2**bits, (VOCAB, blocks)).astype(np.uint8) if zero_points else None
    mid = 2 ** (bits - 1)
    table = ((levels.astype(np.float32) - (mid if zeros is None else zeros[..., None])) * scales[..., None])
    table = table.reshape(VOCAB, HIDDEN)
    packed = levels[..., 0::2] | (levels[..., 1::2] << 4) if bits == 4 else levels
    inits = [numpy_helper.from_array(packed, "head_B"), numpy_helper.from_array(scales.reshape(-1), "head_scales"),
             numpy_helper.from_array(rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32), "embed_table")]
    head_inputs = ["embedded", "head_B", "head_scales"]
    if zeros is not None:
        packed_zeros = zeros[:, 0::2] | (zeros[:, 1::2] << 4) if bits == 4 else zeros
        inits.append(numpy_helper.from_array(packed_zeros.reshape(-1), "head_zeros"))
        head_inputs.append("head_zeros")
    nodes = [
        helper.make_node("Gather", ["embed_table", "input_ids"], ["embedded"]),
        helper.make_node("MatMulNBits", head_inputs, ["logits"], domain=MS, K=HIDDEN, N=VOCAB, bits=bits,
                         block_size=block, accuracy_level=0),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("embedded", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    return model, table


@pytest.mark.parametrize("bits,block,zero_points", [(4, 32, False), (4, 32, True), (4, 16, True), (8, 16, False)])
def test_embedding_reads_the_heads_rows(bits, block, zero_points):
    model, table = _graph(bits, block, zero_points)
    assert share_tied_table(model, VOCAB)
    names = {t.name for t in model.graph.initializer}
    assert "embed_table" not in names and "head_B" in names  # one table left, the head's
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 5, 63, 5]], dtype=np.int64)
    embedded = session.run(["embedded"], {"input_ids": ids})[0]
    assert embedded.shape == (1, 4, HIDDEN)
    np.testing.assert_array_equal(embedded[0], table[ids[0]])


def test_nothing_to_share_leaves_the_graph_alone():
    model, _ = _graph(4, 32, False)
    before = model.SerializeToString()
    assert share_tied_table(model, VOCAB + 1) is None  # no head of that vocabulary
    assert model.SerializeToString() == before


def test_tied_tiny_gemma_int4_stores_one_table(hf_folder, tmp_path):
    """Gemma 3 ties its embedding: asked to, the int4 folder holds one (vocab, ...) table, and the model still generates."""
    from edgelm import load
    from edgelm.export import export_model

    folder = tmp_path / "shared"
    manifest = export_model(str(hf_folder("gemma3_text")), folder, precision="int4", int4_method="rtn",
                            share_tied_table=True, quiet=True)
    assert "one table" in manifest.quantization.get("tied_table", "")
    graph = onnx.load(str(folder / manifest.graph_file), load_external_data=False)
    hidden = 32  # conftest's tiny models; a table holds at least vocab x hidden 4-bit levels
    tables = [t.name for t in graph.graph.initializer
              if t.dims and t.dims[0] == manifest.vocab_size and np.prod(t.dims) >= manifest.vocab_size * hidden // 2]
    assert len(tables) == 1, tables
    assert np.isfinite(manifest.validation["perplexity"])
    assert load(folder).generate("ab", max_new_tokens=4, temperature=0.0) is not None


def test_int4_shares_only_when_quality_allows(exported):
    """Sharing re-rounds the embedding to the LM head's levels, so at int4 both are scored (KLD against
    the fp32 graph) and the choice recorded."""
    from edgelm.manifest import Manifest

    quantization = Manifest.load(exported("gemma3_text", "int4")).quantization
    choice = quantization["tied_table_choice"]
    separate, one = choice["kld"]["separate tables"], choice["kld"]["one table"]
    assert separate > 0 and one > 0 and set(choice["perplexity"]) == {"separate tables", "one table"}
    assert choice["kept"] == ("one table" if one <= separate + 0.005 else "separate tables")
    assert ("tied_table" in quantization) == (choice["kept"] == "one table")


def test_no_sharing_when_told(hf_folder, tmp_path):
    from edgelm.export import export_model

    manifest = export_model(str(hf_folder("gemma3_text")), tmp_path / "two", precision="int4", int4_method="rtn",
                            share_tied_table=False, check=False, quiet=True)
    assert "tied_table" not in manifest.quantization and "tied_table_choice" not in manifest.quantization
