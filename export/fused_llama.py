"""A fused ONNX graph for Llama-style decoders, built straight from the weights.

optimum's graph spells attention, rotary embedding and RMSNorm out in primitive ops: about
3,000 nodes for SmolLM2 after onnxruntime's own fusions, and at one token a step the cost of
running that many small kernels is as large as the matrix work. This builder writes each layer
with onnxruntime's fused contrib ops instead (about 11 nodes a layer):

    SkipSimplifiedLayerNormalization -> MatMul (q, k, v in one) -> GroupQueryAttention (rotary inside)
    -> MatMul -> SkipSimplifiedLayerNormalization -> MatMul (gate, up in one) -> SiLU * up -> MatMul

The interface is the one optimum exports (input_ids, attention_mask, past_key_values.N.key/value
-> logits, present.N.key/value, plus num_logits_to_keep), so the runtime needs nothing new.
Architectures or settings it does not cover return a reason, and export uses optimum's graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .logits_slice import INPUT as KEEP_INPUT
from .quantize import save_graph

SUPPORTED = ("llama", "mistral")
MS = "com.microsoft"


def unsupported_reason(config: dict) -> str | None:
    """Why this config cannot use the fused graph, or None when it can."""
    if config.get("model_type") not in SUPPORTED:
        return f"model_type {config.get('model_type')!r} is not one of {', '.join(SUPPORTED)}"
    scaling = config.get("rope_scaling") or {}
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        return f"rope scaling {scaling} is not supported by the fused graph"
    if config.get("attention_bias") or config.get("mlp_bias"):
        return "attention or MLP biases are not supported by the fused graph"
    if config.get("model_type") == "mistral" and config.get("sliding_window"):
        return "Mistral's sliding window is not supported by the fused graph"
    if config.get("hidden_act", "silu") != "silu":
        return f"activation {config.get('hidden_act')!r} is not supported by the fused graph"
    heads = config["num_attention_heads"]
    if config["hidden_size"] % heads and not config.get("head_dim"):
        return "hidden_size is not a multiple of num_attention_heads"
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if head_dim % 16:
        return f"GroupQueryAttention needs a head size that is a multiple of 16, this model has {head_dim}"
    return None


def build_fused_llama(hf_folder: Path, out_path: Path) -> Path:
    """Writes the fused fp32 graph for the model in `hf_folder` to `out_path` (with external data)."""
    config = json.loads((hf_folder / "config.json").read_text())
    weights = _load_weights(hf_folder)
    builder = _Builder(config, weights)
    model = builder.build()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_graph(model, out_path)
    return out_path


def _load_weights(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's safetensors files as float32 numpy (bf16 and fp16 included)."""
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update({k: v.float().numpy() for k, v in load_file(str(path)).items()})
    return tensors


