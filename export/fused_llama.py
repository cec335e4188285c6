"""The fused graph for Llama-style decoders: llama, mistral, qwen2 and qwen3 (phi3 reuses the layer).

Each layer, in the blocks of fused_builder.py:

    add_rms_norm -> qkv (one MatMul, its output fed packed to attention; qwen2's biases)
    [-> split and head_norm on q and k: qwen3]
    -> attention (rotary inside; mistral's and qwen's sliding window) -> linear (o)
    -> add_rms_norm -> gated_mlp (SiLU)

What the families differ in is read from the config and the weights, never from a table of names.
"""

from __future__ import annotations

import numpy as np

from .fused_builder import GraphBuilder, layer_windows, shape_reason

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def unsupported_reason(config: dict) -> str | None:
    """Why this config cannot use the fused llama graph, or None when it can."""
    reason = rope_reason(config)
    if reason:
        return reason
    if config.get("mlp_bias") or config.get("attention_bias"):  # (qwen2's q/k/v biases are no option: supported)
        return "attention_bias / mlp_bias are not supported by the fused graph"
    if config.get("hidden_act", "silu") != "silu":
        return f"activation {config.get('hidden_act')!r} is not supported by the fused graph"
    return shape_reason(config)


def rope_reason(config: dict) -> str | None:
    """Why this config's rotary embedding is not one the fused graph writes (default or linear), or None."""
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in (None, "default", "linear"):
        return f"rope scaling {kind!r} ({scaling}) is not supported by the fused graph"
    if float(config.get("partial_rotary_factor", 1.0)) != 1.0:
        return f"partial rotary embedding (factor {config['partial_rotary_factor']}) is not supported by the fused graph"
    return None


def rope_factor(config: dict) -> float:
    scaling = config.get("rope_scaling") or {}
    return float(scaling.get("factor", 1.0)) if scaling.get("rope_type", scaling.get("type")) == "linear" else 1.0


def llama_layer(b: GraphBuilder, i: int, pending: str | None, residual: str, rotary: tuple[str, str],
                window: int | None, w: dict[str, np.ndarray | None]) -> tuple[str, str]:
    """One decoder layer from its weights `w` (q, k, v, o, gate, up, down, norms; biases and q/k norms or None)."""
    normed, residual = b.add_rms_norm(pending, residual, w["input_layernorm"], f"layer{i}/ln1")
    biases = [w["q_bias"], w["k_bias"], w["v_bias"]] if w.get("q_bias") is not None else None
    head_norms = w.get("q_norm") is not None  # qwen3 normalizes q and k apart, so it needs them split
    if w.get("qkv") is not None:  # phi3: already stacked, and no q/k norms
        q, k, v = b.linear(normed, f"layer{i}/qkv", [w["qkv"]]), "", ""
    else:
        q, k, v = b.qkv(normed, f"layer{i}/qkv", w["q"], w["k"], w["v"], biases, split=head_norms)
    if head_norms:
        q = b.head_norm(q, b.heads, w["q_norm"], f"layer{i}/q_norm")
        k = b.head_norm(k, b.kv_heads, w["k_norm"], f"layer{i}/k_norm")
    attn = b.attention(i, q, k, v, rotary, scale=b.head_dim ** -0.5, window=window)
    pending = b.linear(attn, f"layer{i}/o", [w["o"]])
    normed, residual = b.add_rms_norm(pending, residual, w["post_attention_layernorm"], f"layer{i}/ln2")
    gate_up = [w["gate_up"]] if w.get("gate_up") is not None else [w["gate"], w["up"]]
    return b.gated_mlp(normed, f"layer{i}/mlp", gate_up, w["down"], "silu"), residual


def layer_weights(weights: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray | None]:
    p = f"model.layers.{i}."
    w = {name: weights[p + f"self_attn.{name}_proj.weight"] for name in ("q", "k", "v", "o")}
    w |= {name: weights[p + f"mlp.{name}_proj.weight"] for name in ("gate", "up", "down")}
    w |= {name: weights[p + f"{name}.weight"] for name in ("input_layernorm", "post_attention_layernorm")}
    w |= {f"{x}_bias": weights.get(p + f"self_attn.{x}_proj.bias") for x in "qkv"}
    w |= {f"{x}_norm": weights.get(p + f"self_attn.{x}_norm.weight") for x in "qk"}
    return w


def decoder(b: GraphBuilder, weights_of_layer) -> None:
    """Embedding, the layers, the final norm and the LM head: the whole llama-style graph."""
    rotary = b.rotary_cache(float(b.c.get("rope_theta", 10000.0)), rope_factor(b.c))
    residual, pending = b.embed(b.w["model.embed_tokens.weight"]), None
    for i, window in enumerate(layer_windows(b.c)):
        pending, residual = llama_layer(b, i, pending, residual, rotary, window, weights_of_layer(b.w, i))
    normed, _ = b.add_rms_norm(pending, residual, b.w["model.norm.weight"], "final_norm")
    tied = b.c.get("tie_word_embeddings") or "lm_head.weight" not in b.w
    b.logits(normed, None if tied else b.w["lm_head.weight"])


def build(b: GraphBuilder) -> None:
    decoder(b, layer_weights)
