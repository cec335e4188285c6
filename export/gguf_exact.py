"""Precision `gguf`: the GGUF file's own quantized weights in the ONNX graph, not one value changed.

Re-quantizing weights that a GGUF already holds in 4 bits rounds them a second time
(SmolLM2 perplexity 16.52 -> 20.46 with round-to-nearest int4). Instead, every MatMul of the
fp32 graph whose weight columns are GGUF rows (see gguf_rows.py) becomes a `MatMulNBits` that
holds the GGUF's integer levels and block scales as they are:

- types with `w = d * (q - z)` (Q4_0, Q5_0, Q8_0, Q6_K) map exactly: 4-bit levels with the
  default zero 8, or 8-bit levels shifted so that the zero is the default 128;
- types with `w = d * q + m` (Q4_1, Q5_1, Q4_K, Q5_K) keep their levels with zero 0 and add
  the offsets back: `y = x @ (d * q) + blocksum(x) @ m`, where blocksum(x) sums x over each
  block of 32 inputs (extra output columns of the same MatMulNBits, split off) and `m` is (blocks,
  outputs) in fp32;
- a token embedding of an offset-free type becomes `GatherBlockQuantized` on the same levels.

A MatMul whose columns mix types gets the widest levels and the smallest block of its parts,
which represents each part exactly. Weights the GGUF holds in float stay float.

Accuracy level 4 (int8 activations, the fast CPU kernels) is the only inexact step left. The
attention projections are the most sensitive to it, so their 4-bit blocks compute in fp32
(level 0). Measured on the 512 reference tokens (source perplexity in brackets): SmolLM2 Q4_1
16.62 -> 16.49 (16.52), KLD 0.0032 -> 0.0021; Gemma 3 Q4_K_M, whose q/k/v are 8-bit and o 4-bit,
73.50 -> 72.70 (72.64), KLD 0.0027 -> 0.0025; decode speed within the noise. 8-bit blocks stay
at level 4, because level 0 has no packed 8-bit kernel (Gemma 3's decode halved with its q/k/v
there), and so do the MLP's 4-bit blocks (SmolLM2 decode -20 % with every 4-bit block at level 0).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .gguf_blocks import OFFSET_BLOCK, BlockWeights
from .gguf_rows import GGUFRows, read_gguf_rows
from .quantize import drop_unused_initializers, materialize_transposed_weights, save_graph

MS = "com.microsoft"
# the attention projections, by GGUF name (blk.0.attn_q.weight) or, in GGUFs written from HF names, by those
ATTENTION = re.compile(r"(^|\.)(attn_(q|k|v|qkv|output)|self_attn\.(q|k|v|qkv|o)_proj)\.weight$")


class _Encoded:
    """One matrix (N outputs x K inputs) in MatMulNBits' terms: levels, scales, zeros, offsets."""

    def __init__(self, parts: list[tuple[BlockWeights, np.ndarray]], rows: int, cols: int):
        self.bits = 8 if any(p.bits == 8 for p, _ in parts) else 4
        self.block = min(p.block for p, _ in parts)
        blocks = cols // self.block
        self.levels = np.empty((rows, cols), dtype=np.uint8)
        self.scales = np.empty((rows, blocks), dtype=np.float32)
        zeros = np.empty((rows, blocks), dtype=np.uint8)
        offsets = np.zeros((rows, cols // OFFSET_BLOCK), dtype=np.float32)
        has_offsets = False
        for part, where in parts:
            self.scales[where] = np.repeat(part.scales, part.block // self.block, axis=1)
            if self.bits == 8:  # shift so that the zero is 128, the default: no zero-point input
                self.levels[where] = (part.levels.astype(np.int16) - part.zero + 128).astype(np.uint8)
                zeros[where] = 128
            else:
                self.levels[where] = part.levels
                zeros[where] = part.zero
            if part.offsets is not None:
                offsets[where] = part.offsets
                has_offsets = True
        default = 8 if self.bits == 4 else 128
        self.zeros = None if (zeros == default).all() else zeros
        self.offsets = offsets if has_offsets else None
        self.types = sorted({p.gguf_type for p, _ in parts})

    def append_block_sums(self) -> int:
        """Adds one output column per 32 inputs whose weights are 1 inside that block and 0 elsewhere.

        The MatMul then also returns blocksum(x), which the offsets need, without a second pass
        over x (and, at accuracy level 4, from the same int8 activations as the main product).
        1 and 0 are exact in every encoding: levels zero + 1 and zero with scale 1. Returns how
        many columns were added.
        """
        rows, cols = self.levels.shape
        sums = cols // OFFSET_BLOCK
        inside = np.kron(np.eye(sums, dtype=np.uint8), np.ones((1, OFFSET_BLOCK), np.uint8))  # (sums, cols)
        zero = 128 if self.bits == 8 else (8 if self.zeros is None else 0)
        self.levels = np.concatenate([self.levels, (inside + zero).astype(np.uint8)])
        self.scales = np.concatenate([self.scales, np.ones((sums, self.scales.shape[1]), np.float32)])
        if self.zeros is not None:
            self.zeros = np.concatenate([self.zeros, np.zeros((sums, self.zeros.shape[1]), np.uint8)])
        return sums

    def packed_levels(self) -> np.ndarray:
        """(N, blocks, block * bits / 8) uint8: for 4 bits, weight 2i in the low nibble, 2i + 1 in the high."""
        rows, cols = self.levels.shape
        grouped = self.levels.reshape(rows, cols // self.block, self.block)
        if self.bits == 8:
            return grouped
        return grouped[..., 0::2] | (grouped[..., 1::2] << 4)

    def packed_zeros(self) -> np.ndarray:
        """Per-block zero levels: one byte each for 8 bits, two per byte (low nibble first) for 4 bits."""
        if self.bits == 8:
            return self.zeros.reshape(-1)
        zeros = self.zeros
        if zeros.shape[1] % 2:
            zeros = np.concatenate([zeros, np.zeros((zeros.shape[0], 1), np.uint8)], axis=1)
        return (zeros[:, 0::2] | (zeros[:, 1::2] << 4)).reshape(-1)


class _Rewriter:
    def __init__(self, model: onnx.ModelProto, rows: GGUFRows, accuracy_level: int):
        self.model, self.rows, self.accuracy_level = model, rows, accuracy_level
        self.inits = {i.name: i for i in model.graph.initializer}
        self.new_inits: list[onnx.TensorProto] = []
        self.report = {"matmuls": Counter(), "offset_corrections": 0, "float_matmuls": [], "embedding": "float",
                       "fp32_compute": 0}

    def const(self, name: str, array: np.ndarray) -> str:
        if name not in self.inits:
            tensor = numpy_helper.from_array(np.ascontiguousarray(array), name)
            self.inits[name] = tensor
            self.new_inits.append(tensor)
        return name

    def rewrite(self) -> None:
        nodes = []
        for node in self.model.graph.node:
            weight = self._initializer(node, 1 if node.op_type == "MatMul" else 0)
            if node.op_type == "MatMul" and weight is not None and weight.ndim == 2:
                nodes += self._matmul(node, weight) or [node]
            elif node.op_type == "Gather" and weight is not None and weight.ndim == 2:
                nodes += self._gather(node, weight) or [node]
            else:
                nodes.append(node)
        del self.model.graph.node[:]
        self.model.graph.node.extend(nodes)
        self.model.graph.initializer.extend(self.new_inits)
        drop_unused_initializers(self.model)

    def _initializer(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        if node.op_type not in ("MatMul", "Gather") or len(node.input) <= index or node.input[index] not in self.inits:
            return None
        return numpy_helper.to_array(self.inits[node.input[index]])

    def _matmul(self, node: onnx.NodeProto, weight: np.ndarray) -> list[onnx.NodeProto] | None:
        """x @ W with W (K, N) whose columns are GGUF rows -> MatMulNBits (+ the offset correction)."""
        cols, rows = weight.shape
        found = self.rows.locate(weight.T)
        if found is None:
            self.report["float_matmuls"].append(node.name or node.output[0])
            return None
        enc = _Encoded(self.rows.gather(found), rows, cols)
        sums = enc.append_block_sums() if enc.offsets is not None else 0
        name = node.input[1]
        inputs = [node.input[0], self.const(f"{name}_gguf_levels", enc.packed_levels()),
                  self.const(f"{name}_gguf_scales", enc.scales.reshape(-1))]
        if enc.zeros is not None:
            inputs.append(self.const(f"{name}_gguf_zeros", enc.packed_zeros()))
        out = node.output[0]
        main = out if enc.offsets is None else f"{out}/gguf_main_and_sums"
        level = self._level(enc, {tensor for tensor, _ in found})
        nodes = [helper.make_node("MatMulNBits", inputs, [main], name=f"{out}/MatMulNBits", domain=MS, K=cols, N=rows + sums,
                                  bits=enc.bits, block_size=enc.block, accuracy_level=level)]
        self.report["matmuls"][f"{'+'.join(enc.types)} -> {enc.bits}-bit blocks of {enc.block}"] += 1
        if enc.offsets is not None:  # y = x @ (d q) + blocksum(x) @ m
            split = self.const(f"gguf_split_{rows}_{sums}", np.array([rows, sums], dtype=np.int64))
            nodes += [
                helper.make_node("Split", [main, split], [f"{out}/gguf_main", f"{out}/gguf_blocksum"], axis=-1,
                                 name=f"{out}/gguf_split"),
                helper.make_node("MatMul", [f"{out}/gguf_blocksum", self.const(f"{name}_gguf_offsets", enc.offsets.T)],
                                 [f"{out}/gguf_offset"], name=f"{out}/gguf_offset"),
                helper.make_node("Add", [f"{out}/gguf_main", f"{out}/gguf_offset"], [out], name=f"{out}/gguf_add"),
            ]
            self.report["offset_corrections"] += 1
        return nodes

    def _level(self, enc: _Encoded, tensors: set[str]) -> int:
        """The accuracy level for one MatMul: 0 for 4-bit attention projections under the default level 4."""
        if self.accuracy_level == 4 and enc.bits == 4 and any(ATTENTION.search(t) for t in tensors):
            self.report["fp32_compute"] += 1
            return 0
        return self.accuracy_level

    def _gather(self, node: onnx.NodeProto, table: np.ndarray) -> list[onnx.NodeProto] | None:
        """An embedding lookup in a table of GGUF rows of an offset-free type -> GatherBlockQuantized."""
        found = self.rows.locate(table)
        if found is None:
            return None
        enc = _Encoded(self.rows.gather(found), *table.shape)
        if enc.offsets is not None or enc.zeros is not None:
            self.report["embedding"] = f"float ({', '.join(enc.types)} has per-block offsets)"
            return None
        name = node.input[0]
        levels = enc.packed_levels().reshape(table.shape[0], -1)  # (vocab, hidden * bits / 8)
        self.report["embedding"] = f"GatherBlockQuantized {enc.bits}bit/{enc.block} ({', '.join(enc.types)})"
        return [helper.make_node(
            "GatherBlockQuantized",
            [self.const(f"{name}_gguf_levels", levels), node.input[1], self.const(f"{name}_gguf_scales", enc.scales)],
            list(node.output), name=f"{node.output[0]}/GatherBlockQuantized", domain=MS,
            gather_axis=0, quantize_axis=1, block_size=enc.block, bits=enc.bits,
        )]


def exact_gguf_graph(src: Path, gguf_path: Path, dst: Path, accuracy_level: int = 4) -> dict:
    """Writes `dst`: the fp32 graph `src` with every GGUF-quantized weight carried over exactly."""
    rows = read_gguf_rows(gguf_path)
    model = onnx.load(str(src))
    materialize_transposed_weights(model)
    rewriter = _Rewriter(model, rows, accuracy_level)
    rewriter.rewrite()
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    save_graph(model, dst)
    report = rewriter.report
    return {
        "method": "GGUF blocks carried over exactly (MatMulNBits levels + scales, offsets added back)",
        "gguf_types": dict(Counter(rows.types.values())),
        "accuracy_level": accuracy_level,
        "fp32_compute_matmuls": report["fp32_compute"],  # 4-bit attention projections at accuracy level 0
        "matmuls": dict(report["matmuls"]),
        "offset_corrections": report["offset_corrections"],
        "float_matmuls": report["float_matmuls"],
        "embedding": report["embedding"],
    }
