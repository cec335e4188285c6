"""The fused graph for the llama family and its relatives (mistral, qwen2, qwen3, phi3) against transformers."""

from __future__ import annotations

import pytest

from edgelm.errors import EdgelmError

from .fused_models import check_cache, check_greedy, check_logits, export_fp32, save, tiny_model

FAMILIES = {  # (model_type, config overrides) -> graph_builder
    ("llama", ()): "fused-llama",
    ("mistral", ()): "fused-llama",  # sliding window 4 on every layer
    ("qwen2", ()): "fused-llama",  # q/k/v biases
    ("qwen2", (("use_sliding_window", True), ("sliding_window", 4), ("max_window_layers", 1))): "fused-llama",
    ("qwen3", ()): "fused-llama",  # q/k norms
    ("phi3", ()): "fused-phi3",  # q/k/v and gate/up stacked in the checkpoint, sliding window 4
}


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    made = {}

    def get(key):
        if key not in made:
            model = tiny_model(key[0], **dict(key[1]))
            made[key] = model, export_fp32(model, tmp_path_factory.mktemp(key[0]))
        return made[key]

    return get


@pytest.mark.parametrize("key", FAMILIES, ids=lambda key: "-".join([key[0], *(str(v) for _, v in key[1][:1])]))
def test_fused_family_matches_transformers(key, family):
    torch_model, exported = family(key)
    assert exported.manifest.graph_builder == FAMILIES[key] and exported.manifest.kv.shared_buffer
    check_logits(exported, torch_model)
    check_greedy(exported, torch_model)
    check_cache(exported)


def test_qwen2_biases_are_in_the_graph(family):
    import onnx

    _, exported = family(("qwen2", ()))
    graph = onnx.load(str(exported.folder / "model.onnx"), load_external_data=False).graph
    assert sum(n.op_type == "Add" and n.input[1].endswith("qkv.bias") for n in graph.node) == 2


@pytest.mark.parametrize("scaling", [
    {"type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8},
])
def test_unsupported_rope_scaling_is_refused_with_a_reason(scaling, tmp_path):
    from edgelm.export import export_model
    from edgelm.export.fused_graph import read_config, unsupported_reason

    folder = save(tiny_model("phi3", rope_scaling=scaling, original_max_position_embeddings=128), tmp_path / "hf")
    assert "rope scaling 'longrope'" in unsupported_reason(read_config(folder))
    with pytest.raises(EdgelmError, match="fused graph cannot be built: rope scaling 'longrope'.*--graph optimum"):
        export_model(str(folder), tmp_path / "out", precision="fp32", graph="fused", check=False, quiet=True)


def test_unknown_family_and_odd_head_size_are_refused():
    from edgelm.export.fused_graph import unsupported_reason

    assert "is not one of" in unsupported_reason({"model_type": "gpt2"})
    config = tiny_model("llama", head_dim=8, num_attention_heads=4).config.to_dict()
    assert "multiple of 16" in unsupported_reason(config)


@pytest.mark.parametrize("model_type", ["gemma3_text", "qwen3"])
def test_float16_kv_cache(model_type, tmp_path):
    import numpy as np

    model = tiny_model(model_type)
    exported = export_fp32(model, tmp_path, kv_dtype="float16")
    assert exported.manifest.kv.dtype == "float16" and exported.manifest.kv.shared_buffer
    cache = exported.runner.new_cache()
    exported.runner.forward(np.array([exported.encode("Hi")]), cache)
    assert all(value.numpy().dtype == np.float16 for value in cache.values)
    check_logits(exported, model, atol=2e-3)  # half-precision keys and values: close, not equal
    check_cache(exported, atol=2e-3)


def test_float16_kv_cache_needs_the_fused_graph(tmp_path):
    from edgelm.export import export_model

    folder = save(tiny_model("llama"), tmp_path / "hf")
    with pytest.raises(EdgelmError, match="kv_dtype='float16' needs edgelm's fused graph"):
        export_model(str(folder), tmp_path / "out", precision="fp32", graph="optimum", kv_dtype="float16", check=False,
                     quiet=True)
    with pytest.raises(EdgelmError, match="kv_dtype='bf16' is invalid"):
        export_model(str(folder), tmp_path / "out", kv_dtype="bf16", check=False, quiet=True)


def test_a_checkpoint_without_the_expected_weights_is_refused_by_name(tmp_path):
    from safetensors.torch import load_file, save_file

    from edgelm.export.fused_graph import build_fused_graph

    folder = save(tiny_model("qwen3"), tmp_path / "hf")
    weights = load_file(str(folder / "model.safetensors"))
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(EdgelmError, match="needs the weight 'model.layers.1.mlp.up_proj.weight'.*--graph optimum"):
        build_fused_graph(folder, tmp_path / "out" / "model.onnx")
