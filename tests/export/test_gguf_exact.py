"""Precision `gguf`: a GGUF's quantized blocks carried into the ONNX graph with no value changed.

A tiny Llama (hidden 256, so that K-quants fit) gets weights that are exactly the dequantized
values of GGUF blocks of every supported type, mixed inside the fused q/k/v and gate/up
MatMuls; a GGUF file holds the blocks themselves. The rewritten graph must give, through
onnxruntime, the very same weights bit for bit.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

gguf = pytest.importorskip("gguf")

from gguf import GGMLQuantizationType  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

from edgelm.errors import EdgelmError  # noqa: E402
from edgelm.export.quantize import materialize_transposed_weights  # noqa: E402

from .test_gguf_blocks import quantized  # noqa: E402

# layer 0 mixes every type (q/k/v and gate/up are fused into one MatMul each); layer 1 is all Q4_1
LAYER_TYPES = [
    {"self_attn.q_proj": "Q4_K", "self_attn.k_proj": "Q4_1", "self_attn.v_proj": "Q6_K", "self_attn.o_proj": "Q4_0",
     "mlp.gate_proj": "Q5_0", "mlp.up_proj": "Q5_1", "mlp.down_proj": "Q5_K"},
    dict.fromkeys(["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                   "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"], "Q4_1"),
]
EMBED_TYPE = "Q8_0"  # tied: the embedding and the LM head


def build_quantized_llama(folder, gguf_path):
    """A tiny Llama whose linear weights are GGUF blocks, saved as an HF folder, and the GGUF with those blocks."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import VOCAB_SIZE, char_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, vocab_size=VOCAB_SIZE,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    model = LlamaForCausalLM(config)
    writer = gguf.GGUFWriter(str(gguf_path), "llama")
    seed = 0

    def carry(name: str, kind: str):
        nonlocal seed
        param = model.get_parameter(name)
        rows, cols = param.shape
        raw = quantized(kind, rows, cols, seed)
        seed += 1
        values = dequantize(raw, GGMLQuantizationType[kind]).reshape(rows, cols)
        with torch.no_grad():
            param.copy_(torch.from_numpy(values.astype(np.float32)))
        writer.add_tensor(name, raw, raw_dtype=GGMLQuantizationType[kind])

    carry("model.embed_tokens.weight", EMBED_TYPE)
    for layer, types in enumerate(LAYER_TYPES):
        for suffix, kind in types.items():
            carry(f"model.layers.{layer}.{suffix}.weight", kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)


