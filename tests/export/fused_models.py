"""Tiny random models of every family the fused graph covers, and the checks each must pass.

Each config is transformers' tester size (vocab 99, hidden 32, heads of 16 as GroupQueryAttention
needs); a sliding window of 4 is shorter than the prompts, so windowed layers are exercised.
"""

from __future__ import annotations

import numpy as np
import torch

import edgelm

from ..conftest import VOCAB_SIZE, char_tokenizer

COMMON = dict(vocab_size=VOCAB_SIZE, bos_token_id=1, eos_token_id=2, pad_token_id=3, hidden_size=32,
              intermediate_size=64, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
LONG_PROMPT = "Machine learning is a field of study in artificial intelligence"  # 64 tokens, window 4


def tiny_model(model_type: str, **overrides):
    """A random model (seed 0, weights and norms jittered so no norm is the identity)."""
    import transformers

    classes = {
        "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
        "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=4)),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16)),
        "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(sliding_window=4)),
        "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=4, query_pre_attn_scalar=20,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"], num_hidden_layers=3)),
    }
    config_class, model_class, extra = classes[model_type]
    torch.manual_seed(0)
    settings = COMMON | dict(num_hidden_layers=2) | extra | overrides
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**settings)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


def save(model, folder):
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def export_fp32(model, tmp_path, graph: str = "fused", kv_dtype: str = "float32"):
    from edgelm.export import export_model

    export_model(str(save(model, tmp_path / "hf")), tmp_path / "onnx", precision="fp32", graph=graph, check=False,
                 quiet=True, kv_dtype=kv_dtype)
    return edgelm.load(tmp_path / "onnx")


def check_logits(edgelm_model, torch_model, text: str = LONG_PROMPT, atol: float = 1e-4) -> None:
    ids = np.array([edgelm_model.encode(text)], dtype=np.int64)
    onnx_logits = edgelm_model.runner.forward(ids, edgelm_model.runner.new_cache(), all_logits=True)
    with torch.no_grad():
        torch_logits = torch_model(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=atol, rtol=0)


def check_greedy(edgelm_model, torch_model, text: str = LONG_PROMPT, new_tokens: int = 24) -> None:
    prompt = edgelm_model.encode(text)
    with torch.no_grad():
        out = torch_model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False, pad_token_id=3)
    expected = out[0, len(prompt):].tolist()
    if expected and expected[-1] == 2:  # transformers keeps the eos token; edgelm stops before it
        expected = expected[:-1]
    assert list(edgelm_model.generate_ids(prompt, edgelm_model.config(max_new_tokens=new_tokens))) == expected


def check_cache(edgelm_model, text: str = LONG_PROMPT, atol: float = 1e-4) -> None:
    """One token a step through the cache gives the logits of one full pass, past the sliding window too."""
    runner = edgelm_model.runner
    ids = np.array([edgelm_model.encode(text)], dtype=np.int64)
    full = runner.forward(ids, runner.new_cache(), all_logits=True)[0]  # (seq, vocab)
    cache = runner.new_cache()
    runner.forward(ids[:, :3], cache)
    for position in range(3, ids.shape[1]):
        step = runner.forward(ids[:, position : position + 1], cache)[0]
        np.testing.assert_allclose(step, full[position], atol=atol, rtol=0)
