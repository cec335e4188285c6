"""An int8 key/value cache for the fused graph: a quarter of a float32 cache's bytes.

int4 exports get it by default where it keeps the model (`kv_dtype=None`: kept if its KLD against
fp32 at long context rises by at most KV_INT8_TOLERANCE, see long_context_scores), gguf exports too
where it pays (float_cache_share); `kv_dtype="int8"` asks for it without that check.

onnxruntime's CPU GroupQueryAttention (1.32) takes an int8 cache with fixed scales, one per kv head
and channel (k/v_quant_type PER_CHANNEL, no zero point), quantizes each new position itself
(rint(x * (1 / scale)), saturated) and dequantizes the rows inside its products. On SmolLM2 int4 at
depth 2,048 a step then reads ~24 MB of cache instead of ~94 MB: 67.7 -> 83.5 tok/s in the harness
(the same int4 folder with and without), at a mean KLD of 0.0674 against the fp32 model over
positions 1,024-2,048 of the evaluation text, against 0.0647 with the float32 cache (per-tensor
scales: 0.070). Gemma 3 270M in the harness: 72.8 -> 93.3 tok/s at depth 2,048, 94.6 -> 109.5 at 0.

The scales are measured, not guessed: the exported decode graph (float32 cache) runs the calibration
text, and each channel's scale is its largest |K| or |V| (K after rotary, as the cache holds it) over
127. Values beyond it saturate. They are written to `kv_scales.npy` (the runtime's prompt path needs
them too) and into the graph as initializers.

The op's int8 path for a multi-token run dequantizes every cached row once per query row: ~3x slower
prompts (SmolLM2 TTFT at 2,048 tokens 3.4 -> 10 s). So the prefill graph keeps a float32 cache
(manifest kv.prefill_dtype; the float32-cache twin of the decode graph when the export had none), and
the runtime runs prompts on a float32 copy of the cache (runtime/kv_quant.py). That twin
(kv.float_graph_file, ~0.1 MB: it shares the decode graph's weight file) is also what a device other
than the CPU runs: edgelm runs the int8 cache on the CPU only, where it was measured and tested.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgelm.manifest import Manifest
from edgelm.session import GraphRunner

from .calibration import calibration_text

logger = logging.getLogger(__name__)

SCALES_FILE = "kv_scales.npy"
FLOAT_GRAPH_FILE = "model-float-kv.onnx"  # the decode graph with its float32 cache, beside the int8 one
KV_INT8_TOLERANCE = 0.005  # nats of mean KLD against fp32 the int8 cache may add (the export's other choices' bound)
GATE_PROMPT, GATE_POSITIONS, GATE_STEP = 1024, 512, 16  # long_context_scores: prompt, positions scored, run length
CALIBRATION_TOKENS = 2048  # positions of calibration text whose K and V set the scales
CHUNK = 256  # positions a run; at most the smallest window, so a windowed layer's every position is seen
MS = "com.microsoft"
KEY_SCALE_INPUT, VALUE_SCALE_INPUT = 12, 13  # GroupQueryAttention's k_scale and v_scale inputs


SHARE_POSITIONS, MIN_CACHE_SHARE = 2048, 0.5  # gguf_cache_pays: the depth looked at, the share that pays


def float_cache_share(manifest: Manifest, weight_bytes: int, positions: int = SHARE_POSITIONS) -> float:
    """The float32 cache's bytes at `positions` (windowed layers hold at most their window) over the weights'.

    A step at depth reads both; quartering the cache pays in proportion to its share. SmolLM2 gguf: 94 MB
    of cache at 2,048 positions against 119 MB of weights (0.79; the int8 cache decoded 1.45x there);
    Gemma 3 270M gguf, 15 of 18 layers windowed at 512: 28 MB against 330 MB (0.09; 1.07x at depth 2,048,
    while its prompts ran 0.75x on the float32-cache twin and the process took 364 MB more).
    """
    kv = manifest.kv
    per_position = 2 * kv.num_kv_heads * kv.head_dim * 4  # key and value, float32
    held = sum(min(window, positions) if window else positions for window in (kv.windows or [0] * kv.num_layers))
    return held * per_position / max(weight_bytes, 1)


def graph_bytes(graph: Path) -> int:
    """A graph's file and its external data file (graph.onnx.data), in bytes."""
    return sum(path.stat().st_size for path in (graph, graph.with_name(graph.name + ".data")) if path.is_file())


