"""A prefill graph on the int8 GEMM: int8 activations per row times int8 weights per column.

A prompt chunk is compute-bound, and the fastest matrix kernel ONNX Runtime has on CPUs without
AMX is MLAS's u8 x s8 GEMM (`MatMulInteger`): on a 2-core Xeon with AVX-512 VNNI, SmolLM2's four
shapes at 256 rows took 3.7 ms as the chain below against 6.9 ms for `MatMulNBits` level 0 (fp32)
and 11.1 ms for level 4. So every 4-bit or 8-bit `MatMulNBits` of the int4 graph but the LM head becomes

    x * (1/s)                        SmoothQuant: s per input channel moves activation outliers into W
    r = max|x'| / 127 per row        (Abs, ReduceMax, Mul, Max)
    q = x' / r + 128, rounded, uint8 (Div, Add, Cast)
    y = MatMulIntegerToFloat(q, W8, zero point 128, column scales c) * r

with W8 = Round(diag(s) W / c), c per output column, W the node's own dequantized weights: the
prompt runs the very model the steps run, rounded once more. The activations need their own
scale per row (ONNX Runtime's `DynamicQuantizeMatMul` takes one per tensor, and one outlier row
costs every other row its precision), and a wide row (SmolLM2's down projection, K = 1,536) one per
run of at most GROUP_CHANNELS channels (the runs multiplied as a batch and summed).
SmoothQuant's channel migration (Xiao et al. 2023) is chosen per activation (choose_alpha: the
strength whose int8 products of sampled calibration rows err least); on the Xeon, with one alpha
of 0.5 for all, it took SmolLM2's mean KLD against fp32 on held-out text from 0.103 (none) to 0.075
(decode graph: 0.072). The statistics come from the decode graph on the calibration text.

Consumers of one activation share its scaling and quantizer (q, k and v read one tensor). The
new weights go into `prefill.onnx.data`; the graph's other tensors are still read from the
decode graph's data file. Whether the graph is kept, and on which share of the activations
(Int8PrefillGraphs), is decided in prefill_graph.py (speed and quality on the exporting machine).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgelm.manifest import Manifest

from .int4_blocks import unpack_nibbles
from .quantize import drop_unused_initializers, node_attr

logger = logging.getLogger(__name__)

MS = "com.microsoft"
ALPHA = 0.5  # SmoothQuant's migration strength where nothing better is known
ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # tried per activation (choose_alpha)
RANGE_TOKENS = 2048  # calibration positions the activation ranges are taken over
# a row's channels share one int8 scale in runs of at most this many. SmolLM2's down projection (K = 1,536) errs about
# half as much in 3 runs as in one, but every run adds a (batch, runs, seq, N) product to sum: Gemma 3's K = 640 and
# 1,024 in two runs of 320 / 512 made its chunk 1.5x slower (Split + Sum, or ReduceSum, 17-20 % of its time)
GROUP_CHANNELS = 1024
SAMPLE_ROWS = 256  # of them, rows kept per activation to choose its alpha on
RANGE_CHUNK = 512
ZERO = 128  # the activations' zero point: symmetric int8 levels shifted into uint8 (MLAS's fast path is u8 x s8)


@dataclass
class ActivationStats:
    x_max: np.ndarray  # (K,) max |x| per channel
    sample: np.ndarray  # (rows, K) some of the rows


class Int8PrefillGraphs:
    """Writes int8 prefill graphs for one folder: the statistics and each activation's alpha found once.

    `write(name, share)` converts the activations whose int8 products err least (choose_alpha's
    error on the sampled rows), `share` of them; the others' consumers stay the decode graph's
    MatMulNBits (level 4: activations rounded per block of 32, the steps' own error), so the
    export can trade speed for quality when all of them move the logits too far.
    """

    def __init__(self, folder: Path, manifest: Manifest):
        self.folder, self.manifest = folder, manifest
        model = onnx.load(str(folder / manifest.graph_file), load_external_data=False)
        external = any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
        targets = quantized_linears(model, manifest.vocab_size) if external else []
        self.by_input: dict[str, list[onnx.NodeProto]] = {}
        for node in targets:
            self.by_input.setdefault(node.input[0], []).append(node)
        self.plan: dict[str, tuple[float, np.ndarray, float]] = {}  # activation -> (alpha, s, relative error)
        if not targets:
            return
        tensors = _read_tensors(model, folder, {i for n in targets for i in n.input[1:4] if i})
        try:
            weights = {x: [dequantize_nbits(c, tensors) for c in consumers] for x, consumers in self.by_input.items()}
        except ValueError as exc:  # blocks it cannot read: no int8 graph
            logger.info("int8 prefill: none (%s)", exc)
            return
        stats = activation_statistics(folder, manifest, sorted(self.by_input))
        for x, consumer_weights in weights.items():
            self.plan[x] = choose_alpha(stats[x], consumer_weights)

    def write(self, name: str, share: float = 1.0) -> str | None:
        """Writes graph `name` (+ `name`.data) beside the decode graph; returns `name`.

        None (nothing written) when the decode graph has no MatMulNBits below the LM head, or keeps its
        weights inside the .onnx file.
        """
        if not self.plan:
            return None
        ranked = sorted(self.plan, key=lambda x: self.plan[x][2])
        chosen = ranked[: max(1, round(share * len(ranked)))]
        model = onnx.load(str(self.folder / self.manifest.graph_file), load_external_data=False)
        rewrite_as_int8(model, self.folder, [n for x in chosen for n in self.by_input[x]],
                        {x: self.plan[x][1] for x in chosen})
        data = self.folder / (name + ".data")
        data.unlink(missing_ok=True)
        onnx.save_model(model, str(self.folder / name), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)  # tensors already external stay where they are
        return name

    def alphas(self) -> dict[str, int]:
        """How many activations got each alpha (for the manifest)."""
        counts: dict[str, int] = {}
        for alpha, _, _ in self.plan.values():
            counts[str(alpha)] = counts.get(str(alpha), 0) + 1
        return dict(sorted(counts.items()))


def write_int8_prefill_graph(folder: Path, manifest: Manifest, name: str, share: float = 1.0) -> str | None:
    """One int8 prefill graph `name` in `folder` (Int8PrefillGraphs.write)."""
    return Int8PrefillGraphs(folder, manifest).write(name, share)


def quantized_linears(model: onnx.ModelProto, vocab_size: int) -> list[onnx.NodeProto]:
    """The MatMulNBits nodes the prefill graph computes in int8: all but the LM head (a prompt needs one row of it)."""
    return [n for n in model.graph.node
            if n.op_type == "MatMulNBits" and n.domain == MS and node_attr(n, "N") != vocab_size]


def dequantize_nbits(node: onnx.NodeProto, tensors: dict[str, np.ndarray]) -> np.ndarray:
    """The (K, N) float32 weights a MatMulNBits node multiplies by: scale * (level - zero) per block."""
    k, n, bits, block = (node_attr(node, a) for a in ("K", "N", "bits", "block_size"))
    blocks = -(-k // block)
    packed = tensors[node.input[1]].reshape(n, blocks, block * bits // 8)
    if bits == 4:
        levels = unpack_nibbles(packed)
    elif bits == 8:
        levels = packed
    else:
        raise ValueError(f"MatMulNBits {node.name} has {bits} bits; only 4 and 8 are read")
    scales = tensors[node.input[2]].astype(np.float32).reshape(n, blocks)
    zero_name = node.input[3] if len(node.input) > 3 else ""
    if not zero_name:
        zeros = np.float32(2 ** (bits - 1))
    else:
        z = tensors[zero_name]
        if z.dtype != np.uint8:  # float zero points (HQQ-style): not read here
            raise ValueError(f"MatMulNBits {node.name} has float zero points, which the int8 prefill graph does not read")
        if bits == 4:
            z = unpack_nibbles(z.reshape(n, -1))  # each row padded to whole bytes
        zeros = z.reshape(n, -1)[:, :blocks, None].astype(np.float32)
    weights = (levels.astype(np.float32) - zeros) * scales[..., None]  # (N, blocks, block)
    return np.ascontiguousarray(weights.reshape(n, blocks * block)[:, :k].T)


def smoothing_scales(x_max: np.ndarray, w_max: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """SmoothQuant's s (K,): max|x_j|^alpha / max|W_j|^(1-alpha); 1 where a channel never moved or has no weight."""
    ok = (x_max > 0) & (w_max > 0)
    s = np.where(ok, np.power(np.maximum(x_max, 1e-12), alpha) / np.power(np.maximum(w_max, 1e-12), 1 - alpha), 1.0)
    return np.clip(s, 1e-4, 1e4).astype(np.float32)


def groups_of(k: int) -> int:
    """Runs of at most GROUP_CHANNELS channels a row is rounded in (the fewest that split K evenly)."""
    groups = -(-k // GROUP_CHANNELS)
    while k % groups:
        groups += 1
    return groups


def quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 levels (K, N), float32 scale per column (N,)): w ~= levels * scale."""
    scale = np.abs(w).max(axis=0) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def rewrite_as_int8(model: onnx.ModelProto, folder: Path, targets: list[onnx.NodeProto],
                    scales: dict[str, np.ndarray]) -> None:
    """Replaces `targets` in `model` by the int8 chain (module docstring); drops the initializers left unread.

    `scales` holds SmoothQuant's s (K,) per activation (choose_alpha); one without is left unscaled.
    """
    names = {n.name for n in targets}
    by_input: dict[str, list[onnx.NodeProto]] = {}
    for node in targets:
        by_input.setdefault(node.input[0], []).append(node)
    tensors = _read_tensors(model, folder, {i for n in targets for i in n.input[1:4] if i})
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    new_inits: list[onnx.TensorProto] = [numpy_helper.from_array(np.array(ZERO, np.uint8), "prefill_int8/zero_point"),
                                         numpy_helper.from_array(np.array(1 / 127, np.float32), "prefill_int8/inv127"),
                                         numpy_helper.from_array(np.array(1e-12, np.float32), "prefill_int8/tiny"),
                                         numpy_helper.from_array(np.array(ZERO + 0.5, np.float32), "prefill_int8/zero_half"),
                                         numpy_helper.from_array(np.array(1.0, np.float32), "prefill_int8/one")]
    new_inits += [numpy_helper.from_array(np.array([axis], np.int64), f"prefill_int8/axis{axis}") for axis in (-1, 1)]
    quantizer_of: dict[str, tuple[str, str]] = {}  # activation -> (its uint8 levels, its row scales)
    weights: dict[str, np.ndarray] = {}
    for x, consumers in by_input.items():
        for node in consumers:
            weights[node.name] = dequantize_nbits(node, tensors)
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.name not in names:
            nodes.append(node)
            continue
        x = node.input[0]
        if x not in quantizer_of:
            consumers = by_input[x]
            s = scales[x] if x in scales else np.ones(weights[consumers[0].name].shape[0], np.float32)
            for c in consumers:
                weights[c.name] *= s[:, None]
            chain, new, quantizer_of[x] = _row_quantizer(x, 1.0 / s, groups_of(s.shape[0]), opset)
            nodes += chain
            new_inits += new
        weight = weights.pop(node.name)
        chain, new = _int8_product(node, weight, *quantizer_of[x], groups_of(weight.shape[0]), opset)
        nodes += chain
        new_inits += new
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    drop_unused_initializers(model)  # the replaced 4-bit blocks
    model.graph.initializer.extend(new_inits)


def _reduce_max(x: str, out: str, opset: int) -> onnx.NodeProto:
    """ReduceMax over the last axis, kept, as the graph's opset spells it (the axes an input from 18 on)."""
    if opset >= 18:
        return helper.make_node("ReduceMax", [x, "prefill_int8/axis-1"], [out], keepdims=1)
    return helper.make_node("ReduceMax", [x], [out], axes=[-1], keepdims=1)


def _row_quantizer(x: str, inverse_s: np.ndarray, groups: int, opset: int) -> tuple[list, list, tuple[str, str]]:
    """Nodes turning activation `x` (batch, seq, K) into uint8 levels and scales, after dividing by s.

    One group: levels (batch, seq, K), a scale per row (batch, seq, 1). More: each row's K channels
    in `groups` runs of its own scale, levels (batch, groups, seq, K / groups) and scales
    (batch, groups, seq, 1), ready for one batched MatMulInteger per group.
    """
    p = "prefill_int8/" + re.sub(r"[^A-Za-z0-9_.]", "_", x)
    k = inverse_s.shape[0]
    inits = [numpy_helper.from_array(inverse_s.astype(np.float32), p + "/inverse_s")]
    nodes = [helper.make_node("Mul", [x, p + "/inverse_s"], [p + "/smoothed"])]
    source = p + "/smoothed"
    if groups > 1:
        inits.append(numpy_helper.from_array(np.array([0, 0, groups, k // groups], np.int64), p + "/group_shape"))
        nodes.append(helper.make_node("Reshape", [source, p + "/group_shape"], [p + "/grouped"]))
        source = p + "/grouped"
    levels, scale = p + "/levels", p + "/row_scale"
    nodes += [
        helper.make_node("Abs", [source], [p + "/abs"]),
        _reduce_max(p + "/abs", p + "/max", opset),
        helper.make_node("Mul", [p + "/max", "prefill_int8/inv127"], [p + "/max127"]),
        helper.make_node("Max", [p + "/max127", "prefill_int8/tiny"], [scale]),
        helper.make_node("Div", [source, scale], [p + "/scaled"]),
        # + 128.5 then Cast's truncation: x / r + 128 rounded half up, in 1..255 (a Round node cost 4 % of a chunk)
        helper.make_node("Add", [p + "/scaled", "prefill_int8/zero_half"], [p + "/shifted"]),
        helper.make_node("Cast", [p + "/shifted"], [levels], to=TensorProto.UINT8),
    ]
    if groups > 1:  # (batch, seq, groups, .) -> (batch, groups, seq, .)
        nodes += [helper.make_node("Transpose", [levels], [p + "/group_levels"], perm=[0, 2, 1, 3]),
                  helper.make_node("Transpose", [scale], [p + "/group_scale"], perm=[0, 2, 1, 3])]
        levels, scale = p + "/group_levels", p + "/group_scale"
    for node in nodes:
        node.name = node.output[0]
    return nodes, inits, (levels, scale)


def _int8_product(node: onnx.NodeProto, weights: np.ndarray, levels: str, scale: str, groups: int,
                  opset: int) -> tuple[list, list]:
    """MatMulInteger of the shared levels by this node's int8 columns, scaled back to `node`'s output (+ its bias).

    With groups, the weights are split along K to match the levels, and the groups' products summed.
    """
    p = "prefill_int8/" + re.sub(r"[^A-Za-z0-9_.]", "_", node.name)
    w8, column_scale = quantize_columns(weights)
    if groups > 1:
        k, n = w8.shape
        w8 = np.ascontiguousarray(w8.reshape(groups, k // groups, n))
    bias = node.input[5] if len(node.input) > 5 and node.input[5] else None
    scaled_out = p + "/scaled" if bias else node.output[0]
    # the GEMM's output stage casts and scales the columns (MLAS's u8 x s8 kernel, as MatMulInteger's); the rows after
    product = helper.make_node("MatMulIntegerToFloat", [levels, p + "/weight", "prefill_int8/one", p + "/column_scale",
                                                        "prefill_int8/zero_point"], [p + "/columns"], domain=MS)
    if groups > 1:  # the runs' products (batch, groups, seq, N) summed: Split + Sum (ReduceSum: a little slower)
        parts = [f"{p}/part{g}" for g in range(groups)]
        split = (helper.make_node("Split", [p + "/rows"], parts, axis=1, num_outputs=groups) if opset >= 18
                 else helper.make_node("Split", [p + "/rows"], parts, axis=1))
        nodes = [product, helper.make_node("Mul", [p + "/columns", scale], [p + "/rows"]), split,
                 helper.make_node("Sum", parts, [p + "/summed"]),
                 helper.make_node("Squeeze", [p + "/summed", "prefill_int8/axis1"], [scaled_out])]
    else:
        nodes = [product, helper.make_node("Mul", [p + "/columns", scale], [scaled_out])]
    if bias:
        nodes.append(helper.make_node("Add", [scaled_out, bias], [node.output[0]]))
    for n in nodes:
        n.name = n.output[0] + "/" + n.op_type
    return nodes, [numpy_helper.from_array(w8, p + "/weight"), numpy_helper.from_array(column_scale, p + "/column_scale")]


def activation_statistics(folder: Path, manifest: Manifest, activations: list[str]) -> dict[str, ActivationStats]:
    """Each activation's max |x| per channel over RANGE_TOKENS of the calibration text, and SAMPLE_ROWS of its rows.

    The decode graph computes them (its inputs tapped as extra outputs), as the prefill graph will see them.
    """
    from tokenizers import Tokenizer

    from edgelm.session import make_session

    from .calibration import calibration_text, empty_cache_feeds

    model = onnx.load(str(folder / manifest.graph_file), load_external_data=False)
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(a, TensorProto.FLOAT, None)
                              for a in activations if a not in outputs)
    tapped = folder / (".tapped-" + manifest.graph_file)
    onnx.save(model, str(tapped))  # reads the decode graph's data file, as the prefill graph will
    try:
        session = make_session(tapped)
        tokenizer = Tokenizer.from_file(str(folder / manifest.tokens.tokenizer_file))
        ids = np.array([tokenizer.encode(calibration_text()).ids[:RANGE_TOKENS]])
        chunk = min(RANGE_CHUNK, manifest.context_length)
        pieces = list(range(0, ids.shape[1], chunk))
        stats: dict[str, ActivationStats] = {}
        for start in pieces:
            values = session.run(activations, empty_cache_feeds(session, manifest, ids[:, start : start + chunk]))
            for name, value in zip(activations, values):
                rows = value.reshape(-1, value.shape[-1])
                sample = rows[:: max(1, len(rows) * len(pieces) // SAMPLE_ROWS)]
                if name in stats:
                    stats[name] = ActivationStats(np.maximum(stats[name].x_max, np.abs(rows).max(axis=0)),
                                                  np.concatenate([stats[name].sample, sample]))
                else:
                    stats[name] = ActivationStats(np.abs(rows).max(axis=0), sample)
        del session
    finally:
        tapped.unlink(missing_ok=True)
    logger.info("int8 prefill: statistics of %d activations over %d positions", len(activations), ids.shape[1])
    return stats


def choose_alpha(stats: ActivationStats, weights: list[np.ndarray]) -> tuple[float, np.ndarray, float]:
    """(alpha, s, error): the migration strength of ALPHAS whose int8 products of the sampled rows err least.

    The error is the squared difference to the exact products, summed over the consumers `weights`
    (each (K, N)), relative to their squared size: the rounding of rows and columns both count.
    """
    x = stats.sample.astype(np.float32)
    w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    exact = [x @ w for w in weights]
    best = (np.inf, ALPHA, np.ones_like(w_max))
    for alpha in ALPHAS:
        s = smoothing_scales(stats.x_max, w_max, alpha)
        smoothed = (x / s).reshape(len(x), groups_of(len(s)), -1)
        row_scale = np.abs(smoothed).max(axis=-1, keepdims=True) / 127
        row_scale[row_scale == 0] = 1
        rounded = (np.rint(smoothed / row_scale) * row_scale).reshape(x.shape)  # the levels back in units of x / s
        error = 0.0
        for w, y in zip(weights, exact):
            w8, column_scale = quantize_columns(w * s[:, None])
            error += float(np.square((rounded @ w8.astype(np.float32)) * column_scale - y).sum())
        error /= sum(float(np.square(y).sum()) for y in exact) or 1.0
        if error < best[0]:
            best = (error, alpha, s)
    return best[1], best[2], best[0]


def _read_tensors(model: onnx.ModelProto, folder: Path, names: set[str]) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t, base_dir=str(folder)) for t in model.graph.initializer if t.name in names}

