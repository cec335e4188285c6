"""The node vocabulary of edgelm's fused decoder graphs, shared by every family.

optimum's graph spells attention, rotary embedding and RMSNorm out in primitive ops: about
3,000 nodes for SmolLM2 after onnxruntime's own fusions, and at one token a step the cost of
running that many small kernels is as large as the matrix work. A fused graph writes each
layer with onnxruntime's contrib ops instead (about a dozen nodes a layer). This file holds
the blocks; a family file (fused_llama.py, fused_gemma3.py, fused_phi3.py) says how its
layers put them together:

    add_rms_norm   SkipSimplifiedLayerNormalization: residual += pending, then RMSNorm
    rms_norm       SimplifiedLayerNormalization (Gemma's norms after attention and MLP)
    linear         one MatMul for several matrices stacked (q, k, v; gate, up), Add for biases
    head_norm      RMSNorm over each head (q/k norms), before rotary
    attention      GroupQueryAttention: rotary inside, past and present in one buffer, a sliding window
    gated_mlp      MatMul (gate, up in one) -> act(gate) * up -> MatMul
    rotary_cache   cos/sin tables for one rope theta
    logits         the LM head on the last num_logits_to_keep positions, softcapped if asked

The interface is the one optimum exports (input_ids, attention_mask, past_key_values.N.key/value
-> logits, present.N.key/value, plus num_logits_to_keep), so the runtime needs nothing new.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .logits_slice import INPUT as KEEP_INPUT

MS = "com.microsoft"
ACTIVATIONS = ("silu", "gelu_pytorch_tanh")  # hidden_act values gated_mlp writes
KV_DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}  # the KV cache, as the manifest names it


def load_weights(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's safetensors files as float32 numpy (bf16 and fp16 included)."""
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update({k: v.float().numpy() for k, v in load_file(str(path)).items()})
    return tensors


def shape_reason(config: dict) -> str | None:
    """Why GroupQueryAttention cannot take this model's heads, or None."""
    heads = config["num_attention_heads"]
    if config["hidden_size"] % heads and not config.get("head_dim"):
        return "hidden_size is not a multiple of num_attention_heads"
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if head_dim % 16:
        return f"GroupQueryAttention needs a head size that is a multiple of 16, this model has {head_dim}"
    if heads % (config.get("num_key_value_heads") or heads):
        return "num_attention_heads is not a multiple of num_key_value_heads"
    return None


def layer_windows(config: dict) -> list[int | None]:
    """Each layer's sliding window (keys a query sees, itself included), None for global attention."""
    window = config.get("sliding_window")
    types = config.get("layer_types")
    if types is None:  # mistral, phi3: the window, when set, applies to every layer
        return [window] * config["num_hidden_layers"]
    return [window if kind == "sliding_attention" else None for kind in types]