def quantize_kv_cache(folder: Path, manifest: Manifest, tokens: int = CALIBRATION_TOKENS,
                      reference: Path | None = None, tolerance: float | None = None) -> dict:
    """Rewrites the folder's decode graph to an int8 cache with calibrated scales; returns what it did.

    The decode graph as it was stays beside it as the float32-cache twin (kv.float_graph_file, the
    same weights: devices without int8 attention run it) and is the prefill graph where the folder
    had none. Updates `manifest` (kv.dtype, kv.scales_file, kv.prefill_dtype, kv.float_graph_file;
    prefill_graph_file). Given the fp32 graph as `reference`, the int8 cache is kept only if its mean
    KLD against it at long context rises by at most `tolerance` (None: KV_INT8_TOLERANCE) over the
    float32 cache's (long_context_scores); otherwise the folder and `manifest` are left with the
    float32 cache.
    """
    tolerance = KV_INT8_TOLERANCE if tolerance is None else tolerance
    amax, seen = _cache_ranges(folder, manifest, tokens)
    scales = (np.maximum(amax, np.float32(1e-6)) / np.float32(127.0)).astype(np.float32)
    graph = folder / manifest.graph_file
    float_manifest = copy.deepcopy(manifest)
    model = onnx.load(str(graph), load_external_data=False)
    onnx.save(model, str(folder / FLOAT_GRAPH_FILE))  # its tensors stay in the decode graph's data file
    rewritten = _int8_cache_graph(model, scales)
    onnx.save(model, str(graph))
    np.save(folder / SCALES_FILE, scales)
    wrote_prefill = manifest.prefill_graph_file is None
    if wrote_prefill:  # prompts attend on a float32 cache: the twin, logits and all
        manifest.prefill_graph_file, manifest.prefill_logits = FLOAT_GRAPH_FILE, True
    kv = manifest.kv
    kv.dtype, kv.prefill_dtype, kv.scales_file, kv.float_graph_file = "int8", "float32", SCALES_FILE, FLOAT_GRAPH_FILE
    record = {"dtype": "int8", "scales": "per kv head and channel, symmetric: max |x| / 127 on calibration text",
              "calibration_tokens": seen, "prefill_graph_written": wrote_prefill, "prefill_dtype": "float32"}
    if reference is not None:
        twin = replace(float_manifest, graph_file=FLOAT_GRAPH_FILE)  # the decode graph's file now holds the int8 one
        scores = long_context_scores(folder, reference, twin, manifest)
        kept = scores["kld"]["int8"] <= scores["kld"]["float32"] + tolerance
        record["choice"] = {**scores, "kept": "int8" if kept else "float32", "tolerance": tolerance,
                            "criterion": "int8 if its mean KLD against the fp32 graph at long context is at most "
                                         "the tolerance above the float32 cache's"}
        if not kept:
            os.replace(folder / FLOAT_GRAPH_FILE, graph)
            (folder / SCALES_FILE).unlink()
            manifest.kv, manifest.prefill_graph_file = float_manifest.kv, float_manifest.prefill_graph_file
            manifest.prefill_logits = float_manifest.prefill_logits
            logger.info("int8 KV cache not kept: long-context KLD %.4f against %.4f with float32",
                        scores["kld"]["int8"], scores["kld"]["float32"])
            return {"dtype": "float32", "choice": record["choice"]}
    logger.info("int8 KV cache: %d attention nodes, scales from %d positions", rewritten, seen)
    return record


