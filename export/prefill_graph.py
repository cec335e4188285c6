"""A second graph for long prompts: the same model, its matrix products on the kernels that suit many rows.

`MatMulNBits` at accuracy level 4 quantizes the activations to int8 and multiplies with VNNI:
the fastest kernel at one token a step, but not always for a prompt, and which kernel wins depends
on the CPU. Two prefill graphs are built and timed against the decode graph on one prompt chunk:

- **int8** (int4 exports; prefill_int8.py): every linear but the LM head as int8 activations per
  row times int8 weights per column re-rounded from the int4 ones (MLAS's u8 x s8 GEMM), after a
  SmoothQuant channel migration. A 256-token chunk of SmolLM2 int4 on a 2-core AMD EPYC (AVX-512
  VNNI/BF16): 1.65x faster than on the decode graph, where level 0 is slower (0.86x). It rounds
  once more, so it is kept only if its mean KLD against the fp32 graph on the held-out scoring text
  is at most QUALITY_TOLERANCE above the decode graph's; if not, the activations that err most stay
  on the decode graph's MatMulNBits (INT8_SHARES). SmolLM2: 0.1010 against 0.0976, 0.187 against
  0.309 s (1.65x); Gemma 3 270M: only half of its activations within it, 1.21x: not kept.
- **fp32** (int4 and gguf): the decode graph's nodes with every 4-bit MatMulNBits but the LM head at
  level 0 (B dequantized to fp32 tiles, fp32 GEMM), reading the very same `model.onnx.data`. On a
  2-core Intel Xeon with AVX-512 VNNI (no BF16, no AMX) level 0 runs 1.75x faster than level 4 at 256
  rows (261 against 149 GOPS), the two crossing at 32-64 rows. 8-bit blocks keep level 4: level 0
  has no packed kernel for them. The prompt's activations are not rounded: the one exact choice for gguf.

The second session holds its own copy of the weights (SmolLM2 int4: about 100 MB more memory for
the fp32 graph, 150 MB for the int8 one), so the fastest candidate that passes is kept only if it
is at least MIN_SPEEDUP faster than the decode graph, and every time and score is recorded: a
choice made on the exporting machine, for the machine it runs on (`prefill_graph=True` keeps the
fp32 graph unmeasured, False builds none). The kept graph is `prefill.onnx` (+ `prefill.onnx.data`
for int8's weights); the runtime runs prompt chunks of at least MIN_TOKENS[kind] on it (manifest
`prefill_min_tokens`). The kept graph returns no logits (manifest `prefill_logits` false): only the
cache. Its session would pack the LM head a second time (Gemma 3 270M int4: 903 MB resident with
both sessions open against ~540 with the decode graph alone), to compute the one row a prompt
needs, which the runtime computes on the decode graph instead by running the prompt's last token
there.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from edgelm.manifest import Manifest
from edgelm.session import PREFILL_CHUNK, GraphRunner

from .graph_prune import remove_output
from .prefill_int8 import Int8PrefillGraphs
from .quantize import node_attr

PREFILL_FILE = "prefill.onnx"
FP32_CANDIDATE = "prefill-fp32.onnx"  # renamed to PREFILL_FILE if kept (its tensors live in the decode graph's file)
MS = "com.microsoft"
# a second copy of the weights in memory must buy at least this much on a first prompt chunk (later chunks
# gain less: attention over the past is the same on both graphs). Measured with the fp32 graph on the Xeon:
# SmolLM2 int4 1.37 (2,048-token prompts 1.30x), Gemma 3 270M int4 1.23 (1.06x), SmolLM2 gguf 1.20 (1.15x)
MIN_SPEEDUP = 1.3
# the int8 graph may move the next-token distributions this much further from the fp32 graph's than the
# decode graph does (mean KLD in nats on the scoring text; as for the tied table, about a 0.5 % perplexity rise)
QUALITY_TOLERANCE = 0.005
# shares of the activations the int8 graph rounds per row (those that err least first; prefill_int8.py), tried in turn
# until one is within QUALITY_TOLERANCE (SmolLM2 int4: 1.0, +0.0034 over the decode graph's KLD)
INT8_SHARES = (1.0, 0.9, 0.75, 0.5)
TIMED_RUNS = 5
# the shortest run the runtime sends to the kept graph (manifest prefill_min_tokens). SmolLM2 int4 on the EPYC, a
# prompt through the runtime (the prefill session's threads not spinning), decode graph against the int8 graph,
# medians of 28: 16 tokens 23.8 / 25.0 ms, 24: 29.9 / 28.4, 32: 40.6 / 35.7, 48: 56.8 / 44.4 (both sessions
# spinning it crossed at 4-8 tokens); the fp32 graph crossed the decode graph at 32-64 rows on the Xeon
MIN_TOKENS = {"int8": 32, "fp32": 64}


def add_prefill_graph(folder: Path, manifest: Manifest, measure: bool = True, scorer=None) -> dict | None:
    """Writes the prefill graph into `folder` and names it in `manifest` if one pays; returns what was decided.

    With `measure`, the candidates (int8 only given a `scorer`, int4_choice.Scorer, to check its
    quality with; fp32) are timed on one PREFILL_CHUNK-token chunk beside the decode graph
    (interleaved, the fastest of TIMED_RUNS each); the fastest that passes is kept at MIN_SPEEDUP or more.
    Without, the fp32 graph is kept. None when no candidate has anything to change.
    """
    candidates: dict[str, str] = {}
    int8_info: dict = {}
    if measure and scorer is not None:
        int8, int8_info = _int8_within_tolerance(folder, manifest, scorer)
        if int8 is not None:
            candidates["int8"] = int8
    fp32 = write_prefill_graph(folder / manifest.graph_file, manifest.vocab_size, FP32_CANDIDATE)
    if fp32 is not None:
        candidates["fp32"] = fp32
    if not candidates:
        return {"kept": False, "measured": True, "int8": int8_info} if int8_info else None
    if not measure:
        _keep(folder, manifest, "fp32", candidates)
        _without_logits(folder, manifest)
        return {"kept": True, "measured": False, "compute": "fp32"}
    seconds = _chunk_seconds(folder, manifest, list(candidates.values()))
    decode_s = seconds.pop(manifest.graph_file)
    decided: dict = {"measured": True, "tokens": PREFILL_CHUNK, "decode_graph_s": round(decode_s, 6),
                     "candidates": {}, "min_speedup": MIN_SPEEDUP}
    if int8_info and "int8" not in candidates:
        decided["int8_rejected"] = int8_info  # no share within the tolerance
    passing = {}
    for kind, name in candidates.items():
        entry = {"seconds": round(seconds[name], 6), "speedup": round(decode_s / seconds[name], 3)}
        if kind == "int8":
            entry.update(int8_info)
        passes = entry["passes"] = decode_s >= seconds[name] * MIN_SPEEDUP
        decided["candidates"][kind] = entry
        if passes:
            passing[kind] = seconds[name]
    kept = min(passing, key=passing.get) if passing else None
    _keep(folder, manifest, kept, candidates)
    decided.update(kept=kept is not None, compute=kept)
    if kept:
        _without_logits(folder, manifest)
        decided.update(prefill_graph_s=round(passing[kept], 6), speedup=round(decode_s / passing[kept], 3))
    return decided


def _int8_within_tolerance(folder: Path, manifest: Manifest, scorer) -> tuple[str | None, dict]:
    """The int8 graph (PREFILL_FILE) on the largest share of INT8_SHARES within QUALITY_TOLERANCE, and the scores.

    Each try is scored against the fp32 graph on the held-out text, beside the decode graph's score.
    """
    graphs = Int8PrefillGraphs(folder, manifest)
    if not graphs.plan:
        return None, {}
    decode_kld = scorer.score(folder / manifest.graph_file)["kld"]
    info = {"decode_graph_kld": round(decode_kld, 6), "tolerance": QUALITY_TOLERANCE, "alphas": graphs.alphas(),
            "tries": []}
    for share in INT8_SHARES:
        name = graphs.write(PREFILL_FILE, share)
        kld = scorer.score(folder / name)["kld"]
        info["tries"].append({"share": share, "kld": round(kld, 6)})
        if kld <= decode_kld + QUALITY_TOLERANCE:
            return name, {**info, "share": share, "kld": round(kld, 6)}
    (folder / PREFILL_FILE).unlink()
    (folder / (PREFILL_FILE + ".data")).unlink()
    return None, info


def _keep(folder: Path, manifest: Manifest, kind: str | None, candidates: dict[str, str]) -> None:
    """Leaves candidate `kind` as PREFILL_FILE (None: none) and removes the others' files."""
    for other, name in candidates.items():
        if other != kind:
            (folder / name).unlink()
            (folder / (name + ".data")).unlink(missing_ok=True)
    if kind is None:
        return
    if candidates[kind] != PREFILL_FILE:
        (folder / candidates[kind]).rename(folder / PREFILL_FILE)
    manifest.prefill_graph_file = PREFILL_FILE
    manifest.prefill_min_tokens = MIN_TOKENS[kind]