class GraphBuilder:
    """Collects nodes and initializers; the graph inputs and the attention bookkeeping are made up front."""

    def __init__(self, config: dict, weights: dict[str, np.ndarray], kv_dtype: str = "float32"):
        if kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype {kv_dtype!r} is not one of {', '.join(KV_DTYPES)}")
        self.c, self.w = config, weights
        self.kv_type = KV_DTYPES[kv_dtype]  # the cache's element type; attention runs in it
        self.heads = config["num_attention_heads"]
        self.kv_heads = config.get("num_key_value_heads") or self.heads
        self.head_dim = config.get("head_dim") or config["hidden_size"] // self.heads
        self.layers = config["num_hidden_layers"]
        self.eps = float(config.get("rms_norm_eps", 1e-6))
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        ]
        past_shape = ["batch_size", self.kv_heads, "past_sequence_length", self.head_dim]
        for i in range(self.layers):
            for kind in ("key", "value"):
                self.inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", self.kv_type, past_shape))
        self.inputs.append(helper.make_tensor_value_info(KEEP_INPUT, TensorProto.INT64, [1]))

        # GroupQueryAttention wants, per sequence, the index of its last token, and the total length (int32)
        self.const("axis_1", np.array([1], dtype=np.int64))
        self.const("one", np.array(1, dtype=np.int64))
        self.node("ReduceSum", ["attention_mask", "axis_1"], ["mask_sum"], keepdims=0)
        self.node("Sub", ["mask_sum", "one"], ["seqlens_k_64"])
        self.node("Cast", ["seqlens_k_64"], ["seqlens_k"], to=TensorProto.INT32)
        self.node("Shape", ["attention_mask"], ["mask_shape"])
        self.node("Gather", ["mask_shape", "one"], ["total_len_64"], axis=0)
        self.node("Cast", ["total_len_64"], ["total_sequence_length"], to=TensorProto.INT32)

    # -- primitives ---------------------------------------------------------------------------
    def weight(self, name: str, array: np.ndarray) -> str:
        return self.const(name, np.asarray(array, dtype=np.float32))

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], domain: str = "", **attrs) -> list[str]:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0] + "/" + op, domain=domain, **attrs))
        return outputs

    # -- blocks -------------------------------------------------------------------------------
    def embed(self, table: np.ndarray, scale: float | None = None) -> str:
        """Token embeddings (batch, seq, hidden), times `scale` if given (Gemma's sqrt(hidden))."""
        hidden = self.node("Gather", [self.weight("model.embed_tokens.weight", table), "input_ids"], ["embeddings"])[0]
        if scale is None:
            return hidden
        return self.node("Mul", [hidden, self.weight("embed_scale", np.array(scale, np.float32))], ["embeddings/scaled"])[0]

    def linear(self, x: str, name: str, matrices: list[np.ndarray], biases: list[np.ndarray] | None = None) -> str:
        """x @ W.T (+ b) for one or several (out, in) matrices stacked along the output axis."""
        stacked = np.concatenate(matrices, axis=0).T  # (in, out), the MatMul weight layout
        out = self.node("MatMul", [x, self.weight(name + ".weight", stacked)], [name + "/out"])[0]
        if biases is None:
            return out
        return self.node("Add", [out, self.weight(name + ".bias", np.concatenate(biases))], [name + "/biased"])[0]

    def split(self, x: str, name: str, sizes: list[int]) -> list[str]:
        """Splits the last axis into parts of `sizes`."""
        self.const(name + "/sizes", np.array(sizes, dtype=np.int64))
        return self.node("Split", [x, name + "/sizes"], [f"{name}/{j}" for j in range(len(sizes))], axis=-1)

    def rms_norm(self, x: str, gamma: np.ndarray, name: str) -> str:
        return self.node("SimplifiedLayerNormalization", [x, self.weight(name + ".weight", gamma)], [name + "/out"],
                         axis=-1, epsilon=self.eps)[0]

    def add_rms_norm(self, pending: str | None, residual: str, gamma: np.ndarray, name: str) -> tuple[str, str]:
        """Adds `pending` (a block's output) into the residual stream and normalizes; returns (normed, residual)."""
        if pending is None:
            return self.rms_norm(residual, gamma, name), residual
        out = self.node("SkipSimplifiedLayerNormalization", [pending, residual, self.weight(name + ".weight", gamma)],
                        [name + "/out", "", "", name + "/sum"], domain=MS, epsilon=self.eps)
        return out[0], out[3]

    def head_norm(self, x: str, heads: int, gamma: np.ndarray, name: str) -> str:
        """RMSNorm over each head of x (batch, seq, heads * head_dim)."""
        split = self.const(name + "/heads", np.array([0, 0, heads, self.head_dim], dtype=np.int64))
        merge = self.const(name + "/merged", np.array([0, 0, heads * self.head_dim], dtype=np.int64))
        per_head = self.node("Reshape", [x, split], [name + "/per_head"])[0]  # (batch, seq, heads, head_dim)
        normed = self.rms_norm(per_head, gamma, name)
        return self.node("Reshape", [normed, merge], [name + "/merged_out"])[0]

    def qkv(self, x: str, name: str, q: np.ndarray, k: np.ndarray, v: np.ndarray,
            biases: list[np.ndarray] | None = None, split: bool = True) -> list[str]:
        """One MatMul for q, k and v: split apart into [q, k, v], each (batch, seq, heads * head_dim), or with
        `split=False` left packed as [qkv, "", ""], the form GroupQueryAttention reads without a Split node
        (one node less per layer: ~10 % faster decode on SmolLM2, where a step is mostly per-node cost)."""
        packed = self.linear(x, name, [q, k, v], biases)
        if not split:
            return [packed, "", ""]
        kv = self.kv_heads * self.head_dim
        return self.split(packed, name + "/split", [self.heads * self.head_dim, kv, kv])

    def attention(self, i: int, q: str, k: str, v: str, rotary: tuple[str, str], scale: float,
                  window: int | None = None, softcap: float | None = None) -> str:
        """GroupQueryAttention for layer i: rotary on q and k, the cache written in place, a sliding window if given.

        `q` may hold q, k and v packed along its last axis, with `k` and `v` empty ("").
        """
        attrs = dict(num_heads=self.heads, kv_num_heads=self.kv_heads, do_rotary=1, rotary_interleaved=0, scale=float(scale))
        if window is not None:
            # transformers lets a query see `window` keys, itself included (kv > q - window); so does
            # onnxruntime 1.32's CPU kernel with local_window_size = window (checked against transformers)
            attrs["local_window_size"] = int(window)
            # and its cache holds only the window: the op evicts older positions itself, so a windowed layer
            # reads at most `window` positions a step however long the sequence (the runtime sizes the buffer)
            attrs["sliding_window_cache"] = 1
        if softcap:
            attrs["softcap"] = float(softcap)
        cos, sin = rotary
        if self.kv_type != TensorProto.FLOAT:  # a half-precision cache: attention takes and gives that type
            q, k, v = (self.node("Cast", [x], [x + "/half"], to=self.kv_type)[0] if x else "" for x in (q, k, v))
        out = self.node(
            "GroupQueryAttention",
            [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", "seqlens_k", "total_sequence_length",
             cos, sin],
            [f"layer{i}/attn", f"present.{i}.key", f"present.{i}.value"], domain=MS, **attrs,
        )
        present_shape = ["batch_size", self.kv_heads, "total_sequence_length", self.head_dim]
        self.outputs += [helper.make_tensor_value_info(f"present.{i}.{kind}", self.kv_type, present_shape)
                         for kind in ("key", "value")]
        if self.kv_type != TensorProto.FLOAT:
            return self.node("Cast", [out[0]], [out[0] + "/float"], to=TensorProto.FLOAT)[0]
        return out[0]

    def gated_mlp(self, x: str, name: str, gate_up: list[np.ndarray], down: np.ndarray, activation: str) -> str:
        """down(act(gate(x)) * up(x)); `gate_up` is [gate, up] or one matrix with gate rows first."""
        inter = down.shape[1]
        gate, up = self.split(self.linear(x, name + "/gate_up", gate_up), name + "/gate_up/split", [inter, inter])
        if activation == "silu":
            self.node("Sigmoid", [gate], [name + "/sigmoid"])
            act = self.node("Mul", [gate, name + "/sigmoid"], [name + "/silu"])[0]
        elif activation == "gelu_pytorch_tanh":
            act = self.node("FastGelu", [gate], [name + "/gelu"], domain=MS)[0]  # the tanh approximation
        else:
            raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
        product = self.node("Mul", [act, up], [name + "/act"])[0]
        return self.linear(product, name + "/down", [down])

    def rotary_cache(self, theta: float, factor: float = 1.0, suffix: str = "") -> tuple[str, str]:
        """cos/sin tables (positions, head_dim / 2) for rotate-half rotary embedding; `factor` is linear scaling.

        Written as nodes on constants (positions * inv_freq -> Cos, Sin), which onnxruntime folds
        into tables once when the session loads: Gemma's 4 tables of 32,768 positions would be
        64 MB of the folder. In float32 as transformers computes them.
        """
        positions = int(self.c.get("max_position_embeddings", 4096))
        exponents = np.arange(0, self.head_dim, 2, dtype=np.float32) / np.float32(self.head_dim)
        inv_freq = (np.float32(1.0) / np.float32(theta) ** exponents / np.float32(factor)).astype(np.float32)
        name = "rope" + suffix
        self.const(name + "/limit", np.array(positions, dtype=np.float32))
        self.const(name + "/zero", np.array(0, dtype=np.float32))
        self.const(name + "/step", np.array(1, dtype=np.float32))
        self.node("Range", [name + "/zero", name + "/limit", name + "/step"], [name + "/positions"])  # (positions,)
        self.const(name + "/axis", np.array([1], dtype=np.int64))
        self.node("Unsqueeze", [name + "/positions", name + "/axis"], [name + "/column"])  # (positions, 1)
        self.node("Mul", [name + "/column", self.weight(name + "/inv_freq", inv_freq)], [name + "/angles"])
        tables = []
        for fn in ("Cos", "Sin"):
            table = fn.lower() + "_cache" + suffix  # (positions, head_dim / 2)
            if self.kv_type == TensorProto.FLOAT:
                tables.append(self.node(fn, [name + "/angles"], [table])[0])
            else:  # GroupQueryAttention takes them in the cache's type
                self.node(fn, [name + "/angles"], [table + "/float"])
                tables.append(self.node("Cast", [table + "/float"], [table], to=self.kv_type)[0])
        return tables[0], tables[1]

    def logits(self, normed: str, head: np.ndarray | None, softcap: float | None = None) -> None:
        """The LM head on the last num_logits_to_keep positions (see logits_slice.py); `head` None: tied to the embedding."""
        self.const("keep_end", np.array([2**62], dtype=np.int64))
        self.node("Neg", [KEEP_INPUT], ["keep_start"])
        kept = self.node("Slice", [normed, "keep_start", "keep_end", "axis_1"], ["final_norm/kept"])[0]
        if head is None:
            head_t = self.node("Transpose", ["model.embed_tokens.weight"], ["lm_head.weight_t"], perm=[1, 0])[0]
        else:
            head_t = self.weight("lm_head.weight_t", head.T)
        if softcap:  # cap * tanh(logits / cap)
            raw = self.node("MatMul", [kept, head_t], ["logits/raw"])[0]
            self.weight("logits/cap", np.array(softcap, np.float32))
            self.node("Div", [raw, "logits/cap"], ["logits/scaled"])
            self.node("Tanh", ["logits/scaled"], ["logits/tanh"])
            self.node("Mul", ["logits/tanh", "logits/cap"], ["logits"])
        else:
            self.node("MatMul", [kept, head_t], ["logits"])
        vocab = self.w["model.embed_tokens.weight"].shape[0]
        logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "kept_positions", vocab])
        self.outputs.insert(0, logits)

    def finish(self, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS, 1)])
        model.ir_version = 9
        return model
