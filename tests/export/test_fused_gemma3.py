"""The fused Gemma 3 graph against transformers: sliding and global layers, q/k norms, GeGLU, softcapping."""

from __future__ import annotations

import pytest

from .fused_models import check_cache, check_greedy, check_logits, export_fp32, tiny_model


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    model = tiny_model("gemma3_text")
    return model, export_fp32(model, tmp_path_factory.mktemp("gemma3"))


def test_builder_and_shared_cache_recorded(gemma):
    _, exported = gemma
    assert exported.manifest.graph_builder == "fused-gemma3"
    assert exported.manifest.kv.shared_buffer and exported.manifest.kv.num_kv_heads == 2


def test_logits_match_transformers_past_the_sliding_window(gemma):
    check_logits(gemma[1], gemma[0])


def test_greedy_identical_to_transformers(gemma):
    check_greedy(gemma[1], gemma[0])


def test_one_token_steps_equal_one_pass(gemma):
    check_cache(gemma[1])


def test_final_logit_softcapping_and_linear_rope_scaling(tmp_path):
    model = tiny_model("gemma3_text", final_logit_softcapping=2.0, rope_scaling={"rope_type": "linear", "factor": 8.0})
    exported = export_fp32(model, tmp_path)
    check_logits(exported, model)
    check_greedy(exported, model)


def test_graph_uses_fused_ops_only(gemma):
    import onnx

    graph = onnx.load(str(gemma[1].folder / "model.onnx"), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("GroupQueryAttention") == 3
    windows = [a.i for n in graph.node if n.op_type == "GroupQueryAttention" for a in n.attribute
               if a.name == "local_window_size"]
    assert windows == [4, 4]  # layers 0 and 2 slide; layer 1 is global
    assert ops.count("FastGelu") == 3 and "Softmax" not in ops


def test_int4_on_the_fused_graph_shares_the_tied_table(tmp_path):
    import onnx

    import edgelm
    from edgelm.export import export_model

    from .fused_models import save

    folder = save(tiny_model("gemma3_text"), tmp_path / "hf")
    manifest = export_model(str(folder), tmp_path / "int4", precision="int4", int4_method="rtn", symmetric=False,
                            share_tied_table=True, check=False, quiet=True)
    assert manifest.graph_builder == "fused-gemma3" and manifest.quantization["tied_table"]
    graph = onnx.load(str(tmp_path / "int4" / "model.onnx"), load_external_data=False).graph
    gather = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    assert gather.input[0] in {n.input[1] for n in graph.node if n.op_type == "MatMulNBits"}
    model = edgelm.load(tmp_path / "int4")
    assert len(list(model.generate_ids(model.encode("Hi"), model.config(max_new_tokens=4, eos_token_ids=())))) == 4
