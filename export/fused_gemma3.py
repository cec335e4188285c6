"""The fused graph for Gemma 3 text decoders (gemma3_text), in the blocks of fused_builder.py.

What differs from the llama layer:
- four norms a layer: after attention and after the MLP too, each before its residual add;
- every RMSNorm multiplies by (1 + weight);
- q and k are RMS-normalized per head before rotary; the score scale is query_pre_attn_scalar ** -0.5;
- sliding-window layers (rope theta rope_local_base_freq) and global layers (rope_theta, with
  linear scaling on the larger models): two cos/sin tables;
- GeGLU (gelu, tanh approximation); the embedding is scaled by sqrt(hidden) (rounded to float32
  as transformers does); the LM head is the embedding table; optional final logit softcapping.
"""

from __future__ import annotations

import math

import numpy as np

from .fused_builder import GraphBuilder, layer_windows, shape_reason
from .fused_llama import rope_factor, rope_reason

MODEL_TYPES = ("gemma3_text",)


def unsupported_reason(config: dict) -> str | None:
    """Why this config cannot use the fused Gemma 3 graph, or None when it can."""
    if config.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        return f"activation {config.get('hidden_activation')!r} is not supported by the fused graph"
    if config.get("attention_bias"):
        return "attention biases are not supported by the fused Gemma 3 graph"
    if config.get("use_bidirectional_attention"):
        return "bidirectional attention is not supported by the fused graph"
    return rope_reason(config) or shape_reason(config)


def build(b: GraphBuilder) -> None:
    c, w = b.c, b.w
    norm = lambda name: 1.0 + w[name]  # noqa: E731  Gemma's RMSNorm scales by (1 + weight)
    rotary = {
        "global": b.rotary_cache(float(c.get("rope_theta", 1_000_000.0)), rope_factor(c), "_global"),
        "local": b.rotary_cache(float(c.get("rope_local_base_freq", 10_000.0)), suffix="_local"),
    }
    scale = float(c.get("query_pre_attn_scalar") or b.head_dim) ** -0.5
    embed_scale = np.float32(math.sqrt(c["hidden_size"]))  # transformers: torch.tensor(hidden ** 0.5), float32
    residual, pending = b.embed(w["model.embed_tokens.weight"], embed_scale), None
    for i, window in enumerate(layer_windows(c)):
        p = f"model.layers.{i}."
        normed, residual = b.add_rms_norm(pending, residual, norm(p + "input_layernorm.weight"), f"layer{i}/ln1")
        q, k, v = b.qkv(normed, f"layer{i}/qkv", *(w[p + f"self_attn.{x}_proj.weight"] for x in "qkv"))
        q = b.head_norm(q, b.heads, norm(p + "self_attn.q_norm.weight"), f"layer{i}/q_norm")
        k = b.head_norm(k, b.kv_heads, norm(p + "self_attn.k_norm.weight"), f"layer{i}/k_norm")
        attn = b.attention(i, q, k, v, rotary["local" if window else "global"], scale, window,
                           softcap=c.get("attn_logit_softcapping"))
        out = b.linear(attn, f"layer{i}/o", [w[p + "self_attn.o_proj.weight"]])
        pending = b.rms_norm(out, norm(p + "post_attention_layernorm.weight"), f"layer{i}/post_attn_norm")
        normed, residual = b.add_rms_norm(pending, residual, norm(p + "pre_feedforward_layernorm.weight"), f"layer{i}/ln2")
        mlp = b.gated_mlp(normed, f"layer{i}/mlp", [w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]],
                          w[p + "mlp.down_proj.weight"], "gelu_pytorch_tanh")
        pending = b.rms_norm(mlp, norm(p + "post_feedforward_layernorm.weight"), f"layer{i}/post_mlp_norm")
    normed, _ = b.add_rms_norm(pending, residual, norm("model.norm.weight"), "final_norm")
    tied = c.get("tie_word_embeddings", True) or "lm_head.weight" not in w
    b.logits(normed, None if tied else w["lm_head.weight"], softcap=c.get("final_logit_softcapping"))
