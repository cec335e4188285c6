"""The fused graph for phi3: the llama layer with q, k, v and gate, up already stacked in the checkpoint.

Phi-3's long-context checkpoints scale rotary frequencies per dimension (su / longrope), which
the fused graph does not write: those export through optimum's graph.
"""

from __future__ import annotations

import numpy as np

from . import fused_llama
from .fused_builder import GraphBuilder

MODEL_TYPES = ("phi3",)


def unsupported_reason(config: dict) -> str | None:
    return fused_llama.unsupported_reason(config)


def layer_weights(weights: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray | None]:
    p = f"model.layers.{i}."
    return {
        "qkv": weights[p + "self_attn.qkv_proj.weight"], "o": weights[p + "self_attn.o_proj.weight"],
        "gate_up": weights[p + "mlp.gate_up_proj.weight"], "down": weights[p + "mlp.down_proj.weight"],
        "input_layernorm": weights[p + "input_layernorm.weight"],
        "post_attention_layernorm": weights[p + "post_attention_layernorm.weight"],
    }


def build(b: GraphBuilder) -> None:
    fused_llama.decoder(b, layer_weights)