class _Builder:
    def __init__(self, config: dict, weights: dict[str, np.ndarray]):
        self.c = config
        self.w = weights
        self.heads = config["num_attention_heads"]
        self.kv_heads = config.get("num_key_value_heads") or self.heads
        self.head_dim = config.get("head_dim") or config["hidden_size"] // self.heads
        self.layers = config["num_hidden_layers"]
        self.eps = float(config.get("rms_norm_eps", 1e-6))
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    # -- helpers ----------------------------------------------------------------------------
    def weight(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], domain: str = "", **attrs) -> list[str]:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0] + "/" + op, domain=domain, **attrs))
        return outputs

    def linear(self, x: str, name: str, matrices: list[np.ndarray]) -> str:
        """x @ W.T for one or several (out, in) matrices stacked along the output axis."""
        stacked = np.concatenate(matrices, axis=0).T  # (in, out), the MatMul weight layout
        return self.node("MatMul", [x, self.weight(name + ".weight", stacked)], [name + "/out"])[0]

    # -- graph ------------------------------------------------------------------------------
    def build(self) -> onnx.ModelProto:
        p = "model.layers.{}."
        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        ]
        outputs = []
        kv_shape = ["batch_size", self.kv_heads, "past_sequence_length", self.head_dim]
        present_shape = ["batch_size", self.kv_heads, "total_sequence_length", self.head_dim]
        for i in range(self.layers):
            for kind in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, kv_shape))
        inputs.append(helper.make_tensor_value_info(KEEP_INPUT, TensorProto.INT64, [1]))

        # GroupQueryAttention wants, per sequence, the index of its last token, and the total length (int32)
        self.inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"))
        self.inits.append(numpy_helper.from_array(np.array(1, dtype=np.int64), "one"))
        self.node("ReduceSum", ["attention_mask", "axis_1"], ["mask_sum"], keepdims=0)
        self.node("Sub", ["mask_sum", "one"], ["seqlens_k_64"])
        self.node("Cast", ["seqlens_k_64"], ["seqlens_k"], to=TensorProto.INT32)
        self.node("Shape", ["attention_mask"], ["mask_shape"])
        self.node("Gather", ["mask_shape", "one"], ["total_len_64"], axis=0)
        self.node("Cast", ["total_len_64"], ["total_sequence_length"], to=TensorProto.INT32)
        cos, sin = self.rotary_cache()

        embed = self.w["model.embed_tokens.weight"]  # (vocab, hidden)
        hidden = self.node("Gather", [self.weight("model.embed_tokens.weight", embed), "input_ids"], ["embeddings"])[0]
        residual, pending = hidden, None  # pending: the last block's output, not yet added to the residual
        for i in range(self.layers):
            n = p.format(i)
            normed, residual = self.rms_norm(pending, residual, self.w[n + "input_layernorm.weight"], f"layer{i}/ln1")
            qkv = self.linear(normed, f"layer{i}/qkv", [self.w[n + f"self_attn.{x}_proj.weight"] for x in "qkv"])
            attn = self.node(
                "GroupQueryAttention",
                [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", "seqlens_k",
                 "total_sequence_length", cos, sin],
                [f"layer{i}/attn", f"present.{i}.key", f"present.{i}.value"],
                domain=MS, num_heads=self.heads, kv_num_heads=self.kv_heads, do_rotary=1, rotary_interleaved=0,
                scale=float(self.head_dim ** -0.5),
            )[0]
            pending = self.linear(attn, f"layer{i}/o", [self.w[n + "self_attn.o_proj.weight"]])
            normed, residual = self.rms_norm(pending, residual, self.w[n + "post_attention_layernorm.weight"], f"layer{i}/ln2")
            gate_up = self.linear(normed, f"layer{i}/gate_up", [self.w[n + "mlp.gate_proj.weight"], self.w[n + "mlp.up_proj.weight"]])
            inter = self.c["intermediate_size"]
            self.inits.append(numpy_helper.from_array(np.array([inter, inter], dtype=np.int64), f"layer{i}/split"))
            gate, up = self.node("Split", [gate_up, f"layer{i}/split"], [f"layer{i}/gate", f"layer{i}/up"], axis=-1)
            self.node("Sigmoid", [gate], [f"layer{i}/sigmoid"])
            self.node("Mul", [gate, f"layer{i}/sigmoid"], [f"layer{i}/silu"])
            self.node("Mul", [f"layer{i}/silu", up], [f"layer{i}/act"])
            pending = self.linear(f"layer{i}/act", f"layer{i}/down", [self.w[n + "mlp.down_proj.weight"]])
            outputs += [helper.make_tensor_value_info(f"present.{i}.{k}", TensorProto.FLOAT, present_shape)
                        for k in ("key", "value")]
        normed, _ = self.rms_norm(pending, residual, self.w["model.norm.weight"], "final_norm")

        # logits for the last num_logits_to_keep positions only (see logits_slice.py)
        self.inits += [numpy_helper.from_array(np.array([2**62], dtype=np.int64), "keep_end")]
        self.node("Neg", [KEEP_INPUT], ["keep_start"])
        self.node("Slice", [normed, "keep_start", "keep_end", "axis_1"], ["final_norm/kept"])
        head = self.w.get("lm_head.weight")
        if head is None or self.c.get("tie_word_embeddings"):
            head_t = self.node("Transpose", ["model.embed_tokens.weight"], ["lm_head.weight_t"], perm=[1, 0])[0]
        else:
            head_t = self.weight("lm_head.weight_t", head.T)
        self.node("MatMul", ["final_norm/kept", head_t], ["logits"])
        outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                        ["batch_size", "kept_positions", embed.shape[0]]))
        graph = helper.make_graph(self.nodes, "edgelm-fused-llama", inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS, 1)])
        model.ir_version = 9
        return model

    def rms_norm(self, pending: str | None, residual: str, gamma: np.ndarray, name: str) -> tuple[str, str]:
        """Adds `pending` into the residual stream and normalizes it; returns (normed, new residual)."""
        g = self.weight(name + ".weight", gamma)
        if pending is None:
            out = self.node("SimplifiedLayerNormalization", [residual, g], [name + "/out"], axis=-1, epsilon=self.eps)
            return out[0], residual
        out = self.node("SkipSimplifiedLayerNormalization", [pending, residual, g],
                        [name + "/out", "", "", name + "/sum"], domain=MS, epsilon=self.eps)
        return out[0], out[3]

    def rotary_cache(self) -> tuple[str, str]:
        """cos/sin tables (positions, head_dim / 2) for rotate-half rotary embedding."""
        theta = float(self.c.get("rope_theta", 10000.0))
        positions = int(self.c.get("max_position_embeddings", 4096))
        inv_freq = 1.0 / theta ** (np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim)
        angles = np.outer(np.arange(positions, dtype=np.float64), inv_freq)
        return self.weight("cos_cache", np.cos(angles)), self.weight("sin_cache", np.sin(angles))