def _without_logits(folder: Path, manifest: Manifest) -> None:
    """The kept graph returns only the cache: the prompt's last token runs on the decode graph (module docstring)."""
    remove_output(folder / PREFILL_FILE, manifest.logits_output)
    manifest.prefill_logits = False


def _chunk_seconds(folder: Path, manifest: Manifest, names: list[str]) -> dict[str, float]:
    """Seconds of one prompt chunk on the decode graph and on each graph of `names`, by file name: the fastest
    of TIMED_RUNS interleaved runs, the one least disturbed by other work on the machine (with a median, a
    busy moment over three of the five runs of one graph decided whether its graph was kept)."""
    graphs = [manifest.graph_file, *names]
    runners = [GraphRunner(folder, replace(manifest, graph_file=name, prefill_graph_file=None), prefill_graph=False)
               for name in graphs]
    tokens = min(PREFILL_CHUNK, manifest.context_length)
    ids = np.random.default_rng(0).integers(0, manifest.vocab_size, size=(1, tokens), dtype=np.int64)
    times: list[list[float]] = [[] for _ in graphs]
    for run in range(TIMED_RUNS + 1):  # the first round warms them up
        for runner, seconds in zip(runners, times):
            started = time.perf_counter()
            runner.forward(ids, runner.new_cache())
            if run:
                seconds.append(time.perf_counter() - started)
    del runners  # the sessions let go of the files
    return {name: min(t) for name, t in zip(graphs, times)}


def write_prefill_graph(graph_path: Path, vocab_size: int, name: str = PREFILL_FILE) -> str | None:
    """Writes the fp32 prefill graph `name` beside `graph_path`, sharing its external data file; returns `name`.

    None (nothing written) when no 4-bit MatMulNBits below the LM head computes at a level other than 0,
    or when the graph keeps its weights inside the .onnx file (a copy would double them).
    """
    model = onnx.load(str(graph_path), load_external_data=False)
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return None
    changed = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or node.domain != MS or node_attr(node, "N") == vocab_size:
            continue
        if node_attr(node, "bits") != 4:  # 8-bit blocks have no fp32 kernel of their own: level 0 is 1.5-40x slower
            continue
        for attr in node.attribute:
            if attr.name == "accuracy_level" and attr.i != 0:
                attr.i = 0
                changed += 1
    if not changed:
        return None
    onnx.save(model, str(graph_path.parent / name))  # the tensors stay external: only the nodes are written
    return name