@pytest.fixture(scope="module")
def quantized_llama(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf-llama")
    build_quantized_llama(root / "hf", root / "model.gguf")
    return root


@pytest.fixture(scope="module")
def exact_folders(quantized_llama):
    """graph -> (fp32 folder, gguf folder, report), exported by the real code at accuracy level 0 (exact compute)."""
    from edgelm.export import export_model
    from edgelm.export.gguf_exact import exact_gguf_graph
    from edgelm.manifest import Manifest

    made = {}

    def make(graph: str):
        if graph not in made:
            fp32 = quantized_llama / f"fp32-{graph}"
            export_model(str(quantized_llama / "hf"), fp32, precision="fp32", graph=graph, check=False, quiet=True)
            exact = quantized_llama / f"gguf-{graph}"
            exact.mkdir()
            for path in fp32.iterdir():
                if not path.name.startswith("model.onnx"):
                    shutil.copy(path, exact / path.name)
            report = exact_gguf_graph(fp32 / "model.onnx", quantized_llama / "model.gguf", exact / "model.onnx",
                                      accuracy_level=0)
            manifest = Manifest.load(exact)
            manifest.precision, manifest.quantization = "gguf", report
            manifest.save(exact)
            made[graph] = fp32, exact, report
        return made[graph]

    return make


@pytest.mark.parametrize("graph", ["fused", "optimum"])
def test_every_weight_is_carried_over(exact_folders, graph):
    _, exact, report = exact_folders(graph)
    assert report["float_matmuls"] == []
    assert report["offset_corrections"] > 0
    model = onnx.load(str(exact / "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    assert "MatMulNBits" in ops
    float_weights = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2
                     and not i.name.startswith(("gguf_blocksum", "cos_cache", "sin_cache")) and "gguf" not in i.name]
    assert float_weights == []  # no weight matrix left in float
    assert report["embedding"].startswith("GatherBlockQuantized 8bit/32") and ops.count("GatherBlockQuantized") == 1


def _probe(model: onnx.ModelProto, output: str, x_name: str, x: np.ndarray) -> np.ndarray:
    """Runs the nodes that compute `output` from `x_name` alone, on input x."""
    import onnxruntime as ort

    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    needed, stack = [], [output]
    while stack:
        name = stack.pop()
        if name == x_name or name in inits or not name:
            continue
        node = producers[name]
        if node not in needed:
            needed.append(node)
            stack += list(node.input)
    used = {i for n in needed for i in n.input}
    graph = helper.make_graph(
        needed[::-1], "probe", [helper.make_tensor_value_info(x_name, onnx.TensorProto.FLOAT if x.dtype == np.float32
                                                              else onnx.TensorProto.INT64, None)],
        [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)],
        [inits[n] for n in used if n in inits])
    probe = helper.make_model(graph, opset_imports=list(model.opset_import))
    probe.ir_version = model.ir_version
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(probe.SerializeToString(), options).run(None, {x_name: x})[0]


def test_effective_weights_equal_the_gguf_values_bit_for_bit_in_onnxruntime(exact_folders):
    """Each rewritten MatMul, fed the identity matrix, returns its weight matrix: the GGUF's values exactly."""
    fp32, exact, _ = exact_folders("fused")
    reference = onnx.load(str(fp32 / "model.onnx"))
    materialize_transposed_weights(reference)
    model = onnx.load(str(exact / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in reference.graph.initializer}
    checked = 0
    for node in reference.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            weight = inits[node.input[1]]  # (K, N)
            got = _probe(model, node.output[0], node.input[0], np.eye(weight.shape[0], dtype=np.float32))
            # exact float equality (a sum of x * w over the identity cannot keep the sign of a zero weight)
            assert np.array_equal(got, weight), node.output[0]
            checked += 1
        elif node.op_type == "Gather" and node.input[0] in inits:
            table = inits[node.input[0]]
            ids = np.arange(table.shape[0], dtype=np.int64)[None]
            got = _probe(model, node.output[0], node.input[1], ids)[0]
            assert np.array_equal(got.view(np.uint32), table.view(np.uint32))
            checked += 1
    assert checked == 2 * 4 + 1 + 1  # 4 MatMuls a layer, the LM head, the embedding


@pytest.mark.parametrize("graph", ["fused", "optimum"])
def test_gguf_graph_computes_what_the_fp32_graph_computes(exact_folders, graph):
    import edgelm

    fp32, exact, _ = exact_folders(graph)
    a, b = edgelm.load(fp32), edgelm.load(exact)
    ids = np.array([a.encode("The quick brown fox jumps over the lazy dog")])
    expected = a.runner.forward(ids, a.runner.new_cache(), all_logits=True)
    got = b.runner.forward(ids, b.runner.new_cache(), all_logits=True)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert a.generate("Hello", max_new_tokens=16) == b.generate("Hello", max_new_tokens=16)


@pytest.mark.parametrize("graph, expected", [("fused", 3), ("optimum", 7)])
def test_attention_in_4_bits_computes_in_fp32_at_the_default_level(exact_folders, quantized_llama, graph, expected):
    """Level 4's int8 activations cost the attention projections the most; their 4-bit blocks take level 0."""
    from edgelm.export.gguf_exact import exact_gguf_graph

    fp32, _, _ = exact_folders(graph)
    out = quantized_llama / f"level4-{graph}.onnx"
    report = exact_gguf_graph(fp32 / "model.onnx", quantized_llama / "model.gguf", out)
    levels = {}
    for node in onnx.load(str(out), load_external_data=False).graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            levels[node.name] = (attrs["accuracy_level"], attrs["bits"])
    at_zero = [name for name, (level, _) in levels.items() if level == 0]
    # fused: layer 1's q/k/v (all Q4_1) and both o (Q4_0, Q4_1); layer 0's q/k/v mixes in Q6_K (8 bits).
    # optimum: q, k and v apart (layer 0's v is the Q6_K one)
    assert report["fp32_compute_matmuls"] == len(at_zero) == expected
    assert all(levels[name][1] == 4 and any(p in name for p in ("qkv", "q_proj", "k_proj", "v_proj", "/o/", "o_proj"))
               for name in at_zero)
    assert all(level == 4 for name, (level, _) in levels.items() if name not in at_zero)


def test_unsupported_block_types_are_refused_by_name(tmp_path):
    from edgelm.export.gguf_rows import read_gguf_rows

    path = tmp_path / "iq.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, 74), np.uint8), raw_dtype=GGMLQuantizationType.IQ2_XS)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(EdgelmError, match=r"blk\.0\.attn_q\.weight \(IQ2_XS\).*--precision int4"):
        read_gguf_rows(path)


def test_gguf_precision_needs_a_gguf_source(hf_folder, tmp_path):
    from edgelm.export import export_model

    with pytest.raises(EdgelmError, match="not one; give a .gguf file or an alias"):
        export_model(str(hf_folder("llama")), tmp_path / "out", precision="gguf")
    assert not (tmp_path / "out").exists()


def test_shared_tied_table_keeps_the_gguf_embedding_exact(exact_folders):
    """With one table for the tied embedding and LM head (export's default for gguf), lookups are still bit-exact."""
    from edgelm.export.tied_table import share_tied_table

    fp32, exact, _ = exact_folders("fused")
    reference = onnx.load(str(fp32 / "model.onnx"))
    model = onnx.load(str(exact / "model.onnx"))
    vocab = next(i for i in reference.graph.initializer if len(i.dims) == 2 and i.name.endswith("embed_tokens.weight")).dims[0]
    assert share_tied_table(model, vocab)
    gather = next(n for n in reference.graph.node if n.op_type == "Gather" and n.input[0].endswith("embed_tokens.weight"))
    table = numpy_helper.to_array(next(i for i in reference.graph.initializer if i.name == gather.input[0]))
    got = _probe(model, gather.output[0], gather.input[1], np.arange(vocab, dtype=np.int64)[None])[0]
    assert np.array_equal(got.view(np.uint32), table.view(np.uint32))


# the export's check (on this tiny model it does not keep the int8 cache), and a tolerance that keeps it
@pytest.mark.parametrize("tolerance", [None, 1.0])
def test_the_int8_cache_leaves_every_gguf_weight_as_it_was(exact_folders, tmp_path, tolerance):
    """gguf exports take the int8 KV cache by default where the long-context check keeps it: a change of the
    cache's arithmetic, decided against the fp32 graph, never of a weight."""
    from edgelm.export.kv_int8 import quantize_kv_cache
    from edgelm.manifest import Manifest

    fp32, exact, _ = exact_folders("fused")
    folder = tmp_path / "gguf-kv"
    shutil.copytree(exact, folder)
    manifest = Manifest.load(folder)
    record = quantize_kv_cache(folder, manifest, reference=fp32 / "model.onnx", tolerance=tolerance)
    manifest.save(folder)
    kld = record["choice"]["kld"]
    kept = kld["int8"] <= kld["float32"] + (0.005 if tolerance is None else tolerance)
    assert record["dtype"] == Manifest.load(folder).kv.dtype == ("int8" if kept else "float32")
    assert kept == (tolerance is not None)
    before = {i.name: i for i in onnx.load(str(exact / "model.onnx")).graph.initializer}
    after = {i.name: i for i in onnx.load(str(folder / "model.onnx")).graph.initializer}
    assert set(before) <= set(after)
    assert all(numpy_helper.to_array(after[name]).tobytes() == numpy_helper.to_array(tensor).tobytes()
               for name, tensor in before.items())