def long_context_scores(folder: Path, reference: Path, float_manifest: Manifest, int8_manifest: Manifest,
                        prompt: int = GATE_PROMPT, positions: int = GATE_POSITIONS) -> dict:
    """Mean KLD against the fp32 graph `reference` of the folder with its float32 and its int8 cache, at long context.

    A prompt of `prompt` tokens of held-out text (attended in float32, as the runtime does), then
    `positions` tokens teacher-forced in runs of GATE_STEP on the decode graph: in a run each query
    reads the cache as a step would (the op quantizes the run's own keys and values before it
    attends), so this is what generation sees, where a single pass over the text would attend in
    float32 throughout.
    """
    from edgelm.quality import kl_divergence, top1_agreement

    from .int4_choice import scoring_ids

    ids = scoring_ids(folder, float_manifest, prompt + positions)
    total = ids.shape[1]
    prompt = min(prompt, total // 2)
    fp32 = replace(float_manifest, graph_file=reference.name, prefill_graph_file=None)
    runners = {"fp32": GraphRunner(reference.parent, fp32, prefill_graph=False),
               "float32": GraphRunner(folder, float_manifest), "int8": GraphRunner(folder, int8_manifest)}
    caches = {name: runner.new_cache() for name, runner in runners.items()}
    for name, runner in runners.items():
        runner.prefill(ids[:, :prompt], caches[name])
    sums = {"float32": 0.0, "int8": 0.0, "top1": 0.0}
    for start in range(prompt, total, GATE_STEP):
        run = ids[:, start : start + GATE_STEP]
        logits = {name: runner.forward(run, caches[name], all_logits=True) for name, runner in runners.items()}
        for name in ("float32", "int8"):
            sums[name] += kl_divergence(logits["fp32"], logits[name]) * run.shape[1]
        sums["top1"] += top1_agreement(logits["float32"], logits["int8"]) * run.shape[1]
    del runners, caches  # release the sessions before any file moves
    count = total - prompt
    return {"kld": {name: round(sums[name] / count, 6) for name in ("float32", "int8")},
            "top1_int8_vs_float32": round(sums["top1"] / count, 4), "prompt_tokens": prompt, "positions": count}


def _cache_ranges(folder: Path, manifest: Manifest, tokens: int) -> tuple[np.ndarray, int]:
    """max |x| per (layer, key/value, kv head, channel) over the cache the decode graph writes for the text."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(folder / manifest.tokens.tokenizer_file)).encode(calibration_text()).ids
    ids = np.array([ids[: min(tokens, manifest.context_length)]], dtype=np.int64)
    kv = manifest.kv
    runner = GraphRunner(folder, manifest, prefill_graph=False)
    cache = runner.new_cache()
    chunk = min([CHUNK] + [w for w in cache.windows if w])
    amax = np.zeros((kv.num_layers, 2, kv.num_kv_heads, kv.head_dim), dtype=np.float32)
    for start in range(0, ids.shape[1], chunk):
        runner.forward(ids[:, start : start + chunk], cache, logits=False)
        for index, (value, window) in enumerate(zip(cache.values, cache.windows)):
            part = np.abs(value.numpy()[0, :, : cache.resident_rows(window)])  # (kv_heads, rows, head_dim)
            np.maximum(amax[index // 2, index % 2], part.max(axis=1), out=amax[index // 2, index % 2])
    return amax, int(ids.shape[1])


def _int8_cache_graph(model: onnx.ModelProto, scales: np.ndarray) -> int:
    """Switches `model`'s cache inputs/outputs to int8 and its GroupQueryAttention nodes to PER_CHANNEL scales."""
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            value.type.tensor_type.elem_type = TensorProto.INT8
    count = 0
    for node in graph.node:
        if node.op_type != "GroupQueryAttention" or node.domain != MS:
            continue
        layer = int(node.input[3].split(".")[1])  # past_key_values.{layer}.key
        names = []
        for j, kind in enumerate(("key", "value")):
            name = f"kv_scale.{layer}.{kind}"
            graph.initializer.append(numpy_helper.from_array(scales[layer, j][None, :, None, :], name))
            names.append(name)
        inputs = list(node.input) + [""] * max(0, VALUE_SCALE_INPUT + 1 - len(node.input))
        inputs[KEY_SCALE_INPUT], inputs[VALUE_SCALE_INPUT] = names
        del node.input[:]
        node.input.extend(inputs)
        node.attribute.extend([helper.make_attribute("k_quant_type", "PER_CHANNEL"),
                               helper.make_attribute("v_quant_type", "PER_CHANNEL"),
                               helper.make_attribute("kv_cache_bit_width", 8)])
        count += 1
    return count
