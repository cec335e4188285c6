"""The real export code on tiny random gpt2, llama and gemma3_text models, checked against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgelm
from edgelm.manifest import Manifest

from ..conftest import VARIANTS

PROMPT = "Machine learning is"


@pytest.fixture(scope="module")
def torch_model(hf_folder):
    from transformers import AutoModelForCausalLM

    cache = {}

    def get(architecture):
        if architecture not in cache:
            cache[architecture] = AutoModelForCausalLM.from_pretrained(hf_folder(architecture)).eval()
        return cache[architecture]

    return get


@pytest.mark.parametrize("architecture, graph", VARIANTS)
def test_fp32_logits_match_pytorch(architecture, graph, exported, torch_model):
    model = edgelm.load(exported(architecture, "fp32", graph))
    ids = np.array([model.encode(PROMPT + " and more text to cover the sliding window")], dtype=np.int64)
    onnx_logits = model.runner.forward(ids, model.runner.new_cache(), all_logits=True)
    with torch.no_grad():
        torch_logits = torch_model(architecture)(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=0)
    assert model.manifest.validation["max_abs_logit_diff"] < 1e-4


@pytest.mark.parametrize("architecture, graph", VARIANTS)
def test_greedy_output_identical_to_transformers(architecture, graph, exported, torch_model):
    model = edgelm.load(exported(architecture, "fp32", graph))
    prompt_ids = model.encode(PROMPT)
    with torch.no_grad():
        out = torch_model(architecture).generate(
            torch.tensor([prompt_ids]), max_new_tokens=20, do_sample=False, pad_token_id=3
        )
    expected = out[0, len(prompt_ids):].tolist()
    if expected and expected[-1] == 2:  # transformers keeps the eos token; edgelm stops before it
        expected = expected[:-1]
    got = list(model.generate_ids(prompt_ids, model.config(max_new_tokens=20)))
    assert got == expected


@pytest.mark.parametrize("architecture, graph", VARIANTS)
def test_with_cache_equals_without_cache(architecture, graph, exported):
    model = edgelm.load(exported(architecture, "fp32", graph))
    ids = np.array([model.encode("The cache must not change anything at all.")], dtype=np.int64)
    full = model.runner.forward(ids, model.runner.new_cache(), all_logits=True)[0]  # (seq, vocab)
    cache = model.runner.new_cache()
    model.runner.forward(ids[:, :5], cache)
    for position in range(5, ids.shape[1]):  # one token a step through the cache
        step = model.runner.forward(ids[:, position : position + 1], cache)[0]
        np.testing.assert_allclose(step, full[position], atol=1e-4, rtol=0)
    assert cache.length == ids.shape[1]


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("architecture, graph", VARIANTS)
def test_quantized_exports_load_generate_and_measure_agreement(architecture, graph, precision, exported):
    folder = exported(architecture, precision, graph)
    model = edgelm.load(folder)
    validation = model.manifest.validation
    assert 0.0 <= validation["greedy_agreement"] <= 1.0
    assert validation["perplexity"] > 1.0
    assert model.manifest.quantization["quantized_nodes"] > 0
    tokens = list(model.generate_ids(model.encode(PROMPT), model.config(max_new_tokens=8)))
    assert all(0 <= t < model.manifest.vocab_size for t in tokens)


def test_int4_quantizes_lm_head_and_embeddings(exported):
    import onnx

    folder = exported("llama", "int4")
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert "MatMul" not in [n.op_type for n in graph.node if n.output[0] == "logits"]
    assert ops.count("GatherBlockQuantized") == 1
    manifest = Manifest.load(folder)
    assert manifest.quantization["block_size"] == 32 and manifest.quantization["accuracy_level"] == 4
    choice = manifest.quantization["choice"]  # rtn both ways and calibrated asymmetric were scored; the closest kept
    assert set(choice["kld"]) == set(choice["perplexity"]) == {"rtn symmetric", "rtn asymmetric", "calibrated asymmetric"}
    assert choice["kld"][choice["kept"]] == min(choice["kld"].values())
    assert all(score > 0 for score in choice["kld"].values())  # quantized: never the fp32 distributions exactly
    assert choice["kept"] == f"{manifest.quantization['int4_method']} " + \
        ("symmetric" if manifest.quantization["symmetric"] else "asymmetric")


def test_manifest_records_source_interface_and_versions(exported, hf_folder):
    manifest = Manifest.load(exported("llama", "fp32"))
    assert manifest.model_type == "llama"
    assert manifest.kv.num_layers == 2 and manifest.kv.num_kv_heads == 1 and manifest.kv.head_dim == 16
    assert manifest.graph_builder == "fused-llama"
    assert Manifest.load(exported("llama", "fp32", "optimum")).graph_builder == "optimum"
    assert manifest.graph_inputs[0] == "input_ids" and "attention_mask" in manifest.graph_inputs
    assert manifest.source["kind"] == "folder" and len(manifest.source["sha256"]) == 64
    assert manifest.tokens.eos_token_ids == [2] and manifest.tokens.bos_token_id == 1
    assert manifest.tokens.chat_template_file == "chat_template.jinja"
    assert {"torch", "transformers", "onnxruntime", "optimum-onnx"} <= set(manifest.versions)
    for key in ("export_seconds", "folder_mb", "perplexity", "perplexity_pytorch_fp32"):
        assert key in manifest.validation


def test_int4_with_an_8_bit_lm_head(hf_folder, tmp_path):
    import onnx

    from edgelm.export import export_model

    manifest = export_model(str(hf_folder("llama")), tmp_path / "m", precision="int4", lm_head_bits=8, check=False,
                            quiet=True)
    graph = onnx.load(str(tmp_path / "m" / "model.onnx"), load_external_data=False).graph
    head = [n for n in graph.node if n.output[0] == "logits"][0]
    assert head.op_type == "MatMulNBits" and {a.name: a.i for a in head.attribute}["bits"] == 8
    assert manifest.quantization["lm_head_bits"] == 8
    assert edgelm.load(tmp_path / "m").generate("Hi", max_new_tokens=3) is not None


@pytest.mark.parametrize("method", ["rtn", "calibrated"])
def test_int4_lm_head_with_its_own_block_size(hf_folder, tmp_path, method):
    """The LM head alone gets larger blocks (fewer scales to read per token); every other weight keeps block_size."""
    import onnx

    from edgelm.export import export_model

    manifest = export_model(str(hf_folder("llama")), tmp_path / "m", precision="int4", int4_method=method,
                            symmetric=False, block_size=16, lm_head_block_size=32, check=False, quiet=True)
    graph = onnx.load(str(tmp_path / "m" / "model.onnx"), load_external_data=False).graph
    blocks = {n.output[0]: {a.name: a.i for a in n.attribute}["block_size"] for n in graph.node
              if n.op_type in ("MatMulNBits", "GatherBlockQuantized")}
    assert blocks.pop("logits") == 32
    assert blocks and set(blocks.values()) == {16}
    assert manifest.quantization["lm_head_block_size"] == 32 and manifest.quantization["block_size"] == 16
    model = edgelm.load(tmp_path / "m")
    assert len(list(model.generate_ids(model.encode("Hi"), model.config(max_new_tokens=4, eos_token_ids=())))) == 4


@pytest.mark.parametrize("block,message", [(48, "power of two"), (64, "hidden size 32")])
def test_lm_head_block_size_that_cannot_work_is_refused(hf_folder, tmp_path, block, message):
    from edgelm.errors import EdgelmError
    from edgelm.export import export_model

    with pytest.raises(EdgelmError, match=message):
        export_model(str(hf_folder("llama")), tmp_path / "m", precision="int4", lm_head_block_size=block,
                     check=False, quiet=True)
    assert not (tmp_path / "m").exists()


def test_a_block_size_that_leaves_linears_in_fp32_is_refused(hf_folder, tmp_path):
    """Blocks of 64 do not tile the tiny llama's hidden size of 32: GPTQ would keep those weights in fp32."""
    from edgelm.errors import EdgelmError
    from edgelm.export import export_model

    with pytest.raises(EdgelmError, match="block_size=64 does not divide this model's hidden size 32: .* use one of 32, 16"):
        export_model(str(hf_folder("llama")), tmp_path / "m", precision="int4", block_size=64, check=False, quiet=True)
    assert not (tmp_path / "m").exists()


def test_int8_weight_only_method(hf_folder, tmp_path):
    import onnx

    from edgelm.export import export_model

    manifest = export_model(str(hf_folder("llama")), tmp_path / "m", precision="int8", int8_method="weight-only",
                            check=False, quiet=True)
    graph = onnx.load(str(tmp_path / "m" / "model.onnx"), load_external_data=False).graph
    bits = {a.i for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"}
    assert bits == {8} and manifest.quantization["bits"] == 8
    model = edgelm.load(tmp_path / "m")
    assert len(list(model.generate_ids(model.encode("Hi"), model.config(max_new_tokens=4, eos_token_ids=())))) == 4
